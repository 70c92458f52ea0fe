"""Dataset readers and the embedded scenes benchmark; every reader returns Records.

`load_dataset(spec)` picks a reader from a short spec string:

- `scenes` or `scenes:PRESET` -- the embedded benchmark, built under `root` on first use;
- `manifest:DIR` -- a folder with manifest.jsonl or manifest.parquet;
- `imagenet:TRAIN[,BBOX]` -- ImageNet-layout images with optional VOC XML boxes;
- `coco:IMAGES,INSTANCES[,CAPTIONS]` -- COCO images with instances and captions JSON;
- `KIND:PATHS` -- a reader another package registers (a `Reader` under the entry-point group
  `dejavu_bench.readers`; see `available_readers`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dejavu.data.coco import read_coco
from dejavu.data.imagenet import read_imagenet
from dejavu.data.manifest import LoadedRecords, read_manifest, write_manifest
from dejavu.data.scenes import PRESETS, ScenesConfig, build_scenes, load_scenes, scenes_config
from dejavu.plugins import READERS_GROUP, instance_of, load_plugins
from dejavu.records import RecordSet

__all__ = ["READERS", "LoadedRecords", "Reader", "available_readers", "check_spec", "PRESETS", "ScenesConfig", "build_scenes", "load_dataset", "load_scenes",
           "read_coco", "read_imagenet", "read_manifest", "scenes_config", "write_manifest"]



@dataclass(frozen=True)
class Reader:
    """A dataset reader that specs `name:PATH[,PATH...]` pick.

    `read(*paths, on_error=..., allow_outside=...)` returns the records: `on_error` is "error" or
    "exclude" (dejavu.data.manifest.ON_ERROR), and image paths must stay inside the dataset's
    folder unless `allow_outside` (the built-ins check both with
    `dejavu.data.manifest.RecordChecker`). It takes `required` paths and up to `optional` more.
    """

    name: str
    read: Callable[..., RecordSet]
    required: int = 1
    optional: int = 0


#: the built-in path readers; `scenes` is the embedded benchmark, built rather than read
READERS: dict[str, Reader] = {r.name: r for r in (
    Reader("manifest", read_manifest), Reader("imagenet", read_imagenet, 1, 1), Reader("coco", read_coco, 2, 1))}


def available_readers() -> dict[str, Reader]:
    """Returns every path reader by name: the built-ins, then the `dejavu_bench.readers` entry-point plugins."""
    return load_plugins(READERS_GROUP, READERS, instance_of(Reader), "reader")


def scenes_dir(root: str | Path, preset: str, seed: int, overrides: dict | None = None) -> Path:
    """Returns the folder where `load_dataset("scenes:PRESET")` builds and caches that dataset."""
    suffix = ""
    if overrides:  # a different configuration gets its own folder instead of rebuilding the shared one
        text = json.dumps(overrides, sort_keys=True, default=str)
        suffix = "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return Path(root) / f"scenes-{preset}-seed{seed}{suffix}"


def check_spec(spec: str) -> tuple[str, list[str]]:
    """Returns (kind, [scenes preset] or [paths]) of a dataset spec; raises, reading nothing, if it is bad.

    Callers that only validate (a sweep about to submit jobs) use it to refuse a mistyped path
    before anything starts; `load_dataset` runs the same checks.
    """
    kind, _, rest = spec.partition(":")
    readers = available_readers()
    if kind != "scenes" and kind not in readers:
        raise ValueError(f"unknown dataset kind {kind!r} in {spec!r}; expected one of {('scenes', *readers)}")
    if kind == "scenes":
        preset = rest or "default"
        if preset not in PRESETS:
            raise ValueError(f"unknown scenes preset {preset!r} in {spec!r}; available: {list(PRESETS)}")
        return kind, [preset]
    paths = rest.split(",") if rest else []
    required, optional = readers[kind].required, readers[kind].optional
    if not required <= len(paths) <= required + optional:
        raise ValueError(f"{kind!r} takes {required} to {required + optional} comma-separated paths, "
                         f"got {len(paths)} in {spec!r}")
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"dataset path {path!r} (from {spec!r}) does not exist")
    return kind, paths


def load_dataset(spec: str, *, root: str | Path = "data", seed: int = 0, on_error: str = "error",
                 scenes_overrides: dict | None = None, allow_outside: bool = False) -> RecordSet:
    """Returns the records named by `spec` (see the module docstring); missing paths fail before any work.

    `scenes_overrides` changes ScenesConfig fields of the embedded benchmark (e.g. {"n_canaries": 0}).
    Image paths must stay inside the dataset's folder (symlinks resolved) unless `allow_outside` is set.
    """
    kind, args = check_spec(spec)
    if kind == "scenes":
        preset, overrides = args[0], dict(scenes_overrides or {})
        return load_scenes(scenes_dir(root, preset, seed, overrides), preset, seed, **overrides)
    return available_readers()[kind].read(*(Path(p) for p in args), on_error=on_error, allow_outside=allow_outside)
