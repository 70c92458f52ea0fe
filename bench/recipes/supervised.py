"""Supervised recipe: backbone -> projection MLP -> linear classifier, trained with cross-entropy.

Choice (documented for comparison with the SSL recipes): "projector" is the penultimate
embedding, i.e. the output of a small MLP between the backbone and the classifier (widths from
its Config's `projector`, hidden first). The MLP exists so that the supervised model has the
same layer structure as the SSL ones and `guillotine` has something to cut; the classifier itself
is never an embedding layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from lightly.models.modules.heads import ProjectionHead
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torch import nn
from torchvision import transforms as T

from bench.recipes.backbones import build_backbone
from bench.recipes.base import RecipeModule, hidden_outputs
from bench.recipes.config import RecipeConfig, TrainConfig
from bench.recipes.ssl import widths
from dejavu.records import RecordError, RecordSet


@dataclass(frozen=True)
class SupervisedConfig(RecipeConfig):
    # ours: an MLP before the classifier, so `guillotine` has layers to cut
    projector: tuple[int, ...] = widths((512, 128))


class Supervised(RecipeModule):
    """Label-supervised baseline with the same backbone and measurement layers as the SSL recipes."""

    name = "supervised"
    Config = SupervisedConfig

    def __init__(self, cfg: dict, recipe_cfg: dict | None = None, classes: Sequence[str] = ()):
        super().__init__(cfg, recipe_cfg)
        if len(classes) < 2:
            raise ValueError(f"the supervised recipe needs at least 2 classes, got {list(classes)}")
        self.classes = list(classes)
        self.backbone, feature_dim = build_backbone(self.cfg.backbone, self.cfg.image_size)
        sizes = [feature_dim, *self.recipe_cfg.projector]
        blocks = [(w_in, w_out, nn.BatchNorm1d(w_out), nn.ReLU()) for w_in, w_out in zip(sizes[:-1], sizes[1:], strict=True)]
        self.projector = ProjectionHead(blocks)
        self.classifier = nn.Linear(sizes[-1], len(self.classes))
        self.criterion = nn.CrossEntropyLoss()

    @classmethod
    def create(cls, cfg: TrainConfig, recipe_cfg: SupervisedConfig, records: RecordSet) -> Supervised:
        missing = [r for r in records if not r.label]
        if missing:
            raise RecordError("record has no label; the supervised recipe trains on labels",
                              record_id=missing[0].id, file=missing[0].source or missing[0].image)
        return cls(cfg=cfg.as_dict(), recipe_cfg=recipe_cfg.as_dict(), classes=sorted({r.label for r in records}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the class logits."""
        return self.classifier(self.projector(self.backbone(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.criterion(self(x), y)
        self.log("train_loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def train_transform(self) -> Callable:
        return T.Compose([T.RandomResizedCrop(self.cfg.image_size, scale=self.crop_scale),
                          T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(mean=IMAGENET_NORMALIZE["mean"], std=IMAGENET_NORMALIZE["std"])])

    def training_classes(self) -> list[str]:
        return self.classes

    def embedding_layers(self) -> list[str]:
        # the last ReLU is the projector output itself, so it is not listed twice
        return ["projector", *hidden_outputs(self.projector, "projector")[1:], "backbone"]
