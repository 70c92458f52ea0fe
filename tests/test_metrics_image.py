"""Image-test metrics (SPEC section 3) against hand-worked cases and identities."""

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dejavu.metrics.image import (
    AttackedSplit,
    count_entropy,
    dejavu_gap,
    direction_gap,
    keep_count,
    label_vote,
    most_memorized,
    quadrants,
    sample_scores,
    symmetric_quadrants,
    top_p_accuracy,
    top_p_curve,
)


def naive_vote(labels, dists):
    """One record at a time, written the obvious way: the reference for label_vote."""
    count = Counter(labels)
    dist = Counter()
    for lab, d in zip(labels, dists, strict=True):
        dist[lab] += d
    ranked = sorted(count, key=lambda c: (-count[c], dist[c], c))
    share = np.array([count[c] / len(labels) for c in ranked])
    return ranked[0], (ranked + [-1] * 5)[:5], float(-(share * np.log(share)).sum())


# --- label_vote ---------------------------------------------------------------------------------

def test_vote_counts_ties_by_distance_then_class_and_entropy_in_nats():
    labels = np.array([[1, 1, 2, 2, 0],   # 1 and 2 tie on count; 2 is closer in sum (0.5 < 2)
                       [3, 3, 3, 3, 3],   # unanimous: entropy 0
                       [2, 2, 1, 1, 0]])  # 1 and 2 tie on count and summed distance: smaller class
    dists = np.array([[1.0, 1.0, 0.0, 0.5, 0.0],
                      [1.0, 1.0, 1.0, 1.0, 1.0],
                      [1.0, 1.0, 1.0, 1.0, 1.0]])
    vote = label_vote(labels, dists, n_classes=4)
    assert vote.pred.tolist() == [2, 3, 1]
    assert vote.top5.tolist() == [[2, 1, 0, -1, -1], [3, -1, -1, -1, -1], [1, 2, 0, -1, -1]]
    # shares 2/5, 2/5, 1/5: H = -(2 * 0.4 ln 0.4 + 0.2 ln 0.2)
    h = -(2 * 0.4 * np.log(0.4) + 0.2 * np.log(0.2))
    assert vote.entropy == pytest.approx([h, 0.0, h], abs=1e-12)
    assert vote.entropy[1] == 0.0 and vote.confidence[1] == 0.0
    assert vote.confidence == pytest.approx(-vote.entropy)


def test_vote_uniform_over_four_labels_has_entropy_ln4():
    vote = label_vote(np.array([[0, 1, 2, 3]]), np.zeros((1, 4)), n_classes=10)
    assert vote.entropy[0] == pytest.approx(np.log(4), abs=1e-12)
    assert vote.pred[0] == 0 and vote.top5[0].tolist() == [0, 1, 2, 3, -1]


@pytest.mark.parametrize("k", [1, 3, 9, 40, 128, 129])  # 128 and 129 straddle a width of label_vote's packed keys
def test_vote_matches_naive_reference_on_random_neighbours(k):
    rng = np.random.default_rng(k)
    labels = rng.integers(0, 7, size=(200, k))
    dists = rng.integers(0, 4, size=(200, k)).astype(float)  # small integers force many ties
    vote = label_vote(labels, dists, n_classes=7)
    for i in range(200):
        pred, top5, entropy = naive_vote(labels[i].tolist(), dists[i].tolist())
        assert vote.pred[i] == pred and vote.top5[i].tolist() == top5
        assert vote.entropy[i] == pytest.approx(entropy, abs=1e-12)


def test_vote_refuses_more_neighbours_than_its_ranking_key_holds():
    with pytest.raises(ValueError, match="too many to rank"):
        label_vote(np.zeros((1, 2**21 + 1), dtype=np.int64), np.zeros((1, 2**21 + 1)), n_classes=1)


def test_vote_on_no_records_is_empty():
    vote = label_vote(np.zeros((0, 3), dtype=int), np.zeros((0, 3)), n_classes=2)
    assert vote.pred.shape == (0,) and vote.top5.shape == (0, 5) and vote.entropy.dtype == np.float64


