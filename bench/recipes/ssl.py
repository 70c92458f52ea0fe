"""Joint-embedding SSL recipes (VICReg, SimCLR, Barlow Twins, BYOL) from lightly's parts.

Each recipe is backbone -> lightly projection head -> lightly loss over two views made by lightly's
view transforms, and declares its own hyperparameters (projector widths, the loss's weight) as a
`Config` with the published defaults. The crop scale of the views is the plan's `crop_scale` (the
`crop` mitigation's knob): lightly's transforms take its lower bound as `min_scale` and fix the upper
one at 1.0, so the full bounds are then set on their RandomResizedCrop.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from lightly.loss import BarlowTwinsLoss, NegativeCosineSimilarity, NTXentLoss, VICRegLoss
from lightly.models.modules.heads import (
    BarlowTwinsProjectionHead,
    BYOLPredictionHead,
    BYOLProjectionHead,
    SimCLRProjectionHead,
    VICRegProjectionHead,
)
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
    SimCLRTransform,
    VICRegTransform,
)
from lightly.transforms.multi_view_transform import MultiViewTransform
from lightly.utils.scheduler import cosine_schedule
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import v2 as T2

from bench.recipes.backbones import build_backbone
from bench.recipes.base import RecipeModule, hidden_outputs
from bench.recipes.config import RecipeConfig
from bench.rules import at_least, each, finite, ordered_pair


def with_crop_scale(views: MultiViewTransform, scale: tuple[float, float]) -> MultiViewTransform:
    """Returns `views` with every RandomResizedCrop drawing its area fraction from `scale`."""
    crops = [t for view in views.transforms for t in view.transform.transforms
             if isinstance(t, T.RandomResizedCrop | T2.RandomResizedCrop)]
    if len(crops) != len(views.transforms):
        raise TypeError("expected one RandomResizedCrop per view in lightly's transform; "
                        "the crop scale cannot be applied")
    for crop in crops:
        crop.scale = tuple(scale)
    return views


def _check_dims(recipe: str, dims: tuple[int, ...], n_layers: int | None, equal_hidden: bool) -> None:
    if n_layers is not None and len(dims) != n_layers:
        raise ValueError(f"{recipe} projector needs {n_layers} widths (hidden..., output), got {list(dims)}")
    if len(dims) < 2:
        raise ValueError(f"{recipe} projector needs at least one hidden and one output width, got {list(dims)}")
    if equal_hidden and len(set(dims[:-1])) != 1:
        raise ValueError(f"{recipe} projector hidden layers must share one width, got {list(dims)}")


def widths(default: tuple[int, ...]):
    """Returns a projector-widths field (hidden layers, then the output) with the published `default`."""
    return field(default=default, metadata=each(at_least(1)))


@dataclass(frozen=True)
class SSLConfig(RecipeConfig):
    """What every joint-embedding recipe has: projector widths and the settings of lightly's view transform."""

    projector: tuple[int, ...] = widths((2048, 128))
    # keyword arguments of the recipe's lightly view transform, e.g. {"cj_strength": 0.5, "gaussian_blur": 0.0},
    # the settings lightly's own benchmarks use for 32 px images (CIFAR-10); empty: lightly's ImageNet defaults
    view_kwargs: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class VICRegConfig(SSLConfig):
    projector: tuple[int, ...] = widths((8192, 8192, 8192))  # Bardes et al. 2022
    # lambda, the invariance weight the original sweeps
    invariance: float = field(default=25.0, metadata=finite(0))


@dataclass(frozen=True)
class SimCLRConfig(SSLConfig):
    projector: tuple[int, ...] = widths((2048, 128))  # Chen et al. 2020
    temperature: float = field(default=0.1, metadata=finite(0, strictly=True))  # of the NT-Xent loss


@dataclass(frozen=True)
class BarlowTwinsConfig(SSLConfig):
    projector: tuple[int, ...] = widths((8192, 8192, 8192))  # Zbontar et al. 2021
    # lambda, the weight of the off-diagonal (redundancy-reduction) term
    lambda_param: float = field(default=5e-3, metadata=finite(0))


@dataclass(frozen=True)
class BYOLConfig(SSLConfig):
    projector: tuple[int, ...] = widths((4096, 256))  # Grill et al. 2020; the predictor mirrors it
    # the cosine schedule of the target network's EMA, from start to end
    momentum: tuple[float, float] = field(default=(0.99, 1.0), metadata=ordered_pair(0, 1))


class SSLModule(RecipeModule):
    """Two views, one shared backbone and projector, and a loss between the two projections."""

    Config = SSLConfig

    def __init__(self, cfg: dict, recipe_cfg: dict | None = None):
        super().__init__(cfg, recipe_cfg)
        self.backbone, feature_dim = build_backbone(self.cfg.backbone, self.cfg.image_size)
        self.projector = self.build_projector(feature_dim, tuple(self.recipe_cfg.projector))
        self.criterion = self.build_criterion()

    def build_projector(self, feature_dim: int, dims: tuple[int, ...]) -> nn.Module:
        """Returns the recipe's lightly projection head."""
        raise NotImplementedError

    def build_criterion(self) -> nn.Module:
        """Returns the recipe's lightly loss."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the projector output, the default measurement embedding."""
        return self.projector(self.backbone(x))

    def training_step(self, batch, batch_idx):
        (x0, x1), _ = batch
        loss = self.criterion(self(x0), self(x1))
        self.log("train_loss", loss, prog_bar=True, batch_size=x0.shape[0])
        return loss

    def embedding_layers(self) -> list[str]:
        return ["projector", *hidden_outputs(self.projector, "projector"), "backbone"]


