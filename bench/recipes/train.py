"""Train a recipe or resume it: the one entry point that turns a plan and records into a model.

A training directory holds:
- `run.json`: what is trained (recipe, training key, shared and recipe config, seed, data fingerprint,
  epoch length).
  Written first; a later call with a different identity is refused rather than mixing models.
- `last.ckpt`: Lightning's checkpoint after every epoch. A killed run resumes from it.
- `done.json`: written atomically after `fit` returns. With it, the model is loaded, not trained.
  Asking for more epochs than `done.json` records continues from `last.ckpt` (at the final
  learning rate of the finished schedule, since lightly's cosine schedule is restored with it).

A file of the folder that cannot be read (a truncated checkpoint, a damaged JSON file) is renamed to
`<name>.corrupt`, a warning names it, and the model is trained again from what is left.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from bench.recipes import build_recipe, get_recipe, legacy
from bench.recipes.base import CHECKPOINT_RECIPE_KEY, RecipeModule
from bench.recipes.config import RecipeConfig, TrainConfig
from bench.recipes.data import TrainingData, expand_by_repeat, expanded_length, matched_length
from dejavu.encoders import Encoder
from dejavu.files import file_lock, read_json, write_json
from dejavu.records import RecordSet
from mitigations.base import TrainingPlan

# The recipe, not the data module, makes the views of a decoded batch (RecipeModule.on_after_batch_transfer);
# Lightning warns that the module's hook wins over the data module's, which is the intent.
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer`")

log = logging.getLogger(__name__)

LAST = "last.ckpt"
DONE = "done.json"
RUN = "run.json"
LOCK = ".train.lock"
#: config fields that do not change the trained weights
_NOT_IDENTITY = ("epochs", "num_workers", "log_every_n_steps")


class TrainingDirError(RuntimeError):
    """A training directory that holds a different run than the one asked for."""


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint: truncated, damaged, or not a checkpoint at all."""


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


def _run_identity(plan: TrainingPlan, records: RecordSet, cfg: TrainConfig, recipe_cfg: RecipeConfig, seed: int,
                  epoch_length: int) -> dict:
    key = {k: v for k, v in plan.training_key().items() if k != "max_epochs"}
    config = {k: v for k, v in cfg.as_dict().items() if k not in _NOT_IDENTITY}
    return json.loads(json.dumps({"plan": key, "config": config, "recipe_config": recipe_cfg.as_dict(), "seed": seed,
                                  "data": records.fingerprint(), "epoch_length": epoch_length}, default=str))


def adopt_training_dir(old_dir: Path, new_dir: Path, records: RecordSet) -> bool:
    """Returns True after moving a training folder cached under an earlier key to `new_dir`.

    Earlier releases keyed models by a fingerprint of image paths, and by the flat TrainConfig of every
    recipe (bench.recipes.legacy); their folders are moved, not retrained, and their run.json is
    rewritten in today's form: the content fingerprint in place of the path one of the same `records`,
    the recipe's own config split from the flat one. Nothing is moved when `new_dir` exists, `old_dir`
    does not, or this is not DDP's launching process.
    """
    if rank_zero_only.rank != 0 or new_dir.exists() or not old_dir.is_dir():
        return False
    run_file = old_dir / RUN
    if _damage(run_file, read_json) is None and run_file.exists():
        recorded = read_json(run_file)
        identity = legacy.identity(get_recipe(recorded.get("plan", {}).get("recipe")), recorded) or recorded
        if identity.get("data") == records.path_fingerprint():
            identity = {**identity, "data": records.fingerprint()}
        if identity != recorded:
            write_json(run_file, identity)
    new_dir.parent.mkdir(parents=True, exist_ok=True)
    old_dir.rename(new_dir)
    if not any(old_dir.parent.iterdir()):  # its sibling (target or reference) has moved too
        old_dir.parent.rmdir()
    log.info("moved the model cached by an earlier release from %s to %s", old_dir, new_dir)
    return True


