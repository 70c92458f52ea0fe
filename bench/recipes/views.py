"""Training views made on whole batches of uint8 tensors, read off a recipe's per-image transforms.

lightly's view transforms (and a supervised recipe's torchvision Compose) augment one PIL image at a
time, in the data loader. On a small model that loading, not the model, sets the pace. `BatchedView`
reads the parameters of such a Compose (crop scale and ratio, flip, jitter, grayscale, blur and
solarization probabilities and ranges, normalization) and applies the same operations to a batch on
whatever device it lives on, drawing every random parameter per sample. The per-image transform stays
the single source of truth for what a recipe's views are.

Where this differs from the per-image path (docs/METHODS.md, "Batched views"):
- the random-resized crop is resampled with `roi_align` (bilinear, averaging over `ceil(crop/out)`
  samples per output pixel when shrinking) rather than PIL's antialiased bilinear resize;
- colour operations run in float and are not rounded to 8 bits after each step;
- the blur is an exact Gaussian (radius 3 sigma) where PIL uses a box-filter approximation.
The crop boxes, flips, jitter factors and order, and every probability are drawn as torchvision and
lightly draw them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from kornia.enhance import adjust_hue
from lightly.transforms.multi_view_transform import MultiViewTransform
from torchvision import transforms as T
from torchvision.ops import roi_align
from torchvision.transforms import v2 as T2
from torchvision.transforms.v2.functional import rgb_to_grayscale

Op = Callable[[torch.Tensor], torch.Tensor]


def _draw(n: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Returns n uniform draws in [low, high) from torch's global (seeded) generator, on the CPU."""
    return torch.rand(n) * (high - low) + low


def _rows(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return mask.to(x.device).view(-1, 1, 1, 1)


class ResizedCrop:
    """torchvision's RandomResizedCrop box sampling (10 tries, then a centre crop), per sample."""

    def __init__(self, size: Sequence[int], scale: Sequence[float], ratio: Sequence[float]):
        self.size = (int(size[0]), int(size[1]))
        self.scale, self.log_ratio = tuple(scale), (math.log(ratio[0]), math.log(ratio[1]))
        self.ratio = tuple(ratio)

    def boxes(self, n: int, height: int, width: int) -> torch.Tensor:
        """Returns one (x0, y0, x1, y1) crop box per sample, in pixel edges."""
        area = height * width
        tries = 10
        target = area * (torch.rand(n, tries) * (self.scale[1] - self.scale[0]) + self.scale[0])
        aspect = torch.exp(torch.rand(n, tries) * (self.log_ratio[1] - self.log_ratio[0]) + self.log_ratio[0])
        w = torch.sqrt(target * aspect).round()
        h = torch.sqrt(target / aspect).round()
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
        # the fallback of torchvision: the whole image, its aspect clamped to the ratio range
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            fw, fh = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            fw, fh = round(height * self.ratio[1]), height
        else:
            fw, fh = width, height
        pick = first.clamp(min=0).unsqueeze(1)
        w = torch.where(first >= 0, w.gather(1, pick).squeeze(1), torch.tensor(float(fw)))
        h = torch.where(first >= 0, h.gather(1, pick).squeeze(1), torch.tensor(float(fh)))
        x0 = torch.where(first >= 0, torch.floor(torch.rand(n) * (width - w + 1)), (width - w) // 2)
        y0 = torch.where(first >= 0, torch.floor(torch.rand(n) * (height - h + 1)), (height - h) // 2)
        return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        boxes = self.boxes(x.shape[0], x.shape[-2], x.shape[-1]).to(x)
        rois = torch.cat([torch.arange(x.shape[0], dtype=x.dtype, device=x.device)[:, None], boxes], dim=1)
        # aligned=True puts pixel centres at +0.5, so a box [x0, x1) covers exactly those pixels;
        # sampling_ratio=-1 averages ceil(box/out) points per output pixel, an antialiased shrink
        return roi_align(x, rois, self.size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


class Flip:
    """A flip along `dim` (-1 horizontal, -2 vertical) with probability p, per sample."""

    def __init__(self, p: float, dim: int):
        self.p, self.dim = float(p), dim

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(_rows(_draw(x.shape[0]) < self.p, x), x.flip(self.dim), x)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's blend: factor * x + (1 - factor) * other, clamped to [0, 1]; one factor per sample."""
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, torch.zeros_like(x), f)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True), f)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, rgb_to_grayscale(x), f)


def _hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return adjust_hue(x, f * 2 * math.pi)  # kornia's hue is in radians; torchvision's in turns


class ColorJitter:
    """torchvision's ColorJitter inside RandomApply(p): factors and the order of the four, per sample."""

    def __init__(self, jitter: T.ColorJitter | T2.ColorJitter, p: float):
        self.p = float(p)
        self.ranges = [getattr(jitter, name) for name in ("brightness", "contrast", "saturation", "hue")]
        self.ops = (_brightness, _contrast, _saturation, _hue)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        applied = _draw(n) < self.p
        order = torch.argsort(torch.rand(n, 4), dim=1)  # a uniform random permutation per sample
        factors = [None if r is None else _draw(n, float(r[0]), float(r[1])) for r in self.ranges]
        for step in range(4):
            for which, (op, factor) in enumerate(zip(self.ops, factors, strict=True)):
                if factor is None:
                    continue
                here = applied & (order[:, step] == which)
                if op is _hue:  # costly: only the rows whose turn it is
                    rows = here.nonzero().flatten().to(x.device)
                    if len(rows):
                        x = x.index_copy(0, rows, _hue(x[rows], factor[here].to(x)))
                else:  # cheap: the whole batch, with the neutral factor 1 (an exact identity) elsewhere
                    x = op(x, torch.where(here, factor, torch.ones(n)).to(x))
        return x


