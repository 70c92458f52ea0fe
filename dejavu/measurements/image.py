"""The image tests (SPEC sections 2-4): from a background crop, does the target name the foreground?

The two-model test compares the target with a reference trained on B; the one-model tests compare
it with a correlation estimator fit on B's crops (naive Bayes over background tags, or a crop
classifier). They share the background crops and the target's attack on A, computed once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from dejavu.attacks.common import atomic_path, excluded_rows
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
    CropClassifierConfig,
    FittedEstimator,
    NaiveBayesConfig,
    crop_classifier_estimator,
    naive_bayes_estimator,
    null_split,
    one_model_rows,
)
from dejavu.crops import CropResult
from dejavu.measurements.base import MeasureContext, MeasurementTest
from dejavu.records import RecordSet
from dejavu.results import Row

log = logging.getLogger(__name__)


def attack_crops(ctx: MeasureContext) -> CropResult:
    """Returns the background crops of A and B (shared by every image test)."""
    def compute() -> CropResult:
        crops = ctx.cfg.crops.crops([r for r in ctx.records if r.split in ("A", "B")])
        log.info("%s", crops)
        return crops
    return ctx.shared("crops", compute)


def attack_settings(ctx: MeasureContext) -> ImageTestConfig:
    """Returns the settings of the target's attack: the two-model test's, which every image test reuses."""
    return ctx.cfg.settings_of(ImageTwoModelTest)


def target_attack(ctx: MeasureContext) -> ImageTestResult:
    """Returns the target's attack on A: with the reference's when the two-model test runs, alone otherwise."""
    def compute() -> ImageTestResult:
        models, crops, cfg = ctx.models, attack_crops(ctx), attack_settings(ctx)
        if ctx.wants(IMAGE_TEST) and models.reference is not None:
            return image_two_model(models.target, models.reference, ctx.records, crops, cfg, **ctx.embed_options)
        return image_target_only(models.target, ctx.records, crops, cfg, **ctx.embed_options)
    return ctx.shared("image", compute)


class ImageTwoModelTest(MeasurementTest):
    """The target against a reference trained on B (SPEC sections 2-3)."""

    name = IMAGE_TEST
    needs_reference = True
    Config = ImageTestConfig

    def run(self, ctx: MeasureContext) -> list[Row]:
        crops, image = attack_crops(ctx), target_attack(ctx)
        if ctx.report_dir is not None:
            write_image_report(image, ctx.records, crops, Path(ctx.report_dir))
        return excluded_rows(self.name, crops.excluded) + image.rows


def write_image_report(image: ImageTestResult, records: RecordSet, crops: CropResult, report_dir: Path) -> None:
    """Writes the per-record outcomes (class names, ids kept) and the memorized grid into `report_dir`."""
    with atomic_path(report_dir / "image_records.csv") as tmp:
        image.named_records().to_csv(tmp, index=False)
    write_memorized_grid(image, records, crops, report_dir / "memorized.png")


def eval_attack(ctx: MeasureContext, classes: dict[str, int]) -> tuple[LabelAttack, CropResult] | None:
    """Returns the target's vote on the eval records' background crops, and the crops: the one-model null.

    None, with a warning, when no eval record has a labelled background crop.
    """
    def compute() -> tuple[LabelAttack, CropResult] | None:
        evaluation = [r for r in ctx.records if r.split == "eval" and r.label is not None]
        crops = ctx.cfg.crops.crops(evaluation)
        if not crops.crops:
            log.warning("no eval record has a background crop, so the one-model image tests have no null; their "
                        "gaps mix memorization with the estimator's different predictive power")
            return None
        labelled = RecordSet([r for r in ctx.records if r.split != "eval" or r.label is not None])
        return attack_split(ctx.models.target, labelled, crops, "eval", classes, attack_settings(ctx),
                            **ctx.embed_options), crops
    return ctx.shared("eval-attack", compute)


class OneModelImageTest(MeasurementTest):
    """The target against a correlation estimator fit on B's crops (SPEC section 4), with its eval null.

    Its Config holds the estimator's settings; the target's attack is the two-model test's (`reads`).
    """

    reads = (IMAGE_TEST,)
    fit: ClassVar[Callable[[RecordSet, CropResult, Any], FittedEstimator]]

    def run(self, ctx: MeasureContext) -> list[Row]:
        crops, image = attack_crops(ctx), target_attack(ctx)
        ids = image.records[image.records.split == "A"].id.tolist()
        target_on_eval = eval_attack(ctx, image.classes)
        estimator = type(self).fit(ctx.records, crops, self.settings(ctx))
        estimate = estimator.predict(ctx.records, crops, ids)
        rows = excluded_rows(self.name, crops.excluded)
        null = None
        if target_on_eval is not None:
            vote, eval_crops = target_on_eval
            null = null_split(vote, ctx.records, estimator.predict(ctx.records, eval_crops, vote.ids))
            rows += excluded_rows(self.name, eval_crops.excluded, prefix="null_")
        return rows + one_model_rows(self.name, image, estimate, attack_settings(ctx), null)


class NaiveBayesTest(OneModelImageTest):
    """The estimator: naive Bayes over the crop's background tags."""

    name = NB_TEST
    Config = NaiveBayesConfig
    fit = staticmethod(naive_bayes_estimator)


class CropClassifierTest(OneModelImageTest):
    """The estimator: a small classifier trained on B's crops."""

    name = CROP_TEST
    Config = CropClassifierConfig
    fit = staticmethod(crop_classifier_estimator)
