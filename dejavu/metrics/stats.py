"""Uncertainty for the memorization metrics (SPEC section 6): bootstrap intervals, canary tests, AUROC.

The bootstrap is vectorized over resamples: a statistic is evaluated on a [B, m] matrix of
record positions at once, never in a Python loop over resamples. The same batched statistics
score the random subsets of the canary permutation test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from dejavu.metrics.image import (
    QUADRANTS,
    AttackedSplit,
    confidence_order,
    dejavu_gap,
    keep_count,
    quadrant_masks,
    symmetric_quadrants,
    top_p_accuracy,
)
from dejavu.metrics.vlm import aucg, pairwise_gap
from dejavu.results import Row

DEFAULT_RESAMPLES = 200
BatchedStat = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% percentile-bootstrap interval and the number of records.

    Example:
        >>> from dejavu.metrics import Interval
        >>> Interval(0.5, 0.25, 0.75, n=10).row("image-two-model", "all", "dv_gap@100")
        Row(test='image-two-model', subset='all', metric='dv_gap@100', value=0.5, ci_low=0.25, ci_high=0.75, n=10)
    """

    value: float
    low: float
    high: float
    n: int

    def row(self, test: str, subset: str, metric: str) -> Row:
        """Returns this interval as a result Row."""
        return Row(test, subset, metric, self.value, self.low, self.high, self.n)


