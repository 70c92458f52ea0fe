"""Measurement tests as registered plugins: found by entry point, selected by name, skipped by need."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

import dejavu.crops as crops_module
import dejavu.plugins
from bench.presets import PresetError, load_preset
from dejavu import measurements
from dejavu.attacks.common import StatsConfig
from dejavu.attacks.image import ImageTestConfig
from dejavu.attacks.one_model import CropClassifierConfig
from dejavu.encoders import TINY_CLIP_CONFIG, OpenClipEncoder
from dejavu.measure import MeasureConfig, Models, measure
from dejavu.measurements import BUILTINS, MeasurementTest, available_tests, get_tests
from dejavu.measurements import image as image_tests
from dejavu.results import TESTS, Row
from dejavu.rules import at_least

CFG = MeasureConfig(stats=StatsConfig(n_bootstrap=50, n_permutations=50), settings={"image-two-model": ImageTestConfig(k=5)})


class CountCanaries(MeasurementTest):
    """A third party's test: counts the canaries among the records."""

    name = "count-canaries"

    def run(self, ctx):
        n = sum(r.is_canary for r in ctx.records)
        return [Row(self.name, "canary", "count", float(n), n=n)]


class FakeEntryPoint:
    """Stands for an installed package's entry point (importlib.metadata.EntryPoint)."""

    def __init__(self, name, target):
        self.name, self.value, self._target = name, f"plugin:{name}", target

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


@pytest.fixture
def plugins(monkeypatch):
    """Returns a list; the entry points appended to it are what `available_tests` finds installed."""
    installed: list[FakeEntryPoint] = []
    monkeypatch.setattr(dejavu.plugins.metadata, "entry_points",
                        lambda group: installed if group == measurements.ENTRY_POINT_GROUP else [])
    return installed


def test_the_builtins_are_the_results_tests_in_run_order():
    assert tuple(BUILTINS)[:len(TESTS)] == TESTS
    assert tuple(BUILTINS)[len(TESTS):] == ("image-reconstruction",)  # opt-in: not in the default list
    assert [t.name for t in get_tests(list(reversed(TESTS)))] == list(TESTS)  # registry order, not the list's


def test_a_plugin_test_runs_when_named_and_a_preset_may_name_it(plugins, tiny_records):
    plugins.append(FakeEntryPoint("count-canaries", CountCanaries))
    assert list(available_tests()) == [*BUILTINS, "count-canaries"]
    rows = measure(Models(target=None), tiny_records, dataclasses.replace(CFG, tests=("count-canaries",)))
    assert rows[["test", "subset", "metric", "value", "n"]].to_dict("records") == [
        {"test": "count-canaries", "subset": "canary", "metric": "count", "value": 4.0, "n": 4}]
    assert rows[["ci_low", "ci_high"]].isna().all().all()
    preset = load_preset("smoke", ['measure.tests=["count-canaries", "utility"]'])
    assert preset.measure.tests == ("count-canaries", "utility")


def test_an_unknown_test_names_the_known_ones(plugins):
    with pytest.raises(ValueError, match=r"unknown tests \['nope'\]; choose from image-two-model, .*utility"):
        get_tests(["nope"])
    with pytest.raises(PresetError, match="unknown test 'nope'"):
        load_preset("smoke", ['measure.tests=["nope"]'])


def test_broken_or_misnamed_plugins_are_skipped_with_a_warning(plugins, caplog):
    class Impostor(CountCanaries):
        name = "image-two-model"

    plugins += [FakeEntryPoint("broken", ImportError("no module named plugin")),
                FakeEntryPoint("not-a-test", object), FakeEntryPoint("other-name", CountCanaries),
                FakeEntryPoint("image-two-model", Impostor)]
    with caplog.at_level(logging.WARNING, logger="dejavu.plugins"):
        assert available_tests() == BUILTINS
    assert len(caplog.records) == 4
    assert "no module named plugin" in caplog.text and "the name is taken" in caplog.text


def test_a_test_whose_needs_are_unmet_is_skipped_and_says_why(tiny_records, caplog):
    class NeedsText(CountCanaries):
        name = "utility"  # any registered name; only its needs matter here
        needs_text = True

    assert NeedsText().missing(Models(target=None)) == "the target has no text tower"
    assert image_tests.ImageTwoModelTest().missing(Models(target=None)) == "no reference model"
    torch.manual_seed(0)
    clip = OpenClipEncoder.from_config(TINY_CLIP_CONFIG, device="cpu")
    with caplog.at_level(logging.INFO, logger="dejavu.measure"):
        rows = measure(Models(clip), tiny_records, dataclasses.replace(CFG, tests=("image-two-model", "vlm-two-model")),
                       progress=False)
    assert rows.empty
    assert "no reference model, so image-two-model is skipped" in caplog.text
    assert "no reference vision-language model, so vlm-two-model is skipped" not in caplog.text
    assert "the target has no text tower, so vlm-two-model is skipped" in caplog.text


