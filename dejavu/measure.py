"""Measure a model: every applicable déjà vu test and the utility numbers, as one tidy table.

This is the library's front door. It needs only Encoders and Records, so it measures a model
trained here, an off-the-shelf open_clip checkpoint, or any torch module alike.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dejavu.attacks.common import StatsConfig, atomic_path, excluded_rows
from dejavu.attacks.grid import write_memorized_grid
from dejavu.attacks.image import TEST as IMAGE_TEST
from dejavu.attacks.image import (
    ImageTestConfig,
    ImageTestResult,
    LabelAttack,
    attack_split,
    image_target_only,
    image_two_model,
)
from dejavu.attacks.one_model import (
    CROP_TEST,
    NB_TEST,
    OneModelConfig,
    crop_classifier_estimator,
    naive_bayes_estimator,
    null_split,
    one_model_rows,
)
from dejavu.attacks.vlm import VLMTestConfig, vlm_one_model_text, vlm_two_model
from dejavu.crops import CropResult, background_crops
from dejavu.embed import embed_records
from dejavu.encoders import Encoder
from dejavu.knn import approximate_index
from dejavu.metrics import Interval, bootstrap_indices, bootstrap_mean
from dejavu.records import RecordSet
from dejavu.results import TESTS, Row, to_frame
from dejavu.utility import SCENES_TEMPLATES, linear_probe, zero_shot, zero_shot_classes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeasureConfig:
    """Which tests run and how; the defaults follow the papers (SPEC sections 2-7)."""

    tests: tuple[str, ...] = TESTS
    crop_rule: str = "slab"
    threshold_fraction: float | None = None  # None: 100 px at a 375 px short side, scaled
    image: ImageTestConfig = field(default_factory=ImageTestConfig)
    one_model: OneModelConfig = field(default_factory=OneModelConfig)
    vlm: VLMTestConfig = field(default_factory=VLMTestConfig)
    probe_epochs: int = 50
    zero_shot_templates: tuple[str, ...] = SCENES_TEMPLATES

    @classmethod
    def from_dict(cls, d: dict) -> MeasureConfig:
        """Returns the config from a preset's flat `measure` section (unknown keys are an error)."""
        d = dict(d)
        stats = StatsConfig(n_bootstrap=d.pop("n_bootstrap", 200), n_permutations=d.pop("n_permutations", 1000),
                            seed=d.pop("seed", 0))
        image = ImageTestConfig(k=d.pop("k", 100), metric=d.pop("knn_metric", "l2"), stats=stats,
                                top_p=tuple(d.pop("top_p", (0.05, 0.2, 1.0))),
                                index=approximate_index(d.pop("knn_index", "exact"), d.pop("knn_index_params", {})))
        one = OneModelConfig(crop_epochs=d.pop("crop_epochs", 10), crop_image_size=d.pop("crop_image_size", 32),
                             stats=stats, top_p=image.top_p, seed=stats.seed)
        vlm = VLMTestConfig(k=d.pop("vlm_k", 10), index=d.pop("vlm_index", "t2i"), stats=stats)
        out = cls(tests=tuple(d.pop("tests", TESTS)), crop_rule=d.pop("crop_rule", "slab"),
                  threshold_fraction=d.pop("threshold_fraction", None), image=image, one_model=one, vlm=vlm,
                  probe_epochs=d.pop("probe_epochs", 50))
        if d:
            raise ValueError(f"unknown measure settings: {', '.join(sorted(d))}")
        return out


@dataclass(frozen=True)
class Models:
    """The encoders a measurement uses.

    `target`/`reference` embed images at the measured layer (the image test and the linear
    probe); `target_vlm`/`reference_vlm` are the same models at the joint image-text space (the
    caption test and zero-shot), None for image-only models. `reference` None: one-model tests only.
    """

    target: Encoder
    reference: Encoder | None = None
    target_vlm: Encoder | None = None
    reference_vlm: Encoder | None = None
    text_model: Encoder | None = None  # the text-only reference; loaded on demand when None


