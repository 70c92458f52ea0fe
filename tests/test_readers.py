"""The manifest, ImageNet and COCO readers, and `load_dataset` specs, on hand-made folders."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from dejavu.data import load_dataset, read_coco, read_imagenet, read_manifest, write_manifest
from dejavu.records import Box


def write_lines(folder: Path, rows: list) -> Path:
    """Writes rows (dicts, or raw strings) as manifest.jsonl and returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder


ROW = {"id": "r1", "image": "img/r1.png", "width": 40, "height": 30, "label": "dog",
       "boxes": [[1, 2, 11, 12, "dog"], [20, 0, 40, 30, "car"]], "caption": "a dog", "objects": ["dog", "car"],
       "split": "A", "tags": ["grass"], "repeat": 3, "photographer": "me"}


def test_manifest_row_becomes_a_record_with_extra_kept(tmp_path):
    records = read_manifest(write_lines(tmp_path / "m", [ROW, {"id": "r2", "image": "r2.png", "width": 5,
                                                              "height": 5}]))
    r1, r2 = records
    assert r1.image == tmp_path / "m" / "img" / "r1.png"
    assert r1.boxes == (Box(1.0, 2.0, 11.0, 12.0, "dog"), Box(20.0, 0.0, 40.0, 30.0, "car"))
    assert (r1.label, r1.caption, r1.objects, r1.split, r1.tags, r1.repeat) == (
        "dog", "a dog", ("dog", "car"), "A", ("grass",), 3)
    assert r1.extra == {"photographer": "me"}
    assert r1.source == str(tmp_path / "m" / "manifest.jsonl")
    # Optional fields default to "unknown", not to guesses.
    assert (r2.label, r2.boxes, r2.caption, r2.objects, r2.split, r2.tags, r2.repeat) == (
        None, (), None, None, None, (), 1)
    assert records.exclusions == {}


def test_write_then_read_manifest_round_trips(tiny_records, tmp_path):
    # Rewrite the tiny scenes records into another folder; absolute image paths stay absolute, and so
    # point outside the new folder: reading them back takes the explicit opt-out.
    write_manifest(tiny_records, tmp_path / "copy")
    again = read_manifest(tmp_path / "copy", allow_outside=True)
    assert [r.to_json() for r in again] == [r.to_json() for r in tiny_records]
    assert again.fingerprint() == tiny_records.fingerprint()
    assert not list((tmp_path / "copy").glob(".manifest*"))  # no temporary file left behind


def test_parquet_manifest_matches_jsonl(tmp_path):
    jsonl = read_manifest(write_lines(tmp_path / "j", [ROW]))
    row = dict(ROW, boxes=[dict(zip(("x0", "y0", "x1", "y1", "label"), b, strict=True)) for b in ROW["boxes"]])
    (tmp_path / "p").mkdir()
    pd.DataFrame([row]).to_parquet(tmp_path / "p" / "manifest.parquet")
    parquet = read_manifest(tmp_path / "p")
    (a,), (b,) = jsonl, parquet
    assert (a.boxes, a.label, a.caption, a.objects, a.split, a.tags, a.repeat, a.extra) == (
        b.boxes, b.label, b.caption, b.objects, b.split, b.tags, b.repeat, b.extra)


def test_reading_never_opens_images(tmp_path):
    # The image files do not exist: reading succeeds, decoding is deferred to load_image.
    rows = [dict(ROW, id=f"r{i}", image=f"missing/{i}.png") for i in range(1000)]
    assert len(read_manifest(write_lines(tmp_path / "lazy", rows))) == 1000


def _jpeg(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 200)).save(path)


