"""Bad input: every problem is a clear RecordError naming the record and file, or a counted exclusion."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from imagefiles import png, png_header
from PIL import Image

from bench.recipes import data as data_module
from bench.recipes.data import expand_by_repeat, matched_length
from dejavu.data import read_coco, read_imagenet, read_manifest, validate
from dejavu.data.validate import check_images
from dejavu.records import MAX_REPEAT, Record, RecordError, RecordSet

GOOD = {"id": "ok", "image": "ok.png", "width": 20, "height": 10, "label": "dog",
        "boxes": [[0, 0, 5, 5, "dog"]], "caption": "a dog", "objects": ["dog"], "split": "A"}


def manifest(folder: Path, *rows) -> Path:
    """Writes rows (dicts, or raw strings for broken lines) as manifest.jsonl; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.jsonl").write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows))
    return folder


def bad(**changes) -> dict:
    return {**GOOD, "id": "bad", **changes}


def assert_clear(err: pytest.ExceptionInfo, *parts: str) -> None:
    """The message names every part, and there is no chained library traceback behind it."""
    message = str(err.value)
    for part in parts:
        assert part in message, (part, message)
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)


CASES = {
    "box-outside-image": bad(boxes=[[0, 0, 25, 5, "dog"]]),
    "empty-box": bad(boxes=[[5, 0, 5, 5, "dog"]]),
    "empty-caption": bad(caption=""),
    "bad-split": bad(split="train"),
    "bad-box": bad(boxes=[[0, 0, 5, "dog"]]),
    "bad-repeat": bad(repeat=0),
}


@pytest.mark.parametrize("reason", sorted(CASES))
def test_bad_record_raises_naming_id_and_manifest(tmp_path, reason):
    folder = manifest(tmp_path, GOOD, CASES[reason])
    with pytest.raises(RecordError) as err:
        read_manifest(folder)
    assert_clear(err, "'bad'", str(folder / "manifest.jsonl"))
    assert err.value.reason == reason


def test_line_that_is_not_json_names_line_and_file(tmp_path):
    folder = manifest(tmp_path, GOOD, '{"id": "x", "image": ')
    with pytest.raises(RecordError) as err:
        read_manifest(folder)
    assert_clear(err, "line 2", "not valid JSON", str(folder / "manifest.jsonl"))


def test_line_without_id_names_line_and_file(tmp_path):
    folder = manifest(tmp_path, GOOD, {"image": "x.png", "width": 1, "height": 1})
    with pytest.raises(RecordError) as err:
        read_manifest(folder)
    assert_clear(err, "line 2", "'id'", str(folder / "manifest.jsonl"))


def test_duplicate_id_names_the_id_and_file(tmp_path):
    folder = manifest(tmp_path, GOOD, GOOD)
    with pytest.raises(RecordError) as err:
        read_manifest(folder)
    assert_clear(err, "'ok'", "duplicate id", str(folder / "manifest.jsonl"))


def test_exclude_mode_counts_every_reason_and_keeps_good_records(tmp_path):
    rows = [GOOD, *({**row, "id": reason} for reason, row in CASES.items()), "not json", {"width": 3},
            dict(GOOD), {**GOOD, "id": "ok2"}]
    records = read_manifest(manifest(tmp_path, *rows), on_error="exclude")
    assert records.ids == ["ok", "ok2"]
    assert records.exclusions == {**dict.fromkeys(CASES, 1), "not-json": 1, "missing-id": 1, "duplicate-id": 1}
    assert len(records.excluded) == sum(records.exclusions.values())
    assert any("'empty-caption'" in m for m in records.excluded)  # each message names the record


