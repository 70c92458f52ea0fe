"""A training folder with a damaged file (issue 10, cases 5 and 7): the file is named, set aside, and the model
trained again; a file that is not a checkpoint is named when loaded. Long captions are counted and reported."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_recipes import CFG, OWN, _record, make_plan

from bench.preflight import check_recipe, report_long_captions
from bench.recipes import build_recipe
from bench.recipes.train import DONE, LAST, RUN, CheckpointError, load_trained, train_model
from dejavu.records import RecordError, RecordSet

RECIPE = "simclr"


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> RecordSet:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    out = []
    for i in range(16):
        path = root / f"r{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        out.append(_record(i, path))
    return RecordSet(out, name="A")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, records) -> Path:
    """Returns a finished training folder (run.json, last.ckpt, done.json); tests damage copies of it."""
    folder = tmp_path_factory.mktemp("trained") / "model"
    train_model(make_plan(RECIPE), records, CFG, OWN[RECIPE], folder, seed=0, progress=False)
    return folder


def damaged_copy(trained: Path, tmp_path: Path, name: str, content: bytes | None) -> Path:
    """Returns a copy of the trained folder with file `name` replaced by `content` (removed when None)."""
    folder = tmp_path / "model"
    shutil.copytree(trained, folder)
    if content is None:
        (folder / name).unlink()
    else:
        (folder / name).write_bytes(content)
    return folder


def train_again(folder: Path, records: RecordSet, caplog) -> tuple[object, str]:
    """Returns the model train_model gives for `folder`, and the warnings it logged."""
    with caplog.at_level(logging.WARNING, logger="bench.recipes.train"):
        model = train_model(make_plan(RECIPE), records, CFG, OWN[RECIPE], folder, seed=0, progress=False)
    return model, caplog.text


def steps(folder: Path) -> int:
    return json.loads((folder / DONE).read_text())["global_step"]


@pytest.mark.parametrize("with_done", [True, False], ids=["finished", "killed mid-training"])
def test_a_truncated_last_checkpoint_is_named_set_aside_and_trained_again(trained, records, tmp_path, caplog,
                                                                           with_done):
    whole = (trained / LAST).read_bytes()
    folder = damaged_copy(trained, tmp_path, LAST, whole[: len(whole) // 3])
    if not with_done:
        (folder / DONE).unlink()
    model, warnings = train_again(folder, records, caplog)
    assert str(folder / LAST) in warnings and "truncated, damaged, or not written by torch.save" in warnings and "training this model again" in warnings
    assert (folder / f"{LAST}.corrupt").is_file()
    assert steps(folder) == steps(trained)  # a whole training, from the start
    assert load_trained(model.checkpoint).recipe == RECIPE


def test_a_broken_done_json_is_named_and_the_sound_checkpoint_is_kept(trained, records, tmp_path, caplog):
    folder = damaged_copy(trained, tmp_path, DONE, b'{"checkpoint": "last.ck')
    before = (folder / LAST).read_bytes()
    _, warnings = train_again(folder, records, caplog)
    assert str(folder / DONE) in warnings and "not valid JSON" in warnings
    assert (folder / f"{DONE}.corrupt").is_file() and not (folder / f"{LAST}.corrupt").exists()
    assert steps(folder) == steps(trained)  # resumed from the finished checkpoint: no new steps
    assert (folder / LAST).read_bytes() == before


def test_a_broken_run_json_sets_the_whole_folder_aside(trained, records, tmp_path, caplog):
    folder = damaged_copy(trained, tmp_path, RUN, b"\x00\x01 not json")
    _, warnings = train_again(folder, records, caplog)
    assert str(folder / RUN) in warnings
    assert {p.name for p in folder.glob("*.corrupt")} == {f"{RUN}.corrupt", f"{DONE}.corrupt", f"{LAST}.corrupt"}
    assert json.loads((folder / RUN).read_text())["seed"] == 0  # claimed afresh


def test_a_missing_checkpoint_of_a_finished_model_is_trained_again(trained, records, tmp_path, caplog):
    folder = damaged_copy(trained, tmp_path, LAST, None)
    _, warnings = train_again(folder, records, caplog)
    assert f"{folder / LAST} is missing" in warnings and (folder / LAST).is_file()


def test_a_text_file_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.ckpt").write_text("hello\n")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'notes.ckpt'} is not a readable checkpoint"):
        load_trained(tmp_path / "notes.ckpt")


def test_6_long_captions_are_counted_and_reported(records, tmp_path, caplog):
    long = RecordSet([*list(records)[:3], _record(99, records[0].image, caption="word " * 20_000)])
    module = build_recipe("clip", CFG, OWN["clip"], long, (0.9, 1.0))
    with caplog.at_level(logging.WARNING, logger="bench.preflight"):
        assert report_long_captions(module, list(long)) == 1
    assert "1 of 4 captions are longer than the text encoder's 32-token context" in caplog.text
    assert "record 'r99', has 20002 tokens" in caplog.text
    assert report_long_captions(module, list(records)[:3]) == 0


def test_an_image_text_recipe_refuses_a_record_without_caption_before_training(records):
    plan = make_plan("clip")
    no_caption = RecordSet([*list(records)[:3], _record(99, records[0].image, caption=None)])
    with pytest.raises(RecordError, match="record 'r99'.*has no caption"):
        check_recipe("clip", CFG, OWN["clip"], plan, (no_caption, records))
    assert check_recipe("clip", CFG, OWN["clip"], plan, (records, records)) == ["projector", "backbone"]
