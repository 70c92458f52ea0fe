"""Training hyperparameters as plain data a preset fills in: the shared TrainConfig, and the base of a recipe's own.

`TrainConfig` holds what every recipe trains with (the backbone of the image recipes, the schedule, the optimizer,
the Trainer's devices). Everything only some recipes read (a projector's widths, a loss's temperature, the CLIP
architecture, the crop scale of the views) sits in the recipe's own `Config`, a `RecipeConfig` subclass declared
beside the recipe: a preset sets it under `train_by_recipe.<recipe>`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from bench.recipes.backbones import BACKBONES
from bench.rules import at_least, check_fields, finite, one_of, ordered_pair, rule
from dejavu.config import section_from

OPTIMIZERS = ("adamw", "sgd", "lars")
#: Lightning's precision names (lightning.fabric.connector), the long and the short spellings
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", "32", "16", "bf16", "64")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu")


def _devices(value) -> bool:
    if isinstance(value, int):
        return value >= 1 or value == -1
    return value == "auto" or all(part.strip().isdigit() for part in str(value).split(","))


def _batch_limit(value) -> bool:
    return value >= 1 if isinstance(value, int) else 0 < value <= 1


class _Checked:
    """What both configs do: check every field's rule on construction, and go to and from JSON-safe data."""

    def __post_init__(self):
        check_fields(self)

    def as_dict(self) -> dict:
        """Returns the config as JSON-safe primitives (tuples become lists), for checkpoints and cache keys."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict):
        """Returns the config stored by `as_dict`, read by the preset loader's typed reading (tuples come back)."""
        return section_from(cls, dict(data), cls.__name__)


@dataclass(frozen=True)
class TrainConfig(_Checked):
    """How every recipe trains; `epochs` seeds `TrainingPlan.max_epochs`, which training then obeys.

    Every field's allowed values sit in its metadata (bench.rules), checked on construction and by
    the preset loader as it reads each value.
    """

    # the image network of the image recipes (CLIP's architecture is its own `model`)
    backbone: str = field(default="small-cnn", metadata=one_of(BACKBONES))
    image_size: int = field(default=32, metadata=at_least(8))
    epochs: int = field(default=10, metadata=at_least(1))
    # per device; batch norm needs two samples to normalize over
    batch_size: int = field(default=64, metadata=at_least(2))
    optimizer: str = field(default="adamw", metadata=one_of(OPTIMIZERS))  # lars: lightly's LARS, the SSL papers'
    lr: float = field(default=1e-3, metadata=finite(0, strictly=True))
    weight_decay: float = field(default=1e-4, metadata=finite(0))
    warmup_epochs: int = field(default=0, metadata=at_least(0))
    num_workers: int = field(default=0, metadata=at_least(0))
    batched_views: bool = True  # views made per batch from decoded images (bench.recipes.views) when sizes agree
    precision: str = field(default="32-true", metadata=one_of(PRECISIONS))
    accelerator: str = field(default="auto", metadata=one_of(ACCELERATORS))
    devices: int | str = field(default="auto", metadata=rule(_devices, "'auto', a count >= 1, -1, or a list like '0,1'"))
    # Lightning's knob; tests use it to keep epochs short
    limit_train_batches: int | float = field(default=1.0, metadata=rule(_batch_limit, "a count >= 1 or a fraction in (0, 1]"))
    log_every_n_steps: int = field(default=10, metadata=at_least(1))


@dataclass(frozen=True)
class RecipeConfig(_Checked):
    """The base of a recipe's own hyperparameters: the crop scale every recipe's training views draw from.

    A recipe subclasses it as its `Config`, with its published defaults and the rules of bench.rules in the
    field metadata; the preset loader reads `train_by_recipe.<recipe>.<field>` against it.
    """

    # RandomResizedCrop bounds of the training views, before mitigations (the `crop` mitigation lowers them)
    crop_scale: tuple[float, float] = field(default=(0.2, 1.0), metadata=ordered_pair(0, 1, open_low=True))

    @classmethod
    def field_names(cls) -> list[str]:
        """Returns the names of the recipe's own fields, as a preset may set them."""
        return [f.name for f in fields(cls)]
