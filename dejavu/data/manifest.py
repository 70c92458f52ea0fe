"""The manifest reader and writer: a folder with `manifest.jsonl` (or `manifest.parquet`) and images.

One record per line: `id`, `image` (relative to the folder), `width`, `height`, `label`, `boxes`
(`[x0, y0, x1, y1, label]` or `{"x0":..,"y0":..,"x1":..,"y1":..,"label":..}`), `caption`, `objects`,
`split`, and optionally `tags` and `repeat`. Unknown keys land in `Record.extra`. Reading streams the
lines and never opens an image. Every problem either raises a RecordError naming the line, id and file
(`on_error="error"`, the default) or is counted by reason (`on_error="exclude"`); nothing is dropped
silently.

Image paths must stay inside the dataset folder once resolved (symlinks followed): a manifest cannot
make the suite read `/etc/passwd` or `../../secret.png`. `allow_outside=True` (the command line's
`--allow-outside-paths`) trusts the manifest instead.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from dejavu.files import atomic_open
from dejavu.records import MAX_REPEAT, SPLITS, Box, Record, RecordError, RecordSet

JSONL = "manifest.jsonl"
PARQUET = "manifest.parquet"
ON_ERROR = ("error", "exclude")
KNOWN_KEYS = frozenset({"id", "image", "width", "height", "label", "boxes", "caption", "objects",
                        "split", "tags", "repeat"})


class InvalidRecord(RecordError):
    """A RecordError that also carries a short machine-readable reason, used to count exclusions."""

    def __init__(self, reason: str, message: str, *, record_id: str | None = None,
                 file: str | Path | None = None):
        super().__init__(message, record_id=record_id, file=file)
        self.reason = reason


class LoadedRecords(RecordSet):
    """A RecordSet read from files, remembering how many inputs were excluded and why."""

    def __init__(self, records: Iterable[Record], *, name: str = "records",
                 exclusions: Counter | None = None, excluded: list[str] | None = None):
        super().__init__(records, name=name)
        self.exclusions: Counter = exclusions if exclusions is not None else Counter()
        self.excluded: list[str] = excluded if excluded is not None else []


class RecordChecker:
    """Validates records as a reader makes them: raises, or counts exclusions by reason.

    With `images_root`, every record's image must resolve (symlinks followed) inside that folder,
    unless `allow_outside` says the dataset is trusted.
    """

    def __init__(self, on_error: str = "error", *, images_root: str | Path | None = None,
                 allow_outside: bool = False):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.on_error = on_error
        self.exclusions: Counter = Counter()
        self.excluded: list[str] = []  # the full messages, so a report can say exactly what was left out
        self._seen: set[str] = set()
        self.images_root = Path(images_root) if images_root is not None else None
        self._real_root = os.path.realpath(images_root) if images_root is not None and not allow_outside else None

    def inside(self, image: Path, *, record_id: str | None, file: str | Path | None) -> Path:
        """Returns `image` if it resolves inside the images root (or no root is enforced); raises InvalidRecord."""
        if self._real_root is None:
            return image
        real = os.path.realpath(image)
        if os.path.commonpath([self._real_root, real]) != self._real_root:
            raise InvalidRecord("outside-folder", f"image {str(image)!r} resolves to {real!r}, outside the dataset "
                                f"folder {str(self.images_root)!r}; move the image into the folder, or pass "
                                "--allow-outside-paths (allow_outside=True) if you trust this dataset",
                                record_id=record_id, file=file)
        return image

    def accept(self, make_record) -> Record | None:
        """Returns the record `make_record()` builds if it is valid; None if excluded (and counted)."""
        try:
            record = make_record()
            check_record(record)
            self.inside(record.image, record_id=record.id, file=record.source)
            if record.id in self._seen:
                raise InvalidRecord("duplicate-id", "duplicate id; ids must be unique across the dataset",
                                    record_id=record.id, file=record.source)
        except InvalidRecord as err:
            if self.on_error == "error":
                raise
            self.exclusions[err.reason] += 1
            self.excluded.append(str(err))
            return None
        self._seen.add(record.id)
        return record

    def collect(self, records: Iterable[Record | None], name: str) -> LoadedRecords:
        """Returns the accepted records with this checker's exclusion counts attached."""
        return LoadedRecords((r for r in records if r is not None), name=name,
                             exclusions=self.exclusions, excluded=self.excluded)


