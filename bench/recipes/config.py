"""TrainConfig: the hyperparameters a recipe trains with, as plain data a preset fills in."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from bench.recipes.backbones import BACKBONES
from bench.rules import at_least, check_fields, finite, one_of, ordered_pair, rule

#: Projector widths per recipe, hidden layers first and the output last (the published sizes).
PUBLISHED_PROJECTORS: dict[str, tuple[int, ...]] = {
    "vicreg": (8192, 8192, 8192),  # Bardes et al. 2022
    "simclr": (2048, 128),  # Chen et al. 2020
    "barlowtwins": (8192, 8192, 8192),  # Zbontar et al. 2021
    "byol": (4096, 256),  # Grill et al. 2020; the predictor mirrors it
    "supervised": (512, 128),  # ours: an MLP before the classifier, so `guillotine` has layers to cut
}


OPTIMIZERS = ("adamw", "sgd", "lars")
#: Lightning's precision names (lightning.fabric.connector), the long and the short spellings
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", "32", "16", "bf16", "64")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu")


def _known_clip_model(name: str) -> bool:
    import open_clip

    return name == "tiny" or open_clip.get_model_config(name) is not None


def _devices(value) -> bool:
    if isinstance(value, int):
        return value >= 1 or value == -1
    return value == "auto" or all(part.strip().isdigit() for part in str(value).split(","))


def _batch_limit(value) -> bool:
    return value >= 1 if isinstance(value, int) else 0 < value <= 1


def _projector(value) -> bool:
    return all(len(dims) > 0 and all(isinstance(d, int) and d >= 1 for d in dims) for dims in value.values())


@dataclass(frozen=True)
class TrainConfig:
    """How a recipe trains; `epochs` seeds `TrainingPlan.max_epochs`, which training then obeys.

    Every field's allowed values sit in its metadata (bench.rules), checked on construction and by
    the preset loader as it reads each value.
    """

    backbone: str = field(default="small-cnn", metadata=one_of(BACKBONES))
    image_size: int = field(default=32, metadata=at_least(8))
    epochs: int = field(default=10, metadata=at_least(1))
    # per device; batch norm needs two samples to normalize over
    batch_size: int = field(default=64, metadata=at_least(2))
    optimizer: str = field(default="adamw", metadata=one_of(OPTIMIZERS))  # lars: lightly's LARS, the SSL papers'
    lr: float = field(default=1e-3, metadata=finite(0, strictly=True))
    weight_decay: float = field(default=1e-4, metadata=finite(0))
    warmup_epochs: int = field(default=0, metadata=at_least(0))
    # RandomResizedCrop bounds of image recipes, before mitigations
    crop_scale: tuple[float, float] = field(default=(0.2, 1.0), metadata=ordered_pair(0, 1, open_low=True))
    # the same for CLIP (open_clip's default)
    clip_crop_scale: tuple[float, float] = field(default=(0.9, 1.0), metadata=ordered_pair(0, 1, open_low=True))
    projector: dict[str, tuple[int, ...]] = field(
        default_factory=lambda: dict(PUBLISHED_PROJECTORS),
        metadata=rule(_projector, "a map of recipe to a non-empty list of widths >= 1"))
    # keyword arguments of the recipe's lightly view transform, e.g. {"cj_strength": 0.5, "gaussian_blur": 0.0},
    # the settings lightly's own benchmarks use for 32 px images (CIFAR-10); empty: lightly's ImageNet defaults
    view_kwargs: dict[str, float] = field(default_factory=dict)
    temperature: float = field(default=0.1, metadata=finite(0, strictly=True))  # SimCLR's NT-Xent temperature
    # VICReg's lambda (the invariance weight the original sweeps)
    vicreg_invariance: float = field(default=25.0, metadata=finite(0))
    barlow_lambda: float = field(default=5e-3, metadata=finite(0))
    # cosine schedule of BYOL's target-network EMA
    byol_momentum: tuple[float, float] = field(default=(0.99, 1.0), metadata=ordered_pair(0, 1))
    # "tiny" (a CPU-sized custom config) or an open_clip architecture name
    clip_model: str = field(default="tiny", metadata=rule(_known_clip_model, "'tiny' or an open_clip architecture"))
    num_workers: int = field(default=0, metadata=at_least(0))
    batched_views: bool = True  # views made per batch from decoded images (bench.recipes.views) when sizes agree
    precision: str = field(default="32-true", metadata=one_of(PRECISIONS))
    accelerator: str = field(default="auto", metadata=one_of(ACCELERATORS))
    devices: int | str = field(default="auto", metadata=rule(_devices, "'auto', a count >= 1, -1, or a list like '0,1'"))
    # Lightning's knob; tests use it to keep epochs short
    limit_train_batches: int | float = field(default=1.0, metadata=rule(_batch_limit, "a count >= 1 or a fraction in (0, 1]"))
    log_every_n_steps: int = field(default=10, metadata=at_least(1))

    def __post_init__(self):
        check_fields(self)

    def projector_dims(self, recipe: str) -> tuple[int, ...]:
        """Returns the projector widths configured for `recipe` (hidden layers, then output)."""
        if recipe not in self.projector:
            raise KeyError(f"no projector dims for recipe {recipe!r} in the train config; "
                           f"configured: {', '.join(sorted(self.projector))}")
        return tuple(self.projector[recipe])

    def as_dict(self) -> dict:
        """Returns the config as JSON-safe primitives (tuples become lists), for checkpoints."""
        out = asdict(self)
        out["crop_scale"] = list(self.crop_scale)
        out["clip_crop_scale"] = list(self.clip_crop_scale)
        out["byol_momentum"] = list(self.byol_momentum)
        out["projector"] = {k: list(v) for k, v in self.projector.items()}
        out["view_kwargs"] = dict(self.view_kwargs)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Returns the config stored by `as_dict` (lists become tuples again)."""
        data = dict(data)
        for key in ("crop_scale", "clip_crop_scale", "byol_momentum"):
            if key in data:
                data[key] = tuple(data[key])
        if "projector" in data:
            data["projector"] = {k: tuple(v) for k, v in data["projector"].items()}
        return cls(**data)
