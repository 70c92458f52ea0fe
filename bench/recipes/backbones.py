"""Backbones by name: image batch (N, 3, H, W) -> feature rows (N, D), no classifier."""

from __future__ import annotations

from collections.abc import Callable

import torchvision
from torch import nn

#: below this input size the ResNet stem is the CIFAR one (3x3 stride-1 conv, no max-pool), because
#: the ImageNet stem would shrink a 32 px image to 1 px before the last stage
SMALL_IMAGE_SIZE = 64


def small_cnn(width: int = 128) -> nn.Sequential:
    """Returns a 4-conv CNN (stride-2 stages, global average pool) giving `width`-d features."""
    channels = [3, width // 4, width // 2, width, width]
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _resnet(builder: Callable[..., torchvision.models.ResNet]) -> Callable[[int], nn.Module]:
    def build(image_size: int) -> nn.Module:
        net = builder(weights=None)  # random init: nothing is downloaded
        if image_size < SMALL_IMAGE_SIZE:
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        return net
    return build


_BUILDERS: dict[str, Callable[[int], nn.Module]] = {
    "small-cnn": lambda image_size: small_cnn(),
    "resnet18": _resnet(torchvision.models.resnet18),
    "resnet50": _resnet(torchvision.models.resnet50),
    "resnet101": _resnet(torchvision.models.resnet101),
}
_FEATURE_DIMS = {"small-cnn": 128, "resnet18": 512, "resnet50": 2048, "resnet101": 2048}

BACKBONES = tuple(_BUILDERS)


def build_backbone(name: str, image_size: int) -> tuple[nn.Module, int]:
    """Returns the named backbone (random init) and the width of its feature rows."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return _BUILDERS[name](image_size), _FEATURE_DIMS[name]