def test_vote_accepts_torch_tensors():
    vote = label_vote(torch.tensor([[4, 4, 1]]), torch.tensor([[0.1, 0.2, 0.3]]), n_classes=5)
    assert vote.pred.tolist() == [4]


@pytest.mark.parametrize("labels, msg", [([[0, 5]], r"\[0, 5\)"), ([[-1, 0]], r"\[0, 5\)"),
                                         ([[0.5, 1.0]], "integer")])
def test_vote_rejects_bad_labels_with_a_clear_error(labels, msg):
    with pytest.raises(ValueError, match=msg):
        label_vote(np.array(labels), np.zeros((1, 2)), n_classes=5)


def test_vote_rejects_mismatched_shapes_and_nan_distances():
    with pytest.raises(ValueError, match="must be equal"):
        label_vote(np.zeros((2, 3), int), np.zeros((2, 4)), n_classes=2)
    with pytest.raises(ValueError, match="finite"):
        label_vote(np.zeros((1, 2), int), np.array([[0.0, np.nan]]), n_classes=2)


# --- vote entropy: independent of class order ---------------------------------------------------

def test_equal_label_distributions_get_bit_equal_entropy():
    # The repro: shares {0.6, 0.1, 0.3} and {0.6, 0.3, 0.1}. Summed in class order the two
    # differed in the last bit (0.8979457248567798 vs ...797).
    labels = np.array([[0, 0, 0, 0, 0, 0, 1, 2, 2, 2],
                       [0, 0, 0, 0, 0, 0, 1, 1, 1, 2]])
    vote = label_vote(labels, np.ones((2, 10)), n_classes=3)
    assert vote.entropy[0] == vote.entropy[1]
    assert vote.entropy[0] == pytest.approx(-(0.6 * np.log(0.6) + 0.3 * np.log(0.3) + 0.1 * np.log(0.1)), abs=1e-15)


def test_count_entropy_by_hand_and_rejects_counts_that_are_not_k_votes():
    h = -(2 * 0.4 * np.log(0.4) + 0.2 * np.log(0.2))
    assert count_entropy(np.array([[2, 0, 1, 2], [0, 5, 0, 0]]), 5) == pytest.approx([h, 0.0], abs=1e-15)
    with pytest.raises(ValueError, match="summing to k=5"):
        count_entropy(np.array([[2, 2]]), 5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=2, max_size=12).filter(lambda c: sum(c) > 0), st.randoms())
def test_entropy_is_the_same_bits_under_any_relabelling_of_the_classes(counts, rnd):
    k = sum(counts)
    labels = np.repeat(np.arange(len(counts)), counts)
    relabel = list(range(len(counts)))
    rnd.shuffle(relabel)
    both = np.stack([labels, np.array(relabel)[labels]])
    vote = label_vote(both, np.ones((2, k)), n_classes=len(counts))
    assert vote.entropy[0] == vote.entropy[1]


def test_top_p_breaks_an_entropy_tie_by_id():
    # Same shares in a different class order: the tie must go to the smaller id ("a"), which is wrong.
    vote = label_vote(np.array([[0, 0, 0, 0, 0, 0, 1, 1, 1, 2], [0, 0, 0, 0, 0, 0, 1, 2, 2, 2]]),
                      np.ones((2, 10)), n_classes=3)
    correct = vote.pred == np.array([1, 0])  # "a" has label 1 (wrong), "b" label 0 (right)
    assert top_p_accuracy(correct, vote.confidence, ["a", "b"], 0.5) == 0.0
    assert top_p_accuracy(correct, vote.confidence, ["b", "a"], 0.5) == 1.0  # now "a" is the second record


# --- top-p accuracy -----------------------------------------------------------------------------

IDS = ["a", "b", "c", "d", "e"]
CONF = [0.0, -1.0, 0.0, -2.0, -0.5]   # order: a, c (tie, by id), e, b, d
CORRECT = [True, False, False, True, True]


