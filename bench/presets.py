"""Presets: named JSON configs (bench/presets/*.json) of the data, training and measurement knobs.

    >>> p = load_preset("smoke", ["train.epochs=3", "train_by_recipe.vicreg.projector=[32,32,32]"])
    >>> p.train_config("vicreg").epochs, p.recipe_config("vicreg").projector
    (3, (32, 32, 32))

Overrides are `section.field=value` (or `section.field.key=value` inside a dict field) and are read
as the field's type; a name that is not a field is an error that lists the valid ones. `train` holds
what every recipe shares (bench.recipes.config.TrainConfig); `train_by_recipe.<recipe>` overrides those
for one recipe and sets the recipe's own hyperparameters (its `Config`) beside them.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bench.recipes import get_recipe
from bench.recipes.config import RecipeConfig, TrainConfig
from bench.recipes.legacy import new_places
from bench.rules import at_least, check_fields, each, field_problem, fraction, int_within, rule
from dejavu.crops import RULES
from dejavu.data.scenes import PRESETS as SCENES_PRESETS
from dejavu.data.scenes import ScenesConfig, scenes_config
from dejavu.data.validate import DEFAULT_MAX_PIXELS
from dejavu.knn import INDEXES, approximate_index
from dejavu.measurements import available_tests
from dejavu.records import MAX_REPEAT
from dejavu.references.crop_classifier import check_arch
from dejavu.results import TESTS

PRESET_DIR = Path(__file__).with_name("presets")


class PresetError(ValueError):
    """A preset or override that names an unknown field or holds a value of the wrong type."""


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
class MeasureSection:
    """The measurement knobs of SPEC sections 2-7, named as `dejavu.measure.MeasureConfig.from_dict` reads them."""

    tests: tuple[str, ...] = field(default=TESTS, metadata=rule(len, "a non-empty list of tests"))
    k: int = field(default=100, metadata=at_least(1))  # neighbours of the image test (the original's k)
    knn_metric: str = "l2"  # "l2" (squared L2, the original) or "cosine"
    # "exact" (the default, as published) or a faiss index, "ivf" or "hnsw", for public sets too large to
    # search exactly; knn_index_params holds its settings (dejavu.knn.ApproximateIndex, e.g. {"nprobe": 64})
    knn_index: str = field(default="exact", metadata=rule(lambda v: v in INDEXES, "one of " + ", ".join(INDEXES)))
    knn_index_params: dict[str, Any] = field(default_factory=dict)
    top_p: tuple[float, ...] = field(default=(0.05, 0.2, 1.0), metadata=each(fraction()))
    vlm_k: int = field(default=10, metadata=at_least(1))  # neighbours of the vision-language test (the scripts' k)
    vlm_index: str = "t2i"  # public images ("t2i", the default) or public captions ("t2t")
    crop_rule: str = "slab"
    # of min(W, H); None: 100 px at a 375 px short side
    threshold_fraction: float | None = field(default=None, metadata=fraction())
    n_bootstrap: int = 200
    # random subsets of A in the canary-gap test
    n_permutations: int = field(default=1000, metadata=at_least(1))
    crop_epochs: int = field(default=10, metadata=at_least(1))  # the one-model crop classifier's training epochs
    crop_image_size: int = field(default=32, metadata=at_least(8))
    probe_epochs: int = field(default=50, metadata=at_least(1))  # linear-probe training epochs
    # the seed of the bootstrap resamples, the permutation tests and the one-model estimators
    seed: int = field(default=0, metadata=at_least(0))
    # the top-p level of the canary permutation test (pvalue_dv_gap@<100 p>)
    pvalue_p: float = field(default=0.2, metadata=fraction())
    # the naive-Bayes estimator: "epsilon" (the original's) or "laplace" smoothing, and whether its
    # posteriors are normalized
    nb_smoothing: str = field(default="epsilon", metadata=rule(lambda v: v in ("epsilon", "laplace"),
                                                                "'epsilon' or 'laplace'"))
    nb_normalize: bool = True
    crop_arch: str = "small-cnn"  # the one-model crop classifier: "small-cnn" or a torchvision name ("resnet50")
    # the caption test's top-L levels of its gap (ppg@L)
    vlm_top_t: tuple[int, ...] = field(default=(1, 10), metadata=each(at_least(1)))
    # the settings of tests that own a Config (dejavu.measurements), by test name, e.g.
    # {"image-reconstruction": {"train_steps": 2000}}; a test not named here runs with its Config's defaults
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        check_fields(self)
        known = available_tests()  # the built-ins and any registered plugin tests
        unknown = sorted(set(self.tests) - set(known))
        if unknown:
            raise PresetError(f"measure.tests: unknown test {unknown[0]!r}; valid: {', '.join(known)}")
        for test, options in self.options.items():
            if test not in known:
                raise PresetError(f"measure.options: unknown test {test!r}; valid: {', '.join(known)}")
            try:
                known[test].make_config(options)
            except (TypeError, ValueError) as err:
                raise PresetError(f"measure.options.{test}: {err}") from None
        if self.knn_metric not in ("l2", "cosine"):
            raise PresetError(f"measure.knn_metric must be 'l2' or 'cosine', got {self.knn_metric!r}")
        try:
            approximate_index(self.knn_index, self.knn_index_params)
        except (TypeError, ValueError) as err:
            raise PresetError(f"measure.knn_index_params: {err}") from None
        if self.vlm_index not in ("t2i", "t2t"):
            raise PresetError(f"measure.vlm_index must be 't2i' or 't2t', got {self.vlm_index!r}")
        if self.crop_rule not in RULES:
            raise PresetError(f"measure.crop_rule must be one of {', '.join(RULES)}, got {self.crop_rule!r}")
        try:
            check_arch(self.crop_arch)
        except ValueError as err:
            raise PresetError(f"measure.crop_arch: {err}") from None
        if self.n_bootstrap < 200:
            raise PresetError("measure.n_bootstrap must be >= 200 (SPEC section 6)")

    def as_dict(self) -> dict:
        """Returns the flat settings `dejavu.measure.MeasureConfig.from_dict` takes."""
        return asdict(self)


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
    measure: MeasureSection = field(default_factory=MeasureSection)
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

    def measure_section(self, recipe: str) -> MeasureSection:
        """Returns the measurement knobs of `recipe`: `measure` with the recipe's own overrides applied."""
        get_recipe(recipe)
        return replace(self.measure, **self.measure_by_recipe.get(recipe, {}))

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
        defaults = _json_safe({"data": asdict(DataSection()), "train": train, "measure": MeasureSection().as_dict()})
        return {section: {k: v for k, v in values.items() if defaults[section].get(k, _MISSING) != v}
                for section, values in self.resolved(recipe).items()}

    def to_dict(self) -> dict:
        """Returns the preset as JSON-safe data (for result rows and run records)."""
        return json.loads(json.dumps(asdict(self), default=list))


