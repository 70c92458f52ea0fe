"""Training data: which records an epoch visits, and the datasets that turn them into views.

An epoch is a list of positions into a RecordSet. Canaries are duplicated *within* every epoch:
a record with `repeat = r` appears r times in the list, so it is seen r times per epoch
(SPEC section 6). The reference model's list is padded to the target's length with
`matched_length`, so both models take the same number of optimization steps.

Items are addressed by `(epoch, position)` keys from `EpochSampler`, which Lightning tells the
epoch through `set_epoch`. Per-item randomness that must be reproducible (the caption transforms
of `textrand`) is seeded by (seed, epoch, position), and so does not depend on worker count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dejavu.records import Record, RecordError, RecordSet
from mitigations.base import CaptionTransform

ItemKey = tuple[int, int]  # (epoch, position in the epoch's index list)


#: The most samples one epoch may hold (about 0.8 GB of positions). ImageNet with its canaries fits many
#: times over; more means a repeat typed with too many zeros, which would exhaust memory with no message.
MAX_EPOCH_SAMPLES = 100_000_000


def expand_by_repeat(records: Sequence[Record]) -> list[int]:
    """Returns the positions of one epoch: record i listed `records[i].repeat` times, in order."""
    expanded_length(records)  # checks every repeat and the total before anything is allocated
    out: list[int] = []
    for i, record in enumerate(records):
        out.extend([i] * record.repeat)
    return out


def expanded_length(records: Sequence[Record]) -> int:
    """Returns how many samples one epoch over `records` holds, canary repeats included.

    Raises RecordError for a repeat that is not a positive integer, or when the epoch would hold more
    than MAX_EPOCH_SAMPLES, naming the record with the largest repeat.
    """
    total, largest = 0, None
    for record in records:
        if isinstance(record.repeat, bool) or not isinstance(record.repeat, int) or record.repeat < 1:
            raise RecordError(f"repeat must be a positive integer, got {record.repeat!r}",
                              record_id=record.id, file=record.source)
        total += record.repeat
        if largest is None or record.repeat > largest.repeat:
            largest = record
    if total > MAX_EPOCH_SAMPLES:
        raise RecordError(f"one epoch would hold {total} samples, more than the limit of {MAX_EPOCH_SAMPLES}; "
                          f"this record alone is repeated {largest.repeat}x; lower the repeats",
                          record_id=largest.id, file=largest.source)
    return total


def matched_length(records: Sequence[Record], target_len: int, seed: int) -> list[int]:
    """Returns one epoch's positions over `records`, padded with seeded extra draws to `target_len`.

    The extra samples are drawn without replacement from a seeded permutation (cycling through
    fresh permutations when more than one pass is needed), so no record is favoured.
    """
    if target_len > MAX_EPOCH_SAMPLES:
        raise ValueError(f"an epoch of {target_len} samples is more than the limit of {MAX_EPOCH_SAMPLES}; "
                         "lower the repeats of the target's training records")
    base = expand_by_repeat(records)
    if target_len < len(base):
        raise ValueError(f"target length {target_len} is shorter than one epoch over {records!r:.40} "
                         f"({len(base)} samples); it can only be padded, not truncated")
    if not records:
        raise ValueError("cannot pad an empty record set")
    rng = np.random.default_rng(seed)
    extra: list[int] = []
    while len(base) + len(extra) < target_len:
        extra.extend(rng.permutation(len(records)).tolist())
    return base + extra[: target_len - len(base)]


class EpochSampler(Sampler[ItemKey]):
    """Yields (epoch, position) keys in a permutation seeded by (seed, epoch); this rank's share of it.

    With several processes each rank takes every `world_size`-th key of the same permutation
    (wrapping around so all ranks get equally many), which replaces Lightning's distributed
    sampler: that one would not pass the epoch on to this sampler.
    """

    def __init__(self, length: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, {world_size})")
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.length / self.world_size)

    def __iter__(self):
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.length) if self.shuffle
                 else np.arange(self.length))
        order = np.resize(order, len(self) * self.world_size)[self.rank::self.world_size]
        return iter([(self.epoch, int(p)) for p in order])


class ImageTrainingSet(Dataset):
    """Maps a key to (transformed image or list of views, class index or -1)."""

    def __init__(self, records: RecordSet, indices: Sequence[int], transform: Callable,
                 classes: Sequence[str] | None = None):
        self.records, self.indices, self.transform = records, list(indices), transform
        self.class_index = {c: i for i, c in enumerate(classes)} if classes is not None else None
        if self.class_index is not None:
            for r in records:
                if r.label not in self.class_index:
                    raise RecordError(f"label {r.label!r} is not one of the model's classes",
                                      record_id=r.id, file=r.image)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: ItemKey):
        record = self.records[self.indices[key[1]]]
        target = self.class_index[record.label] if self.class_index is not None else -1
        return self.transform(record.load_image()), target


class PixelTrainingSet(Dataset):
    """Maps keys to a whole batch at once: (uint8 NCHW images, class indices or -1), gathered in one index.

    The images come decoded (`dejavu.pixels.decoded_pixels`); the recipe makes its views from the
    batch on its device (`RecipeModule.on_after_batch_transfer`), so no per-image work is left here.
    """

    def __init__(self, pixels: np.ndarray, indices: Sequence[int], targets: Sequence[int]):
        if len(pixels) != len(targets):
            raise ValueError(f"{len(pixels)} decoded images but {len(targets)} targets")
        self.pixels = torch.from_numpy(np.ascontiguousarray(pixels))
        self.indices = torch.as_tensor(list(indices), dtype=torch.long)
        self.targets = torch.as_tensor(list(targets), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: ItemKey) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.indices[key[1]]
        return self.pixels[row], self.targets[row]

    def __getitems__(self, keys: Sequence[ItemKey]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.indices[torch.as_tensor([position for _, position in keys], dtype=torch.long)]
        return self.pixels[rows], self.targets[rows]

    @staticmethod
    def collate(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the batch `__getitems__` already gathered."""
        return batch