def measure(models: Models, records: RecordSet, cfg: MeasureConfig = MeasureConfig(), *,
            cache_dir: Path | None = None, progress: bool = True, report_dir: Path | None = None) -> pd.DataFrame:
    """Returns the rows (test, subset, metric, value, ci_low, ci_high, n) of every applicable test.

    With `report_dir`, the image two-model test also writes its per-record outcomes
    (`image_records.csv`, one row per attacked record, ids kept) and the most memorized records
    as an image grid (`memorized.png`) there.
    """
    unknown = set(cfg.tests) - set(TESTS)
    if unknown:
        raise ValueError(f"unknown tests {sorted(unknown)}; choose from {', '.join(TESTS)}")
    kw = dict(cache_dir=cache_dir, progress=progress)
    rows = image_rows(models, records, cfg, report_dir=report_dir, **kw) + vlm_rows(models, records, cfg, **kw)
    if "utility" in cfg.tests:
        rows += utility_rows(models, records, cfg, **kw)
    return to_frame(rows)


def image_rows(models: Models, records: RecordSet, cfg: MeasureConfig, *, cache_dir: Path | None, progress: bool,
               report_dir: Path | None) -> list[Row]:
    """Returns the rows of the requested image tests; the two-model one runs only with a reference model."""
    two_model = "image-two-model" in cfg.tests and models.reference is not None
    if "image-two-model" in cfg.tests and not two_model:
        log.info("no reference model: the image two-model test is skipped")
    one_model_tests = [t for t in (NB_TEST, CROP_TEST) if t in cfg.tests]
    if not two_model and not one_model_tests:
        return []
    crops = background_crops([r for r in records if r.split in ("A", "B")], cfg.crop_rule,
                             threshold_fraction=cfg.threshold_fraction)
    log.info("%s", crops)
    kw = dict(cache_dir=cache_dir, progress=progress)
    rows: list[Row] = []
    if two_model:
        image = image_two_model(models.target, models.reference, records, crops, cfg.image, **kw)
        rows += excluded_rows(IMAGE_TEST, crops.excluded) + image.rows
        if report_dir is not None:
            write_image_report(image, records, crops, Path(report_dir))
    else:
        image = image_target_only(models.target, records, crops, cfg.image, **kw)
    ids = image.records[image.records.split == "A"].id.tolist()
    target_on_eval = eval_attack(models.target, records, image.classes, cfg, **kw) if one_model_tests else None
    fitters = {NB_TEST: naive_bayes_estimator, CROP_TEST: crop_classifier_estimator}
    for test in one_model_tests:
        estimator = fitters[test](records, crops, cfg.one_model)
        estimate = estimator.predict(records, crops, ids)
        null = None
        rows += excluded_rows(test, crops.excluded)
        if target_on_eval is not None:
            vote, eval_crops = target_on_eval
            null = null_split(vote, records, estimator.predict(records, eval_crops, vote.ids))
            rows += excluded_rows(test, eval_crops.excluded, prefix="null_")
        rows += one_model_rows(test, image, estimate, cfg.one_model, null)
    return rows


def eval_attack(target: Encoder, records: RecordSet, classes: dict[str, int], cfg: MeasureConfig, *,
                cache_dir: Path | None, progress: bool) -> tuple[LabelAttack, CropResult] | None:
    """Returns the target's vote on the eval records' background crops, and the crops: the one-model null.

    None, with a warning, when no eval record has a labelled background crop.
    """
    evaluation = [r for r in records if r.split == "eval" and r.label is not None]
    crops = background_crops(evaluation, cfg.crop_rule, threshold_fraction=cfg.threshold_fraction)
    if not crops.crops:
        log.warning("no eval record has a background crop, so the one-model image tests have no null; their "
                    "gaps mix memorization with the estimator's different predictive power")
        return None
    labelled = RecordSet([r for r in records if r.split != "eval" or r.label is not None])
    return attack_split(target, labelled, crops, "eval", classes, cfg.image, cache_dir=cache_dir,
                        progress=progress), crops