class Grayscale:
    """RandomGrayscale(p): three equal channels of ITU-R 601 luma, per sample."""

    def __init__(self, p: float):
        self.p = float(p)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(_rows(_draw(x.shape[0]) < self.p, x), rgb_to_grayscale(x).expand_as(x), x)


class GaussianBlur:
    """lightly's GaussianBlur: with probability p, a Gaussian of sigma ~ U(sigmas) pixels, per sample."""

    def __init__(self, p: float, sigmas: Sequence[float]):
        self.p, self.sigmas = float(p), (float(sigmas[0]), float(sigmas[1]))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, c, height, width = x.shape
        radius = min(math.ceil(3 * self.sigmas[1]), height - 1, width - 1)
        sigma = _draw(n, *self.sigmas)
        taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None] ** 2))
        kernel = kernel / kernel.sum(1, keepdim=True)
        identity = (taps == 0).float().expand(n, -1)
        kernel = torch.where((_draw(n) < self.p)[:, None], kernel, identity).to(x)
        # one depthwise convolution per axis over all images and channels at once
        k = kernel.repeat_interleave(c, dim=0)
        flat = F.pad(x.reshape(1, n * c, height, width), (radius, radius, radius, radius), mode="reflect")
        flat = F.conv2d(flat, k.view(n * c, 1, 1, -1), groups=n * c)
        flat = F.conv2d(flat, k.view(n * c, 1, -1, 1), groups=n * c)
        return flat.view(n, c, height, width)


class Solarize:
    """lightly's RandomSolarization: with probability p, invert the pixels at or above the threshold."""

    def __init__(self, p: float, threshold: float):
        self.p, self.threshold = float(p), float(threshold)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        chosen = _rows(_draw(x.shape[0]) < self.p, x)
        return torch.where(chosen & (x >= self.threshold), 1 - x, x)


class Normalize:
    """(x - mean) / std per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


def _convert(t: object) -> Op | None:
    """Returns the batched twin of one per-image transform; None for a no-op; TypeError if unknown."""
    name = type(t).__name__
    if isinstance(t, T.RandomResizedCrop | T2.RandomResizedCrop):
        return ResizedCrop(t.size, t.scale, t.ratio)
    if isinstance(t, T.RandomHorizontalFlip | T2.RandomHorizontalFlip):
        return Flip(t.p, -1) if t.p > 0 else None
    if isinstance(t, T.RandomVerticalFlip | T2.RandomVerticalFlip):
        return Flip(t.p, -2) if t.p > 0 else None
    if isinstance(t, T.RandomApply | T2.RandomApply) and len(t.transforms) == 1 \
            and isinstance(t.transforms[0], T.ColorJitter | T2.ColorJitter):
        return ColorJitter(t.transforms[0], t.p) if t.p > 0 else None
    if isinstance(t, T.ColorJitter | T2.ColorJitter):
        return ColorJitter(t, 1.0)
    if isinstance(t, T.RandomGrayscale | T2.RandomGrayscale):
        return Grayscale(t.p) if t.p > 0 else None
    if isinstance(t, T.Normalize | T2.Normalize):
        return Normalize(t.mean, t.std)
    if name == "GaussianBlur" and hasattr(t, "sigmas"):  # lightly's
        return GaussianBlur(t.prob, t.sigmas) if t.prob > 0 else None
    if name == "RandomSolarization":  # lightly's; its threshold is a pixel value out of 255
        return Solarize(t.prob, t.threshold / 255) if t.prob > 0 else None
    if name in ("RandomRotate", "RandomRotateDegrees") and getattr(t, "prob", 1) == 0:
        return None
    raise TypeError(f"no batched equivalent of the view transform {t!r}; set train.batched_views=false "
                    "to augment image by image")


class BatchedView:
    """One view pipeline: uint8 NCHW batch -> augmented, normalized float batch on the same device."""

    def __init__(self, compose: T.Compose | T2.Compose):
        steps = list(getattr(compose, "transforms", []))
        names = [type(t).__name__ for t in steps]
        if "ToTensor" not in names:
            raise TypeError(f"expected a Compose with a ToTensor step, got {compose!r}")
        # ToTensor's scaling to [0, 1] happens first; every op before and after it works in float
        self.ops = [op for t in steps if type(t).__name__ != "ToTensor" and (op := _convert(t)) is not None]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dtype != torch.uint8 or pixels.ndim != 4:
            raise ValueError(f"batched views take a uint8 NCHW batch, got {pixels.dtype} {tuple(pixels.shape)}")
        x = pixels.float().div_(255)
        for op in self.ops:
            x = op(x)
        return x

    def __repr__(self) -> str:
        return f"BatchedView({', '.join(type(op).__name__ for op in self.ops)})"


def batched_views(transform: object) -> list[BatchedView]:
    """Returns one BatchedView per view of a lightly MultiViewTransform, or one for a single Compose."""
    if isinstance(transform, MultiViewTransform):
        return [BatchedView(view.transform) for view in transform.transforms]
    return [BatchedView(transform)]
