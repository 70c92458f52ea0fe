"""`bench sweep`: the grid, resuming without duplicates, and submitit's local executor."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.recipes.train import DONE
from bench.run import RunSpec
from bench.store import ResultsStore
from bench.sweep import grid, parse_setting, run_sweep


def trained_models(cache: Path) -> dict[str, int]:
    """Returns {model dir: done.json mtime} for every trained model in the cache."""
    return {str(d.parent.relative_to(cache)): d.stat().st_mtime_ns for d in (cache / "models").glob(f"*/*/{DONE}")}


def bench_sweep(out: Path, cache: Path, *options: str) -> int:
    """Returns the exit code of `python -m bench sweep --preset smoke` with these folders and options."""
    return main(["sweep", "--preset", "smoke", "--out", str(out), "--cache", str(cache), "--no-progress", *options])


@dataclass(frozen=True)
class Sweep:
    """A finished two-point clip sweep: its folders, printed line, table and trained models."""

    out: Path
    cache: Path
    printed: str
    table: pd.DataFrame
    models: dict[str, int]


@pytest.fixture(scope="module")
def clip_sweep(tmp_path_factory) -> Sweep:
    """Returns the sweep clip x {none, textrand=0.5} on the smoke preset."""
    root = tmp_path_factory.mktemp("sweep")
    out, cache = root / "results", root / "cache"
    buffer = io.StringIO()  # capsys is function-scoped
    with contextlib.redirect_stdout(buffer):
        assert bench_sweep(out, cache, "--recipes", "clip", "--mitigations", "none", "textrand=0.5") == 0
    return Sweep(out, cache, buffer.getvalue(), ResultsStore(out / "runs.csv").read(), trained_models(cache))


def test_parse_setting():
    assert parse_setting("none") == () and parse_setting(" ") == ()
    assert parse_setting("textrand=0.5") == ("textrand=0.5",)
    assert parse_setting("textrand=0.5+earlystop=0.5") == ("textrand=0.5", "earlystop=0.5")


def test_grid_is_the_product_in_order(tmp_path):
    specs = grid(RunSpec(preset="smoke", out=tmp_path), ["clip", "simclr"], ["none", "crop=0.5"], [0, 1])
    assert [(s.recipe, s.mitigations, s.seed) for s in specs] == [
        ("clip", (), 0), ("clip", (), 1), ("clip", ("crop=0.5",), 0), ("clip", ("crop=0.5",), 1),
        ("simclr", (), 0), ("simclr", (), 1), ("simclr", ("crop=0.5",), 0), ("simclr", ("crop=0.5",), 1)]
    assert {s.preset for s in specs} == {"smoke"} and list(tmp_path.iterdir()) == []


def test_unknown_launcher_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown launcher 'pbs'"):
        run_sweep([RunSpec(preset="smoke", out=tmp_path)], launcher="pbs")


def test_sweep_runs_every_grid_point(clip_sweep):
    table = clip_sweep.table
    assert table.run_id.nunique() == 2
    assert set(table.mitigation) == {"none", "textrand=0.5"}
    assert (table.recipe == "clip").all()
    per_run = table.groupby("run_id").size()
    assert f"sweep finished: 2 runs, {per_run.sum()} rows" in clip_sweep.printed
    assert len(clip_sweep.models) == 4  # target and reference, for each training setup


def test_repeated_sweep_adds_no_rows_and_trains_nothing(clip_sweep):
    assert bench_sweep(clip_sweep.out, clip_sweep.cache, "--recipes", "clip",
                       "--mitigations", "none", "textrand=0.5") == 0
    pd.testing.assert_frame_equal(ResultsStore(clip_sweep.out / "runs.csv").read(), clip_sweep.table)
    assert trained_models(clip_sweep.cache) == clip_sweep.models


def test_submitit_local_launcher_runs_a_one_point_grid(clip_sweep, tmp_path):
    # guillotine needs no training: the job measures the sweep's cached baseline models
    assert bench_sweep(tmp_path, clip_sweep.cache, "--launcher", "submitit-local", "--recipes", "clip",
                       "--mitigations", "guillotine") == 0
    table = ResultsStore(tmp_path / "runs.csv").read()
    assert table.run_id.nunique() == 1 and table.mitigation.str.startswith("guillotine").all()
    assert set(table.run_id).isdisjoint(clip_sweep.table.run_id)
    assert trained_models(clip_sweep.cache) == clip_sweep.models
    assert list((clip_sweep.cache / "submitit").glob("*_result.pkl"))  # it really went through submitit
