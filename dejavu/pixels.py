"""Decoded pixels: a dataset's images (or crops), decoded and resized once, as one uint8 array.

A model's evaluation transform is a PIL stage (resize, centre crop) followed by a tensor stage
(ToTensor's scaling, Normalize). The PIL stage is the costly, per-image part, and it is the same for
the target, the reference and every test. `decoded_pixels` runs it once per (records, crops, stage)
and keeps the result as an [N, C, H, W] uint8 array, on disk as a memory-mapped `.npy` when a cache
folder is given. The tensor stage then runs on whole batches, with the same arithmetic as per image,
so embeddings are bit-for-bit those of the per-image path.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.transforms import functional as TF
from torchvision.transforms import v2 as T2
from tqdm.auto import tqdm

from dejavu.files import atomic_open
from dejavu.records import Record, RecordError, RecordSet

log = logging.getLogger(__name__)

#: Above this many bytes a pixel array is not built: the images are streamed through the transform instead.
MAX_PIXEL_BYTES = 8 * 2**30


def stable_repr(obj: object) -> str:
    """Returns repr(obj) without memory addresses, so that it keys a cache across processes."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """Returns the CHW uint8 tensor of an RGB (or L) PIL image."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


class TensorStage:
    """The batched tail of an eval transform: ToTensor's scaling, then tensor transforms such as Normalize."""

    def __init__(self, steps: Sequence[Callable]):
        self.steps = list(steps)

    def __call__(self, pixels: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Returns the float32 batch of uint8 `pixels`, written into `out` (same shape) when given."""
        # the same operations ToTensor and Normalize apply to one image, so the floats are identical;
        # in place on one float copy, because a batch's extra passes cost a tenth of a forward
        x = pixels.to(torch.float32) if out is None else out.copy_(pixels)
        x.div_(255)
        for step in self.steps:
            x = TF.normalize(x, step.mean, step.std, inplace=True)
        return x

    def __repr__(self) -> str:
        return f"TensorStage({self.steps!r})"


def split_at_to_tensor(transform: Callable) -> tuple[Callable, TensorStage] | None:
    """Returns (PIL stage, batched tensor stage) of a Compose with one ToTensor, or None if it has none."""
    steps = list(getattr(transform, "transforms", None) or [])
    at = [i for i, t in enumerate(steps) if isinstance(t, T.ToTensor)]  # v1: it divides by 255, as below
    if len(at) != 1:
        return None
    head, tail = steps[:at[0]], steps[at[0] + 1:]
    if not all(isinstance(t, T.Normalize | T2.Normalize) for t in tail):
        return None  # a tail that is not per-pixel arithmetic might not batch identically
    return T.Compose(head), TensorStage(tail)


class RecordImages(Dataset):
    """Transformed images (or crops) of records, yielded as (position, CHW tensor)."""

    def __init__(self, records: Sequence[Record], boxes: Mapping[str, tuple[int, int, int, int]],
                 transform: Callable, *, in_workers: bool):
        self.records = records
        self.boxes = boxes
        self.transform = transform
        # a worker's exception reaches the caller wrapped in a worker traceback, so workers hand back None
        # and the main process re-reads that record to raise its RecordError as itself
        self.in_workers = in_workers

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None]:
        try:
            return i, self.load(i)
        except RecordError:
            if self.in_workers:
                return i, None
            raise

    def load(self, i: int) -> torch.Tensor:
        """Returns the transformed image or crop of record `i`; any failure raises RecordError naming it."""
        record = self.records[i]
        image = record.load_image()
        box = self.boxes.get(record.id)
        if box is not None:
            x0, y0, x1, y1 = box
            if not (0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height):
                raise RecordError(f"crop {box} is empty or outside the {image.width}x{image.height} image",
                                  record_id=record.id, file=record.image)
            image = image.crop(box)
        try:
            pixels = self.transform(image)
        except Exception as err:
            raise RecordError(f"the encoder's image transform failed ({type(err).__name__}: {err})",
                              record_id=record.id, file=record.image) from None
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 3:
            raise RecordError(f"the image transform must return a CHW tensor, got {type(pixels).__name__}",
                              record_id=record.id, file=record.image)
        return pixels

    def collate(self, batch: list[tuple[int, torch.Tensor | None]]) -> tuple[list[int], torch.Tensor | list]:
        """Returns (positions, NCHW batch), or (positions, items) when `raise_for_batch` must explain a failure."""
        positions = [i for i, _ in batch]
        items = [pixels for _, pixels in batch]
        if any(p is None for p in items) or len({p.shape for p in items}) > 1:
            return positions, items
        return positions, torch.stack(items)

    def raise_for_batch(self, positions: list[int], items: list[torch.Tensor | None],
                        expected: tuple[int, ...] | None = None) -> None:
        """Raises the RecordError of the first unreadable record, or of the first image whose size differs.

        `expected` is the size the earlier batches had; without it, the batch's first image sets it.
        """
        for i, pixels in zip(positions, items, strict=True):
            if pixels is None:
                self.load(i)
                record = self.records[i]
                raise RecordError("could not be loaded in a DataLoader worker", record_id=record.id,
                                  file=record.image)
        shape = tuple(expected) if expected is not None else tuple(items[0].shape)
        for i, pixels in zip(positions, items, strict=True):
            if tuple(pixels.shape) != shape:
                record = self.records[i]
                raise RecordError(f"transformed to {tuple(pixels.shape)}, unlike {shape} for the records before "
                                  "it; the eval transform must fix the size", record_id=record.id, file=record.image)


def pixel_bytes(records: Sequence[Record], side: tuple[int, int] | None = None) -> int:
    """Returns the bytes an RGB uint8 array of `records` takes: at `side` (h, w), or at their own sizes."""
    return sum(3 * (side[0] * side[1] if side else r.width * r.height) for r in records)


def decoded_pixels(records: RecordSet, *, stage: Callable | None = None,
                   boxes: Mapping[str, tuple[int, int, int, int]] | None = None,
                   cache_dir: Path | None = None, batch_size: int = 256, num_workers: int = 0,
                   progress: bool = True, max_bytes: int | None = None) -> np.ndarray | None:
    """Returns the uint8 [N, C, H, W] pixels of `records` in order: each image (or its box), through `stage`.

    Every output must have one shape (the stage resizes, or the images share a size); a record whose
    does not raises RecordError naming it. With `cache_dir` the array is stored as
    `<cache_dir>/<key>.npy` (written atomically) and returned memory-mapped, copy-on-write: writable
    without a copy (as torch.from_numpy wants), and never writing back to the file. With `max_bytes`,
    an array that is not cached yet is not built when the records' images hold more (`pixel_bytes`):
    the result is then None.
    """
    from dejavu.embed import cache_key  # embed imports this module

    boxes = dict(boxes or {})
    path = None
    if cache_dir is not None:
        key = cache_key("pixels", records.fingerprint(), sorted(boxes.items()), stable_repr(stage))
        path = Path(cache_dir) / f"{key}.npy"
        if path.is_file():
            try:
                array = np.load(path, mmap_mode="c")
                if array.dtype == np.uint8 and array.ndim == 4 and array.shape[0] == len(records):
                    return array
            except (OSError, ValueError) as err:
                log.warning("ignoring unreadable pixel cache %s (%s); decoding again", path, err)
    if max_bytes is not None and pixel_bytes(records) > max_bytes:
        return None

    def transform(image: Image.Image) -> torch.Tensor:
        return pil_to_uint8(stage(image) if stage is not None else image)

    dataset = RecordImages(list(records), boxes, transform, in_workers=num_workers > 0)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=dataset.collate)
    array: np.ndarray | None = None
    for positions, pixels in tqdm(loader, desc=f"decoding {records.name}", disable=not progress):
        expected = array.shape[1:] if array is not None else None
        if isinstance(pixels, list) or (expected is not None and tuple(pixels.shape[1:]) != expected):
            dataset.raise_for_batch(positions, list(pixels), expected)
        if array is None:
            array = np.empty((len(records), *pixels.shape[1:]), dtype=np.uint8)
        array[positions[0]:positions[-1] + 1] = pixels.numpy()
    if array is None:
        array = np.empty((0, 3, 0, 0), dtype=np.uint8)
    if path is not None:
        with atomic_open(path, "wb") as f:
            np.save(f, array)
    return array
