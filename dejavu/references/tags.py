"""Background tags of a crop: the objects or things visible in it (SPEC section 4, naive Bayes).

Tags come either from dataset annotations (`crop_tags`) or from a `Tagger` run on the crop
pixels of real photos that carry no annotations; `top_tags` keeps the t best-scored ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from PIL import Image

from dejavu.records import Box, Record

ScoredTags = Sequence[tuple[str, float]]


@runtime_checkable
class Tagger(Protocol):
    """Names what is visible in a crop, e.g. an open-vocabulary detector or an image tagger."""

    def tag(self, record: Record, crop_image: Image.Image) -> list[tuple[str, float]]:
        """Returns (tag, score) pairs for the crop, higher score = surer."""
        ...


def crop_box(crop) -> tuple[float, float, float, float]:
    """Returns (x0, y0, x1, y1) of anything with a `.box` attribute or of a 4-tuple."""
    box = getattr(crop, "box", crop)
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"a crop must have .box or be (x0, y0, x1, y1); got {crop!r}") from None
    return x0, y0, x1, y1


def foreground_boxes(record: Record) -> tuple[Box, ...]:
    """Returns the boxes of the record's foreground object.

    Those are the boxes labelled with the record's label (several instances of the object are all
    foreground, so none of them can leak the label as a "background" tag). When no box carries
    the label, the first box is taken as the foreground, as readers list it first.
    """
    same = tuple(b for b in record.boxes if b.label == record.label)
    return same if same else record.boxes[:1]


def crop_tags(record: Record, crop) -> frozenset[str]:
    """Returns the record's tags plus the labels of non-foreground boxes overlapping the crop.

    Overlap means a positive-area intersection of half-open boxes, so a box that only touches the
    crop's edge does not count.
    """
    x0, y0, x1, y1 = crop_box(crop)
    foreground = set(foreground_boxes(record))
    overlapping = {
        b.label
        for b in record.boxes
        if b not in foreground and min(x1, b.x1) > max(x0, b.x0) and min(y1, b.y1) > max(y0, b.y0)
    }
    return frozenset(record.tags) | overlapping


def top_tags(scored: Iterable[tuple[str, float]], t: int | None) -> frozenset[str]:
    """Returns the t highest-scored distinct tags (all of them when t is None).

    Ties in score go to the smaller tag name so the choice is deterministic; a tag listed twice
    keeps its best score.
    """
    best: dict[str, float] = {}
    for tag, score in scored:
        tag = str(tag).strip()
        best[tag] = max(float(score), best.get(tag, float("-inf")))
    ranked = sorted(best, key=lambda tag: (-best[tag], tag))
    return frozenset(ranked if t is None else ranked[:t])
