"""The one-model image tests (SPEC section 4) on hand-worked cases and on a tiny naive-Bayes world."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from dejavu.attacks.common import StatsConfig
from dejavu.attacks.image import ImageTestConfig, ImageTestResult, LabelAttack
from dejavu.attacks.one_model import (
    NB_TEST,
    NaiveBayesConfig,
    naive_bayes_reference,
    null_split,
    one_model_rows,
)
from dejavu.crops import background_crops
from dejavu.metrics import AttackedSplit, VoteResult
from dejavu.records import Box, Record, RecordSet
from dejavu.references import ReferencePrediction

CFG = ImageTestConfig(top_p=(0.5, 1.0), stats=StatsConfig(n_bootstrap=50, n_permutations=50))  # the target's attack
CLASSES = {"cat": 0, "dog": 1}
NAMES = ("cat", "dog")

#            r0    r1    r2    r3    r4    r5
LABEL = [0, 0, 1, 1, 0, 1]
PRED_TARGET = [0, 1, 1, 0, 0, 1]  # right on r0 r2 r4 r5
PRED_B = [1, 1, 1, 0, 0, 0]  # right on r2 r4
ENTROPY_TARGET = [0.1, 0.5, 0.2, 0.9, 0.3, 0.0]
ENTROPY_B = [0.7, 0.1, 0.2, 0.3, 0.4, 0.5]
CANARY = [True, False, False, False, False, True]
IDS = [f"r{i}" for i in range(6)]


def two_model_result(with_model_b: bool = True) -> ImageTestResult:
    """Returns an image-test result for six A records (and one B record, which must be ignored)."""
    frame = pd.DataFrame({"id": IDS, "split": "A", "canary": CANARY, "label": LABEL, "pred_target": PRED_TARGET,
                          "correct_target": np.equal(LABEL, PRED_TARGET), "entropy_target": ENTROPY_TARGET})
    if with_model_b:
        frame = frame.assign(pred_reference=PRED_B, correct_reference=np.equal(LABEL, PRED_B),
                             entropy_reference=ENTROPY_B)
    b_row = frame.iloc[[0]].assign(id="b0", split="B")
    return ImageTestResult([], pd.concat([frame, b_row], ignore_index=True), None, RecordSet([]), CLASSES)


# estimator: right on r1 r2 r4; no opinion on r3
ESTIMATE = ReferencePrediction(ids=IDS, pred=["dog", "cat", "dog", None, "cat", "cat"],
                               confidence=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4], entropy=[0.6, 0.5, 0.4, 0.3, 0.2, 0.1])


def value(rows, metric, subset="all"):
    found = [r for r in rows if r.metric == metric and r.subset == subset]
    assert len(found) == 1, (metric, subset, found)
    return found[0].value


def test_gap_and_quadrants_by_hand():
    rows = one_model_rows(NB_TEST, two_model_result(), ESTIMATE, CFG)
    assert {r.test for r in rows} == {NB_TEST}
    assert value(rows, "target_acc@100") == pytest.approx(4 / 6)
    assert value(rows, "reference_acc@100") == pytest.approx(3 / 6)
    assert value(rows, "dv_gap@100") == pytest.approx(1 / 6)
    # top half by own confidence: target r5 r0 r2 (all right); estimator r0 r1 r2 (2 of 3)
    assert value(rows, "dv_gap@50") == pytest.approx(1 - 2 / 3)
    expected = {"memorized": 2 / 6, "correlated": 2 / 6, "misrepresented": 1 / 6, "unassociated": 1 / 6}
    for name, fraction in expected.items():
        assert value(rows, name) == pytest.approx(fraction)
    assert value(rows, "dv_gap@100") == pytest.approx(value(rows, "memorized") - value(rows, "misrepresented"))


def test_agreement_with_model_b_by_hand():
    rows = one_model_rows(NB_TEST, two_model_result(), ESTIMATE, CFG)
    # correctness of estimator F T T F T F against model B's F F T F T F: they differ on r1 only
    assert value(rows, "agreement") == pytest.approx(5 / 6)
    assert value(rows, "agreement", "canary") == 1.0
    assert value(rows, "agreement", "non-canary") == pytest.approx(3 / 4)


def test_subsets_by_hand():
    rows = one_model_rows(NB_TEST, two_model_result(), ESTIMATE, CFG)
    assert value(rows, "dv_gap@100", "canary") == 1.0  # r0 r5: target right, estimator wrong
    assert value(rows, "dv_gap@100", "non-canary") == pytest.approx(2 / 4 - 3 / 4)
    assert [r.n for r in rows if r.metric == "dv_gap@100"] == [6, 2, 4]


def test_canary_rows_use_the_estimator_entropy_as_score():
    rows = one_model_rows(NB_TEST, two_model_result(), ESTIMATE, CFG)
    # both canaries are the only memorized records, so their finite scores rank above every -inf
    assert value(rows, "canary_auroc", "canary") == 1.0
    # two canaries at the 20% level keep floor(0.4) = 0 records: the gap is undefined, so is its p-value
    assert math.isnan(value(rows, "pvalue_dv_gap@20", "canary"))
    level = dataclasses.replace(CFG, pvalue_p=1.0)
    p = value(one_model_rows(NB_TEST, two_model_result(), ESTIMATE, level), "pvalue_dv_gap@100", "canary")
    # the canary gap (1.0) is the largest possible: only subsets {r0, r5} reach it, 1 of 15 pairs
    assert 0.0 < p < 0.2


def test_estimator_identical_to_model_b_agrees_everywhere():
    same_as_b = ReferencePrediction(ids=IDS, pred=[NAMES[i] for i in PRED_B],
                                    confidence=-np.array(ENTROPY_B), entropy=ENTROPY_B)
    rows = one_model_rows(NB_TEST, two_model_result(), same_as_b, CFG)
    assert value(rows, "agreement") == 1.0
    assert value(rows, "dv_gap@100") == pytest.approx(4 / 6 - 2 / 6)


def test_without_model_b_there_is_no_agreement_row():
    rows = one_model_rows(NB_TEST, two_model_result(with_model_b=False), ESTIMATE, CFG)
    assert not [r for r in rows if r.metric == "agreement"]
    assert value(rows, "dv_gap@100") == pytest.approx(1 / 6)


def test_estimate_of_records_the_target_did_not_attack_is_a_clear_error():
    stray = ReferencePrediction(ids=["r0", "zz"], pred=["cat", "dog"], confidence=[1, 1], entropy=[0, 0])
    with pytest.raises(ValueError, match=r"predicted 1 records the target did not attack, e.g. \['zz'\]"):
        one_model_rows(NB_TEST, two_model_result(), stray, CFG)


# the null: 4 eval records; the target is right on e0 e1, the estimator on e1 e2 e3
NULL = AttackedSplit(ids=["e0", "e1", "e2", "e3"], correct_target=[True, True, False, False],
                     confidence_target=[0.0, -0.1, -0.2, -0.3], correct_reference=[False, True, True, True],
                     confidence_reference=[0.9, 0.8, 0.7, 0.6])


def test_null_and_corrected_gap_by_hand():
    rows = one_model_rows(NB_TEST, two_model_result(), ESTIMATE, CFG, null=NULL)
    assert value(rows, "null_dv_gap@100") == pytest.approx(2 / 4 - 3 / 4)
    assert value(rows, "null_misrepresented") == pytest.approx(2 / 4)
    assert not [r for r in rows if r.metric.startswith("null_") and r.subset != "all"]  # eval holds no canary
    # corrected = gap - null, per subset; the gaps are 1/6 (all), 1 (canaries), -1/4 (the others)
    for subset, gap in (("all", 1 / 6), ("canary", 1.0), ("non-canary", -1 / 4)):
        assert value(rows, "corrected_dv_gap@100", subset) == pytest.approx(gap + 1 / 4)
    # top half: the target's e0 e1 are both right, the estimator's e0 e1 half: null +1/2
    assert value(rows, "null_dv_gap@50") == pytest.approx(1 / 2)
    assert value(rows, "corrected_dv_gap@50") == pytest.approx(value(rows, "dv_gap@50") - 1 / 2)
    assert [r.n for r in rows if r.metric == "corrected_dv_gap@100"] == [6 + 4, 2 + 4, 4 + 4]


def test_without_a_null_there_are_no_null_or_corrected_rows():
    rows = one_model_rows(NB_TEST, two_model_result(), ESTIMATE, CFG)
    assert not [r for r in rows if r.metric.startswith(("null_", "corrected_"))]


def test_null_split_scores_both_on_the_eval_labels():
    evaluation = RecordSet([Record(id=f"e{i}", image="/x.png", width=4, height=4, label=label, split="eval")
                            for i, label in enumerate(["cat", "dog", "dog"])])
    vote = VoteResult(pred=np.array([0, 0, 1]), top5=np.full((3, 5), -1), entropy=np.array([0.0, 0.5, 0.2]),
                      confidence=np.array([0.0, -0.5, -0.2]))
    target = LabelAttack(["e0", "e1", "e2"], np.array([0, 1, 1]), vote, None, np.zeros(3))
    estimate = ReferencePrediction(ids=["e0", "e1", "e2"], pred=["dog", "dog", None], confidence=[0.5, 0.6, 0.7],
                                   entropy=[0.7, 0.6, 0.5])
    split = null_split(target, evaluation, estimate)
    assert split.correct_target.tolist() == [True, False, True]
    assert split.correct_reference.tolist() == [False, True, False]  # no opinion counts as wrong
    assert split.confidence_target.tolist() == [0.0, -0.5, -0.2]
    shuffled = ReferencePrediction(ids=["e1", "e0", "e2"], pred=estimate.pred, confidence=estimate.confidence,
                                   entropy=estimate.entropy)
    with pytest.raises(ValueError, match="not in the order"):
        null_split(target, evaluation, shuffled)


def _tagged(rid: str, split: str, label: str, tag: str) -> Record:
    return Record(id=rid, image=f"/nonexistent/{rid}.png", width=24, height=24, label=label,
                  boxes=(Box(0, 0, 8, 24, label),), split=split, tags=(tag,))


def test_naive_bayes_reference_end_to_end():
    """Tags decide the label ('sofa' -> cat, 'grass' -> dog) except on one A record with an unseen tag."""
    fit = [_tagged(f"b{i}", "B", label, tag) for i, (label, tag) in enumerate([("cat", "sofa"), ("dog", "grass")] * 4)]
    attacked = [_tagged("a0", "A", "cat", "sofa"), _tagged("a1", "A", "dog", "grass"),
                _tagged("a2", "A", "cat", "sofa"), _tagged("a3", "A", "dog", "moon")]
    records = RecordSet(fit + attacked)
    crops = background_crops(records)
    ids = [r.id for r in attacked]
    estimate = naive_bayes_reference(records, crops, ids, NaiveBayesConfig())
    # 'moon' was never seen in fitting: it is neutral, the posterior stays uniform, the tie goes to 'cat'
    assert estimate.pred == ["cat", "dog", "cat", "cat"]
    assert estimate.confidence[3] == pytest.approx(0.5)
    # a target that is right on every record has memorized exactly the one the background cannot explain
    frame = pd.DataFrame({"id": ids, "split": "A", "canary": False, "label": [0, 1, 0, 1], "pred_target": [0, 1, 0, 1],
                          "correct_target": True, "entropy_target": 0.0})
    rows = one_model_rows(NB_TEST, ImageTestResult([], frame, None, RecordSet([]), CLASSES), estimate, CFG)
    assert value(rows, "memorized") == pytest.approx(1 / 4)
    assert value(rows, "correlated") == pytest.approx(3 / 4)
    assert value(rows, "dv_gap@100") == pytest.approx(1 / 4)
