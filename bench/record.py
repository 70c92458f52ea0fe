"""Recording a finished run, the one way both `bench run` and `bench measure` do it.

Its rows go into the results table (bench.store), then its report page is written beside them
(bench.report_page) with the settings that made it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from bench.report_page import write_after_run
from bench.store import ResultsStore


def record_run(out: Path, meta: dict, rows: pd.DataFrame, settings: Callable[[], dict]) -> pd.DataFrame:
    """Returns the run's rows with its metadata columns, after storing them and writing its report page.

    `meta` holds bench.store.META_COLUMNS and `wall_s`; `settings()` returns what the page shows as
    the run's configuration (bench.report_page.run_settings, or a `command` that repeats it).
    """
    ResultsStore(Path(out) / "runs.csv").append(meta, rows)
    write_after_run(Path(out), meta["run_id"], settings)
    return rows.assign(**meta)
