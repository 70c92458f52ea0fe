"""Train a recipe or resume it: the one entry point that turns a plan and records into a model.

A training directory holds:
- `run.json`: what is trained (recipe, training key, config, seed, data fingerprint, epoch length).
  Written first; a later call with a different identity is refused rather than mixing models.
- `last.ckpt`: Lightning's checkpoint after every epoch. A killed run resumes from it.
- `done.json`: written atomically after `fit` returns. With it, the model is loaded, not trained.
  Asking for more epochs than `done.json` records continues from `last.ckpt` (at the final
  learning rate of the finished schedule, since lightly's cosine schedule is restored with it).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from filelock import FileLock
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from bench.recipes import RECIPES, build_recipe
from bench.recipes.base import CHECKPOINT_RECIPE_KEY, RecipeModule
from bench.recipes.config import TrainConfig
from bench.recipes.data import TrainingData, expand_by_repeat, expanded_length, matched_length
from dejavu.encoders import Encoder
from dejavu.records import RecordSet
from mitigations.base import TrainingPlan

# The recipe, not the data module, makes the views of a decoded batch (RecipeModule.on_after_batch_transfer);
# Lightning warns that the module's hook wins over the data module's, which is the intent.
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer`")

LAST = "last.ckpt"
DONE = "done.json"
RUN = "run.json"
LOCK = ".train.lock"
#: config fields that do not change the trained weights
_NOT_IDENTITY = ("epochs", "num_workers", "log_every_n_steps")


class TrainingDirError(RuntimeError):
    """A training directory that holds a different run than the one asked for."""


@dataclass
class TrainedModel:
    """A trained recipe, its checkpoint, and Encoders at its embedding layers."""

    checkpoint: Path
    recipe: str
    module: RecipeModule

    def encoder(self, layer: str | int = "projector") -> Encoder:
        """Returns the model's Encoder at `layer` (a name, or k levels below the projector output)."""
        return self.module.encoder(layer)

    def embedding_layers(self) -> list[str]:
        """Returns the model's embedding layers, projector output first, backbone last."""
        return self.module.embedding_layers()


def _write_json_atomic(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


def _run_identity(plan: TrainingPlan, records: RecordSet, cfg: TrainConfig, seed: int,
                  epoch_length: int) -> dict:
    key = {k: v for k, v in plan.training_key().items() if k != "max_epochs"}
    config = {k: v for k, v in cfg.as_dict().items() if k not in _NOT_IDENTITY}
    return json.loads(json.dumps({"plan": key, "config": config, "seed": seed, "data": records.fingerprint(),
                                  "epoch_length": epoch_length}, default=str))


def _claim_dir(out_dir: Path, identity: dict) -> None:
    run_file = out_dir / RUN
    if run_file.exists():
        recorded = json.loads(run_file.read_text())
        if recorded != identity:
            differ = sorted(k for k in identity.keys() | recorded.keys() if identity.get(k) != recorded.get(k))
            raise TrainingDirError(f"{out_dir} holds a different training run (differs in: {', '.join(differ)}); "
                                   "use a fresh directory or delete this one")
    else:
        _write_json_atomic(run_file, identity)


def train_model(plan: TrainingPlan, records: RecordSet, cfg: TrainConfig, out_dir: Path, seed: int, *,
                epoch_length: int | None = None, progress: bool = True) -> TrainedModel:
    """Returns the model trained (or resumed, or loaded when finished) by `plan` on `records`.

    `epoch_length` pads every epoch to that many samples (see `matched_length`); pass the target
    model's `expanded_length(A)` when training the reference on B, so both take the same steps.
    """
    if plan.recipe not in RECIPES:
        raise ValueError(f"unknown recipe {plan.recipe!r}; choose one of {', '.join(RECIPES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):
        return _train_or_load(plan, records, cfg, out_dir, seed, epoch_length, progress)


@contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Holds the training directory's lock, so that two jobs needing one model train it once.

    Sweep jobs share models (`none` and `guillotine` do): the second waits, then loads. Only the
    launching process locks; DDP's other ranks are started by its `fit` and must not wait on it.
    """
    if rank_zero_only.rank != 0:
        yield
        return
    with FileLock(out_dir / LOCK):
        yield


def _train_or_load(plan: TrainingPlan, records: RecordSet, cfg: TrainConfig, out_dir: Path, seed: int,
                   epoch_length: int | None, progress: bool) -> TrainedModel:
    indices = (expand_by_repeat(records) if epoch_length is None
               else matched_length(records, epoch_length, seed))
    _claim_dir(out_dir, _run_identity(plan, records, cfg, seed, len(indices)))

    done_file, last = out_dir / DONE, out_dir / LAST
    if done_file.exists():
        done = json.loads(done_file.read_text())
        if done["max_epochs"] == plan.max_epochs:
            return load_trained(out_dir / done["checkpoint"])
        if done["max_epochs"] > plan.max_epochs:
            raise TrainingDirError(f"{out_dir} holds a model trained for {done['max_epochs']} epochs; "
                                   f"it cannot be rewound to {plan.max_epochs}. Use a fresh directory")

    L.seed_everything(seed, workers=True)
    module = build_recipe(plan.recipe, cfg, records, plan.crop_scale)
    data = TrainingData(module.training_set(records, indices, seed, plan.caption_transforms),
                        cfg.batch_size, cfg.num_workers, seed)
    trainer = L.Trainer(
        max_epochs=plan.max_epochs, accelerator=cfg.accelerator, devices=cfg.devices,
        precision=cfg.precision,
        limit_train_batches=None if cfg.limit_train_batches == 1.0 else cfg.limit_train_batches,
        callbacks=[*plan.fresh_callbacks(), ModelCheckpoint(dirpath=out_dir, filename="last", save_top_k=1, enable_version_counter=False)],
        logger=CSVLogger(out_dir, name="logs"), default_root_dir=out_dir,
        enable_progress_bar=progress, enable_model_summary=progress,
        log_every_n_steps=cfg.log_every_n_steps,
        use_distributed_sampler=False,  # EpochSampler shards by rank itself and keeps the epoch
    )
    trainer.fit(module, datamodule=data, ckpt_path=last if last.exists() else None)
    if not last.exists():  # no epoch completed (e.g. a callback stopped at once): keep the model anyway
        trainer.save_checkpoint(last)
    _write_json_atomic(done_file, {"checkpoint": LAST, "recipe": plan.recipe, "max_epochs": plan.max_epochs,
                                   "epochs_run": trainer.current_epoch, "global_step": trainer.global_step,
                                   "applied": list(plan.applied)})
    return TrainedModel(last, plan.recipe, module.eval())


def load_trained(checkpoint: Path, map_location: str | torch.device = "cpu") -> TrainedModel:
    """Returns the model stored in a checkpoint written by `train_model`, in eval mode."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}; train the model first")
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    name = stored.get(CHECKPOINT_RECIPE_KEY)
    if name not in RECIPES:
        raise ValueError(f"{checkpoint} was not written by a dejavu-bench recipe (recipe {name!r})")
    module = RECIPES[name].load_from_checkpoint(checkpoint, map_location=map_location, weights_only=True)
    return TrainedModel(checkpoint, name, module.eval())


__all__ = ["TrainConfig", "TrainedModel", "TrainingDirError", "expanded_length", "load_trained",
           "matched_length", "train_model"]