def bootstrap_indices(n: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Returns int [n_resamples, n]: record positions drawn with replacement from a seeded generator.

    Row r is the r-th bootstrap resample of records 0..n-1; every `bootstrap_*` function takes such
    a matrix (`idx`), so resamples are drawn once and shared between metrics.

    Example:
        >>> from dejavu.metrics import bootstrap_indices
        >>> idx = bootstrap_indices(5, n_resamples=3, seed=0)
        >>> idx.shape, bool(((0 <= idx) & (idx < 5)).all())
        ((3, 5), True)
        >>> bool((bootstrap_indices(5, n_resamples=3, seed=0) == idx).all())  # the same seed, the same draws
        True
    """
    if n < 1 or n_resamples < 1:
        raise ValueError(f"need at least one record and one resample; got n={n}, n_resamples={n_resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def percentile_interval(value: float, samples, n: int) -> Interval:
    """Returns the interval spanned by the 2.5th and 97.5th percentiles of the finite samples.

    Example:
        The percentiles of 0, 1, ..., 40 are 1 and 39; NaN samples are left out, and without
        any finite sample the interval is NaN:

        >>> import numpy as np
        >>> from dejavu.metrics.stats import percentile_interval
        >>> percentile_interval(20.0, [*range(41), np.nan], n=41)
        Interval(value=20.0, low=1.0, high=39.0, n=41)
        >>> percentile_interval(0.5, [np.nan], n=3)
        Interval(value=0.5, low=nan, high=nan, n=3)
    """
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return Interval(float(value), np.nan, np.nan, n)
    low, high = np.percentile(s, [2.5, 97.5])
    return Interval(float(value), float(low), float(high), n)


def batched_top_p_curve(correct, confidence, ids, ps: Sequence[float], idx) -> np.ndarray:
    """Returns float [B, len(ps)]: top-p accuracy on each row of idx, a [B, m] matrix of positions.

    The global confidence order is computed once; each row's records are ranked by sorting their
    global ranks, so a repeated record stays a block and ties keep the id order.

    Example:
        Records a..d, most confident first, right, wrong, right, wrong; three resamples: all four
        records, a and d twice each, b and c twice each. At p = 1/2 the first resample keeps
        a and b, the second a twice, the third b twice:

        >>> from dejavu.metrics import batched_top_p_curve
        >>> batched_top_p_curve([True, False, True, False], [4, 3, 2, 1], ["a", "b", "c", "d"], [0.5, 1.0],
        ...                     idx=[[0, 1, 2, 3], [0, 0, 3, 3], [1, 1, 2, 2]])
        array([[0.5, 0.5],
               [1. , 0.5],
               [0. , 0.5]])
    """
    correct = np.asarray(correct, dtype=bool)
    order = confidence_order(confidence, ids)
    idx = np.asarray(idx)
    if idx.ndim != 2:
        raise ValueError(f"idx must be a [B, m] matrix of positions, got shape {idx.shape}")
    rank = np.empty(order.size, dtype=np.int32 if order.size < 2**31 else np.int64)
    rank[order] = np.arange(order.size)
    ranked = np.sort(rank[idx], axis=1)
    hits = np.cumsum(correct[order][ranked], axis=1)
    m = idx.shape[1]
    keep = np.array([keep_count(p, m) for p in ps], dtype=np.int64)
    out = np.full((idx.shape[0], keep.size), np.nan)
    some = keep > 0
    out[:, some] = hits[:, keep[some] - 1] / keep[some]
    return out


def bootstrap_top_p_accuracy(correct, confidence, ids, p: float, idx) -> Interval:
    """Returns Acc(S, p) with its bootstrap interval over the resamples in idx.

    Example:
        The records and resamples of `batched_top_p_curve`: the top-50% accuracy is 0.5, 1 and 0
        on the three resamples; the interval spans their 2.5th to 97.5th percentiles:

        >>> from dejavu.metrics import bootstrap_top_p_accuracy
        >>> bootstrap_top_p_accuracy([True, False, True, False], [4, 3, 2, 1], ["a", "b", "c", "d"], 0.5,
        ...                          idx=[[0, 1, 2, 3], [0, 0, 3, 3], [1, 1, 2, 2]])
        Interval(value=0.5, low=0.025, high=0.975, n=4)
    """
    samples = batched_top_p_curve(correct, confidence, ids, [p], idx)[:, 0]
    return percentile_interval(top_p_accuracy(correct, confidence, ids, p), samples, np.asarray(correct).size)


def bootstrap_dejavu_gap(split_a: AttackedSplit, split_b: AttackedSplit, ps: Sequence[float],
                         idx_a, idx_b) -> dict[float, dict[str, Interval]]:
    """Returns, per p, intervals for target(p), reference(p) and the gap, resampling A and B independently.

    Example:
        The splits of `dejavu.metrics.dejavu_gap`. With the records themselves as the only
        resample, each interval shrinks to its point; real calls pass `bootstrap_indices`:

        >>> import numpy as np
        >>> from dejavu.metrics import AttackedSplit, bootstrap_dejavu_gap
        >>> a = AttackedSplit(["a1", "a2", "a3", "a4"], [1, 1, 0, 0], [.9, .8, .2, .1],
        ...                   [1, 0, 0, 0], [.1, .9, .8, .2])
        >>> b = AttackedSplit(["b1", "b2"], [1, 0], [.9, .1], [0, 1], [.5, .6])
        >>> gaps = bootstrap_dejavu_gap(a, b, [0.5, 1.0], idx_a=np.arange(4)[None], idx_b=np.arange(2)[None])
        >>> sorted(gaps[1.0])
        ['gap', 'reference', 'target']
        >>> gaps[0.5]["gap"], gaps[1.0]["gap"]
        (Interval(value=0.5, low=0.5, high=0.5, n=6), Interval(value=0.125, low=0.125, high=0.125, n=6))
    """
    if np.shape(idx_a)[0] != np.shape(idx_b)[0]:
        raise ValueError("idx_a and idx_b must hold the same number of resamples")
    t_a = batched_top_p_curve(split_a.correct_target, split_a.confidence_target, split_a.ids, ps, idx_a)
    r_a = batched_top_p_curve(split_a.correct_reference, split_a.confidence_reference, split_a.ids, ps, idx_a)
    t_b = batched_top_p_curve(split_b.correct_target, split_b.confidence_target, split_b.ids, ps, idx_b)
    r_b = batched_top_p_curve(split_b.correct_reference, split_b.confidence_reference, split_b.ids, ps, idx_b)
    target = 0.5 * (t_a + t_b)
    reference = 0.5 * (r_a + r_b)
    n = len(split_a) + len(split_b)
    out = {}
    for j, p in enumerate(ps):
        point = dejavu_gap(split_a, split_b, p)
        out[p] = {"target": percentile_interval(point.target, target[:, j], n),
                  "reference": percentile_interval(point.reference, reference[:, j], n),
                  "gap": percentile_interval(point.gap, target[:, j] - reference[:, j], n)}
    return out


def bootstrap_quadrants(split_a: AttackedSplit, split_b: AttackedSplit, idx_a, idx_b) -> dict[str, Interval]:
    """Returns each symmetrized quadrant fraction with its interval, resampling A and B independently.

    Example:
        The splits of `dejavu.metrics.symmetric_quadrants`, and two resamples: the records
        themselves, and only A's second and B's first record (both memorized), drawn repeatedly:

        >>> from dejavu.metrics import AttackedSplit, bootstrap_quadrants
        >>> a = AttackedSplit(["a1", "a2", "a3", "a4"], [1, 1, 0, 0], [.9, .8, .2, .1],
        ...                   [1, 0, 0, 0], [.1, .9, .8, .2])
        >>> b = AttackedSplit(["b1", "b2"], [1, 0], [.9, .1], [0, 1], [.5, .6])
        >>> q = bootstrap_quadrants(a, b, idx_a=[[0, 1, 2, 3], [1, 1, 1, 1]], idx_b=[[0, 1], [0, 0]])
        >>> {name: interval.value for name, interval in q.items()}
        {'memorized': 0.375, 'correlated': 0.125, 'misrepresented': 0.25, 'unassociated': 0.25}
        >>> round(q["memorized"].low, 3), round(q["memorized"].high, 3)  # percentiles of 0.375 and 1
        (0.391, 0.984)
    """
    point = symmetric_quadrants(split_a, split_b)
    n = len(split_a) + len(split_b)
    out = {}
    masks_a = quadrant_masks(split_a.correct_target, split_a.correct_reference)
    masks_b = quadrant_masks(split_b.correct_target, split_b.correct_reference)
    idx_a, idx_b = np.asarray(idx_a), np.asarray(idx_b)
    for name in QUADRANTS:
        samples = 0.5 * (masks_a[name][idx_a].mean(axis=1) + masks_b[name][idx_b].mean(axis=1))
        out[name] = percentile_interval(point[name], samples, n)
    return out


def bootstrap_ppg(prec_a, prec_b, idx) -> Interval:
    """Returns PPG with its bootstrap interval over the resampled records.

    Example:
        PPG is 0.5, 1 and 0 on the three resamples; the interval spans their 2.5th to 97.5th
        percentiles:

        >>> from dejavu.metrics import bootstrap_ppg
        >>> bootstrap_ppg([1.0, 0.5, 0.5, 0.0], [0.5, 0.5, 0.0, 0.0],
        ...               idx=[[0, 1, 2, 3], [0, 0, 2, 2], [1, 1, 3, 3]])
        Interval(value=0.5, low=0.025, high=0.975, n=4)
    """
    return _bootstrap_pairwise(prec_a, prec_b, idx)


def bootstrap_prg(rec_a, rec_b, idx) -> Interval:
    """Returns PRG with its bootstrap interval over the resampled records.

    Example:
        PRG is 0.25 on the records, and 0, 1 and -1 on the three resamples:

        >>> from dejavu.metrics import bootstrap_prg
        >>> bootstrap_prg([1.0, 0.5, 0.0, 0.5], [0.0, 1.0, 0.0, 0.0],
        ...               idx=[[0, 1, 2, 2], [0, 0, 3, 3], [1, 1, 1, 1]])
        Interval(value=0.25, low=-0.95, high=0.95, n=4)
    """
    return _bootstrap_pairwise(rec_a, rec_b, idx)


def bootstrap_mean(values, idx, value: float | None = None) -> Interval:
    """Returns the mean of `values` with its bootstrap interval over the resamples in idx.

    `value` replaces the point estimate when the caller has the same mean from elsewhere (e.g. a
    torchmetrics accuracy), so that the row keeps that number.

    Example:
        The mean is 0.5, 1 and 0 on the three resamples; the interval spans their 2.5th to
        97.5th percentiles:

        >>> from dejavu.metrics import bootstrap_mean
        >>> idx = [[0, 1, 2, 3], [1, 2, 1, 2], [0, 3, 0, 3]]
        >>> bootstrap_mean([0.0, 1.0, 1.0, 0.0], idx)
        Interval(value=0.5, low=0.025, high=0.975, n=4)
        >>> bootstrap_mean([0.0, 1.0, 1.0, 0.0], idx, value=0.49999997).value  # a float32 mean, say
        0.49999997
    """
    v = np.asarray(values, dtype=np.float64)
    point = float(v.mean()) if value is None else float(value)
    return percentile_interval(point, v[np.asarray(idx)].mean(axis=1), v.size)


def bootstrap_aucg(rec_a, rec_b, idx) -> Interval:
    """Returns AUCG with its bootstrap interval; a resample's AUC is its mean recall (exact identity).

    Example:
        The recall gaps are 1 and 0, so AUCG is 0.5, 1 and 0 on the three resamples; the
        interval spans their 2.5th to 97.5th percentiles:

        >>> from dejavu.metrics import bootstrap_aucg
        >>> bootstrap_aucg([1.0, 0.5], [0.0, 0.5], idx=[[0, 1], [0, 0], [1, 1]])
        Interval(value=0.5, low=0.025, high=0.975, n=2)
    """
    return percentile_interval(aucg(rec_a, rec_b), mean_gap_stat(rec_a, rec_b)(np.asarray(idx)), np.asarray(rec_a).size)


def direction_gap_stat(split: AttackedSplit, p: float) -> BatchedStat:
    """Returns a batched statistic: Acc_target - Acc_reference at p on each row of a [D, m] index matrix.

    Example:
        On split A of `dejavu.metrics.dejavu_gap`, the gap at p = 1 is 1/2 - 1/4 on the records
        themselves and 1 - 0 on record a2 alone, drawn four times:

        >>> import numpy as np
        >>> from dejavu.metrics import AttackedSplit, direction_gap_stat
        >>> a = AttackedSplit(["a1", "a2", "a3", "a4"], [1, 1, 0, 0], [.9, .8, .2, .1],
        ...                   [1, 0, 0, 0], [.1, .9, .8, .2])
        >>> direction_gap_stat(a, 1.0)(np.array([[0, 1, 2, 3], [1, 1, 1, 1]]))
        array([0.25, 1.  ])
    """

    def stat(idx: np.ndarray) -> np.ndarray:
        t = batched_top_p_curve(split.correct_target, split.confidence_target, split.ids, [p], idx)
        r = batched_top_p_curve(split.correct_reference, split.confidence_reference, split.ids, [p], idx)
        return (t - r)[:, 0]

    return stat


def pairwise_gap_stat(a, b) -> BatchedStat:
    """Returns a batched statistic: frac(a > b) - frac(a < b) on each row of an index matrix (PPG, PRG).

    Example:
        >>> import numpy as np
        >>> from dejavu.metrics import pairwise_gap_stat
        >>> stat = pairwise_gap_stat([1.0, 0.5, 0.0], [0.5, 0.5, 0.5])  # A wins, ties, loses
        >>> stat(np.array([[0, 1, 2], [0, 0, 1]])).round(3)
        array([0.   , 0.667])
    """
    signs = np.sign(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    return lambda idx: signs[idx].mean(axis=1)


def mean_gap_stat(a, b) -> BatchedStat:
    """Returns a batched statistic: mean(a - b) on each row of an index matrix (AUCG is the gap in mean recall).

    Example:
        >>> import numpy as np
        >>> from dejavu.metrics import mean_gap_stat
        >>> mean_gap_stat([1.0, 0.5], [0.0, 0.5])(np.array([[0, 1], [0, 0]]))
        array([0.5, 1. ])
    """
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return lambda idx: diff[idx].mean(axis=1)


def bootstrap_difference(stat: BatchedStat, n: int, null_stat: BatchedStat, n_null: int,
                         n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Interval:
    """Returns stat(all n records) - null_stat(all n_null records): a gap corrected by its null.

    The gap's records (attacked A) and the null's (eval) are disjoint, so each is resampled on its
    own: the gap with `seed`, i.e. the very draws behind the gap's own interval, the null with
    `seed + 1`. The row's n counts the records of both.

    Example:
        A mean gap of 1/2 on four attacked records, of 1/4 on four null records:

        >>> from dejavu.metrics import bootstrap_difference, mean_gap_stat
        >>> gap = mean_gap_stat([1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0])
        >>> null = mean_gap_stat([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0])
        >>> corrected = bootstrap_difference(gap, 4, null, 4, n_resamples=200, seed=0)
        >>> corrected.value, corrected.n
        (0.25, 8)
        >>> corrected.low < corrected.value < corrected.high
        True
    """
    point = float(stat(np.arange(n)[None])[0] - null_stat(np.arange(n_null)[None])[0])
    samples = stat(bootstrap_indices(n, n_resamples, seed)) - null_stat(bootstrap_indices(n_null, n_resamples, seed + 1))
    return percentile_interval(point, samples, n + n_null)


@dataclass(frozen=True)
class SubsetTest:
    """The canary gap, and the fraction of random same-size subsets whose gap is at least as large.

    See `subset_gap_pvalue` for an example.
    """

    canary_gap: float
    p_value: float
    n_draws: int
    n_canary: int


def subset_gap_pvalue(stat: BatchedStat, canary_mask, n_draws: int = 1000, seed: int = 0) -> SubsetTest:
    """Returns the canary gap and its p-value against n_draws random subsets of the same size.

    Subsets are drawn without replacement from all records of the split (canaries included).
    The p-value is the plain fraction #{subset gap >= canary gap} / n_draws, as SPEC section 6
    states; a subset whose gap is NaN counts as not larger, and a NaN canary gap gives a NaN p-value.

    Example:
        Six records, of which the two canaries alone have a gap (of 1). Only one of the
        C(6, 2) = 15 pairs of records reaches it, so the p-value is close to 1/15:

        >>> from dejavu.metrics import mean_gap_stat, subset_gap_pvalue
        >>> stat = mean_gap_stat([1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0])
        >>> test = subset_gap_pvalue(stat, canary_mask=[1, 1, 0, 0, 0, 0], n_draws=1000, seed=0)
        >>> test.canary_gap, test.n_canary, test.n_draws
        (1.0, 2, 1000)
        >>> abs(test.p_value - 1 / 15) < 0.02
        True
    """
    mask = np.asarray(canary_mask, dtype=bool)
    m = int(mask.sum())
    if m == 0 or n_draws < 1:
        raise ValueError(f"need at least one canary and one draw; got {m} canaries, {n_draws} draws")
    canary_gap = float(stat(np.flatnonzero(mask)[None])[0])
    if np.isnan(canary_gap):  # e.g. a top-p level that keeps no canary: there is nothing to test
        return SubsetTest(canary_gap, float("nan"), n_draws, m)
    keys = np.random.default_rng(seed).random((n_draws, mask.size))
    subsets = np.argpartition(keys, m - 1, axis=1)[:, :m] if m < mask.size else np.argsort(keys, axis=1)
    null = np.asarray(stat(subsets), dtype=np.float64)
    return SubsetTest(canary_gap, float(np.mean(null >= canary_gap)), n_draws, m)


def auroc(scores, is_positive) -> float:
    """Returns the AUROC of scores for positives (canaries) against the rest; NaN without both classes.

    Non-finite scores (e.g. the -inf of non-memorized records, or NaN) rank below every finite
    score and tie with each other.

    Example:
        Of the four (positive, negative) pairs, the positive scores higher in three:

        >>> from dejavu.metrics import auroc
        >>> auroc([0.9, 0.8, 0.3, 0.1], [True, False, True, False])
        0.75
        >>> auroc([0.5, float("-inf"), float("-inf"), 0.2], [True, True, False, False])  # -inf ties: 2.5 / 4
        0.625
        >>> auroc([0.5, 0.2], [True, True])  # no negatives
        nan
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_positive, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must be equal 1-d arrays")
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, _finite_floor(s)))


