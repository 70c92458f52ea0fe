"""Presets: every shipped preset loads, overrides are typed, and bad names fail with the valid list."""

from __future__ import annotations

import json

import pytest

from bench.presets import PresetError, apply_override, available_presets, load_preset
from bench.recipes import RECIPES
from bench.recipes.config import TrainConfig
from bench.run import training_plan
from dejavu.attacks.one_model import NaiveBayesConfig
from dejavu.attacks.vlm import VLMTestConfig
from dejavu.data.scenes import PRESETS as SCENES_PRESETS
from dejavu.measurements import available_tests
from dejavu.results import TESTS


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
                              "train_by_recipe.vicreg.projector=[16,16,8]", "measure.image-two-model.metric=cosine",
                              "measure.crops.threshold_fraction=0.3", "data.params.n_classes=6", "data.per_class=7",
                              "train_by_recipe.clip.epochs=2", "train_by_recipe.simclr.temperature=0.2"])
    assert p.train.epochs == 5 and isinstance(p.train.epochs, int)
    assert p.train.lr == 0.5 and p.recipe_config("vicreg").crop_scale == (0.05, 1.0)
    assert p.train.devices == "auto" and p.train.limit_train_batches == 0.25
    assert p.recipe_config("vicreg").projector == (16, 16, 8)
    assert p.recipe_config("simclr").projector == load_preset("smoke").recipe_config("simclr").projector  # untouched
    assert p.recipe_config("simclr").temperature == 0.2 and isinstance(p.recipe_config("simclr").temperature, float)
    assert p.measure.section("image-two-model").metric == "cosine" and p.measure.crops.threshold_fraction == 0.3
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
    p = load_preset("smoke", ["measure_by_recipe.simclr.image-two-model.k=7", "measure.vlm-two-model.k=3"])
    assert p.measure_section("simclr").section("image-two-model").k == 7
    assert p.measure_section("simclr").section("vlm-two-model").k == 3
    assert p.measure_section("clip").section("image-two-model").k == p.measure.section("image-two-model").k == 10
    with pytest.raises(PresetError, match="unknown field measure_by_recipe.simclr.image-two-model.kk; valid fields: "
                                          "k, metric"):
        load_preset("smoke", ["measure_by_recipe.simclr.image-two-model.kk=7"])
    with pytest.raises(PresetError, match="unknown field measure_by_recipe.simclr.k; valid fields: tests, stats"):
        load_preset("smoke", ["measure_by_recipe.simclr.k=7"])  # the flat spelling of before: a clear error
    with pytest.raises(PresetError, match="unknown recipe 'dino'"):
        load_preset("smoke", ["measure_by_recipe.dino.image-two-model.k=7"])


def test_measure_by_recipe_merges_field_by_field():
    p = load_preset("default", ["measure_by_recipe.simclr.image-two-model.metric=cosine",
                                "measure_by_recipe.simclr.stats.seed=3", "measure.image-two-model.pvalue_p=0.05"])
    simclr = p.measure_section("simclr").section("image-two-model")
    assert (simclr.k, simclr.metric, simclr.pvalue_p) == (20, "cosine", 0.05)  # the preset's k=20 kept
    assert p.measure_by_recipe["simclr"] == {"image-two-model": {"k": 20, "metric": "cosine"}, "stats": {"seed": 3}}
    assert p.measure_section("simclr").stats.seed == 3 and p.measure_section("vicreg").stats.seed == 0
    clip = p.measure_section("clip").section("image-two-model")
    assert (clip.k, clip.metric, clip.pvalue_p) == (100, "l2", 0.05)
    tests = load_preset("smoke", ['measure_by_recipe.clip.tests=["vlm-two-model"]'])
    assert tests.measure_section("clip").tests == ("vlm-two-model",) and tests.measure_section("simclr").tests == TESTS


