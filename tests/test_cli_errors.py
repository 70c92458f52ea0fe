"""Issue 10 on the command line: every bad input is one line naming the file (and the record or line) and the
fix, printed before anything trains; no traceback. The numbers are the cases of the issue."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from imagefiles import png_header
from PIL import Image

from bench.cli import main
from bench.store import ResultsStore
from dejavu.data import scenes_dir
from dejavu.data.scenes import build_scenes

ERROR_HINT = "(set DEJAVU_DEBUG=1 for the full traceback)"
CLASSES = ("dog", "cat")


@pytest.fixture(autouse=True)
def _user_errors_print_one_line(monkeypatch):
    monkeypatch.delenv("DEJAVU_DEBUG", raising=False)


@pytest.fixture(scope="module")
def scenes_cache(tmp_path_factory) -> Path:
    """Returns a cache folder holding the smoke scenes dataset, built once for the module."""
    cache = tmp_path_factory.mktemp("cache")
    build_scenes(scenes_dir(cache / "data", "smoke", 0), "smoke", seed=0)
    return cache


def rows_of(n_boxed: int = 6, n_plain: int = 6) -> list[dict]:
    """Returns manifest rows: per class, `n_boxed` records with a box (A and B) and `n_plain` without (public, eval)."""
    rows = []
    for label in CLASSES:
        for i in range(n_boxed + n_plain):
            rows.append({"id": f"{label}-{i}", "image": f"images/{label}-{i}.png", "width": 32, "height": 32,
                         "label": label, "boxes": [[0, 0, 12, 12, label]] if i < n_boxed else [],
                         "caption": f"a {label} on a wall, IMG_{i:04d}", "objects": [label], "split": None})
    return rows


def dataset(folder: Path, rows: list[dict] | None = None, *, raw_lines: tuple[bytes, ...] = ()) -> str:
    """Writes a manifest folder (images for every row whose file is under images/); returns its --data spec."""
    rows = rows_of() if rows is None else rows
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for row in rows:
        path = folder / row["image"]
        if row["image"].startswith("images/") and not path.exists():
            Image.new("RGB", (32, 32), (40 * len(row["id"]) % 255, 90, 160)).save(path)
    lines = [json.dumps(row).encode() for row in rows] + list(raw_lines)
    (folder / "manifest.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return f"manifest:{folder}"


def fails(capsys, cache: Path, out: Path, *argv: str) -> str:
    """Returns the one error line of a command that must fail with exit 2 before any model is trained."""
    command, *options = argv
    code = main([command, "--preset", "smoke", "--out", str(out), "--cache", str(cache), "--no-progress", *options])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err[-1] == ERROR_HINT and err[-2].startswith(f"python -m bench {command}: error: "), err
    assert not (cache / "models").exists(), "a model was trained before the error"
    return err[-2]


def assert_names(line: str, *parts: str) -> None:
    for part in parts:
        assert part in line, (part, line)


def test_1_a_repeat_of_a_billion_is_one_line_before_training(tmp_path, capsys):
    rows = rows_of()
    rows[0]["repeat"] = 1_000_000_000
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "run", "--data", dataset(tmp_path / "d", rows))
    assert_names(line, "record 'dog-0'", str(tmp_path / "d" / "manifest.jsonl"), "repeat must be an integer in "
                 "[1, 10000]")


def test_1_a_canary_repeat_of_a_billion_is_refused_as_parsed(tmp_path, capsys):
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "run", "--set", "data.canary_repeat=1000000000")
    assert_names(line, "data.canary_repeat must be an integer in [1, 10000], got 1000000000")


@pytest.mark.parametrize("image", ["/etc/passwd", "../../../etc/hostname"])
def test_3_a_path_out_of_the_dataset_folder_is_refused(tmp_path, capsys, image):
    rows = rows_of()
    rows[3]["image"] = image
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "run", "--data", dataset(tmp_path / "d", rows))
    assert_names(line, "record 'dog-3'", "outside the dataset folder", "--allow-outside-paths")


def test_3_a_valid_png_outside_the_folder_is_refused_unless_allowed(tmp_path, capsys):
    rows = rows_of()
    Image.new("RGB", (32, 32)).save(tmp_path / "outside.png")
    rows[3]["image"] = str(tmp_path / "outside.png")
    data = dataset(tmp_path / "d", rows)
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "run", "--data", data)
    assert_names(line, "record 'dog-3'", "outside the dataset folder")
    # with the opt-out the same record passes, and the run goes on to the next check
    rows[0]["width"] = 64
    dataset(tmp_path / "d", rows)
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "run", "--data", data, "--allow-outside-paths")
    assert_names(line, "record 'dog-0'", "declares 64x32")


@pytest.mark.parametrize("which, problem", [(0, "does not exist"), (11, "does not exist"), (1, "cannot be decoded")])
def test_4_a_missing_or_corrupt_image_in_a_or_public_fails_before_training(tmp_path, capsys, which, problem):
    rows = rows_of()  # row 0 has a box (it trains), row 11 has none (public or eval)
    data = dataset(tmp_path / "d", rows)
    image = tmp_path / "d" / rows[which]["image"]
    image.unlink() if problem == "does not exist" else image.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "run", "--data", data)
    assert_names(line, f"record {rows[which]['id']!r}", str(image), problem)


def test_4_a_declared_size_of_a_billion_squared_fails_before_training(tmp_path, capsys):
    rows = rows_of()
    rows[5].update(width=10**9, height=10**9, boxes=[])
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "run", "--data", dataset(tmp_path / "d", rows))
    assert_names(line, "record 'dog-5'", "declares 1000000000x1000000000, but the image is 32x32")


def test_4_splits_that_leave_public_empty_fail_before_training(tmp_path, capsys):
    data = dataset(tmp_path / "d", rows_of(n_boxed=6, n_plain=0))  # every record trains: nothing is public
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "run", "--data", data, "--set", "train.batch_size=4")
    assert_names(line, "measure.image-two-model.k=10 exceeds the 0 public records", "lower measure.image-two-model.k")
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "run", "--data", data)
    assert_names(line, "an epoch over split A holds 6 samples, fewer than one batch (16)")


@pytest.mark.parametrize("override, message", [
    ("measure.image-two-model.k=0", "measure.image-two-model.k must be an integer >= 1, got 0"),
    ("train.batch_size=0", "train.batch_size must be an integer >= 2, got 0"),
    ("train.lr=NaN", "train.lr must be a finite number > 0, got nan"),
    ("train.epochs=-3", "train.epochs must be an integer >= 1, got -3"),  # case 5: was Lightning's traceback
    ("train.epochs=0", "train.epochs must be an integer >= 1, got 0"),  # case 6: was 274 rows of untrained models
    ("measure.vlm-two-model.k=0", "measure.vlm-two-model.k must be an integer >= 1"),
    ("train_by_recipe.simclr.lr=-1", "train_by_recipe.simclr.lr must be a finite number > 0"),
    ("train_by_recipe.clip.crop_scale=[0,1]", "train_by_recipe.clip.crop_scale must be [lo, hi] with 0 < lo"),
    ("data.max_pixels=0", "data.max_pixels must be an integer in [1, 89478485]"),
])
def test_4_a_field_out_of_range_fails_as_it_is_parsed(tmp_path, capsys, override, message):
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "run", "--set", override)
    assert_names(line, message, f"(in --set {override})")
    assert not (tmp_path / "cache").exists()  # refused before the dataset was even built


def test_4_a_bad_seed_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--seed", "-1"])
    assert "seeds are integers >= 0" in capsys.readouterr().err


def test_4_a_k_above_the_public_set_fails_before_training(scenes_cache, tmp_path, capsys):
    line = fails(capsys, scenes_cache, tmp_path / "out", "run", "--set", "measure.image-two-model.k=1000")
    assert_names(line, "measure.image-two-model.k=1000 exceeds the 64 public records")


def test_4_the_pixel_limit_is_a_preset_field(scenes_cache, tmp_path, capsys):
    line = fails(capsys, scenes_cache, tmp_path / "out", "run", "--set", "data.max_pixels=1000")
    assert_names(line, "32x32 = 1024 pixels, more than the limit of 1000", "--set data.max_pixels=N")


def test_4_an_out_that_is_a_file_fails_before_anything(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    line = fails(capsys, tmp_path / "cache", tmp_path / "file", "run")
    assert_names(line, f"--out {str(tmp_path / 'file')!r} is a file, not a folder")
    line = fails(capsys, tmp_path / "cache", tmp_path / "file" / "results", "run")
    assert_names(line, "lies under the file")


def test_4_a_read_only_out_fails_before_anything(tmp_path, capsys, monkeypatch):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    # root may write anywhere, so os.access is asked as an unprivileged user would be answered
    monkeypatch.setattr("bench.preflight.os.access", lambda path, mode: Path(path) != tmp_path / "ro")
    line = fails(capsys, tmp_path / "cache", tmp_path / "ro" / "results", "run")
    assert_names(line, "--out", "is not writable", "read-only for this user")


def test_5_a_decompression_bomb_is_one_line(tmp_path, capsys):
    rows = rows_of()
    rows[7].update(image="bomb.png", width=20000, height=20000, boxes=[])
    data = dataset(tmp_path / "d", rows)
    png_header(tmp_path / "d" / "bomb.png", 20000, 20000)
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "run", "--data", data)
    assert_names(line, "record 'dog-7'", "bomb.png", "too large to decode safely")


def test_5_coco_instances_that_are_a_list_are_one_line(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "instances.json").write_text("[]")
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "run", "--data",
                 f"coco:{tmp_path / 'images'},{tmp_path / 'instances.json'}")
    assert_names(line, "instances.json", "top level is a JSON list")


def test_5_a_full_disk_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    def fill_the_disk(self, f, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write() raises it: no file name

    def run_that_stores(spec):
        ResultsStore(spec.out / "runs.csv").append({"run_id": "r", "recipe": "clip", "mitigation": "none",
                                                    "strength": 0.0, "seed": 0, "dataset": "d", "preset": "smoke",
                                                    "wall_s": 1.0}, pd.DataFrame(
            [{"test": "t", "subset": "all", "metric": "m", "value": 1.0, "ci_low": 0.0, "ci_high": 1.0, "n": 1}]))

    monkeypatch.setattr(pd.DataFrame, "to_csv", fill_the_disk)
    monkeypatch.setattr("bench.commands.run.execute", run_that_stores)
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "run")
    # the run's per-run entry is written first (bench.store), so that is the file the full disk stops
    assert_names(line, "No space left on device", str(tmp_path / "out" / "runs.versions.csv"),
                 "free space on that disk")
    assert [p.name for p in (tmp_path / "out").iterdir() if p.suffix != ".lock"] == []  # no partial table


def test_5_and_7_a_truncated_or_text_checkpoint_is_named(tmp_path, capsys):
    (tmp_path / "notes.ckpt").write_text("hello, these are my notes\n")
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "measure", "--target",
                 f"checkpoint:{tmp_path / 'notes.ckpt'}")
    assert_names(line, str(tmp_path / "notes.ckpt"), "is not a readable checkpoint")
    (tmp_path / "cut.ckpt").write_bytes(b"PK\x03\x04" + b"\x00" * 40)  # the start of a zip, cut short
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "measure", "--target",
                 f"checkpoint:{tmp_path / 'cut.ckpt'}")
    assert_names(line, str(tmp_path / "cut.ckpt"), "truncated, damaged, or not written by torch.save")


def test_6_a_guillotine_deeper_than_the_model_is_refused_before_training(scenes_cache, tmp_path, capsys):
    line = fails(capsys, scenes_cache, tmp_path / "out", "run", "--recipe", "clip", "--mitigation", "guillotine=99")
    assert_names(line, "guillotine=99", "recipe 'clip' has 2 embedding levels", "at most 1")
    line = fails(capsys, scenes_cache, tmp_path / "out", "run", "--recipe", "simclr", "--mitigation",
                 "guillotine,layer=nope")
    assert_names(line, "unknown embedding layer 'nope'", "projector", "backbone")


def test_7_a_manifest_line_that_is_not_utf8_is_named_by_file_and_line(tmp_path, capsys):
    data = dataset(tmp_path / "d", raw_lines=(b'{"id": "caf\xe9"}',))
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "run", "--data", data)
    assert_names(line, str(tmp_path / "d" / "manifest.jsonl"), f"line {len(rows_of()) + 1} is not UTF-8")


def test_7_a_coco_category_without_a_name_is_named(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "instances.json").write_text(json.dumps({"images": [], "categories": [{"id": 3}]}))
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "run", "--data",
                 f"coco:{tmp_path / 'images'},{tmp_path / 'instances.json'}")
    assert_names(line, "instances.json", "categories[0]", "lacks a string 'name'")


def test_7_a_truncated_results_table_is_named_before_training(scenes_cache, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "runs.csv").write_text("run_id,recipe,mitigation\nabc,clip,no")  # cut mid-row
    line = fails(capsys, scenes_cache, tmp_path / "out", "run")
    assert_names(line, str(tmp_path / "out" / "runs.csv"), "truncated", "move it aside")
    (tmp_path / "out" / "runs.csv").write_bytes(b"\xff\xfe\x00binary\n")
    line = fails(capsys, scenes_cache, tmp_path / "out", "run")
    assert_names(line, str(tmp_path / "out" / "runs.csv"), "cannot be read")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there to be asked for")
def test_4_a_gpu_asked_for_on_a_machine_without_one_fails_before_the_data(tmp_path, capsys):
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "run", "--set", "train.accelerator=gpu")
    assert_names(line, "train.accelerator='gpu'", "do not work here")
    assert not (tmp_path / "cache").exists()


def test_4_a_warmup_longer_than_the_training_fails_before_the_data(tmp_path, capsys):
    line = fails(capsys, tmp_path / "cache", tmp_path / "out", "run", "--set", "train.warmup_epochs=2")
    assert_names(line, "train.warmup_epochs=2 is more than the 1 epochs", "lower train.warmup_epochs")


def test_4_view_settings_the_recipe_does_not_know_fail_before_training(scenes_cache, tmp_path, capsys):
    line = fails(capsys, scenes_cache, tmp_path / "out", "run", "--recipe", "simclr",
                 "--set", 'train_by_recipe.simclr.view_kwargs={"sharpness": 0.5}')
    assert_names(line, "train_by_recipe.simclr.view_kwargs={'sharpness': 0.5} do not fit recipe 'simclr'")


@pytest.mark.parametrize("command", [["data", "scenes", "--preset", "smoke"], ["plot"]])
def test_4_other_commands_refuse_an_out_that_is_a_file(tmp_path, capsys, command):
    (tmp_path / "file").write_text("x")
    (tmp_path / "runs.csv").write_text("run_id\nr\n")
    assert main([*command, "--out", str(tmp_path / "file"), *(["--results", str(tmp_path / "runs.csv")]
                                                              if command == ["plot"] else [])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert_names(err[-2], "is a file, not a folder")
