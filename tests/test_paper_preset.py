"""The `paper` preset (issue 10): every recipe builds at the published sizes and takes one training step, so
that a GPU user does not meet a configuration error after waiting in the queue.

Only the data is tiny (8 images of 64 px, a batch of 4, one step); the networks, optimizers (LARS, AdamW,
SGD), precision (bf16-mixed) and data workers are the preset's own. 64 px still takes ResNet-50's ImageNet
stem, as the preset's 96 px does. Slow: ResNet-50 with 8192-wide projectors and ViT-B-32 take one CPU step
each.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.preflight import check_recipe, check_schedule
from bench.presets import load_preset
from bench.recipes import RECIPES
from bench.recipes.train import DONE, train_model
from bench.run import training_plan
from dejavu.measure import MeasureConfig
from dejavu.records import Box, Record, RecordSet

pytestmark = pytest.mark.slow

TINY = ["train.epochs=1", "train.warmup_epochs=1", "train.batch_size=4", "train.limit_train_batches=1",
        "train.image_size=64", "train.accelerator=cpu", "train.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> RecordSet:
    """Returns 8 captioned, boxed records of two classes at the paper preset's image size."""
    size = load_preset("paper", TINY).train.image_size
    root = tmp_path_factory.mktemp("paper-images")
    rng = np.random.default_rng(0)
    out = []
    for i in range(8):
        label = ("dog", "cat")[i % 2]
        path = root / f"p{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        out.append(Record(f"p{i}", path, size, size, label=label, boxes=(Box(0, 0, size / 2, size / 2, label),),
                          caption=f"a photo of a {label}, IMG_{i:04d}", objects=(label,), split="A"))
    return RecordSet(out, name="paper")


def tiny(recipe: str) -> list[str]:
    """Returns TINY, with the recipe's own epoch settings (which win over train.*) made tiny as well."""
    own = load_preset("paper").train_by_recipe.get(recipe, {})
    return TINY + [f"train_by_recipe.{recipe}.{k}=1" for k in ("epochs", "warmup_epochs") if k in own]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_takes_a_step_under_the_paper_preset(recipe, records, tmp_path):
    preset = load_preset("paper", tiny(recipe))
    cfg, own = preset.train_config(recipe), preset.recipe_config(recipe)
    plan = training_plan(recipe, cfg, own)
    assert cfg.precision == "bf16-mixed" and cfg.num_workers == 8  # the preset's own, not the smoke ones
    assert plan.max_epochs == 1
    check_schedule(cfg, plan)
    check_recipe(recipe, cfg, own, plan, (records, records))
    settings = preset.measure_section(recipe).as_dict()
    assert MeasureConfig.from_dict(settings).as_dict() == settings

    model = train_model(plan, records, cfg, own, tmp_path, seed=0, progress=False)
    assert json.loads((tmp_path / DONE).read_text())["global_step"] == 1
    losses = pd.concat(pd.read_csv(f) for f in tmp_path.glob("logs/*/metrics.csv"))["train_loss"].dropna()
    assert len(losses) == 1 and math.isfinite(losses.iloc[0])
    pixels = model.encoder("projector").image_transform(records[0].load_image())[None]
    assert model.encoder("projector").embed_images(pixels).isfinite().all()
