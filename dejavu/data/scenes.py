"""The embedded "scenes" benchmark: emoji objects pasted on crops of real photos, with exact annotations.

Each image is a random crop (position, scale, flip) of one bundled photo -- its *scene* -- with one to
`max_objects` Twemoji sprites alpha-composited on it. The first object is the foreground `label` and is
the largest; boxes are the sprites' visible extents. Objects stay inside a random left or right part of
the image (with probability `confined_prob`) so that the SPEC's `slab` background crop usually exists.
Each class prefers `scenes_per_class` scenes with probability `correlation`, which is the dataset-level
correlation a reference model can exploit. Captions name the scene and a subset of the objects.

Splits follow SPEC section 1 per class (first `per_class` of a seeded order to A, next to B, rest
public); `eval` is a separate labelled set. `n_canaries` A records get `repeat = canary_repeat`.
Everything is a deterministic function of (config, seed).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from dejavu.data.assets import SCENES, class_names, emoji_sprite, scene_photo
from dejavu.data.manifest import JSONL, read_manifest, write_manifest
from dejavu.files import file_lock, write_json
from dejavu.records import Box, Record, RecordSet

# Bump when the rendering changes, so that cached builds of an older generator are rebuilt.
GENERATOR_VERSION = 2
MARKER = "scenes.json"
BUILD_LOCK = ".build.lock"
# Resampling blurs sprite edges into faint alpha; pixels fainter than this are invisible at any zoom, so
# the box is the extent of pixels at least this opaque (out of 255).
VISIBLE_ALPHA = 24
# Attempts to place an object so that it overlaps earlier ones by at most `max_overlap`; after that the
# least-overlapping attempt is kept, because a crowded band cannot always satisfy the bound.
PLACEMENT_TRIES = 20

TEMPLATES = (
    "a photo of {objects} {place}.",
    "{objects} {place}.",
    "a picture of {objects} {place}.",
    "there is {objects} {place}.",
    "a close-up photo of {objects} {place}.",
    "a snapshot of {objects} {place}.",
)

# Captions that name no object, only the place.
PLACE_TEMPLATES = (
    "a photo {place}.",
    "a picture taken {place}.",
    "a snapshot {place}.",
)


@dataclass(frozen=True)
class ScenesConfig:
    """Every knob of the scenes generator; the seed is passed separately."""

    n_classes: int = 10
    scenes: tuple[str, ...] = tuple(SCENES)
    image_size: int = 32
    per_class: int = 50  # A records per class, and as many B records
    public_per_class: int = 500
    eval_per_class: int = 100
    n_canaries: int = 50
    canary_repeat: int = 20
    correlation: float = 0.7  # probability a record's scene is drawn from its class's preferred scenes
    scenes_per_class: int = 2
    max_objects: int = 3
    label_scale: tuple[float, float] = (0.4, 0.55)  # label sprite side, as a fraction of image_size
    other_scale: tuple[float, float] = (0.22, 0.32)
    object_region: float = 0.55  # objects confined to a left or right band this fraction of the width
    confined_prob: float = 0.95  # the rest may land anywhere (and then often leave no background crop)
    crop_scale: tuple[float, float] = (0.25, 0.7)  # background crop side / shorter side of the photo
    max_overlap: float = 0.3  # at most this fraction of an object's box hidden by earlier objects' boxes
    caption_other_prob: float = 0.3  # chance that each non-label object is named in the caption
    # Chance that the label object is named. Alt-text often names only the place ("our trip to the
    # beach"); an unnamed foreground is what a memorized caption can reveal and an unseen one cannot.
    caption_label_prob: float = 1.0
    # Chance that a caption ends with a unique detail (a camera file name, as web alt-text often has).
    # Without one, templated captions are shared by many records, and no model could tell which
    # training image a caption belongs to: the caption test would have nothing to find.
    caption_detail_prob: float = 1.0

    def __post_init__(self):
        unknown = [s for s in self.scenes if s not in SCENES]
        if unknown:
            raise ValueError(f"unknown scenes {unknown}; available: {list(SCENES)}")
        class_names(self.n_classes)  # validates the range
        if not 0.0 <= self.correlation <= 1.0:
            raise ValueError(f"correlation must be in [0, 1], got {self.correlation}")
        if not 1 <= self.scenes_per_class <= len(self.scenes):
            raise ValueError(f"scenes_per_class must be in [1, {len(self.scenes)}]")
        if not 1 <= self.max_objects <= self.n_classes:
            raise ValueError(f"max_objects must be in [1, n_classes={self.n_classes}]")
        if self.n_canaries > self.n_classes * self.per_class:
            raise ValueError(f"n_canaries={self.n_canaries} exceeds the size of A "
                             f"({self.n_classes * self.per_class})")
        for name in ("caption_other_prob", "caption_label_prob", "caption_detail_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.canary_repeat < 1:
            raise ValueError("canary_repeat must be >= 1")
        if max(self.label_scale) > self.object_region and self.confined_prob > 0:
            raise ValueError("label_scale must fit inside object_region")

    def key(self, seed: int) -> str:
        """Returns a short hash of this config, the seed and the generator version (the build cache key)."""
        payload = json.dumps({"config": asdict(self), "seed": seed, "version": GENERATOR_VERSION},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


PRESETS: dict[str, ScenesConfig] = {
    "smoke": ScenesConfig(n_classes=4, scenes=("coffee", "grass", "brick", "gravel", "galaxy", "rocket"),
                          per_class=4, public_per_class=16, eval_per_class=8, n_canaries=4,
                          canary_repeat=5),
    # 40 object classes keep a union of neighbours' objects from covering the vocabulary; 200
    # canaries (of 520 A records) seen 20x per epoch keep the canary intervals informative. Most
    # captions leave the foreground unnamed, so that recovering it takes a memorized caption.
    "default": ScenesConfig(n_classes=40, per_class=13, public_per_class=125, eval_per_class=25,
                            n_canaries=200, canary_repeat=20, caption_label_prob=0.2),
    "paper": ScenesConfig(n_classes=100, image_size=96, per_class=100, public_per_class=300,
                          eval_per_class=50, n_canaries=500, canary_repeat=20, scenes_per_class=3,
                          caption_label_prob=0.2),
}


def scenes_config(name: str, **overrides) -> ScenesConfig:
    """Returns the named preset with `overrides` applied to its fields."""
    if name not in PRESETS:
        raise ValueError(f"unknown scenes preset {name!r}; available: {list(PRESETS)}")
    return replace(PRESETS[name], **overrides)


@dataclass(frozen=True)
class Plan:
    """What one record will show, fixed before rendering: its index, class, split and repeat."""

    index: int
    label: str
    split: str
    repeat: int = 1


def plan_records(config: ScenesConfig, seed: int) -> list[Plan]:
    """Returns the per-record plan (class, split, canary repeat), ordered by record index."""
    rng = np.random.default_rng([seed, 0])
    classes = class_names(config.n_classes)
    pool = 2 * config.per_class + config.public_per_class
    slots: list[tuple[str, str]] = []
    for label in classes:
        # SPEC section 1: within a class, a seeded order; first per_class to A, next per_class to B.
        order = rng.permutation(pool)
        for rank in order:
            split = "A" if rank < config.per_class else "B" if rank < 2 * config.per_class else "public"
            slots.append((label, split))
        slots.extend((label, "eval") for _ in range(config.eval_per_class))
    # Shuffle so that record ids reveal neither class nor split.
    slots = [slots[i] for i in rng.permutation(len(slots))]
    a_indices = [i for i, (_, split) in enumerate(slots) if split == "A"]
    canaries = set(rng.choice(a_indices, size=config.n_canaries, replace=False).tolist())
    return [Plan(i, label, split, config.canary_repeat if i in canaries else 1)
            for i, (label, split) in enumerate(slots)]


def preferred_scenes(config: ScenesConfig, seed: int) -> dict[str, tuple[str, ...]]:
    """Returns each class's preferred scenes, spread evenly over the scenes by a seeded permutation."""
    rng = np.random.default_rng([seed, 1])
    order = [config.scenes[i] for i in rng.permutation(len(config.scenes))]
    k = config.scenes_per_class
    return {label: tuple(order[(c * k + j) % len(order)] for j in range(k))
            for c, label in enumerate(class_names(config.n_classes))}


