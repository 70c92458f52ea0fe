"""`bench run` end to end on the smoke preset: stored rows, no duplicates, model reuse, resume after a kill."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageOps

from bench.cli import main
from bench.recipes import get_recipe, legacy
from bench.recipes.train import DONE, LAST, RUN, expanded_length, load_trained
from bench.run import RunSpec, load_records, model_dir, prepare
from bench.store import TABLE_COLUMNS, ResultsStore
from dejavu.data import check_spec
from dejavu.results import SUBSETS, TESTS
from dejavu.splits import training_records

IMAGE_TESTS = {"image-two-model", "image-one-model-nb", "image-one-model-crop", "utility"}


def model_state_of(folder: Path) -> tuple[int, int]:
    """Returns (done.json mtime, last.ckpt mtime) of a trained model's folder."""
    return (folder / DONE).stat().st_mtime_ns, (folder / LAST).stat().st_mtime_ns


def model_state(cache: Path) -> dict[str, tuple[int, int]]:
    """Returns {model dir: (done.json mtime, last.ckpt mtime)} for every trained model in the cache."""
    return {str(done.parent.relative_to(cache)): model_state_of(done.parent)
            for done in sorted((cache / "models").glob(f"*/*/{DONE}"))}


def bench_run(out: Path, cache: Path, *options: str) -> int:
    """Returns the exit code of `python -m bench run --preset smoke` with these folders and options."""
    return main(["run", "--preset", "smoke", "--out", str(out), "--cache", str(cache), "--no-progress", *options])


def test_check_spec_reads_nothing_and_names_the_missing_path(tmp_path):
    assert check_spec("scenes") == ("scenes", ["default"])
    check_spec("scenes:smoke")
    check_spec(f"manifest:{tmp_path}")  # exists; whether it holds a manifest is load_dataset's business
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="dataset path '.*instances.json'"):
        check_spec(f"coco:{tmp_path / 'images'},{tmp_path / 'instances.json'}")
    with pytest.raises(ValueError, match="unknown dataset kind 'cifar'"):
        check_spec("cifar:/data")


@dataclass(frozen=True)
class SmokeRun:
    """A finished clip smoke run: its folders, stored table, and the trained models it left."""

    out: Path
    cache: Path
    table: pd.DataFrame
    models: dict[str, tuple[int, int]]


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory) -> SmokeRun:
    """Returns one clip smoke run; later tests reuse its cache (data and models)."""
    root = tmp_path_factory.mktemp("run")
    assert bench_run(root / "results", root / "cache", "--recipe", "clip") == 0
    return SmokeRun(root / "results", root / "cache", ResultsStore(root / "results" / "runs.csv").read(),
                    model_state(root / "cache"))


def test_clip_run_stores_every_column_test_and_subset(clip_run):
    table = clip_run.table
    assert list(table.columns) == TABLE_COLUMNS
    assert table.run_id.nunique() == 1 and len(table) > 0
    assert set(table.test) == set(TESTS)
    assert set(table.subset) == set(SUBSETS)
    assert (table.recipe == "clip").all() and (table.mitigation == "none").all() and (table.strength == 0).all()
    assert (table.preset == "smoke").all() and (table.seed == 0).all()
    assert table.dataset.str.startswith("scenes:").all()
    assert json.loads(table.versions.iloc[0])["torch"]
    assert table[["test", "subset", "metric"]].duplicated().sum() == 0
    assert {"image-two-model", "vlm-two-model", "utility"} <= set(table.dropna(subset=["value"]).test)
    assert len(clip_run.models) == 2  # one target, one reference


def test_a_run_ends_by_writing_its_report_page(clip_run):
    (run_id,) = clip_run.table.run_id.unique()
    folder = clip_run.out / "reports" / run_id
    html = (folder / "report.html").read_text()
    assert f"run {run_id}: clip, none, seed 0" in html and "vlm-two-model" in html
    assert "recorded by the run" in html and "python -m bench run --recipe clip --data scenes --preset smoke" in html
    assert json.loads((folder / "run_config.json").read_text())["sections"]["train"]["epochs"] >= 1