def test_on_error_must_be_known(tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        read_manifest(manifest(tmp_path, GOOD), on_error="ignore")


def test_missing_image_fails_at_load_naming_id_and_file(tmp_path):
    (record,) = read_manifest(manifest(tmp_path, GOOD))
    with pytest.raises(RecordError) as err:
        record.load_image()
    assert_clear(err, "'ok'", str(tmp_path / "ok.png"), "does not exist")


def test_corrupt_image_fails_at_load_naming_id_and_file(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a real png")
    (record,) = read_manifest(manifest(tmp_path, GOOD))
    with pytest.raises(RecordError) as err:
        record.load_image()
    assert_clear(err, "'ok'", str(tmp_path / "ok.png"), "cannot be decoded")


def test_missing_manifest_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.jsonl"):
        read_manifest(tmp_path)


def test_imagenet_malformed_xml_names_the_xml_file(tmp_path):
    (tmp_path / "train" / "n01").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "n01" / "n01_1.JPEG")
    (tmp_path / "bbox" / "n01").mkdir(parents=True)
    (tmp_path / "bbox" / "n01" / "n01_1.xml").write_text("<annotation><size><width>8</width>")
    with pytest.raises(RecordError) as err:
        read_imagenet(tmp_path / "train", tmp_path / "bbox")
    assert_clear(err, "'n01_1'", "n01_1.xml", "not valid XML")
    assert len(read_imagenet(tmp_path / "train", tmp_path / "bbox", on_error="exclude")) == 0


def test_imagenet_unreadable_image_header_is_reported(tmp_path):
    (tmp_path / "train" / "n01").mkdir(parents=True)
    (tmp_path / "train" / "n01" / "n01_1.JPEG").write_bytes(b"garbage")
    with pytest.raises(RecordError) as err:
        read_imagenet(tmp_path / "train")
    assert_clear(err, "'n01_1'", "n01_1.JPEG")


def test_coco_zero_width_box_is_an_error_or_a_counted_exclusion(tmp_path):
    instances = {"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10},
                            {"id": 2, "file_name": "b.jpg", "width": 10, "height": 10}],
                 "categories": [{"id": 1, "name": "dog"}],
                 "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [3, 3, 0, 4]}]}
    (tmp_path / "inst.json").write_text(json.dumps(instances))
    with pytest.raises(RecordError) as err:
        read_coco(tmp_path, tmp_path / "inst.json")
    assert_clear(err, "'1'", "inst.json", "x0 >= x1")
    records = read_coco(tmp_path, tmp_path / "inst.json", on_error="exclude")
    assert records.ids == ["2"] and records.exclusions == {"empty-box": 1}


# -- issue 10: every bad input refused before training, with the record and file named ----------------
# The numbers in the comments are the cases of issue 10; the command-line side of each is in test_cli_errors.py.
def one_record(tmp_path: Path, **changes) -> RecordSet:
    """Returns one GOOD record (its image written) read through the manifest reader, with `changes`."""
    png(tmp_path / "ok.png")
    return read_manifest(manifest(tmp_path, {**GOOD, **changes}))


def test_1_a_repeat_of_a_billion_is_refused_as_the_manifest_is_read(tmp_path):
    folder = manifest(tmp_path, GOOD, bad(repeat=1_000_000_000))
    with pytest.raises(RecordError) as err:
        read_manifest(folder)
    assert_clear(err, "'bad'", str(folder / "manifest.jsonl"), f"[1, {MAX_REPEAT}]", "1000000000")
    assert read_manifest(folder, on_error="exclude").exclusions == {"bad-repeat": 1}


def test_1_an_epoch_longer_than_the_bound_is_refused_before_anything_is_allocated(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "MAX_EPOCH_SAMPLES", 50)
    records = [Record(f"r{i}", tmp_path / "x.png", 8, 8, repeat=30 if i == 2 else 10) for i in range(4)]
    with pytest.raises(RecordError) as err:
        expand_by_repeat(records)
    assert_clear(err, "'r2'", "60 samples", "limit of 50", "repeated 30x")
    with pytest.raises(ValueError, match="limit of 50"):
        matched_length(records[:1], 51, seed=0)


@pytest.mark.parametrize("image", ["/etc/hostname", "../../../etc/hostname", "sub/../../outside.png"])
def test_3_an_image_path_leading_out_of_the_folder_is_refused(tmp_path, image):
    folder = manifest(tmp_path / "data", GOOD, bad(image=image))
    png(tmp_path / "outside.png")
    with pytest.raises(RecordError) as err:
        read_manifest(folder)
    assert_clear(err, "'bad'", "outside the dataset folder", "--allow-outside-paths")
    assert read_manifest(folder, on_error="exclude").exclusions == {"outside-folder": 1}
    assert read_manifest(folder, allow_outside=True).ids == ["ok", "bad"]  # the explicit opt-out


def test_3_a_symlink_out_of_the_folder_is_refused_and_one_inside_it_is_not(tmp_path):
    folder = manifest(tmp_path / "data", GOOD, bad(image="link.png"), {**GOOD, "id": "inner", "image": "in.png"})
    (folder / "link.png").symlink_to(png(tmp_path / "secret.png"))
    (folder / "in.png").symlink_to(png(folder / "images" / "real.png"))
    with pytest.raises(RecordError) as err:
        read_manifest(folder)
    assert_clear(err, "'bad'", str(tmp_path / "secret.png"), "outside the dataset folder")
    assert read_manifest(folder, on_error="exclude").ids == ["ok", "inner"]


def test_3_coco_and_imagenet_images_stay_inside_their_folders(tmp_path):
    instances = {"images": [{"id": 1, "file_name": "../secret.jpg", "width": 20, "height": 10}],
                 "categories": [{"id": 1, "name": "dog"}], "annotations": []}
    (tmp_path / "images").mkdir()
    (tmp_path / "inst.json").write_text(json.dumps(instances))
    with pytest.raises(RecordError, match="outside the dataset folder"):
        read_coco(tmp_path / "images", tmp_path / "inst.json")
    assert len(read_coco(tmp_path / "images", tmp_path / "inst.json", allow_outside=True)) == 1
    (tmp_path / "train" / "n01").mkdir(parents=True)
    (tmp_path / "train" / "n01" / "n01_1.png").symlink_to(png(tmp_path / "secret.png"))
    with pytest.raises(RecordError, match="outside the dataset folder"):
        read_imagenet(tmp_path / "train")
    assert read_imagenet(tmp_path / "train", allow_outside=True).ids == ["n01_1"]


@pytest.mark.parametrize("split", ["A", "public"])
def test_4_a_missing_image_in_any_split_fails_the_pre_pass(tmp_path, split):
    records = read_manifest(manifest(tmp_path, {**GOOD, "split": split}))
    with pytest.raises(RecordError) as err:
        check_images(records)
    assert_clear(err, "'ok'", str(tmp_path / "ok.png"), "does not exist")
    assert check_images(records, on_error="exclude").exclusions == {"missing-image": 1}


def test_4_a_corrupt_or_truncated_image_fails_the_pre_pass(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a real png")
    records = read_manifest(manifest(tmp_path, GOOD, {**GOOD, "id": "cut", "image": "cut.png"}))
    whole = png(tmp_path / "full.png", (64, 64)).read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])  # a header that promises more than follows
    checked = check_images(records, on_error="exclude")
    assert checked.exclusions == {"unreadable-image": 2}
    with pytest.raises(RecordError) as err:
        check_images(records)
    assert_clear(err, "'ok'", "cannot be decoded", "(1 more record with a bad image)")


