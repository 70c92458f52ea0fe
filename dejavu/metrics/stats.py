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
    """A point estimate with its 95% percentile-bootstrap interval and the number of records."""

    value: float
    low: float
    high: float
    n: int

    def row(self, test: str, subset: str, metric: str) -> Row:
        """Returns this interval as a result Row."""
        return Row(test, subset, metric, self.value, self.low, self.high, self.n)


def bootstrap_indices(n: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Returns int [n_resamples, n]: record positions drawn with replacement from a seeded generator."""
    if n < 1 or n_resamples < 1:
        raise ValueError(f"need at least one record and one resample; got n={n}, n_resamples={n_resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def percentile_interval(value: float, samples, n: int) -> Interval:
    """Returns the interval spanned by the 2.5th and 97.5th percentiles of the finite samples."""
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
    """Returns Acc(S, p) with its bootstrap interval over the resamples in idx."""
    samples = batched_top_p_curve(correct, confidence, ids, [p], idx)[:, 0]
    return percentile_interval(top_p_accuracy(correct, confidence, ids, p), samples, np.asarray(correct).size)


def bootstrap_dejavu_gap(split_a: AttackedSplit, split_b: AttackedSplit, ps: Sequence[float],
                         idx_a, idx_b) -> dict[float, dict[str, Interval]]:
    """Returns, per p, intervals for target(p), reference(p) and the gap, resampling A and B independently."""
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
    """Returns each symmetrized quadrant fraction with its interval, resampling A and B independently."""
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
    """Returns PPG with its bootstrap interval over the resampled records."""
    return _bootstrap_pairwise(prec_a, prec_b, idx)


def bootstrap_prg(rec_a, rec_b, idx) -> Interval:
    """Returns PRG with its bootstrap interval over the resampled records."""
    return _bootstrap_pairwise(rec_a, rec_b, idx)


def bootstrap_mean(values, idx, value: float | None = None) -> Interval:
    """Returns the mean of `values` with its bootstrap interval over the resamples in idx.

    `value` replaces the point estimate when the caller has the same mean from elsewhere (e.g. a
    torchmetrics accuracy), so that the row keeps that number.
    """
    v = np.asarray(values, dtype=np.float64)
    point = float(v.mean()) if value is None else float(value)
    return percentile_interval(point, v[np.asarray(idx)].mean(axis=1), v.size)


def bootstrap_aucg(rec_a, rec_b, idx) -> Interval:
    """Returns AUCG with its bootstrap interval; a resample's AUC is its mean recall (exact identity)."""
    return percentile_interval(aucg(rec_a, rec_b), mean_gap_stat(rec_a, rec_b)(np.asarray(idx)), np.asarray(rec_a).size)


def direction_gap_stat(split: AttackedSplit, p: float) -> BatchedStat:
    """Returns a batched statistic: Acc_target - Acc_reference at p on each row of a [D, m] index matrix."""

    def stat(idx: np.ndarray) -> np.ndarray:
        t = batched_top_p_curve(split.correct_target, split.confidence_target, split.ids, [p], idx)
        r = batched_top_p_curve(split.correct_reference, split.confidence_reference, split.ids, [p], idx)
        return (t - r)[:, 0]

    return stat


def pairwise_gap_stat(a, b) -> BatchedStat:
    """Returns a batched statistic: frac(a > b) - frac(a < b) on each row of an index matrix (PPG, PRG)."""
    signs = np.sign(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    return lambda idx: signs[idx].mean(axis=1)


def mean_gap_stat(a, b) -> BatchedStat:
    """Returns a batched statistic: mean(a - b) on each row of an index matrix (AUCG is the gap in mean recall)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return lambda idx: diff[idx].mean(axis=1)


def bootstrap_difference(stat: BatchedStat, n: int, null_stat: BatchedStat, n_null: int,
                         n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Interval:
    """Returns stat(all n records) - null_stat(all n_null records): a gap corrected by its null.

    The gap's records (attacked A) and the null's (eval) are disjoint, so each is resampled on its
    own: the gap with `seed`, i.e. the very draws behind the gap's own interval, the null with
    `seed + 1`. The row's n counts the records of both.
    """
    point = float(stat(np.arange(n)[None])[0] - null_stat(np.arange(n_null)[None])[0])
    samples = stat(bootstrap_indices(n, n_resamples, seed)) - null_stat(bootstrap_indices(n_null, n_resamples, seed + 1))
    return percentile_interval(point, samples, n + n_null)


@dataclass(frozen=True)
class SubsetTest:
    """The canary gap, and the fraction of random same-size subsets whose gap is at least as large."""

    canary_gap: float
    p_value: float
    n_draws: int
    n_canary: int


def subset_gap_pvalue(stat: BatchedStat, canary_mask, n_draws: int = 1000, seed: int = 0) -> SubsetTest:
    """Returns the canary gap and its p-value against n_draws random subsets of the same size.

    Subsets are drawn without replacement from all records of the split (canaries included).
    The p-value is the plain fraction #{subset gap >= canary gap} / n_draws, as SPEC section 6
    states; a subset whose gap is NaN counts as not larger, and a NaN canary gap gives a NaN p-value.
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
