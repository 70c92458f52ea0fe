"""The one I/O module (dejavu.files): atomic writes with the user's umask at every site (issue 10, case 9),
a failed write names its file, and no other module writes files its own way."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.store import ResultsStore
from dejavu.data.manifest import write_manifest
from dejavu.data.preview import write_preview
from dejavu.embed import Embeddings, _save_atomically
from dejavu.files import atomic_open, atomic_path, file_lock, read_json, user_file_mode, write_json
from dejavu.pixels import decoded_pixels
from dejavu.records import RecordSet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=[0o022, 0o027, 0o002], ids=lambda m: f"umask {m:03o}")
def umask(request):
    """Sets the process umask for one test; returns it."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_user_file_mode_follows_the_umask(umask):
    assert user_file_mode() == 0o666 & ~umask


def test_every_writer_honours_the_umask(umask, tmp_path, tiny_records):
    want = 0o666 & ~umask
    write_json(tmp_path / "a.json", {"x": 1})
    ResultsStore(tmp_path / "runs.csv").append(
        {"run_id": "r", "recipe": "clip", "mitigation": "none", "strength": 0.0, "seed": 0, "dataset": "d",
         "preset": "smoke", "wall_s": 1.0},
        pd.DataFrame([{"test": "t", "subset": "all", "metric": "m", "value": 1.0, "ci_low": 0.0, "ci_high": 1.0,
                       "n": 1}]))
    _save_atomically(Embeddings(["a"], torch.zeros(1, 2)), tmp_path / "emb.pt", {})
    records = RecordSet(list(tiny_records)[:3], name="three")
    decoded_pixels(records, cache_dir=tmp_path / "pixels", progress=False)
    write_manifest(records, tmp_path / "manifest")
    write_preview(records, tmp_path / "preview.png", n=3)
    written = [tmp_path / "a.json", tmp_path / "runs.csv", tmp_path / "emb.pt", *(tmp_path / "pixels").glob("*.npy"),
               tmp_path / "manifest" / "manifest.jsonl", tmp_path / "preview.png"]
    assert len(written) == 6
    assert {p.name: oct(mode(p)) for p in written} == {p.name: oct(want) for p in written}


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    write_json(tmp_path / "a.json", {"v": 1})
    with pytest.raises(KeyboardInterrupt), atomic_open(tmp_path / "a.json") as f:
        f.write('{"v": 2')
        raise KeyboardInterrupt
    assert read_json(tmp_path / "a.json") == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_full_disk_names_the_file_being_written(tmp_path):
    with pytest.raises(OSError) as err, atomic_path(tmp_path / "emb.npy"):
        raise OSError(errno.ENOSPC, "No space left on device")  # a write() error carries no file name
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "emb.npy")
    assert list(tmp_path.iterdir()) == []


def test_the_temporary_file_keeps_the_suffix_writers_read_the_format_from(tmp_path):
    with atomic_path(tmp_path / "grid.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"png")
    assert (tmp_path / "grid.png").read_bytes() == b"png"


def test_read_json_names_a_damaged_file(tmp_path):
    (tmp_path / "done.json").write_text('{"max_epochs": ')
    with pytest.raises(ValueError, match=f"'{tmp_path / 'done.json'}' is not valid JSON"):
        read_json(tmp_path / "done.json")


def test_the_lock_is_exclusive_across_holders(tmp_path):
    lock = file_lock(tmp_path / "sub" / "x.lock")
    with lock:
        other = file_lock(tmp_path / "sub" / "x.lock")
        with pytest.raises(TimeoutError):
            other.acquire(timeout=0.05)


def test_no_module_writes_atomically_or_locks_its_own_way():
    """One atomic write and one lock style: temporary files and locks come from dejavu.files only."""
    own_way = re.compile(r"\b(mkstemp|NamedTemporaryFile|fcntl\.flock|FileLock\(|os\.replace\()")
    offenders = [str(path.relative_to(ROOT)) for package in ("dejavu", "bench", "mitigations")
                 for path in (ROOT / package).rglob("*.py")
                 if path != ROOT / "dejavu" / "files.py" and own_way.search(path.read_text())]
    assert offenders == []
