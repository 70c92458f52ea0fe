"""The image-reconstruction test: its diffusion model (trained once, cached), its sampling, its rows and grid."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from dejavu import reconstruction
from dejavu.attacks.common import StatsConfig
from dejavu.attacks.image import ImageTestConfig
from dejavu.config import ConfigError
from dejavu.embed import Embeddings
from dejavu.encoders import TINY_CLIP_CONFIG, OpenClipEncoder
from dejavu.measure import MeasureConfig, Models, measure
from dejavu.measurements.reconstruction import TEST, ImageReconstructionTest, grid_order, reconstruction_rows
from dejavu.reconstruction import ReconstructionConfig, reconstruction_model, sample

TINY = ReconstructionConfig(image_size=8, widths=(8, 16), norm_groups=4, diffusion_steps=50, train_steps=3,
                            batch_size=16, sampling_steps=3, sample_batch_size=4, classifier_epochs=1)
STATS = StatsConfig(n_bootstrap=50)
CFG = MeasureConfig(tests=(TEST,), stats=STATS, settings={"image-two-model": ImageTestConfig(k=5), TEST: TINY})


def clip(seed: int) -> OpenClipEncoder:
    torch.manual_seed(seed)
    return OpenClipEncoder.from_config(TINY_CLIP_CONFIG, device="cpu")


@pytest.fixture(scope="module")
def models():
    return clip(0), clip(1)


@pytest.fixture
def count_training(monkeypatch):
    """Returns a list that holds one entry per diffusion model trained."""
    calls = []
    fit = reconstruction.fit_diffusion

    def counted(*args, **kwargs):
        calls.append(1)
        return fit(*args, **kwargs)

    monkeypatch.setattr(reconstruction, "fit_diffusion", counted)
    return calls


def public_of(records):
    return records.where(split="public")


def test_the_model_trains_once_and_then_loads_from_the_cache(tiny_records, models, tmp_path, count_training):
    public = public_of(tiny_records)
    first = reconstruction_model(models[0], public, TINY, cache_dir=tmp_path)
    again = reconstruction_model(models[0], public, TINY, cache_dir=tmp_path)
    assert len(count_training) == 1
    assert list((tmp_path / "reconstruction").glob("*.pt"))
    for name, weights in first.state_dict().items():
        assert torch.equal(weights, again.state_dict()[name]), name
    # sampling settings do not shape the model, so changing them does not retrain it; another encoder does
    reconstruction_model(models[0], public, dataclasses.replace(TINY, sampling_steps=2), cache_dir=tmp_path)
    assert len(count_training) == 1
    reconstruction_model(models[1], public, TINY, cache_dir=tmp_path)
    assert len(count_training) == 2


def test_a_new_model_version_retrains_and_version_one_keeps_its_cache(tiny_records, models, tmp_path,
                                                                     count_training, monkeypatch):
    import dejavu.reconstruction as reconstruction

    public = public_of(tiny_records)
    reconstruction_model(models[0], public, TINY, cache_dir=tmp_path)
    monkeypatch.setattr(reconstruction, "MODEL_VERSION", 2)  # a code change that leaves the state dict loadable
    reconstruction_model(models[0], public, TINY, cache_dir=tmp_path)
    assert len(count_training) == 2
    assert len(list((tmp_path / "reconstruction").glob("*.pt"))) == 2
    monkeypatch.setattr(reconstruction, "MODEL_VERSION", 1)
    reconstruction_model(models[0], public, TINY, cache_dir=tmp_path)
    assert len(count_training) == 2


def test_samples_are_fixed_by_the_seed_and_follow_the_conditioning(tiny_records, models):
    model = reconstruction_model(models[0], public_of(tiny_records), TINY)
    dim = model.condition.in_features
    embeddings = Embeddings(["a", "b", "c", "d", "e"], torch.randn(5, dim, generator=torch.Generator().manual_seed(0)))
    first = sample(model, embeddings)
    assert first.shape == (5, 3, 8, 8) and first.min() >= -1 and first.max() <= 1
    assert torch.equal(first, sample(model, embeddings))
    # a record's noise is its own, whatever the batch it is sampled in
    assert torch.allclose(sample(model, embeddings.subset(["c"]))[0], first[2], atol=1e-5)
    other = Embeddings(embeddings.ids, torch.roll(embeddings.vectors, 1, dims=0))
    changed = sample(model, other)
    assert all(not torch.allclose(changed[i], first[i]) for i in range(5))


def test_gap_rows_by_hand():
    # canaries: the target's samples are right for 2 of 2, the reference's for 0; others: 1 of 3 and 2 of 3
    target = [True, True, True, False, False]
    reference = [False, False, True, True, False]
    rows = {(r.subset, r.metric): r for r in
            reconstruction_rows(TEST, target, reference, [True, True, False, False, False], STATS)}
    expected = {"all": (0.6, 0.4, 0.2, 5), "canary": (1.0, 0.0, 1.0, 2), "non-canary": (1 / 3, 2 / 3, -1 / 3, 3)}
    for subset, (acc_t, acc_r, gap, n) in expected.items():
        got = [rows[subset, m] for m in ("recon_acc_target", "recon_acc_reference", "recon_gap")]
        assert [row.value for row in got] == pytest.approx([acc_t, acc_r, gap])
        assert {row.n for row in got} == {n}
        assert all(row.ci_low <= row.value <= row.ci_high for row in got)
    assert rows["canary", "recon_gap"].ci_low == rows["canary", "recon_gap"].ci_high == 1.0  # no variation
    assert len(reconstruction_rows(TEST, [True], [False], [False], STATS)) == 6  # no canary subset rows


def test_the_grid_shows_what_the_target_alone_recognizes_first():
    target, reference = np.array([1, 0, 1, 1, 0]), np.array([1, 0, 0, 0, 1])
    assert grid_order(["e", "d", "c", "b", "a"], target, reference, 8) == [3, 2, 4, 1, 0]  # b, c; then a, d, e
    assert grid_order(["e", "d", "c", "b", "a"], target, reference, 1) == [3]


def test_without_a_reference_the_test_is_skipped(tiny_records, models, count_training):
    assert ImageReconstructionTest().missing(Models(target=models[0])) == "no reference model"
    assert measure(Models(models[0]), tiny_records, CFG, progress=False).empty
    assert not count_training


# a field's own rule is named at the field as the loader reads it; a rule across fields, at the section
@pytest.mark.parametrize("field, value, message, at", [
    ("image_size", 0, "image_size must be an integer >= 1, got 0", "."),
    ("train_steps", 2.5, "train_steps must be an integer >= 1, got 2.5", None),
    ("train_steps", True, "train_steps must be an integer >= 1, got True", None),  # a bool is no count
    ("widths", (12, 16), r"widths must be positive multiples of norm_groups \(8\)", ": "),
    ("widths", (), "widths must be a non-empty list whose items are each an integer >= 1", "."),
    ("image_size", 10, "image_size 10 must be a multiple of 4", ": "),
    ("lr", 0.0, "lr must be a finite number > 0, got 0.0", "."),
    ("sampling_steps", 2000, r"sampling_steps must be between 1 and diffusion_steps \(1000\)", ": "),
])
def test_bad_settings_are_clear_errors(field, value, message, at):
    with pytest.raises(ValueError, match=message):
        ReconstructionConfig(**{field: value})
    with pytest.raises(ConfigError, match="unknown field measure.image-reconstruction.steps; valid fields: image_size"):
        MeasureConfig.from_dict({TEST: {"steps": 3}})
    if at is not None:  # (2.5 is refused as a float where an int is declared, before any rule sees it)
        with pytest.raises(ConfigError, match=f"^measure.{TEST}{re.escape(at)}{message}"):
            MeasureConfig.from_dict({TEST: {field: list(value) if isinstance(value, tuple) else value}})


def test_a_measurement_reports_the_gap_rows_and_draws_the_grid(tiny_records, models, tmp_path, count_training):
    report = tmp_path / "report"
    rows = measure(Models(*models), tiny_records, CFG, cache_dir=tmp_path / "cache", progress=False,
                   report_dir=report)
    assert set(rows.test) == {TEST}
    metrics = {(s, m) for s, m in zip(rows.subset, rows.metric, strict=True)}
    for subset in ("all", "canary", "non-canary"):
        assert {(subset, "recon_acc_target"), (subset, "recon_acc_reference"), (subset, "recon_gap")} <= metrics
    assert {("all", "recon_classifier_top1_originals"), ("all", "recon_acc_target_full_images")} <= metrics
    attacked = rows[(rows.subset == "all") & (rows.metric == "recon_gap")].n.item()
    excluded = rows[rows.metric.str.startswith("excluded_")].n.sum()
    assert attacked + excluded == sum(r.split == "A" for r in tiny_records)
    assert (report / "reconstruction.png").stat().st_size > 0
    assert len(count_training) == 2  # one model per encoder
    again = measure(Models(*models), tiny_records, CFG, cache_dir=tmp_path / "cache", progress=False)
    assert len(count_training) == 2
    assert again.equals(rows)
