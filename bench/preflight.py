"""Checks a run against its records before anything trains, so that every bad input fails in seconds.

`prepare` (bench.run) has already checked the request and every preset field; what is left needs the
records: their images (the pre-pass of dejavu.data.validate), the sizes of the splits against the
batch and the k of each test, what the recipe needs of each record (labels, captions), and the
measured layer against the model's layers. Long captions that the text encoder will cut are counted
and reported; they are not an error.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException

from bench.recipes import build_recipe, resolve_layer
from bench.recipes.data import expanded_length
from dejavu.attacks.image import TEST as IMAGE_TEST
from dejavu.attacks.image import labelled_public
from dejavu.attacks.vlm import TEST as CAPTION_TEST
from dejavu.attacks.vlm import attacked_captions
from dejavu.measure import MeasureConfig
from dejavu.records import RecordError, RecordSet
from dejavu.splits import training_records
from mitigations.base import MitigationError

log = logging.getLogger(__name__)

IMAGE_TESTS = ("image-two-model", "image-one-model-nb", "image-one-model-crop")
CAPTION_TESTS = ("vlm-two-model", "vlm-one-model-text")


def check_writable_folder(path: Path, option: str) -> None:
    """Returns None if `path` is, or can be created as, a folder this process may write; raises otherwise.

    Nothing is created: the nearest existing ancestor is inspected.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{option} {str(path)!r} is a file, not a folder; pass a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{option} {str(path)!r} lies under the file {str(existing)!r}; pass a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{option} {str(path)!r} is not writable ({str(existing)!r} is read-only for this "
                              "user); pass a folder you can write")


def check_schedule(cfg, plan) -> None:
    """Returns None when the warmup fits in the epochs the plan trains (after mitigations); raises otherwise."""
    if cfg.warmup_epochs > plan.max_epochs:
        raise ValueError(f"train.warmup_epochs={cfg.warmup_epochs} is more than the {plan.max_epochs} epochs this run "
                         "trains (train.epochs, after mitigations such as earlystop); lower train.warmup_epochs")


def check_devices(cfg) -> None:
    """Returns None when Lightning accepts the accelerator, devices and precision together; raises otherwise.

    A Trainer is only configured here (no process starts), so that a GPU request on a machine without one
    fails now rather than after the data is read.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its advice (bf16 for 16-mixed on a CPU) comes again at training
            L.Trainer(accelerator=cfg.accelerator, devices=cfg.devices, precision=cfg.precision, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    except (MisconfigurationException, ValueError, RuntimeError) as err:
        raise ValueError(f"train.accelerator={cfg.accelerator!r}, train.devices={cfg.devices!r} and "
                         f"train.precision={cfg.precision!r} do not work here: {err}") from None


def check_training_sets(records: RecordSet, batch_size: int) -> tuple[RecordSet, RecordSet]:
    """Returns the training records of A and B after checking that both can fill an epoch of equal steps."""
    a, b = training_records(records, "A"), training_records(records, "B")
    for split, rs in (("A", a), ("B", b)):
        if len(rs) == 0:
            raise ValueError(f"split {split} is empty, so its model has nothing to train on; give records "
                             f"split {split} (or null, to be assigned) in the dataset")
    length_a, length_b = expanded_length(a), expanded_length(b)
    if length_a < batch_size:
        raise ValueError(f"an epoch over split A holds {length_a} samples, fewer than one batch "
                         f"({batch_size}); lower train.batch_size or add records")
    if length_b > length_a:
        raise ValueError(f"an epoch over split B ({length_b} samples) is longer than over A ({length_a}); the "
                         "reference is trained for as many steps as the target, so B's repeats must not exceed A's")
    return a, b


def check_recipe(recipe: str, cfg, recipe_cfg, plan, splits: tuple[RecordSet, RecordSet]) -> list[str]:
    """Returns the recipe's embedding layers, after building it (without memory) for A and B and resolving
    the plan's measured layer; raises what the recipe would raise at the start of training."""
    with torch.device("meta"):  # the network's shape without its weights: seconds even at paper sizes
        modules = [build_recipe(recipe, cfg, recipe_cfg, rs, plan.crop_scale) for rs in splits]
    try:  # the views read the recipe's view_kwargs, which no type check can vet
        modules[0].train_transform()
    except (TypeError, ValueError) as err:
        where = (f"train_by_recipe.{recipe}.view_kwargs={dict(recipe_cfg.view_kwargs)}"
                 if hasattr(recipe_cfg, "view_kwargs") else f"train_by_recipe.{recipe}")
        raise ValueError(f"{where} do not fit recipe {recipe!r}'s training views: {err}") from None
    if plan.modality == "image-text":
        for rs in splits:
            for r in rs:
                if not r.caption:
                    raise RecordError("record has no caption; image-text recipes need one per training record",
                                      record_id=r.id, file=r.source or r.image)
        report_long_captions(modules[0], [r for rs in splits for r in rs])
    layers = modules[0].embedding_layers()
    layer = plan.measure_layer
    if isinstance(layer, int) and not isinstance(layer, bool) and layer > len(layers) - 1:
        raise MitigationError(f"guillotine={layer}: recipe {recipe!r} has {len(layers)} embedding levels "
                              f"({', '.join(layers)}), so the strength can be at most {len(layers) - 1}")
    try:
        resolve_layer(layers, layer)
    except (TypeError, ValueError) as err:
        raise MitigationError(f"{err}; the guillotine layer option must name one of them") from None
    return layers


