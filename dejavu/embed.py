"""Embeddings keyed by record id, and a content-addressed disk cache for them.

`embed_records` embeds full images or background crops with an Encoder's image side, and
`embed_captions` embeds captions with its text side. Both return `Embeddings`, which keep the ids
beside the vectors so that nothing downstream joins by position (SPEC section 1). A result is
cached under the hash of (encoder fingerprint, records fingerprint, crops, layer, transform), so a
re-run loads it instead of recomputing (DESIGN: "cache by content").
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dejavu.encoders import Encoder, NonFiniteEmbeddingError
from dejavu.files import atomic_open
from dejavu.finite import non_finite_rows
from dejavu.pixels import (
    MAX_PIXEL_BYTES,
    RecordImages,
    decoded_pixels,
    split_at_to_tensor,
    stable_repr,
)
from dejavu.records import RecordError, RecordSet

log = logging.getLogger(__name__)


class MissingIdsError(KeyError):
    """Some requested ids have no embedding; the message lists them."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


@dataclass(frozen=True)
class Embeddings:
    """Embedding rows `vectors[i]` of the records `ids[i]`, float32 [n, d]."""

    ids: list[str]
    vectors: torch.Tensor

    def __post_init__(self):
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.ids):
            raise ValueError(f"embeddings need one row per id: {len(self.ids)} ids, "
                             f"vectors of shape {tuple(self.vectors.shape)}")
        if self.vectors.dtype != torch.float32:
            raise ValueError(f"embeddings must be float32, got {self.vectors.dtype}")
        if len(set(self.ids)) != len(self.ids):
            seen: set[str] = set()
            dup = next(i for i in self.ids if i in seen or seen.add(i))
            raise ValueError(f"duplicate id {dup!r} in embeddings")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        """Returns the embedding width d."""
        return self.vectors.shape[1]

    def subset(self, ids: Iterable[str], *, what: str = "records") -> Embeddings:
        """Returns the rows of `ids`, in that order; absent ids raise MissingIdsError listing them."""
        ids = list(ids)
        position = {rid: i for i, rid in enumerate(self.ids)}
        missing = [rid for rid in ids if rid not in position]
        if missing:
            shown = ", ".join(missing[:20]) + (" …" if len(missing) > 20 else "")
            raise MissingIdsError(f"{len(missing)} {what} are missing from the embeddings: {shown}")
        rows = torch.tensor([position[rid] for rid in ids], dtype=torch.long)
        return Embeddings(ids, self.vectors[rows])


def cache_key(*parts: object) -> str:
    """Returns a 32-hex-digit hash of the JSON form of `parts` (strings, numbers, lists, dicts)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def crop_box(crop: object) -> tuple[int, int, int, int]:
    """Returns the integer (x0, y0, x1, y1) of a crop: an object with `.box`, a Box, or a 4-sequence."""
    box = getattr(crop, "box", crop)
    coords = (box.x0, box.y0, box.x1, box.y1) if hasattr(box, "x0") else tuple(box)
    if len(coords) != 4:
        raise ValueError(f"a crop box needs 4 coordinates (x0, y0, x1, y1), got {coords!r}")
    return tuple(int(round(float(c))) for c in coords)  # type: ignore[return-value]


def _load_cached(path: Path, ids: list[str]) -> Embeddings | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        ids_stored = blob["ids"]  # one JSON string; a list in caches written before
        cached = Embeddings(json.loads(ids_stored) if isinstance(ids_stored, str) else list(ids_stored),
                            blob["vectors"])
    except Exception as err:  # a damaged file is recomputed, not trusted
        log.warning("ignoring unreadable embedding cache %s (%s); recomputing", path, err)
        return None
    if cached.ids != ids:
        log.warning("embedding cache %s holds other ids than requested; recomputing", path)
        return None
    log.info("loaded %d cached embeddings from %s", len(cached), path)
    return cached


def _save_atomically(embeddings: Embeddings, path: Path, meta: dict) -> None:
    with atomic_open(path, "wb") as f:  # a file object: a full disk then raises OSError, not RuntimeError
        # the ids as one string: torch's pickler calls back into Python for every object of a list
        torch.save({"ids": json.dumps(embeddings.ids), "vectors": embeddings.vectors, "meta": meta}, f)


def _cached(cache_dir: Path | None, key_parts: tuple, ids: list[str],
            compute: Callable[[], Embeddings]) -> Embeddings:
    """Returns the cached embeddings for `key_parts`, computing and saving them on a miss."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"{cache_key(*key_parts)}.pt"
    cached = _load_cached(path, ids)
    if cached is not None:
        return cached
    result = compute()
    _save_atomically(result, path, meta={"key": [str(p) for p in key_parts]})
    return result