def _voc(path: Path, width: int, height: int, objects: list[tuple[str, int, int, int, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                   f"<ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
    path.write_text(f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth>"
                    f"</size>{body}</annotation>")


@pytest.fixture
def imagenet(tmp_path):
    train, bbox = tmp_path / "train", tmp_path / "bbox"
    _jpeg(train / "n01" / "n01_1.JPEG", (50, 40))
    _jpeg(train / "n01" / "n01_2.JPEG", (33, 21))
    _jpeg(train / "n02" / "n02_7.JPEG", (60, 60))
    (train / "n02" / "notes.txt").write_text("not an image")
    _voc(bbox / "n01" / "n01_1.xml", 50, 40, [("n01", 5, 6, 25, 30), ("n01", 30, 0, 50, 40)])
    _voc(bbox / "n02" / "n02_7.xml", 60, 60, [("n02", 0, 0, 10, 10)])
    return train, bbox


def test_imagenet_labels_from_folders_and_boxes_from_xml(imagenet):
    records = read_imagenet(*imagenet)
    assert records.ids == ["n01_1", "n01_2", "n02_7"]
    boxed = records.by_id("n01_1")
    assert (boxed.label, boxed.width, boxed.height) == ("n01", 50, 40)
    assert boxed.boxes == (Box(5, 6, 25, 30, "n01"), Box(30, 0, 50, 40, "n01"))
    assert boxed.objects == ("n01",)
    plain = records.by_id("n01_2")  # no XML: size from the header, no boxes
    assert (plain.label, plain.width, plain.height, plain.boxes) == ("n01", 33, 21, ())
    assert records.by_id("n02_7").load_image().size == (60, 60)


def test_imagenet_without_box_folder_reads_every_image(imagenet):
    records = read_imagenet(imagenet[0])
    assert len(records) == 3 and all(r.boxes == () for r in records)


COCO_INSTANCES = {
    "images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 80},
               {"id": 9, "file_name": "b.jpg", "width": 64, "height": 64}],
    "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "frisbee"}],
    "annotations": [{"id": 1, "image_id": 7, "category_id": 2, "bbox": [10, 20, 5, 4]},
                    {"id": 2, "image_id": 7, "category_id": 1, "bbox": [40, 10, 30, 50]},
                    {"id": 3, "image_id": 7, "category_id": 2, "bbox": [0, 0, 2, 2]}],
}
COCO_CAPTIONS = {"annotations": [{"id": 12, "image_id": 7, "caption": "A dog leaps. "},
                                 {"id": 11, "image_id": 7, "caption": "A dog catches a frisbee."}]}


def _coco(tmp_path: Path) -> tuple[Path, Path, Path]:
    (tmp_path / "images").mkdir(parents=True)
    (tmp_path / "inst.json").write_text(json.dumps(COCO_INSTANCES))
    (tmp_path / "caps.json").write_text(json.dumps(COCO_CAPTIONS))
    return tmp_path / "images", tmp_path / "inst.json", tmp_path / "caps.json"


def test_coco_boxes_label_objects_and_captions(tmp_path):
    records = read_coco(*_coco(tmp_path))
    a, b = records.by_id("7"), records.by_id("9")
    assert a.boxes[0] == Box(10.0, 20.0, 15.0, 24.0, "frisbee")  # [x, y, w, h] -> [x0, y0, x1, y1]
    assert a.label == "dog"  # the largest box: 30 x 50
    assert a.objects == ("dog", "frisbee")
    assert a.caption == "A dog catches a frisbee."  # the lowest annotation id comes first
    assert a.extra["captions"] == ["A dog catches a frisbee.", "A dog leaps."]
    assert a.image == tmp_path / "images" / "a.jpg"
    assert (b.label, b.boxes, b.objects, b.caption) == (None, (), (), None)


def test_load_dataset_specs(tmp_path, imagenet):
    assert len(load_dataset(f"manifest:{write_lines(tmp_path / 'm', [ROW])}")) == 1
    assert len(load_dataset(f"imagenet:{imagenet[0]},{imagenet[1]}")) == 3
    images, inst, caps = _coco(tmp_path / "coco")
    assert load_dataset(f"coco:{images},{inst},{caps}").by_id("7").caption == "A dog catches a frisbee."
    assert load_dataset(f"coco:{images},{inst}").by_id("7").caption is None
    scenes = load_dataset("scenes:smoke", root=tmp_path / "data")
    assert len(scenes) == 128 and (tmp_path / "data" / "scenes-smoke-seed0" / "manifest.jsonl").is_file()


def test_load_dataset_rejects_bad_specs_before_any_work(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_dataset(f"manifest:{missing}")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_dataset(f"coco:{tmp_path},{missing}")
    with pytest.raises(ValueError, match="unknown dataset kind"):
        load_dataset("cifar:x")
    with pytest.raises(ValueError, match="comma-separated"):
        load_dataset("coco:onlyone")
    with pytest.raises(ValueError, match="unknown scenes preset"):
        load_dataset("scenes:huge", root=tmp_path)
    assert not (tmp_path / "scenes-huge-seed0").exists()
