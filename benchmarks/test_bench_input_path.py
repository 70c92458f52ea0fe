"""The input path against bare PyTorch loops on ready tensors: training steps and evaluation embedding.

Targets (SSL issue): a training step through Lightning, with the recipe's views made on the batch,
runs at >= 90% of the steps/s of a bare loop that makes the same views from the same decoded
tensors; `embed_records` with its pixel array built runs at >= 90% of a bare `inference_mode`
forward; the "embed, interleaved" group times them round by round, side by side. The per-image path
(PIL decode and transforms in the loader) is timed beside them.

    pytest benchmarks/test_bench_input_path.py --benchmark-only --benchmark-group-by=group

DEJAVU_BENCH_SCALE (default 1.0) scales the number of training steps and embedded images.
Each group prints the ratios to its bare loop at the end (`-s` shows them).
"""

import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench.presets import load_preset
from bench.recipes.data import ImageTrainingSet, PixelTrainingSet, TrainingData, expand_by_repeat
from bench.recipes.ssl import SimCLR
from bench.recipes.views import batched_views
from bench.run import load_preset_dataset
from dejavu.embed import embed_records
from dejavu.pixels import decoded_pixels
from dejavu.splits import training_records

SCALE = float(os.environ.get("DEJAVU_BENCH_SCALE", "1.0"))
STEPS = max(4, int(40 * SCALE))
N_EMBED = max(256, int(5000 * SCALE))
BATCH = 128
TIMES: dict[str, dict[str, float]] = {}


#: SimCLR's own hyperparameters in the default preset (its projector, its 32 px views)
SIMCLR_OWN = load_preset("default").recipe_config("simclr").as_dict()


@pytest.fixture(scope="module")
def records():
    preset = load_preset("default")
    cache = Path(os.environ.get("DEJAVU_BENCH_CACHE", ".cache/dejavu-bench")) / "data"
    return load_preset_dataset("scenes", preset.data, cache)


@pytest.fixture(scope="module")
def train_config():
    # no warmup: a benchmark fit of STEPS steps is shorter than the preset's 2 warmup epochs, which
    # lightly's scheduler refuses; the schedule does not change the time of a step
    return replace(load_preset("default").train_config("simclr"), warmup_epochs=0)


def _timed(group: str, name: str, benchmark, fn):
    benchmark.group = group
    # an embedding round takes a fifth of a second, so more of them steady its median on a noisy machine
    benchmark.pedantic(fn, rounds=3 if group == "train-step" else 11, warmup_rounds=1, iterations=1)
    TIMES.setdefault(group, {})[name] = benchmark.stats.stats.median


@pytest.fixture(scope="module", autouse=True)
def report_ratios():
    yield
    for group, times in TIMES.items():
        bare = times.get("bare")
        if bare:
            print(f"\n{group}: " + ", ".join(f"{name} {bare / t:.2f}x the bare loop's speed"
                                             for name, t in times.items() if name != "bare"))


# -- training ---------------------------------------------------------------------------------------
def _fit(module, dataset, cfg, steps):
    import lightning as L

    data = TrainingData(dataset, BATCH, cfg.num_workers, seed=0)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=steps, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False, default_root_dir=tempfile.mkdtemp())
    trainer.fit(module, datamodule=data)


