"""A dataset reader: `csv:FILE`, a CSV with columns id, image (relative to the file), width, height, label, caption.

The suite's RecordChecker refuses (or, with on_error="exclude", counts) bad rows and images outside
the CSV's folder; the pre-pass before training checks that every image decodes at its declared size.
"""

import csv
from pathlib import Path

from dejavu.data import Reader
from dejavu.data.manifest import InvalidRecord, LoadedRecords, RecordChecker
from dejavu.records import Record


def read_csv(path: Path, *, on_error: str = "error", allow_outside: bool = False) -> LoadedRecords:
    checker = RecordChecker(on_error, images_root=path.parent, allow_outside=allow_outside)

    def make(row: dict, line: int) -> Record:
        try:
            width, height = int(row["width"]), int(row["height"])
        except (KeyError, TypeError, ValueError):
            raise InvalidRecord("bad-size", f"width and height must be integers, got {row.get('width')!r} and "
                                f"{row.get('height')!r}", record_id=row.get("id"), file=f"{path}:{line}") from None
        return Record(id=row["id"], image=path.parent / row["image"], width=width, height=height,
                      label=row.get("label") or None, caption=row.get("caption") or None, source=f"{path}:{line}")

    def records():
        with open(path, newline="", encoding="utf-8") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):  # line 1 is the header
                yield checker.accept(lambda row=row, line=line: make(row, line))

    return checker.collect(records(), name=str(path))


CSV_READER = Reader("csv", read_csv)
