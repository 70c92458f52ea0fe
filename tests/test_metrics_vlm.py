"""Vision-language metrics (SPEC section 5) against hand-worked cases and identities."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dejavu.metrics.vlm import (
    aucg,
    batched_top_l_gaps,
    hits,
    log_spaced_phis,
    multi_hot,
    object_vocabulary,
    ppg,
    precision_recall,
    prg,
    recall_auc,
    sample_order,
    top_l_gaps,
    top_t_objects,
    union_objects,
)

PUBLIC_SETS = [{"dog", "cat"}, {"dog"}, {"car"}, set()]
VOCAB = object_vocabulary(PUBLIC_SETS, [{"tree"}])
PUBLIC = multi_hot(PUBLIC_SETS, VOCAB)
NEIGHBOURS = np.array([[0, 1, 2], [3, 3, 3], [2, 2, 0]])


def names(row):
    return [VOCAB[j] for j in np.flatnonzero(row)]


def test_vocabulary_is_sorted_and_multi_hot_marks_columns():
    assert VOCAB == ("car", "cat", "dog", "tree")
    assert PUBLIC.tolist() == [[False, True, True, False], [False, False, True, False],
                               [True, False, False, False], [False, False, False, False]]


def test_multi_hot_names_the_record_with_an_unknown_object():
    with pytest.raises(ValueError, match="record 'img7': object 'boat'"):
        multi_hot([{"cat"}, {"boat"}], VOCAB, ids=["img6", "img7"])
    with pytest.raises(ValueError, match="sorted"):
        multi_hot([{"cat"}], ["dog", "cat"])


def test_union_of_neighbour_objects():
    pred = union_objects(PUBLIC, NEIGHBOURS)
    assert [names(r) for r in pred] == [["car", "cat", "dog"], [], ["car", "cat", "dog"]]


def test_top_t_ranks_by_neighbour_count_then_name_and_never_adds_absent_objects():
    # Row 0 counts: dog 2, car 1, cat 1 -> top-2 is dog then car (car < cat by name).
    # Row 2 counts: car 2, cat 1, dog 1 -> top-2 is car then cat.
    assert [names(r) for r in top_t_objects(PUBLIC, NEIGHBOURS, 1)] == [["dog"], [], ["car"]]
    assert [names(r) for r in top_t_objects(PUBLIC, NEIGHBOURS, 2)] == [["car", "dog"], [], ["car", "cat"]]
    assert (top_t_objects(PUBLIC, NEIGHBOURS, 10) == union_objects(PUBLIC, NEIGHBOURS)).all()


def test_neighbour_index_out_of_range_raises():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        union_objects(PUBLIC, np.array([[4]]))


def test_precision_recall_hand_worked():
    gt = multi_hot([{"cat"}, {"cat", "tree"}, {"dog", "car"}], VOCAB)
    pred = multi_hot([{"cat", "dog", "car"}, set(), {"dog", "car"}], VOCAB)
    prec, rec = precision_recall(gt, pred)
    assert prec.tolist() == [1 / 3, 0.0, 1.0]   # an empty prediction has precision 0
    assert rec.tolist() == [1.0, 0.0, 1.0]
    assert hits(gt, pred).tolist() == [1, 0, 2]


def test_precision_recall_refuses_records_without_ground_truth():
    gt = multi_hot([{"cat"}, set()], VOCAB)
    with pytest.raises(ValueError, match="'r2'"):
        precision_recall(gt, gt, ids=["r1", "r2"])


def test_ppg_prg_hand_worked_with_ties():
    a = [0.5, 0.5, 1.0, 0.0, 1 / 3]
    b = [0.5, 0.25, 0.0, 1.0, 2 / 6]   # 1/3 and 2/6 are the same float: a tie
    assert ppg(a, b) == pytest.approx((2 - 1) / 5)
    assert prg(a, a) == 0.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=40))
def test_ppg_and_prg_are_antisymmetric(pairs):
    a = np.array([x for x, _ in pairs]) / 4
    b = np.array([y for _, y in pairs]) / 4
    assert ppg(a, b) == -ppg(b, a)
    assert prg(a, b) == -prg(b, a)


def test_recall_auc_hand_worked():
    # frac(recall >= t) is 1 at t=0, 2/3 on (0, 0.5], 1/3 on (0.5, 1]: area 0.5*2/3 + 0.5*1/3.
    assert recall_auc([0.0, 0.5, 1.0]) == pytest.approx(0.5, abs=1e-15)
    assert recall_auc([1.0, 1.0]) == 1.0 and recall_auc([0.0]) == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        recall_auc([1.5])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=50))
def test_aucg_equals_the_gap_in_mean_recall(pairs):
    a = np.array([x for x, _ in pairs])
    b = np.array([y for _, y in pairs])
    assert aucg(a, b) == pytest.approx(a.mean() - b.mean(), abs=1e-12)


def test_sample_orders_are_stable_by_id():
    ids = ["r3", "r1", "r2", "r4"]
    assert sample_order("min_dist", ids, min_dist=[0.2, 0.5, 0.2, 0.1]).tolist() == [3, 2, 0, 1]
    assert sample_order("crct_pred", ids, hits_a=[1, 3, 1, 0]).tolist() == [1, 2, 0, 3]
    # pred gaps: 1-0, 3-3, 1-2, 0-0 -> r3 first, then r1/r4 tie (gap 0) by id, then r2.
    assert sample_order("max_pred_gap", ids, hits_a=[1, 3, 1, 0], hits_b=[0, 3, 2, 0]).tolist() == [0, 1, 3, 2]
    with pytest.raises(ValueError, match="needs hits_b"):
        sample_order("max_pred_gap", ids, hits_a=[1, 3, 1, 0])
    with pytest.raises(ValueError, match="unknown ordering"):
        sample_order("random", ids)


def test_top_l_gaps_hand_worked():
    order = np.array([2, 0, 1, 3])
    prec_a, rec_a = [0.5, 0.0, 1.0, 0.0], [1.0, 0.0, 0.5, 0.0]
    prec_b, rec_b = [0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]
    table = top_l_gaps(order, prec_a, rec_a, prec_b, rec_b, phis=[0.001, 0.5, 1.0])
    assert table["L"].tolist() == [1, 2, 4]
    # L=1 keeps record 2: A (1.0, 0.5), B (0, 0). L=2 adds record 0: A (0.75, 0.75), B (0.25, 0.25).
    assert table["precision_gap"].tolist() == pytest.approx([1.0, 0.5, 0.125])
    assert table["recall_gap"].tolist() == pytest.approx([0.5, 0.5, 0.125])
    f = lambda p, r: 2 * p * r / (p + r + 1e-5)  # noqa: E731
    assert table["f_gap"].tolist() == pytest.approx(
        [f(1.0, 0.5) - f(0, 0), f(0.75, 0.75) - f(0.25, 0.25), f(0.375, 0.375) - f(0.25, 0.25)])


@pytest.mark.parametrize("ordering", ["min_dist", "crct_pred", "max_pred_gap"])
def test_batched_top_l_gaps_equal_ranking_each_resample_afresh(ordering):
    rng = np.random.default_rng(11)
    n = 40
    ids = np.array([f"r{i:03d}" for i in range(n)])
    hits_a, hits_b = rng.integers(0, 3, n), rng.integers(0, 3, n)  # integer keys: many ties, broken by id
    min_dist = rng.integers(0, 4, n) / 4
    prec_a, rec_a, prec_b, rec_b = rng.random((4, n))
    phis = [0.01, 0.1, 0.5, 1.0]
    order = sample_order(ordering, ids, min_dist=min_dist, hits_a=hits_a, hits_b=hits_b)
    idx = rng.integers(0, n, size=(5, n))
    batched = batched_top_l_gaps(order, prec_a, rec_a, prec_b, rec_b, phis, idx)
    for row, take in enumerate(idx):
        # a resample repeats records; copies get distinct ids that sort right after their original's
        copies = [f"{ids[t]}#{k:03d}" for k, t in enumerate(take)]
        fresh_order = sample_order(ordering, copies, min_dist=min_dist[take], hits_a=hits_a[take],
                                   hits_b=hits_b[take])
        fresh = top_l_gaps(fresh_order, prec_a[take], rec_a[take], prec_b[take], rec_b[take], phis)
        for gap in ("precision_gap", "recall_gap", "f_gap"):
            assert batched[gap][row] == pytest.approx(fresh[gap].to_numpy(), abs=1e-12)


def test_log_spaced_phis_run_from_one_record_to_all():
    phis = log_spaced_phis(1000, num=4)
    assert phis == pytest.approx([0.001, 0.01, 0.1, 1.0])
