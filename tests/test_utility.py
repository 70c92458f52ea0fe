"""Utility: a Lightning linear probe on frozen embeddings, and open_clip zero-shot accuracy."""

import numpy as np
import open_clip
import pytest
import torch

from dejavu.encoders import OpenClipEncoder
from dejavu.utility import (
    IMAGENET_TEMPLATES,
    SCENES_TEMPLATES,
    imagenet_zero_shot_metadata,
    linear_probe,
    zero_shot,
)


def blobs(n_per_class: int, centers: torch.Tensor, seed: int, scale: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([c + scale * torch.randn(n_per_class, centers.shape[1], generator=g) for c in centers])
    y = [f"c{k}" for k in range(len(centers)) for _ in range(n_per_class)]
    return x, y


CENTERS = 3.0 * torch.eye(4, 8)  # 4 classes in 8 dimensions, well separated


def test_probe_separates_gaussian_blobs():
    train_x, train_y = blobs(30, CENTERS, seed=0)
    eval_x, eval_y = blobs(20, CENTERS, seed=1)
    result = linear_probe(train_x, train_y, eval_x, eval_y, epochs=20, lr=0.05, batch_size=32, seed=0)
    assert result.top1 >= 0.95
    assert (result.n_train, result.n_eval, result.n_eval_unseen) == (120, 80, 0)
    assert result.classes == ("c0", "c1", "c2", "c3")


def test_probe_on_random_labels_is_near_chance():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(400, 8, generator=g)
    y = torch.randint(0, 4, (400,), generator=g)
    result = linear_probe(x[:200], y[:200], x[200:], y[200:], epochs=20, lr=0.05, batch_size=32, seed=0)
    assert abs(result.top1 - 0.25) < 0.1  # 200 eval items: one standard error is 0.03
    # the per-item outcomes behind the bootstrap interval agree with torchmetrics' accuracy
    assert result.correct.shape == (200,) and result.correct.mean() == pytest.approx(result.top1)


def test_unseen_eval_labels_are_counted_and_always_wrong():
    train_x, train_y = blobs(30, CENTERS[:3], seed=0)
    eval_x, eval_y = blobs(10, CENTERS, seed=1)  # c3 never appears in train
    result = linear_probe(train_x, train_y, eval_x, eval_y, epochs=20, lr=0.05, batch_size=32, seed=0)
    assert result.n_eval_unseen == 10
    assert result.top1 <= 0.75  # 30 of 40 at best
    assert result.top1 >= 0.7


def test_probe_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        linear_probe(torch.zeros(3, 2), ["a", "b"], torch.zeros(1, 2), ["a"], epochs=1)


@pytest.fixture(scope="module")
def tiny_clip():
    """A random open_clip model behind the Encoder seam, which is all zero-shot uses."""
    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=open_clip.CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=16),
        text_cfg=open_clip.CLIPTextCfg(context_length=16, width=32, heads=2, layers=1),
    ).eval()
    return OpenClipEncoder(model, open_clip.image_transform(16, is_train=False),
                           open_clip.SimpleTokenizer(context_length=16), device="cpu")


CLASSES = ["apple", "bicycle", "cat", "dog", "kite", "tree", "whale"]


def class_text_embeddings(encoder, templates) -> torch.Tensor:
    """The zero-shot classifier by hand: mean of normalized template embeddings, renormalized."""
    rows = []
    with torch.no_grad():
        for name in CLASSES:
            e = encoder.model.encode_text(encoder.tokenizer([t.format(name) for t in templates]), normalize=True)
            rows.append(torch.nn.functional.normalize(e.mean(0), dim=0))
    return torch.stack(rows)


def test_images_equal_to_class_embeddings_are_all_right(tiny_clip):
    text = class_text_embeddings(tiny_clip, SCENES_TEMPLATES)
    # scaled, so the result also shows the image embeddings are normalized first
    images = 3.0 * text.repeat(2, 1)
    labels = CLASSES * 2
    result = zero_shot(tiny_clip, CLASSES, SCENES_TEMPLATES, images, labels)
    assert (result.top1, result.top5, result.n, result.top5_k) == (1.0, 1.0, 14, 5)


