"""The COCO reader: images, `instances_*.json` (boxes, categories) and optionally `captions_*.json`.

COCO boxes are `[x, y, w, h]` and become `[x, y, x + w, y + h]`. The label is the category of the
largest box, `objects` the set of categories present, the caption the first one by annotation id (all
of them are kept in `extra["captions"]`). Images without annotations have no label and no objects.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from dejavu.data.manifest import InvalidRecord, LoadedRecords, RecordChecker
from dejavu.records import Box, Record, RecordError


def _load_json(path: Path) -> dict:
    """Returns the parsed JSON object of a COCO file; a malformed file raises RecordError naming it."""
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise InvalidRecord("not-json", f"not valid JSON ({err.msg}, line {err.lineno})", file=path) from None
    except UnicodeDecodeError as err:
        raise RecordError(f"not UTF-8 ({err.reason} at byte {err.start}); save it as UTF-8", file=path) from None
    if not isinstance(data, dict):
        raise RecordError(f"the top level is a JSON {type(data).__name__}, not an object with 'images', "
                          "'annotations' and 'categories'; is this a COCO annotation file?", file=path)
    return data


def _objects(data: dict, key: str, path: Path) -> list[dict]:
    """Returns the list `data[key]` (empty if absent); raises RecordError unless it is a list of objects."""
    items = data.get(key, [])
    if not isinstance(items, list):
        raise RecordError(f"'{key}' is a JSON {type(items).__name__}, not a list", file=path)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RecordError(f"{key}[{i}] is {item!r:.60}, not an object", file=path)
    return items


def _category_names(instances: dict, path: Path) -> dict[int, str]:
    """Returns {category id: name}; a category without an id or a string name raises RecordError."""
    names = {}
    for i, category in enumerate(_objects(instances, "categories", path)):
        if "id" not in category or not isinstance(category.get("name"), str):
            lacks = "an 'id'" if "id" not in category else "a string 'name'"
            raise RecordError(f"categories[{i}] ({category!r:.80}) lacks {lacks}; every category needs an id and "
                              "a name", file=path)
        names[category["id"]] = category["name"]
    return names


def _record(image: dict, images_dir: Path, instances_json: Path, annotations: list[dict],
            names: dict[int, str], captions: list[str]) -> Record:
    """Returns the record of one COCO image from its annotations."""
    record_id = str(image.get("id"))
    where = {"record_id": record_id, "file": instances_json}
    try:
        boxes = []
        for ann in annotations:
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes.append(Box(x, y, x + w, y + h, names[ann["category_id"]]))
        width, height, file_name = int(image["width"]), int(image["height"]), image["file_name"]
    except KeyError as err:
        raise InvalidRecord("bad-annotation", f"missing key {err} (or unknown category)", **where) from None
    except (TypeError, ValueError) as err:
        raise InvalidRecord("bad-annotation", f"malformed annotation ({err})", **where) from None
    # max() keeps the first of equally large boxes, so ties follow annotation order.
    largest = max(boxes, key=lambda b: (b.x1 - b.x0) * (b.y1 - b.y0), default=None)
    return Record(id=record_id, image=images_dir / file_name, width=width, height=height,
                  label=largest.label if largest else None, boxes=tuple(boxes),
                  caption=captions[0] if captions else None,
                  objects=tuple(sorted({b.label for b in boxes})), source=str(instances_json),
                  extra={"captions": captions} if captions else {})


def read_coco(images_dir: str | Path, instances_json: str | Path, captions_json: str | Path | None = None,
              *, on_error: str = "error", allow_outside: bool = False) -> LoadedRecords:
    """Returns one record per image listed in `instances_json`, with boxes, objects and captions.

    Images must lie inside `images_dir` (symlinks resolved) unless `allow_outside` is set.
    """
    images_dir, instances_json = Path(images_dir), Path(instances_json)
    captions_path = Path(captions_json) if captions_json is not None else None
    for path in (images_dir, instances_json, captions_path):
        if path is not None and not path.exists():
            raise FileNotFoundError(f"COCO path {str(path)!r} does not exist")
    instances = _load_json(instances_json)
    names = _category_names(instances, instances_json)
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in _objects(instances, "annotations", instances_json):
        by_image[ann.get("image_id")].append(ann)
    captions: dict[int, list[str]] = defaultdict(list)
    if captions_path is not None:
        annotations = _objects(_load_json(captions_path), "annotations", captions_path)
        try:
            annotations = sorted(annotations, key=lambda a: a.get("id", 0))
        except TypeError:
            raise RecordError("annotation ids mix numbers and other types; give every caption a numeric id",
                              file=captions_path) from None
        for ann in annotations:
            captions[ann.get("image_id")].append(str(ann.get("caption") or "").strip())
    checker = RecordChecker(on_error, images_root=images_dir, allow_outside=allow_outside)
    records = (checker.accept(lambda im=image: _record(im, images_dir, instances_json, by_image[im.get("id")],
                                                       names, captions[im.get("id")]))
               for image in _objects(instances, "images", instances_json))
    return checker.collect(records, name=str(instances_json))
