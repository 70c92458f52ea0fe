"""Encoder adapters: layers, identities between them, fingerprints, checkpoints and clear errors."""

import copy

import pytest
import torch
from torch import nn

from dejavu.encoders import (
    TINY_CLIP_CONFIG,
    TINY_CLIP_NAME,
    Encoder,
    ModuleEncoder,
    NonFiniteEmbeddingError,
    OpenClipEncoder,
    create_open_clip,
    flatten_features,
    register_packaged_configs,
    state_dict_digest,
)


def identity(x):
    return x


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return OpenClipEncoder.from_config(TINY_CLIP_CONFIG, device="cpu")


def test_module_encoder_pools_conv_maps_and_takes_the_forward_output():
    net = small_cnn()
    pixels = torch.randn(2, 3, 6, 6)
    conv = ModuleEncoder(net, "0", identity, device="cpu")
    assert isinstance(conv, Encoder)
    assert torch.allclose(conv.embed_images(pixels), net[0](pixels).mean(dim=(2, 3)))
    out = ModuleEncoder(net, "output", identity, device="cpu")
    assert torch.allclose(out.embed_images(pixels), net(pixels))
    assert out.layer == "output" and ModuleEncoder(net, "", identity, device="cpu").layer == "output"
    assert ModuleEncoder(net, "2", identity, device="cpu").embed_images(pixels).shape == (2, 144)


def test_flatten_features_keeps_rows():
    assert flatten_features(torch.ones(2, 3, 4)).shape == (2, 12)
    assert flatten_features(torch.arange(8.0).reshape(1, 2, 2, 2)).tolist() == [[1.5, 5.5]]


def test_unknown_layer_lists_the_available_names():
    with pytest.raises(ValueError, match=r"unknown layer 'head'.*available layers: 0, 1, 2, 3"):
        ModuleEncoder(small_cnn(), "head", identity)


def test_embedding_restores_training_mode_and_tracks_no_gradient():
    net = small_cnn().train()
    out = ModuleEncoder(net, "3", identity, device="cpu").embed_images(torch.randn(1, 3, 6, 6))
    assert net.training and not out.requires_grad and out.dtype == torch.float32


def test_dimension_change_and_non_finite_output_are_clear_errors():
    enc = ModuleEncoder(small_cnn(), "3", identity, device="cpu", dim=7)
    with pytest.raises(ValueError, match="dimension 5, but earlier batches .* had 7"):
        enc.embed_images(torch.randn(1, 3, 6, 6))
    broken = small_cnn()
    with torch.no_grad():
        broken[3].bias[2] = float("nan")
    with pytest.raises(NonFiniteEmbeddingError, match=r"batch rows \[0, 1\]") as err:
        ModuleEncoder(broken, "3", identity, device="cpu").embed_images(torch.randn(2, 3, 6, 6))
    assert err.value.rows == [0, 1]
    with pytest.raises(ValueError, match="expected an NCHW image batch"):
        enc.embed_images(torch.randn(3, 6, 6))


def test_fingerprint_follows_weights_layer_and_transform():
    a, b = ModuleEncoder(small_cnn(0), "3", identity), ModuleEncoder(small_cnn(0), "3", identity)
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    assert ModuleEncoder(small_cnn(1), "3", identity).fingerprint != a.fingerprint
    assert ModuleEncoder(small_cnn(0), "0", identity).fingerprint != a.fingerprint
    assert ModuleEncoder(small_cnn(0), "3", torch.flatten).fingerprint != a.fingerprint


def test_module_without_text_tower_says_so():
    enc = ModuleEncoder(small_cnn(), "3", identity)
    assert not enc.supports_text
    with pytest.raises(TypeError, match="no text encoder"):
        enc.embed_texts(["a cat"])


