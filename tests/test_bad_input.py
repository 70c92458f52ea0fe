"""Bad input: every problem is a clear RecordError naming the record and file, or a counted exclusion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from dejavu.data import read_coco, read_imagenet, read_manifest
from dejavu.records import RecordError

GOOD = {"id": "ok", "image": "ok.png", "width": 20, "height": 10, "label": "dog",
        "boxes": [[0, 0, 5, 5, "dog"]], "caption": "a dog", "objects": ["dog"], "split": "A"}


def manifest(folder: Path, *rows) -> Path:
    """Writes rows (dicts, or raw strings for broken lines) as manifest.jsonl; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.jsonl").write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows))
    return folder


def bad(**changes) -> dict:
    return {**GOOD, "id": "bad", **changes}


def assert_clear(err: pytest.ExceptionInfo, *parts: str) -> None:
    """The message names every part, and there is no chained library traceback behind it."""
    message = str(err.value)
    for part in parts:
        assert part in message, (part, message)
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)


CASES = {
    "box-outside-image": bad(boxes=[[0, 0, 25, 5, "dog"]]),
    "empty-box": bad(boxes=[[5, 0, 5, 5, "dog"]]),
    "empty-caption": bad(caption=""),
    "bad-split": bad(split="train"),
    "bad-box": bad(boxes=[[0, 0, 5, "dog"]]),
    "bad-repeat": bad(repeat=0),
}


@pytest.mark.parametrize("reason", sorted(CASES))
def test_bad_record_raises_naming_id_and_manifest(tmp_path, reason):
    folder = manifest(tmp_path, GOOD, CASES[reason])
    with pytest.raises(RecordError) as err:
        read_manifest(folder)
    assert_clear(err, "'bad'", str(folder / "manifest.jsonl"))
    assert err.value.reason == reason


def test_line_that_is_not_json_names_line_and_file(tmp_path):
    folder = manifest(tmp_path, GOOD, '{"id": "x", "image": ')
    with pytest.raises(RecordError) as err:
        read_manifest(folder)
    assert_clear(err, "line 2", "not valid JSON", str(folder / "manifest.jsonl"))


def test_line_without_id_names_line_and_file(tmp_path):
    folder = manifest(tmp_path, GOOD, {"image": "x.png", "width": 1, "height": 1})
    with pytest.raises(RecordError) as err:
        read_manifest(folder)
    assert_clear(err, "line 2", "'id'", str(folder / "manifest.jsonl"))


def test_duplicate_id_names_the_id_and_file(tmp_path):
    folder = manifest(tmp_path, GOOD, GOOD)
    with pytest.raises(RecordError) as err:
        read_manifest(folder)
    assert_clear(err, "'ok'", "duplicate id", str(folder / "manifest.jsonl"))


def test_exclude_mode_counts_every_reason_and_keeps_good_records(tmp_path):
    rows = [GOOD, *({**row, "id": reason} for reason, row in CASES.items()), "not json", {"width": 3},
            dict(GOOD), {**GOOD, "id": "ok2"}]
    records = read_manifest(manifest(tmp_path, *rows), on_error="exclude")
    assert records.ids == ["ok", "ok2"]
    assert records.exclusions == {**dict.fromkeys(CASES, 1), "not-json": 1, "missing-id": 1, "duplicate-id": 1}
    assert len(records.excluded) == sum(records.exclusions.values())
    assert any("'empty-caption'" in m for m in records.excluded)  # each message names the record


def test_on_error_must_be_known(tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        read_manifest(manifest(tmp_path, GOOD), on_error="ignore")


def test_missing_image_fails_at_load_naming_id_and_file(tmp_path):
    (record,) = read_manifest(manifest(tmp_path, GOOD))
    with pytest.raises(RecordError) as err:
        record.load_image()
    assert_clear(err, "'ok'", str(tmp_path / "ok.png"), "does not exist")


def test_corrupt_image_fails_at_load_naming_id_and_file(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a real png")
    (record,) = read_manifest(manifest(tmp_path, GOOD))
    with pytest.raises(RecordError) as err:
        record.load_image()
    assert_clear(err, "'ok'", str(tmp_path / "ok.png"), "cannot be decoded")


def test_missing_manifest_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.jsonl"):
        read_manifest(tmp_path)


def test_imagenet_malformed_xml_names_the_xml_file(tmp_path):
    (tmp_path / "train" / "n01").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "n01" / "n01_1.JPEG")
    (tmp_path / "bbox" / "n01").mkdir(parents=True)
    (tmp_path / "bbox" / "n01" / "n01_1.xml").write_text("<annotation><size><width>8</width>")
    with pytest.raises(RecordError) as err:
        read_imagenet(tmp_path / "train", tmp_path / "bbox")
    assert_clear(err, "'n01_1'", "n01_1.xml", "not valid XML")
    assert len(read_imagenet(tmp_path / "train", tmp_path / "bbox", on_error="exclude")) == 0


def test_imagenet_unreadable_image_header_is_reported(tmp_path):
    (tmp_path / "train" / "n01").mkdir(parents=True)
    (tmp_path / "train" / "n01" / "n01_1.JPEG").write_bytes(b"garbage")
    with pytest.raises(RecordError) as err:
        read_imagenet(tmp_path / "train")
    assert_clear(err, "'n01_1'", "n01_1.JPEG")


def test_coco_zero_width_box_is_an_error_or_a_counted_exclusion(tmp_path):
    instances = {"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10},
                            {"id": 2, "file_name": "b.jpg", "width": 10, "height": 10}],
                 "categories": [{"id": 1, "name": "dog"}],
                 "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [3, 3, 0, 4]}]}
    (tmp_path / "inst.json").write_text(json.dumps(instances))
    with pytest.raises(RecordError) as err:
        read_coco(tmp_path, tmp_path / "inst.json")
    assert_clear(err, "'1'", "inst.json", "x0 >= x1")
    records = read_coco(tmp_path, tmp_path / "inst.json", on_error="exclude")
    assert records.ids == ["2"] and records.exclusions == {"empty-box": 1}
