"""Recipes: smoke training of every recipe, resume, and that mitigations' knobs reach training."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import v2 as T2

from bench.recipes import RECIPES, build_recipe, resolve_layer
from bench.recipes.data import EpochSampler, TrainingData, expand_by_repeat, expanded_length
from bench.recipes.train import TrainConfig, TrainingDirError, load_trained, matched_length, train_model
from bench.recipes.views import ResizedCrop
from bench.run import training_plan
from dejavu.records import Record, RecordError, RecordSet

N_RECORDS = 16
PROJECTORS = {"vicreg": (32, 32, 32), "barlowtwins": (32, 32, 24), "simclr": (32, 16), "byol": (32, 16),
              "supervised": (32, 16)}
CFG = TrainConfig(backbone="small-cnn", image_size=32, epochs=1, batch_size=8, limit_train_batches=2,
                  accelerator="cpu", devices=1, log_every_n_steps=1)
#: each recipe's own config under CFG: small projectors
OWN = {name: cls.Config(**({"projector": PROJECTORS[name]} if name in PROJECTORS else {}))
       for name, cls in RECIPES.items()}


def make_plan(recipe: str):
    """Returns the unmitigated plan of `recipe` under CFG and its own config."""
    return training_plan(recipe, CFG, OWN[recipe])
#: (projector output width, backbone width) per recipe under CFG
EXPECTED_DIMS = {"vicreg": (32, 128), "barlowtwins": (24, 128), "simclr": (16, 128), "byol": (16, 128),
                 "supervised": (16, 128), "clip": (64, 64)}


def _record(i: int, path: Path, **changes) -> Record:
    fields = dict(id=f"r{i:02d}", image=path, width=32, height=32, label=f"class{i % 2}",
                  caption=f"a photo of a class{i % 2} thing number {i} on a plain background",
                  objects=(f"class{i % 2}",), split="A")
    fields.update(changes)
    return Record(**fields)


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> RecordSet:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    out = []
    for i in range(N_RECORDS):
        path = root / f"r{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        out.append(_record(i, path, repeat=3 if i < 2 else 1))
    return RecordSet(out, name="A")


def _pixels(model, records: RecordSet, n: int = 4) -> torch.Tensor:
    transform = model.encoder("projector").image_transform
    return torch.stack([transform(r.load_image()) for r in list(records)[:n]])


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_trains_and_embeds_at_every_layer(recipe, records, tmp_path):
    model = train_model(make_plan(recipe), records, CFG, OWN[recipe], tmp_path, seed=0, progress=False)

    assert model.checkpoint == tmp_path / "last.ckpt" and model.checkpoint.is_file()
    losses = pd.concat(pd.read_csv(f) for f in tmp_path.glob("logs/*/metrics.csv"))["train_loss"].dropna()
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)

    pixels = _pixels(model, records)
    layers = model.embedding_layers()
    assert layers[0] == "projector" and layers[-1] == "backbone"
    proj_dim, backbone_dim = EXPECTED_DIMS[recipe]
    assert model.encoder("projector").embed_images(pixels).shape == (4, proj_dim)
    assert model.encoder("backbone").embed_images(pixels).shape == (4, backbone_dim)
    for layer in layers:  # every listed level is a layer that runs in the forward pass
        assert model.encoder(layer).embed_images(pixels).shape[0] == 4

    reloaded = load_trained(model.checkpoint)
    assert reloaded.recipe == recipe
    torch.testing.assert_close(reloaded.encoder("projector").embed_images(pixels),
                               model.encoder("projector").embed_images(pixels))


#: the flat hyperparameters an earlier release stored in a simclr checkpoint trained under CFG
LEGACY_HPARAMS = {"crop_scale": [0.2, 1.0], "cfg": {
    "backbone": "small-cnn", "image_size": 32, "epochs": 1, "batch_size": 8, "optimizer": "adamw", "lr": 1e-3,
    "weight_decay": 1e-4, "warmup_epochs": 0, "crop_scale": [0.2, 1.0], "clip_crop_scale": [0.9, 1.0],
    "projector": {k: list(v) for k, v in PROJECTORS.items()}, "view_kwargs": {}, "temperature": 0.1,
    "vicreg_invariance": 25.0, "barlow_lambda": 5e-3, "byol_momentum": [0.99, 1.0], "clip_model": "tiny",
    "num_workers": 0, "batched_views": True, "precision": "32-true", "accelerator": "cpu", "devices": 1,
    "limit_train_batches": 2, "log_every_n_steps": 1}}


def test_a_checkpoint_stores_both_configs_and_one_of_an_earlier_release_still_loads(records, tmp_path):
    model = train_model(make_plan("simclr"), records, CFG, OWN["simclr"], tmp_path / "new", seed=0, progress=False)
    stored = torch.load(model.checkpoint, weights_only=True)
    assert stored["hyper_parameters"] == {"cfg": CFG.as_dict(), "recipe_cfg": OWN["simclr"].as_dict()}

    legacy = tmp_path / "legacy.ckpt"  # the same weights, with the flat hyperparameters of every recipe
    torch.save({**stored, "hyper_parameters": LEGACY_HPARAMS}, legacy)
    loaded = load_trained(legacy)
    assert (loaded.module.cfg, loaded.module.recipe_cfg) == (CFG, OWN["simclr"])
    pixels = _pixels(model, records)
    torch.testing.assert_close(loaded.encoder("projector").embed_images(pixels),
                               model.encoder("projector").embed_images(pixels), rtol=0, atol=0)


def test_every_recipe_owns_its_published_hyperparameters():
    published = {"vicreg": {"projector": (8192, 8192, 8192), "invariance": 25.0},
                 "simclr": {"projector": (2048, 128), "temperature": 0.1},
                 "barlowtwins": {"projector": (8192, 8192, 8192), "lambda_param": 5e-3},
                 "byol": {"projector": (4096, 256), "momentum": (0.99, 1.0)},
                 "supervised": {"projector": (512, 128)}, "clip": {"model": "tiny", "crop_scale": (0.9, 1.0)}}
    for name, values in published.items():
        config = RECIPES[name].Config()
        assert {k: getattr(config, k) for k in values} == values
        assert config.crop_scale == values.get("crop_scale", (0.2, 1.0))
        assert not set(config.field_names()) & set(TrainConfig.__dataclass_fields__)  # nothing shadows a shared one


@pytest.mark.parametrize("recipe, changes, message", [
    ("simclr", {"temperature": 0}, "temperature must be a finite number > 0"),
    ("vicreg", {"projector": ()}, "projector must be a non-empty list"),
    ("byol", {"momentum": (1.0, 0.9)}, "momentum must be"),
    ("clip", {"model": "no-such-arch"}, "model must be 'tiny' or an open_clip architecture"),
    ("supervised", {"crop_scale": (0.0, 1.0)}, "crop_scale must be"),
])
def test_a_recipe_config_checks_its_fields(recipe, changes, message):
    with pytest.raises(ValueError, match=message):
        RECIPES[recipe].Config(**changes)


def test_the_recipes_own_hyperparameters_reach_their_losses(records):
    def built(name, **changes):
        own = RECIPES[name].Config(**{"projector": PROJECTORS[name], **changes})
        return build_recipe(name, CFG, own, records, (0.2, 1.0))

    assert built("simclr", temperature=0.3).criterion.temperature == 0.3
    assert built("vicreg", invariance=5.0).criterion.lambda_param == 5.0
    assert built("barlowtwins", lambda_param=0.02).criterion.lambda_param == 0.02
    assert built("byol", momentum=(0.9, 0.95)).recipe_cfg.momentum == (0.9, 0.95)
    with pytest.raises(TypeError, match="recipe 'vicreg' takes a VICRegConfig, got a SimCLRConfig"):
        build_recipe("vicreg", CFG, OWN["simclr"], records, (0.2, 1.0))


def test_ssl_hidden_layers_are_listed_top_down(records):
    module = build_recipe("vicreg", CFG, OWN["vicreg"], records, (0.2, 1.0))
    # VICReg head: Linear BN ReLU (2) Linear BN ReLU (5) Linear; levels below the output are 5, then 2
    assert module.embedding_layers() == ["projector", "projector.layers.5", "projector.layers.2", "backbone"]
    assert resolve_layer(module.embedding_layers(), 1) == "projector.layers.5"
    assert resolve_layer(module.embedding_layers(), 99) == "backbone"  # clamped
    with pytest.raises(ValueError, match="projector.layers.2"):
        resolve_layer(module.embedding_layers(), "head")


class EpochSpy(L.Callback):
    """Appends, per epoch run, the trainer's epoch and the sampler's epoch to a file.

    A file, because train_model gives each Trainer deep copies of the plan's callbacks.
    """

    def __init__(self, log: Path):
        self.path = log

    def on_train_epoch_start(self, trainer, pl_module):
        with self.path.open("a") as f:
            f.write(f"{trainer.current_epoch} {trainer.train_dataloader.sampler.epoch}\n")

    def seen(self) -> list[tuple[int, int]]:
        lines = self.path.read_text().split() if self.path.exists() else []
        return [(int(a), int(b)) for a, b in zip(lines[::2], lines[1::2], strict=True)]


# extending a finished run continues past the end of lightly's restored cosine schedule, which warns
@pytest.mark.filterwarnings("ignore:Current step number")
def test_resume_continues_from_last_checkpoint_instead_of_restarting(records, tmp_path):
    run = tmp_path / "run"
    first, second, third, fourth = (EpochSpy(tmp_path / f"spy{i}.txt") for i in range(4))
    plan = make_plan("simclr")
    train_model(plan.with_changes(callbacks=(first,)), records, CFG, OWN["simclr"], run, seed=0, progress=False)
    longer = plan.with_changes(max_epochs=2)
    train_model(longer.with_changes(callbacks=(second,)), records, CFG, OWN["simclr"], run, seed=0, progress=False)
    model = train_model(longer.with_changes(callbacks=(third,)), records, CFG, OWN["simclr"], run, seed=0, progress=False)

    assert first.seen() == [(0, 0)]
    assert second.seen() == [(1, 1)]  # only the missing epoch ran, and the sampler knew its number
    assert third.seen() == []  # finished: loaded, not trained
    assert json.loads((run / "done.json").read_text())["global_step"] == 4
    assert torch.load(model.checkpoint, weights_only=True)["global_step"] == 4

    # killed after the last epoch's checkpoint but before the marker: resumes, runs nothing more
    (run / "done.json").unlink()
    train_model(longer.with_changes(callbacks=(fourth,)), records, CFG, OWN["simclr"], run, seed=0, progress=False)
    assert fourth.seen() == [] and json.loads((run / "done.json").read_text())["global_step"] == 4


def test_a_directory_refuses_a_different_run(records, tmp_path):
    plan = make_plan("simclr")
    train_model(plan, records, CFG, OWN["simclr"], tmp_path, seed=0, progress=False)
    with pytest.raises(TrainingDirError, match="seed"):
        train_model(plan, records, CFG, OWN["simclr"], tmp_path, seed=1, progress=False)
    with pytest.raises(TrainingDirError, match="cannot be rewound"):
        train_model(plan.with_changes(max_epochs=0), records, CFG, OWN["simclr"], tmp_path, seed=0, progress=False)


def _crop_scales(transform) -> list[tuple[float, float]]:
    """Returns the scale of every RandomResizedCrop reachable from a (multi-view) transform."""
    found = []
    stack = [transform]
    while stack:
        t = stack.pop()
        if isinstance(t, T.RandomResizedCrop | T2.RandomResizedCrop):
            found.append(tuple(t.scale))
        for attr in ("transforms", "transform"):
            inner = getattr(t, attr, None)
            if inner is not None:
                stack.extend(inner if isinstance(inner, list | tuple) else [inner])
    return found


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_plan_crop_scale_reaches_the_training_views(recipe, records):
    plan = make_plan(recipe).with_changes(crop_scale=(0.05, 0.6))
    module = build_recipe(recipe, CFG, OWN[recipe], records, plan.crop_scale)
    module.training_set(records, expand_by_repeat(records), seed=0)
    n_views = 1 if recipe in ("supervised", "clip") else 2
    assert _crop_scales(module.train_transform()) == [(0.05, 0.6)] * n_views
    if recipe != "clip":  # the image recipes make these views on decoded batches, read off that transform
        assert [op.scale for view in module.views for op in view.ops
                if isinstance(op, ResizedCrop)] == [(0.05, 0.6)] * n_views


def test_caption_transform_reaches_the_clip_batch(records):
    def drop_half(caption: str, rng: np.random.Generator) -> str:
        return " ".join(w for w in caption.split() if rng.random() < 0.5)

    module = build_recipe("clip", CFG, OWN["clip"], records, (0.9, 1.0))
    dataset = module.training_set(records, expand_by_repeat(records), seed=3, caption_transforms=(drop_half,))
    loader = TrainingData(dataset, batch_size=8, num_workers=0, seed=3).train_dataloader()
    keys = list(loader.sampler)[:8]
    _, tokens = next(iter(loader))

    fed = [dataset.caption_at(k) for k in keys]
    torch.testing.assert_close(tokens, module.tokenizer(fed))
    originals = [records[dataset.indices[p]].caption for _, p in keys]
    assert all(len(f.split()) < len(o.split()) for f, o in zip(fed, originals, strict=True))
    # reproducible per (seed, epoch, position), and re-drawn in the next epoch
    assert dataset.caption_at((0, 5)) == dataset.caption_at((0, 5))
    assert [dataset.caption_at((0, p)) for p in range(8)] != [dataset.caption_at((1, p)) for p in range(8)]


def test_clip_without_caption_names_the_record(records):
    bad = RecordSet([*list(records)[:3], _record(99, records[0].image, caption=None)])
    module = build_recipe("clip", CFG, OWN["clip"], bad, (0.9, 1.0))
    with pytest.raises(RecordError, match="r99"):
        module.training_set(bad, expand_by_repeat(bad), seed=0)


def test_supervised_without_label_names_the_record(records):
    bad = RecordSet([*list(records)[:3], _record(98, records[0].image, label=None)])
    with pytest.raises(RecordError, match="r98"):
        build_recipe("supervised", CFG, OWN["supervised"], bad, (0.2, 1.0))


def test_repeat_expansion_duplicates_canaries_within_an_epoch(records, tmp_path):
    rs = [_record(i, tmp_path / "x.png", repeat=r) for i, r in enumerate([1, 3, 2])]
    assert expand_by_repeat(rs) == [0, 1, 1, 1, 2, 2]
    assert expanded_length(records) == N_RECORDS + 2 * 2  # two canaries seen 3 times
    with pytest.raises(RecordError, match="r01"):
        expand_by_repeat([rs[0], _record(1, tmp_path / "x.png", repeat=0)])


def test_matched_length_pads_with_fair_seeded_draws(tmp_path):
    rs = [_record(i, tmp_path / "x.png") for i in range(4)]
    padded = matched_length(rs, 10, seed=7)
    assert len(padded) == 10 and padded[:4] == [0, 1, 2, 3]
    # 6 extra draws = one full permutation (each record once) + 2 distinct records from the next
    counts = Counter(padded)
    assert sorted(counts.values()) == [2, 2, 3, 3]
    assert padded == matched_length(rs, 10, seed=7)
    assert matched_length(rs, 4, seed=7) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="shorter"):
        matched_length(rs, 3, seed=7)


def test_epoch_sampler_is_a_seeded_permutation_per_epoch():
    sampler = EpochSampler(10, seed=1)
    first = list(sampler)
    assert sorted(p for _, p in first) == list(range(10)) and {e for e, _ in first} == {0}
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert [p for _, p in sampler] != [p for _, p in first]


def test_training_set_smaller_than_a_batch_is_refused(records):
    module = build_recipe("simclr", CFG, OWN["simclr"], records, (0.2, 1.0))
    with pytest.raises(ValueError, match="fewer than one batch"):
        TrainingData(module.training_set(records, [0, 1], seed=0), batch_size=8, num_workers=0, seed=0)


def test_epoch_sampler_shards_one_permutation_across_ranks():
    full = [p for _, p in EpochSampler(5, seed=2)]
    shards = [[p for _, p in EpochSampler(5, seed=2, rank=r, world_size=2)] for r in range(2)]
    assert [len(s) for s in shards] == [3, 3]
    assert shards[0] == full[0::2] and shards[1] == full[1::2] + [full[0]]  # wraps to even out


def test_a_second_job_waits_for_the_model_and_then_loads_it(records, tmp_path):
    # Sweep jobs `none` and `guillotine` need one model: the second must not train it over the first.
    import threading

    from filelock import FileLock

    from bench.recipes.train import LOCK

    plan = make_plan("simclr")
    loaded = []
    waiting = threading.Thread(target=lambda: loaded.append(
        train_model(plan, records, CFG, OWN["simclr"], tmp_path, seed=0, progress=False)))
    with FileLock(tmp_path / LOCK):  # stands for the first job, still training
        waiting.start()
        waiting.join(timeout=1.0)
        assert waiting.is_alive() and not (tmp_path / "run.json").exists()
    waiting.join()
    assert len(loaded) == 1 and (tmp_path / "done.json").exists()
