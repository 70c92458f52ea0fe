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
    """One measured number with its 95% interval (NaN when none applies) and sample size.

    Example:
        >>> from dejavu.results import Row
        >>> Row("image-two-model", "canary", "dv_gap@100", 0.25, n=40)
        Row(test='image-two-model', subset='canary', metric='dv_gap@100', value=0.25, ci_low=nan, ci_high=nan, n=40)
    """

    test: str
    subset: str
    metric: str
    value: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    n: int = 0


def to_frame(rows: list[Row]) -> pd.DataFrame:
    """Returns the rows as a DataFrame with the standard column order.

    Example:
        >>> from dejavu.results import Row, to_frame
        >>> frame = to_frame([Row("image-two-model", "all", "dv_gap@100", 0.25, 0.1, 0.4, 200),
        ...                   Row("image-two-model", "all", "memorized", 0.3, n=200)])
        >>> print(frame.to_string(index=False))
                   test subset     metric  value  ci_low  ci_high   n
        image-two-model    all dv_gap@100   0.25     0.1      0.4 200
        image-two-model    all  memorized   0.30     NaN      NaN 200
    """
    return pd.DataFrame([asdict(r) for r in rows], columns=COLUMNS)
