"""Supervised classification with Lightning: the shared trainer of the crop classifier and the probe.

One small LightningModule (a network plus cross-entropy) and two helpers: `train_classifier` fits it
with a Lightning Trainer, `predict_logits` runs it through `Trainer.predict`. The Trainer owns
devices and precision; nothing here moves tensors or loops over epochs by hand.

Training uses ``deterministic="warn"``, which (through Lightning) switches torch to deterministic
algorithms for the rest of the process, warning instead of failing where an op has none.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import contextmanager

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset


class SupervisedClassifier(L.LightningModule):
    """A network trained with cross-entropy on (input, class index) batches, AdamW optimizer."""

    def __init__(self, net: nn.Module, lr: float, weight_decay: float = 0.0):
        super().__init__()
        self.net = net
        self.lr = lr
        self.weight_decay = weight_decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the class logits of a batch."""
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, batch_size=len(y))
        return loss

    def predict_step(self, batch, batch_idx):
        return self(batch[0])

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def _trainer(max_epochs: int, enable_progress_bar: bool) -> L.Trainer:
    """Returns a quiet single-device Trainer that writes nothing to disk."""
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="auto",
        devices=1,
        # "warn" keeps determinism where torch has it without failing on ops (CUDA pooling) that lack it
        deterministic="warn",
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
    )


@contextmanager
def _without_loader_advice():
    """Yields with Lightning's advice on dataloader workers and batch counts hidden (small in-memory data)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*number of training batches.*")
        yield


def train_classifier(
    build_net: Callable[[], nn.Module],
    dataset: Dataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    weight_decay: float = 0.0,
    enable_progress_bar: bool = False,
) -> SupervisedClassifier:
    """Returns the module after `epochs` of training on (input, class index) items, in eval mode.

    The network is built by `build_net` after seeding, so its initial weights come from `seed` too.
    """
    L.seed_everything(seed, workers=True, verbose=False)
    module = SupervisedClassifier(build_net(), lr=lr, weight_decay=weight_decay)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    with _without_loader_advice():
        _trainer(epochs, enable_progress_bar).fit(module, loader)
    return module.eval()


def predict_logits(
    module: SupervisedClassifier, dataset: Dataset, *, batch_size: int, enable_progress_bar: bool = False
) -> torch.Tensor:
    """Returns the [n, classes] logits of the items of `dataset` (each a tuple whose first entry is the input)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    with _without_loader_advice():
        batches = _trainer(1, enable_progress_bar).predict(module, loader)
    return torch.cat([b.float().cpu() for b in batches]) if batches else torch.empty(0)
