"""Presets: every shipped preset loads, overrides are typed, and bad names fail with the valid list."""

from __future__ import annotations

import json

import pytest

from bench.presets import PresetError, apply_override, available_presets, load_preset
from bench.recipes import RECIPES
from bench.recipes.config import TrainConfig
from dejavu.data.scenes import PRESETS as SCENES_PRESETS
from dejavu.measure import MeasureConfig


def test_the_three_presets_ship_and_load_for_every_recipe():
    assert available_presets() == ["default", "paper", "smoke"]
    for name in available_presets():
        preset = load_preset(name)
        assert preset.name == name and preset.data.scenes in SCENES_PRESETS
        for recipe in RECIPES:
            plan = preset.plan(recipe)
            cfg = preset.train_config(recipe)
            assert plan.max_epochs == cfg.epochs
            assert plan.modality == ("image-text" if recipe == "clip" else "image")
            if recipe != "clip":
                assert len(cfg.projector_dims(recipe)) >= 2


def test_paper_preset_has_the_published_sizes():
    paper = load_preset("paper")
    assert paper.train.backbone == "resnet50" and paper.train.epochs == 1000
    assert paper.train.projector["vicreg"] == (8192, 8192, 8192)
    assert paper.train.projector["simclr"] == (2048, 128)
    assert paper.train.projector["byol"] == (4096, 256)
    assert paper.train_config("clip").clip_model == "ViT-B-32"
    assert paper.train_config("clip").optimizer == "adamw" and paper.train_config("vicreg").optimizer == "lars"


def test_overrides_are_read_as_the_field_type():
    p = load_preset("smoke", ["train.epochs=5", "train.lr=0.5", "train.crop_scale=[0.05, 1]",
                              "train.devices=auto", "train.limit_train_batches=0.25",
                              "train.projector.vicreg=[16,16,8]", "measure.knn_metric=cosine",
                              "measure.threshold_fraction=0.3", "data.params.n_classes=6", "data.per_class=7",
                              "train_by_recipe.clip.epochs=2"])
    assert p.train.epochs == 5 and isinstance(p.train.epochs, int)
    assert p.train.lr == 0.5 and p.train.crop_scale == (0.05, 1.0)
    assert p.train.devices == "auto" and p.train.limit_train_batches == 0.25
    assert p.train.projector["vicreg"] == (16, 16, 8)
    assert p.train.projector["simclr"] == load_preset("smoke").train.projector["simclr"]  # others untouched
    assert p.measure.knn_metric == "cosine" and p.measure.threshold_fraction == 0.3
    assert p.data.params == {"n_classes": 6} and p.data.per_class == 7
    assert p.train_config("clip").epochs == 2 and p.train_config("vicreg").epochs == 5
    assert p.plan("clip").max_epochs == 2


def test_measure_by_recipe_overrides_one_recipes_measurement_only():
    p = load_preset("smoke", ["measure_by_recipe.simclr.k=7", "measure.vlm_k=3"])
    assert p.measure_section("simclr").k == 7 and p.measure_section("simclr").vlm_k == 3
    assert p.measure_section("clip").k == p.measure.k == 10
    with pytest.raises(PresetError, match="unknown field measure_by_recipe.simclr.kk"):
        load_preset("smoke", ["measure_by_recipe.simclr.kk=7"])
    with pytest.raises(PresetError, match="unknown recipe 'dino'"):
        load_preset("smoke", ["measure_by_recipe.dino.k=7"])


def test_data_by_recipe_plants_one_recipes_canaries_on_the_same_build(tmp_path):
    from bench.run import load_preset_dataset

    p = load_preset("smoke", ["data_by_recipe.simclr.canaries=3", "data_by_recipe.simclr.canary_repeat=7"])
    assert p.data_section("simclr").canaries == 3 and p.data_section("clip") == p.data
    with pytest.raises(PresetError, match="unknown field data_by_recipe.simclr.canary"):
        load_preset("smoke", ["data_by_recipe.simclr.canary=3"])
    own = load_preset_dataset("scenes", p.data_section("clip"), tmp_path)
    planted = load_preset_dataset("scenes", p.data_section("simclr"), tmp_path)
    assert sorted(r.repeat for r in planted if r.is_canary) == [7, 7, 7]
    assert [r.id for r in own] == [r.id for r in planted] and own.fingerprint() != planted.fingerprint()


