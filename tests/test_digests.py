"""Image content digests: keyed by bytes, not by place; kept beside the data; refreshed when a file changes."""

import hashlib
import os
import shutil

import pytest

from dejavu import digests
from dejavu.digests import SIDECAR, file_digests
from dejavu.files import read_json, write_json


def _write(path, data: bytes, mtime_ns: int | None = None):
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_digest_is_the_sha256_of_the_bytes(tmp_path):
    a = _write(tmp_path / "a.png", b"alpha")
    b = _write(tmp_path / "b.png", b"beta")
    digests = file_digests([a, b])
    assert digests == {a: hashlib.sha256(b"alpha").hexdigest(), b: hashlib.sha256(b"beta").hexdigest()}


def test_the_same_bytes_elsewhere_have_the_same_digest(tmp_path):
    (tmp_path / "one").mkdir()
    first = _write(tmp_path / "one" / "x.png", b"same")
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    moved = tmp_path / "two" / "x.png"
    assert file_digests([first])[first] == file_digests([moved])[moved]


def test_digests_are_stored_beside_the_data_with_size_and_mtime(tmp_path):
    path = _write(tmp_path / "a.png", b"alpha", mtime_ns=1_000_000_000)
    file_digests([path])
    stored = read_json(tmp_path / SIDECAR)
    assert stored == {"a.png": [5, 1_000_000_000, hashlib.sha256(b"alpha").hexdigest()]}


def test_a_file_rewritten_in_place_is_hashed_again(tmp_path):
    path = _write(tmp_path / "a.png", b"alpha", mtime_ns=1_000_000_000)
    before = file_digests([path])[path]
    _write(path, b"omega", mtime_ns=2_000_000_000)  # same size, new mtime
    after = file_digests([path])[path]
    assert before != after == hashlib.sha256(b"omega").hexdigest()
    assert read_json(tmp_path / SIDECAR)["a.png"][2] == after


def test_a_stored_digest_is_trusted_while_size_and_mtime_match(tmp_path):
    # what makes the sidecar worth having: an unchanged file is not read again
    path = _write(tmp_path / "a.png", b"alpha", mtime_ns=3_000_000_000)
    write_json(tmp_path / SIDECAR, {"a.png": [5, 3_000_000_000, "f" * 64]})
    assert file_digests([path])[path] == "f" * 64


def test_a_damaged_sidecar_is_replaced(tmp_path):
    path = _write(tmp_path / "a.png", b"alpha", mtime_ns=4_000_000_000)
    (tmp_path / SIDECAR).write_text("{not json")
    assert file_digests([path])[path] == hashlib.sha256(b"alpha").hexdigest()
    assert read_json(tmp_path / SIDECAR)["a.png"][2] == hashlib.sha256(b"alpha").hexdigest()


def test_a_folder_that_cannot_be_written_keeps_digests_in_memory(tmp_path, monkeypatch):
    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(digests, "write_json", refuse)  # a read-only dataset folder (root ignores chmod)
    path = _write(tmp_path / "a.png", b"alpha", mtime_ns=5_000_000_000)
    assert file_digests([path])[path] == hashlib.sha256(b"alpha").hexdigest()
    assert not (tmp_path / SIDECAR).exists()


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.png"):
        file_digests([tmp_path / "gone.png"])


def test_a_missing_file_may_be_marked_for_a_later_check_to_name(tmp_path):
    present = _write(tmp_path / "a.png", b"alpha")
    found = file_digests([present, tmp_path / "gone.png"], missing_ok=True)
    assert found == {present: hashlib.sha256(b"alpha").hexdigest(), tmp_path / "gone.png": "missing:gone.png"}


def test_files_of_many_folders_are_each_hashed_once(tmp_path, monkeypatch):
    paths = []
    for i in range(5):
        (tmp_path / f"d{i}").mkdir()
        paths += [_write(tmp_path / f"d{i}" / f"{j}.png", f"{i}-{j}".encode()) for j in range(3)]
    hashed = []
    real = digests._sha256
    monkeypatch.setattr(digests, "_sha256", lambda p: hashed.append(p) or real(p))
    found = file_digests(paths + paths[:4])  # repeats, as when records share an image
    assert sorted(hashed) == sorted(paths)
    assert all(found[p] == hashlib.sha256(p.read_bytes()).hexdigest() for p in paths)
