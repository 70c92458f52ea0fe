"""The image pre-pass: before any model trains, every record's image exists, decodes, has the width and
height its record declares, and has at most `max_pixels` pixels.

Readers never open images (a manifest of a million lines reads in seconds), so without this pass a
missing file in the public split would surface only after both models had trained. Files are checked
in threads (PIL releases the GIL while it decodes). With `cache_dir`, each good file's facts are kept
with its size and modification time, so a repeated run only stats its files; a file that changed is
decoded again.

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from dejavu.records import Record, RecordSet
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (20, 10)).save(folder / "a.png")
    >>> checked = check_images(RecordSet([Record("a", folder / "a.png", 20, 10)]))
    >>> len(checked), dict(checked.exclusions)
    (1, {})
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from dejavu.data.manifest import ON_ERROR, LoadedRecords
from dejavu.digests import file_digests
from dejavu.files import read_json, write_json
from dejavu.records import Record, RecordError, RecordSet

log = logging.getLogger(__name__)

#: PIL's own bound against decompression bombs; a larger limit would only meet PIL's refusal later
DEFAULT_MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485
#: files per task handed to a thread; a million futures at once would cost more than the checks
CHUNK = 256


@dataclass(frozen=True)
class ImageFacts:
    """What the pre-pass learned about one image file, valid while its size and mtime stay the same."""

    size: int
    mtime_ns: int
    width: int
    height: int


class ImageProblem(Exception):
    """A file that cannot serve as a record's image: a short reason (counted on exclusion) and a message."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def inspect_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageFacts:
    """Returns the facts of an image file after decoding it fully; raises ImageProblem when it cannot be used."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ImageProblem("missing-image", "image file does not exist; fix the path or remove the record") from None
    except OSError as err:
        raise ImageProblem("unreadable-image", f"image file cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ImageProblem("unreadable-image", "image path is not a regular file; point it at an image file")
    with warnings.catch_warnings():
        # the limit is ours to enforce (below), with a message that says what to do
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageProblem("too-many-pixels", too_many_pixels(width, height, max_pixels))
                img.load()  # decodes every byte: a truncated or corrupt file fails here, not in training
        except Image.DecompressionBombError as err:
            raise ImageProblem("too-many-pixels", f"image is too large to decode safely ({err}); resize it "
                               "or remove the record") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise ImageProblem("unreadable-image", f"image file cannot be decoded ({err}); replace or remove "
                               "it") from None
    return ImageFacts(info.st_size, info.st_mtime_ns, width, height)


def too_many_pixels(width: int, height: int, max_pixels: int) -> str:
    """Returns the message for an image above the pixel limit."""
    return (f"image is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}; "
            "resize it, or raise the limit (--set data.max_pixels=N)")


def check_images(records: RecordSet, *, max_pixels: int = DEFAULT_MAX_PIXELS, workers: int | None = None,
                 cache_dir: Path | None = None, on_error: str = "error") -> LoadedRecords:
    """Returns the records whose images pass the pre-pass; the first bad one raises RecordError naming it.

    With on_error="exclude" the bad records are left out and counted by reason instead (added to the
    exclusions `records` already carries, if it came from a reader).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if not 1 <= max_pixels <= DEFAULT_MAX_PIXELS:
        raise ValueError(f"max_pixels must be in [1, {DEFAULT_MAX_PIXELS}] (PIL's Image.MAX_IMAGE_PIXELS), "
                         f"got {max_pixels}")
    start = time.perf_counter()
    paths = list(dict.fromkeys(Path(r.image) for r in records))
    known = _read_cache(cache_dir, paths)
    facts = dict(known)
    facts.update(_inspect_all([p for p in paths if p not in known], max_pixels, workers))
    good = {p: f for p, f in facts.items() if isinstance(f, ImageFacts)}
    if cache_dir is not None and len(good) > len(known):
        write_json(_cache_file(cache_dir, paths), {str(p): asdict(f) for p, f in good.items()})
    file_digests(good)  # the content digests the records' fingerprint hashes, stored beside the data

    problems = [(r, problem) for r in records if (problem := record_problem(r, facts[Path(r.image)], max_pixels))]
    log.info("checked the images of %d records in %.1f s (%d files from the pre-pass cache); %d bad",
             len(records), time.perf_counter() - start, len(known), len(problems))
    if problems and on_error == "error":
        record, problem = problems[0]
        n_more = len(problems) - 1
        more = f" ({n_more} more record{'s' if n_more > 1 else ''} with a bad image)" if n_more else ""
        raise RecordError(f"{problem}{more}", record_id=record.id, file=record.image)
    bad = {r.id for r, _ in problems}
    exclusions = Counter(getattr(records, "exclusions", Counter()))
    exclusions.update(problem.reason for _, problem in problems)
    excluded = [*getattr(records, "excluded", []),
                *(str(RecordError(str(p), record_id=r.id, file=r.image)) for r, p in problems)]
    return LoadedRecords([r for r in records if r.id not in bad], name=records.name, exclusions=exclusions,
                         excluded=excluded)


def record_problem(record: Record, facts: ImageFacts | ImageProblem, max_pixels: int) -> ImageProblem | None:
    """Returns what is wrong with a record given its file's facts (None when nothing is)."""
    if isinstance(facts, ImageProblem):
        return facts
    if (facts.width, facts.height) != (record.width, record.height):
        return ImageProblem("size-mismatch", f"the record declares {record.width}x{record.height}, but the image "
                            f"is {facts.width}x{facts.height}; fix width and height")
    if facts.width * facts.height > max_pixels:
        return ImageProblem("too-many-pixels", too_many_pixels(facts.width, facts.height, max_pixels))
    return None


def _inspect_chunk(paths: Sequence[Path], max_pixels: int) -> list[ImageFacts | ImageProblem]:
    out: list[ImageFacts | ImageProblem] = []
    for path in paths:
        try:
            out.append(inspect_image(path, max_pixels))
        except ImageProblem as problem:
            out.append(problem)
    return out


def _inspect_all(paths: list[Path], max_pixels: int, workers: int | None) -> dict[Path, ImageFacts | ImageProblem]:
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    if len(chunks) <= 1:
        results: Iterable[list] = [_inspect_chunk(c, max_pixels) for c in chunks]
    else:
        pool = ThreadPoolExecutor(max_workers=workers or min(16, os.cpu_count() or 1))
        with pool:
            results = list(pool.map(_inspect_chunk, chunks, [max_pixels] * len(chunks)))
    return {path: fact for chunk, facts in zip(chunks, results, strict=True)
            for path, fact in zip(chunk, facts, strict=True)}


def _cache_file(cache_dir: Path, paths: list[Path]) -> Path:
    digest = hashlib.sha256("\n".join(sorted(str(p) for p in paths)).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"images-{digest}.json"


def _read_cache(cache_dir: Path | None, paths: list[Path]) -> dict[Path, ImageFacts]:
    """Returns the cached facts of the files that have not changed since they were checked."""
    if cache_dir is None:
        return {}
    path = _cache_file(cache_dir, paths)
    if not path.is_file():
        return {}
    try:
        stored = {Path(p): ImageFacts(**f) for p, f in read_json(path).items()}
    except (ValueError, TypeError, AttributeError) as err:
        log.warning("ignoring the damaged pre-pass cache %s (%s); checking every image again", path, err)
        return {}
    fresh = {}
    for p in paths:
        facts = stored.get(p)
        try:
            info = os.stat(p)
        except OSError:
            continue
        if facts is not None and (info.st_size, info.st_mtime_ns) == (facts.size, facts.mtime_ns):
            fresh[p] = facts
    return fresh
