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
from dejavu.records import Box, Record


def _load_json(path: Path) -> dict:
    """Returns the parsed JSON file; a malformed file raises InvalidRecord naming it."""
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise InvalidRecord("not-json", f"not valid JSON ({err.msg}, line {err.lineno})", file=path) from None


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
              *, on_error: str = "error") -> LoadedRecords:
    """Returns one record per image listed in `instances_json`, with boxes, objects and captions."""
    images_dir, instances_json = Path(images_dir), Path(instances_json)
    captions_path = Path(captions_json) if captions_json is not None else None
    for path in (images_dir, instances_json, captions_path):
        if path is not None and not path.exists():
            raise FileNotFoundError(f"COCO path {str(path)!r} does not exist")
    instances = _load_json(instances_json)
    names = {c["id"]: c["name"] for c in instances.get("categories", [])}
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in instances.get("annotations", []):
        by_image[ann.get("image_id")].append(ann)
    captions: dict[int, list[str]] = defaultdict(list)
    if captions_path is not None:
        for ann in sorted(_load_json(captions_path).get("annotations", []), key=lambda a: a.get("id", 0)):
            captions[ann.get("image_id")].append(str(ann.get("caption") or "").strip())
    checker = RecordChecker(on_error)
    records = (checker.accept(lambda im=image: _record(im, images_dir, instances_json, by_image[im.get("id")],
                                                       names, captions[im.get("id")]))
               for image in instances.get("images", []))
    return checker.collect(records, name=str(instances_json))
