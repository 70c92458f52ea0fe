"""Background crops: a rectangle of an image that touches no foreground box (SPEC section 2).

Boxes and crops are half-open rectangles [x0, x1) x [y0, y1) in pixels: a crop may share an edge with a
box but never overlaps one with positive area.

Rules:
- ``slab`` (default) is the published rule, exactly: vertical slabs between consecutive sorted box
  x-edges (plus 0 and W), the gaps between the merged y-intervals of the boxes crossing each slab as
  candidates, the candidate with the largest min side (ties: the last generated, i.e. right-most then
  bottom-most).  It is deliberately *not* the largest empty rectangle.
- ``max-empty``: the largest-area empty rectangle (ties: larger min side, then the last generated).
- ``corner``: the bottom-left ``corner_fraction`` of each side, ignoring boxes (an ablation).

Every rule then accepts the crop only if its min side is **strictly greater** than the threshold.  The
original uses 100 px on full-size ImageNet photos, whose typical size is 500x375; the scaled default
here is ``threshold = DEFAULT_THRESHOLD_FRACTION * min(W, H)`` with the fraction 100/375, which gives
exactly 100 px on a 500x375 image.  Pass ``threshold=100`` to use the original fixed rule.

A record is excluded, and counted, when it has no boxes ("no-boxes"); a malformed box, i.e. inverted,
empty or non-finite ("invalid-box"); a box past the right edge (x1 > W: the published "no crop" case)
or past the top or left edge (x0 < 0 or y0 < 0, where the published rule would crop outside the
image) ("box-outside-image"); no empty region at all ("no-background"); or a best crop that is not
above the threshold ("too-small").  The exclusions are the same for every rule, so the rules attack
the same records up to "too-small".  A box past the bottom edge is clipped to H, which is what the
published rule's gaps "from 0 to H" do.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from PIL import Image

from dejavu.records import Box, Record, RecordError
from dejavu.rules import check_fields, fraction, one_of

Rect = tuple[float, float, float, float]

RULES = ("slab", "max-empty", "corner")
DEFAULT_THRESHOLD_FRACTION = 100 / 375

NO_BOXES = "no-boxes"
INVALID_BOX = "invalid-box"
BOX_OUTSIDE_IMAGE = "box-outside-image"
NO_BACKGROUND = "no-background"
TOO_SMALL = "too-small"
EXCLUSION_REASONS = (NO_BOXES, INVALID_BOX, BOX_OUTSIDE_IMAGE, NO_BACKGROUND, TOO_SMALL)


@dataclass(frozen=True)
class CropConfig:
    """The background-crop rule every image test attacks with (`measure.crops`): one setting, shared."""

    rule: str = field(default="slab", metadata=one_of(RULES))
    # of min(W, H); None: 100 px at a 375 px short side (DEFAULT_THRESHOLD_FRACTION)
    threshold_fraction: float | None = field(default=None, metadata=fraction())

    def __post_init__(self):
        check_fields(self)

    def crops(self, records: Iterable[Record]) -> CropResult:
        """Returns the background crops of `records` under this rule."""
        return background_crops(records, self.rule, threshold_fraction=self.threshold_fraction)


@dataclass(frozen=True)
class Crop:
    """A background rectangle [x0, x1) x [y0, y1) of one record's image, in pixels."""

    record_id: str
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def box(self) -> Rect:
        """Returns the (x0, y0, x1, y1) tuple that PIL's crop takes."""
        return (self.x0, self.y0, self.x1, self.y1)

    @property
    def width(self) -> float:
        """Returns x1 - x0."""
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        """Returns y1 - y0."""
        return self.y1 - self.y0

    @property
    def min_side(self) -> float:
        """Returns min(width, height), the side the threshold is compared with."""
        return min(self.width, self.height)