def test_train_step_bare_loop(benchmark, records, train_config):
    """Manual PyTorch loop: the same views from the same decoded tensors, forward, backward, AdamW."""
    a = training_records(records, "A")
    pixels = torch.from_numpy(decoded_pixels(a, progress=False))
    module = SimCLR(cfg=train_config.as_dict(), recipe_cfg=SIMCLR_OWN)
    views = batched_views(module.train_transform())
    optimizer = torch.optim.AdamW(module.parameters(), lr=train_config.lr)
    order = torch.as_tensor(expand_by_repeat(a))

    def loop():
        module.train()
        for _ in range(STEPS):
            rows = order[torch.randint(len(order), (BATCH,))]
            x0, x1 = (view(pixels[rows]) for view in views)
            loss = module.criterion(module(x0), module(x1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    _timed("train-step", "bare", benchmark, loop)


@pytest.mark.parametrize("batched", [True, False], ids=["batched-views", "per-image-views"])
def test_train_step_lightning(benchmark, records, train_config, batched):
    """The suite's path (Lightning, decoded batches gathered in one index, views made on the batch), and
    the former one (PIL decode and lightly's per-image views in the loader, num_workers from the preset)."""
    a = training_records(records, "A")
    cfg = replace(train_config, batched_views=batched)

    def fit():
        module = SimCLR(cfg=cfg.as_dict(), recipe_cfg=SIMCLR_OWN)
        dataset = module.training_set(a, expand_by_repeat(a), seed=0)
        assert isinstance(dataset, PixelTrainingSet if batched else ImageTrainingSet)
        _fit(module, dataset, cfg, STEPS)

    _timed("train-step", f"lightning+{'batched' if batched else 'per-image'} views", benchmark, fit)


# -- embedding --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def public(records):
    return records.where(split="public")[:N_EMBED]


@pytest.fixture(scope="module")
def encoder(train_config):
    module = SimCLR(cfg=train_config.as_dict(), recipe_cfg=SIMCLR_OWN).eval()
    return module.encoder("projector")


def bare_forward(public, encoder):
    """Returns a bare `inference_mode` forward over ready, normalized tensors in batches of 256."""
    stage = encoder.image_transform
    ready = torch.stack([stage(r.load_image()) for r in public])
    module = encoder.module

    def forward():
        with torch.inference_mode():
            return [module(ready[s:s + 256]) for s in range(0, len(ready), 256)]
    return forward


def test_embed_bare_forward(benchmark, public, encoder):
    """Bare `inference_mode` forward over ready, normalized tensors in batches of 256."""
    _timed("embed", "bare", benchmark, bare_forward(public, encoder))


def test_embed_records_with_pixel_array(benchmark, public, encoder, tmp_path_factory):
    """`embed_records` once the pixel array exists (every model after the first, every later test)."""
    cache = tmp_path_factory.mktemp("embed-cache")
    embed_records(encoder, public, cache_dir=cache, progress=False)  # builds the shared pixel array

    def embed():
        for f in cache.glob("*.pt"):  # drop the embeddings, keep the pixels: as a second model sees it
            f.unlink()
        return embed_records(encoder, public, cache_dir=cache, progress=False)

    _timed("embed", "embed_records (pixel array built)", benchmark, embed)


def test_embed_records_interleaved_with_the_bare_forward(benchmark, public, encoder, tmp_path_factory):
    """The same, with the bare forward run just before each round (as the round's untimed setup).

    The machine's speed drifts between tests (the same bare forward has measured 130 and 270 ms
    minutes apart), so this group's ratio compares rounds taken side by side.
    """
    forward, bare_times = bare_forward(public, encoder), []
    cache = tmp_path_factory.mktemp("embed-cache")
    embed_records(encoder, public, cache_dir=cache, progress=False)

    def setup():
        for f in cache.glob("*.pt"):
            f.unlink()
        start = time.perf_counter()
        forward()
        bare_times.append(time.perf_counter() - start)

    benchmark.group = group = "embed, interleaved"
    benchmark.pedantic(lambda: embed_records(encoder, public, cache_dir=cache, progress=False), setup=setup,
                       rounds=15, warmup_rounds=1)
    TIMES.setdefault(group, {})["bare"] = statistics.median(bare_times[1:])  # less the warmup round's
    TIMES[group]["embed_records (pixel array built)"] = benchmark.stats.stats.median


def test_embed_records_decoding(benchmark, public, encoder):
    """`embed_records` with no cache: decodes into the pixel array first (the first model's cost)."""
    _timed("embed", "embed_records (decoding too)", benchmark,
           lambda: embed_records(encoder, public, progress=False))


def test_embed_records_per_image(benchmark, public, encoder):
    """The former path: each image through the whole PIL transform in a DataLoader, per model."""
    whole = encoder.image_transform
    encoder_per_image = type(encoder)(encoder.module, encoder.layer, lambda image: whole(image),
                                      name="per-image")
    _timed("embed", "per-image transform", benchmark,
           lambda: embed_records(encoder_per_image, public, progress=False))
    # the batched tensor stage does the per-image arithmetic: the embeddings are bit-for-bit equal
    assert torch.equal(embed_records(encoder, public, progress=False).vectors,
                       embed_records(encoder_per_image, public, progress=False).vectors)
