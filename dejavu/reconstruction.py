"""A representation-conditional diffusion model: what an image looks like, given only its embedding.

Meehan et al. (2023) show what a background crop's embedding reveals of the foreground by decoding
it with RCDM (Bordes, Balestriero, Vincent, *High Fidelity Visualization of What Your
Self-Supervised Representation Knows About*, 2022), a diffusion model conditioned on a frozen
encoder's representation. This is a small model of that kind, sized for 32 px images on CPU:

- a diffusers `UNet2DModel` that predicts the noise of a DDPM schedule;
- the condition: the L2-normalized embedding, projected by a learned linear layer to the UNet's
  time-embedding width and added to the time embedding. With `resnet_time_scale_shift="scale_shift"`
  every ResNet block turns that sum into a per-channel scale and shift of its group norm, which is
  RCDM's conditional normalization;
- training on the public images and the encoder's embeddings of them (Lightning), once per
  (encoder, public records, training settings), cached as a state_dict;
- sampling with DDIM from a fixed noise per record, so two conditionings of one record start from
  the same noise and their samples differ only by what the embeddings (and models) carry.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from torchvision import transforms as T

from dejavu.embed import Embeddings, cache_key, embed_records
from dejavu.encoders import Encoder
from dejavu.files import atomic_open
from dejavu.pixels import decoded_pixels
from dejavu.records import RecordSet
from dejavu.rules import at_least, check_fields, each, finite

if TYPE_CHECKING:
    from diffusers import DDIMScheduler

log = logging.getLogger(__name__)

#: The version of the model's code (ConditionalDiffusion, its training, its conditioning). Bump it when a
#: change keeps the state dict loadable but makes a cached model stale; from 2 on it enters the cache key,
#: so the models cached at version 1 keep theirs.
MODEL_VERSION = 1


@dataclass(frozen=True)
class ReconstructionConfig:
    """The reconstruction model's knobs; the defaults fit the embedded 32 px benchmark on a 2-core CPU.

    Example:
        >>> ReconstructionConfig(widths=[16, 32]).widths  # a preset's JSON list becomes a tuple
        (16, 32)
        >>> ReconstructionConfig(sampling_steps=2000)
        Traceback (most recent call last):
        ...
        ValueError: sampling_steps must be between 1 and diffusion_steps (1000), got 2000
    """

    #: the side of the generated images (the public images are resized to it)
    image_size: int = field(default=32, metadata=at_least(1))
    #: UNet channels per resolution, each level halves the side
    widths: tuple[int, ...] = field(default=(16, 32, 64), metadata=each(at_least(1)))
    layers_per_block: int = field(default=1, metadata=at_least(1))
    norm_groups: int = field(default=8, metadata=at_least(1))  # group-norm groups; every width must be a multiple
    diffusion_steps: int = field(default=1000, metadata=at_least(1))  # the DDPM noise schedule's length
    train_steps: int = field(default=600, metadata=at_least(1))
    batch_size: int = field(default=64, metadata=at_least(1))
    lr: float = field(default=1e-3, metadata=finite(0, strictly=True))
    sampling_steps: int = field(default=25, metadata=at_least(1))  # DDIM steps per sample
    sample_batch_size: int = field(default=128, metadata=at_least(1))
    seed: int = 0  # the model's initial weights, its training noise, the sampling noise, the classifier
    classifier_epochs: int = field(default=10, metadata=at_least(1))  # the classifier that recognizes the samples
    #: the settings that shape the trained model, and so key its cache (the others only read it)
    TRAINING_FIELDS: ClassVar[tuple[str, ...]] = (
        "image_size", "widths", "layers_per_block", "norm_groups", "diffusion_steps", "train_steps", "batch_size",
        "lr", "seed")

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(self.widths))
        check_fields(self)
        # what no single field's rule can say
        if not self.widths or any(w % self.norm_groups for w in self.widths):
            raise ValueError(f"widths must be positive multiples of norm_groups ({self.norm_groups}), "
                             f"got {self.widths!r}")
        levels = 2 ** (len(self.widths) - 1)
        if self.image_size % levels or self.image_size // levels < 2:
            raise ValueError(f"image_size {self.image_size} must be a multiple of {levels} and at least {2 * levels}: "
                             f"each of the {len(self.widths)} widths but the last halves the side")
        if not self.sampling_steps <= self.diffusion_steps:
            raise ValueError(f"sampling_steps must be between 1 and diffusion_steps ({self.diffusion_steps}), "
                             f"got {self.sampling_steps!r}")

    def training_key(self) -> dict:
        """Returns the settings that the trained model depends on."""
        settings = asdict(self)
        return {name: settings[name] for name in self.TRAINING_FIELDS}


class ConditionalDiffusion(L.LightningModule):
    """A noise-predicting UNet conditioned on an image embedding, trained with the DDPM loss."""

    def __init__(self, embed_dim: int, cfg: ReconstructionConfig):
        # imported when a model is built, so that the test registry stays light
        from diffusers import DDPMScheduler, UNet2DModel

        super().__init__()
        self.cfg = cfg
        levels = len(cfg.widths)
        self.unet = UNet2DModel(
            sample_size=cfg.image_size, in_channels=3, out_channels=3, block_out_channels=cfg.widths,
            layers_per_block=cfg.layers_per_block, norm_num_groups=cfg.norm_groups,
            down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
            add_attention=False,  # the condition reaches every block through the time embedding; attention costs CPU
            class_embed_type="identity",  # class_labels is a vector added to the time embedding
            resnet_time_scale_shift="scale_shift",
        )
        self.condition = nn.Linear(embed_dim, 4 * cfg.widths[0])  # the UNet's time-embedding width
        self.noise_schedule = DDPMScheduler(num_train_timesteps=cfg.diffusion_steps)
        self.sampler: DDIMScheduler | None = None  # set by `sample`

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Returns the predicted noise of a batch of noisy images at `timesteps`, given their embeddings."""
        # unit length, then unit mean square per coordinate: the projection starts on the scale of the time embedding
        condition = self.condition(F.normalize(embeddings, dim=1) * embeddings.shape[1] ** 0.5)
        return self.unet(noisy, timesteps, class_labels=condition).sample

    def training_step(self, batch, batch_idx):
        images, embeddings = batch
        noise = torch.randn_like(images)
        t = torch.randint(0, self.cfg.diffusion_steps, (len(images),), device=images.device)
        loss = F.mse_loss(self(self.noise_schedule.add_noise(images, noise, t), t, embeddings), noise)
        self.log("train_loss", loss, batch_size=len(images), prog_bar=True)
        return loss

    def predict_step(self, batch, batch_idx):
        embeddings, x = batch
        for t in self.sampler.timesteps:
            x = self.sampler.step(self(x, t, embeddings), t, x).prev_sample
        return x.clamp(-1, 1)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.cfg.lr)