_MISSING = object()


def _split(overrides: dict) -> tuple[dict, dict]:
    """Returns a `train_by_recipe` block as (the shared TrainConfig fields it sets, the recipe's own)."""
    shared = {k: v for k, v in overrides.items() if k in TrainConfig.__dataclass_fields__}
    return shared, {k: v for k, v in overrides.items() if k not in shared}


def _train_dict(train: TrainConfig, own: RecipeConfig) -> dict:
    """Returns the shared and the recipe's own fields side by side, as `train_by_recipe.<recipe>` sets them."""
    return {**train.as_dict(), **own.as_dict()}


def _json_safe(data: dict) -> dict:
    return json.loads(json.dumps(data, default=list))


_SECTIONS: dict[str, type] = {"data": DataSection, "train": TrainConfig, "measure": MeasureSection}
#: the per-recipe override blocks and the section each one overrides
_BY_RECIPE: dict[str, type] = {"data_by_recipe": DataSection, "train_by_recipe": TrainConfig,
                                "measure_by_recipe": MeasureSection}
_TOP_LEVEL = ("description", *_SECTIONS, *_BY_RECIPE)


def available_presets() -> list[str]:
    """Returns the names of the presets shipped in bench/presets/."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


# -- typed reading of JSON values and override strings --------------------------------------------
def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _convert(value: Any, hint, where: str) -> Any:
    """Returns `value` as type `hint` (JSON lists become tuples where a tuple is declared)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    bad = PresetError(f"{where}: {value!r} is not of type {_type_name(hint)}")
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return _convert(value, arm, where)
            except PresetError:
                continue
        raise bad
    if hint is type(None):
        if value is None:
            return None
        raise bad
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise bad
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        key_hint, value_hint = args or (Any, Any)
        return {_convert(k, key_hint, where): _convert(v, value_hint, f"{where}.{k}") for k, v in value.items()}
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise bad
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [_convert(v, args[0], where) for v in value]
        elif origin is tuple and args:
            if len(value) != len(args):
                raise PresetError(f"{where}: expected {len(args)} values, got {list(value)!r}")
            items = [_convert(v, a, where) for v, a in zip(value, args, strict=True)]
        else:
            items = [_convert(v, args[0] if args else Any, where) for v in value]
        return tuple(items) if origin is tuple else items
    raise PresetError(f"{where}: unsupported field type {_type_name(hint)}")


