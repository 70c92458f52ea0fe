"""Encoders: what the attacks see of a model (SPEC sections 3 and 5).

An Encoder embeds pre-transformed image batches at one named layer and, for
vision-language models, lists of captions. Adapters below wrap an open_clip model or
checkpoint and any torch.nn.Module with a layer name.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from PIL import Image

from dejavu.files import write_text
from dejavu.finite import non_finite_rows


@runtime_checkable
class Encoder(Protocol):
    """A frozen model seen through one embedding layer."""

    #: content hash of the weights, the layer and the transform; keys the embedding cache
    fingerprint: str
    #: the named layer embeddings are taken from, e.g. "projector" or "backbone"
    layer: str
    #: the model's evaluation transform: PIL image -> CHW float tensor
    image_transform: Callable[[Image.Image], torch.Tensor]

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Returns one embedding row per image of an already-transformed NCHW batch."""
        ...

    @property
    def supports_text(self) -> bool:
        """True when `embed_texts` is available (vision-language models)."""
        ...

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Returns one L2-normalized embedding row per caption."""
        ...


class NonFiniteEmbeddingError(ValueError):
    """An encoder produced NaN or Inf; `rows` are the offending positions in the batch."""

    def __init__(self, message: str, rows: list[int]):
        super().__init__(message)
        self.rows = rows


def default_device() -> torch.device:
    """Returns cuda when a GPU is visible, else cpu."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def state_dict_digest(module: torch.nn.Module) -> hashlib._Hash:
    """Returns a sha256 object fed with every state_dict tensor (sorted by key: name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    state = module.state_dict()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        # viewing as bytes works for every dtype (bf16 has no numpy twin)
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h


def flatten_features(output: torch.Tensor) -> torch.Tensor:
    """Returns [N, D] features: 4-D conv maps are global-average-pooled over H, W; other shapes flattened."""
    if output.ndim == 4:
        # a conv feature map: pooling keeps D independent of the input resolution, as a linear probe expects
        return output.mean(dim=(2, 3))
    return output.reshape(output.shape[0], -1)


def _layer_listing(module: torch.nn.Module, limit: int = 40, prefix: str = "") -> str:
    names = [name for name, _ in module.named_modules() if name and name.startswith(prefix)]
    shown = ", ".join(names[:limit])
    more = f" … and {len(names) - limit} more" if len(names) > limit else ""
    return f"{shown}{more}"


def resolve_layer(module: torch.nn.Module, layer: str) -> torch.nn.Module:
    """Returns the submodule called `layer`; an unknown name raises ValueError listing the available names."""
    try:
        return module.get_submodule(layer)
    except AttributeError:
        raise ValueError(
            f"unknown layer {layer!r} in {type(module).__name__}; available layers: {_layer_listing(module)}"
        ) from None


@contextmanager
def capture_output(submodule: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Yields a list that receives `submodule`'s forward output (first element of a tuple output)."""
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        captured.append(output[0] if isinstance(output, (tuple, list)) else output)

    handle = submodule.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