def _set_aside(out_dir: Path, problem: str, *names: str) -> None:
    """Renames the named files of a training folder to `<name>.corrupt`, so the model is trained again."""
    moved = []
    if rank_zero_only.rank == 0:  # DDP's other ranks follow what the launching process decided
        for name in names:
            path = out_dir / name
            if path.exists():
                path.replace(path.with_name(path.name + ".corrupt"))
                moved.append(name)
    log.warning("%s; moved %s aside (as *.corrupt) and training this model again",
                problem, ", ".join(moved) or "nothing")


def _damage(path: Path, read) -> str | None:
    """Returns why `read(path)` fails on an existing file (None when it succeeds or there is no file)."""
    if not path.exists():
        return None
    try:
        read(path)
    except ValueError as err:  # read_json's and read_checkpoint's errors name the file
        return str(err)
    return None


def _claim_dir(out_dir: Path, identity: dict) -> None:
    run_file = out_dir / RUN
    damage = _damage(run_file, read_json)
    if damage:  # without the identity, nothing in the folder is known to belong to this run
        _set_aside(out_dir, damage, RUN, DONE, LAST)
    if run_file.exists():
        recorded = read_json(run_file)
        if recorded != identity:
            differ = sorted(k for k in identity.keys() | recorded.keys() if identity.get(k) != recorded.get(k))
            raise TrainingDirError(f"{out_dir} holds a different training run (differs in: {', '.join(differ)}); "
                                   "use a fresh directory or delete this one")
    else:
        write_json(run_file, identity)


def train_model(plan: TrainingPlan, records: RecordSet, cfg: TrainConfig, recipe_cfg: RecipeConfig, out_dir: Path,
                seed: int, *, epoch_length: int | None = None, progress: bool = True) -> TrainedModel:
    """Returns the model trained (or resumed, or loaded when finished) by `plan` on `records`.

    `cfg` is the shared config and `recipe_cfg` the recipe's own (its crop scale gives way to the plan's).

    `epoch_length` pads every epoch to that many samples (see `matched_length`); pass the target
    model's `expanded_length(A)` when training the reference on B, so both take the same steps.
    """
    get_recipe(plan.recipe)  # an unknown name fails here, before a folder is made
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):
        return _train_or_load(plan, records, cfg, recipe_cfg, out_dir, seed, epoch_length, progress)


@contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Holds the training directory's lock, so that two jobs needing one model train it once.

    Sweep jobs share models (`none` and `guillotine` do): the second waits, then loads. Only the
    launching process locks; DDP's other ranks are started by its `fit` and must not wait on it.
    """
    if rank_zero_only.rank != 0:
        yield
        return
    with file_lock(out_dir / LOCK):
        yield


def _train_or_load(plan: TrainingPlan, records: RecordSet, cfg: TrainConfig, recipe_cfg: RecipeConfig, out_dir: Path,
                   seed: int, epoch_length: int | None, progress: bool) -> TrainedModel:
    indices = (expand_by_repeat(records) if epoch_length is None
               else matched_length(records, epoch_length, seed))
    _claim_dir(out_dir, _run_identity(plan, records, cfg, recipe_cfg, seed, len(indices)))

    done_file, last = out_dir / DONE, out_dir / LAST
    damage = _damage(done_file, _read_done)
    if damage:  # a sound last.ckpt then resumes, or is found finished
        _set_aside(out_dir, damage, DONE)
    damage = _damage(last, read_checkpoint) or (f"{last} is missing" if done_file.exists() and not last.exists()
                                                 else None)
    if damage:
        _set_aside(out_dir, damage, LAST, DONE)
    if done_file.exists():
        done = _read_done(done_file)
        if done["max_epochs"] == plan.max_epochs:
            return load_trained(last)
        if done["max_epochs"] > plan.max_epochs:
            raise TrainingDirError(f"{out_dir} holds a model trained for {done['max_epochs']} epochs; "
                                   f"it cannot be rewound to {plan.max_epochs}. Use a fresh directory")

    L.seed_everything(seed, workers=True)
    module = build_recipe(plan.recipe, cfg, recipe_cfg, records, plan.crop_scale)
    data = TrainingData(module.training_set(records, indices, seed, plan.caption_transforms),
                        cfg.batch_size, cfg.num_workers, seed)
    trainer = L.Trainer(
        max_epochs=plan.max_epochs, accelerator=cfg.accelerator, devices=cfg.devices,
        precision=cfg.precision,
        # Lightning's meaning: an int counts batches, a float is a fraction (1.0: all of them)
        limit_train_batches=(None if isinstance(cfg.limit_train_batches, float) and cfg.limit_train_batches == 1.0
                             else cfg.limit_train_batches),
        callbacks=[*plan.fresh_callbacks(), ModelCheckpoint(dirpath=out_dir, filename="last", save_top_k=1, enable_version_counter=False)],
        logger=CSVLogger(out_dir, name="logs"), default_root_dir=out_dir,
        enable_progress_bar=progress, enable_model_summary=progress,
        log_every_n_steps=cfg.log_every_n_steps,
        use_distributed_sampler=False,  # EpochSampler shards by rank itself and keeps the epoch
        # with several GPUs, batch norm normalizes over the global batch, as one process would (and as the SSL
        # papers train); single-device runs ignore it, and torch's SyncBatchNorm runs on GPUs only
        sync_batchnorm=_on_gpus(cfg),
    )
    trainer.fit(module, datamodule=data, ckpt_path=last if last.exists() else None)
    if not last.exists():  # no epoch completed (e.g. a callback stopped at once): keep the model anyway
        trainer.save_checkpoint(last)
    if trainer.is_global_zero:
        write_json(done_file, {"checkpoint": LAST, "recipe": plan.recipe, "max_epochs": plan.max_epochs,
                               "epochs_run": trainer.current_epoch, "global_step": trainer.global_step,
                               "applied": list(plan.applied)})
    return TrainedModel(last, plan.recipe, module.eval())


def _read_done(path: Path) -> dict:
    """Returns the contents of a done.json; raises ValueError naming it when damaged."""
    done = read_json(path)
    if not (isinstance(done, dict) and isinstance(done.get("max_epochs"), int)):
        raise ValueError(f"{str(path)!r} lacks the integer 'max_epochs' a finished training records")
    return done


def _on_gpus(cfg: TrainConfig) -> bool:
    """Returns True when the Trainer will run on CUDA devices."""
    return cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto" and torch.cuda.is_available())


def read_checkpoint(path: Path) -> dict:
    """Returns a checkpoint's contents, its tensors memory-mapped; raises CheckpointError naming the file."""
    try:
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            stored = torch.load(path, map_location="cpu", weights_only=True)  # the legacy format cannot be mapped
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, KeyError... for damage
        summary = str(err).splitlines()[0][:120] if str(err) else ""
        raise CheckpointError(f"{path} is not a readable checkpoint: truncated, damaged, or not written by "
                              f"torch.save ({type(err).__name__}: {summary}); train the model again or pass "
                              "another file") from None
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path} holds a {type(stored).__name__}, not a Lightning checkpoint")
    return stored


def load_trained(checkpoint: Path, map_location: str | torch.device = "cpu") -> TrainedModel:
    """Returns the model stored in a checkpoint written by `train_model`, in eval mode.

    A checkpoint of an earlier release, with the flat hyperparameters of every recipe, loads too.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}; train the model first")
    stored = read_checkpoint(checkpoint)
    name = stored.get(CHECKPOINT_RECIPE_KEY)
    try:
        recipe = get_recipe(name)
    except ValueError:
        raise ValueError(f"{checkpoint} was not written by a dejavu-bench recipe (recipe {name!r})") from None
    hparams = legacy.checkpoint_hparams(recipe, stored.get(recipe.CHECKPOINT_HYPER_PARAMS_KEY, {})) or {}
    module = recipe.load_from_checkpoint(checkpoint, map_location=map_location, weights_only=True, **hparams)
    return TrainedModel(checkpoint, name, module.eval())


__all__ = ["CheckpointError", "RecipeConfig", "TrainConfig", "TrainedModel", "TrainingDirError", "expanded_length",
           "load_trained", "matched_length", "read_checkpoint", "train_model"]
