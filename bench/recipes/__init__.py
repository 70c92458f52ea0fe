"""Training recipes by name: Lightning modules that train a model and expose its embedding layers.

Each recipe declares its own hyperparameters as a `Config` dataclass with the published defaults:

    >>> from bench.recipes import RECIPES
    >>> sorted(RECIPES)
    ['barlowtwins', 'byol', 'clip', 'simclr', 'supervised', 'vicreg']
    >>> RECIPES["simclr"].Config()
    SimCLRConfig(crop_scale=(0.2, 1.0), projector=(2048, 128), view_kwargs={}, temperature=0.1)
"""

from __future__ import annotations

from dataclasses import replace

from bench.recipes.base import RecipeModule, resolve_layer
from bench.recipes.clip import Clip
from bench.recipes.config import RecipeConfig, TrainConfig
from bench.recipes.ssl import BYOL, BarlowTwins, SimCLR, VICReg
from bench.recipes.supervised import Supervised
from dejavu.plugins import RECIPES_GROUP, load_plugins, subclass_of
from dejavu.records import RecordSet

RECIPES: dict[str, type[RecipeModule]] = {
    cls.name: cls for cls in (VICReg, SimCLR, BarlowTwins, BYOL, Supervised, Clip)
}


def available_recipes() -> dict[str, type[RecipeModule]]:
    """Returns every recipe class by name: the built-ins, then the `dejavu_bench.recipes` entry-point plugins."""
    return load_plugins(RECIPES_GROUP, RECIPES, subclass_of(RecipeModule), "recipe")


def get_recipe(name: str) -> type[RecipeModule]:
    """Returns the recipe class registered under `name`."""
    known = RECIPES if name in RECIPES else available_recipes()  # the built-ins without reading entry points
    if name not in known:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(known)}")
    return known[name]


def build_recipe(name: str, cfg: TrainConfig, recipe_cfg: RecipeConfig, records: RecordSet,
                 crop_scale) -> RecipeModule:
    """Returns a freshly initialized recipe module for training on `records`, its views drawing from `crop_scale`.

    `crop_scale` is the plan's (after mitigations), in place of the recipe config's own.
    """
    recipe = get_recipe(name)
    if not isinstance(recipe_cfg, recipe.Config):
        raise TypeError(f"recipe {name!r} takes a {recipe.Config.__name__}, got a {type(recipe_cfg).__name__}")
    return recipe.create(cfg, replace(recipe_cfg, crop_scale=tuple(crop_scale)), records)


__all__ = ["RECIPES", "RecipeConfig", "RecipeModule", "TrainConfig", "available_recipes", "build_recipe",
           "get_recipe", "resolve_layer"]
