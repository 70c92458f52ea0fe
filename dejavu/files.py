"""Writing files: atomically (a temporary file beside the target, then a rename), with the user's umask.

Every cache, table, report and marker the suite writes goes through `atomic_path` (or its wrappers),
and every cross-process lock is a `file_lock`, so that:
- a reader never sees half a file, and a killed writer leaves the old file (or none) in place;
- files get the mode the user's umask asks for (`tempfile.mkstemp` alone makes them 0600);
- a failed write raises OSError naming the file it was writing, even where the OS error itself names none
  (a full disk reports ENOSPC on a bare file descriptor).

    >>> import tempfile, pathlib
    >>> scratch = tempfile.TemporaryDirectory()
    >>> folder = pathlib.Path(scratch.name)
    >>> write_json(folder / "done.json", {"epochs": 3})
    >>> read_json(folder / "done.json")
    {'epochs': 3}
    >>> scratch.cleanup()
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from filelock import FileLock


def user_file_mode() -> int:
    """Returns the mode a new file gets under the process umask (0o644 under the usual 0o022)."""
    return 0o666 & ~_umask()


def _umask() -> int:
    # Linux reports it without changing it; elsewhere reading it means setting it (for an instant, so a
    # file another thread creates in that instant would get mode 0666)
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; when the block completes, it replaces `path` (mode per umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the target's suffix stays last, for writers that read the format off the name (matplotlib)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        try:
            yield Path(tmp)
            os.chmod(tmp, user_file_mode())
            os.replace(tmp, path)
        except OSError as err:
            if err.filename is None and err.errno is not None:  # ENOSPC on a write() names no file
                raise OSError(err.errno, err.strerror, str(path)) from err
            raise
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Yields an open file that replaces `path` atomically when the block completes (flushed to disk)."""
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Writes `data` as indented, key-sorted JSON to `path` atomically (unknown types as strings)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def read_json(path: str | os.PathLike) -> Any:
    """Returns the parsed JSON of `path`; raises ValueError naming the file when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err})") from None


def file_lock(path: str | os.PathLike) -> FileLock:
    """Returns the exclusive inter-process lock kept in the file `path` (its folder is created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))
