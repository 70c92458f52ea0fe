"""Presets: every shipped preset loads, overrides are typed, and bad names fail with the valid list."""

from __future__ import annotations

import json

import pytest

from bench.presets import PresetError, apply_override, available_presets, load_preset
from bench.recipes import RECIPES
from bench.recipes.config import TrainConfig
from bench.run import training_plan
from dejavu.data.scenes import PRESETS as SCENES_PRESETS
from dejavu.measure import MeasureConfig


def test_the_three_presets_ship_and_load_for_every_recipe():
    assert available_presets() == ["default", "paper", "smoke"]
    for name in available_presets():
        preset = load_preset(name)
        assert preset.name == name and preset.data.scenes in SCENES_PRESETS
        for recipe in RECIPES:
            cfg, own = preset.train_config(recipe), preset.recipe_config(recipe)
            plan = training_plan(recipe, cfg, own)
            assert plan.max_epochs == cfg.epochs and plan.crop_scale == own.crop_scale
            assert plan.modality == ("image-text" if recipe == "clip" else "image")
            assert isinstance(own, RECIPES[recipe].Config)
            if recipe != "clip":
                assert len(own.projector) >= 2


def test_paper_preset_has_the_published_sizes():
    paper = load_preset("paper")
    assert paper.train.backbone == "resnet50" and paper.train.epochs == 1000
    assert paper.recipe_config("vicreg").projector == (8192, 8192, 8192)
    assert paper.recipe_config("simclr").projector == (2048, 128)
    assert paper.recipe_config("byol").projector == (4096, 256)
    assert paper.recipe_config("supervised").projector == (2048, 128)
    assert {paper.recipe_config(r).crop_scale for r in RECIPES if r != "clip"} == {(0.08, 1.0)}
    assert paper.recipe_config("clip").model == "ViT-B-32" and paper.recipe_config("clip").crop_scale == (0.9, 1.0)
    assert paper.train_config("clip").optimizer == "adamw" and paper.train_config("vicreg").optimizer == "lars"


def test_default_preset_sets_each_recipes_own_design():
    default = load_preset("default")
    assert [default.recipe_config(r).projector for r in ("vicreg", "simclr", "barlowtwins", "byol", "supervised")] == [
        (512, 512, 512), (512, 128), (512, 512, 512), (512, 128), (256, 128)]
    assert default.recipe_config("simclr").view_kwargs == {"cj_strength": 0.5, "gaussian_blur": 0.0}
    assert default.recipe_config("simclr").temperature == 0.1 and default.recipe_config("clip").model == "tiny"
    assert default.train_config("vicreg").epochs == 250 and default.train_config("clip").epochs == default.train.epochs


def test_overrides_are_read_as_the_field_type():
    p = load_preset("smoke", ["train.epochs=5", "train.lr=0.5", "train_by_recipe.vicreg.crop_scale=[0.05, 1]",
                              "train.devices=auto", "train.limit_train_batches=0.25",
                              "train_by_recipe.vicreg.projector=[16,16,8]", "measure.knn_metric=cosine",
                              "measure.threshold_fraction=0.3", "data.params.n_classes=6", "data.per_class=7",
                              "train_by_recipe.clip.epochs=2", "train_by_recipe.simclr.temperature=0.2"])
    assert p.train.epochs == 5 and isinstance(p.train.epochs, int)
    assert p.train.lr == 0.5 and p.recipe_config("vicreg").crop_scale == (0.05, 1.0)
    assert p.train.devices == "auto" and p.train.limit_train_batches == 0.25
    assert p.recipe_config("vicreg").projector == (16, 16, 8)
    assert p.recipe_config("simclr").projector == load_preset("smoke").recipe_config("simclr").projector  # untouched
    assert p.recipe_config("simclr").temperature == 0.2 and isinstance(p.recipe_config("simclr").temperature, float)
    assert p.measure.knn_metric == "cosine" and p.measure.threshold_fraction == 0.3
    assert p.data.params == {"n_classes": 6} and p.data.per_class == 7
    assert p.train_config("clip").epochs == 2 and p.train_config("vicreg").epochs == 5


