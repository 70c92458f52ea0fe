"""The results table: one row per (run, test, subset, metric), stored as a CSV pandas reads in one line.

Writes are atomic (`dejavu.files.atomic_open`) and safe across processes (an exclusive
`dejavu.files.file_lock` on `<table>.lock` around each read-modify-write), so a sweep of
parallel runs never loses or duplicates rows. Appending a run_id that is already
stored replaces its rows, so a resumed run leaves no duplicates.

What is the same for every row of a run and long (the package versions, a JSON object) is stored
once per run in a side table, `<table>.versions.csv` (run_id, versions), and joined back on read:
repeating it on each of a run's ~200 rows made up half the table's bytes.
"""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

import pandas as pd

from dejavu.files import atomic_open, file_lock
from dejavu.results import COLUMNS as ROW_COLUMNS

#: what a run contributes to each of its rows
META_COLUMNS = ["run_id", "recipe", "mitigation", "strength", "seed", "dataset", "preset"]
#: the table's columns, in order; extra columns a run supplies follow them
TABLE_COLUMNS = META_COLUMNS + ROW_COLUMNS + ["wall_s", "versions"]
STRING_COLUMNS = ["run_id", "recipe", "mitigation", "dataset", "preset", "test", "subset", "metric",
                  "versions"]
#: the columns stored once per run in the side table rather than on every row
PER_RUN_COLUMNS = ["versions"]
NUMERIC_COLUMNS = ("strength", "seed", "value", "ci_low", "ci_high", "n", "wall_s")
#: the distributions whose versions each row records
VERSIONED = ("dejavu-bench", "torch", "torchvision", "lightning", "lightly", "open_clip_torch",
             "faiss-cpu", "numpy", "pandas")


class ResultsTableError(ValueError):
    """A results table that cannot be read back: truncated, or not a table this suite wrote."""


def package_versions() -> str:
    """Returns the installed versions of the packages that shape the numbers, as a JSON object string."""
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return json.dumps(versions, sort_keys=True)


_FIX = "restore it from a copy, or move it aside to start a new table"


def _read_csv(path: Path) -> pd.DataFrame:
    """Returns one CSV table this store wrote; ResultsTableError names it when it is damaged."""
    # every write ends the table with a newline, so a table without one was cut short
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                raise ResultsTableError(f"results table {str(path)!r} is truncated (its last line is "
                                        f"cut off); {_FIX}")
    try:
        # keep_default_na=False: a mitigation or preset called e.g. "none" or "NA" stays a string
        return pd.read_csv(path, dtype={c: str for c in STRING_COLUMNS}, keep_default_na=False,
                           na_values={c: ["", "nan", "NaN"] for c in NUMERIC_COLUMNS})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise ResultsTableError(f"results table {str(path)!r} cannot be read "
                                f"({str(err).splitlines()[0]}); {_FIX}") from None


class ResultsStore:
    """The results table at `path` (e.g. results/runs.csv)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.per_run_path = self.path.with_name(f"{self.path.stem}.versions{self.path.suffix}")

    def read(self) -> pd.DataFrame:
        """Returns the whole table (empty, with the standard columns, when nothing is stored yet).

        The per-run side table is joined back, so the columns are TABLE_COLUMNS and any extra ones;
        a table written before the side table existed (versions on every row) reads the same.
        A damaged table raises ResultsTableError naming it: appending to it would keep the damage.
        """
        if not self.path.exists():
            return pd.DataFrame(columns=TABLE_COLUMNS)
        table = _read_csv(self.path)
        if "run_id" not in table.columns:
            raise ResultsTableError(f"{str(self.path)!r} is not a results table of this suite (no run_id "
                                    f"column); {_FIX}, or pass another --out")
        missing = [c for c in PER_RUN_COLUMNS if c not in table.columns]
        if missing:
            per_run = self._read_per_run().drop_duplicates("run_id", keep="last").set_index("run_id")
            for column in missing:
                by_run = per_run[column] if column in per_run.columns else pd.Series(dtype=str)
                table[column] = table["run_id"].map(by_run).fillna("")  # "": a run the side table lacks
        first = [c for c in TABLE_COLUMNS if c in table.columns]
        return table[first + [c for c in table.columns if c not in first]]

    def _read_per_run(self) -> pd.DataFrame:
        """Returns the side table (run_id, versions); empty when there is none."""
        if not self.per_run_path.exists():
            return pd.DataFrame(columns=["run_id", *PER_RUN_COLUMNS])
        per_run = _read_csv(self.per_run_path)
        if "run_id" not in per_run.columns:
            raise ResultsTableError(f"{str(self.per_run_path)!r} is not the per-run table of "
                                    f"{str(self.path)!r} (no run_id column); {_FIX}")
        return per_run

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
        with file_lock(self.lock_path):
            old = self.read()
            table = pd.concat([old[old["run_id"] != meta["run_id"]], new], ignore_index=True)
            # the side table first: a crash between the two writes leaves an unused entry, never a
            # row without its versions
            per_run = table[["run_id", *PER_RUN_COLUMNS]].drop_duplicates("run_id", keep="last")
            with atomic_open(self.per_run_path, "w", newline="") as f:
                per_run.to_csv(f, index=False)
            with atomic_open(self.path, "w", newline="") as f:
                table.drop(columns=PER_RUN_COLUMNS).to_csv(f, index=False)
        return new