def test_a_presets_measure_by_recipe_is_checked_when_read(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"measure_by_recipe": {"simclr": {"image-two-model": {"k": 0}}}}))
    with pytest.raises(PresetError, match="measure_by_recipe.simclr.image-two-model.k must be an integer >= 1, got 0"):
        load_preset(path)
    path.write_text(json.dumps({"measure": {"image-two-model": {"k": 7}},
                                "measure_by_recipe": {"simclr": {"image-two-model": {"metric": "cosine"}}}}))
    simclr = load_preset(path).measure_section("simclr").section("image-two-model")
    assert (simclr.k, simclr.metric) == (7, "cosine")


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
    ("measure.image-two-model.metric=manhattan", "one of 'l2', 'cosine'"),
    ("measure.stats.n_bootstrap=50", "measure.stats.n_bootstrap must be an integer >= 200"),
    ("measure.tests=[\"image-magic\"]", "unknown test 'image-magic'"),
    ("measure.tests=[]", "measure.tests must be a non-empty list"),
    ("measure.crops.rule=largest", "measure.crops.rule must be one of 'slab', 'max-empty', 'corner'"),
    ("measure.image-two-model.index_params.nprobe=8", "measure.image-two-model: index settings ['nprobe'] apply to "
                                                      "an approximate index"),
    ("measure.stats.n_bootstrap.x=1", "measure.stats.n_bootstrap is not a dict"),
    ("measure.image-two-model.k.x.y=1", "expected measure.tests=..."),
    ("data.params.n_class=4", "valid fields: n_classes"),
    ("model.width=3", "section one of data, train, measure"),
    ("train_by_recipe.dino.lr=1", "unknown recipe 'dino'"),
    ("train.epochs", "section.field=value"),
    ("measure.image-one-model-crop.arch=resnet9000", "'small-cnn' or a torchvision classification model name"),
    ("measure.image-one-model-nb.smoothing=add-one", "one of 'epsilon', 'laplace'"),
    ("measure.image-two-model.pvalue_p=0", "a number in (0, 1]"),
    ("measure.vlm-two-model.top_t=[0]", ">= 1"),
    ("measure.vlm-two-model.index=i2i", "one of 't2i', 't2t'"),
    ("measure.utility.zero_shot_templates=[\"a photo\"]", "a prompt with a {} for the class name"),
    ("measure.image-reconstruction.sampling_steps=2000", "measure.image-reconstruction: sampling_steps must be"),
])
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(PresetError, match=message.replace("[", r"\[").replace("(", r"\(")):
        apply_override(load_preset("smoke"), override)


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(PresetError, match="default, paper, smoke"):
        load_preset("huge")


def test_a_preset_file_path_loads_and_unknown_json_fields_fail(tmp_path):
    good = tmp_path / "mine.json"
    good.write_text(json.dumps({"train": {"epochs": 2}, "measure": {"image-two-model": {"k": 7}}}))
    p = load_preset(good)
    assert p.name == "mine" and p.train.epochs == 2 and p.measure.section("image-two-model").k == 7
    assert p.train.backbone == TrainConfig().backbone  # unset fields keep their defaults
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"epochz": 2}}))
    with pytest.raises(PresetError, match="unknown field train.epochz"):
        load_preset(bad)


def test_to_dict_round_trips_through_json():
    p = load_preset("paper")
    assert json.loads(json.dumps(p.to_dict()))["train_by_recipe"]["clip"]["model"] == "ViT-B-32"


def test_every_knob_of_the_measurement_is_settable_from_a_preset():
    p = load_preset("smoke", ["measure.stats.seed=7", "measure.image-two-model.pvalue_p=0.05",
                              "measure.image-one-model-nb.smoothing=laplace", "measure.image-one-model-nb.normalize=false",
                              "measure.image-one-model-crop.arch=resnet18", "measure.vlm-two-model.top_t=[1, 5]",
                              "measure.image-reconstruction.train_steps=20"])
    tests = available_tests()
    image, nb, crop, vlm = (p.measure.settings_of(tests[name]) for name in (
        "image-two-model", "image-one-model-nb", "image-one-model-crop", "vlm-two-model"))
    assert image.stats.seed == crop.stats.seed == vlm.stats.seed == p.measure.stats.seed == 7  # one shared group
    assert image.pvalue_p == 0.05  # the one-model image tests report at the attack's levels (they read it)
    assert (nb.smoothing, nb.normalize, crop.arch, vlm.top_t) == ("laplace", False, "resnet18", (1, 5))
    assert p.measure.section("image-reconstruction").train_steps == 20
    defaults = load_preset("smoke").measure
    assert defaults.settings_of(tests["image-one-model-nb"]) == NaiveBayesConfig()  # the Config's own defaults
    assert defaults.section("vlm-two-model").top_t == VLMTestConfig().top_t == (1, 10)


def test_resolved_changes_are_only_the_settings_that_differ_from_their_defaults_nested_per_group():
    p = load_preset("default", ["measure.stats.seed=0"])  # a setting at its default: as if unset
    assert p.resolved_changes("simclr")["measure"] == {
        "stats": {"n_permutations": 200}, "image-two-model": {"k": 20}, "vlm-two-model": {"k": 5},
        "utility": {"probe_epochs": 10}}  # the crop classifier's epochs=10, image_size=32 are its defaults
    assert "image-two-model" not in p.resolved_changes("clip")["measure"]  # CLIP's k=100 is the default
    assert p.resolved("simclr")["measure"]["image-two-model"]["k"] == 20  # the run record: every setting
    assert p.resolved("simclr")["measure"]["image-one-model-nb"] == {"smoothing": "epsilon", "normalize": True}
