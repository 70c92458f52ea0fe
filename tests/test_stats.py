"""Bootstrap intervals, the canary subset test and AUROC (SPEC section 6)."""

import numpy as np
import pytest

from dejavu.metrics.image import AttackedSplit, dejavu_gap, direction_gap, symmetric_quadrants, top_p_accuracy
from dejavu.metrics.stats import (
    Interval,
    auroc,
    batched_top_p_curve,
    bootstrap_aucg,
    bootstrap_auroc,
    bootstrap_dejavu_gap,
    bootstrap_difference,
    bootstrap_indices,
    bootstrap_mean,
    bootstrap_ppg,
    bootstrap_prg,
    bootstrap_quadrants,
    bootstrap_top_p_accuracy,
    direction_gap_stat,
    mean_gap_stat,
    pairwise_gap_stat,
    percentile_interval,
    subset_gap_pvalue,
)
from dejavu.metrics.vlm import aucg, ppg


def random_split(rng, n, prefix, p_target=0.7, p_reference=0.4):
    return AttackedSplit(ids=[f"{prefix}{i:04d}" for i in range(n)],
                         correct_target=rng.random(n) < p_target, confidence_target=-rng.integers(0, 4, n) * 0.5,
                         correct_reference=rng.random(n) < p_reference,
                         confidence_reference=-rng.integers(0, 4, n) * 0.5)


def test_bootstrap_indices_are_seeded_and_in_range():
    idx = bootstrap_indices(7, n_resamples=50, seed=3)
    assert idx.shape == (50, 7) and idx.min() >= 0 and idx.max() <= 6
    assert (idx == bootstrap_indices(7, n_resamples=50, seed=3)).all()
    assert (idx != bootstrap_indices(7, n_resamples=50, seed=4)).any()
    with pytest.raises(ValueError, match="at least one record"):
        bootstrap_indices(0)


def test_percentile_interval_hand_worked_and_ignores_nan():
    interval = percentile_interval(0.5, [0.0, 1.0, np.nan], n=3)
    assert interval == Interval(0.5, 0.025, 0.975, 3)
    assert np.isnan(percentile_interval(0.5, [np.nan], n=1).low)


def test_batched_top_p_equals_top_p_on_each_materialized_resample():
    rng = np.random.default_rng(0)
    n = 30
    ids = [f"r{i:03d}" for i in range(n)]
    correct = rng.random(n) < 0.5
    conf = -rng.integers(0, 3, n).astype(float)   # many ties, so the id order matters
    idx = bootstrap_indices(n, n_resamples=20, seed=1)
    ps = [0.05, 0.2, 0.5, 1.0]
    batched = batched_top_p_curve(correct, conf, ids, ps, idx)
    for b, row in enumerate(idx):
        # A repeated record becomes copies whose suffixed ids sort right after the original id.
        copy_ids = [f"{ids[i]}/{sum(row[:j] == i):02d}" for j, i in enumerate(row)]
        expected = [top_p_accuracy(correct[row], conf[row], copy_ids, p) for p in ps]
        assert batched[b].tolist() == pytest.approx(expected, abs=1e-15)


def test_bootstrap_top_p_interval_contains_estimate_and_is_reproducible():
    rng = np.random.default_rng(5)
    split = random_split(rng, 300, "a")
    args = (split.correct_target, split.confidence_target, split.ids, 0.2)
    first = bootstrap_top_p_accuracy(*args, bootstrap_indices(300, seed=9))
    assert first.value == top_p_accuracy(*args)
    assert first.low <= first.value <= first.high and first.low < first.high and first.n == 300
    assert first == bootstrap_top_p_accuracy(*args, bootstrap_indices(300, seed=9))


def test_bootstrap_gap_and_quadrants_point_values_and_intervals():
    rng = np.random.default_rng(6)
    split_a, split_b = random_split(rng, 200, "a"), random_split(rng, 150, "b")
    idx_a, idx_b = bootstrap_indices(200, seed=0), bootstrap_indices(150, seed=1)
    gaps = bootstrap_dejavu_gap(split_a, split_b, [0.05, 0.2, 1.0], idx_a, idx_b)
    for p, intervals in gaps.items():
        point = dejavu_gap(split_a, split_b, p)
        assert (intervals["target"].value, intervals["reference"].value, intervals["gap"].value) == (
            point.target, point.reference, point.gap)
        assert intervals["gap"].low <= point.gap <= intervals["gap"].high and intervals["gap"].n == 350
    assert gaps[1.0]["gap"].low > 0   # target right 70%, reference 40%: a clear positive gap
    quads = bootstrap_quadrants(split_a, split_b, idx_a, idx_b)
    assert {k: v.value for k, v in quads.items()} == symmetric_quadrants(split_a, split_b)
    assert all(v.low <= v.value <= v.high for v in quads.values())