class CaptionedImageSet(Dataset):
    """Maps a key to (transformed image, caption tokens); captions are re-randomized every step."""

    def __init__(self, records: RecordSet, indices: Sequence[int], transform: Callable,
                 tokenizer: Callable, caption_transforms: Sequence[CaptionTransform], seed: int):
        for r in records:
            if not r.caption:
                raise RecordError("record has no caption; image-text recipes need one per record",
                                  record_id=r.id, file=r.source or r.image)
        self.records, self.indices, self.transform = records, list(indices), transform
        self.tokenizer, self.caption_transforms, self.seed = tokenizer, tuple(caption_transforms), seed

    def __len__(self) -> int:
        return len(self.indices)

    def caption_at(self, key: ItemKey) -> str:
        """Returns the caption the model is fed for this key, after every caption transform."""
        epoch, position = key
        caption = self.records[self.indices[position]].caption
        rng = np.random.default_rng([self.seed, epoch, position])
        for transform in self.caption_transforms:
            caption = transform(caption, rng)
        return caption

    def __getitem__(self, key: ItemKey):
        record = self.records[self.indices[key[1]]]
        tokens: torch.Tensor = self.tokenizer([self.caption_at(key)])[0]
        return self.transform(record.load_image()), tokens


class TrainingData(L.LightningDataModule):
    """Serves one training dataset in seeded, epoch-keyed order; drops the last partial batch."""

    def __init__(self, dataset: Dataset, batch_size: int, num_workers: int, seed: int):
        super().__init__()
        if len(dataset) < batch_size:
            raise ValueError(f"the training epoch has {len(dataset)} samples, fewer than one batch "
                             f"({batch_size}); lower train.batch_size or add records")
        self.dataset, self.batch_size, self.num_workers, self.seed = dataset, batch_size, num_workers, seed

    def train_dataloader(self) -> DataLoader:
        """Returns the loader; partial batches are dropped because batch norm needs > 1 sample."""
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        return DataLoader(self.dataset, batch_size=self.batch_size,
                          sampler=EpochSampler(len(self.dataset), self.seed, rank=rank, world_size=world_size),
                          num_workers=self.num_workers, drop_last=True,
                          collate_fn=getattr(self.dataset, "collate", None),
                          persistent_workers=self.num_workers > 0)