def test_zero_shot_structure_on_random_images(tiny_clip):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(30, 16, generator=g)
    labels = torch.randint(0, len(CLASSES), (30,), generator=g)
    result = zero_shot(tiny_clip, CLASSES, SCENES_TEMPLATES[:2], images, labels)
    assert 0.0 <= result.top1 <= result.top5 <= 1.0
    # hand check of top-1 against the hand-built classifier
    logits = torch.nn.functional.normalize(images, dim=1) @ class_text_embeddings(tiny_clip, SCENES_TEMPLATES[:2]).T
    expected = (logits.argmax(1) == labels).float().mean().item()
    assert result.top1 == pytest.approx(expected)
    assert result.correct_top1.mean() == pytest.approx(result.top1)
    assert result.correct_top5.mean() == pytest.approx(result.top5)
    assert (result.correct_top5 >= result.correct_top1).all()


def test_top5_is_capped_by_the_class_count(tiny_clip):
    images = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    result = zero_shot(tiny_clip, ["cat", "dog", "kite"], ["a photo of a {}."], images, ["cat", "dog", "kite", "cat"])
    assert result.top5_k == 3 and result.top5 == 1.0


def test_zero_shot_rejects_labels_outside_the_classes(tiny_clip):
    with pytest.raises(ValueError, match="not zero-shot classes.*'zebra'"):
        zero_shot(tiny_clip, ["cat", "dog"], ["{}"], torch.randn(2, 16), ["cat", "zebra"])


def test_imagenet_metadata_maps_sorted_wnids_to_open_clip_names():
    wnids = [f"n{k:08d}" for k in range(1000)]
    mapping = imagenet_zero_shot_metadata(reversed(wnids))
    assert list(mapping) == wnids
    assert mapping["n00000000"] == "tench" and mapping["n00000999"] == "toilet paper"
    assert len(IMAGENET_TEMPLATES) == 80
    with pytest.raises(ValueError, match="1000 ImageNet-1k class folders, found 999"):
        imagenet_zero_shot_metadata(wnids[:999])
    with pytest.raises(ValueError, match="not ImageNet wnids"):
        imagenet_zero_shot_metadata(wnids[:999] + ["cats"])


def test_int_numpy_and_string_labels_give_the_same_probe():
    train_x, train_y = blobs(10, CENTERS[:2], seed=0)
    eval_x, eval_y = blobs(5, CENTERS[:2], seed=1)
    kwargs = dict(epochs=20, lr=0.05, batch_size=8, seed=0)
    as_str = linear_probe(train_x, [y[1] for y in train_y], eval_x, [y[1] for y in eval_y], **kwargs)
    as_int = linear_probe(
        train_x, np.array([int(y[1]) for y in train_y]), eval_x, torch.tensor([int(y[1]) for y in eval_y]), **kwargs
    )
    assert as_int == as_str and (as_int.correct == as_str.correct).all()
    assert as_int.classes == ("0", "1") and as_int.top1 >= 0.9


def test_zero_shot_classes_use_open_clip_names_for_imagenet_wnids():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    from dejavu.utility import IMAGENET_TEMPLATES, SCENES_TEMPLATES, zero_shot_classes

    wnids = [f"n{i:08d}" for i in range(1000)]
    names, templates = zero_shot_classes(reversed(wnids), SCENES_TEMPLATES)
    assert names["n00000000"] == IMAGENET_CLASSNAMES[0] and names["n00000999"] == IMAGENET_CLASSNAMES[999]
    assert templates == tuple(IMAGENET_TEMPLATES) and len(templates) == 80
    names, templates = zero_shot_classes(["dog", "cat", "dog"], SCENES_TEMPLATES)
    assert names == {"cat": "cat", "dog": "dog"} and templates == tuple(SCENES_TEMPLATES)
