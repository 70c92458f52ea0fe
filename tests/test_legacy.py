"""The flat TrainConfig of earlier releases: its cache keys reproduced exactly, its records read in today's form."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pytest

from bench.presets import load_preset
from bench.recipes import RECIPES, legacy
from bench.recipes.config import TrainConfig
from bench.recipes.ssl import SimCLR, SimCLRConfig

#: sha256 of the flat `TrainConfig.as_dict()` that release 3df7a09 keyed each model folder by, per preset and recipe
RELEASE_DIGESTS = {
    ("default", "vicreg"): "393105d745602e98", ("default", "simclr"): "4f4aae3f5b84db19", ("default", "barlowtwins"): "393105d745602e98", ("default", "byol"): "393105d745602e98", ("default", "supervised"): "58a12f5231f571c1", ("default", "clip"): "2dc87115512b2562",
    ("smoke", "vicreg"): "a5d44941def9bcab", ("smoke", "simclr"): "a5d44941def9bcab", ("smoke", "barlowtwins"): "a5d44941def9bcab", ("smoke", "byol"): "a5d44941def9bcab", ("smoke", "supervised"): "a5d44941def9bcab", ("smoke", "clip"): "a5d44941def9bcab",
    ("paper", "vicreg"): "b73a8b3ab72c7276", ("paper", "simclr"): "6b23eb6ede199a99", ("paper", "barlowtwins"): "b73a8b3ab72c7276", ("paper", "byol"): "b73a8b3ab72c7276", ("paper", "supervised"): "676c0b793ecd6a9d", ("paper", "clip"): "7279933e15ca2edf",
}


def digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


@pytest.mark.parametrize("preset, recipe", sorted(RELEASE_DIGESTS))
def test_the_flat_config_is_the_one_the_release_keyed_its_models_by(preset, recipe):
    p = load_preset(preset)
    flat = legacy.flat_config(RECIPES[recipe], p.train_config(recipe), p.recipe_config)
    assert sorted(flat) == sorted(legacy.FLAT_FIELDS)
    assert digest(flat) == RELEASE_DIGESTS[preset, recipe]


def test_only_the_recipes_own_fields_key_its_model_now_but_all_keyed_it_then():
    base, changed = load_preset("default"), load_preset("default", ["train_by_recipe.simclr.temperature=0.2"])
    for p in (base, changed):
        assert p.recipe_config("vicreg") == base.recipe_config("vicreg")  # today's key of VICReg: unchanged
    flat = [legacy.flat_config(RECIPES["vicreg"], p.train_config("vicreg"), p.recipe_config) for p in (base, changed)]
    assert flat[1] == {**flat[0], "temperature": 0.2}  # the release's key of VICReg held SimCLR's temperature


def test_a_release_identity_and_checkpoint_read_in_todays_form():
    p = load_preset("default")
    flat = legacy.flat_config(RECIPES["byol"], p.train_config("byol"), p.recipe_config)
    recorded = {"plan": {"recipe": "byol"}, "config": {k: v for k, v in flat.items() if k != "epochs"}, "seed": 0}
    shared = {k: v for k, v in p.train_config("byol").as_dict().items() if k != "epochs"}
    assert legacy.identity(RECIPES["byol"], recorded) == {**recorded, "config": shared,
                                                           "recipe_config": p.recipe_config("byol").as_dict()}
    assert legacy.identity(RECIPES["byol"], {**recorded, "config": shared}) is None  # already today's
    hparams = legacy.checkpoint_hparams(RECIPES["byol"], {"cfg": flat, "crop_scale": [0.1, 1.0]})
    assert TrainConfig.from_dict(hparams["cfg"]) == p.train_config("byol")
    assert RECIPES["byol"].Config.from_dict(hparams["recipe_cfg"]).momentum == (0.99, 1.0)
    assert hparams["recipe_cfg"]["crop_scale"] == [0.1, 1.0]  # the plan's, after mitigations, as it trained
    assert legacy.checkpoint_hparams(RECIPES["byol"], hparams) is None


@dataclass(frozen=True)
class WiderConfig(SimCLRConfig):
    width: int = 1  # a field no earlier release had


class Wider(SimCLR):
    name = "wider"
    Config = WiderConfig


def test_a_field_the_release_lacked_set_away_from_its_default_finds_no_folder_of_it():
    assert legacy.legacy_recipe(Wider) == "simclr"  # it read SimCLR's flat fields, as the dcl example did
    p = load_preset("smoke")
    configs = {"wider": WiderConfig(projector=(64, 32)), "wider2": WiderConfig(projector=(64, 32), width=2)}

    def config_of(own):
        return lambda r: configs[own] if r == "wider" else p.recipe_config(r)

    flat = legacy.flat_config(Wider, p.train_config("simclr"), config_of("wider"))
    assert flat == legacy.flat_config(RECIPES["simclr"], p.train_config("simclr"), p.recipe_config)
    assert legacy.flat_config(Wider, p.train_config("simclr"), config_of("wider2")) is None
    assert legacy.flat_config(RECIPES["clip"].__base__, p.train, p.recipe_config) is None  # no recipe of its own
