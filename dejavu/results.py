"""The tidy result row every test returns: test, subset, metric, value, ci_low, ci_high, n."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd

TESTS = ("image-two-model", "image-one-model-nb", "image-one-model-crop",
         "vlm-two-model", "vlm-one-model-text", "utility")
#: the tests whose reference is a correlation estimator, not a model trained on B: their gaps come
#: with a null on the eval records and a null-corrected gap (`corrected_<metric>`)
ONE_MODEL_TESTS = ("image-one-model-nb", "image-one-model-crop", "vlm-one-model-text")
SUBSETS = ("all", "canary", "non-canary")
COLUMNS = ["test", "subset", "metric", "value", "ci_low", "ci_high", "n"]


@dataclass(frozen=True)
class Row:
    """One measured number with its 95% interval (NaN when none applies) and sample size."""

    test: str
    subset: str
    metric: str
    value: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    n: int = 0


def to_frame(rows: list[Row]) -> pd.DataFrame:
    """Returns the rows as a DataFrame with the standard column order."""
    return pd.DataFrame([asdict(r) for r in rows], columns=COLUMNS)
