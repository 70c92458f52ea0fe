"""The results table: one row per (run, test, subset, metric), stored as a CSV pandas reads in one line.

Writes are atomic (`dejavu.files.atomic_open`) and safe across processes (an exclusive
`dejavu.files.file_lock` on `<table>.lock` around each read-modify-write), so a sweep of
parallel runs never loses or duplicates rows. Appending a run_id that is already
stored replaces its rows, so a resumed run leaves no duplicates.
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


class ResultsStore:
    """The results table at `path` (e.g. results/runs.csv)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def read(self) -> pd.DataFrame:
        """Returns the whole table (empty, with the standard columns, when nothing is stored yet).

        A damaged table raises ResultsTableError naming it: appending to it would keep the damage.
        """
        if not self.path.exists():
            return pd.DataFrame(columns=TABLE_COLUMNS)
        fix = "restore it from a copy, or move it aside to start a new table"
        # every write ends the table with a newline, so a table without one was cut short
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    raise ResultsTableError(f"results table {str(self.path)!r} is truncated (its last line is "
                                            f"cut off); {fix}")
        try:
            # keep_default_na=False: a mitigation or preset called e.g. "none" or "NA" stays a string
            table = pd.read_csv(self.path, dtype={c: str for c in STRING_COLUMNS}, keep_default_na=False,
                                na_values={c: ["", "nan", "NaN"] for c in ("strength", "seed", "value", "ci_low",
                                                                            "ci_high", "n", "wall_s")})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
            raise ResultsTableError(f"results table {str(self.path)!r} cannot be read "
                                    f"({str(err).splitlines()[0]}); {fix}") from None
        if "run_id" not in table.columns:
            raise ResultsTableError(f"{str(self.path)!r} is not a results table of this suite (no run_id "
                                    f"column); {fix}, or pass another --out")
        return table

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
            with atomic_open(self.path, "w", newline="") as f:
                table.to_csv(f, index=False)
        return new
