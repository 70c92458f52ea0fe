"""Training recipes by name: Lightning modules that train a model and expose its embedding layers.

    >>> from bench.recipes import RECIPES, make_plan
    >>> sorted(RECIPES)
    ['barlowtwins', 'byol', 'clip', 'simclr', 'supervised', 'vicreg']
"""

from __future__ import annotations

from bench.recipes.base import RecipeModule, resolve_layer
from bench.recipes.clip import Clip
from bench.recipes.config import TrainConfig
from bench.recipes.ssl import BYOL, BarlowTwins, SimCLR, VICReg
from bench.recipes.supervised import Supervised
from dejavu.plugins import RECIPES_GROUP, load_plugins, subclass_of
from dejavu.records import RecordSet
from mitigations.base import TrainingPlan

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


def build_recipe(name: str, cfg: TrainConfig, records: RecordSet, crop_scale) -> RecipeModule:
    """Returns a freshly initialized recipe module for training on `records`."""
    return get_recipe(name).create(cfg, records, crop_scale)


def make_plan(name: str, cfg: TrainConfig) -> TrainingPlan:
    """Returns the unmitigated training plan of recipe `name` under `cfg` (epochs, crop scale)."""
    recipe = get_recipe(name)
    crop_scale = cfg.clip_crop_scale if recipe.modality == "image-text" else cfg.crop_scale
    return TrainingPlan(recipe=name, modality=recipe.modality, max_epochs=cfg.epochs,
                        crop_scale=tuple(crop_scale))


__all__ = ["RECIPES", "RecipeModule", "TrainConfig", "available_recipes", "build_recipe", "get_recipe", "make_plan",
           "resolve_layer"]