def assert_trains_nothing(clip_run, before: dict) -> None:
    """Asserts that the cache holds exactly the models of `before`, the clip run's own untouched."""
    assert model_state(clip_run.cache) == before
    assert {m: before[m] for m in clip_run.models} == clip_run.models


def test_repeated_run_adds_no_rows_and_trains_nothing(clip_run):
    before = model_state(clip_run.cache)  # other tests may have added models of their own
    assert bench_run(clip_run.out, clip_run.cache, "--recipe", "clip") == 0
    pd.testing.assert_frame_equal(ResultsStore(clip_run.out / "runs.csv").read(), clip_run.table)
    assert_trains_nothing(clip_run, before)


def copy_of(clip_run, tmp_path: Path) -> tuple[Path, Path]:
    """Returns (results, cache): copies of the clip run's folders at another place."""
    out, cache = tmp_path / "elsewhere" / "results", tmp_path / "elsewhere" / "cache"
    shutil.copytree(clip_run.out, out)
    shutil.copytree(clip_run.cache, cache, ignore=shutil.ignore_patterns("*.lock"))
    return out, cache


def clip_identity(cache: Path, *overrides: str):
    """Returns (prepared, records, run_id) of the clip smoke run with this cache."""
    prepared = prepare(RunSpec(recipe="clip", preset="smoke", cache=cache, overrides=overrides))
    records = load_records(prepared)
    return prepared, records, prepared.run_id(records.fingerprint())


def test_the_run_id_and_model_cache_do_not_depend_on_where_the_data_and_cache_live(clip_run, tmp_path):
    out, cache = copy_of(clip_run, tmp_path)
    (run_id,) = clip_run.table.run_id.unique()
    assert clip_identity(cache)[2] == run_id
    before = model_state(cache)
    assert bench_run(out, cache, "--recipe", "clip") == 0  # the shared table already holds this run
    pd.testing.assert_frame_equal(ResultsStore(out / "runs.csv").read(), clip_run.table)
    assert model_state(cache) == before