def test_4_a_declared_size_unlike_the_file_fails_the_pre_pass(tmp_path):
    records = one_record(tmp_path, width=10**9, height=10**9, boxes=[])
    with pytest.raises(RecordError) as err:
        check_images(records)
    assert_clear(err, "'ok'", "declares 1000000000x1000000000, but the image is 20x10", "fix width and height")


def test_5_a_decompression_bomb_is_refused_without_decoding(tmp_path):
    records = one_record(tmp_path, width=20000, height=20000, boxes=[])
    png_header(tmp_path / "ok.png", 20000, 20000)
    with pytest.raises(RecordError) as err:
        check_images(records)
    assert_clear(err, "'ok'", "too large to decode safely")
    with pytest.raises(RecordError) as err:  # and so is the record's own loader
        records[0].load_image()
    assert_clear(err, "'ok'", "too large to decode safely")


def test_4_the_pixel_limit_is_configurable(tmp_path):
    records = one_record(tmp_path)
    assert len(check_images(records, max_pixels=200)) == 1  # 20 x 10
    with pytest.raises(RecordError) as err:
        check_images(records, max_pixels=199)
    assert_clear(err, "'ok'", "20x10 = 200 pixels, more than the limit of 199", "data.max_pixels")
    png_header(tmp_path / "ok.png", 10_000, 10_000)  # above the default limit, below PIL's own refusal
    with pytest.raises(RecordError, match="10000x10000 = 100000000 pixels, more than the limit of 89478485"):
        check_images(read_manifest(manifest(tmp_path, {**GOOD, "width": 10_000, "height": 10_000})))
    with pytest.raises(ValueError, match="max_pixels"):
        check_images(records, max_pixels=0)