def _trainer(progress: bool, **limits) -> L.Trainer:
    """Returns a quiet single-device Trainer that writes nothing to disk."""
    return L.Trainer(accelerator="auto", devices=1, deterministic="warn", enable_checkpointing=False, logger=False,
                     enable_progress_bar=progress, enable_model_summary=False, **limits)


@contextmanager
def _quiet_loader_advice():
    """Yields with Lightning's advice on loader workers hidden (the data are in-memory tensors)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        yield


def to_unit_range(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Returns uint8 NCHW pixels as float32 in [-1, 1], the diffusion model's image space."""
    return torch.tensor(np.asarray(pixels), dtype=torch.float32).div(127.5).sub(1)  # a copy, off the mapped cache


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Returns [-1, 1] NCHW images as uint8 NHWC arrays, ready for PIL."""
    return images.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def resized_pixels(records: RecordSet, cfg: ReconstructionConfig, cache_dir: Path | None,
                  progress: bool) -> np.ndarray:
    """Returns the uint8 [N, 3, s, s] images of `records`, resized to the config's side (cached like any pixels)."""
    stage = T.Resize((cfg.image_size, cfg.image_size), antialias=True)
    return decoded_pixels(records, stage=stage, cache_dir=Path(cache_dir) / "pixels" if cache_dir else None,
                          progress=progress)


