"""Dataset readers and the embedded scenes benchmark; every reader returns Records.

`load_dataset(spec)` picks a reader from a short spec string:

- `scenes` or `scenes:PRESET` -- the embedded benchmark, built under `root` on first use;
- `manifest:DIR` -- a folder with manifest.jsonl or manifest.parquet;
- `imagenet:TRAIN[,BBOX]` -- ImageNet-layout images with optional VOC XML boxes;
- `coco:IMAGES,INSTANCES[,CAPTIONS]` -- COCO images with instances and captions JSON.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dejavu.data.coco import read_coco
from dejavu.data.imagenet import read_imagenet
from dejavu.data.manifest import LoadedRecords, read_manifest, write_manifest
from dejavu.data.scenes import PRESETS, ScenesConfig, build_scenes, load_scenes, scenes_config
from dejavu.records import RecordSet

__all__ = ["LoadedRecords", "check_spec", "PRESETS", "ScenesConfig", "build_scenes", "load_dataset", "load_scenes",
           "read_coco", "read_imagenet", "read_manifest", "scenes_config", "write_manifest"]

KINDS = ("scenes", "manifest", "imagenet", "coco")
# How many comma-separated paths each reader takes: (required, optional).
_ARITY = {"manifest": (1, 0), "imagenet": (1, 1), "coco": (2, 1)}


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
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r} in {spec!r}; expected one of {KINDS}")
    if kind == "scenes":
        preset = rest or "default"
        if preset not in PRESETS:
            raise ValueError(f"unknown scenes preset {preset!r} in {spec!r}; available: {list(PRESETS)}")
        return kind, [preset]
    paths = rest.split(",") if rest else []
    required, optional = _ARITY[kind]
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
    paths = [Path(p) for p in args]
    kw = dict(on_error=on_error, allow_outside=allow_outside)
    if kind == "manifest":
        return read_manifest(paths[0], **kw)
    if kind == "imagenet":
        return read_imagenet(*paths, **kw)
    return read_coco(*paths, **kw)