def test_clip_projector_is_backbone_times_projection(tiny_clip):
    model = tiny_clip.model
    pixels = torch.randn(3, 3, 32, 32)
    projector = tiny_clip.embed_images(pixels)
    backbone = OpenClipEncoder(model, tiny_clip.image_transform, tiny_clip.tokenizer, "backbone", device="cpu")
    features = backbone.embed_images(pixels)
    assert projector.shape == (3, TINY_CLIP_CONFIG["embed_dim"])
    assert features.shape == (3, TINY_CLIP_CONFIG["vision_cfg"]["width"])
    with torch.no_grad():
        assert torch.allclose(projector, model.encode_image(pixels), atol=1e-6)
        assert torch.allclose(features @ model.visual.proj, projector, atol=1e-5)
    assert isinstance(model.visual.proj, nn.Parameter)  # restored after the backbone pass
    assert backbone.fingerprint != tiny_clip.fingerprint


def test_clip_named_layer_and_text_side(tiny_clip):
    model = tiny_clip.model
    block = OpenClipEncoder(model, tiny_clip.image_transform, tiny_clip.tokenizer,
                            "visual.ln_post", device="cpu")
    tokens = (32 // 8) ** 2 + 1
    assert block.embed_images(torch.randn(2, 3, 32, 32)).shape == (2, tokens * 64)
    texts = tiny_clip.embed_texts(["a photo of a cat", "a dog on a beach"])
    assert tiny_clip.supports_text and texts.shape == (2, 64)
    assert torch.allclose(texts.norm(dim=1), torch.ones(2))
    with torch.no_grad():
        raw = model.encode_text(tiny_clip.tokenizer(["a photo of a cat"]))
    assert torch.allclose(texts[0], raw[0] / raw[0].norm(), atol=1e-6)
    with pytest.raises(ValueError, match=r"unknown layer 'visual.nope'.*visual.conv1"):
        OpenClipEncoder(model, tiny_clip.image_transform, tiny_clip.tokenizer, "visual.nope")


def test_clip_eval_transform_matches_the_image_size(tiny_clip):
    from PIL import Image

    pixels = tiny_clip.image_transform(Image.new("RGB", (50, 40), (255, 0, 0)))
    assert pixels.shape == (3, 32, 32)


def test_clip_checkpoint_round_trip_with_module_prefix(tiny_clip, tmp_path):
    state = {f"module.{k}": v for k, v in tiny_clip.model.state_dict().items()}
    path = tmp_path / "clip.pt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    loaded = OpenClipEncoder.from_config(TINY_CLIP_CONFIG, path, device="cpu")
    assert loaded.fingerprint == tiny_clip.fingerprint
    assert loaded.name.endswith("@clip.pt")
    pixels = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.embed_images(pixels), tiny_clip.embed_images(pixels))


def test_tiny_clip_is_an_open_clip_model_config_by_name(tiny_clip):
    import open_clip

    register_packaged_configs()
    assert open_clip.get_model_config(TINY_CLIP_NAME) == TINY_CLIP_CONFIG
    torch.manual_seed(0)  # as the fixture was made: the same config, so the same weights
    by_name = open_clip.create_model(TINY_CLIP_NAME)
    assert state_dict_digest(by_name).digest() == state_dict_digest(tiny_clip.model).digest()


def test_clip_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_open_clip(TINY_CLIP_CONFIG, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Tiny-Nope'"):
        create_open_clip("ViT-Tiny-Nope")
    other = dict(TINY_CLIP_CONFIG, embed_dim=32)
    torch.save(create_open_clip(other)[0].state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not fit model"):
        create_open_clip(TINY_CLIP_CONFIG, tmp_path / "other.pt")
    resnet = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8},
              "text_cfg": TINY_CLIP_CONFIG["text_cfg"]}
    model, _, preprocess, tokenizer = create_open_clip(resnet)
    with pytest.raises(ValueError, match=r"needs an open_clip VisionTransformer.*ModifiedResNet.*visual.layer1"):
        OpenClipEncoder(model, preprocess, tokenizer, "backbone")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_encoder_returns_cpu_embeddings_equal_to_cpu(tiny_clip):
    pixels = torch.randn(2, 3, 32, 32)
    cpu = tiny_clip.embed_images(pixels)
    gpu = OpenClipEncoder(copy.deepcopy(tiny_clip.model), tiny_clip.image_transform, tiny_clip.tokenizer,
                          device="cuda")
    out = gpu.embed_images(pixels)
    assert out.device.type == "cpu" and torch.allclose(out, cpu, atol=1e-4)
