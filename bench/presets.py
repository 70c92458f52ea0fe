"""Presets: named JSON configs (bench/presets/*.json) of the data, training and measurement knobs.

    >>> p = load_preset("smoke", ["train.epochs=3", "train_by_recipe.vicreg.projector=[32,32,32]"])
    >>> p.train_config("vicreg").epochs, p.recipe_config("vicreg").projector
    (3, (32, 32, 32))

Overrides are `section.field=value` (or `section.field.key=value` inside a dict field) and are read
as the field's type; a name that is not a field is an error that lists the valid ones. `train` holds
what every recipe shares (bench.recipes.config.TrainConfig); `train_by_recipe.<recipe>` overrides those
for one recipe and sets the recipe's own hyperparameters (its `Config`) beside them. The measure
section is nested by owner (dejavu.measure_config): `measure.<group or test>.<field>=value`, e.g.
`measure.image-two-model.k=50`, and `measure_by_recipe.<recipe>.<group or test>.<field>=value`.
"""

from __future__ import annotations

import json
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bench.recipes import get_recipe
from bench.recipes.config import RecipeConfig, TrainConfig
from bench.recipes.legacy import new_places
from bench.rules import at_least, check_fields, int_within, rule
from dejavu.config import ConfigError, non_default
from dejavu.config import checked as _checked
from dejavu.config import convert as _convert
from dejavu.config import hints as _hints
from dejavu.config import parse as _parse
from dejavu.config import read_field as _read_field
from dejavu.config import section_from as _section_from
from dejavu.data.scenes import PRESETS as SCENES_PRESETS
from dejavu.data.scenes import ScenesConfig, scenes_config
from dejavu.data.validate import DEFAULT_MAX_PIXELS
from dejavu.measure import MeasureConfig
from dejavu.records import MAX_REPEAT

PRESET_DIR = Path(__file__).with_name("presets")

#: a preset or override that names an unknown field or holds a value of the wrong type: the error of
#: the typed loader (dejavu.config) that reads every section, the measurement's included
PresetError = ConfigError


