"""Utility: what the target is good for, beside what it memorizes (a linear probe; zero-shot for VLMs)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from dejavu.attacks.common import StatsConfig, excluded_rows
from dejavu.attacks.image import TEST as IMAGE_TEST
from dejavu.embed import embed_records
from dejavu.measurements.base import MeasureContext, MeasurementTest
from dejavu.measurements.image import attack_settings
from dejavu.metrics import Interval, bootstrap_indices, bootstrap_mean
from dejavu.records import RecordSet
from dejavu.results import Row
from dejavu.rules import at_least, check_fields, each, rule
from dejavu.utility import SCENES_TEMPLATES, linear_probe, zero_shot, zero_shot_classes


@dataclass(frozen=True)
class UtilityConfig:
    """The utility test's settings (`measure.utility`)."""

    probe_epochs: int = field(default=50, metadata=at_least(1))  # linear-probe training epochs
    zero_shot_templates: tuple[str, ...] = field(default=SCENES_TEMPLATES, metadata=each(rule(
        lambda t: isinstance(t, str) and "{}" in t, "a prompt with a {} for the class name")))

    def __post_init__(self):
        check_fields(self)


class UtilityTest(MeasurementTest):
    """The target's linear-probe top-1 (public -> eval) and, for VLMs, zero-shot top-1/top-5.

    Unlabelled public or eval records cannot train or score a classifier; they are counted in an
    `excluded_no-label` row. It embeds with the image attack's batch size and reports with the
    measurement's stats.
    """

    name = "utility"
    Config = UtilityConfig
    reads = (IMAGE_TEST,)  # the embedding batch size

    def run(self, ctx: MeasureContext) -> list[Row]:
        records, cfg, models = ctx.records, self.settings(ctx), ctx.models
        stats = ctx.cfg.stats
        train = RecordSet([r for r in records if r.split == "public" and r.label is not None], name="probe train")
        evaluation = RecordSet([r for r in records if r.split == "eval" and r.label is not None], name="eval")
        if len(train) == 0 or len(evaluation) == 0:
            raise ValueError(f"utility needs labelled public and eval records; got {len(train)} and "
                             f"{len(evaluation)}")
        unlabelled = sum(r.split in ("public", "eval") and r.label is None for r in records)
        rows = excluded_rows(self.name, Counter({"no-label": unlabelled} if unlabelled else {}))
        kw = dict(ctx.embed_options, batch_size=attack_settings(ctx).batch_size)
        x_train = embed_records(models.target, train, **kw)
        x_eval = embed_records(models.target, evaluation, **kw)
        probe = linear_probe(x_train.vectors, [r.label for r in train], x_eval.vectors,
                             [r.label for r in evaluation], epochs=cfg.probe_epochs, seed=stats.seed)
        rows.append(accuracy_interval(probe.top1, probe.correct, stats).row(self.name, "all", "linear_probe_top1"))
        if models.target_vlm is not None and models.target_vlm.supports_text:
            names, templates = zero_shot_classes([r.label for r in records if r.label is not None],
                                                 cfg.zero_shot_templates)
            z = embed_records(models.target_vlm, evaluation, **kw)
            zs = zero_shot(models.target_vlm, list(names.values()), templates, z.vectors,
                           [names[r.label] for r in evaluation], cache_dir=ctx.cache_dir)
            rows += [accuracy_interval(zs.top1, zs.correct_top1, stats).row(self.name, "all", "zero_shot_top1"),
                     accuracy_interval(zs.top5, zs.correct_top5, stats).row(self.name, "all", "zero_shot_top5")]
        return rows


def accuracy_interval(value: float, correct: np.ndarray, stats: StatsConfig) -> Interval:
    """Returns an accuracy with its 95% bootstrap interval over the eval items."""
    return bootstrap_mean(correct, bootstrap_indices(correct.size, stats.n_bootstrap, stats.seed), value)