def test_train_by_recipe_sets_shared_and_own_fields_side_by_side(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"train": {"epochs": 3}, "train_by_recipe": {
        "simclr": {"epochs": 150, "projector": [512, 128], "view_kwargs": {"cj_strength": 0.5}}}}))
    p = load_preset(path)
    assert p.train_config("simclr") == TrainConfig(epochs=150)
    assert p.recipe_config("simclr") == RECIPES["simclr"].Config(projector=(512, 128), view_kwargs={"cj_strength": 0.5})
    assert p.train_config("vicreg").epochs == 3 and p.recipe_config("vicreg") == RECIPES["vicreg"].Config()
    resolved = p.resolved("simclr")["train"]
    assert resolved["epochs"] == 150 and resolved["projector"] == [512, 128] and resolved["temperature"] == 0.1


def test_resolved_changes_compare_own_fields_with_the_recipes_defaults():
    p = load_preset("smoke", ["train_by_recipe.simclr.temperature=0.2", "train_by_recipe.vicreg.invariance=25"])
    simclr, vicreg = p.resolved_changes("simclr")["train"], p.resolved_changes("vicreg")["train"]
    assert simclr["temperature"] == 0.2 and simclr["projector"] == [64, 32] and "crop_scale" not in simclr
    assert "invariance" not in vicreg and "temperature" not in vicreg  # at its default; another recipe's field
    assert "crop_scale" not in p.resolved_changes("clip")["train"]  # CLIP's own (0.9, 1.0) is its default


@pytest.mark.parametrize("override, message", [
    ("train_by_recipe.simclr.tau=0.2", "unknown field train_by_recipe.simclr.tau; valid fields: backbone, "),
    ("train_by_recipe.simclr.tau=0.2", "log_every_n_steps, crop_scale, projector, view_kwargs, temperature"),
    ("train_by_recipe.vicreg.temperature=0.2", "unknown field train_by_recipe.vicreg.temperature"),
    ("train_by_recipe.simclr.temperature=0", "train_by_recipe.simclr.temperature must be a finite number > 0"),
    ("train_by_recipe.simclr.projector=[0]", "train_by_recipe.simclr.projector must be a non-empty list"),
    ("train_by_recipe.clip.model=nope", "train_by_recipe.clip.model must be 'tiny' or an open_clip architecture"),
    ("train_by_recipe.byol.momentum=[0.9]", "expected 2 values"),
    ("train.temperature=0.2", "train.temperature is no longer shared: each recipe owns it; set it per recipe, "
                              "as train_by_recipe.simclr.temperature"),
    ("train.projector.vicreg=[8,8]", "as train_by_recipe.vicreg.projector, train_by_recipe.simclr.projector"),
    ("train.clip_crop_scale=[1,1]", "as train_by_recipe.clip.crop_scale"),
])
def test_bad_train_by_recipe_fields_name_the_recipe_and_the_valid_ones(override, message):
    with pytest.raises(PresetError, match=message.replace("[", r"\[").replace("(", r"\(")):
        apply_override(load_preset("smoke"), override)


def test_a_preset_file_of_the_flat_train_section_says_where_its_fields_went(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"train": {"epochs": 2, "vicreg_invariance": 10.0}}))
    with pytest.raises(PresetError, match=r"train.vicreg_invariance is no longer shared.*"
                                          r"train_by_recipe.vicreg.invariance \(in preset file"):
        load_preset(old)


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

    p = load_preset("smoke", ['train_by_recipe.simclr.view_kwargs={"cj_strength": 0.5, "gaussian_blur": 0.0}'])
    module = build_recipe("simclr", p.train_config("simclr"), p.recipe_config("simclr"), [], (0.2, 1.0))
    jitter = module.train_transform().transforms[0].transform.transforms[4].transforms[0]
    assert jitter.brightness == pytest.approx((0.6, 1.4))  # lightly's 0.8 at half strength
    assert not any(isinstance(op, GaussianBlur) for view in batched_views(module.train_transform())
                   for op in view.ops)
    assert TrainConfig.from_dict(p.train.as_dict()) == p.train
    own = p.recipe_config("simclr")
    assert type(own).from_dict(own.as_dict()) == own


@pytest.mark.parametrize("override, message", [
    ("train.epoch=5", "valid fields: backbone, image_size, epochs"),
    ("train.epochs=five", "'five' is not of type int"),
    ("train.epochs=1.5", "is not of type int"),
    ("train_by_recipe.simclr.crop_scale=[0.1]", "expected 2 values"),
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
    assert json.loads(json.dumps(p.to_dict()))["train_by_recipe"]["clip"]["model"] == "ViT-B-32"


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