@lru_cache(maxsize=4096)
def _sized_sprite(class_name: str, side: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Returns the sprite resized to side x side and the bounding box of its visible pixels."""
    sprite = emoji_sprite(class_name).resize((side, side), Image.Resampling.LANCZOS)
    visible = sprite.getchannel("A").point(lambda a: 255 if a >= VISIBLE_ALPHA else 0)
    bbox = visible.getbbox() or (0, 0, side, side)
    return sprite, bbox


def _background(scene: str, size: int, crop_scale: tuple[float, float], rng: np.random.Generator
                ) -> Image.Image:
    """Returns a random square crop of the scene photo, resized to size x size and maybe mirrored."""
    photo = scene_photo(scene)
    side = rng.uniform(*crop_scale) * min(photo.size)
    x0 = rng.uniform(0, photo.width - side)
    y0 = rng.uniform(0, photo.height - side)
    # reducing_gap first shrinks by an integer factor with a box filter: five times faster, and the
    # result differs from exact LANCZOS by under half a grey level on average.
    crop = photo.resize((size, size), Image.Resampling.LANCZOS, box=(x0, y0, x0 + side, y0 + side),
                        reducing_gap=3.0)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop.convert("RGBA")


def render(plan: Plan, config: ScenesConfig, seed: int, preferred: dict[str, tuple[str, ...]]
           ) -> tuple[Image.Image, str, tuple[Box, ...], str, tuple[str, ...]]:
    """Returns (image, scene, boxes, caption, objects) for one planned record, from its own seeded RNG."""
    rng = np.random.default_rng([seed, 2, plan.index])
    size = config.image_size
    scene = str(rng.choice(preferred[plan.label]) if rng.random() < config.correlation
                else rng.choice(config.scenes))
    canvas = _background(scene, size, config.crop_scale, rng)

    others = [c for c in class_names(config.n_classes) if c != plan.label]
    n_others = int(rng.integers(0, config.max_objects))
    labels = [plan.label, *(str(c) for c in rng.choice(others, size=n_others, replace=False))]

    if rng.random() < config.confined_prob:
        band = int(round(config.object_region * size))
        band_x0 = 0 if rng.random() < 0.5 else size - band
    else:
        band, band_x0 = size, 0
    pasted: list[tuple[Image.Image, int, int]] = []
    boxes: list[Box] = []
    for i, label in enumerate(labels):
        scale = config.label_scale if i == 0 else config.other_scale
        sprite, (bx0, by0, bx1, by1) = _sized_sprite(label, max(4, int(round(rng.uniform(*scale) * size))))
        best: tuple[float, int, int] | None = None
        for _ in range(PLACEMENT_TRIES):
            x = band_x0 + int(rng.integers(0, band - sprite.width + 1))
            y = int(rng.integers(0, size - sprite.height + 1))
            box = Box(x + bx0, y + by0, x + bx1, y + by1, label)
            overlap = max((_covered(box, other) for other in boxes), default=0.0)
            if best is None or overlap < best[0]:
                best = (overlap, x, y)
            if overlap <= config.max_overlap:
                break
        _, x, y = best
        pasted.append((sprite, x, y))
        boxes.append(Box(float(x + bx0), float(y + by0), float(x + bx1), float(y + by1), label))
    # The label object is pasted last so that nothing hides it.
    for sprite, x, y in reversed(pasted):
        canvas.alpha_composite(sprite, (x, y))

    named = [labels[0], *(o for o in labels[1:] if rng.random() < config.caption_other_prob)]
    # Drawn only when it can fail, so captions of configs that always name the label stay as they were.
    if config.caption_label_prob < 1.0 and rng.random() >= config.caption_label_prob:
        named = named[1:]
    templates = TEMPLATES if named else PLACE_TEMPLATES
    template = templates[int(rng.integers(len(templates)))]
    caption = template.format(objects=_enumerate(named) if named else "", place=SCENES[scene].phrase)
    if rng.random() < config.caption_detail_prob:
        caption = f"{caption[:-1]}, IMG_{int(rng.integers(10_000)):04d}."
    return canvas.convert("RGB"), scene, tuple(boxes), caption[0].upper() + caption[1:], tuple(labels)


def _covered(box: Box, other: Box) -> float:
    """Returns the fraction of `box`'s area that `other` covers."""
    w = min(box.x1, other.x1) - max(box.x0, other.x0)
    h = min(box.y1, other.y1) - max(box.y0, other.y0)
    return max(w, 0) * max(h, 0) / ((box.x1 - box.x0) * (box.y1 - box.y0))


def _enumerate(names: list[str]) -> str:
    """Returns 'a dog', 'a dog and an apple', or 'a dog, a car and an apple'."""
    phrases = [("an " if n[0] in "aeiou" else "a ") + n for n in names]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def record_id(index: int) -> str:
    """Returns the stable id of the record with this index."""
    return f"scn-{index:06d}"


def _image_path(out_dir: Path, index: int) -> Path:
    """Returns where the image of record `index` is written (1000 files per folder)."""
    return out_dir / "images" / f"{index // 1000:03d}" / f"{record_id(index)}.png"


def _make_record(plan: Plan, config: ScenesConfig, seed: int, preferred: dict[str, tuple[str, ...]],
                 out_dir: Path) -> Record:
    """Returns the Record for one plan after rendering its image to disk."""
    image, scene, boxes, caption, objects = render(plan, config, seed, preferred)
    rid = record_id(plan.index)
    path = _image_path(out_dir, plan.index)
    image.save(path)
    return Record(id=rid, image=path, width=config.image_size, height=config.image_size, label=plan.label,
                  boxes=boxes, caption=caption, objects=objects, split=plan.split, tags=(scene,),
                  repeat=plan.repeat, source=str(out_dir / JSONL))


def read_marker(out_dir: str | Path) -> dict | None:
    """Returns the build marker of a scenes folder (config, counts, build time), or None if absent."""
    path = Path(out_dir) / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def build_scenes(out_dir: str | Path, preset: str | ScenesConfig = "default", seed: int = 0, *,
                 workers: int = 1, **overrides) -> Path:
    """Returns the folder holding the built dataset (manifest.jsonl, images/, scenes.json).

    A folder already holding a complete build with the same config and seed is returned as is.
    `workers > 1` renders in a process pool; the output is identical because every record has its
    own seeded generator.
    """
    config = scenes_config(preset, **overrides) if isinstance(preset, str) else replace(preset, **overrides)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Concurrent sweep jobs ask for the same dataset: one builds it, the others wait and reuse it.
    with file_lock(out_dir / BUILD_LOCK):
        _build_locked(out_dir, config, seed, workers)
    return out_dir


def _build_locked(out_dir: Path, config: ScenesConfig, seed: int, workers: int) -> None:
    """Builds `config` into `out_dir` unless a complete build of it is there; the caller holds the lock."""
    key = config.key(seed)
    marker = read_marker(out_dir)
    if marker is not None:
        if marker.get("key") == key and marker.get("complete") and (out_dir / JSONL).is_file():
            return
        # A different or interrupted build of ours: its images would be stale.
        shutil.rmtree(out_dir / "images", ignore_errors=True)
    write_json(out_dir / MARKER, {"key": key, "complete": False})

    start = time.perf_counter()
    plans = plan_records(config, seed)
    preferred = preferred_scenes(config, seed)
    for folder in {_image_path(out_dir, p.index).parent for p in plans}:
        folder.mkdir(parents=True, exist_ok=True)
    if workers > 1:
        import functools
        import multiprocessing

        make = functools.partial(_make_record, config=config, seed=seed, preferred=preferred, out_dir=out_dir)
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            records = pool.map(make, plans, chunksize=256)
    else:
        records = [_make_record(p, config, seed, preferred, out_dir) for p in plans]
    write_manifest(records, out_dir)
    seconds = time.perf_counter() - start

    counts = {split: sum(r.split == split for r in records) for split in ("A", "B", "public", "eval")}
    write_json(out_dir / MARKER, {
        "key": key, "complete": True, "seed": seed, "config": asdict(config), "version": GENERATOR_VERSION,
        "counts": counts, "n_canaries": sum(r.is_canary for r in records),
        "canary_repeat": config.canary_repeat, "classes": class_names(config.n_classes),
        "scenes": list(config.scenes), "preferred_scenes": preferred, "build_seconds": round(seconds, 3),
    })


def load_scenes(out_dir: str | Path, preset: str | ScenesConfig = "default", seed: int = 0,
                **overrides) -> RecordSet:
    """Returns the records of the scenes dataset in `out_dir`, building it first if needed."""
    return read_manifest(build_scenes(out_dir, preset, seed, **overrides))