def fit_diffusion(images: torch.Tensor, embeddings: torch.Tensor, cfg: ReconstructionConfig, *,
                  progress: bool = False) -> ConditionalDiffusion:
    """Returns the model after `cfg.train_steps` steps on ([-1, 1] images, their embeddings), in eval mode."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = ConditionalDiffusion(embeddings.shape[1], cfg)
    loader = DataLoader(TensorDataset(images, embeddings), batch_size=cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.seed), drop_last=len(images) > cfg.batch_size)
    with _quiet_loader_advice():
        _trainer(progress, max_steps=cfg.train_steps, max_epochs=-1).fit(model, loader)
    return model.eval()


def reconstruction_model(encoder: Encoder, public: RecordSet, cfg: ReconstructionConfig, *,
                         cache_dir: Path | None = None, progress: bool = False) -> ConditionalDiffusion:
    """Returns the encoder's reconstruction model, trained on `public` or loaded from `cache_dir/reconstruction`.

    The cache key is (encoder fingerprint, public records fingerprint, training settings, MODEL_VERSION); a
    cached file that does not load into the model is retrained, with a warning.
    """
    embeddings = embed_records(encoder, public, cache_dir=cache_dir, progress=progress)
    path = None
    if cache_dir is not None:
        key = cache_key("reconstruction", encoder.fingerprint, public.fingerprint(), cfg.training_key(),
                        *([MODEL_VERSION] if MODEL_VERSION > 1 else []))
        path = Path(cache_dir) / "reconstruction" / f"{key}.pt"
        if path.is_file():
            model = ConditionalDiffusion(embeddings.dim, cfg)
            try:
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            except Exception as err:  # a damaged or foreign file is retrained, not trusted
                log.warning("ignoring unreadable reconstruction model %s (%s); training again", path, err)
            else:
                log.info("loaded the reconstruction model of %s from %s", getattr(encoder, "name", "encoder"), path)
                return model.eval()
    images = to_unit_range(resized_pixels(public, cfg, cache_dir, progress))
    start = time.perf_counter()
    model = fit_diffusion(images, embeddings.vectors, cfg, progress=progress)
    log.info("trained the reconstruction model of %s on %d public images in %.1f s (%d steps of %d)",
             getattr(encoder, "name", "encoder"), len(public), time.perf_counter() - start, cfg.train_steps,
             cfg.batch_size)
    if path is not None:
        with atomic_open(path, "wb") as f:
            torch.save(model.state_dict(), f)
    return model


def record_noise(ids: Sequence[str], cfg: ReconstructionConfig) -> torch.Tensor:
    """Returns float32 [n, 3, s, s] starting noise: one fixed draw per (seed, record id), whatever the batch."""
    draws = []
    for rid in ids:
        generator = torch.Generator().manual_seed(int(cache_key("noise", cfg.seed, rid)[:15], 16))
        draws.append(torch.randn(3, cfg.image_size, cfg.image_size, generator=generator))
    return torch.stack(draws) if draws else torch.empty(0, 3, cfg.image_size, cfg.image_size)


def sample(model: ConditionalDiffusion, embeddings: Embeddings, *, progress: bool = False) -> torch.Tensor:
    """Returns [n, 3, s, s] DDIM samples in [-1, 1], one per embedding row, from its record's fixed noise."""
    from diffusers import DDIMScheduler

    cfg = model.cfg
    model.sampler = DDIMScheduler.from_config(model.noise_schedule.config)
    model.sampler.set_timesteps(cfg.sampling_steps)
    data = TensorDataset(embeddings.vectors, record_noise(embeddings.ids, cfg))
    with _quiet_loader_advice():  # Trainer.predict runs under torch.inference_mode
        batches = _trainer(progress).predict(model.eval(), DataLoader(data, batch_size=cfg.sample_batch_size))
    return torch.cat([b.float().cpu() for b in batches]) if batches else record_noise([], cfg)

