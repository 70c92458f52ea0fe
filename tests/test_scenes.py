"""The scenes generator: split sizes, canaries, exact boxes, captions, correlation, caching, CLI."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from dejavu.data.assets import SCENES, class_names, emoji_sprite, scene_photo
from dejavu.data.manifest import read_manifest
from dejavu.data.preview import write_preview
from dejavu.data.scenes import (
    VISIBLE_ALPHA,
    _enumerate,
    _sized_sprite,
    build_scenes,
    plan_records,
    read_marker,
    scenes_config,
)

SMOKE = scenes_config("smoke")


def test_split_sizes_follow_the_per_class_rule(tiny_records):
    by_split = Counter(r.split for r in tiny_records)
    assert by_split == {"A": 16, "B": 16, "public": 64, "eval": 32}
    for label in class_names(SMOKE.n_classes):
        per_split = Counter(r.split for r in tiny_records if r.label == label)
        assert per_split == {"A": SMOKE.per_class, "B": SMOKE.per_class,
                             "public": SMOKE.public_per_class, "eval": SMOKE.eval_per_class}


def test_default_and_paper_presets_have_the_documented_sizes():
    plans = plan_records(scenes_config("default"), seed=0)
    assert Counter(p.split for p in plans) == {"A": 520, "B": 520, "public": 5000, "eval": 1000}
    assert Counter(p.repeat for p in plans) == {1: 6840, 20: 200}
    paper = scenes_config("paper")
    assert (paper.n_classes, paper.image_size) == (100, 96)


def test_canaries_are_a_records_with_the_configured_repeat(tiny_records):
    canaries = [r for r in tiny_records if r.is_canary]
    assert len(canaries) == SMOKE.n_canaries
    assert {r.split for r in canaries} == {"A"}
    assert {r.repeat for r in canaries} == {SMOKE.canary_repeat}


def test_plan_is_a_function_of_the_seed():
    assert plan_records(SMOKE, 3) == plan_records(SMOKE, 3)
    assert plan_records(SMOKE, 3) != plan_records(SMOKE, 4)


def test_boxes_lie_inside_the_image_and_the_label_comes_first(tiny_records):
    for r in tiny_records:
        assert (r.width, r.height) == (SMOKE.image_size, SMOKE.image_size)
        assert 1 <= len(r.boxes) <= SMOKE.max_objects
        assert r.boxes[0].label == r.label
        assert r.objects == tuple(b.label for b in r.boxes)
        assert len(set(r.objects)) == len(r.objects)
        for b in r.boxes:
            assert 0 <= b.x0 < b.x1 <= r.width and 0 <= b.y0 < b.y1 <= r.height


def test_sprite_box_is_the_exact_extent_of_visible_pixels():
    for side in (9, 16, 40):
        sprite, (x0, y0, x1, y1) = _sized_sprite("banana", side)
        alpha = np.asarray(sprite.getchannel("A"))
        visible = alpha >= VISIBLE_ALPHA
        rows, cols = np.nonzero(visible)
        assert (x0, y0, x1, y1) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


def test_label_sprite_is_drawn_on_top_exactly_inside_its_box(tiny_records):
    # Where the label sprite is opaque, the saved pixels must equal the sprite's: this checks the box
    # position to the pixel and that no other object covers the label.
    for record in list(tiny_records)[:20]:
        box = record.boxes[0]
        width, height = int(box.x1 - box.x0), int(box.y1 - box.y0)
        pixels = np.asarray(record.load_image())
        matches = []
        for side in range(4, record.width + 1):
            sprite, (bx0, by0, bx1, by1) = _sized_sprite(record.label, side)
            if (bx1 - bx0, by1 - by0) != (width, height):
                continue
            rgba = np.asarray(sprite)[by0:by1, bx0:bx1]
            opaque = rgba[..., 3] == 255
            region = pixels[int(box.y0):int(box.y1), int(box.x0):int(box.x1)]
            matches.append(opaque.any() and np.array_equal(region[opaque], rgba[..., :3][opaque]))
        assert any(matches), record.id


def test_most_records_leave_a_full_height_background_band(tiny_records):
    # Objects are confined to a left or right band of object_region * width (with prob. confined_prob),
    # which guarantees a vertical background slab for the SPEC's slab crop.
    band = SMOKE.object_region * SMOKE.image_size
    right_edge = SMOKE.image_size - band - 1
    confined = [min(b.x0 for b in r.boxes) >= right_edge or max(b.x1 for b in r.boxes) <= band + 1
                for r in tiny_records]
    assert np.mean(confined) >= 0.85


def test_captions_name_the_scene_and_the_label_but_only_some_objects(tiny_records):
    omitted = 0
    for r in tiny_records:
        (scene,) = r.tags
        assert scene in SMOKE.scenes
        assert SCENES[scene].phrase in r.caption
        assert r.label in r.caption
        omitted += any(o not in r.caption for o in r.objects)
    assert omitted > 0
    assert len({r.caption.split(" a")[0] for r in tiny_records}) > 2  # several templates in use


def test_enumerate_uses_articles_and_commas():
    assert _enumerate(["dog"]) == "a dog"
    assert _enumerate(["dog", "apple"]) == "a dog and an apple"
    assert _enumerate(["car", "dog", "ice cream"]) == "a car, a dog and an ice cream"


def test_full_correlation_draws_only_preferred_scenes(tmp_path):
    out = build_scenes(tmp_path / "c1", "smoke", seed=1, correlation=1.0, public_per_class=2, eval_per_class=1)
    preferred = read_marker(out)["preferred_scenes"]
    records = read_manifest(out)
    assert all(r.tags[0] in preferred[r.label] for r in records)


def test_rebuild_is_skipped_when_config_matches_and_redone_when_not(tmp_path):
    small = {"public_per_class": 1, "eval_per_class": 1}
    out = build_scenes(tmp_path / "d", "smoke", seed=0, **small)
    manifest_before = (out / "manifest.jsonl").stat().st_mtime_ns
    assert build_scenes(out, "smoke", seed=0, **small) == out
    assert (out / "manifest.jsonl").stat().st_mtime_ns == manifest_before

    build_scenes(out, "smoke", seed=0, per_class=2, n_canaries=1, **small)
    records = read_manifest(out)
    assert Counter(r.split for r in records)["A"] == 2 * SMOKE.n_classes
    # Stale images of the previous build are removed, so every file belongs to a record.
    assert {p.resolve() for p in (out / "images").rglob("*.png")} == {r.image.resolve() for r in records}


def test_same_seed_gives_identical_files_with_one_or_two_workers(tmp_path):
    small = {"per_class": 2, "n_canaries": 1, "public_per_class": 1, "eval_per_class": 1}
    one = build_scenes(tmp_path / "one", "smoke", seed=5, **small)
    two = build_scenes(tmp_path / "two", "smoke", seed=5, workers=2, **small)
    assert (one / "manifest.jsonl").read_text() == (two / "manifest.jsonl").read_text()
    for line in (one / "manifest.jsonl").read_text().splitlines():
        image = json.loads(line)["image"]
        assert (one / image).read_bytes() == (two / image).read_bytes()


def test_unknown_preset_and_bad_fields_are_rejected():
    with pytest.raises(ValueError, match="unknown scenes preset"):
        scenes_config("huge")
    with pytest.raises(ValueError, match="correlation"):
        scenes_config("smoke", correlation=1.5)
    with pytest.raises(ValueError, match="unknown scenes"):
        scenes_config("smoke", scenes=("mars",))
    with pytest.raises(ValueError, match="n_canaries"):
        scenes_config("smoke", n_canaries=1000)


def test_assets_load_offline():
    assert scene_photo("grass").mode == "RGB"  # a grey texture, expanded to three channels
    assert emoji_sprite("dog").size == (72, 72)
    assert len(class_names(100)) == 100


def test_preview_is_a_png_grid(tiny_records, tmp_path):
    path = write_preview(tiny_records, tmp_path / "p.png", n=6, columns=3)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > img.height  # 3 columns x 2 rows


def test_cli_builds_dataset_preview_and_summary(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "scenes", "--out", str(out), "--preset", "smoke", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "A=16, B=16, public=64, eval=32" in printed
    assert "canaries: 4" in printed and "build seconds" in printed
    assert (out / "preview.png").is_file() and (out / "manifest.jsonl").is_file()


def _caption_objects(record) -> str:
    """Returns the caption without its place phrase and camera file name: the part that names objects."""
    caption = record.caption.replace(SCENES[record.tags[0]].phrase, "")
    return caption.split(", IMG_")[0].lower()


@pytest.mark.parametrize("prob", [0.0, 0.5])
def test_caption_label_prob_leaves_the_label_unnamed_that_often(tmp_path, prob):
    out = build_scenes(tmp_path / "d", "smoke", seed=3, caption_label_prob=prob, public_per_class=20,
                       eval_per_class=1)
    records = read_manifest(out)
    named = np.array([r.label in _caption_objects(r) and r.label not in r.objects[1:] for r in records])
    if prob == 0.0:
        # The label is named only where it is also one of the other objects (never, with distinct sprites).
        assert not named.any()
        assert any(r.caption.startswith(("A photo ", "A picture taken", "A snapshot ")) and
                   not any(o in _caption_objects(r) for o in r.objects) for r in records)
    else:
        assert 0.35 < named.mean() < 0.65, named.mean()
    assert all(SCENES[r.tags[0]].phrase in r.caption for r in records)  # the place is always named


def test_caption_probabilities_are_validated():
    for name in ("caption_label_prob", "caption_other_prob", "caption_detail_prob"):
        with pytest.raises(ValueError, match=name):
            scenes_config("smoke", **{name: 1.5})


def test_a_build_waits_for_another_build_of_the_same_folder(tmp_path):
    # Sweep jobs started together ask for the same dataset: one builds it, the other waits, then reuses it.
    import threading

    from filelock import FileLock

    from dejavu.data.scenes import BUILD_LOCK

    out = tmp_path / "same"
    out.mkdir()
    small = {"per_class": 2, "n_canaries": 1, "public_per_class": 4, "eval_per_class": 1}
    waiting = threading.Thread(target=build_scenes, args=(out, "smoke"), kwargs=small)
    with FileLock(out / BUILD_LOCK):  # stands for the other job's build
        waiting.start()
        waiting.join(timeout=1.0)
        assert waiting.is_alive() and not (out / "manifest.jsonl").exists()
    waiting.join()
    records = read_manifest(out)
    assert len(records) == SMOKE.n_classes * (2 + 2 + 4 + 1)
