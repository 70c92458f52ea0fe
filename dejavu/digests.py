"""Content digests of image files: what a dataset's fingerprint hashes instead of where its files lie.

A record's image is identified by the SHA-256 of its bytes, so a run's id and its caches do not depend
on where the data or the cache lives, and an image overwritten in place changes them. Hashing every
file on every run would cost a read of the whole dataset, so each folder keeps its files' digests
beside them, in `.dejavu-digests.json`, with the size and mtime they were computed at; a file whose
size or mtime changed is hashed again. A folder that cannot be written keeps its digests in memory.

    >>> import tempfile, pathlib
    >>> scratch = tempfile.TemporaryDirectory()
    >>> folder = pathlib.Path(scratch.name)
    >>> _ = (folder / "a.png").write_bytes(b"not really a png")
    >>> file_digests([folder / "a.png"])[folder / "a.png"][:12]
    'e90137d39de3'
    >>> (folder / SIDECAR).exists()
    True
    >>> scratch.cleanup()
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dejavu.files import file_lock, read_json, write_json

log = logging.getLogger(__name__)

SIDECAR = ".dejavu-digests.json"

# (resolved path, size, mtime_ns) -> digest, so that the many RecordSets of one run read each file once
_memo: dict[tuple[str, int, int], str] = {}


def file_digests(paths: Iterable[str | os.PathLike], *, missing_ok: bool = False) -> dict[Path, str]:
    """Returns the SHA-256 hex digest of each file's bytes, keyed by the path as given.

    A missing file raises FileNotFoundError naming it, or with `missing_ok` gets the digest
    `missing:<file name>`: a fingerprint of records whose images the pre-pass has yet to check
    must not fail before that check can name the record.
    """
    by_folder: dict[Path, list[Path]] = defaultdict(list)
    out: dict[Path, str] = {}
    for path in dict.fromkeys(map(Path, paths)):
        if missing_ok and not path.is_file():
            out[path] = f"missing:{path.name}"
        else:
            by_folder[path.parent].append(path)
    # one thread per folder: hashlib and file reads release the GIL, and folders share no sidecar
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(by_folder), os.cpu_count() or 1))) as pool:
        for found in pool.map(_folder_digests, by_folder, by_folder.values()):
            out.update(found)
    return out


def _folder_digests(folder: Path, files: list[Path]) -> dict[Path, str]:
    stats = {path: path.stat() for path in files}
    keys = {path: (str(path.resolve()), st.st_size, st.st_mtime_ns) for path, st in stats.items()}
    if all(key in _memo for key in keys.values()):
        return {path: _memo[key] for path, key in keys.items()}
    sidecar = folder / SIDECAR
    stored = _read_sidecar(sidecar)
    changed = False
    for path, (key, size, mtime) in keys.items():
        entry = stored.get(path.name)
        if not (isinstance(entry, list) and entry[:2] == [size, mtime]):
            stored[path.name] = [size, mtime, _sha256(path)]
            changed = True
        _memo[(key, size, mtime)] = stored[path.name][2]
    if changed:
        _write_sidecar(sidecar, stored)
    return {path: _memo[key] for path, key in keys.items()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_sidecar(sidecar: Path) -> dict:
    if not sidecar.exists():
        return {}
    try:
        stored = read_json(sidecar)
    except (OSError, ValueError) as err:  # a damaged sidecar only costs a re-hash
        log.warning("ignoring %s (%s); its digests are computed again", sidecar, err)
        return {}
    return stored if isinstance(stored, dict) else {}


def _write_sidecar(sidecar: Path, stored: dict) -> None:
    try:
        with file_lock(sidecar.with_name(SIDECAR + ".lock")):
            # another process may have added digests of other files since we read it; keep them
            merged = {**_read_sidecar(sidecar), **stored}
            write_json(sidecar, merged)
    except OSError as err:  # a read-only dataset folder: the digests stay in this process's memory
        log.info("cannot store image digests beside the data (%s); they are kept in memory", err)
