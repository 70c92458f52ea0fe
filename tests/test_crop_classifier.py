"""Crop classifier: learns a label that the crop colour fully determines; rejects bad input clearly."""

import numpy as np
import pytest
from PIL import Image

from dejavu.references import CropClassifier, build_network

COLOURS = {"apple": (200, 30, 30), "frog": (30, 180, 40), "whale": (30, 40, 200)}


def colour_crops(n_per_class: int, seed: int) -> tuple[list[Image.Image], list[str]]:
    """Crops of random size, filled with their class colour plus pixel noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, rgb in COLOURS.items():
        for _ in range(n_per_class):
            h, w = rng.integers(10, 40, size=2)
            pixels = np.clip(np.array(rgb) + rng.normal(0, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
            images.append(Image.fromarray(pixels))
            labels.append(label)
    return images, labels


@pytest.fixture(scope="module")
def trained():
    images, labels = colour_crops(16, seed=0)
    return CropClassifier(image_size=16, epochs=4, batch_size=16, lr=1e-2, seed=0).fit(images, labels)


def test_learns_colour_determined_labels(trained):
    images, labels = colour_crops(10, seed=1)
    ids = [f"held-{i}" for i in range(len(images))]
    out = trained.predict(images, ids)
    accuracy = np.mean([p == y for p, y in zip(out.pred, labels, strict=True)])
    assert accuracy >= 0.9
    assert out.ids == ids and out.classes == sorted(COLOURS)
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out.confidence, out.probs.max(axis=1))
    assert np.all((out.entropy >= 0) & (out.entropy <= np.log(3) + 1e-9))


def test_same_seed_same_predictions():
    images, labels = colour_crops(4, seed=0)
    held, _ = colour_crops(1, seed=2)
    ids = [str(i) for i in range(len(held))]

    def log_probs(seed: int) -> np.ndarray:
        model = CropClassifier(image_size=8, epochs=1, batch_size=4, seed=seed).fit(images, labels)
        return np.log(model.predict(held, ids).probs)

    first = log_probs(0)
    np.testing.assert_allclose(log_probs(0), first, rtol=1e-4, atol=1e-4)
    assert np.abs(log_probs(1) - first).max() > 1e-3


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown crop-classifier arch 'resnet-9000'"):
        CropClassifier(arch="resnet-9000")


def test_torchvision_arch_by_name_has_the_class_count():
    net = build_network("resnet18", num_classes=7)
    assert net.fc.out_features == 7


def test_bad_input_names_the_item(trained):
    with pytest.raises(TypeError, match="crop 1 is a str"):
        trained.predict([Image.new("RGB", (8, 8)), "x.png"], ["a", "b"])
    with pytest.raises(ValueError, match="1 crops but 2 ids"):
        trained.predict([Image.new("RGB", (8, 8))], ["a", "b"])
    with pytest.raises(RuntimeError, match="fit"):
        CropClassifier().predict([Image.new("RGB", (8, 8))], ["a"])
