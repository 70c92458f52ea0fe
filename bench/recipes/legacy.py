"""The flat TrainConfig of earlier releases, kept only to find, move and load the models they cached.

Up to 3df7a09 one TrainConfig held every recipe's hyperparameters: a model's cache folder was keyed
by a hash of all of it (other recipes' fields included), its run.json recorded it, and its checkpoint
stored it as the module's `cfg` beside the plan's `crop_scale`. Since recipes own their hyperparameters,
this module translates between that flat form and (TrainConfig, the recipe's Config); nothing else
reads the flat form.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.recipes.config import RecipeConfig, TrainConfig

#: where each built-in recipe's own fields sat in the flat config: a flat field, or ("projector", recipe)
OWN_FIELDS: dict[str, dict[str, str | tuple[str, str]]] = {
    "vicreg": {"crop_scale": "crop_scale", "view_kwargs": "view_kwargs", "projector": ("projector", "vicreg"),
               "invariance": "vicreg_invariance"},
    "simclr": {"crop_scale": "crop_scale", "view_kwargs": "view_kwargs", "projector": ("projector", "simclr"),
               "temperature": "temperature"},
    "barlowtwins": {"crop_scale": "crop_scale", "view_kwargs": "view_kwargs",
                    "projector": ("projector", "barlowtwins"), "lambda_param": "barlow_lambda"},
    "byol": {"crop_scale": "crop_scale", "view_kwargs": "view_kwargs", "projector": ("projector", "byol"),
             "momentum": "byol_momentum"},
    "supervised": {"crop_scale": "crop_scale", "projector": ("projector", "supervised")},
    "clip": {"crop_scale": "clip_crop_scale", "model": "clip_model"},
}
#: flat fields that held one value for several recipes: each recipe's key holds its own; where a recipe has
#: none, the flat field held what the image recipes had (crop_scale) or the default (view_kwargs)
_COMMON = {"crop_scale": "vicreg", "view_kwargs": None}
#: every field of the flat config, as its `as_dict` wrote them
FLAT_FIELDS = ("backbone", "image_size", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "warmup_epochs",
               "crop_scale", "clip_crop_scale", "projector", "view_kwargs", "temperature", "vicreg_invariance",
               "barlow_lambda", "byol_momentum", "clip_model", "num_workers", "batched_views", "precision",
               "accelerator", "devices", "limit_train_batches", "log_every_n_steps")


def legacy_recipe(recipe_cls: type) -> str | None:
    """Returns the built-in recipe whose flat fields `recipe_cls` read (itself, or the one it extends); None if none."""
    return next((c.name for c in recipe_cls.__mro__ if getattr(c, "name", None) in OWN_FIELDS), None)


def new_places(flat_field: str) -> list[tuple[str, str]]:
    """Returns (recipe, field) for every built-in recipe's own field that the flat config held as `flat_field`."""
    return [(recipe, own) for recipe, fields in OWN_FIELDS.items() for own, where in fields.items()
            if (where[0] if isinstance(where, tuple) else where) == flat_field]


def _get(flat: dict, where: str | tuple[str, str]):
    return flat[where[0]][where[1]] if isinstance(where, tuple) else flat[where]


def _put(flat: dict, where: str | tuple[str, str], value) -> None:
    if isinstance(where, tuple):
        flat[where[0]][where[1]] = value
    else:
        flat[where] = value


def flat_config(recipe_cls: type, train: TrainConfig, config_of: Callable[[str], RecipeConfig]) -> dict | None:
    """Returns the flat `TrainConfig.as_dict()` an earlier release computed for this recipe under the same preset.

    `config_of(name)` is each built-in recipe's own Config in that preset: the flat form held their fields
    too. None when no earlier release could have trained this configuration (a recipe it did not know, or
    a field it did not have, set away from its default).
    """
    base = legacy_recipe(recipe_cls)
    if base is None:
        return None
    own = config_of(recipe_cls.name)
    extra = set(own.field_names()) - set(OWN_FIELDS[base])
    default = recipe_cls.Config()
    if any(getattr(own, name) != getattr(default, name) for name in extra):
        return None
    flat = {**train.as_dict(), "projector": {}, "view_kwargs": {}}
    flat["crop_scale"] = config_of(_COMMON["crop_scale"]).as_dict()["crop_scale"]
    for name, fields in OWN_FIELDS.items():  # the other recipes' fields, then this one's own
        values = config_of(name).as_dict()
        for field_name, where in fields.items():
            if where not in _COMMON:
                _put(flat, where, values[field_name])
    values = own.as_dict()
    for field_name, where in OWN_FIELDS[base].items():
        _put(flat, where, values[field_name])
    return flat


def own_config(recipe_cls: type, flat: dict, **changes) -> dict | None:
    """Returns the recipe's own Config, as `as_dict` writes it, read from a flat config; None for a recipe it lacks."""
    base = legacy_recipe(recipe_cls)
    if base is None:
        return None
    values = {name: _get(flat, where) for name, where in OWN_FIELDS[base].items()}
    return recipe_cls.Config.from_dict({**values, **changes}).as_dict()


def is_flat(config: dict) -> bool:
    """Returns True for a config in the flat form (it holds fields only some recipes have)."""
    return "projector" in config and isinstance(config["projector"], dict)


def identity(recipe_cls: type, recorded: dict) -> dict | None:
    """Returns a run.json identity of an earlier release in today's form; None if it is not one."""
    config = recorded.get("config")
    if not (isinstance(config, dict) and is_flat(config)):
        return None
    own = own_config(recipe_cls, config)
    if own is None:
        return None
    shared = set(TrainConfig.__dataclass_fields__)
    return {**recorded, "config": {k: v for k, v in config.items() if k in shared}, "recipe_config": own}


def checkpoint_hparams(recipe_cls: type, hparams: dict) -> dict | None:
    """Returns the constructor arguments that replace a checkpoint's flat hyperparameters; None when not flat."""
    flat = hparams.get("cfg")
    if not (isinstance(flat, dict) and is_flat(flat)) or "recipe_cfg" in hparams:
        return None
    # the plan's crop scale (after mitigations) was stored beside the flat config
    own = own_config(recipe_cls, flat, **{k: hparams[k] for k in ("crop_scale",) if k in hparams})
    if own is None:
        raise ValueError(f"a checkpoint of recipe {recipe_cls.name!r} holds the flat hyperparameters of an earlier "
                         "release, which that recipe did not read; train it again")
    shared = set(TrainConfig.__dataclass_fields__)
    return {"cfg": {k: v for k, v in flat.items() if k in shared}, "recipe_cfg": own}