def test_self_comparison_has_a_zero_width_gap_interval():
    rng = np.random.default_rng(7)
    base = random_split(rng, 100, "a")
    same = AttackedSplit(base.ids, base.correct_target, base.confidence_target,
                         base.correct_target, base.confidence_target)
    idx = bootstrap_indices(100, seed=2)
    gap = bootstrap_dejavu_gap(same, same, [0.2], idx, idx)[0.2]["gap"]
    assert (gap.value, gap.low, gap.high) == (0.0, 0.0, 0.0)
    memorized = bootstrap_quadrants(same, same, idx, idx)["memorized"]
    assert (memorized.value, memorized.low, memorized.high) == (0.0, 0.0, 0.0)


def test_vlm_bootstraps_match_points_and_are_antisymmetric():
    rng = np.random.default_rng(8)
    a, b = rng.integers(0, 4, 120) / 3, rng.integers(0, 4, 120) / 3
    idx = bootstrap_indices(120, seed=0)
    forward, backward = bootstrap_ppg(a, b, idx), bootstrap_ppg(b, a, idx)
    assert forward.value == ppg(a, b) and forward.low <= forward.value <= forward.high
    assert (backward.low, backward.high) == pytest.approx((-forward.high, -forward.low), abs=1e-12)
    assert bootstrap_prg(a, b, idx) == forward   # same arrays, same statistic
    auc = bootstrap_aucg(a, b, idx)
    assert auc.value == aucg(a, b) and auc.low <= auc.value <= auc.high


def test_pairwise_gap_stat_on_hand_index_matrix():
    stat = pairwise_gap_stat([1.0, 0.0, 0.5], [0.0, 1.0, 0.5])
    assert stat(np.array([[0, 0, 0], [0, 1, 2], [1, 1, 2]])).tolist() == [1.0, 0.0, -2 / 3]


def test_subset_test_p_value_is_the_fraction_of_subsets_at_least_as_large():
    values = np.array([1.0, 0.0, 0.0, 0.0])
    mean_stat = lambda idx: values[idx].mean(axis=1)  # noqa: E731
    # One canary with the top value: a random single record ties it with probability 1/4.
    top = subset_gap_pvalue(mean_stat, [True, False, False, False], n_draws=4000, seed=0)
    assert top.canary_gap == 1.0 and top.n_canary == 1 and abs(top.p_value - 0.25) < 0.03
    # A canary with the lowest value: every subset is at least as large.
    assert subset_gap_pvalue(mean_stat, [False, True, False, False], n_draws=50, seed=0).p_value == 1.0
    assert top == subset_gap_pvalue(mean_stat, [True, False, False, False], n_draws=4000, seed=0)


def test_subset_test_draws_distinct_records_of_the_canary_count():
    seen = []

    def stat(idx):
        seen.append(idx)
        return np.zeros(idx.shape[0])

    subset_gap_pvalue(stat, np.arange(10) < 3, n_draws=100, seed=1)
    draws = seen[1]
    assert draws.shape == (100, 3)
    assert all(len(set(row)) == 3 for row in draws.tolist())
    with pytest.raises(ValueError, match="at least one canary"):
        subset_gap_pvalue(stat, np.zeros(10, bool))


def test_direction_gap_stat_on_the_whole_split_equals_direction_gap():
    rng = np.random.default_rng(9)
    split = random_split(rng, 40, "a")
    stat = direction_gap_stat(split, 0.2)
    assert stat(np.arange(40)[None])[0] == pytest.approx(direction_gap(split, 0.2), abs=1e-15)


def test_auroc_hand_worked_with_non_finite_scores_ranked_lowest():
    # -inf ranks lowest: positives (3, lowest) vs negatives (2, 1): 2 of 4 pairs ordered right.
    assert auroc([3.0, 2.0, -np.inf, 1.0], [True, False, True, False]) == 0.5
    assert auroc([3.0, np.nan, 2.0, -np.inf], [True, False, True, False]) == 1.0
    assert np.isnan(auroc([1.0, 2.0], [True, True]))