def _pixel_batches(transform: Callable, records: RecordSet, boxes: Mapping[str, tuple[int, int, int, int]], *,
                   cache_dir: Path | None, batch_size: int, num_workers: int, progress: bool
                   ) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yields (positions, NCHW batch) of the transformed images (or crops) of `records`, in order.

    An eval transform that splits at ToTensor has its PIL stage run once into a uint8 pixel array
    (`dejavu.pixels`), cached beside the embeddings and shared by every model with that stage; its
    tensor stage then runs per batch, into one float buffer: a batch is valid until the next is drawn.
    Any other transform, or an array too large to hold, streams each image through the whole transform
    in a DataLoader.
    """
    stages = split_at_to_tensor(transform)
    pixels = None
    if stages is not None:
        pil_stage, tensor_stage = stages
        pixels = decoded_pixels(records, stage=pil_stage, boxes=boxes,
                                cache_dir=Path(cache_dir) / "pixels" if cache_dir is not None else None,
                                num_workers=num_workers, progress=progress, max_bytes=MAX_PIXEL_BYTES)
    if pixels is not None:
        # one float buffer for every batch: a fresh 3 MB tensor per batch costs its page faults each time
        buffer = torch.empty((min(batch_size, len(records)), *pixels.shape[1:]), dtype=torch.float32)
        for start in tqdm(range(0, len(records), batch_size), desc=f"embedding {records.name}",
                          disable=not progress):
            stop = min(start + batch_size, len(records))
            batch = torch.from_numpy(np.asarray(pixels[start:stop]))
            yield list(range(start, stop)), tensor_stage(batch, out=buffer[:stop - start])
        return
    dataset = RecordImages(list(records), boxes, transform, in_workers=num_workers > 0)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=dataset.collate)
    expected = None  # the size of the earlier batches' images
    for positions, pixels in tqdm(loader, desc=f"embedding {records.name}", disable=not progress):
        if isinstance(pixels, list) or (expected is not None and tuple(pixels.shape[1:]) != expected):
            dataset.raise_for_batch(positions, list(pixels), expected)
        expected = tuple(pixels.shape[1:])
        yield positions, pixels


def _non_finite_error(rid: str, file: object | None, what: str) -> ValueError:
    where = f" (file {str(file)!r})" if file is not None else ""
    return ValueError(f"the encoder produced NaN/Inf {what} embeddings, first for record {rid!r}{where}; "
                      f"check the model weights and the input")


def embed_records(encoder: Encoder, records: RecordSet, *, crops: Mapping[str, object] | None = None,
                  cache_dir: Path | None = None, batch_size: int = 256, num_workers: int = 0,
                  progress: bool = True) -> Embeddings:
    """Returns the image embeddings of `records` in their order: the crop where `crops` has one, else the full image.

    `crops` maps record id to a crop (anything with `.box`, a Box, or (x0, y0, x1, y1) in pixels);
    crops of ids not in `records` are ignored. With `cache_dir`, the result is read from or written
    to `cache_dir/<key>.pt`.
    """
    boxes = {rid: crop_box(c) for rid, c in (crops or {}).items() if rid in records}
    ids = records.ids
    key_parts = ("images", encoder.fingerprint, records.fingerprint(), sorted(boxes.items()),
                 encoder.layer, stable_repr(encoder.image_transform))

    def compute() -> Embeddings:
        chunks = []
        batches = _pixel_batches(encoder.image_transform, records, boxes, cache_dir=cache_dir,
                                 batch_size=batch_size, num_workers=num_workers, progress=progress)
        for positions, pixels in batches:
            try:
                out = encoder.embed_images(pixels)
            except NonFiniteEmbeddingError as err:
                record = records[positions[err.rows[0]]]
                raise _non_finite_error(record.id, record.image, "image") from None
            out = out.detach().float().cpu()
            if out.untyped_storage().data_ptr() == pixels.untyped_storage().data_ptr():
                out = out.clone()  # a view of the input batch, whose buffer the next batch overwrites
            chunks.append(out)
        vectors = torch.cat(chunks) if chunks else torch.empty(0, 0)
        bad = non_finite_rows(vectors)
        if bad:
            raise _non_finite_error(ids[bad[0]], records[bad[0]].image, "image")
        return Embeddings(ids, vectors)

    return _cached(cache_dir, key_parts, ids, compute)


def embed_captions(encoder: Encoder, texts_by_id: Mapping[str, str], *, cache_dir: Path | None = None,
                   batch_size: int = 256, progress: bool = True) -> Embeddings:
    """Returns the L2-normalized text embeddings of `texts_by_id`, in its order, cached like `embed_records`."""
    if not encoder.supports_text:
        raise TypeError(f"{encoder!r} has no text encoder; the caption test needs a vision-language model")
    ids = list(texts_by_id)
    texts = []
    for rid in ids:
        text = texts_by_id[rid]
        if not isinstance(text, str):
            raise RecordError(f"caption must be a string, got {type(text).__name__}; add a caption or drop "
                              f"the record from the caption test", record_id=rid)
        texts.append(text)
    key_parts = ("texts", encoder.fingerprint, cache_key(list(zip(ids, texts, strict=True))))

    def compute() -> Embeddings:
        chunks = []
        for start in tqdm(range(0, len(texts), batch_size), desc="embedding captions", disable=not progress):
            try:
                out = encoder.embed_texts(texts[start:start + batch_size])
            except NonFiniteEmbeddingError as err:
                raise _non_finite_error(ids[start + err.rows[0]], None, "text") from None
            chunks.append(out.detach().float().cpu())
        vectors = torch.cat(chunks) if chunks else torch.empty(0, 0)
        bad = non_finite_rows(vectors)
        if bad:
            raise _non_finite_error(ids[bad[0]], None, "text")
        return Embeddings(ids, vectors)

    return _cached(cache_dir, key_parts, ids, compute)