def test_the_image_tests_share_one_set_of_crops_and_one_attack(tiny_records, monkeypatch):
    calls = []
    real = crops_module.background_crops
    monkeypatch.setattr(crops_module, "background_crops", lambda records, *a, **kw: calls.append(len(records))
                        or real(records, *a, **kw))
    torch.manual_seed(0)
    target = OpenClipEncoder.from_config(TINY_CLIP_CONFIG, device="cpu")
    cfg = dataclasses.replace(CFG, tests=("image-one-model-nb", "image-one-model-crop"))
    cfg = dataclasses.replace(cfg, settings={**cfg.settings, "image-one-model-crop": CropClassifierConfig(epochs=1)})
    rows = measure(Models(target), tiny_records, cfg, progress=False)
    assert set(rows.test) == {"image-one-model-nb", "image-one-model-crop"}
    assert len(calls) == 2  # A and B's crops once, and the eval null's once: not once per test


@dataclasses.dataclass(frozen=True)
class ThresholdConfig:
    threshold: int = dataclasses.field(default=1, metadata=at_least(1))
    labels: tuple[str, ...] = ()


class CountAbove(CountCanaries):
    """A plugin test with settings of its own."""

    name = "count-above"
    Config = ThresholdConfig

    def run(self, ctx):
        threshold = self.settings(ctx).threshold
        n = sum(r.repeat >= threshold for r in ctx.records)
        return [Row(self.name, "all", f"repeat>={threshold}", float(n), n=n)]


def test_a_test_owns_its_settings_and_a_preset_sets_them_in_its_own_section(plugins, tiny_records):
    plugins.append(FakeEntryPoint("count-above", CountAbove))
    preset = load_preset("smoke", ['measure.tests=["count-above"]', "measure.count-above.threshold=2",
                                   'measure.count-above.labels=["cat"]'])
    assert preset.measure.settings["count-above"] == ThresholdConfig(threshold=2, labels=("cat",))  # read as typed
    rows = measure(Models(target=None), tiny_records, preset.measure)
    assert rows[["metric", "n"]].to_dict("records") == [{"metric": "repeat>=2", "n": 4}]  # the 4 canaries
    defaults = measure(Models(target=None), tiny_records, dataclasses.replace(preset.measure, settings={}))
    assert defaults.metric.tolist() == ["repeat>=1"] and defaults.n.tolist() == [len(tiny_records)]
    changes = preset.measure.changes()  # what a run id hashes
    assert (changes["tests"], changes["count-above"]) == (["count-above"], {"threshold": 2, "labels": ["cat"]})


def test_a_library_user_gives_a_tests_config_by_name(plugins, tiny_records):
    plugins.append(FakeEntryPoint("count-above", CountAbove))
    cfg = MeasureConfig(tests=("count-above",), settings={"count-above": ThresholdConfig(threshold=2)})
    assert measure(Models(target=None), tiny_records, cfg).metric.tolist() == ["repeat>=2"]
    with pytest.raises(TypeError, match="settings of 'count-above' must be a ThresholdConfig, got ImageTestConfig"):
        MeasureConfig(settings={"count-above": ImageTestConfig()})
    with pytest.raises(ValueError, match="settings of 'count-canaries': no registered test of that name has a Config"):
        MeasureConfig(settings={"count-canaries": ThresholdConfig()})


def test_bad_test_settings_are_refused_when_the_preset_is_read(plugins):
    plugins.append(FakeEntryPoint("count-above", CountAbove))
    with pytest.raises(PresetError, match=r"unknown field measure.count-above.limit; valid fields: threshold, labels"):
        load_preset("smoke", ["measure.count-above.limit=2"])
    with pytest.raises(PresetError, match=r"measure.count-above.threshold must be an integer >= 1, got 0"):
        load_preset("smoke", ["measure.count-above.threshold=0"])
    with pytest.raises(PresetError, match=r"unknown field measure.nope; valid fields: tests, stats, crops, "
                                          r"image-two-model, .*, count-above"):
        load_preset("smoke", ['measure.nope={"k": 1}'])
    plugins.append(FakeEntryPoint("count-canaries", CountCanaries))
    with pytest.raises(PresetError, match="measure.count-canaries: test 'count-canaries' has no settings of its own"):
        load_preset("smoke", ["measure.count-canaries.k=1"])
    with pytest.raises(PresetError, match=r"unknown field measure.image-one-model-nb.k; valid fields: smoothing, "
                                          r"normalize \(it reads the rest from measure.image-two-model\)"):
        load_preset("smoke", ["measure.image-one-model-nb.k=1"])