def resolve_threshold(width: float, height: float, threshold: float | None = None,
                      threshold_fraction: float | None = None) -> float:
    """Returns the min-side threshold in pixels: `threshold`, else `threshold_fraction` x min(W, H)."""
    if threshold is not None and threshold_fraction is not None:
        raise ValueError("give either threshold (pixels) or threshold_fraction, not both")
    if threshold is None:
        fraction = DEFAULT_THRESHOLD_FRACTION if threshold_fraction is None else threshold_fraction
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"threshold_fraction must be in [0, 1), got {fraction}")
        threshold = fraction * min(width, height)
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0 pixels, got {threshold}")
    return threshold


def overlaps(rect: Rect, box: Box) -> bool:
    """Returns whether a rectangle and a box share positive area (a shared edge does not count)."""
    return (min(rect[2], box.x1) - max(rect[0], box.x0) > 0
            and min(rect[3], box.y1) - max(rect[1], box.y0) > 0)


def _gaps(intervals: Iterable[tuple[float, float]], height: float) -> list[tuple[float, float]]:
    """Returns the parts of [0, height] of positive length that no interval covers, top to bottom."""
    gaps, top = [], 0.0
    for y0, y1 in sorted((min(a, height), min(b, height)) for a, b in intervals):
        if y0 > top:
            gaps.append((top, y0))
        top = max(top, y1)
    if top < height:
        gaps.append((top, height))
    return gaps


def _empty_rects_between(x0: float, x1: float, height: float, boxes: Sequence[Box]) -> list[Rect]:
    """Returns the full-height-gap rectangles of the slab [x0, x1) that no box overlaps, top to bottom."""
    crossing = [(b.y0, b.y1) for b in boxes if min(x1, b.x1) - max(x0, b.x0) > 0]
    return [(x0, g0, x1, g1) for g0, g1 in _gaps(crossing, height)]


def slab_candidates(width: float, height: float, boxes: Sequence[Box]) -> list[Rect]:
    """Returns the published rule's candidate rectangles in generation order (slabs left to right)."""
    if any(b.x1 > width for b in boxes):
        return []  # the published rule has no crop when a box reaches past the right edge
    xs = sorted(edge for b in boxes for edge in (b.x0, b.x1))
    if not xs or xs[0] > 0:
        xs.insert(0, 0)
    if xs[-1] < width:
        xs.append(width)
    candidates: list[Rect] = []
    for left, right in pairwise(xs):
        if right > left:  # duplicate edges give zero-width slabs, which hold no crop
            candidates += _empty_rects_between(left, right, height, boxes)
    return candidates


def max_empty_candidates(width: float, height: float, boxes: Sequence[Box]) -> list[Rect]:
    """Returns, for every pair of x-edges (box edges, 0, W), the empty rectangles spanning exactly it."""
    # A maximal empty rectangle has its left and right sides on the border or on box edges, and
    # for fixed sides its best height is a gap between the boxes crossing it: O(n^2) pairs x O(n log n).
    xs = sorted({0, width} | {min(max(e, 0), width) for b in boxes for e in (b.x0, b.x1)})
    return [rect for i, left in enumerate(xs) for right in xs[i + 1:]
            for rect in _empty_rects_between(left, right, height, boxes)]


def _last_best(candidates: Iterable[Rect], key: Callable[[Rect], tuple]) -> Rect | None:
    """Returns the candidate with the largest key; among ties, the last one."""
    best = None
    for c in candidates:
        if best is None or key(c) >= key(best):
            best = c
    return best


def _min_side(r: Rect) -> float:
    return min(r[2] - r[0], r[3] - r[1])


def _area(r: Rect) -> float:
    return (r[2] - r[0]) * (r[3] - r[1])


