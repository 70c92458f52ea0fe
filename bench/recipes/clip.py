"""CLIP recipe: an open_clip model trained from scratch with open_clip's ClipLoss.

The architecture is its Config's `model` (`train_by_recipe.clip.model`): "tiny" (dejavu.encoders.TINY_CLIP_CONFIG,
CPU-sized) or any plain open_clip CLIP architecture by name (e.g. "ViT-B-32"), always randomly initialized, so
nothing is downloaded.
Captions pass through the plan's caption transforms at every training step (see data.py).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import open_clip
import torch
from open_clip.loss import ClipLoss
from open_clip.transform import AugmentationCfg
from torch.utils.data import Dataset

from bench.recipes.base import RecipeModule
from bench.recipes.config import RecipeConfig, TrainConfig
from bench.rules import ordered_pair, rule
from dejavu.encoders import TINY_CLIP_CONFIG, Encoder
from dejavu.records import RecordSet

#: open_clip clamps the learned logit scale at ln(100) during training
MAX_LOGIT_SCALE = math.log(100)


def _known_clip_model(name: str) -> bool:
    return name == "tiny" or open_clip.get_model_config(name) is not None


@dataclass(frozen=True)
class ClipConfig(RecipeConfig):
    # "tiny" (a CPU-sized custom config) or an open_clip architecture name
    model: str = field(default="tiny", metadata=rule(_known_clip_model, "'tiny' or an open_clip architecture"))
    # open_clip's default RandomResizedCrop bounds
    crop_scale: tuple[float, float] = field(default=(0.9, 1.0), metadata=ordered_pair(0, 1, open_low=True))


def clip_model_config(model: str, image_size: int) -> dict:
    """Returns the open_clip model config of architecture `model` ("tiny" or an open_clip name), at `image_size`."""
    if model == "tiny":
        model_cfg = copy.deepcopy(TINY_CLIP_CONFIG)
    else:
        model_cfg = open_clip.get_model_config(model)
        if model_cfg is None:
            raise ValueError(f"unknown open_clip architecture {model!r}; use 'tiny' or one of "
                             f"{', '.join(open_clip.list_models()[:20])}, ...")
        if "multimodal_cfg" in model_cfg or model_cfg.get("text_cfg", {}).get("hf_model_name"):
            raise ValueError(f"{model!r} is not a plain CLIP architecture (it has a CoCa or "
                             "Hugging Face text tower); choose one with an open_clip text transformer")
        model_cfg = copy.deepcopy(model_cfg)
    model_cfg["vision_cfg"]["image_size"] = image_size
    return model_cfg


class Clip(RecipeModule):
    """Contrastive image-text pretraining (Radford et al. 2021) on the records' captions."""

    name = "clip"
    modality = "image-text"
    Config = ClipConfig

    def __init__(self, cfg: dict, recipe_cfg: dict | None = None, model_cfg: dict | None = None):
        super().__init__(cfg, recipe_cfg)
        self.model_cfg = (copy.deepcopy(model_cfg) if model_cfg is not None
                          else clip_model_config(self.recipe_cfg.model, self.cfg.image_size))
        self.model = open_clip.CLIP(**self.model_cfg)
        self.tokenizer = open_clip.get_tokenizer("", context_length=self.model_cfg["text_cfg"]["context_length"])
        self.criterion = ClipLoss()

    @classmethod
    def create(cls, cfg: TrainConfig, recipe_cfg: ClipConfig, records: RecordSet) -> Clip:
        # the config is stored in the checkpoint so a later change of "tiny" cannot break old models
        return cls(cfg=cfg.as_dict(), recipe_cfg=recipe_cfg.as_dict(),
                   model_cfg=clip_model_config(recipe_cfg.model, cfg.image_size))

    def setup(self, stage: str) -> None:
        # each process contrasts against the whole global batch, as open_clip's trainer does
        self.criterion = ClipLoss(local_loss=True, gather_with_grad=True,
                                  rank=self.global_rank, world_size=self.trainer.world_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Returns the L2-normalized image embeddings."""
        return self.model.encode_image(images, normalize=True)

    def training_step(self, batch, batch_idx):
        images, tokens = batch
        loss = self.criterion(self.model.encode_image(images, normalize=True),
                              self.model.encode_text(tokens, normalize=True), self.model.logit_scale.exp())
        self.log("train_loss", loss, prog_bar=True, batch_size=images.shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def train_transform(self) -> Callable:
        return open_clip.image_transform(self.cfg.image_size, is_train=True,
                                         aug_cfg=AugmentationCfg(scale=self.crop_scale))

    def eval_transform(self) -> Callable:
        return open_clip.image_transform(self.cfg.image_size, is_train=False)

    def training_set(self, records, indices, seed, caption_transforms=()) -> Dataset:
        from bench.recipes.data import CaptionedImageSet

        return CaptionedImageSet(records, indices, self.train_transform(), self.tokenizer,
                                 caption_transforms, seed)

    def embedding_layers(self) -> list[str]:
        return ["projector", "backbone"]

    def encoder(self, layer: str | int = "projector") -> Encoder:
        from bench.recipes.base import resolve_layer
        from dejavu.encoders import OpenClipEncoder

        name = resolve_layer(self.embedding_layers(), layer)
        return OpenClipEncoder(self.model, self.eval_transform(), self.tokenizer, name, name=f"clip:{name}")