def test_an_image_overwritten_in_place_changes_the_run_id(clip_run, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(clip_run.cache / "data", cache / "data")
    prepared, records, run_id = clip_identity(cache)
    assert run_id == clip_run.table.run_id.iloc[0]
    image = Path(records[0].image)
    with Image.open(image) as img:
        ImageOps.mirror(img.convert("RGB")).save(image)  # same place, size and annotations; other pixels
    _, changed, changed_id = clip_identity(cache)
    assert changed_id != run_id and changed.fingerprint() != records.fingerprint()
    assert model_dir(prepared, changed, "target") != model_dir(prepared, records, "target")


def test_two_spellings_of_one_configuration_are_one_run(clip_run):
    prepared, _, run_id = clip_identity(clip_run.cache)
    epochs = prepared.train.epochs
    assert clip_identity(clip_run.cache, f"train.epochs={epochs}")[2] == run_id  # the preset's own value
    assert clip_identity(clip_run.cache, "train.num_workers=1", "train.log_every_n_steps=1")[2] == run_id
    assert clip_identity(clip_run.cache, f"train.epochs={epochs + 1}")[2] != run_id
    assert clip_identity(clip_run.cache, "measure.stats.n_bootstrap=300")[2] != run_id
    assert clip_identity(clip_run.cache, "measure.stats.seed=0")[2] == run_id  # a knob at its default: as if unset
    assert clip_identity(clip_run.cache, "measure.stats.seed=1")[2] != run_id
    assert clip_identity(clip_run.cache, "measure.vlm-two-model.k=5")[2] == run_id  # smoke's own value
    assert clip_identity(clip_run.cache, "measure.image-two-model.k=9")[2] != run_id
    assert clip_identity(clip_run.cache, "train_by_recipe.clip.model=tiny")[2] == run_id  # its Config's default
    assert clip_identity(clip_run.cache, "train_by_recipe.clip.crop_scale=[0.8, 1.0]")[2] != run_id


def test_another_recipes_hyperparameter_keys_no_model_of_this_one(clip_run):
    prepared, records, _ = clip_identity(clip_run.cache)
    other, _, _ = clip_identity(clip_run.cache, "train_by_recipe.simclr.temperature=0.2")
    own, _, _ = clip_identity(clip_run.cache, "train_by_recipe.clip.crop_scale=[0.8, 1.0]")
    assert model_dir(other, records, "target") == model_dir(prepared, records, "target")
    assert model_dir(own, records, "target") != model_dir(prepared, records, "target")


def to_earlier_layout(prepared, records, role: str, split: str, data_key: str) -> Path:
    """Returns the folder a model of the clip run moved to, as an earlier release left it.

    That release keyed the folder by the flat config of every recipe (and `data_key`), recorded that config
    in run.json, and stored it, beside the plan's crop scale, as the checkpoint's hyperparameters.
    """
    flat = legacy.flat_config(get_recipe("clip"), prepared.train, prepared.preset.recipe_config)
    old = model_dir(prepared, records, role, data_key=data_key, train_key={"train": flat})
    old.parent.mkdir(parents=True, exist_ok=True)
    model_dir(prepared, records, role).rename(old)
    identity = json.loads((old / RUN).read_text())
    del identity["recipe_config"]
    identity["config"] = {k: v for k, v in flat.items() if k not in ("epochs", "num_workers", "log_every_n_steps")}
    if data_key == records.path_fingerprint():  # that release recorded the training split's path fingerprint
        identity["data"] = training_records(records, split).path_fingerprint()
    (old / RUN).write_text(json.dumps(identity))
    checkpoint = torch.load(old / LAST, weights_only=True)
    hparams = {"cfg": flat, "crop_scale": list(prepared.plan.crop_scale),
               "model_cfg": checkpoint["hyper_parameters"]["model_cfg"]}
    torch.save({**checkpoint, "hyper_parameters": hparams}, old / LAST)
    return old


def test_models_cached_by_an_earlier_release_are_moved_not_retrained(clip_run, tmp_path):
    out, cache = tmp_path / "results", copy_of(clip_run, tmp_path)[1]
    prepared, records, _ = clip_identity(cache)
    new = {role: model_dir(prepared, records, role) for role in ("target", "reference")}
    identities = {role: (folder / RUN).read_text() for role, folder in new.items()}
    pixels = torch.zeros(2, 3, 32, 32)
    embedded = load_trained(new["target"] / LAST).encoder().embed_images(pixels)
    # the target as the release before content digests left it (image paths), the reference as the one after
    earlier = {"target": to_earlier_layout(prepared, records, "target", "A", records.path_fingerprint()),
               "reference": to_earlier_layout(prepared, records, "reference", "B", records.fingerprint())}
    assert not any(folder.exists() for folder in new.values())
    before = {str(new[role].relative_to(cache)): model_state_of(folder) for role, folder in earlier.items()}

    assert bench_run(out, cache, "--recipe", "clip") == 0
    assert model_state(cache) == before  # moved to today's folders, untouched, nothing else trained
    for role, folder in new.items():  # run.json in today's form, as a fresh training writes it
        assert json.loads((folder / RUN).read_text()) == json.loads(identities[role])
    adopted = load_trained(new["target"] / LAST)
    assert adopted.module.recipe_cfg == prepared.preset.recipe_config("clip")
    torch.testing.assert_close(adopted.encoder().embed_images(pixels), embedded, rtol=0, atol=0)
    table = ResultsStore(out / "runs.csv").read()
    pd.testing.assert_frame_equal(table.drop(columns="wall_s"), clip_run.table.drop(columns="wall_s"))


def test_guillotine_reuses_the_trained_models(clip_run, tmp_path):
    before = model_state(clip_run.cache)
    assert bench_run(tmp_path, clip_run.cache, "--recipe", "clip", "--mitigation", "guillotine") == 0
    table = ResultsStore(tmp_path / "runs.csv").read()
    assert_trains_nothing(clip_run, before)  # the clip run's two models, not retrained
    assert set(table.run_id).isdisjoint(clip_run.table.run_id)
    assert table.mitigation.str.startswith("guillotine").all()
    key = ["test", "subset", "metric"]
    both = clip_run.table.merge(table, on=key, suffixes=("_projector", "_backbone"))
    image = both[both.test == "image-two-model"].dropna(subset=["value_projector", "value_backbone"])
    assert len(image) > 0
    assert not np.allclose(image.value_projector, image.value_backbone)  # measured at another layer


def test_textrand_trains_new_models(clip_run, tmp_path):
    before = model_state(clip_run.cache)
    assert bench_run(tmp_path, clip_run.cache, "--recipe", "clip", "--mitigation", "textrand=0.5") == 0
    models = model_state(clip_run.cache)
    new = sorted(set(models) - set(before))
    assert {Path(m).name for m in new} == {"target", "reference"} and len({Path(m).parent for m in new}) == 1
    assert {m: models[m] for m in clip_run.models} == clip_run.models
    done = json.loads((clip_run.cache / new[0] / DONE).read_text())
    assert [a.split("=")[0] for a in done["applied"]] == ["textrand"]
    assert ResultsStore(tmp_path / "runs.csv").read().mitigation.str.startswith("textrand").all()


def test_ssl_run_stores_the_image_tests(clip_run, tmp_path):
    assert bench_run(tmp_path, clip_run.cache, "--recipe", "simclr") == 0
    table = ResultsStore(tmp_path / "runs.csv").read()
    assert list(table.columns) == TABLE_COLUMNS
    assert set(table.test) == IMAGE_TESTS  # no caption tests without a text tower
    assert set(table.subset) == set(SUBSETS)
    assert (table.recipe == "simclr").all()
    assert {"dv_gap@100", "memorized", "misrepresented"} <= set(table[table.test == "image-two-model"].metric)
    assert "linear_probe_top1" in set(table[table.test == "utility"].metric)


def test_killed_training_resumes_from_its_last_checkpoint(clip_run, tmp_path):
    epochs = 5
    options = ["--recipe", "clip", "--set", f"train.epochs={epochs}"]
    spec = RunSpec(recipe="clip", preset="smoke", cache=clip_run.cache, out=tmp_path,
                   overrides=(f"train.epochs={epochs}",))
    prepared = prepare(spec)
    records = load_records(prepared)
    target, reference = (model_dir(prepared, records, role) for role in ("target", "reference"))

    command = [sys.executable, "-m", "bench", "run", "--preset", "smoke", "--out", str(tmp_path),
               "--cache", str(clip_run.cache), "--no-progress", *options]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    while not (target / LAST).exists():  # the first epoch's checkpoint
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    proc.stderr.close()
    assert not (target / DONE).exists(), "training finished before it could be killed"

    assert bench_run(tmp_path, clip_run.cache, *options) == 0
    done_target = json.loads((target / DONE).read_text())
    done_reference = json.loads((reference / DONE).read_text())  # trained without interruption
    steps_per_epoch = expanded_length(training_records(records, "A")) // prepared.train.batch_size
    assert done_target["global_step"] == done_reference["global_step"] == epochs * steps_per_epoch
    assert done_target["epochs_run"] == epochs
    resumed = pd.read_csv(target / "logs" / "version_1" / "metrics.csv")
    assert resumed.epoch.min() >= 1  # continued after the saved epoch(s), did not start over
    assert resumed.step.max() == epochs * steps_per_epoch - 1
    assert ResultsStore(tmp_path / "runs.csv").run_ids() == [prepared.run_id(records.fingerprint())]


class _CountingModel:
    """Stands for a TrainedModel: hands out a new encoder object per call, and counts the calls."""

    def __init__(self):
        self.layers: list = []

    def encoder(self, layer):
        self.layers.append(layer)
        return object()


@pytest.mark.parametrize("mitigations, joint_reused", [((), True), (("guillotine=1",), False)])
def test_models_for_reuses_the_projector_encoder_for_captions(mitigations, joint_reused):
    from bench.run import models_for

    prepared = prepare(RunSpec(recipe="clip", mitigations=mitigations, preset="smoke"))
    target, reference = _CountingModel(), _CountingModel()
    models = models_for(prepared, target, reference)
    assert (models.target_vlm is models.target) == joint_reused
    assert (models.reference_vlm is models.reference) == joint_reused
    assert len(target.layers) == (1 if joint_reused else 2)  # each encoder is built (and fingerprinted) once
    simclr = models_for(prepare(RunSpec(recipe="simclr", preset="smoke")), _CountingModel(), _CountingModel())
    assert simclr.target_vlm is None and simclr.reference_vlm is None