def check_record(record: Record) -> None:
    """Returns None if the record's annotations are consistent; raises InvalidRecord otherwise."""
    where = {"record_id": record.id, "file": record.source}
    if record.width <= 0 or record.height <= 0:
        raise InvalidRecord("bad-size", f"width and height must be positive, got {record.width}x{record.height}",
                            **where)
    for box in record.boxes:
        if not (box.x0 < box.x1 and box.y0 < box.y1):
            raise InvalidRecord("empty-box", f"box {box.as_list()} has x0 >= x1 or y0 >= y1", **where)
        if box.x0 < 0 or box.y0 < 0 or box.x1 > record.width or box.y1 > record.height:
            raise InvalidRecord("box-outside-image",
                                f"box {box.as_list()} lies outside the {record.width}x{record.height} image",
                                **where)
    if record.caption is not None and not record.caption.strip():
        raise InvalidRecord("empty-caption", "caption is empty; use null for no caption", **where)
    if record.split is not None and record.split not in SPLITS:
        raise InvalidRecord("bad-split", f"split {record.split!r} is not one of {SPLITS} or null", **where)
    if not 1 <= record.repeat <= MAX_REPEAT:
        raise InvalidRecord("bad-repeat", f"repeat must be an integer in [1, {MAX_REPEAT}] (times the record is "
                            f"seen per epoch), got {record.repeat}", **where)


def _box(value, where: dict) -> Box:
    """Returns a Box from a list `[x0, y0, x1, y1, label]` or a dict with those keys."""
    if isinstance(value, dict):
        value = [value.get(k) for k in ("x0", "y0", "x1", "y1", "label")]
    if not isinstance(value, list | tuple) or len(value) != 5:
        raise InvalidRecord("bad-box", f"box {value!r} is not [x0, y0, x1, y1, label]", **where)
    *coords, label = value
    if not all(isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) for c in coords):
        raise InvalidRecord("bad-box", f"box {value!r} has non-numeric coordinates", **where)
    if not isinstance(label, str):
        raise InvalidRecord("bad-box", f"box {value!r} has no string label", **where)
    return Box(*(float(c) for c in coords), label)


def _strings(value, key: str, where: dict) -> tuple[str, ...] | None:
    """Returns a tuple of strings from a JSON list (None stays None)."""
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidRecord(f"bad-{key}", f"{key} must be a list of strings, got {value!r}", **where)
    return tuple(value)


def _optional_str(value, key: str, where: dict) -> str | None:
    """Returns the value if it is a string or None; raises InvalidRecord otherwise."""
    if value is not None and not isinstance(value, str):
        raise InvalidRecord(f"bad-{key}", f"{key} must be a string or null, got {value!r}", **where)
    return value


