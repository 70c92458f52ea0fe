"""The one-model image tests (SPEC section 4): a correlation estimator in place of the reference model.

The estimator (naive Bayes over background tags, or a crop classifier) is fit on the background
crops of the reference split B and predicts the foreground label of A's crops; the target is the
model trained on A, attacked exactly as in the two-model test. (SPEC section 4 names the splits
the other way round; only the roles matter: the estimator never sees the attacked records.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dejavu.attacks.common import StatsConfig, corrected_gap_rows, gap_rows, subset_masks
from dejavu.attacks.image import ImageTestConfig, ImageTestResult, LabelAttack, canary_rows
from dejavu.config import from_group
from dejavu.crops import Crop, CropResult, crop_image
from dejavu.metrics import AttackedSplit, bootstrap_indices, bootstrap_mean, sample_scores
from dejavu.records import Record, RecordSet
from dejavu.references import CropClassifier, NaiveBayesReference, ReferencePrediction, crop_tags
from dejavu.references.crop_classifier import is_arch
from dejavu.references.naive_bayes import SMOOTHINGS
from dejavu.results import Row
from dejavu.rules import at_least, check_fields, one_of, rule

NB_TEST = "image-one-model-nb"
CROP_TEST = "image-one-model-crop"


@dataclass(frozen=True)
class NaiveBayesConfig:
    """The naive-Bayes estimator's settings (`measure.image-one-model-nb`)."""

    smoothing: str = field(default="epsilon", metadata=one_of(SMOOTHINGS))  # "epsilon": the original's
    normalize: bool = True  # whether its posteriors are normalized

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class CropClassifierConfig:
    """The crop classifier's settings (`measure.image-one-model-crop`); it trains with the measurement's seed."""

    arch: str = field(default="small-cnn", metadata=rule(is_arch, "'small-cnn' or a torchvision classification "
                                                                  "model name such as 'resnet18'"))
    image_size: int = field(default=32, metadata=at_least(8))
    epochs: int = field(default=10, metadata=at_least(1))
    stats: StatsConfig = field(default_factory=StatsConfig, metadata=from_group("stats"))

    def __post_init__(self):
        check_fields(self)


def fit_split(records: RecordSet, crops: CropResult, split: str) -> RecordSet:
    """Returns the labelled records of `split` with a background crop: the estimator's training set."""
    return RecordSet([r for r in records if r.split == split and r.id in crops.crops and r.label is not None],
                     name=f"fit {split}")


@dataclass(frozen=True)
class FittedEstimator:
    """A one-model estimator fit on B's background crops, and the crop features it reads."""

    estimator: object
    features: Callable[[Record, Crop], object]

    def predict(self, records: RecordSet, crops: CropResult, ids: list[str]) -> ReferencePrediction:
        """Returns the estimator's predictions for the crops of the records `ids`, in that order."""
        attacked = [records.by_id(i) for i in ids]
        return self.estimator.predict([self.features(r, crops.crops[r.id]) for r in attacked], ids)


def naive_bayes_estimator(records: RecordSet, crops: CropResult, cfg: NaiveBayesConfig) -> FittedEstimator:
    """Returns naive Bayes fit on B's crop tags."""
    nb = NaiveBayesReference(smoothing=cfg.smoothing, normalize=cfg.normalize)
    return fit_estimator(nb, crop_tags, records, crops)


def crop_classifier_estimator(records: RecordSet, crops: CropResult, cfg: CropClassifierConfig) -> FittedEstimator:
    """Returns the crop classifier trained on B's crops."""
    clf = CropClassifier(arch=cfg.arch, image_size=cfg.image_size, epochs=cfg.epochs, seed=cfg.stats.seed)
    return fit_estimator(clf, crop_image, records, crops)


def naive_bayes_reference(records: RecordSet, crops: CropResult, attacked_ids: list[str],
                          cfg: NaiveBayesConfig) -> ReferencePrediction:
    """Returns naive-Bayes predictions for the attacked A crops, fit on B's crop tags."""
    return naive_bayes_estimator(records, crops, cfg).predict(records, crops, attacked_ids)


def crop_classifier_reference(records: RecordSet, crops: CropResult, attacked_ids: list[str],
                              cfg: CropClassifierConfig) -> ReferencePrediction:
    """Returns crop-classifier predictions for the attacked A crops, trained on B's crops."""
    return crop_classifier_estimator(records, crops, cfg).predict(records, crops, attacked_ids)


