"""The recipe seam: a LightningModule that knows its training views and its embedding layers.

A recipe is rebuilt from plain hyperparameters (the shared TrainConfig as a dict, the recipe's own
`Config` as a dict, and for some recipes the class names or the CLIP config), so a checkpoint alone
restores it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import lightning as L
import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE
from lightly.utils.lars import LARS
from lightly.utils.scheduler import CosineWarmupScheduler
from torch import nn
from torch.utils.data import Dataset
from torchvision import transforms as T

from bench.recipes.config import RecipeConfig, TrainConfig
from bench.recipes.views import BatchedView, batched_views
from dejavu.encoders import Encoder
from dejavu.pixels import decoded_pixels
from dejavu.records import RecordSet
from mitigations.base import CaptionTransform

CHECKPOINT_RECIPE_KEY = "dejavu_recipe"


def resolve_layer(layers: Sequence[str], which: str | int) -> str:
    """Returns the layer named `which`, or the one `which` levels below the first, clamped to the last."""
    if isinstance(which, bool) or not isinstance(which, str | int):
        raise TypeError(f"a layer is a name or a level count, got {which!r}")
    if isinstance(which, int):
        if which < 0:
            raise ValueError(f"layer level must be >= 0, got {which}")
        return layers[min(which, len(layers) - 1)]
    if which not in layers:
        raise ValueError(f"unknown embedding layer {which!r}; this model has {', '.join(layers)}")
    return which


def hidden_outputs(head: nn.Module, prefix: str) -> list[str]:
    """Returns the names of a lightly head's hidden-block outputs (its ReLUs), from the top down."""
    names = [f"{prefix}.{name}" for name, m in head.named_modules() if isinstance(m, nn.ReLU)]
    return names[::-1]


def eval_transform(image_size: int, normalize: dict = IMAGENET_NORMALIZE) -> Callable:
    """Returns the evaluation transform: resize the short side, center crop, tensor, normalize."""
    return T.Compose([T.Resize(image_size), T.CenterCrop(image_size), T.ToTensor(),
                      T.Normalize(mean=normalize["mean"], std=normalize["std"])])


class RecipeModule(L.LightningModule):
    """Base class: subclasses build their networks, views and loss; this one owns optimization."""

    name: ClassVar[str] = ""
    modality: ClassVar[str] = "image"
    #: the recipe's own hyperparameters, with their published defaults (set by `train_by_recipe.<name>`)
    Config: ClassVar[type[RecipeConfig]] = RecipeConfig

    def __init__(self, cfg: dict, recipe_cfg: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = TrainConfig.from_dict(cfg)
        self.recipe_cfg = self.Config.from_dict(recipe_cfg or {})
        self.views: list[BatchedView] | None = None  # set when training on decoded batches

    @property
    def crop_scale(self) -> tuple[float, float]:
        """Returns the crop scale the training views draw from (the plan's, after mitigations)."""
        low, high = self.recipe_cfg.crop_scale
        return float(low), float(high)

    @classmethod
    def create(cls, cfg: TrainConfig, recipe_cfg: RecipeConfig, records: RecordSet) -> RecipeModule:
        """Returns a freshly initialized recipe for training on `records`."""
        return cls(cfg=cfg.as_dict(), recipe_cfg=recipe_cfg.as_dict())

    # -- what subclasses provide ------------------------------------------------------------------
    def train_transform(self) -> Callable:
        """Returns the training transform of one image (a list of views for SSL)."""
        raise NotImplementedError

    def embedding_layers(self) -> list[str]:
        """Returns the embedding layers, from the projector output down to the backbone."""
        raise NotImplementedError

    # -- shared behaviour -------------------------------------------------------------------------
    def eval_transform(self) -> Callable:
        """Returns the evaluation transform every measurement uses for this model."""
        return eval_transform(self.cfg.image_size)

    def training_classes(self) -> list[str] | None:
        """Returns the class names a supervised recipe predicts; None for self-supervised ones."""
        return None

    def training_set(self, records: RecordSet, indices: Sequence[int], seed: int,
                     caption_transforms: Sequence[CaptionTransform] = ()) -> Dataset:
        """Returns the dataset one training epoch draws from.

        When `train.batched_views` is on and every record has one size, the records are decoded once
        and the views are made per batch (`on_after_batch_transfer`); otherwise each image goes
        through the per-image transform in the loader.
        """
        from bench.recipes.data import ImageTrainingSet, PixelTrainingSet

        if caption_transforms:
            raise ValueError(f"recipe {self.name!r} trains on images only; caption transforms do not apply")
        classes = self.training_classes()
        plain = ImageTrainingSet(records, indices, self.train_transform(), classes=classes)
        if not (self.cfg.batched_views and len({(r.width, r.height) for r in records}) == 1):
            return plain
        self.views = batched_views(self.train_transform())
        targets = [plain.class_index[r.label] if classes is not None else -1 for r in records]
        return PixelTrainingSet(decoded_pixels(records, num_workers=self.cfg.num_workers, progress=False),
                                indices, targets)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Makes the training views of a decoded uint8 batch, on the batch's device."""
        pixels, target = batch
        if self.views is None or not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8:
            return batch
        views = [view(pixels) for view in self.views]
        return (views if len(views) > 1 else views[0]), target

    def encoder(self, layer: str | int = "projector") -> Encoder:
        """Returns a frozen Encoder of this model at `layer` (a name, or k levels below the projector)."""
        from dejavu.encoders import ModuleEncoder

        name = resolve_layer(self.embedding_layers(), layer)
        return ModuleEncoder(self, name, self.eval_transform(), name=f"{self.name}:{name}")

    def configure_optimizers(self) -> Any:
        """Returns the optimizer and a per-step cosine schedule with linear warmup (lightly's)."""
        cfg = self.cfg
        if cfg.optimizer == "adamw":
            optimizer = torch.optim.AdamW(self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(self.parameters(), lr=cfg.lr, momentum=0.9,
                                        weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "lars":
            optimizer = LARS(self.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose adamw, sgd or lars")
        total = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        scheduler = CosineWarmupScheduler(optimizer, warmup_epochs=cfg.warmup_epochs * steps_per_epoch,
                                          max_epochs=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_RECIPE_KEY] = self.name
