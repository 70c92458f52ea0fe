"""Measure a model: every applicable déjà vu test and the utility numbers, as one tidy table.

This is the library's front door. It needs only Encoders and Records, so it measures a model
trained here, an off-the-shelf open_clip checkpoint, or any torch module alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dejavu.attacks.common import StatsConfig
from dejavu.attacks.image import ImageTestConfig
from dejavu.attacks.one_model import OneModelConfig
from dejavu.attacks.vlm import VLMTestConfig
from dejavu.knn import approximate_index
from dejavu.measurements import MeasureContext, Models, get_tests
from dejavu.records import RecordSet
from dejavu.results import TESTS, Row, to_frame
from dejavu.utility import SCENES_TEMPLATES

__all__ = ["MeasureConfig", "Models", "measure"]

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
    options: dict[str, dict] = field(default_factory=dict)  # test name -> its own settings (MeasurementTest.Config)

    @classmethod
    def from_dict(cls, d: dict) -> MeasureConfig:
        """Returns the config from a preset's flat `measure` section (unknown keys are an error)."""
        d = dict(d)
        stats = StatsConfig(n_bootstrap=d.pop("n_bootstrap", 200), n_permutations=d.pop("n_permutations", 1000),
                            seed=d.pop("seed", 0))
        pvalue_p = d.pop("pvalue_p", 0.2)
        image = ImageTestConfig(k=d.pop("k", 100), metric=d.pop("knn_metric", "l2"), stats=stats,
                                top_p=tuple(d.pop("top_p", (0.05, 0.2, 1.0))), pvalue_p=pvalue_p,
                                index=approximate_index(d.pop("knn_index", "exact"), d.pop("knn_index_params", {})))
        one = OneModelConfig(crop_epochs=d.pop("crop_epochs", 10), crop_image_size=d.pop("crop_image_size", 32),
                             crop_arch=d.pop("crop_arch", "small-cnn"), nb_smoothing=d.pop("nb_smoothing", "epsilon"),
                             nb_normalize=d.pop("nb_normalize", True), stats=stats, top_p=image.top_p,
                             pvalue_p=pvalue_p, seed=stats.seed)
        vlm = VLMTestConfig(k=d.pop("vlm_k", 10), index=d.pop("vlm_index", "t2i"),
                            top_t=tuple(d.pop("vlm_top_t", (1, 10))), stats=stats)
        out = cls(tests=tuple(d.pop("tests", TESTS)), crop_rule=d.pop("crop_rule", "slab"),
                  threshold_fraction=d.pop("threshold_fraction", None), image=image, one_model=one, vlm=vlm,
                  probe_epochs=d.pop("probe_epochs", 50), options=dict(d.pop("options", {})))
        if d:
            raise ValueError(f"unknown measure settings: {', '.join(sorted(d))}")
        return out


def measure(models: Models, records: RecordSet, cfg: MeasureConfig = MeasureConfig(), *,
            cache_dir: Path | None = None, progress: bool = True, report_dir: Path | None = None) -> pd.DataFrame:
    """Returns the rows (test, subset, metric, value, ci_low, ci_high, n) of every applicable test.

    The tests are the registered ones named in `cfg.tests` (dejavu.measurements), run in the
    registry's order; a test whose needs the models do not meet (a reference, a text tower) is
    skipped and logged. With `report_dir`, the image two-model test also writes its per-record
    outcomes (`image_records.csv`, one row per attacked record, ids kept) and the most memorized
    records as an image grid (`memorized.png`) there.
    """
    ctx = MeasureContext(models, records, cfg, cache_dir=cache_dir, progress=progress, report_dir=report_dir)
    rows: list[Row] = []
    for test in get_tests(cfg.tests):
        missing = test.missing(models)
        if missing:
            log.info("%s, so %s is skipped", missing, test.name)
            continue
        rows += test.run(ctx)
    return to_frame(rows)
