"""The Record: one image with its annotations, the unit every part of the suite passes around.

Every reader (scenes, manifest, imagenet, coco) yields Records; everything downstream keeps
their string ids and never joins arrays by position (SPEC section 1).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from dejavu.digests import file_digests

SPLITS = ("A", "B", "public", "eval")
#: The most times one record may be seen per epoch. Canaries are seen tens of times; a repeat in the
#: millions is a typo, and would build an epoch that does not fit in memory.
MAX_REPEAT = 10_000


class RecordError(ValueError):
    """Bad input that names the record, the file, and what to do about it."""

    def __init__(self, message: str, *, record_id: str | None = None, file: str | Path | None = None):
        where = []
        if record_id is not None:
            where.append(f"record {record_id!r}")
        if file is not None:
            where.append(f"file {str(file)!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.record_id = record_id
        self.file = str(file) if file is not None else None


@dataclass(frozen=True)
class Box:
    """A foreground box in pixels, half-open [x0, x1) x [y0, y1), with its object label."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str

    def as_list(self) -> list:
        return [self.x0, self.y0, self.x1, self.y1, self.label]


@dataclass(frozen=True)
class Record:
    """One image and its annotations; the image is decoded only by `load_image`."""

    id: str
    image: Path
    width: int
    height: int
    label: str | None = None
    boxes: tuple[Box, ...] = ()
    caption: str | None = None
    objects: tuple[str, ...] | None = None
    split: str | None = None
    tags: tuple[str, ...] = ()
    repeat: int = 1
    source: str | None = None  # the file the record was read from, for error messages
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_canary(self) -> bool:
        return self.repeat > 1

    def load_image(self) -> Image.Image:
        """Returns the decoded RGB image; a missing or corrupt file raises RecordError naming both."""
        try:
            with Image.open(self.image) as img:
                return img.convert("RGB")
        except FileNotFoundError:
            raise RecordError("image file does not exist; fix the path in the manifest",
                              record_id=self.id, file=self.image) from None
        except Image.DecompressionBombError as err:
            raise RecordError(f"image is too large to decode safely ({err}); resize it or remove the record",
                              record_id=self.id, file=self.image) from None
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise RecordError(f"image file cannot be decoded ({err}); replace or remove it",
                              record_id=self.id, file=self.image) from None

    def to_json(self, root: Path | None = None) -> dict:
        """Returns the manifest.jsonl object for this record (image path relative to `root`)."""
        image = Path(self.image)
        if root is not None:
            try:
                image = image.relative_to(root)
            except ValueError:
                pass
        out = {
            "id": self.id,
            "image": str(image),
            "width": self.width,
            "height": self.height,
            "label": self.label,
            "boxes": [b.as_list() for b in self.boxes],
            "caption": self.caption,
            "objects": list(self.objects) if self.objects is not None else None,
            "split": self.split,
            "tags": list(self.tags),
            "repeat": self.repeat,
        }
        out.update(self.extra)
        return out


class RecordSet(Sequence[Record]):
    """An ordered, id-indexed collection of records with a content fingerprint."""

    def __init__(self, records: Iterable[Record], *, name: str = "records"):
        self._records = list(records)
        self.name = name
        self._fingerprint: str | None = None  # records are frozen, so the hash is computed once
        self._index: dict[str, int] = {}
        for i, r in enumerate(self._records):
            if r.id in self._index:
                raise RecordError("duplicate id; ids must be unique across the dataset",
                                  record_id=r.id, file=r.source)
            self._index[r.id] = i

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return RecordSet(self._records[i], name=self.name)
        return self._records[i]

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._index

    def by_id(self, record_id: str) -> Record:
        try:
            return self._records[self._index[record_id]]
        except KeyError:
            raise KeyError(f"no record with id {record_id!r} in {self.name}") from None

    @property
    def ids(self) -> list[str]:
        return list(self._index)  # ids in record order, as the index was built

    def where(self, **conditions) -> RecordSet:
        """Returns the records whose attributes equal every given value, e.g. where(split="A")."""
        keep = [r for r in self._records if all(getattr(r, k) == v for k, v in conditions.items())]
        return RecordSet(keep, name=self.name)

    def fingerprint(self) -> str:
        """Returns a short hash of the records' content (ids, image bytes, annotations), for caches and run ids.

        Each image enters by the SHA-256 of its bytes (dejavu.digests), never by its path, so the
        fingerprint does not depend on where the data or the cache lives, and an image overwritten
        in place changes it. It is computed once per RecordSet: every embedding and pixel cache asks
        for it, and on 5000 records it cost as much as embedding them with a small CNN.
        """
        if self._fingerprint is None:
            digests = file_digests((r.image for r in self._records), missing_ok=True)
            self._fingerprint = self._hash(lambda r: digests[Path(r.image)])
        return self._fingerprint

    def path_fingerprint(self) -> str:
        """Returns the fingerprint of releases before content digests (image by absolute path).

        Only for finding caches those releases wrote (bench.run adopts their trained models).
        """
        return self._hash(lambda r: str(r.image))

    def _hash(self, image_key) -> str:
        h = hashlib.sha256()
        for r in self._records:
            h.update(json.dumps({**r.to_json(), "image": image_key(r)}, sort_keys=True, default=str).encode())
            h.update(b"\n")
        return h.hexdigest()[:16]
