"""Naive Bayes over background tags, checked against a 3-class, 4-tag example worked by hand.

Fit crops (label: tags)            counts n_c(o)     cat dog fish | N(o)
  cat:  sofa, ball                   sofa             2   1   0   |  3
  cat:  sofa                         grass            0   2   0   |  2
  dog:  grass, ball                  water            0   0   2   |  2
  dog:  grass, sofa                  ball             1   1   1   |  3
  fish: water
  fish: water, ball

Crop {sofa, ball}: cat 2/3*1/3 = 2/9, dog 1/3*1/3 = 1/9, fish (eps/3)*(1/3) = eps/9.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dejavu.records import Box, Record
from dejavu.references import NaiveBayesReference, ReferencePrediction, crop_tags, top_tags

FIT_TAGS = [{"sofa", "ball"}, {"sofa"}, {"grass", "ball"}, {"grass", "sofa"}, {"water"}, {"water", "ball"}]
FIT_LABELS = ["cat", "cat", "dog", "dog", "fish", "fish"]
EPS = 1e-10


def fitted(**kwargs) -> NaiveBayesReference:
    return NaiveBayesReference(**kwargs).fit(FIT_TAGS, FIT_LABELS)


def test_counts_match_the_hand_table():
    nb = fitted()
    assert nb.classes_ == ["cat", "dog", "fish"]
    assert nb.tags_ == ["ball", "grass", "sofa", "water"]
    np.testing.assert_array_equal(nb.counts_, [[1, 1, 1], [0, 2, 0], [2, 1, 0], [0, 0, 2]])


def test_original_scores_are_the_hand_products():
    nb = NaiveBayesReference.original()
    nb.fit(FIT_TAGS, FIT_LABELS)
    scores = np.exp(nb.log_scores([{"sofa", "ball"}, {"grass", "unicorn"}]))
    np.testing.assert_allclose(scores[0], [2 / 9, 1 / 9, EPS / 9], rtol=1e-12)
    # grass: dog 2/2, the others eps/2; the unseen tag "unicorn" is a neutral factor 1
    np.testing.assert_allclose(scores[1], [EPS / 2, 1.0, EPS / 2], rtol=1e-12)


def test_original_prediction_and_unnormalized_confidence():
    nb = NaiveBayesReference.original().fit(FIT_TAGS, FIT_LABELS)
    out = nb.predict([{"sofa", "ball"}, {"grass"}, set(), {"unicorn"}], ["a", "b", "c", "d"])
    assert out.pred[:2] == ["cat", "dog"]
    np.testing.assert_allclose(out.confidence, [2 / 9, 1.0, 0.0, 1.0], rtol=1e-12)
    # the original's quirks: no tags scores 0; only unseen tags scores 1 (all factors neutral)
    assert out.pred[2:] == ["cat", "cat"]  # uniform: ties go to the smallest class name
    np.testing.assert_allclose(out.entropy[2:], [math.log(3)] * 2)


def test_default_is_epsilon_with_normalized_posterior():
    nb = fitted()
    assert (nb.smoothing, nb.eps, nb.normalize, nb.top_t) == ("epsilon", EPS, True, None)
    out = nb.predict([{"sofa", "ball"}], ["a"])
    expected = np.array([2, 1, EPS]) / (3 + EPS)
    np.testing.assert_allclose(out.probs[0], expected, rtol=1e-12)
    assert out.confidence[0] == pytest.approx(2 / 3)
    assert out.entropy[0] == pytest.approx(-(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3), rel=1e-8)


def test_laplace_posterior_by_hand():
    # (n+1)/(N+3): sofa 3/6, 2/6, 1/6; ball 2/6 each -> posterior 1/2, 1/3, 1/6
    out = fitted(smoothing="laplace").predict([{"sofa", "ball"}], ["a"])
    p = np.array([1 / 2, 1 / 3, 1 / 6])
    np.testing.assert_allclose(out.probs[0], p, rtol=1e-12)
    assert out.pred == ["cat"]
    assert out.entropy[0] == pytest.approx(-(p * np.log(p)).sum())


def test_tie_goes_to_smallest_class_name_and_no_evidence_is_uniform():
    nb = fitted()
    out = nb.predict([{"ball"}, set(), {"unicorn"}], ["a", "b", "c"])
    assert out.pred == ["cat", "cat", "cat"]
    np.testing.assert_allclose(out.confidence, [1 / 3] * 3)
    np.testing.assert_allclose(out.entropy, [math.log(3)] * 3)
    np.testing.assert_array_equal(nb.known_tag_counts([{"ball"}, set(), {"unicorn", "sofa"}]), [1, 0, 1])


def test_top_t_keeps_the_best_scored_tags():
    # keeping "the best t" of unscored tags would be arbitrary
    with pytest.raises(ValueError, match="top_t=1 needs"):
        fitted(top_t=1)
    scored_fit = [[(t, 1.0) for t in sorted(s)] for s in FIT_TAGS]
    nb = NaiveBayesReference(top_t=1, normalize=False).fit(scored_fit, FIT_LABELS)
    # with top_t=1 the fit keeps the alphabetically first tag of each crop: ball, sofa, ball, grass, water, ball
    np.testing.assert_array_equal(nb.counts_.sum(axis=0), [2, 2, 2])
    out = nb.predict([[("sofa", 0.9), ("water", 0.2)]], ["a"])
    assert out.pred == ["cat"]  # only sofa is kept: cat 1/1
    assert out.confidence[0] == pytest.approx(1.0)


def test_top_tags_orders_by_score_then_name():
    assert top_tags([("b", 0.5), ("a", 0.5), ("c", 0.9), ("a", 0.1)], 2) == {"a", "c"}
    assert top_tags([("b", 0.5)], None) == {"b"}


def test_predict_keeps_ids_and_rejects_bad_input():
    nb = fitted()
    out = nb.predict([{"water"}, {"grass"}], ["x9", "x1"])
    assert out.to_frame().loc["x9", "pred"] == "fish"
    with pytest.raises(ValueError, match="2 tag sets but 1 ids"):
        nb.predict([{"water"}, {"grass"}], ["x9"])
    with pytest.raises(TypeError, match="not the string"):
        nb.predict(["water"], ["x"])
    with pytest.raises(RuntimeError, match="fit"):
        NaiveBayesReference().predict([{"a"}], ["x"])
    with pytest.raises(ValueError, match="smoothing"):
        NaiveBayesReference(smoothing="add-one")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sets(st.sampled_from(["ball", "grass", "sofa", "water", "unicorn"])), min_size=1, max_size=6))
def test_normalizing_never_moves_the_argmax(tag_sets):
    ids = [f"r{i}" for i in range(len(tag_sets))]
    raw = NaiveBayesReference.original().fit(FIT_TAGS, FIT_LABELS).predict(tag_sets, ids)
    norm = fitted().predict(tag_sets, ids)
    assert raw.pred == norm.pred
    np.testing.assert_allclose(norm.probs.sum(axis=1), 1.0)
    assert np.all(norm.entropy <= math.log(3) + 1e-12)


def record(boxes, tags=(), label="dog") -> Record:
    return Record(id="r1", image="r1.png", width=100, height=100, label=label, boxes=tuple(boxes), tags=tags)


def test_crop_tags_adds_overlapping_non_foreground_boxes():
    rec = record(
        [Box(0, 0, 20, 20, "dog"), Box(50, 50, 70, 70, "ball"), Box(80, 0, 100, 10, "kite"), Box(60, 0, 70, 5, "dog")],
        tags=("grass",),
    )
    # crop [40,60]x[40,60] overlaps the ball; the kite is outside; the second dog box is foreground too
    assert crop_tags(rec, (40, 40, 60, 60)) == {"grass", "ball"}
    # touching an edge is no overlap (zero area)
    assert crop_tags(rec, (70, 70, 90, 90)) == {"grass"}


def test_crop_tags_accepts_objects_with_box():
    class Crop:
        box = (0, 0, 100, 100)

    rec = record([Box(0, 0, 20, 20, "cat"), Box(50, 50, 70, 70, "ball")], label="dog")
    # no box carries the label "dog": the first box is the foreground
    assert crop_tags(rec, Crop()) == {"ball"}
    with pytest.raises(ValueError, match="crop must have"):
        crop_tags(rec, (1, 2, 3))


def test_reference_prediction_checks_lengths():
    with pytest.raises(ValueError, match="2 ids"):
        ReferencePrediction(ids=["a", "b"], pred=["x"], confidence=np.ones(2), entropy=np.zeros(2))