@pytest.mark.parametrize("p, expected", [(0.2, 1.0), (0.4, 0.5), (0.6, 2 / 3), (0.8, 2 / 4), (1.0, 3 / 5)])
def test_top_p_accuracy_hand_worked(p, expected):
    assert top_p_accuracy(CORRECT, CONF, IDS, p) == pytest.approx(expected, abs=1e-15)


def test_top_p_ties_are_broken_by_id_not_position():
    # Renaming "a" to "x" moves it behind "c" (same confidence), so the top 20% is c (wrong).
    assert top_p_accuracy(CORRECT, CONF, ["x", "b", "c", "d", "e"], 0.2) == 0.0


def test_top_p_keeping_no_record_is_nan_and_bad_p_raises():
    assert np.isnan(top_p_accuracy(CORRECT, CONF, IDS, 0.1))
    with pytest.raises(ValueError, match="p must be"):
        top_p_accuracy(CORRECT, CONF, IDS, 0.0)


def test_keep_count_is_floor_without_float_loss():
    assert keep_count(0.29, 100) == 29 and keep_count(0.05, 99) == 4 and keep_count(1.0, 7) == 7


def test_top_p_curve_matches_single_values_and_rejects_repeated_ids():
    ps = [0.2, 0.4, 0.6, 0.8, 1.0]
    curve = top_p_curve(CORRECT, CONF, IDS, ps)
    assert curve.tolist() == [top_p_accuracy(CORRECT, CONF, IDS, p) for p in ps]
    with pytest.raises(ValueError, match="unique"):
        top_p_accuracy(CORRECT, CONF, ["a", "a", "c", "d", "e"], 1.0)


def test_top_p_rejects_nan_confidence_naming_the_record():
    with pytest.raises(ValueError, match="'b'"):
        top_p_accuracy(CORRECT, [0.0, np.nan, 0.0, 0.0, 0.0], IDS, 1.0)


# --- the symmetrized two-model test ---------------------------------------------------------------

def hand_splits():
    # Split A, target = model A: confident and right on a1, a2; reference B right only on a3.
    split_a = AttackedSplit(ids=["a1", "a2", "a3", "a4"],
                            correct_target=[True, True, False, False], confidence_target=[0, 0, -1, -1],
                            correct_reference=[False, False, True, False], confidence_reference=[-1, -1, 0, -2])
    # Split B, target = model B: right on b1 only; reference A right on b1 and b2.
    split_b = AttackedSplit(ids=["b1", "b2"], correct_target=[True, False], confidence_target=[-1, 0],
                            correct_reference=[True, True], confidence_reference=[0, -1])
    return split_a, split_b


def test_dejavu_gap_hand_worked():
    split_a, split_b = hand_splits()
    # p = 50%: A keeps a1, a2 (target 2/2) and a3, a1 by reference confidence (1/2);
    #          B keeps 1 record: b2 by target confidence (0/1), b1 by reference confidence (1/1).
    gap = dejavu_gap(split_a, split_b, 0.5)
    assert gap.target == pytest.approx(0.5 * (1.0 + 0.0))
    assert gap.reference == pytest.approx(0.5 * (0.5 + 1.0))
    assert gap.gap == pytest.approx(0.5 - 0.75)
    # p = 100%: target ½(2/4 + 1/2) = 0.5; reference ½(1/4 + 2/2) = 0.625.
    full = dejavu_gap(split_a, split_b, 1.0)
    assert (full.target, full.reference) == pytest.approx((0.5, 0.625))
    assert direction_gap(split_a, 1.0) == pytest.approx(0.5 - 0.25)


def test_quadrants_hand_worked_and_symmetrized_with_equal_weights():
    split_a, split_b = hand_splits()
    assert quadrants(split_a.correct_target, split_a.correct_reference) == {
        "memorized": 0.5, "correlated": 0.0, "misrepresented": 0.25, "unassociated": 0.25}
    assert quadrants(split_b.correct_target, split_b.correct_reference) == {
        "memorized": 0.0, "correlated": 0.5, "misrepresented": 0.5, "unassociated": 0.0}
    sym = symmetric_quadrants(split_a, split_b)
    assert sym == {"memorized": 0.25, "correlated": 0.25, "misrepresented": 0.375, "unassociated": 0.125}
    assert dejavu_gap(split_a, split_b, 1.0).gap == pytest.approx(sym["memorized"] - sym["misrepresented"])


