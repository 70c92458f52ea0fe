"""The results table: one row per (run, test, subset, metric), stored as a CSV pandas reads in one line.

Writes are atomic (a temporary file in the same folder, then os.replace) and safe across
processes (an exclusive fcntl lock on `<table>.lock` around each read-modify-write), so a
sweep of parallel runs never loses or duplicates rows. Appending a run_id that is already
stored replaces its rows, so a resumed run leaves no duplicates.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import pandas as pd

from dejavu.results import COLUMNS as ROW_COLUMNS

#: what a run contributes to each of its rows
META_COLUMNS = ["run_id", "recipe", "mitigation", "strength", "seed", "dataset", "preset"]
#: the table's columns, in order; extra columns a run supplies follow them
TABLE_COLUMNS = META_COLUMNS + ROW_COLUMNS + ["wall_s", "versions"]
STRING_COLUMNS = ["run_id", "recipe", "mitigation", "dataset", "preset", "test", "subset", "metric",
                  "versions"]
#: the distributions whose versions each row records
VERSIONED = ("dejavu-bench", "torch", "torchvision", "lightning", "lightly", "open_clip_torch",
             "faiss-cpu", "numpy", "pandas")


def package_versions() -> str:
    """Returns the installed versions of the packages that shape the numbers, as a JSON object string."""
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return json.dumps(versions, sort_keys=True)


class ResultsStore:
    """The results table at `path` (e.g. results/runs.csv)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def read(self) -> pd.DataFrame:
        """Returns the whole table (empty, with the standard columns, when nothing is stored yet)."""
        if not self.path.exists():
            return pd.DataFrame(columns=TABLE_COLUMNS)
        # keep_default_na=False: a mitigation or preset called e.g. "none" or "NA" stays a string
        return pd.read_csv(self.path, dtype={c: str for c in STRING_COLUMNS}, keep_default_na=False,
                           na_values={c: ["", "nan", "NaN"] for c in ("strength", "seed", "value", "ci_low",
                                                                       "ci_high", "n", "wall_s")})

    def run_ids(self) -> list[str]:
        """Returns the stored run ids in the order they were first written."""
        return list(dict.fromkeys(self.read()["run_id"]))

    def has_run(self, run_id: str) -> bool:
        """Returns True when rows of `run_id` are stored."""
        return str(run_id) in set(self.read()["run_id"])

    def append(self, run_meta: dict, rows: pd.DataFrame) -> pd.DataFrame:
        """Returns the stored rows of the run after writing them, replacing any earlier rows of its run_id.

        `run_meta` holds the META_COLUMNS and `wall_s` (`versions` defaults to the installed
        ones); `rows` has the dejavu.results columns (test, subset, metric, value, ...).
        """
        missing_meta = [c for c in META_COLUMNS + ["wall_s"] if c not in run_meta]
        if missing_meta:
            raise ValueError(f"run_meta lacks {missing_meta}; it needs {META_COLUMNS + ['wall_s']}")
        missing_cols = [c for c in ROW_COLUMNS if c not in rows.columns]
        if missing_cols:
            raise ValueError(f"rows of run {run_meta['run_id']!r} lack the columns {missing_cols}")
        meta = {"versions": package_versions(), **run_meta, "run_id": str(run_meta["run_id"])}
        new = rows.assign(**meta)
        new = new[TABLE_COLUMNS + sorted(set(new.columns) - set(TABLE_COLUMNS))]
        with self._locked():
            old = self.read()
            table = pd.concat([old[old["run_id"] != meta["run_id"]], new], ignore_index=True)
            self._write_atomically(table)
        return new

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write_atomically(self, table: pd.DataFrame) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", newline="") as f:
                table.to_csv(f, index=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