class _TorchEncoder:
    """Shared machinery of the adapters: device, eval mode, inference mode, output checks, fingerprint."""

    layer: str
    image_transform: Callable[[Image.Image], torch.Tensor]

    def __init__(self, module: torch.nn.Module, *, layer: str, image_transform, name: str,
                 device: str | torch.device | None, dim: int | None):
        self.device = torch.device(device) if device is not None else default_device()
        self.module = module.to(self.device)
        self.layer = layer
        self.image_transform = image_transform
        self.name = name
        #: the embedding width: declared, or learnt from the first batch; later batches must match
        self.dim = dim
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, layer={self.layer!r}, device={str(self.device)!r})"

    def _fingerprint_extra(self) -> str:
        return ""

    @property
    def fingerprint(self) -> str:
        """Returns sha256 over the weights, the layer and the transform repr (computed once: the model is frozen)."""
        if self._fingerprint is None:
            h = state_dict_digest(self.module)
            h.update(f"|layer={self.layer}|transform={self.image_transform!r}|{self._fingerprint_extra()}".encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Returns float32 CPU embeddings [N, D] of an already-transformed NCHW batch at `self.layer`."""
        if pixels.ndim != 4:
            raise ValueError(f"{self.name}: expected an NCHW image batch, got shape {tuple(pixels.shape)}")
        with self._eval_mode(), torch.inference_mode():
            out = self._forward_images(pixels.to(self.device))
        return self._checked(out, expected_rows=pixels.shape[0], what="image")

    @property
    def supports_text(self) -> bool:
        """True when `embed_texts` is available (vision-language models)."""
        return False

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Returns one L2-normalized embedding row per caption; this encoder has no text tower."""
        raise TypeError(f"{self.name} has no text encoder; use a vision-language model for the caption test")

    @contextmanager
    def _eval_mode(self):
        # restore the caller's mode: encoders may wrap a model that is still training (e.g. from a callback);
        # a model already wholly in eval mode is left alone, as toggling it costs more than a batch's checks
        was_training = self.module.training
        switch = any(m.training for m in self.module.modules())
        if switch:
            self.module.eval()
        try:
            yield
        finally:
            if switch:
                self.module.train(was_training)

    def _checked(self, out: torch.Tensor, *, expected_rows: int, what: str, dim_attr: str = "dim") -> torch.Tensor:
        if out.ndim != 2 or out.shape[0] != expected_rows:
            raise ValueError(f"{self.name}: layer {self.layer!r} gave {what} embeddings of shape "
                             f"{tuple(out.shape)}, expected ({expected_rows}, D)")
        declared = getattr(self, dim_attr)
        if declared is None:
            setattr(self, dim_attr, out.shape[1])
        elif out.shape[1] != declared:
            raise ValueError(f"{self.name}: layer {self.layer!r} gave {what} embeddings of dimension "
                             f"{out.shape[1]}, but earlier batches (or the declared dim) had {declared}")
        out = out.detach().float().cpu()
        bad = non_finite_rows(out)
        if bad:
            raise NonFiniteEmbeddingError(
                f"{self.name}: layer {self.layer!r} produced NaN/Inf {what} embeddings for batch rows {bad[:10]}",
                rows=bad)
        return out


class ModuleEncoder(_TorchEncoder):
    """Any torch.nn.Module (a Lightning module included) seen through one named submodule.

    `layer` is a name from `module.named_modules()`, e.g. "backbone" or "projection_head"; its forward
    output is captured by a hook and flattened to [N, D] (4-D conv maps are global-average-pooled
    first). `layer=""` or `"output"` takes the module's own forward output.
    """

    def __init__(self, module: torch.nn.Module, layer: str, image_transform: Callable[[Image.Image], torch.Tensor],
                 *, name: str | None = None, device: str | torch.device | None = None, dim: int | None = None):
        self._target = None if layer in ("", "output") else resolve_layer(module, layer)
        super().__init__(module, layer=layer or "output", image_transform=image_transform,
                         name=name or type(module).__name__, device=device, dim=dim)

    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        if self._target is None:
            out = self.module(pixels)
            return flatten_features(out[0] if isinstance(out, (tuple, list)) else out)
        with capture_output(self._target) as captured:
            self.module(pixels)
        if not captured:
            raise ValueError(f"{self.name}: layer {self.layer!r} did not run in the forward pass")
        return flatten_features(captured[-1])


#: open_clip model configs shipped with dejavu, in the format of open_clip's own model_configs/*.json
MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
#: A CPU-sized CLIP (ViT 32px/8px patches, 2+2 layers of width 64, 64-d embeddings) with open_clip's
#: tokenizer vocabulary; a forward pass on a batch of 64 takes milliseconds.
TINY_CLIP_NAME = "dejavu-tiny-clip"
#: its config dict, read from the JSON file without importing open_clip
TINY_CLIP_CONFIG: dict = json.loads((MODEL_CONFIG_DIR / f"{TINY_CLIP_NAME}.json").read_text())


@functools.cache
def register_packaged_configs() -> None:
    """Adds dejavu's model configs to open_clip's registry (once), so open_clip creates them by name."""
    import open_clip

    open_clip.add_model_config(MODEL_CONFIG_DIR)


def register_open_clip_config(config: dict, name: str | None = None) -> str:
    """Returns the open_clip model name under which `config` is now registered (content-hashed by default)."""
    import open_clip

    missing = {"embed_dim", "vision_cfg", "text_cfg"} - set(config)
    if missing:
        raise ValueError(f"open_clip config lacks {sorted(missing)}; see open_clip/model_configs/*.json")
    text = json.dumps(config, sort_keys=True)
    name = name or f"dejavu-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    if open_clip.get_model_config(name) == config:
        return name
    # open_clip's public registry reads JSON files only, so the dict goes through a per-process folder
    path = _config_dir() / f"{name}.json"
    write_text(path, text)
    open_clip.add_model_config(path)
    return name


@functools.cache
def _config_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="dejavu-open-clip-configs-"))