def write_image_report(image: ImageTestResult, records: RecordSet, crops: CropResult, report_dir: Path) -> None:
    """Writes the per-record outcomes (class names, ids kept) and the memorized grid into `report_dir`."""
    with atomic_path(report_dir / "image_records.csv") as tmp:
        image.named_records().to_csv(tmp, index=False)
    write_memorized_grid(image, records, crops, report_dir / "memorized.png")


def vlm_rows(models: Models, records: RecordSet, cfg: MeasureConfig, *, cache_dir: Path | None,
             progress: bool) -> list[Row]:
    """Returns the rows of the requested caption tests; they need the models' image-text space."""
    wanted = [t for t in ("vlm-two-model", "vlm-one-model-text") if t in cfg.tests]
    if wanted and models.target_vlm is None:
        log.info("the target has no text tower: the caption tests %s are skipped", wanted)
        return []
    kw = dict(cache_dir=cache_dir, progress=progress)
    rows: list[Row] = []
    if "vlm-two-model" in wanted:
        if models.reference_vlm is None:
            log.info("no reference vision-language model: the caption two-model test is skipped")
        else:
            rows += vlm_two_model(models.target_vlm, models.reference_vlm, records, cfg.vlm, **kw)
    if "vlm-one-model-text" in wanted:
        text_model = models.text_model
        if text_model is None:
            from dejavu.references import SentenceTextEncoder  # loads sentence-transformers only when needed

            text_model = SentenceTextEncoder()
        rows += vlm_one_model_text(models.target_vlm, text_model, records, cfg.vlm, **kw)
    return rows


def utility_rows(models: Models, records: RecordSet, cfg: MeasureConfig, *, cache_dir: Path | None,
                 progress: bool) -> list[Row]:
    """Returns the target's linear-probe top-1 (public -> eval) and, for VLMs, zero-shot top-1/top-5.

    Unlabelled public or eval records cannot train or score a classifier; they are counted in an
    `excluded_no-label` row.
    """
    train = RecordSet([r for r in records if r.split == "public" and r.label is not None], name="probe train")
    evaluation = RecordSet([r for r in records if r.split == "eval" and r.label is not None], name="eval")
    if len(train) == 0 or len(evaluation) == 0:
        raise ValueError(f"utility needs labelled public and eval records; got {len(train)} and {len(evaluation)}")
    unlabelled = sum(r.split in ("public", "eval") and r.label is None for r in records)
    rows = excluded_rows("utility", Counter({"no-label": unlabelled} if unlabelled else {}))
    kw = dict(cache_dir=cache_dir, batch_size=cfg.image.batch_size, progress=progress)
    x_train = embed_records(models.target, train, **kw)
    x_eval = embed_records(models.target, evaluation, **kw)
    probe = linear_probe(x_train.vectors, [r.label for r in train], x_eval.vectors,
                         [r.label for r in evaluation], epochs=cfg.probe_epochs, seed=cfg.image.stats.seed)
    stats = cfg.image.stats
    rows.append(accuracy_interval(probe.top1, probe.correct, stats).row("utility", "all", "linear_probe_top1"))
    if models.target_vlm is not None and hasattr(models.target_vlm, "tokenizer"):
        names, templates = zero_shot_classes([r.label for r in records if r.label is not None],
                                             cfg.zero_shot_templates)
        z = embed_records(models.target_vlm, evaluation, **kw)
        zs = zero_shot(models.target_vlm, list(names.values()), templates, z.vectors,
                       [names[r.label] for r in evaluation])
        rows += [accuracy_interval(zs.top1, zs.correct_top1, stats).row("utility", "all", "zero_shot_top1"),
                 accuracy_interval(zs.top5, zs.correct_top5, stats).row("utility", "all", "zero_shot_top5")]
    return rows


def accuracy_interval(value: float, correct: np.ndarray, stats: StatsConfig) -> Interval:
    """Returns an accuracy with its 95% bootstrap interval over the eval items."""
    return bootstrap_mean(correct, bootstrap_indices(correct.size, stats.n_bootstrap, stats.seed), value)
