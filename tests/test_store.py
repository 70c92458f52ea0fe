"""Results store: round trip, resume dedupe, atomic writes, concurrent appends."""

from __future__ import annotations

import json
import math
import multiprocessing

import pandas as pd
import pytest

from bench.store import TABLE_COLUMNS, ResultsStore, ResultsTableError
from dejavu.results import Row, to_frame


def meta(run_id, **changes):
    """Returns run metadata for a synthetic run."""
    return {"run_id": run_id, "recipe": "vicreg", "mitigation": "none", "strength": 0.0, "seed": 0,
            "dataset": "scenes:abc123", "preset": "tiny", "wall_s": 12.5, **changes}


def rows(value=0.25, n_metrics=2):
    """Returns result rows with distinct metrics and a NaN interval in the last one."""
    out = [Row("image-two-model", "canary", f"dv_gap@{p}", value + p / 100, value - 0.1, value + 0.1, 40)
           for p in range(n_metrics - 1)]
    return to_frame(out + [Row("utility", "all", "linear_probe_top1", 0.5, n=100)])


def test_round_trip_keeps_values_types_and_columns(tmp_path):
    store = ResultsStore(tmp_path / "results" / "runs.csv")
    assert store.read().empty and store.run_ids() == [] and not store.has_run("r1")
    store.append(meta("r1", mitigation="none", preset="NA"), rows(1 / 3))
    table = store.read()
    assert list(table.columns) == TABLE_COLUMNS
    assert len(table) == 2 and store.run_ids() == ["r1"] and store.has_run("r1")
    first = table.iloc[0]
    assert (first["mitigation"], first["preset"], first["value"], first["n"]) == ("none", "NA", 1 / 3, 40)
    assert math.isnan(table.iloc[1]["ci_low"]) and table.iloc[1]["ci_high"] != table.iloc[1]["ci_high"]
    assert json.loads(first["versions"])["pandas"] == pd.__version__


def test_versions_are_stored_once_per_run_and_joined_back(tmp_path):
    store = ResultsStore(tmp_path / "runs.csv")
    store.append({**meta("r1"), "versions": '{"torch": "1.0"}'}, rows(n_metrics=3))
    store.append({**meta("r2"), "versions": '{"torch": "2.0"}'}, rows())
    store.append({**meta("r1"), "versions": '{"torch": "1.1"}'}, rows())  # a re-run replaces its entry
    on_disk = pd.read_csv(tmp_path / "runs.csv")
    assert "versions" not in on_disk.columns and len(on_disk) == 4
    per_run = pd.read_csv(tmp_path / "runs.versions.csv")
    assert per_run.to_dict("records") == [{"run_id": "r2", "versions": '{"torch": "2.0"}'},
                                          {"run_id": "r1", "versions": '{"torch": "1.1"}'}]
    table = store.read()
    assert list(table.columns) == TABLE_COLUMNS
    assert dict(zip(table.run_id, table.versions, strict=True)) == {"r1": '{"torch": "1.1"}', "r2": '{"torch": "2.0"}'}


def test_a_table_with_versions_on_every_row_reads_the_same_and_is_split_on_append(tmp_path):
    old = ResultsStore(tmp_path / "old" / "runs.csv")
    old.append({**meta("r1"), "versions": '{"torch": "1.0"}'}, rows())
    legacy = old.read()
    legacy.to_csv(tmp_path / "runs.csv", index=False)  # the layout before the side table
    store = ResultsStore(tmp_path / "runs.csv")
    pd.testing.assert_frame_equal(store.read(), legacy)
    store.append({**meta("r2"), "versions": '{"torch": "2.0"}'}, rows())
    assert "versions" not in pd.read_csv(tmp_path / "runs.csv").columns
    assert dict(zip(store.read().run_id, store.read().versions, strict=True)) == {"r1": '{"torch": "1.0"}',
                                                                      "r2": '{"torch": "2.0"}'}


def test_a_run_missing_from_the_side_table_reads_with_empty_versions(tmp_path):
    store = ResultsStore(tmp_path / "runs.csv")
    store.append(meta("r1"), rows())
    (tmp_path / "runs.versions.csv").unlink()
    assert set(store.read().versions) == {""}
    (tmp_path / "runs.versions.csv").write_text("run_id,versions\nr1,{}")  # cut short: no newline
    with pytest.raises(ResultsTableError, match=r"runs\.versions\.csv.*truncated"):
        store.read()


def test_numeric_looking_run_ids_stay_strings(tmp_path):
    store = ResultsStore(tmp_path / "runs.csv")
    store.append(meta("007"), rows())
    assert store.run_ids() == ["007"] and store.has_run("007")


def test_resume_replaces_the_rows_of_an_existing_run(tmp_path):
    store = ResultsStore(tmp_path / "runs.csv")
    store.append(meta("r1"), rows(0.1))
    store.append(meta("r2"), rows(0.2))
    store.append(meta("r1", wall_s=99.0), rows(0.9, n_metrics=3))
    table = store.read()
    assert store.run_ids() == ["r2", "r1"]
    assert len(table) == 2 + 3
    assert set(table.loc[table.run_id == "r1", "wall_s"]) == {99.0}
    assert table.loc[table.run_id == "r1", "value"].iloc[0] == 0.9


def test_bad_input_names_what_is_missing(tmp_path):
    store = ResultsStore(tmp_path / "runs.csv")
    with pytest.raises(ValueError, match=r"run_meta lacks \['seed'\]"):
        store.append({k: v for k, v in meta("r1").items() if k != "seed"}, rows())
    with pytest.raises(ValueError, match=r"rows of run 'r1' lack the columns \['n'\]"):
        store.append(meta("r1"), rows().drop(columns="n"))
    assert not (tmp_path / "runs.csv").exists()


def test_a_crash_mid_write_leaves_the_old_table_intact(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "runs.csv")
    store.append(meta("r1"), rows())
    before = (tmp_path / "runs.csv").read_bytes()

    def half_write(self, f, **kwargs):
        f.write("run_id,recipe\nr2,vic")  # a torn, partial table
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_write)
    with pytest.raises(OSError, match="disk full"):
        store.append(meta("r2"), rows())
    monkeypatch.undo()
    assert (tmp_path / "runs.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv", "runs.csv.lock",
                                                          "runs.versions.csv"]  # no temp left
    assert store.run_ids() == ["r1"]


def append_runs(path, worker, n_runs):
    """Appends `n_runs` runs of one worker; runs in a child process."""
    store = ResultsStore(path)
    for i in range(n_runs):
        store.append(meta(f"w{worker}-r{i}", seed=worker), rows(value=worker + i / 10))


def test_concurrent_appends_from_processes_keep_every_row_once(tmp_path):
    path, workers, n_runs = tmp_path / "runs.csv", 4, 5
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=append_runs, args=(path, w, n_runs)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0] * workers
    table = ResultsStore(path).read()
    expected = {f"w{w}-r{i}" for w in range(workers) for i in range(n_runs)}
    assert set(table.run_id) == expected
    assert len(table) == 2 * len(expected)
    assert not table.duplicated(["run_id", "test", "subset", "metric"]).any()