def test_bootstrap_mean_hand_worked_and_with_a_given_point():
    values = [0.0, 1.0, 1.0, 0.0]
    idx = np.array([[0, 0, 0, 0], [1, 2, 1, 2], [0, 1, 2, 3]])  # resample means 0, 1, 0.5
    interval = bootstrap_mean(values, idx)
    assert (interval.value, interval.n) == (0.5, 4)
    assert (interval.low, interval.high) == pytest.approx((np.percentile([0, 1, 0.5], 2.5),
                                                           np.percentile([0, 1, 0.5], 97.5)))
    assert bootstrap_mean(values, idx, value=0.49999997).value == 0.49999997  # e.g. torchmetrics' float32


def test_bootstrap_auroc_resamples_match_roc_auc_score_with_ties_and_non_finite_scores():
    rng = np.random.default_rng(4)
    scores = rng.integers(-2, 3, 60).astype(float)  # many ties, as an integer hit gap has
    scores[[3, 17]] = -np.inf
    positive = rng.random(60) < 0.4
    interval = bootstrap_auroc(scores, positive, n_resamples=50, seed=7)
    assert interval.value == auroc(scores, positive) and interval.n == 60
    # The vectorized mid-rank statistic equals auroc on every resample that holds both classes.
    idx = bootstrap_indices(60, 50, 7)
    expected = [auroc(scores[i], positive[i]) for i in idx]
    assert interval.low == pytest.approx(np.percentile(expected, 2.5), abs=1e-12)
    assert interval.high == pytest.approx(np.percentile(expected, 97.5), abs=1e-12)


def test_bootstrap_auroc_of_separated_scores_is_one_without_spread():
    interval = bootstrap_auroc([5.0, 4.0, 1.0, 0.0], [True, True, False, False], n_resamples=100)
    assert (interval.value, interval.high) == (1.0, 1.0)
    assert interval.low == 1.0  # resamples lacking a class are skipped, every other one is separated


def test_subset_pvalue_is_nan_when_the_canary_gap_is_undefined():
    from dejavu.metrics.stats import subset_gap_pvalue

    def stat(idx):
        return np.full(idx.shape[0], np.nan)

    out = subset_gap_pvalue(stat, np.array([True, False, False]), n_draws=5, seed=0)
    assert np.isnan(out.canary_gap) and np.isnan(out.p_value)


def test_mean_gap_stat_on_hand_index_matrix():
    stat = mean_gap_stat([1.0, 0.5, 0.0], [0.0, 0.5, 1.0])  # differences 1, 0, -1
    assert stat(np.array([[0, 0, 1], [2, 2, 2], [0, 1, 2]])).tolist() == [2 / 3, -1.0, 0.0]


def test_corrected_gap_is_gap_minus_null_resampled_independently():
    gap = mean_gap_stat([1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0])  # gap 3/4 on 4 records
    null = mean_gap_stat([0.0, 1.0, 0.0], [0.0, 0.0, 0.0])  # null 1/3 on 3 other records
    corrected = bootstrap_difference(gap, 4, null, 3, n_resamples=300, seed=5)
    assert corrected.value == pytest.approx(3 / 4 - 1 / 3, abs=1e-15) and corrected.n == 7
    # its samples: the gap on the gap's own draws (seed) minus the null on draws of seed + 1
    samples = gap(bootstrap_indices(4, 300, 5)) - null(bootstrap_indices(3, 300, 6))
    expected = percentile_interval(corrected.value, samples, 7)
    assert (corrected.low, corrected.high) == (expected.low, expected.high)
    assert corrected.low < corrected.value < corrected.high


def test_against_a_zero_null_the_corrected_interval_is_the_gap_interval():
    a, b = np.array([0.2, 0.9, 0.4, 0.8, 0.1]), np.array([0.3, 0.1, 0.4, 0.2, 0.6])
    zero = mean_gap_stat(np.zeros(6), np.zeros(6))
    own = bootstrap_aucg(a, b, bootstrap_indices(5, 200, 0))
    corrected = bootstrap_difference(mean_gap_stat(a, b), 5, zero, 6, n_resamples=200, seed=0)
    assert corrected.value == pytest.approx(own.value, abs=1e-15)  # AUCG's point is the exact area
    assert (corrected.low, corrected.high) == (own.low, own.high)
