"""The per-record log-likelihood score (dejavu.metrics.likelihood) on hand-worked cases and identities."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dejavu.metrics.likelihood import (
    label_log_likelihood,
    neighbour_weights,
    object_log_likelihood,
    soft_object_counts,
)
from dejavu.metrics.vlm import neighbour_object_counts


def test_weights_by_hand_nearest_one_kth_e_minus_one_summing_to_k():
    w = neighbour_weights(np.array([[1.0, 2.0, 3.0]]))
    raw = np.array([1.0, np.exp(-0.5), np.exp(-1.0)])
    assert w[0] == pytest.approx(3 * raw / raw.sum(), abs=1e-15)
    assert w.sum() == pytest.approx(3.0, abs=1e-15)


def test_equal_distances_weigh_every_neighbour_one():
    assert neighbour_weights(np.full((2, 4), 0.25)).tolist() == [[1.0] * 4] * 2


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 800), min_size=1, max_size=8), st.sampled_from([0.5, 2.0, 10.0]),
       st.integers(-50, 50))
def test_weights_do_not_change_when_distances_are_scaled_and_shifted(eighths, scale, shift):
    d = np.sort(np.array(eighths) / 8)[None]  # exact in binary, so scaling and shifting lose nothing
    assert neighbour_weights(scale * d + shift) == pytest.approx(neighbour_weights(d), abs=1e-12)


@pytest.mark.parametrize("bad, msg", [(np.array([[2.0, 1.0]]), "non-decreasing"), (np.array([[0.0, np.inf]]), "finite"),
                                      (np.zeros((2, 0)), "k>0")])
def test_weights_reject_bad_distances(bad, msg):
    with pytest.raises(ValueError, match=msg):
        neighbour_weights(bad)


def test_label_log_likelihood_by_hand():
    # k = 2 equal distances, C = 3 classes: label 0 in one neighbour -> (1 + 1) / (2 + 3); in both ->
    # (2 + 1) / 5; in none -> 1 / 5; a label no public image carries (-1) -> 1 / 5 as well
    nbr = np.array([[0, 1], [0, 0], [1, 2], [1, 2]])
    ll = label_log_likelihood(nbr, np.ones((4, 2)), np.array([0, 0, 0, -1]), n_classes=3)
    assert ll == pytest.approx(np.log([2 / 5, 3 / 5, 1 / 5, 1 / 5]), abs=1e-15)


def test_nearer_neighbours_count_more():
    # the true label 0 sits at the nearest of two neighbours: weight 2/(1 + e^-1) > 1
    ll = label_log_likelihood(np.array([[0, 1]]), np.array([[0.0, 1.0]]), np.array([0]), n_classes=2)
    assert ll[0] == pytest.approx(np.log((2 / (1 + np.exp(-1)) + 1) / 4), abs=1e-15)
    flipped = label_log_likelihood(np.array([[1, 0]]), np.array([[0.0, 1.0]]), np.array([0]), n_classes=2)
    assert flipped[0] < np.log(2 / 4) < ll[0]


def test_label_probabilities_over_all_classes_sum_to_one():
    rng = np.random.default_rng(0)
    nbr = rng.integers(0, 5, size=(20, 7))
    dists = np.sort(rng.random((20, 7)), axis=1)
    total = sum(np.exp(label_log_likelihood(nbr, dists, np.full(20, c), n_classes=5)) for c in range(5))
    assert total == pytest.approx(np.ones(20), abs=1e-12)


def test_soft_object_counts_with_equal_distances_are_neighbour_counts():
    rng = np.random.default_rng(1)
    public = rng.random((30, 6)) < 0.3
    nbrs = rng.integers(0, 30, size=(10, 4))
    soft = soft_object_counts(public, nbrs, np.zeros((10, 4)))
    assert soft.tolist() == neighbour_object_counts(public, nbrs).astype(float).tolist()


def test_object_log_likelihood_by_hand():
    # two neighbours at equal distance; object 0 in both, object 1 in one, object 2 in none:
    # p = (2 + 1)/(2 + 2), (1 + 1)/4, (0 + 1)/4; the record holds objects 0 and 2
    public = np.array([[1, 1, 0], [1, 0, 0]], dtype=bool)
    soft = soft_object_counts(public, np.array([[0, 1]]), np.array([[0.3, 0.3]]))
    ll = object_log_likelihood(np.array([[True, False, True]]), soft, k=2)
    assert ll[0] == pytest.approx((np.log(3 / 4) + np.log(1 / 4)) / 2, abs=1e-15)


def test_object_log_likelihood_needs_objects():
    with pytest.raises(ValueError, match="without ground-truth objects"):
        object_log_likelihood(np.zeros((1, 3), dtype=bool), np.zeros((1, 3)), k=2)
