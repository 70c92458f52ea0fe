"""The measurement's settings: one typed loader over a section nested by owner; each knob of before has one home."""

from __future__ import annotations

import pytest

from dejavu.attacks.common import StatsConfig
from dejavu.attacks.image import ImageTestConfig
from dejavu.config import ConfigError
from dejavu.knn import ApproximateIndex
from dejavu.measure import MeasureConfig
from dejavu.measurements import available_tests

TESTS = available_tests()

#: every knob of the flat measure section of before -> where it lives now, a value other than its
#: default, and what the test that reads it gets (test name, attribute path of its filled Config)
FLAT_KNOBS = {
    "k": ("image-two-model", "k", 7, [("image-one-model-nb", "image-two-model", "k")]),
    "knn_metric": ("image-two-model", "metric", "cosine", []),
    "knn_index": ("image-two-model", "index", "hnsw", []),
    "top_p": ("image-two-model", "top_p", [0.5, 1.0], []),
    "pvalue_p": ("image-two-model", "pvalue_p", 0.05, []),
    "vlm_k": ("vlm-two-model", "k", 3, [("vlm-one-model-text", "vlm-two-model", "k")]),
    "vlm_index": ("vlm-two-model", "index", "t2t", []),
    "vlm_top_t": ("vlm-two-model", "top_t", [1, 5], []),
    "crop_rule": ("crops", "rule", "max-empty", []),
    "threshold_fraction": ("crops", "threshold_fraction", 0.3, []),
    "n_bootstrap": ("stats", "n_bootstrap", 300, [("image-two-model", "image-two-model", "stats.n_bootstrap"),
                                                 ("vlm-two-model", "vlm-two-model", "stats.n_bootstrap")]),
    "n_permutations": ("stats", "n_permutations", 50, [("image-two-model", "image-two-model", "stats.n_permutations")]),
    "seed": ("stats", "seed", 3, [("image-one-model-crop", "image-one-model-crop", "stats.seed"),
                                  ("vlm-two-model", "vlm-two-model", "stats.seed")]),
    "crop_epochs": ("image-one-model-crop", "epochs", 2, []),
    "crop_image_size": ("image-one-model-crop", "image_size", 64, []),
    "crop_arch": ("image-one-model-crop", "arch", "resnet18", []),
    "nb_smoothing": ("image-one-model-nb", "smoothing", "laplace", []),
    "nb_normalize": ("image-one-model-nb", "normalize", False, []),
    "probe_epochs": ("utility", "probe_epochs", 3, []),
}


def attr(obj, path: str):
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


@pytest.mark.parametrize("knob", sorted(FLAT_KNOBS))
def test_every_knob_of_the_flat_section_has_one_home_and_reaches_every_test_that_reads_it(knob):
    section, name, value, readers = FLAT_KNOBS[knob]
    cfg = MeasureConfig.from_dict({section: {name: value}})
    got = cfg.section(section) if section in ("stats", "crops") else cfg.settings_of(TESTS[section])
    expected = tuple(value) if isinstance(value, list) else value
    assert getattr(got, name) == expected != getattr(MeasureConfig().section(section), name)
    for _reader, owner, path in readers:  # the tests that read it see the same value
        assert attr(cfg.section(owner), path) == expected
    assert cfg.changes() == {section: {name: value}}


def test_the_sections_read_their_types_and_the_rest_keeps_its_defaults():
    cfg = MeasureConfig.from_dict({"tests": ["image-two-model"], "image-two-model": {
        "index": "ivf", "index_params": {"nprobe": 8}, "top_p": [0.2]}})
    image = cfg.section("image-two-model")
    assert cfg.tests == ("image-two-model",) and image.top_p == (0.2,) and image.k == ImageTestConfig().k
    assert image.search_index == ApproximateIndex("ivf", nprobe=8)
    again = MeasureConfig.from_dict({"image-two-model": {"k": 5}}, base=cfg)  # merged into a base, per field
    assert (again.section("image-two-model").k, again.section("image-two-model").top_p, again.tests) == (
        5, (0.2,), ("image-two-model",))
    assert MeasureConfig.from_dict(cfg.as_dict()).as_dict() == cfg.as_dict()  # a run record reads back as itself


@pytest.mark.parametrize("section, message", [
    ({"image-two-model": {"kk": 1}}, "unknown field measure.image-two-model.kk; valid fields: k, metric, index"),
    ({"image-two-model": {"stats": {}}}, "unknown field measure.image-two-model.stats"),  # shared: set in stats
    ({"vlm-one-model-text": {"k": 1}}, "measure.vlm-one-model-text: test 'vlm-one-model-text' has no settings of "
                                       r"its own \(it reads the rest from measure.vlm-two-model\)"),
    ({"utility": {"batch_size": 64}}, "unknown field measure.utility.batch_size; valid fields: probe_epochs, "
                                      r"zero_shot_templates \(it reads the rest from measure.image-two-model\)"),
    ({"nope": {}}, "unknown field measure.nope; valid fields: tests, stats, crops, image-two-model"),
    ({"tests": ["nope"]}, "measure.tests: unknown test 'nope'; valid: image-two-model"),
    ({"stats": {"n_bootstrap": 100}}, "measure.stats.n_bootstrap must be an integer >= 200, got 100"),
    ({"stats": {"seed": "one"}}, "measure.stats.seed: 'one' is not of type int"),
    ({"utility": []}, r"measure.utility must be a JSON object, got \[\]"),
])
def test_a_bad_section_names_the_field_and_lists_the_valid_ones(section, message):
    with pytest.raises(ConfigError, match=message):
        MeasureConfig.from_dict(section)


def test_a_library_user_builds_it_from_python_and_the_shared_groups_fill_each_config():
    cfg = MeasureConfig(stats=StatsConfig(n_bootstrap=50), settings={"image-two-model": ImageTestConfig(k=5)})
    image = cfg.settings_of(TESTS["image-two-model"])
    assert (image.k, image.stats.n_bootstrap) == (5, 50)  # the measurement's stats, not the Config's default
    assert cfg.settings_of(TESTS["vlm-two-model"]).stats.n_bootstrap == 50
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):  # the Config checks itself
        ImageTestConfig(k=0)
