"""Crop classifier: a one-model correlation reference trained on background crops (SPEC section 4).

Meehan et al. (2023) train a ResNet-50 from scratch on the background crops of the reference split
to predict the foreground label; whatever it gets right is a dataset-level correlation, not
memorization. Here the default is a small CNN that trains in seconds at 32x32 on CPU; any
torchvision architecture can be named instead (``arch="resnet50"`` for the original).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms import v2

from dejavu.references.prediction import ReferencePrediction
from dejavu.supervised import predict_logits, train_classifier


class SmallCNN(nn.Sequential):
    """Three conv-BN-ReLU stages with pooling, global average pooling and a linear classifier."""

    def __init__(self, num_classes: int, width: int = 32):
        def stage(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        super().__init__(
            *stage(3, width), nn.MaxPool2d(2),
            *stage(width, 2 * width), nn.MaxPool2d(2),
            *stage(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes),
        )


def is_arch(arch: str) -> bool:
    """True when `arch` names a crop classifier: "small-cnn" or a torchvision classification model."""
    return arch == "small-cnn" or arch in torchvision.models.list_models(module=torchvision.models)


def check_arch(arch: str) -> None:
    """Returns None when `arch` names a crop classifier; raises ValueError saying which names do."""
    if not is_arch(arch):
        raise ValueError(
            f"unknown crop-classifier arch {arch!r}; use 'small-cnn' or a torchvision classification "
            f"model such as 'resnet18' or 'resnet50' (torchvision.models.list_models())"
        )


def build_network(arch: str, num_classes: int) -> nn.Module:
    """Returns an untrained classifier: "small-cnn" or any torchvision.models name (weights=None)."""
    check_arch(arch)
    if arch == "small-cnn":
        return SmallCNN(num_classes)
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)


class _CropDataset(Dataset):
    """(pixels, class index) items of crops; class index -1 when predicting."""

    def __init__(self, images: Sequence[Image.Image], targets: Sequence[int], transform):
        self.images = images
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i].convert("RGB")), self.targets[i]


class CropClassifier:
    """Predicts the foreground label from a background crop, trained from scratch with Lightning."""

    def __init__(
        self,
        arch: str = "small-cnn",
        image_size: int = 32,
        epochs: int = 10,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        seed: int = 0,
        augment: bool = True,
        enable_progress_bar: bool = False,
    ):
        build_network(arch, 2)  # fail on a bad name now, not after the crops are cut
        self.arch = arch
        self.image_size = image_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed
        self.augment = augment
        self.enable_progress_bar = enable_progress_bar

    def transform(self, train: bool) -> v2.Compose:
        """Returns the crop transform: a fixed resize (plus a random flip when training with augment)."""
        steps = [v2.ToImage(), v2.Resize((self.image_size, self.image_size), antialias=True)]
        if train and self.augment:
            steps.append(v2.RandomHorizontalFlip())
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)]
        return v2.Compose(steps)

    def fit(self, images: Sequence[Image.Image], labels: Sequence[str]) -> CropClassifier:
        """Returns self, trained on the crops and their records' foreground labels."""
        _check_images(images)
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} crops but {len(labels)} labels")
        if any(label is None for label in labels):
            raise ValueError("every training crop needs a foreground label; drop or label the None ones first")
        self.classes_ = sorted(set(labels))
        index = {c: j for j, c in enumerate(self.classes_)}
        data = _CropDataset(images, [index[label] for label in labels], self.transform(train=True))
        self.module_ = train_classifier(
            lambda: build_network(self.arch, len(self.classes_)),
            data,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            seed=self.seed,
            enable_progress_bar=self.enable_progress_bar,
        )
        return self

    def predict(self, images: Sequence[Image.Image], ids: Sequence[str]) -> ReferencePrediction:
        """Returns per-id argmax label, max-softmax confidence and softmax entropy of the crops."""
        if not hasattr(self, "module_"):
            raise RuntimeError("CropClassifier.fit must be called before predict")
        _check_images(images)
        if len(images) != len(ids):
            raise ValueError(f"{len(images)} crops but {len(ids)} ids")
        data = _CropDataset(images, [-1] * len(images), self.transform(train=False))
        logits = predict_logits(self.module_, data, batch_size=self.batch_size)
        probs = torch.softmax(logits.double(), dim=1).numpy() if len(images) else np.zeros((0, len(self.classes_)))
        return ReferencePrediction.from_probs(ids, probs, self.classes_)


def _check_images(images: Sequence[Image.Image]) -> None:
    """Raises TypeError naming the first item that is not a PIL image."""
    for i, img in enumerate(images):
        if not isinstance(img, Image.Image):
            raise TypeError(f"crop {i} is a {type(img).__name__}, not a PIL image; pass Record.load_image() crops")