def fit_estimator(estimator, features: Callable[[Record, Crop], object], records: RecordSet,
                  crops: CropResult) -> FittedEstimator:
    """Returns the estimator fitted on the features and labels of B's background crops."""
    fit = fit_split(records, crops, "B")
    if len(fit) == 0:
        raise ValueError(f"split B has no labelled record with a background crop to fit the estimator on ({crops})")
    estimator.fit([features(r, crops.crops[r.id]) for r in fit], [r.label for r in fit])
    return FittedEstimator(estimator, features)


def estimator_split(ids: list[str], truth: list[str], correct_target, confidence_target,
                    estimate: ReferencePrediction) -> AttackedSplit:
    """Returns the target against the estimator on records `ids` with true label names `truth`.

    The estimator's predictions must be in the order of `ids`; a record it has no opinion on
    (pred None) counts as wrong.
    """
    if list(estimate.ids) != list(ids):
        raise ValueError("the estimator's predictions are not in the order of the attacked records")
    correct_est = np.array([p is not None and p == t for p, t in zip(estimate.pred, truth, strict=True)], dtype=bool)
    return AttackedSplit(ids=ids, correct_target=correct_target, confidence_target=confidence_target,
                         correct_reference=correct_est, confidence_reference=estimate.confidence)


def null_split(target: LabelAttack, records: RecordSet, estimate: ReferencePrediction) -> AttackedSplit:
    """Returns the target's vote against the estimator on records neither saw (eval): the null of the test."""
    truth = [records.by_id(i).label for i in target.ids]
    return estimator_split(target.ids, truth, target.correct, target.vote.confidence, estimate)


def one_model_rows(test: str, two_model: ImageTestResult, estimate: ReferencePrediction,
                   cfg: ImageTestConfig, null: AttackedSplit | None = None) -> list[Row]:
    """Returns dv_gap@p and quadrants of the target against the estimator, and its agreement with model B.

    `cfg` is the target's attack (the two-model test's settings): its top-p levels, canary p-value
    level and stats are the one-model test's too.

    `two_model` may come from `image_target_only` (an off-the-shelf model without a reference
    model); then there is no agreement row.

    `agreement` is the fraction of attacked A records on which the estimator and the two-model
    reference (model B) are both right or both wrong. The sample-level score is the estimator's
    entropy minus the target's, as in the two-model test, for the canary AUROC.

    `null` is the same comparison on the eval records (`null_split`). With it come its rows
    (`null_dv_gap@p`, ..., subset `all`) and, per subset, `corrected_dv_gap@p` = gap - null gap: the
    number comparable with the two-model test (SPEC section 5, "Null for one-model tests").
    """
    frame = target_frame(two_model, estimate.ids)
    names = {i: c for c, i in two_model.classes.items()}
    truth = [names[i] for i in frame.label]
    split = estimator_split(estimate.ids, truth, frame.correct_target.to_numpy(), -frame.entropy_target.to_numpy(),
                            estimate)
    correct_est = split.correct_reference
    has_model_b = "correct_reference" in frame
    agree = correct_est == frame.correct_reference.to_numpy() if has_model_b else None
    canary = frame.canary.to_numpy(dtype=bool)
    rows: list[Row] = []
    for subset, mask in subset_masks(canary).items():
        if not mask.any():
            continue
        rows += gap_rows(test, subset, split.subset(mask), None, cfg.top_p, cfg.stats)
        if agree is None:
            continue
        idx = bootstrap_indices(int(mask.sum()), cfg.stats.n_bootstrap, cfg.stats.seed)
        rows.append(bootstrap_mean(agree[mask], idx).row(test, subset, "agreement"))
    scores = sample_scores(frame.entropy_target.to_numpy(), estimate.entropy, split.memorized())
    rows += canary_rows(test, split, canary, scores, cfg.pvalue_p, cfg.stats)
    if null is not None and len(null):
        rows += gap_rows(test, "all", null, None, cfg.top_p, cfg.stats, prefix="null_")
        for subset, mask in subset_masks(canary).items():
            rows += corrected_gap_rows(test, subset, split.subset(mask), null, cfg.top_p, cfg.stats)
    return rows


def target_frame(two_model: ImageTestResult, ids: list[str]) -> pd.DataFrame:
    """Returns the target's per-record outcomes on the attacked A records `ids`, in that order."""
    frame = two_model.records[two_model.records.split == "A"].set_index("id")
    missing = [i for i in ids if i not in frame.index]
    if missing:
        raise ValueError(f"the estimator predicted {len(missing)} records the target did not attack, "
                         f"e.g. {missing[:5]}; predict exactly the attacked A records")
    return frame.loc[ids]
