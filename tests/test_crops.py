"""Background crops: hand-worked geometries of the published slab rule, the other rules, and properties."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dejavu.crops import (
    BOX_OUTSIDE_IMAGE,
    INVALID_BOX,
    NO_BACKGROUND,
    NO_BOXES,
    TOO_SMALL,
    Crop,
    background_crop,
    background_crops,
    crop_image,
    max_empty_candidates,
    overlaps,
    resolve_threshold,
    slab_candidates,
)
from dejavu.records import Box, Record, RecordError


def rec(width, height, *boxes, rid="r", image="x.png"):
    return Record(id=rid, image=Path(image), width=width, height=height,
                  boxes=tuple(Box(*b, label="fg") for b in boxes))


# --- the published slab rule, hand-worked ---------------------------------------------------------

def test_worked_example_has_no_crop_because_side_strips_are_exactly_100():
    r = rec(500, 375, (100, 50, 400, 300))
    assert slab_candidates(500, 375, r.boxes) == [
        (0, 0, 100, 375), (100, 0, 400, 50), (100, 300, 400, 375), (400, 0, 500, 375)]
    assert background_crop(r, threshold=100) == TOO_SMALL
    assert background_crop(r) == TOO_SMALL  # the scaled default is 100 px on a 500x375 image
    # Just below the threshold the tie between the two 100-wide strips goes to the right-most.
    assert background_crop(r, threshold=99.9) == Crop("r", 400, 0, 500, 375)


def test_two_boxes_pick_the_free_slab_between_them():
    r = rec(400, 300, (0, 0, 100, 300), (250, 100, 400, 200))
    assert slab_candidates(400, 300, r.boxes) == [
        (100, 0, 250, 300), (250, 0, 400, 100), (250, 200, 400, 300)]
    crop = background_crop(r, threshold=100)
    assert crop == Crop("r", 100, 0, 250, 300)
    assert (crop.box, crop.width, crop.height, crop.min_side) == ((100, 0, 250, 300), 150, 300, 150)


def test_touching_boxes_give_a_zero_width_slab_that_is_skipped_and_crops_may_share_edges():
    r = rec(300, 200, (0, 0, 100, 200), (100, 0, 200, 100))
    # Edges 0,100,100,200 (+W): slab [100,100) is skipped; box 1 only touches slab [100,200).
    assert slab_candidates(300, 200, r.boxes) == [(100, 100, 200, 200), (200, 0, 300, 200)]
    assert background_crop(r, threshold=99) == Crop("r", 200, 0, 300, 200)
    assert background_crop(r, threshold=100) == TOO_SMALL


def test_overlapping_y_intervals_are_merged_within_a_slab():
    r = rec(100, 300, (0, 0, 100, 120), (0, 100, 100, 150), (0, 250, 100, 300))
    assert slab_candidates(100, 300, r.boxes) == [(0, 150, 100, 250)]
    assert background_crop(r, threshold=99) == Crop("r", 0, 150, 100, 250)


def test_box_on_the_right_border_adds_no_edge_and_a_box_past_it_has_no_crop():
    assert slab_candidates(200, 100, rec(200, 100, (120, 0, 200, 100)).boxes) == [(0, 0, 120, 100)]
    assert background_crop(rec(200, 100, (120, 0, 200, 100)), threshold=50) == Crop("r", 0, 0, 120, 100)
    past = rec(200, 100, (120, 0, 201, 100))
    assert slab_candidates(200, 100, past.boxes) == []
    for rule in ("slab", "max-empty", "corner"):
        assert background_crop(past, rule) == BOX_OUTSIDE_IMAGE


def test_box_past_the_bottom_is_clipped_to_the_image_like_the_published_gaps():
    assert slab_candidates(200, 100, rec(200, 100, (50, 50, 150, 130)).boxes) == [
        (0, 0, 50, 100), (50, 0, 150, 50), (150, 0, 200, 100)]


def test_exclusion_reasons():
    assert background_crop(rec(100, 100)) == NO_BOXES
    assert background_crop(rec(100, 100, (50, 0, 40, 10))) == INVALID_BOX
    assert background_crop(rec(100, 100, (50, 10, 60, 10))) == INVALID_BOX
    assert background_crop(rec(100, 100, (float("nan"), 0, 40, 10))) == INVALID_BOX
    assert background_crop(rec(100, 100, (-1, 0, 40, 10))) == BOX_OUTSIDE_IMAGE
    assert background_crop(rec(100, 100, (0, 0, 100, 100))) == NO_BACKGROUND
    assert background_crop(rec(100, 100, (0, 0, 100, 100)), "max-empty") == NO_BACKGROUND


def test_max_empty_finds_the_full_width_strip_the_slab_rule_never_considers():
    r = rec(400, 300, (150, 0, 250, 100))
    assert background_crop(r, threshold=100) == Crop("r", 250, 0, 400, 300)
    assert background_crop(r, "max-empty", threshold=100) == Crop("r", 0, 100, 400, 300)


def test_corner_is_the_bottom_left_fraction_and_ignores_boxes():
    r = rec(400, 300, (0, 150, 200, 300))
    assert background_crop(r, "corner", corner_fraction=0.5) == Crop("r", 0, 150, 200, 300)
    assert background_crop(r, "corner", corner_fraction=0.25, threshold=75) == TOO_SMALL


def test_threshold_scales_with_the_short_side_and_is_a_parameter():
    assert resolve_threshold(500, 375) == pytest.approx(100)
    assert resolve_threshold(1000, 750) == pytest.approx(200)
    assert resolve_threshold(1000, 750, threshold_fraction=0.1) == pytest.approx(75)
    assert resolve_threshold(1000, 750, threshold=100) == 100
    with pytest.raises(ValueError, match="not both"):
        resolve_threshold(10, 10, threshold=1, threshold_fraction=0.1)
    with pytest.raises(ValueError, match="unknown crop rule"):
        background_crop(rec(10, 10, (0, 0, 1, 1)), "largest")


def test_overlap_is_half_open():
    box = Box(10, 10, 20, 20, "fg")
    assert not overlaps((20, 0, 30, 30), box)  # shares the edge x = 20
    assert not overlaps((0, 0, 10, 10), box)  # shares only a corner
    assert overlaps((19, 19, 30, 30), box)


def test_background_crops_keeps_every_record_as_a_crop_or_a_counted_exclusion():
    records = [rec(500, 375, (100, 50, 400, 300), rid="strips"),
               rec(400, 300, (0, 0, 100, 300), (250, 100, 400, 200), rid="two"),
               rec(100, 100, rid="empty"), rec(100, 100, rid="empty2")]
    result = background_crops(records, threshold=100)
    assert list(result.crops) == ["two"]
    assert result.excluded_ids == {"strips": TOO_SMALL, "empty": NO_BOXES, "empty2": NO_BOXES}
    assert result.excluded == {NO_BOXES: 2, TOO_SMALL: 1}
    assert str(result).splitlines() == ["background crops (slab): 1 of 4 records",
                                        "  excluded, no-boxes: 2", "  excluded, too-small: 1"]


def test_crop_image_cuts_the_decoded_pixels_and_rounds_inwards(tmp_path):
    path = tmp_path / "img.png"
    img = Image.new("RGB", (8, 6), (0, 0, 0))
    img.putpixel((5, 1), (255, 0, 0))
    img.save(path)
    r = rec(8, 6, (0, 0, 4, 6), image=path)
    out = crop_image(r, Crop("r", 4.5, 0, 8, 6))
    assert out.size == (3, 6)
    assert out.getpixel((0, 1)) == (255, 0, 0)
    with pytest.raises(RecordError, match="'r'.*manifest says 9x6"):
        crop_image(rec(9, 6, image=path), Crop("r", 4, 0, 8, 6))
    with pytest.raises(RecordError, match="does not exist"):
        crop_image(rec(8, 6, image=tmp_path / "missing.png"), Crop("r", 4, 0, 8, 6))


# --- properties on random boxes ------------------------------------------------------------------

@st.composite
def scenes(draw, max_side=60):
    width = draw(st.integers(1, max_side))
    height = draw(st.integers(1, max_side))  # boxes have positive area: empty ones are invalid-box
    boxes = []
    for _ in range(draw(st.integers(1, 5))):
        x0, x1 = sorted(draw(st.lists(st.integers(0, width), min_size=2, max_size=2, unique=True)))
        y0, y1 = sorted(draw(st.lists(st.integers(0, height), min_size=2, max_size=2, unique=True)))
        boxes.append((x0, y0, x1, y1))
    return rec(width, height, *boxes)


def assert_background(crop: Crop, r: Record, *, off_boxes: bool = True):
    assert 0 <= crop.x0 < crop.x1 <= r.width and 0 <= crop.y0 < crop.y1 <= r.height
    assert not off_boxes or not any(overlaps(crop.box, b) for b in r.boxes)


@settings(max_examples=150, deadline=None)
@given(scenes())
def test_every_rule_gives_an_in_image_crop_that_overlaps_no_box(r):
    for rule in ("slab", "max-empty", "corner"):
        crop = background_crop(r, rule, threshold=0)
        if isinstance(crop, Crop):
            assert_background(crop, r, off_boxes=rule != "corner")
            assert crop.min_side > 0


@settings(max_examples=150, deadline=None)
@given(scenes())
def test_slab_choice_has_the_largest_min_side_and_max_empty_the_largest_area(r):
    candidates = slab_candidates(r.width, r.height, r.boxes)
    for c in candidates:
        assert_background(Crop("r", *c), r)
    slab = background_crop(r, threshold=0)
    best = background_crop(r, "max-empty", threshold=0)
    if isinstance(slab, Crop):
        assert all(slab.min_side >= min(c[2] - c[0], c[3] - c[1]) for c in candidates)
        assert isinstance(best, Crop)
        assert best.width * best.height >= slab.width * slab.height
    else:
        assert candidates == []


@settings(max_examples=60, deadline=None)
@given(scenes(max_side=9))
def test_max_empty_area_equals_brute_force_over_the_pixel_grid(r):
    brute = max((x1 - x0) * (y1 - y0)
                for x0 in range(r.width) for x1 in range(x0 + 1, r.width + 1)
                for y0 in range(r.height) for y1 in range(y0 + 1, r.height + 1)
                if not any(overlaps((x0, y0, x1, y1), b) for b in r.boxes)) if _has_free_pixel(r) else 0
    rects = max_empty_candidates(r.width, r.height, r.boxes)
    assert max(((c[2] - c[0]) * (c[3] - c[1]) for c in rects), default=0) == brute


def _has_free_pixel(r: Record) -> bool:
    return any(not any(overlaps((x, y, x + 1, y + 1), b) for b in r.boxes)
               for x in range(r.width) for y in range(r.height))
