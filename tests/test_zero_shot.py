"""Zero-shot through the Encoder seam: any encoder with a text tower gets it, open_clip or not."""

from __future__ import annotations

import hashlib

import pytest
import torch
from open_clip import build_zero_shot_classifier
from torchvision.transforms import ToTensor

from dejavu.attacks.common import StatsConfig
from dejavu.encoders import TINY_CLIP_CONFIG, Encoder, OpenClipEncoder
from dejavu.measure import MeasureConfig, Models, measure
from dejavu.measurements.utility import UtilityConfig
from dejavu.utility import SCENES_TEMPLATES, zero_shot, zero_shot_classifier

DIM = 12  # 3 channels pooled to 2x2
UTILITY = MeasureConfig(tests=("utility",), stats=StatsConfig(n_bootstrap=50),
                        settings={"utility": UtilityConfig(probe_epochs=2)})


class PooledPixels:
    """An image-only Encoder with no open_clip inside: images pooled to a 2x2 grid per channel."""

    layer = "pooled"
    image_transform = ToTensor()
    supports_text = False

    def __init__(self, name: str = "pooled-pixels"):
        self.fingerprint = hashlib.sha256(name.encode()).hexdigest()

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(pixels, 2).flatten(1)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        raise TypeError("no text tower")


class HashedCaptions(PooledPixels):
    """PooledPixels with a text tower: each caption embeds to a random unit row seeded by its hash."""

    supports_text = True

    def __init__(self):
        super().__init__("hashed-captions")
        self.text_calls = 0

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        self.text_calls += 1
        return torch.nn.functional.normalize(torch.stack([caption_row(t) for t in texts]), dim=1)


def caption_row(text: str) -> torch.Tensor:
    """Returns the same random row for the same caption, in any process."""
    seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    return torch.randn(DIM, generator=torch.Generator().manual_seed(seed))


def utility_metrics(target: Encoder, vlm: Encoder, records) -> dict[str, int]:
    """Returns {metric: n} of the utility rows measure() gives these encoders."""
    rows = measure(Models(target, target_vlm=vlm), records, UTILITY, progress=False)
    return dict(zip(rows.metric, rows.n, strict=True))


def test_an_encoder_with_a_text_tower_gets_zero_shot_rows(tiny_records):
    vlm = HashedCaptions()
    assert isinstance(vlm, Encoder) and not hasattr(vlm, "tokenizer")
    n_eval = sum(r.split == "eval" for r in tiny_records)
    metrics = utility_metrics(vlm, vlm, tiny_records)
    assert metrics == {"linear_probe_top1": n_eval, "zero_shot_top1": n_eval, "zero_shot_top5": n_eval}
    assert vlm.text_calls > 0


def test_an_encoder_without_a_text_tower_gets_no_zero_shot_rows(tiny_records):
    image_only = PooledPixels()
    assert isinstance(image_only, Encoder)
    assert set(utility_metrics(image_only, image_only, tiny_records)) == {"linear_probe_top1"}
    with pytest.raises(TypeError, match="no text tower"):
        zero_shot(image_only, ["cat"], ["{}"], torch.zeros(1, DIM), ["cat"])


def test_images_at_their_class_columns_are_all_right():
    classes = [f"class {i}" for i in range(13)]  # two text batches
    classifier = zero_shot_classifier(HashedCaptions(), classes, SCENES_TEMPLATES)
    assert classifier.shape == (DIM, len(classes))
    assert torch.allclose(classifier.norm(dim=0), torch.ones(len(classes)))
    result = zero_shot(HashedCaptions(), classes, SCENES_TEMPLATES, 2.0 * classifier.T, classes)
    assert (result.top1, result.top5, result.n) == (1.0, 1.0, len(classes))


def test_a_cached_classifier_embeds_no_prompt_again(tmp_path):
    vlm = HashedCaptions()
    first = zero_shot_classifier(vlm, ["cat", "dog"], SCENES_TEMPLATES, cache_dir=tmp_path)
    calls = vlm.text_calls
    assert torch.equal(zero_shot_classifier(vlm, ["cat", "dog"], SCENES_TEMPLATES, cache_dir=tmp_path), first)
    assert vlm.text_calls == calls


def test_the_classifier_is_open_clips_bit_for_bit():
    torch.manual_seed(0)
    clip = OpenClipEncoder.from_config(TINY_CLIP_CONFIG, device="cpu")
    classes = [f"class {i}" for i in range(23)]  # open_clip's batches of 10, the last one partial
    ours = zero_shot_classifier(clip, classes, SCENES_TEMPLATES)
    theirs = build_zero_shot_classifier(clip.model.eval(), clip.tokenizer, classes, SCENES_TEMPLATES)
    assert torch.equal(ours, theirs)
