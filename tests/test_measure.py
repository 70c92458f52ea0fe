"""measure() end to end on the smoke scenes with tiny random CLIP models: every test, its rows, its cache."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from PIL import Image

from dejavu.attacks.common import StatsConfig
from dejavu.attacks.image import ImageTestConfig
from dejavu.attacks.one_model import CropClassifierConfig
from dejavu.attacks.vlm import VLMTestConfig
from dejavu.encoders import TINY_CLIP_CONFIG, OpenClipEncoder
from dejavu.measure import MeasureConfig, Models, measure
from dejavu.measurements.utility import UtilityConfig
from dejavu.records import Record, RecordError, RecordSet
from dejavu.results import COLUMNS, TESTS

STATS = StatsConfig(n_bootstrap=50, n_permutations=50)
CFG = MeasureConfig(stats=STATS, settings={"image-two-model": ImageTestConfig(k=5),
                                           "image-one-model-crop": CropClassifierConfig(epochs=1),
                                           "vlm-two-model": VLMTestConfig(k=3), "utility": UtilityConfig(probe_epochs=2)})
METRICS = ("dv_gap@5", "dv_gap@20", "dv_gap@100", "memorized", "correlated", "misrepresented", "unassociated",
           "ppg", "prg", "aucg", "linear_probe_top1", "zero_shot_top1", "zero_shot_top5")


class CountingEncoder:
    """Passes everything to a wrapped encoder and counts the batches it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.image_calls, self.text_calls = inner, 0, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        self.image_calls += 1
        return self.inner.embed_images(pixels)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        self.text_calls += 1
        return self.inner.embed_texts(texts)


class NaNEncoder(CountingEncoder):
    """Returns NaN for the first image of every batch."""

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.inner.embed_images(pixels).clone()
        out[0] = float("nan")
        return out


def clip(seed: int) -> OpenClipEncoder:
    torch.manual_seed(seed)
    return OpenClipEncoder.from_config(TINY_CLIP_CONFIG, device="cpu")


@pytest.fixture(scope="module")
def models():
    return {"target": clip(0), "reference": clip(1), "text": clip(2)}


@pytest.fixture(scope="module")
def measured(tiny_records, models, tmp_path_factory):
    """Returns (rows, cache folder, report folder) of one full measurement."""
    cache, report = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("report")
    t, r = models["target"], models["reference"]
    rows = measure(Models(t, r, t, r, text_model=models["text"]), tiny_records, CFG, cache_dir=cache,
                   progress=False, report_dir=report)
    return rows, cache, report


def test_every_test_reports_its_metrics_in_standard_rows(measured):
    rows, _, _ = measured
    assert list(rows.columns) == COLUMNS
    assert set(rows.test) == set(TESTS)
    assert set(METRICS) <= set(rows.metric)
    assert set(rows.subset) == {"all", "canary", "non-canary"}
    # NaN only where a top-p level keeps no record (e.g. 5% of 16 A records)
    assert rows[rows.value.isna()].metric.str.match(
        r"(null_|corrected_)?(dv_gap|target_acc|reference_acc|pvalue_dv_gap)@").all()


def test_population_numbers_are_consistent(measured):
    rows, _, _ = measured
    image = rows[(rows.test == "image-two-model") & (rows.subset == "all")].set_index("metric").value
    assert image[["memorized", "correlated", "misrepresented", "unassociated"]].sum() == pytest.approx(1.0)
    assert image["dv_gap@100"] == pytest.approx(image["memorized"] - image["misrepresented"])
    vlm = rows[(rows.test == "vlm-two-model") & (rows.subset == "all")].set_index("metric").value
    assert vlm["aucg"] == pytest.approx(vlm["recall_target"] - vlm["recall_reference"])
    n = rows[(rows.metric == "dv_gap@100") & (rows.subset == "all")].set_index("test").n
    assert n["image-two-model"] == 32 and n["image-one-model-nb"] == 16  # both splits; A only


@pytest.mark.parametrize("test, metric", [("image-one-model-nb", "dv_gap@100"), ("image-one-model-crop", "dv_gap@20"),
                                          ("vlm-one-model-text", "ppg"), ("vlm-one-model-text", "aucg_t2t"),
                                          ("vlm-two-model", "prg")])
def test_gaps_that_need_a_null_get_it_on_eval_and_a_corrected_gap(measured, tiny_records, test, metric):
    rows, _, _ = measured
    rows = rows[rows.test == test]
    (null,) = rows[rows.metric == f"null_{metric}"].itertuples()
    assert null.subset == "all" and 0 < null.n <= sum(r.split == "eval" for r in tiny_records)
    for subset in ("all", "canary", "non-canary"):
        (raw,) = rows[(rows.metric == metric) & (rows.subset == subset)].itertuples()
        (corrected,) = rows[(rows.metric == f"corrected_{metric}") & (rows.subset == subset)].itertuples()
        assert corrected.value == pytest.approx(raw.value - null.value, abs=1e-12, nan_ok=True)
        assert corrected.n == raw.n + null.n