def report_long_captions(module, records: list) -> int:
    """Returns how many captions are longer than the text encoder's context, after logging a warning if any."""
    tokenizer = getattr(module, "tokenizer", None)
    context = getattr(tokenizer, "context_length", None)
    if context is None or not hasattr(tokenizer, "encode"):
        return 0
    lengths = {r.id: len(tokenizer.encode(r.caption)) + 2 for r in records if r.caption}  # + start and end
    long = {rid: n for rid, n in lengths.items() if n > context}
    if long:
        longest = max(long, key=long.get)
        log.warning("%d of %d captions are longer than the text encoder's %d-token context and are "
                    "cut to it (the longest, record %r, has %d tokens); shorten them if their ends matter",
                    len(long), len(lengths), context, longest, long[longest])
    return len(long)


def check_measurable(records: RecordSet, cfg: MeasureConfig, *, captions: bool) -> None:
    """Returns None when the records can feed every requested test; raises the error the test would raise."""
    if any(t in cfg.tests for t in IMAGE_TESTS):
        n_public = sum(r.split == "public" for r in records)
        k = cfg.section(IMAGE_TEST).k
        if k > n_public:
            raise ValueError(f"measure.{IMAGE_TEST}.k={k} exceeds the {n_public} public records the image test "
                             f"votes over; lower measure.{IMAGE_TEST}.k (or measure_by_recipe.<recipe>.{IMAGE_TEST}.k) "
                             "or add public records")
        labelled_public(records, k)  # and every public record has a label
    if "utility" in cfg.tests:
        for split in ("public", "eval"):
            if not any(r.split == split and r.label is not None for r in records):
                raise ValueError(f"the utility test needs labelled {split} records, and there are none; "
                                 f"add some or leave 'utility' out of measure.tests")
    if captions and any(t in cfg.tests for t in CAPTION_TESTS):
        public, _ = attacked_captions(records)
        vlm = cfg.section(CAPTION_TEST)
        keys = public.records if vlm.index == "t2i" else public.captioned().records
        if vlm.k > len(keys):
            raise ValueError(f"measure.{CAPTION_TEST}.k={vlm.k} exceeds the {len(keys)} public records the caption "
                             f"test searches ({vlm.index}); lower measure.{CAPTION_TEST}.k or add public records")
