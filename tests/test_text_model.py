"""Text-only reference encoder: the bundled all-MiniLM-L6-v2, loaded offline."""

import pytest
import torch

from dejavu.encoders import Encoder
from dejavu.references import SentenceTextEncoder


@pytest.fixture(scope="module")
def encoder():
    return SentenceTextEncoder(device="cpu")


def test_unit_norm_384_and_semantic_order(encoder):
    v = encoder.embed_texts(["a photo of a dog", "a picture of a puppy", "a bowl of soup"])
    assert v.shape == (3, 384) and v.dtype == torch.float32
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3))
    assert v[0] @ v[1] > v[0] @ v[2]


def test_same_text_same_vector_and_empty_input(encoder):
    a, b = encoder.embed_texts(["a red kite", "a red kite"])
    torch.testing.assert_close(a, b)
    assert encoder.embed_texts([]).shape == (0, 384)


def test_is_a_text_only_encoder(encoder):
    assert isinstance(encoder, Encoder) and encoder.supports_text
    assert encoder.fingerprint.startswith("sentence-transformers/all-MiniLM-L6-v2@")
    assert SentenceTextEncoder(device="cpu").model is encoder.model  # loaded once
    with pytest.raises(TypeError, match="text-only"):
        encoder.embed_images(torch.zeros(1, 3, 8, 8))
    with pytest.raises(TypeError, match="not"):
        encoder.embed_texts(["fine", None])