def _parse(text: str, hint, where: str) -> Any:
    """Returns an override string read as type `hint` (JSON syntax, or a bare string)."""
    if hint is str:
        return text
    if hint is bool and text.lower() in ("true", "false", "yes", "no", "1", "0"):
        return text.lower() in ("true", "yes", "1")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text  # a bare word, e.g. devices=auto
    return _convert(value, hint, where)


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _checked(cls, name: str, value: Any, where: str) -> Any:
    """Returns `value` if it is allowed for field `name` of `cls`; raises PresetError naming `where`."""
    problem = field_problem(cls, name, value)
    if problem:
        raise PresetError(f"{where} {problem}")
    return value


def _read_field(cls, name: str, value: Any, where: str) -> Any:
    """Returns a JSON value read as field `name` of `cls`, its type and range checked."""
    return _checked(cls, name, _convert(value, _hints(cls)[name], where), where)


def _section_from(cls, data: Any, where: str, base=None):
    if not isinstance(data, dict):
        raise PresetError(f"{where} must be a JSON object, got {data!r}")
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise PresetError(f"unknown field {where}.{unknown[0]}; valid fields: {', '.join(valid)}")
    values = {k: _read_field(cls, k, v, f"{where}.{k}") for k, v in data.items()}
    return replace(base, **values) if base is not None else cls(**values)


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
    return Preset(name=name, description=_convert(data.get("description", ""), str, "description"),
                  **by_recipe, **sections)


def apply_override(preset: Preset, override: str) -> Preset:
    """Returns `preset` with one `section.field[.key]=value` override applied."""
    path, sep, text = override.partition("=")
    if not sep:
        raise PresetError(f"override {override!r} is not of the form section.field=value")
    parts = path.strip().split(".")
    section = parts[0]
    if section in _BY_RECIPE and len(parts) == 3:
        current = getattr(preset, section)
        owner = _owners(section, parts[1]).get(parts[2], _BY_RECIPE[section])
        value = _parse(text, _hints(owner).get(parts[2], Any), path)
        merged = {**current, parts[1]: {**current.get(parts[1], {}), parts[2]: value}}
        return replace(preset, **{section: _check_recipe_overrides(merged, section)})
    if section not in _SECTIONS or len(parts) not in (2, 3):
        raise PresetError(f"override {override!r}: expected <data|train|measure>_by_recipe.<recipe>.<field>=... "
                          f"or <section>.<field>=... with section one of {', '.join(_SECTIONS)}")
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