def _finite_floor(scores: np.ndarray) -> np.ndarray:
    """Returns scores with every non-finite value replaced by one value below all finite ones."""
    finite = np.isfinite(scores)
    floor = scores[finite].min() - 1.0 if finite.any() else 0.0
    return np.where(finite, scores, floor)


def bootstrap_auroc(scores, is_positive, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Interval:
    """Returns the AUROC of `auroc` with a 95% bootstrap interval over records (n = all records).

    Each resample's AUROC is the Mann-Whitney statistic from mid-ranks, vectorized over resamples;
    a resample without both classes is skipped (NaN).

    Example:
        Scores that rank every positive first give AUROC 1 on every resample with both classes:

        >>> from dejavu.metrics import bootstrap_auroc
        >>> bootstrap_auroc([0.9, 0.8, 0.2, 0.1], [True, True, False, False], n_resamples=50, seed=0)
        Interval(value=1.0, low=1.0, high=1.0, n=4)
    """
    s = _finite_floor(np.asarray(scores, dtype=np.float64))
    y = np.asarray(is_positive, dtype=bool)
    value = auroc(scores, is_positive)
    idx = bootstrap_indices(y.size, n_resamples, seed)
    ranks = rankdata(s[idx], axis=1)  # mid-ranks: ties count one half, as in roc_auc_score
    pos = y[idx]
    n_pos = pos.sum(axis=1).astype(np.float64)
    n_neg = y.size - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = ((ranks * pos).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return percentile_interval(value, samples, y.size)


def _bootstrap_pairwise(a, b, idx) -> Interval:
    samples = pairwise_gap_stat(a, b)(np.asarray(idx))
    return percentile_interval(pairwise_gap(a, b), samples, np.asarray(a).size)