@dataclass(frozen=True)
class DataSection:
    """Which data: a scenes preset (dejavu.data.scenes) with overrides of its fields, and the split."""

    scenes: str = field(default="default", metadata=rule(lambda v: v in SCENES_PRESETS,
                                                          "one of " + ", ".join(SCENES_PRESETS)))
    # generation and split seed, fixed across runs so every model sees the same data
    seed: int = field(default=0, metadata=at_least(0))
    # cap on A (and B) records per class; None: half the boxed records
    per_class: int | None = field(default=None, metadata=at_least(1))
    params: dict[str, Any] = field(default_factory=dict)  # ScenesConfig field overrides
    # Plant this many canaries in A (dejavu.splits.plant_canaries), each seen `canary_repeat` times per epoch,
    # in place of the dataset's own; None keeps the dataset's. One build then serves every recipe's design.
    canaries: int | None = field(default=None, metadata=at_least(0))
    canary_repeat: int = field(default=20, metadata=int_within(1, MAX_REPEAT))
    # the image pre-pass refuses larger images (dejavu.data.validate); PIL's own bound is the most
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata=int_within(1, DEFAULT_MAX_PIXELS))

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class Preset:
    """A whole run's configuration; `<section>_by_recipe` overrides a section for one recipe.

    A benchmark is designed per recipe family: SSL models need many more epochs than CLIP to memorize
    a canary, and their image test its own k, while the data stays one build for every recipe.
    """

    name: str
    description: str = ""
    data: DataSection = field(default_factory=DataSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    train_by_recipe: dict[str, dict[str, Any]] = field(default_factory=dict)
    # nested by owner: tests, the shared groups (stats, crops) and each test's settings (dejavu.measure_config)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    # recipe -> a nested measure section, merged field by field into `measure`
    measure_by_recipe: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_by_recipe: dict[str, dict[str, Any]] = field(default_factory=dict)

    def data_section(self, recipe: str) -> DataSection:
        """Returns the data of `recipe`: `data` with the recipe's own overrides (e.g. its canaries) applied."""
        get_recipe(recipe)
        return replace(self.data, **self.data_by_recipe.get(recipe, {}))

    def train_config(self, recipe: str) -> TrainConfig:
        """Returns the shared training config of `recipe`: `train` with the recipe's own overrides applied."""
        get_recipe(recipe)
        return replace(self.train, **_split(self.train_by_recipe.get(recipe, {}))[0])

    def recipe_config(self, recipe: str) -> RecipeConfig:
        """Returns the recipe's own hyperparameters: its Config's defaults with `train_by_recipe.<recipe>` applied."""
        return get_recipe(recipe).Config(**_split(self.train_by_recipe.get(recipe, {}))[1])

    def measure_section(self, recipe: str) -> MeasureConfig:
        """Returns the measurement settings of `recipe`: `measure` with the recipe's own overrides merged in."""
        get_recipe(recipe)
        return MeasureConfig.from_dict(self.measure_by_recipe.get(recipe, {}), base=self.measure,
                                       where=f"measure_by_recipe.{recipe}")

    def resolved(self, recipe: str) -> dict:
        """Returns the sections `recipe` runs with, overrides applied, as JSON-safe data."""
        train = _train_dict(self.train_config(recipe), self.recipe_config(recipe))
        return _json_safe({"data": asdict(self.data_section(recipe)), "train": train,
                           "measure": self.measure_section(recipe).as_dict()})

    def resolved_changes(self, recipe: str) -> dict:
        """Returns the fields of `resolved(recipe)` that differ from their section's defaults.

        What a run id hashes: a knob added later with a default that keeps today's behaviour
        leaves every earlier run's id as it was. A recipe's own fields are compared with its Config's defaults.
        """
        train = _train_dict(TrainConfig(), get_recipe(recipe).Config())
        defaults = _json_safe({"data": asdict(DataSection()), "train": train})
        changes = {section: non_default(values, defaults[section])
                   for section, values in self.resolved(recipe).items() if section in defaults}
        return {**changes, "measure": self.measure_section(recipe).changes()}  # nested per group and test

    def to_dict(self) -> dict:
        """Returns the preset as JSON-safe data (for result rows and run records)."""
        return json.loads(json.dumps({**asdict(self), "measure": self.measure.as_dict()}, default=list))



def _split(overrides: dict) -> tuple[dict, dict]:
    """Returns a `train_by_recipe` block as (the shared TrainConfig fields it sets, the recipe's own)."""
    shared = {k: v for k, v in overrides.items() if k in TrainConfig.__dataclass_fields__}
    return shared, {k: v for k, v in overrides.items() if k not in shared}


def _train_dict(train: TrainConfig, own: RecipeConfig) -> dict:
    """Returns the shared and the recipe's own fields side by side, as `train_by_recipe.<recipe>` sets them."""
    return {**train.as_dict(), **own.as_dict()}


def _json_safe(data: dict) -> dict:
    return json.loads(json.dumps(data, default=list))


_SECTIONS: dict[str, type] = {"data": DataSection, "train": TrainConfig}
#: the per-recipe override blocks and the section each one overrides
_BY_RECIPE: dict[str, type] = {"data_by_recipe": DataSection, "train_by_recipe": TrainConfig}
#: the measure section and its per-recipe block, nested (read by dejavu.measure.MeasureConfig.from_dict)
_MEASURE = ("measure", "measure_by_recipe")
_TOP_LEVEL = ("description", *_SECTIONS, *_BY_RECIPE, *_MEASURE)


def available_presets() -> list[str]:
    """Returns the names of the presets shipped in bench/presets/."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


# -- typed reading: dejavu.config (imported above under the names this module has always used) -----------
def _check_scenes_params(params: dict, where: str, scenes: str | None = None) -> dict:
    hints = _hints(ScenesConfig)
    unknown = sorted(set(params) - set(hints))
    if unknown:
        raise PresetError(f"unknown field {where}.{unknown[0]}; valid fields: {', '.join(hints)}")
    params = {k: _convert(v, hints[k], f"{where}.{k}") for k, v in params.items()}
    if scenes is not None:
        try:  # ScenesConfig checks its ranges (and their combinations) itself
            scenes_config(scenes, **params)
        except ValueError as err:
            raise PresetError(f"{where} (scenes preset {scenes!r}): {err}") from None
    return params


def _owners(where: str, recipe: str) -> dict[str, type]:
    """Returns {field: the dataclass that declares it} for what `<where>.<recipe>` may set.

    `train_by_recipe` sets the shared TrainConfig's fields and the recipe's own Config's side by side.
    """
    try:
        recipe_cls = get_recipe(recipe)
    except ValueError as err:
        raise PresetError(f"{where}: {err}") from None
    classes = (_BY_RECIPE[where], recipe_cls.Config) if where == "train_by_recipe" else (_BY_RECIPE[where],)
    owners = {}
    for cls in classes:
        for f in fields(cls):
            if f.name in owners:  # a recipe's field would shadow a shared one: refuse it where it is declared
                raise PresetError(f"recipe {recipe!r}'s Config declares {f.name!r}, a field of the shared "
                                  f"{owners[f.name].__name__}; rename it")
            owners[f.name] = cls
    return owners


def _check_recipe_overrides(by_recipe: dict, where: str) -> dict:
    out = {}
    for recipe, overrides in by_recipe.items():
        owners = _owners(where, recipe)
        unknown = sorted(set(overrides) - set(owners))
        if unknown:
            raise PresetError(f"unknown field {where}.{recipe}.{unknown[0]}; valid fields: {', '.join(owners)}")
        out[recipe] = {k: _read_field(owners[k], k, v, f"{where}.{recipe}.{k}") for k, v in overrides.items()}
    return out


def _check_not_moved(where: str, name: str) -> None:
    """Raises a PresetError that says where a field of the flat train section of earlier releases went."""
    places = new_places(name) if where == "train" and name not in TrainConfig.__dataclass_fields__ else []
    if places:
        raise PresetError(f"train.{name} is no longer shared: each recipe owns it; set it per recipe, as "
                          + ", ".join(f"train_by_recipe.{recipe}.{own}" for recipe, own in places))


def preset_from_dict(name: str, data: dict) -> Preset:
    """Returns the preset described by a parsed JSON object, every field checked."""
    unknown = sorted(set(data) - set(_TOP_LEVEL))
    if unknown:
        raise PresetError(f"unknown section {unknown[0]!r} in preset {name!r}; valid: {', '.join(_TOP_LEVEL)}")
    train = data.get("train", {})
    for field_name in train if isinstance(train, dict) else ():  # a non-object is _section_from's to refuse
        _check_not_moved("train", field_name)
    sections = {key: _section_from(cls, data.get(key, {}), key) for key, cls in _SECTIONS.items()}
    data_section = sections["data"]
    sections["data"] = replace(data_section, params=_check_scenes_params(data_section.params, "data.params",
                                                                         data_section.scenes))
    by_recipe = {key: _check_recipe_overrides(data.get(key, {}), key) for key in _BY_RECIPE}
    measure = MeasureConfig.from_dict(data.get("measure", {}))
    measure_by_recipe = _check_measure_by_recipe(data.get("measure_by_recipe", {}), measure)
    return Preset(name=name, description=_convert(data.get("description", ""), str, "description"),
                  **by_recipe, **sections, measure=measure, measure_by_recipe=measure_by_recipe)


def _check_measure_by_recipe(by_recipe: Any, measure: MeasureConfig) -> dict[str, dict[str, Any]]:
    """Returns the per-recipe measure blocks, each checked as a measure section merged into `measure`."""
    if not isinstance(by_recipe, dict):
        raise PresetError(f"measure_by_recipe must be a JSON object, got {by_recipe!r}")
    for recipe, block in by_recipe.items():
        try:
            get_recipe(recipe)
        except ValueError as err:
            raise PresetError(f"measure_by_recipe: {err}") from None
        MeasureConfig.from_dict(block, base=measure, where=f"measure_by_recipe.{recipe}")
    return by_recipe


def _apply_measure_override(preset: Preset, parts: list[str], text: str, path: str) -> Preset:
    """Returns `preset` with `measure.<key>[.<field>[.<dict key>]]=value` (or the same under
    `measure_by_recipe.<recipe>.`) applied; a recipe's block is merged field by field.
    """
    recipe = parts[1] if parts[0] == "measure_by_recipe" else None
    keys = parts[2:] if recipe is not None else parts[1:]
    if not 1 <= len(keys) <= 3:
        raise PresetError(f"override {path!r}: expected measure.tests=..., measure.<group or test>.<field>=... "
                          f"or measure_by_recipe.<recipe>.<group or test>.<field>=...")
    if recipe is not None:
        _check_measure_by_recipe({recipe: {}}, preset.measure)  # a known recipe
    current = preset.measure if recipe is None else preset.measure_section(recipe)
    value = _parse(text, MeasureConfig.setting_type(keys), path)
    if len(keys) == 3:  # one key inside a dict field, e.g. measure.image-two-model.index_params.nprobe
        inside = getattr(current.section(keys[0]), keys[1])
        if not isinstance(inside, dict):
            raise PresetError(f"measure.{keys[0]}.{keys[1]} is not a dict; write measure.{keys[0]}.{keys[1]}=value")
        keys, value = keys[:2], {**inside, keys[2]: value}
    patch = {keys[0]: value} if len(keys) == 1 else {keys[0]: {keys[1]: value}}
    if recipe is None:
        return replace(preset, measure=MeasureConfig.from_dict(patch, base=preset.measure))
    block = dict(preset.measure_by_recipe.get(recipe, {}))
    for key, part in patch.items():  # merged per field: the rest of the recipe's section stays
        block[key] = {**block[key], **part} if isinstance(part, dict) and isinstance(block.get(key), dict) else part
    merged = {**preset.measure_by_recipe, recipe: block}
    return replace(preset, measure_by_recipe=_check_measure_by_recipe(merged, preset.measure))


def apply_override(preset: Preset, override: str) -> Preset:
    """Returns `preset` with one `section.field[.key]=value` override applied."""
    path, sep, text = override.partition("=")
    if not sep:
        raise PresetError(f"override {override!r} is not of the form section.field=value")
    parts = path.strip().split(".")
    section = parts[0]
    if section in _MEASURE:
        return _apply_measure_override(preset, parts, text, path)
    if section in _BY_RECIPE and len(parts) == 3:
        current = getattr(preset, section)
        owner = _owners(section, parts[1]).get(parts[2], _BY_RECIPE[section])
        value = _parse(text, _hints(owner).get(parts[2], Any), path)
        merged = {**current, parts[1]: {**current.get(parts[1], {}), parts[2]: value}}
        return replace(preset, **{section: _check_recipe_overrides(merged, section)})
    if section not in _SECTIONS or len(parts) not in (2, 3):
        raise PresetError(f"override {override!r}: expected <data|train|measure>_by_recipe.<recipe>.<field>=... "
                          f"or <section>.<field>=... with section one of {', '.join((*_SECTIONS, 'measure'))}")
    current = getattr(preset, section)
    cls, name = _SECTIONS[section], parts[1]
    valid = [f.name for f in fields(cls)]
    _check_not_moved(section, name)
    if name not in valid:
        raise PresetError(f"unknown field {section}.{name}; valid fields: {', '.join(valid)}")
    hint = _hints(cls)[name]
    if len(parts) == 3:  # one key inside a dict field
        if typing.get_origin(hint) is not dict:
            raise PresetError(f"{section}.{name} is not a dict; write {section}.{name}=value")
        value_hint = typing.get_args(hint)[1] if typing.get_args(hint) else Any
        if section == "data" and name == "params":
            value_hint = _hints(ScenesConfig).get(parts[2], Any)
        value = {**getattr(current, name), parts[2]: _parse(text, value_hint, path)}
    else:
        value = _parse(text, hint, path)
    updated = replace(current, **{name: _checked(cls, name, value, path)})
    if section == "data":
        updated = replace(updated, params=_check_scenes_params(updated.params, "data.params", updated.scenes))
    return replace(preset, **{section: updated})


def load_preset(name: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Preset:
    """Returns the preset named `name` (or read from a JSON file path) with `overrides` applied."""
    path = Path(name)
    if path.suffix != ".json":
        path = PRESET_DIR / f"{name}.json"
        if not path.is_file():
            raise PresetError(f"unknown preset {str(name)!r}; available: {', '.join(available_presets())}")
    elif not path.is_file():
        raise PresetError(f"preset file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PresetError(f"preset file {str(path)!r} is not valid JSON: {err}") from None
    try:
        preset = preset_from_dict(path.stem, data)
    except PresetError as err:
        raise PresetError(f"{err} (in preset file {str(path)!r})") from None
    for override in overrides:
        try:
            preset = apply_override(preset, override)
        except PresetError as err:
            raise PresetError(f"{err} (in --set {override})") from None
    return preset
