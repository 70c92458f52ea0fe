"""The ImageNet reader: `<train>/<wnid>/<file>.JPEG` with optional VOC XML boxes `<bbox>/<wnid>/<stem>.xml`.

The label is the wnid folder; boxes and the image size come from the XML. An image without XML has no
boxes (so it can only go to public), and its size is read from the file header, which PIL parses
without decoding pixels.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from dejavu.data.manifest import InvalidRecord, LoadedRecords, RecordChecker
from dejavu.records import Box, Record

IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png"})


def parse_voc(xml_path: Path, record_id: str) -> tuple[int, int, tuple[Box, ...]]:
    """Returns (width, height, boxes) from a VOC annotation file; raises InvalidRecord if malformed."""
    where = {"record_id": record_id, "file": xml_path}
    try:
        root = ET.parse(xml_path).getroot()
        width = int(root.findtext("size/width"))
        height = int(root.findtext("size/height"))
        boxes = tuple(
            Box(*(float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")),
                obj.findtext("name").strip())
            for obj in root.iter("object"))
    except ET.ParseError as err:
        raise InvalidRecord("bad-xml", f"annotation is not valid XML ({err})", **where) from None
    except (TypeError, ValueError, AttributeError):
        raise InvalidRecord("bad-xml", "annotation lacks size/width, size/height, or an object's "
                            "name or bndbox xmin/ymin/xmax/ymax", **where) from None
    return width, height, boxes


def _header_size(image: Path, record_id: str) -> tuple[int, int]:
    """Returns (width, height) from the image file header without decoding the pixels."""
    try:
        with Image.open(image) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as err:
        raise InvalidRecord("unreadable-image", f"image header cannot be read ({err})",
                            record_id=record_id, file=image) from None


def _sorted_entries(folder: Path) -> list[os.DirEntry]:
    """Returns the entries of a folder sorted by name (scandir avoids a stat per file)."""
    with os.scandir(folder) as entries:
        return sorted(entries, key=lambda e: e.name)


def _record(image: Path, wnid: str, bbox_dir: Path | None, checker: RecordChecker) -> Record:
    """Returns the record of one ImageNet training image (checked to lie inside the folder before it is opened)."""
    record_id = image.stem
    checker.inside(image, record_id=record_id, file=image)
    xml_path = bbox_dir / wnid / f"{record_id}.xml" if bbox_dir is not None else None
    if xml_path is not None and xml_path.is_file():
        width, height, boxes = parse_voc(xml_path, record_id)
        source = xml_path
    else:
        (width, height), boxes, source = _header_size(image, record_id), (), image
    objects = tuple(dict.fromkeys(b.label for b in boxes))
    return Record(id=record_id, image=image, width=width, height=height, label=wnid, boxes=boxes,
                  objects=objects or None, source=str(source))


def iter_imagenet(train_dir: Path, bbox_dir: Path | None, checker: RecordChecker) -> Iterator[Record]:
    """Yields the valid records of an ImageNet-layout folder, class by class in name order."""
    for class_entry in _sorted_entries(train_dir):
        if not class_entry.is_dir():
            continue
        for entry in _sorted_entries(Path(class_entry.path)):
            if Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            record = checker.accept(lambda e=entry, w=class_entry.name: _record(Path(e.path), w, bbox_dir, checker))
            if record is not None:
                yield record


def read_imagenet(train_dir: str | Path, bbox_dir: str | Path | None = None, *,
                  on_error: str = "error", allow_outside: bool = False) -> LoadedRecords:
    """Returns the records of an ImageNet training folder, with boxes from `bbox_dir` where present.

    Images (symlinks resolved) must lie inside `train_dir` unless `allow_outside` is set.
    """
    train_dir = Path(train_dir)
    bbox_dir = Path(bbox_dir) if bbox_dir is not None else None
    for path in (train_dir, bbox_dir):
        if path is not None and not path.is_dir():
            raise FileNotFoundError(f"ImageNet folder {str(path)!r} does not exist")
    checker = RecordChecker(on_error, images_root=train_dir, allow_outside=allow_outside)
    return checker.collect(iter_imagenet(train_dir, bbox_dir, checker), name=str(train_dir))