class VICReg(SSLModule):
    """VICReg (Bardes, Ponce, LeCun 2022): variance-invariance-covariance regularization."""

    name = "vicreg"
    Config = VICRegConfig

    def build_projector(self, feature_dim, dims):
        _check_dims(self.name, dims, None, equal_hidden=True)
        return VICRegProjectionHead(feature_dim, dims[0], dims[-1], num_layers=len(dims))

    def build_criterion(self):
        return VICRegLoss(lambda_param=self.recipe_cfg.invariance)

    def train_transform(self) -> Callable:
        views = VICRegTransform(input_size=self.cfg.image_size, min_scale=self.crop_scale[0], **self.recipe_cfg.view_kwargs)
        return with_crop_scale(views, self.crop_scale)


class SimCLR(SSLModule):
    """SimCLR (Chen et al. 2020): NT-Xent contrastive loss between the two views."""

    name = "simclr"
    Config = SimCLRConfig

    def build_projector(self, feature_dim, dims):
        _check_dims(self.name, dims, None, equal_hidden=True)
        return SimCLRProjectionHead(feature_dim, dims[0], dims[-1], num_layers=len(dims))

    def build_criterion(self):
        return NTXentLoss(temperature=self.recipe_cfg.temperature)

    def train_transform(self) -> Callable:
        views = SimCLRTransform(input_size=self.cfg.image_size, min_scale=self.crop_scale[0], **self.recipe_cfg.view_kwargs)
        return with_crop_scale(views, self.crop_scale)


class BarlowTwins(SSLModule):
    """Barlow Twins (Zbontar et al. 2021): the cross-correlation of the views pushed to identity."""

    name = "barlowtwins"
    Config = BarlowTwinsConfig

    def build_projector(self, feature_dim, dims):
        _check_dims(self.name, dims, 3, equal_hidden=True)
        return BarlowTwinsProjectionHead(feature_dim, dims[0], dims[-1])

    def build_criterion(self):
        return BarlowTwinsLoss(lambda_param=self.recipe_cfg.lambda_param)

    def train_transform(self) -> Callable:
        # lightly's Barlow Twins example uses the BYOL views, as the paper does
        return _byol_views(self.cfg.image_size, self.crop_scale, self.recipe_cfg.view_kwargs)


def _byol_views(image_size: int, crop_scale: tuple[float, float], view_kwargs: dict) -> MultiViewTransform:
    views = BYOLTransform(BYOLView1Transform(input_size=image_size, min_scale=crop_scale[0], **view_kwargs),
                          BYOLView2Transform(input_size=image_size, min_scale=crop_scale[0], **view_kwargs))
    return with_crop_scale(views, crop_scale)


class BYOL(SSLModule):
    """BYOL (Grill et al. 2020): an online predictor regresses a momentum target's projection."""

    name = "byol"
    Config = BYOLConfig

    def __init__(self, cfg: dict, recipe_cfg: dict | None = None):
        super().__init__(cfg, recipe_cfg)
        hidden, out = self.recipe_cfg.projector
        self.predictor = BYOLPredictionHead(out, hidden, out)
        self.target_backbone = copy.deepcopy(self.backbone)
        self.target_projector = copy.deepcopy(self.projector)
        deactivate_requires_grad(self.target_backbone)
        deactivate_requires_grad(self.target_projector)

    def build_projector(self, feature_dim, dims):
        _check_dims(self.name, dims, 2, equal_hidden=False)
        return BYOLProjectionHead(feature_dim, dims[0], dims[1])

    def build_criterion(self):
        return NegativeCosineSimilarity()

    def train_transform(self) -> Callable:
        return _byol_views(self.cfg.image_size, self.crop_scale, self.recipe_cfg.view_kwargs)

    def _target(self, x: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.target_backbone(x)).detach()

    def on_train_start(self) -> None:
        self.total_steps = max(1, int(self.trainer.estimated_stepping_batches))

    def training_step(self, batch, batch_idx):
        start, end = self.recipe_cfg.momentum
        momentum = cosine_schedule(self.global_step, self.total_steps, start, end)
        update_momentum(self.backbone, self.target_backbone, m=momentum)
        update_momentum(self.projector, self.target_projector, m=momentum)
        (x0, x1), _ = batch
        p0, p1 = self.predictor(self(x0)), self.predictor(self(x1))
        loss = 0.5 * (self.criterion(p0, self._target(x1)) + self.criterion(p1, self._target(x0)))
        self.log("train_loss", loss, prog_bar=True, batch_size=x0.shape[0])
        return loss