def _int(value, key: str, where: dict) -> int:
    """Returns the value if it is an integer (not a bool); raises InvalidRecord otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRecord(f"bad-{key}", f"{key} must be an integer, got {value!r}", **where)
    return value


def record_from_dict(obj, *, root: Path, source: Path, line: int) -> Record:
    """Returns the Record that one manifest row describes; raises InvalidRecord naming line and file."""
    if not isinstance(obj, dict):
        raise InvalidRecord("not-an-object", f"line {line} is not a JSON object", file=source)
    record_id = obj.get("id")
    if not isinstance(record_id, str) or not record_id:
        raise InvalidRecord("missing-id", f"line {line} has no string 'id'", file=source)
    where = {"record_id": record_id, "file": source}
    image = obj.get("image")
    if not isinstance(image, str) or not image:
        raise InvalidRecord("missing-image", f"line {line} has no 'image' path", **where)
    tags = _strings(obj.get("tags"), "tags", where) or ()
    repeat = obj.get("repeat")
    return Record(
        id=record_id,
        image=root / image,
        width=_int(obj.get("width"), "width", where),
        height=_int(obj.get("height"), "height", where),
        label=_optional_str(obj.get("label"), "label", where),
        boxes=tuple(_box(b, where) for b in (obj.get("boxes") or ())),
        caption=_optional_str(obj.get("caption"), "caption", where),
        objects=_strings(obj.get("objects"), "objects", where),
        split=_optional_str(obj.get("split"), "split", where),
        tags=tags,
        repeat=1 if repeat is None else _int(repeat, "repeat", where),
        source=str(source),
        extra={k: v for k, v in obj.items() if k not in KNOWN_KEYS},
    )


def _jsonl_rows(path: Path) -> Iterator[tuple[int, object]]:
    """Yields (line number, parsed JSON, or the InvalidRecord of a bad line) for each non-blank line."""
    with path.open("rb") as lines:  # bytes: a line that is not UTF-8 is one bad line, not a failed file
        for number, raw in enumerate(lines, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield number, InvalidRecord("not-utf8", f"line {number} is not UTF-8 (byte 0x{raw[err.start]:02x} "
                                            f"at column {err.start + 1}); save the manifest as UTF-8", file=path)
                continue
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as err:
                yield number, InvalidRecord("not-json", f"line {number} is not valid JSON ({err.msg})",
                                            file=path)


def _parquet_rows(path: Path) -> Iterator[tuple[int, object]]:
    """Yields (row number, row dict) for a parquet manifest, streaming it in batches."""
    import pyarrow
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=65536)
    except (pyarrow.ArrowException, OSError) as err:
        raise RecordError(f"not a readable parquet file ({err}); write it again or use manifest.jsonl",
                          file=path) from None
    number = 0
    for batch in batches:
        for row in batch.to_pylist():
            number += 1
            yield number, row


def manifest_file(folder: str | Path) -> Path:
    """Returns the manifest file inside `folder` (jsonl preferred); raises FileNotFoundError if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"manifest folder {str(folder)!r} does not exist")
    for name in (JSONL, PARQUET):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no {JSONL} or {PARQUET} in {str(folder)!r}")


def iter_manifest(folder: str | Path, checker: RecordChecker) -> Iterator[Record]:
    """Yields the valid records of a manifest folder in file order; `checker` raises or counts the rest."""
    path = manifest_file(folder)
    root = path.parent
    rows = _jsonl_rows(path) if path.name == JSONL else _parquet_rows(path)
    for number, obj in rows:
        def make(obj=obj, number=number):
            if isinstance(obj, InvalidRecord):
                raise obj
            return record_from_dict(obj, root=root, source=path, line=number)

        record = checker.accept(make)
        if record is not None:
            yield record


def read_manifest(folder: str | Path, *, on_error: str = "error", allow_outside: bool = False) -> LoadedRecords:
    """Returns the records of a manifest folder; with on_error="exclude", bad rows are counted, not raised.

    Images must lie inside `folder` (symlinks resolved) unless `allow_outside` is set.
    """
    checker = RecordChecker(on_error, images_root=folder, allow_outside=allow_outside)
    return checker.collect(iter_manifest(folder, checker), name=str(folder))


def write_manifest(records: Iterable[Record], folder: str | Path) -> Path:
    """Returns the path of the `manifest.jsonl` written atomically into `folder` (image paths relative)."""
    folder = Path(folder)
    target = folder / JSONL
    with atomic_open(target, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record.to_json(root=folder), ensure_ascii=False) + "\n")
    return target
