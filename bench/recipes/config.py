"""TrainConfig: the hyperparameters a recipe trains with, as plain data a preset fills in."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

#: Projector widths per recipe, hidden layers first and the output last (the published sizes).
PUBLISHED_PROJECTORS: dict[str, tuple[int, ...]] = {
    "vicreg": (8192, 8192, 8192),  # Bardes et al. 2022
    "simclr": (2048, 128),  # Chen et al. 2020
    "barlowtwins": (8192, 8192, 8192),  # Zbontar et al. 2021
    "byol": (4096, 256),  # Grill et al. 2020; the predictor mirrors it
    "supervised": (512, 128),  # ours: an MLP before the classifier, so `guillotine` has layers to cut
}


@dataclass(frozen=True)
class TrainConfig:
    """How a recipe trains; `epochs` seeds `TrainingPlan.max_epochs`, which training then obeys."""

    backbone: str = "small-cnn"
    image_size: int = 32
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"  # "adamw", "sgd" or "lars" (lightly's LARS, the SSL papers' choice)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 0
    crop_scale: tuple[float, float] = (0.2, 1.0)  # RandomResizedCrop bounds of image recipes, before mitigations
    clip_crop_scale: tuple[float, float] = (0.9, 1.0)  # the same for CLIP (open_clip's default)
    projector: dict[str, tuple[int, ...]] = field(default_factory=lambda: dict(PUBLISHED_PROJECTORS))
    # keyword arguments of the recipe's lightly view transform, e.g. {"cj_strength": 0.5, "gaussian_blur": 0.0},
    # the settings lightly's own benchmarks use for 32 px images (CIFAR-10); empty: lightly's ImageNet defaults
    view_kwargs: dict[str, float] = field(default_factory=dict)
    temperature: float = 0.1  # SimCLR's NT-Xent temperature
    vicreg_invariance: float = 25.0  # VICReg's lambda (the invariance weight the original sweeps)
    barlow_lambda: float = 5e-3
    byol_momentum: tuple[float, float] = (0.99, 1.0)  # cosine schedule of the target network's EMA
    clip_model: str = "tiny"  # "tiny" (a CPU-sized custom config) or an open_clip architecture name
    num_workers: int = 0
    batched_views: bool = True  # views made per batch from decoded images (bench.recipes.views) when sizes agree
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: int | str = "auto"
    limit_train_batches: int | float = 1.0  # Lightning's knob; tests use it to keep epochs short
    log_every_n_steps: int = 10

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
