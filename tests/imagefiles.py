"""Image files for bad-input tests: real PNGs, and PNGs whose header promises more than they hold."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from PIL import Image


def png(path: Path, size: tuple[int, int] = (20, 10)) -> Path:
    """Writes a real RGB PNG of `size`; returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


def png_header(path: Path, width: int, height: int) -> Path:
    """Writes a PNG whose header declares width x height but holds no pixel data (a decompression bomb's face)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))
    return path