def test_4_the_pre_pass_remembers_good_files_until_they_change(tmp_path, monkeypatch):
    records = one_record(tmp_path)
    cache = tmp_path / "checked"
    check_images(records, cache_dir=cache)
    inspected = []
    real = validate.inspect_image
    monkeypatch.setattr(validate, "inspect_image", lambda *a: inspected.append(a[0]) or real(*a))
    check_images(records, cache_dir=cache)
    assert inspected == []  # only stat-ed
    png(tmp_path / "ok.png", (30, 10))  # overwritten in place: another size and mtime
    os.utime(tmp_path / "ok.png", ns=(1, 1))
    with pytest.raises(RecordError, match="the image is 30x10"):
        check_images(records, cache_dir=cache)
    assert inspected == [tmp_path / "ok.png"]


def test_4_the_pre_pass_checks_many_files_in_threads_and_misses_none(tmp_path):
    rows = [{**GOOD, "id": f"r{i}", "image": f"r{i}.png"} for i in range(2 * validate.CHUNK + 3)]
    for row in rows[:-1]:
        png(tmp_path / row["image"])
    checked = check_images(read_manifest(manifest(tmp_path, *rows)), workers=2, on_error="exclude")
    assert len(checked) == len(rows) - 1 and checked.exclusions == {"missing-image": 1}
    assert checked.excluded == [f"record 'r{len(rows) - 1}', file '{tmp_path / rows[-1]['image']}': image file "
                                "does not exist; fix the path or remove the record"]


def test_5_coco_instances_whose_top_level_is_a_list_name_the_file(tmp_path):
    (tmp_path / "inst.json").write_text("[]")
    with pytest.raises(RecordError) as err:
        read_coco(tmp_path, tmp_path / "inst.json")
    assert_clear(err, "inst.json", "top level is a JSON list", "COCO annotation file")
    (tmp_path / "inst.json").write_text(json.dumps({"images": {"id": 1}}))
    with pytest.raises(RecordError, match="'images' is a JSON dict, not a list"):
        read_coco(tmp_path, tmp_path / "inst.json")
    (tmp_path / "inst.json").write_text(json.dumps({"images": [], "annotations": ["x"]}))
    with pytest.raises(RecordError, match=r"annotations\[0\] is 'x', not an object"):
        read_coco(tmp_path, tmp_path / "inst.json")


def test_7_a_coco_category_without_a_name_names_the_file_and_the_category(tmp_path):
    instances = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "dog"}, {"id": 7}]}
    (tmp_path / "inst.json").write_text(json.dumps(instances))
    with pytest.raises(RecordError) as err:
        read_coco(tmp_path, tmp_path / "inst.json")
    assert_clear(err, "inst.json", "categories[1]", "'id': 7", "lacks a string 'name'")


def test_7_a_line_that_is_not_utf8_names_line_and_file_and_is_counted_on_exclude(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    good = json.dumps(GOOD).encode()
    (folder / "manifest.jsonl").write_bytes(good + b"\n" + b'{"id": "caf\xe9", "image": "x.png"}\n'
                                            + json.dumps({**GOOD, "id": "ok2"}).encode() + b"\n")
    with pytest.raises(RecordError) as err:
        read_manifest(folder)
    assert_clear(err, "line 2 is not UTF-8", "byte 0xe9 at column 12", str(folder / "manifest.jsonl"))
    records = read_manifest(folder, on_error="exclude")
    assert records.ids == ["ok", "ok2"] and records.exclusions == {"not-utf8": 1}


def test_7_a_byte_order_mark_is_not_bad_input(tmp_path):
    (tmp_path / "manifest.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    assert read_manifest(tmp_path).ids == ["ok"]


def test_7_an_unreadable_parquet_manifest_names_the_file(tmp_path):
    (tmp_path / "manifest.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(RecordError) as err:
        read_manifest(tmp_path)
    assert_clear(err, "manifest.parquet", "not a readable parquet file")
