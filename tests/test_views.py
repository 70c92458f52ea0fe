"""Batched training views: conversion from per-image transforms, and each op against its per-image twin."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from lightly.transforms import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
    SimCLRTransform,
    VICRegTransform,
)
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as F2

from bench.recipes.views import (
    BatchedView,
    ColorJitter,
    Flip,
    GaussianBlur,
    Grayscale,
    Normalize,
    ResizedCrop,
    Solarize,
    batched_views,
)


def _steps(view) -> dict[str, object]:
    """Returns lightly's per-image steps of one view, by class name."""
    return {type(t).__name__: t for t in view.transform.transforms}


def _op(view: BatchedView, kind: type):
    ops = [op for op in view.ops if isinstance(op, kind)]
    assert len(ops) == 1, f"expected one {kind.__name__} in {view!r}"
    return ops[0]


def _uint8(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g)


def _unit(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return _uint8(n, h, w, seed).float().div(255)


# ---------------------------------------------------------------- conversion


def _check_common(view: BatchedView, lightly_view) -> None:
    steps = _steps(lightly_view)
    crop = _op(view, ResizedCrop)
    rrc = steps["RandomResizedCrop"]
    assert crop.size == tuple(rrc.size) and crop.scale == tuple(rrc.scale) and crop.ratio == tuple(rrc.ratio)
    flip = _op(view, Flip)
    assert flip.dim == -1 and flip.p == steps["RandomHorizontalFlip"].p
    jitter = _op(view, ColorJitter)
    apply = steps["RandomApply"]
    assert jitter.p == apply.p
    lightly_jitter = apply.transforms[0]
    expected = [getattr(lightly_jitter, k) for k in ("brightness", "contrast", "saturation", "hue")]
    assert [tuple(r) for r in jitter.ranges] == [tuple(r) for r in expected]
    assert _op(view, Grayscale).p == steps["RandomGrayscale"].p
    norm = _op(view, Normalize)
    assert torch.allclose(norm.mean.flatten(), torch.tensor(steps["Normalize"].mean))
    assert torch.allclose(norm.std.flatten(), torch.tensor(steps["Normalize"].std))
    # the crop comes first and the normalization last, as in the per-image pipeline
    assert isinstance(view.ops[0], ResizedCrop) and isinstance(view.ops[-1], Normalize)


def test_simclr_gives_two_views_of_the_expected_ops():
    transform = SimCLRTransform(input_size=32)
    views = batched_views(transform)
    assert len(views) == 2
    for view, lightly_view in zip(views, transform.transforms, strict=True):
        assert isinstance(view, BatchedView)
        # the vertical flip (p=0) and the rotation (prob=0) are no-ops and are dropped
        assert [type(op) for op in view.ops] == [ResizedCrop, Flip, ColorJitter, Grayscale, GaussianBlur,
                                                 Normalize]
        _check_common(view, lightly_view)
        blur = _op(view, GaussianBlur)
        lightly_blur = _steps(lightly_view)["GaussianBlur"]
        assert blur.p == lightly_blur.prob and blur.sigmas == tuple(float(s) for s in lightly_blur.sigmas)


def test_vicreg_views_include_solarization_with_lightlys_threshold():
    transform = VICRegTransform(input_size=32)
    views = batched_views(transform)
    assert len(views) == 2
    for view, lightly_view in zip(views, transform.transforms, strict=True):
        _check_common(view, lightly_view)
        solarize = _op(view, Solarize)
        lightly_sol = _steps(lightly_view)["RandomSolarization"]
        assert solarize.p == lightly_sol.prob > 0
        assert solarize.threshold == pytest.approx(lightly_sol.threshold / 255)
        # the solarization keeps its place between grayscale and blur
        kinds = [type(op) for op in view.ops]
        assert kinds.index(Grayscale) < kinds.index(Solarize) < kinds.index(GaussianBlur)


def test_byol_views_keep_their_asymmetric_blur_and_solarization():
    transform = BYOLTransform(BYOLView1Transform(input_size=32), BYOLView2Transform(input_size=32))
    one, two = batched_views(transform)
    for view, lightly_view in zip((one, two), transform.transforms, strict=True):
        _check_common(view, lightly_view)
        steps = _steps(lightly_view)
        assert _op(view, GaussianBlur).p == steps["GaussianBlur"].prob
        solarizations = [op for op in view.ops if isinstance(op, Solarize)]
        if steps["RandomSolarization"].prob > 0:
            assert [s.p for s in solarizations] == [steps["RandomSolarization"].prob]
        else:
            assert solarizations == []
    assert _op(one, GaussianBlur).p == 1.0
    assert not any(isinstance(op, Solarize) for op in one.ops)
    assert _op(two, GaussianBlur).p < 1.0 and _op(two, Solarize).p > 0


def test_a_single_compose_gives_one_view():
    compose = T.Compose([T.RandomResizedCrop(16, scale=(0.5, 1.0)), T.RandomHorizontalFlip(),
                         T.ToTensor(), T.Normalize([0.5] * 3, [0.25] * 3)])
    views = batched_views(compose)
    assert len(views) == 1
    assert [type(op) for op in views[0].ops] == [ResizedCrop, Flip, Normalize]
    assert _op(views[0], ResizedCrop).scale == (0.5, 1.0)
    out = views[0](_uint8(3, 20, 24))
    assert out.shape == (3, 3, 16, 16) and out.dtype == torch.float32


def test_vertical_flip_and_bare_color_jitter_convert():
    compose = T.Compose([T.RandomVerticalFlip(0.3), T.ColorJitter(brightness=0.2), T.ToTensor()])
    (view,) = batched_views(compose)
    flip, jitter = view.ops
    assert isinstance(flip, Flip) and flip.dim == -2 and flip.p == 0.3
    assert isinstance(jitter, ColorJitter) and jitter.p == 1.0
    assert tuple(jitter.ranges[0]) == pytest.approx((0.8, 1.2)) and jitter.ranges[1:] == [None] * 3


def test_unknown_transform_raises_type_error_naming_it():
    compose = T.Compose([T.RandomRotation(10), T.ToTensor()])
    with pytest.raises(TypeError, match="RandomRotation"):
        batched_views(compose)


def test_compose_without_to_tensor_raises_type_error():
    with pytest.raises(TypeError, match="ToTensor"):
        batched_views(T.Compose([T.RandomHorizontalFlip(), T.Normalize([0.5] * 3, [0.5] * 3)]))


@pytest.mark.parametrize("bad", [torch.rand(2, 3, 8, 8), torch.zeros(3, 8, 8, dtype=torch.uint8),
                                 torch.zeros(2, 3, 8, 8, dtype=torch.int32)])
def test_non_uint8_nchw_input_raises_value_error(bad):
    (view,) = batched_views(T.Compose([T.ToTensor()]))
    with pytest.raises(ValueError, match="uint8 NCHW"):
        view(bad)


def test_to_tensor_only_scales_to_unit_range():
    (view,) = batched_views(T.Compose([T.ToTensor()]))
    pixels = _uint8(2, 5, 7)
    out = view(pixels)
    assert out.dtype == torch.float32 and torch.equal(out, pixels.float() / 255)


# ---------------------------------------------------------------- ResizedCrop


@pytest.mark.parametrize("height,width,scale,ratio", [
    (48, 40, (0.08, 1.0), (3 / 4, 4 / 3)),
    (32, 32, (0.2, 0.5), (0.5, 2.0)),
    (20, 60, (0.3, 1.0), (3 / 4, 4 / 3)),  # a wide image: many tries fail, the fallback is clamped
])
def test_crop_boxes_lie_inside_with_scale_and_ratio_in_bounds(height, width, scale, ratio):
    torch.manual_seed(0)
    crop = ResizedCrop((8, 8), scale, ratio)
    boxes = crop.boxes(2000, height, width)
    assert boxes.shape == (2000, 4)
    assert torch.equal(boxes, boxes.round()), "boxes are in whole pixels"
    x0, y0, x1, y1 = boxes.unbind(1)
    w, h = x1 - x0, y1 - y0
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= width).all() and (y1 <= height).all()
    assert (w > 0).all() and (h > 0).all()
    area = height * width
    fallback = (x0 == (width - w) // 2) & (y0 == (height - h) // 2) & ((w == width) | (h == height))
    sampled = ~fallback
    assert sampled.float().mean() > 0.5
    ws, hs = w[sampled], h[sampled]
    # w and h are rounded from a real (w*, h*) with w* h* / area in scale and w* / h* in ratio
    assert ((ws - 0.5) * (hs - 0.5) <= scale[1] * area + 1e-6).all()
    assert ((ws + 0.5) * (hs + 0.5) >= scale[0] * area - 1e-6).all()
    assert ((ws - 0.5) / (hs + 0.5) <= ratio[1] + 1e-6).all()
    assert ((ws + 0.5) / (hs - 0.5) >= ratio[0] - 1e-6).all()
    # positions are random, not always a corner or the centre
    assert len(set(x0[sampled].tolist())) > 3 or (ws == width).all()
    assert len(set(y0[sampled].tolist())) > 3 or (hs == height).all()


def test_crop_box_areas_follow_torchvisions_distribution():
    height, width, scale, ratio = 40, 48, (0.08, 1.0), (3 / 4, 4 / 3)
    torch.manual_seed(0)
    ours = ResizedCrop((8, 8), scale, ratio).boxes(4000, height, width)
    ours_area = ((ours[:, 2] - ours[:, 0]) * (ours[:, 3] - ours[:, 1])).float() / (height * width)
    image = torch.zeros(3, height, width)
    torch.manual_seed(1)
    theirs = torch.tensor([T.RandomResizedCrop.get_params(image, list(scale), list(ratio))
                           for _ in range(4000)], dtype=torch.float32)
    theirs_area = theirs[:, 2] * theirs[:, 3] / (height * width)
    assert abs(ours_area.mean() - theirs_area.mean()) < 0.02
    assert abs(ours_area.std() - theirs_area.std()) < 0.02


def test_crop_box_is_the_whole_square_image_at_scale_and_ratio_one():
    torch.manual_seed(0)
    boxes = ResizedCrop((8, 8), (1.0, 1.0), (1.0, 1.0)).boxes(50, 24, 24)
    assert torch.equal(boxes, torch.tensor([[0.0, 0.0, 24.0, 24.0]]).expand(50, 4))


def test_crop_falls_back_to_torchvisions_clamped_centre_crop():
    # a 10x40 image cannot hold a full-area box of aspect <= 1: every try fails
    height, width, scale, ratio = 10, 40, (1.0, 1.0), (0.5, 1.0)
    torch.manual_seed(0)
    boxes = ResizedCrop((8, 8), scale, ratio).boxes(5, height, width)
    i, j, h, w = T.RandomResizedCrop.get_params(torch.zeros(3, height, width), list(scale), list(ratio))
    assert torch.equal(boxes, torch.tensor([[j, i, j + w, i + h]], dtype=torch.float32).expand(5, 4))
    # and the other way round, a tall image with a ratio range above its aspect
    boxes = ResizedCrop((8, 8), (1.0, 1.0), (2.0, 3.0)).boxes(3, 40, 10)
    i, j, h, w = T.RandomResizedCrop.get_params(torch.zeros(3, 40, 10), [1.0, 1.0], [2.0, 3.0])
    assert torch.equal(boxes, torch.tensor([[j, i, j + w, i + h]], dtype=torch.float32).expand(3, 4))


def test_crop_of_the_whole_image_at_its_own_size_is_the_identity():
    x = _unit(3, 16, 16)
    torch.manual_seed(0)
    out = ResizedCrop((16, 16), (1.0, 1.0), (1.0, 1.0))(x)
    assert out.shape == x.shape
    assert torch.allclose(out, x, atol=1e-5)


def test_crop_of_a_constant_image_stays_constant_and_has_the_requested_size():
    x = torch.full((4, 3, 48, 48), 0.25)
    torch.manual_seed(0)
    out = ResizedCrop((32, 32), (0.08, 1.0), (3 / 4, 4 / 3))(x)
    assert out.shape == (4, 3, 32, 32)
    assert torch.allclose(out, torch.full_like(out, 0.25), atol=1e-6)


def test_crop_samples_the_boxed_region():
    # an image whose left half is 0 and right half 1: a box inside the right half gives all ones
    x = torch.zeros(1, 3, 16, 16)
    x[..., 8:] = 1.0
    crop = ResizedCrop((4, 4), (1.0, 1.0), (1.0, 1.0))
    crop.boxes = lambda n, h, w: torch.tensor([[8.0, 4.0, 16.0, 12.0]])
    assert torch.allclose(crop(x), torch.ones(1, 3, 4, 4), atol=1e-6)
    crop.boxes = lambda n, h, w: torch.tensor([[0.0, 0.0, 8.0, 8.0]])
    assert torch.allclose(crop(x), torch.zeros(1, 3, 4, 4), atol=1e-6)


# ---------------------------------------------------------------- Flip, Grayscale, Solarize, Normalize


def test_flip_always_and_never():
    x = _unit(4, 5, 6)
    assert torch.equal(Flip(1.0, -1)(x), x.flip(-1))
    assert torch.equal(Flip(1.0, -2)(x), x.flip(-2))
    assert torch.equal(Flip(0.0, -1)(x), x)


def test_flip_is_drawn_per_sample_with_probability_p():
    x = _unit(2000, 1, 2)
    torch.manual_seed(0)
    out = Flip(0.3, -1)(x)
    flipped = (out == x.flip(-1)).flatten(1).all(1) & ~(x == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped | kept).all()
    assert 0.25 < flipped.float().mean() < 0.35


def test_grayscale_always_matches_torchvision():
    x = _unit(3, 6, 7)
    out = Grayscale(1.0)(x)
    gray = F2.rgb_to_grayscale(x)
    assert out.shape == x.shape
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert torch.equal(out[:, :1], gray)
    assert torch.equal(Grayscale(0.0)(x), x)


def test_grayscale_is_drawn_per_sample():
    x = _unit(1000, 2, 2)
    torch.manual_seed(0)
    out = Grayscale(0.2)(x)
    gray = (out[:, 0] == out[:, 1]).flatten(1).all(1) & (out[:, 1] == out[:, 2]).flatten(1).all(1)
    assert 0.15 < gray.float().mean() < 0.25
    assert torch.equal(out[~gray], x[~gray])


def test_solarize_inverts_exactly_the_pixels_at_or_above_the_threshold():
    levels = torch.arange(256, dtype=torch.uint8)
    x = levels.float().div(255).view(1, 1, 1, 256).expand(2, 3, 1, 256).contiguous()
    out = Solarize(1.0, 128 / 255)(x)
    inverted = (levels >= 128).view(1, 1, 1, 256).expand_as(x)
    assert torch.equal(out[inverted], 1 - x[inverted])
    assert torch.equal(out[~inverted], x[~inverted])
    assert torch.equal(Solarize(0.0, 128 / 255)(x), x)


def test_solarize_matches_lightlys_per_image_solarization():
    import numpy as np
    from lightly.transforms import RandomSolarization
    from PIL import Image

    levels = torch.arange(256, dtype=torch.uint8)
    image = Image.fromarray(levels.view(16, 16).numpy()).convert("RGB")
    lightly_sol = RandomSolarization(prob=1.0, threshold=128)
    expected = torch.from_numpy(np.asarray(lightly_sol(image)).copy()).permute(2, 0, 1)
    (view,) = batched_views(T.Compose([T.ToTensor(), lightly_sol]))
    assert [type(op) for op in view.ops] == [Solarize]
    out = view(levels.view(1, 1, 16, 16).expand(1, 3, 16, 16).contiguous())
    assert torch.equal((out * 255).round().to(torch.uint8)[0], expected)


def test_normalize_matches_torchvision():
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    x = _unit(4, 5, 6)
    out = Normalize(mean, std)(x)
    expected = T.Normalize(mean, std)(x)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(out[2], T.Normalize(mean, std)(x[2]), atol=1e-6)


# ---------------------------------------------------------------- ColorJitter


def test_color_jitter_with_p_zero_is_the_identity():
    x = _unit(8, 6, 6)
    jitter = ColorJitter(T.ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.0)
    torch.manual_seed(0)
    assert torch.equal(jitter(x), x)


def test_fixed_brightness_scales_and_clamps():
    x = _unit(5, 6, 6)
    torch.manual_seed(0)
    out = ColorJitter(T.ColorJitter(brightness=(1.5, 1.5)), p=1.0)(x)
    assert torch.equal(out, (1.5 * x).clamp(0, 1))


@pytest.mark.parametrize("name,factor,functional", [
    ("contrast", 0.5, F2.adjust_contrast),
    ("saturation", 1.7, F2.adjust_saturation),
    ("hue", 0.15, F2.adjust_hue),
    ("brightness", 0.6, F2.adjust_brightness),
])
def test_a_single_fixed_factor_matches_torchvisions_functional(name, factor, functional):
    x = _unit(4, 7, 9)
    torch.manual_seed(0)
    out = ColorJitter(T.ColorJitter(**{name: (factor, factor)}), p=1.0)(x)
    for i in range(len(x)):
        assert torch.allclose(out[i], functional(x[i], factor), atol=1e-5), f"sample {i}"


def test_four_fixed_factors_are_applied_in_a_random_order_per_sample():
    b, c, s, h = 1.3, 0.6, 1.5, -0.12
    x = _unit(1, 6, 6).expand(48, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    out = ColorJitter(T.ColorJitter((b, b), (c, c), (s, s), (h, h)), p=1.0)(x)
    fns = [lambda t: F2.adjust_brightness(t, b), lambda t: F2.adjust_contrast(t, c),
           lambda t: F2.adjust_saturation(t, s), lambda t: F2.adjust_hue(t, h)]
    orders = {}
    for perm in itertools.permutations(range(4)):
        y = x[0]
        for k in perm:
            y = fns[k](y)
        orders[perm] = y
    matched = []
    for i in range(len(out)):
        errors = {perm: (out[i] - y).abs().max().item() for perm, y in orders.items()}
        best = min(errors, key=errors.get)
        assert errors[best] < 1e-4, f"sample {i} matches no order of the four ops"
        matched.append(best)
    assert len(set(matched)) > 5, "the order is drawn per sample"


def test_jitter_draws_factors_per_sample():
    x = _unit(1, 8, 8).expand(16, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    out = ColorJitter(T.ColorJitter(0.4, 0.4, 0.4, 0.1), p=1.0)(x)
    distinct = {tuple(row.flatten()[:12].tolist()) for row in out}
    assert len(distinct) == len(out)
    assert out.min() >= 0 and out.max() <= 1


def test_jitter_applies_with_probability_p_per_sample():
    x = _unit(1, 4, 4).expand(1000, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    out = ColorJitter(T.ColorJitter(brightness=(0.5, 0.5)), p=0.8)(x)
    applied = ~(out == x).flatten(1).all(1)
    assert torch.equal(out[applied], (0.5 * x[applied]))
    assert 0.75 < applied.float().mean() < 0.85


def test_hue_only_rows_whose_turn_it_is_change():
    x = _unit(1, 5, 5).expand(200, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    out = ColorJitter(T.ColorJitter(hue=(0.2, 0.2)), p=0.5)(x)
    changed = ~(out == x).flatten(1).all(1)
    assert 0.35 < changed.float().mean() < 0.65
    assert torch.allclose(out[changed], F2.adjust_hue(x[0], 0.2).expand_as(out[changed]), atol=1e-5)


# ---------------------------------------------------------------- GaussianBlur


def test_blur_with_p_zero_is_the_identity():
    x = _unit(3, 12, 12)
    torch.manual_seed(0)
    assert torch.allclose(GaussianBlur(0.0, (0.1, 2.0))(x), x, atol=1e-7)


def test_blur_keeps_a_constant_image_constant():
    x = torch.full((3, 3, 12, 12), 0.4)
    torch.manual_seed(0)
    assert torch.allclose(GaussianBlur(1.0, (0.1, 2.0))(x), x, atol=1e-6)


def test_blur_keeps_the_mean_and_lowers_the_variance():
    x = _unit(4, 24, 24)
    torch.manual_seed(0)
    out = GaussianBlur(1.0, (1.0, 2.0))(x)
    assert out.shape == x.shape
    assert torch.allclose(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=0.01)
    assert (out.var(dim=(2, 3)) < 0.5 * x.var(dim=(2, 3))).all()


def test_blur_with_a_fixed_sigma_matches_torchvisions_gaussian_blur():
    x = _unit(2, 16, 16)
    torch.manual_seed(0)
    out = GaussianBlur(1.0, (1.0, 1.0))(x)
    radius = math.ceil(3 * 1.0)
    expected = F2.gaussian_blur(x, [2 * radius + 1] * 2, [1.0, 1.0])
    assert torch.allclose(out, expected, atol=1e-5)


def test_blur_on_an_image_smaller_than_the_kernel_keeps_its_size():
    x = _unit(2, 4, 5)
    torch.manual_seed(0)
    out = GaussianBlur(1.0, (2.0, 2.0))(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_blur_sigma_is_drawn_per_sample():
    x = _unit(1, 16, 16).expand(8, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    out = GaussianBlur(1.0, (0.5, 2.0))(x)
    distinct = {tuple(row.flatten()[:8].tolist()) for row in out}
    assert len(distinct) == len(out)


# ---------------------------------------------------------------- whole views


@pytest.mark.parametrize("make", [lambda: SimCLRTransform(input_size=32), lambda: VICRegTransform(input_size=32)])
def test_views_output_the_requested_size_as_float(make):
    views = batched_views(make())
    pixels = _uint8(6, 48, 48)
    for view in views:
        out = view(pixels)
        assert out.shape == (6, 3, 32, 32) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert pixels.dtype == torch.uint8 and torch.equal(pixels, _uint8(6, 48, 48)), "the input is untouched"


def test_views_are_deterministic_under_a_seed_and_random_across_seeds():
    views = batched_views(VICRegTransform(input_size=32))
    pixels = _uint8(8, 48, 48)
    torch.manual_seed(123)
    first = [view(pixels) for view in views]
    torch.manual_seed(123)
    second = [view(pixels) for view in views]
    torch.manual_seed(124)
    third = [view(pixels) for view in views]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], third[0])
    assert not torch.equal(first[0], first[1]), "two views of a batch differ"


def test_identical_images_get_different_views():
    pixels = _uint8(1, 48, 48).expand(8, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    out = batched_views(SimCLRTransform(input_size=32))[0](pixels)
    distinct = {tuple(row.flatten()[:16].tolist()) for row in out}
    assert len(distinct) == len(out)


def test_repr_lists_the_ops():
    (view,) = batched_views(T.Compose([T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)]))
    assert repr(view) == "BatchedView(Flip, Normalize)"


def test_a_compose_of_only_lightlys_to_tensor_is_one_view():
    from lightly.transforms.torchvision_v2_compatibility import ToTensor

    views = batched_views(T.Compose([ToTensor()]))
    pixels = _uint8(2, 4, 4)
    assert len(views) == 1 and torch.equal(views[0](pixels), pixels.float() / 255)