def random_split(rng, n, prefix):
    return AttackedSplit(ids=[f"{prefix}{i:04d}" for i in range(n)],
                         correct_target=rng.random(n) < 0.6, confidence_target=-rng.integers(0, 3, n) * 0.5,
                         correct_reference=rng.random(n) < 0.4, confidence_reference=-rng.integers(0, 3, n) * 0.5)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.integers(1, 60))
def test_gap_at_100_percent_is_memorized_minus_misrepresented(seed, n_a, n_b):
    rng = np.random.default_rng(seed)
    split_a, split_b = random_split(rng, n_a, "a"), random_split(rng, n_b, "b")
    sym = symmetric_quadrants(split_a, split_b)
    assert dejavu_gap(split_a, split_b, 1.0).gap == pytest.approx(
        sym["memorized"] - sym["misrepresented"], abs=1e-12)
    assert sum(sym.values()) == pytest.approx(1.0, abs=1e-12)


def test_a_model_compared_with_itself_has_zero_gap_and_nothing_memorized():
    rng = np.random.default_rng(1)
    base = random_split(rng, 50, "a")
    same = AttackedSplit(base.ids, base.correct_target, base.confidence_target,
                         base.correct_target, base.confidence_target)
    for p in (0.05, 0.2, 1.0):
        assert dejavu_gap(same, same, p).gap == 0.0
    assert symmetric_quadrants(same, same)["memorized"] == 0.0
    assert symmetric_quadrants(same, same)["misrepresented"] == 0.0


def test_results_do_not_depend_on_record_order():
    rng = np.random.default_rng(2)
    split_a, split_b = random_split(rng, 80, "a"), random_split(rng, 70, "b")
    shuffled_a = split_a.subset(rng.permutation(80))
    shuffled_b = split_b.subset(rng.permutation(70))
    for p in (0.05, 0.2, 1.0):
        assert dejavu_gap(split_a, split_b, p) == dejavu_gap(shuffled_a, shuffled_b, p)
    assert symmetric_quadrants(split_a, split_b) == symmetric_quadrants(shuffled_a, shuffled_b)


def test_subset_by_mask_and_by_index_agree_and_bad_mask_raises():
    split_a, _ = hand_splits()
    by_mask = split_a.subset(np.array([True, False, True, False]))
    by_index = split_a.subset(np.array([0, 2]))
    assert by_mask.ids.tolist() == by_index.ids.tolist() == ["a1", "a3"]
    assert by_mask.correct_reference.tolist() == [False, True]
    with pytest.raises(ValueError, match="mask has shape"):
        split_a.subset(np.array([True, False]))


def test_from_votes_scores_predictions_against_labels():
    target = label_vote(np.array([[1, 1], [0, 2]]), np.array([[0.0, 0.0], [0.0, 1.0]]), 3)
    reference = label_vote(np.array([[2, 2], [0, 0]]), np.zeros((2, 2)), 3)
    split = AttackedSplit.from_votes(["r1", "r2"], [1, 2], target, reference)
    assert split.correct_target.tolist() == [True, False]   # r2: 0 and 2 tie; 0 is closer
    assert split.correct_reference.tolist() == [False, False]
    assert split.confidence_target == pytest.approx([0.0, -np.log(2)], abs=1e-15)


# --- sample level -------------------------------------------------------------------------------

def test_sample_scores_and_most_memorized():
    scores = sample_scores([0.0, 0.5, 0.2, 0.0], [1.0, 1.5, 0.2, 2.0], [True, True, True, False])
    assert scores.tolist() == [1.0, 1.0, 0.0, -np.inf]
    # r1 and r2 tie at 1.0 and are listed by id; r4 is not memorized and never listed.
    assert most_memorized(["r2", "r1", "r3", "r4"], scores, 10) == [("r1", 1.0), ("r2", 1.0), ("r3", 0.0)]
    assert most_memorized(["r2", "r1", "r3", "r4"], scores, 1) == [("r1", 1.0)]