def test_report_dir_holds_the_per_record_table(measured, tiny_records):
    rows, _, report = measured
    table = pd.read_csv(report / "image_records.csv")
    assert sorted(table.id) == sorted(r.id for r in tiny_records if r.split in ("A", "B"))
    assert set(table.label) <= {r.label for r in tiny_records}
    memorized = table[table.correct_target & ~table.correct_reference]
    # the grid is drawn exactly when some record is memorized
    assert (report / "memorized.png").exists() == (len(memorized) > 0)
    if len(memorized):
        with Image.open(report / "memorized.png") as grid:
            assert grid.format == "PNG"


def test_a_second_measure_reads_every_embedding_from_the_cache(measured, tiny_records, models):
    _, cache, _ = measured
    t, r = CountingEncoder(models["target"]), CountingEncoder(models["reference"])
    cfg = dataclasses.replace(CFG, tests=("image-two-model", "vlm-two-model", "utility"))
    again = measure(Models(t, r, t, r), tiny_records, cfg, cache_dir=cache, progress=False)
    assert (t.image_calls, r.image_calls, t.text_calls, r.text_calls) == (0, 0, 0, 0)
    first, _, _ = measured
    shared = first[first.test.isin(cfg.tests)].reset_index(drop=True)
    pd.testing.assert_frame_equal(again, shared)


def test_without_a_reference_only_one_model_tests_run(tiny_records, models):
    cfg = dataclasses.replace(CFG, tests=("image-two-model", "image-one-model-nb", "vlm-two-model"))
    rows = measure(Models(models["target"]), tiny_records, cfg, progress=False)
    assert set(rows.test) == {"image-one-model-nb"}
    assert "agreement" not in set(rows.metric)  # there is no model B to agree with
    assert "dv_gap@100" in set(rows.metric)


def test_k_larger_than_the_public_set_is_a_clear_error(tiny_records, models):
    cfg = dataclasses.replace(CFG, tests=("image-two-model",), settings={"image-two-model": ImageTestConfig(k=1000)})
    with pytest.raises(ValueError, match="k=1000 exceeds the public set size 64"):
        measure(Models(models["target"], models["reference"]), tiny_records, cfg, progress=False)


def test_unknown_test_is_a_clear_error(tiny_records, models):
    with pytest.raises(ValueError, match=r"unknown tests \['image'\]"):
        measure(Models(models["target"]), tiny_records, dataclasses.replace(CFG, tests=("image",)))


def test_nan_embeddings_name_the_first_record(tiny_records, models):
    cfg = dataclasses.replace(CFG, tests=("image-two-model",))
    first_public = next(r for r in tiny_records if r.split == "public")
    with pytest.raises(ValueError, match=rf"NaN/Inf image embeddings, first for record '{first_public.id}'"):
        measure(Models(NaNEncoder(models["target"]), models["reference"]), tiny_records, cfg, progress=False)


def test_public_record_without_label_is_named_with_its_file(tiny_records, models):
    victim = [r for r in tiny_records if r.split == "public"][3]
    broken = RecordSet([dataclasses.replace(r, label=None) if r.id == victim.id else r for r in tiny_records])
    cfg = dataclasses.replace(CFG, tests=("image-two-model",))
    with pytest.raises(RecordError, match=rf"record '{victim.id}', file .*manifest.jsonl.*has no label"):
        measure(Models(models["target"], models["reference"]), broken, cfg, progress=False)


def test_records_without_a_label_are_counted_by_utility(tiny_records, models):
    victim = [r for r in tiny_records if r.split == "eval"][0]
    changed: list[Record] = [dataclasses.replace(r, label=None) if r.id == victim.id else r for r in tiny_records]
    rows = measure(Models(models["target"]), RecordSet(changed), dataclasses.replace(CFG, tests=("utility",)),
                   progress=False)
    counted = rows[rows.metric == "excluded_no-label"]
    assert counted.value.tolist() == [1.0]
    assert rows[rows.metric == "linear_probe_top1"].n.tolist() == [31]


def test_utility_rows_carry_bootstrap_intervals(tiny_records, models):
    rows = measure(Models(models["target"]), tiny_records, dataclasses.replace(CFG, tests=("utility",)),
                   progress=False)
    probe = rows[rows.metric == "linear_probe_top1"].iloc[0]
    assert 0.0 <= probe.ci_low <= probe.value <= probe.ci_high <= 1.0
    assert probe.ci_high - probe.ci_low > 0  # 32 eval items cannot pin an accuracy down
