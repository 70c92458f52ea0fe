"""Measure a model: every applicable déjà vu test and the utility numbers, as one tidy table.

This is the library's front door. It needs only Encoders and Records, so it measures a model
trained here, an off-the-shelf open_clip checkpoint, or any torch module alike. Its settings
(`MeasureConfig`, dejavu.measure_config) hold each test's own Config by test name.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from dejavu.measure_config import MeasureConfig
from dejavu.measurements import MeasureContext, Models, get_tests
from dejavu.records import RecordSet
from dejavu.results import Row, to_frame

__all__ = ["MeasureConfig", "Models", "measure"]

log = logging.getLogger(__name__)


def measure(models: Models, records: RecordSet, cfg: MeasureConfig | None = None, *,
            cache_dir: Path | None = None, progress: bool = True, report_dir: Path | None = None) -> pd.DataFrame:
    """Returns the rows (test, subset, metric, value, ci_low, ci_high, n) of every applicable test.

    The tests are the registered ones named in `cfg.tests` (dejavu.measurements), run in the
    registry's order; a test whose needs the models do not meet (a reference, a text tower) is
    skipped and logged. With `report_dir`, the image two-model test also writes its per-record
    outcomes (`image_records.csv`, one row per attacked record, ids kept) and the most memorized
    records as an image grid (`memorized.png`) there.
    """
    cfg = cfg if cfg is not None else MeasureConfig()  # the defaults of every test
    ctx = MeasureContext(models, records, cfg, cache_dir=cache_dir, progress=progress, report_dir=report_dir)
    rows: list[Row] = []
    for test in get_tests(cfg.tests):
        missing = test.missing(models)
        if missing:
            log.info("%s, so %s is skipped", missing, test.name)
            continue
        rows += test.run(ctx)
    return to_frame(rows)