def _box_problem(record: Record) -> str | None:
    """Returns the exclusion reason of a record's boxes, or None when they can be used."""
    if not record.boxes:
        return NO_BOXES
    for b in record.boxes:
        coords = (b.x0, b.y0, b.x1, b.y1)
        if not all(math.isfinite(c) for c in coords) or b.x1 <= b.x0 or b.y1 <= b.y0:
            return INVALID_BOX
    if any(b.x0 < 0 or b.y0 < 0 or b.x1 > record.width for b in record.boxes):
        return BOX_OUTSIDE_IMAGE
    return None


def background_crop(record: Record, rule: str = "slab", threshold: float | None = None,
                    threshold_fraction: float | None = None, corner_fraction: float = 0.5) -> Crop | str:
    """Returns the record's background Crop under `rule`, or the exclusion reason (a str) when none."""
    if rule not in RULES:
        raise ValueError(f"unknown crop rule {rule!r}; use one of {', '.join(RULES)}")
    if not 0.0 < corner_fraction <= 1.0:
        raise ValueError(f"corner_fraction must be in (0, 1], got {corner_fraction}")
    if record.width <= 0 or record.height <= 0:
        raise RecordError(f"image size {record.width}x{record.height} is not positive; fix width/height",
                          record_id=record.id, file=record.source or record.image)
    limit = resolve_threshold(record.width, record.height, threshold, threshold_fraction)
    problem = _box_problem(record)
    if problem:
        return problem
    W, H, boxes = record.width, record.height, record.boxes
    if rule == "slab":
        best = _last_best(slab_candidates(W, H, boxes), key=lambda r: (_min_side(r),))
    elif rule == "max-empty":
        best = _last_best(max_empty_candidates(W, H, boxes), key=lambda r: (_area(r), _min_side(r)))
    else:
        best = (0, H - corner_fraction * H, corner_fraction * W, H)
    if best is None:
        return NO_BACKGROUND
    if not _min_side(best) > limit:
        return TOO_SMALL
    return Crop(record.id, *best)


@dataclass
class CropResult:
    """The crops of the records that have one, and every excluded record with its reason."""

    rule: str
    crops: dict[str, Crop] = field(default_factory=dict)
    excluded_ids: dict[str, str] = field(default_factory=dict)

    @property
    def excluded(self) -> Counter[str]:
        """Returns the number of excluded records per reason."""
        return Counter(self.excluded_ids.values())

    def __str__(self) -> str:
        total = len(self.crops) + len(self.excluded_ids)
        lines = [f"background crops ({self.rule}): {len(self.crops)} of {total} records"]
        lines += [f"  excluded, {reason}: {n}" for reason, n in sorted(self.excluded.items())]
        return "\n".join(lines)


def background_crops(records: Iterable[Record], rule: str = "slab", threshold: float | None = None,
                     threshold_fraction: float | None = None, corner_fraction: float = 0.5) -> CropResult:
    """Returns the CropResult of `background_crop` over the records (every record is a crop or counted)."""
    result = CropResult(rule=rule)
    for r in records:
        crop = background_crop(r, rule, threshold, threshold_fraction, corner_fraction)
        if isinstance(crop, Crop):
            result.crops[r.id] = crop
        else:
            result.excluded_ids[r.id] = crop
    return result


def crop_image(record: Record, crop: Crop) -> Image.Image:
    """Returns the crop of the record's decoded image, its edges rounded inwards to whole pixels."""
    if crop.record_id != record.id:
        raise ValueError(f"crop of record {crop.record_id!r} applied to record {record.id!r}")
    image = record.load_image()
    if image.size != (record.width, record.height):
        raise RecordError(f"image is {image.size[0]}x{image.size[1]} but the manifest says "
                          f"{record.width}x{record.height}; fix width/height so boxes match the pixels",
                          record_id=record.id, file=record.image)
    # Rounding inwards keeps the crop off every box even when its edges are fractional.
    box = (math.ceil(crop.x0), math.ceil(crop.y0), math.floor(crop.x1), math.floor(crop.y1))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"crop {crop.box} of record {record.id!r} holds no whole pixel")
    return image.crop(box)