def create_open_clip(model: str | dict, pretrained_path: str | Path | None = None, *,
                     device: str | torch.device = "cpu"):
    """Returns (model, train_preprocess, eval_preprocess, tokenizer) built by open_clip's factory, never downloading.

    `model` is an open_clip model name ("ViT-B-32", or TINY_CLIP_NAME) or a config dict such as
    TINY_CLIP_CONFIG; weights are random unless `pretrained_path` names a local checkpoint (a
    state_dict, or {"state_dict": ...} with "module." prefixes, as open_clip itself accepts).
    """
    import open_clip

    register_packaged_configs()
    name = register_open_clip_config(model) if isinstance(model, dict) else model
    if open_clip.get_model_config(name) is None:
        raise ValueError(f"unknown open_clip model {name!r}; known: {', '.join(open_clip.list_models())}")
    if pretrained_path is not None and not Path(pretrained_path).is_file():
        raise FileNotFoundError(f"open_clip checkpoint {str(pretrained_path)!r} does not exist")
    try:
        clip, train_preprocess, eval_preprocess = open_clip.create_model_and_transforms(
            name, pretrained=str(pretrained_path) if pretrained_path is not None else None, device=device,
            pretrained_image=False, pretrained_text=False)
    except RuntimeError as err:
        if pretrained_path is None:
            raise
        raise ValueError(f"checkpoint {str(pretrained_path)!r} does not fit model {name!r}: {err}") from None
    return clip, train_preprocess, eval_preprocess, open_clip.get_tokenizer(name)


class OpenClipEncoder(_TorchEncoder):
    """An open_clip CLIP model at one image layer, with its text tower.

    Layers: "projector" is `encode_image` (un-normalized, SPEC section 3); "backbone" is the pooled
    image-tower feature before the final projection (VisionTransformer towers); any other value is a
    submodule name of the CLIP model (e.g. "visual.transformer.resblocks.0"), captured by a hook and
    flattened. Texts are embedded with `encode_text`, L2-normalized (SPEC section 5).
    """

    def __init__(self, model: torch.nn.Module, preprocess: Callable[[Image.Image], torch.Tensor], tokenizer,
                 layer: str = "projector", *, name: str | None = None,
                 device: str | torch.device | None = None, dim: int | None = None):
        self._target = None
        if layer == "backbone":
            from open_clip.transformer import VisionTransformer

            if not isinstance(model.visual, VisionTransformer):
                raise ValueError(f"layer 'backbone' needs an open_clip VisionTransformer image tower, this model "
                                 f"has {type(model.visual).__name__}; pass a submodule name as layer instead, "
                                 f"e.g. one of: {_layer_listing(model, prefix='visual.')}")
        elif layer != "projector":
            self._target = resolve_layer(model, layer)
        super().__init__(model, layer=layer, image_transform=preprocess, name=name or type(model).__name__,
                         device=device, dim=dim)
        self.tokenizer = tokenizer
        self.text_dim: int | None = None

    @property
    def model(self) -> torch.nn.Module:
        return self.module

    @classmethod
    def from_config(cls, model: str | dict, pretrained_path: str | Path | None = None, *,
                    layer: str = "projector", name: str | None = None,
                    device: str | torch.device | None = None) -> OpenClipEncoder:
        """Returns an encoder for an open_clip model name or config dict, random or from a local checkpoint."""
        clip, _, eval_preprocess, tokenizer = create_open_clip(model, pretrained_path)
        if name is None:
            name = model if isinstance(model, str) else register_open_clip_config(model)
            if pretrained_path is not None:
                name = f"{name}@{Path(pretrained_path).name}"
        return cls(clip, eval_preprocess, tokenizer, layer, name=name, device=device)

    def _fingerprint_extra(self) -> str:
        return f"context_length={getattr(self.tokenizer, 'context_length', None)}"

    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.layer == "projector":
            return self.module.encode_image(pixels, normalize=False)
        if self.layer == "backbone":
            visual = self.module.visual
            proj = visual.proj
            # open_clip's own prune_intermediate_layers(prune_head=True) sets proj to None: the tower then
            # returns the pooled, layer-normed features the projection would have multiplied
            visual.proj = None
            try:
                return visual(pixels)
            finally:
                visual.proj = proj
        with capture_output(self._target) as captured:
            self.module.encode_image(pixels)
        if not captured:
            raise ValueError(f"{self.name}: layer {self.layer!r} did not run in encode_image")
        return flatten_features(captured[-1])

    @property
    def supports_text(self) -> bool:
        """True: CLIP models embed captions."""
        return True

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Returns float32 CPU, L2-normalized `encode_text` embeddings [len(texts), D]."""
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a list of captions, not one string")
        tokens = self.tokenizer(list(texts)).to(self.device)
        with self._eval_mode(), torch.inference_mode():
            out = self.module.encode_text(tokens, normalize=True)
        return self._checked(out, expected_rows=len(texts), what="text", dim_attr="text_dim")
