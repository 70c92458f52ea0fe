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

from dejavu.attacks.common import StatsConfig, gap_rows, subset_masks
from dejavu.attacks.image import ImageTestResult, canary_rows
from dejavu.crops import Crop, CropResult, crop_image
from dejavu.metrics import AttackedSplit, bootstrap_indices, bootstrap_mean, sample_scores
from dejavu.records import Record, RecordSet
from dejavu.references import CropClassifier, NaiveBayesReference, ReferencePrediction, crop_tags
from dejavu.results import Row

NB_TEST = "image-one-model-nb"
CROP_TEST = "image-one-model-crop"


@dataclass(frozen=True)
class OneModelConfig:
    """Settings of the one-model estimators."""

    nb_smoothing: str = "epsilon"  # the original's behaviour; "laplace" for smoothed posteriors
    nb_normalize: bool = True
    crop_arch: str = "small-cnn"
    crop_image_size: int = 32
    crop_epochs: int = 10
    top_p: tuple[float, ...] = (0.05, 0.2, 1.0)
    pvalue_p: float = 0.2  # the top-p level of the canary permutation test
    stats: StatsConfig = field(default_factory=StatsConfig)
    seed: int = 0


def fit_split(records: RecordSet, crops: CropResult, split: str) -> RecordSet:
    """Returns the labelled records of `split` with a background crop: the estimator's training set."""
    return RecordSet([r for r in records if r.split == split and r.id in crops.crops and r.label is not None],
                     name=f"fit {split}")


def naive_bayes_reference(records: RecordSet, crops: CropResult, attacked_ids: list[str],
                          cfg: OneModelConfig) -> ReferencePrediction:
    """Returns naive-Bayes predictions for the attacked A crops, fit on B's crop tags."""
    nb = NaiveBayesReference(smoothing=cfg.nb_smoothing, normalize=cfg.nb_normalize)
    return fit_and_predict(nb, crop_tags, records, crops, attacked_ids)


def crop_classifier_reference(records: RecordSet, crops: CropResult, attacked_ids: list[str],
                              cfg: OneModelConfig) -> ReferencePrediction:
    """Returns crop-classifier predictions for the attacked A crops, trained on B's crops."""
    clf = CropClassifier(arch=cfg.crop_arch, image_size=cfg.crop_image_size, epochs=cfg.crop_epochs,
                         seed=cfg.seed)
    return fit_and_predict(clf, crop_image, records, crops, attacked_ids)


def fit_and_predict(estimator, features: Callable[[Record, Crop], object], records: RecordSet, crops: CropResult,
                    attacked_ids: list[str]) -> ReferencePrediction:
    """Returns the estimator's predictions for the attacked crops after fitting it on B's crop features."""
    fit = fit_split(records, crops, "B")
    if len(fit) == 0:
        raise ValueError(f"split B has no labelled record with a background crop to fit the estimator on ({crops})")
    estimator.fit([features(r, crops.crops[r.id]) for r in fit], [r.label for r in fit])
    attacked = [records.by_id(i) for i in attacked_ids]
    return estimator.predict([features(r, crops.crops[r.id]) for r in attacked], attacked_ids)


def one_model_rows(test: str, two_model: ImageTestResult, estimate: ReferencePrediction,
                   cfg: OneModelConfig) -> list[Row]:
    """Returns dv_gap@p and quadrants of the target against the estimator, and its agreement with model B.

    `two_model` may come from `image_target_only` (an off-the-shelf model without a reference
    model); then there is no agreement row.

    `agreement` is the fraction of attacked A records on which the estimator and the two-model
    reference (model B) are both right or both wrong. The sample-level score is the estimator's
    entropy minus the target's, as in the two-model test, for the canary AUROC.
    """
    frame = target_frame(two_model, estimate.ids)
    names = {i: c for c, i in two_model.classes.items()}
    truth = np.array([names[i] for i in frame.label])
    correct_est = np.array([p is not None and p == t for p, t in zip(estimate.pred, truth, strict=True)])
    split = AttackedSplit(ids=estimate.ids, correct_target=frame.correct_target.to_numpy(),
                          confidence_target=-frame.entropy_target.to_numpy(),
                          correct_reference=correct_est, confidence_reference=estimate.confidence)
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
    return rows + canary_rows(test, split, canary, scores, cfg.pvalue_p, cfg.stats)


def target_frame(two_model: ImageTestResult, ids: list[str]) -> pd.DataFrame:
    """Returns the target's per-record outcomes on the attacked A records `ids`, in that order."""
    frame = two_model.records[two_model.records.split == "A"].set_index("id")
    missing = [i for i in ids if i not in frame.index]
    if missing:
        raise ValueError(f"the estimator predicted {len(missing)} records the target did not attack, "
                         f"e.g. {missing[:5]}; predict exactly the attacked A records")
    return frame.loc[ids]