def test_view_kwargs_reach_lightlys_view_transform():
    from bench.recipes import build_recipe
    from bench.recipes.views import GaussianBlur, batched_views

    p = load_preset("smoke", ['train.view_kwargs={"cj_strength": 0.5, "gaussian_blur": 0.0}'])
    module = build_recipe("simclr", p.train_config("simclr"), [], (0.2, 1.0))
    jitter = module.train_transform().transforms[0].transform.transforms[4].transforms[0]
    assert jitter.brightness == pytest.approx((0.6, 1.4))  # lightly's 0.8 at half strength
    assert not any(isinstance(op, GaussianBlur) for view in batched_views(module.train_transform())
                   for op in view.ops)
    assert TrainConfig.from_dict(p.train.as_dict()) == p.train


@pytest.mark.parametrize("override, message", [
    ("train.epoch=5", "valid fields: backbone, image_size, epochs"),
    ("train.epochs=five", "'five' is not of type int"),
    ("train.epochs=1.5", "is not of type int"),
    ("train.crop_scale=[0.1]", "expected 2 values"),
    ("measure.knn_metric=manhattan", "'l2' or 'cosine'"),
    ("measure.n_bootstrap=50", ">= 200"),
    ("measure.tests=[\"image-magic\"]", "unknown test 'image-magic'"),
    ("data.params.n_class=4", "valid fields: n_classes"),
    ("model.width=3", "section one of data, train, measure"),
    ("train_by_recipe.dino.lr=1", "unknown recipe 'dino'"),
    ("train.epochs", "section.field=value"),
    ("measure.crop_arch=resnet9000", "unknown crop-classifier arch 'resnet9000'"),
    ("measure.nb_smoothing=add-one", "'epsilon' or 'laplace'"),
    ("measure.pvalue_p=0", "a number in (0, 1]"),
    ("measure.vlm_top_t=[0]", ">= 1"),
])
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(PresetError, match=message.replace("[", r"\[").replace("(", r"\(")):
        apply_override(load_preset("smoke"), override)


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(PresetError, match="default, paper, smoke"):
        load_preset("huge")


def test_a_preset_file_path_loads_and_unknown_json_fields_fail(tmp_path):
    good = tmp_path / "mine.json"
    good.write_text(json.dumps({"train": {"epochs": 2}, "measure": {"k": 7}}))
    p = load_preset(good)
    assert p.name == "mine" and p.train.epochs == 2 and p.measure.k == 7
    assert p.train.backbone == TrainConfig().backbone  # unset fields keep their defaults
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"epochz": 2}}))
    with pytest.raises(PresetError, match="unknown field train.epochz"):
        load_preset(bad)


@pytest.mark.parametrize("name", ["smoke", "default", "paper"])
def test_measure_section_is_what_the_measurement_library_reads(name):
    measure = load_preset(name).measure
    cfg = MeasureConfig.from_dict(measure.as_dict())
    assert (cfg.image.k, cfg.vlm.k, cfg.crop_rule, cfg.probe_epochs) == (measure.k, measure.vlm_k,
                                                                        measure.crop_rule, measure.probe_epochs)


def test_to_dict_round_trips_through_json():
    p = load_preset("paper")
    assert json.loads(json.dumps(p.to_dict()))["train"]["projector"]["byol"] == [4096, 256]


def test_every_knob_of_the_measurement_is_settable_from_a_preset():
    p = load_preset("smoke", ["measure.seed=7", "measure.pvalue_p=0.05", "measure.nb_smoothing=laplace",
                              "measure.nb_normalize=false", "measure.crop_arch=resnet18", "measure.vlm_top_t=[1, 5]"])
    cfg = MeasureConfig.from_dict(p.measure.as_dict())
    assert cfg.image.stats.seed == cfg.one_model.stats.seed == cfg.vlm.stats.seed == cfg.one_model.seed == 7
    assert cfg.image.pvalue_p == cfg.one_model.pvalue_p == 0.05
    assert (cfg.one_model.nb_smoothing, cfg.one_model.nb_normalize, cfg.one_model.crop_arch) == ("laplace", False,
                                                                                                 "resnet18")
    assert cfg.vlm.top_t == (1, 5)
    defaults = MeasureConfig.from_dict(load_preset("smoke").measure.as_dict())
    assert (defaults.one_model, defaults.vlm.top_t) == (MeasureConfig().one_model.__class__(
        crop_epochs=defaults.one_model.crop_epochs, crop_image_size=defaults.one_model.crop_image_size,
        stats=defaults.one_model.stats, top_p=defaults.one_model.top_p), (1, 10))  # the library's own defaults
