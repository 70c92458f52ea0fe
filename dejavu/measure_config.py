"""The measurement's settings: which tests run, the groups they share, and each test's own Config.

A measure section (a preset's `measure`) is nested by owner:

    {"tests": [...],                      # which registered tests run
     "stats": {...},                      # StatsConfig: intervals, permutations, seed (every test)
     "crops": {...},                      # CropConfig: the background-crop rule (every image test)
     "<test name>": {...}, ...}           # that test's Config (MeasurementTest.Config)

A setting several tests use has one home. The groups hold what every test shares; a field of a
test's Config marked `from_group(...)` (dejavu.config) is filled from its group, not set per test.
What a family of tests shares sits with the test that owns it: the target's kNN attack on A (k,
metric, index, top_p, ...) is `image-two-model`'s, and the one-model image tests read it from
there, as they reuse that attack; the caption retrieval is `vlm-two-model`'s, read by
`vlm-one-model-text`. (A test's `reads` names whose settings it reads besides its own.)

    >>> from dejavu.measurements.image import ImageTwoModelTest
    >>> cfg = MeasureConfig.from_dict({"stats": {"n_permutations": 200}, "image-two-model": {"k": 20}})
    >>> cfg.settings_of(ImageTwoModelTest).k, cfg.settings_of(ImageTwoModelTest).stats.n_permutations
    (20, 200)
    >>> cfg.changes()
    {'stats': {'n_permutations': 200}, 'image-two-model': {'k': 20}}
    >>> MeasureConfig.from_dict({"image-one-model-nb": {"k": 20}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dejavu.config.ConfigError: unknown field measure.image-one-model-nb.k; valid fields: smoothing, normalize ...
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from dejavu.attacks.common import StatsConfig
from dejavu.config import ConfigError, convert, group_fields, hints, non_default, own_fields, section_from
from dejavu.crops import CropConfig
from dejavu.measurements import MeasurementTest, available_tests
from dejavu.results import TESTS

__all__ = ["GROUPS", "MeasureConfig"]

#: the settings every test shares, by group name; a test's Config field marked `from_group(name)` gets it
GROUPS: dict[str, type] = {"stats": StatsConfig, "crops": CropConfig}


@dataclass(frozen=True)
class MeasureConfig:
    """Which tests run and how; each default is its Config's, and follows the papers (SPEC sections 2-7).

    From Python, give the tests' Configs by test name, e.g.
    `MeasureConfig(stats=StatsConfig(n_permutations=200), settings={"image-two-model": ImageTestConfig(k=20)})`;
    a test not in `settings` runs with its Config's defaults.
    """

    tests: tuple[str, ...] = TESTS
    stats: StatsConfig = field(default_factory=StatsConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    settings: Mapping[str, Any] = field(default_factory=dict)  # test name -> its Config

    def __post_init__(self):
        object.__setattr__(self, "tests", tuple(self.tests))
        known = available_tests()
        for name, cfg in self.settings.items():
            test = known.get(name)
            if test is None or test.Config is None:
                raise ValueError(f"settings of {name!r}: no registered test of that name has a Config; tests "
                                 f"with one: {', '.join(configurable(known))}")
            if not isinstance(cfg, test.Config):
                raise TypeError(f"settings of {name!r} must be a {test.Config.__name__}, got {type(cfg).__name__}")

    def settings_of(self, test: type[MeasurementTest]) -> Any:
        """Returns the Config `test` runs with: its own settings (or defaults), the shared groups filled in."""
        if test.Config is None:
            return None
        cfg = self.settings.get(test.name) or test.Config()
        shared = {name: getattr(self, group) for name, group in group_fields(test.Config).items()}
        return replace(cfg, **shared) if shared else cfg

    def section(self, name: str) -> Any:
        """Returns the group or the test Config named `name` (a key of the measure section)."""
        if name in GROUPS:
            return getattr(self, name)
        return self.settings_of(available_tests()[name])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: MeasureConfig | None = None,
                  where: str = "measure") -> MeasureConfig:
        """Returns `base` (default: the defaults) with a nested measure section applied, field by field.

        Every value is read as its field's type and checked; an unknown test, group or field is a
        ConfigError naming it (`measure.<test>.<field>`) and listing the valid ones.
        """
        base = base if base is not None else cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where} must be a JSON object, got {data!r}")
        known = available_tests()
        valid = ["tests", *GROUPS, *configurable(known)]
        for key in data:
            if key in known and key not in valid:
                raise ConfigError(f"{where}.{key}: test {key!r} has no settings of its own{reads_hint(known[key], where)}")
            if key not in valid:
                raise ConfigError(f"unknown field {where}.{key}; valid fields: {', '.join(valid)}")
        changes: dict[str, Any] = {}
        if "tests" in data:
            changes["tests"] = read_tests(data["tests"], known, f"{where}.tests")
        for group, group_cls in GROUPS.items():
            if group in data:
                changes[group] = read_section(group_cls, data[group], f"{where}.{group}", getattr(base, group))
        settings = dict(base.settings)
        for name in configurable(known):
            if name in data:
                test = known[name]
                try:
                    settings[name] = read_section(test.Config, data[name], f"{where}.{name}", settings.get(name))
                except ConfigError as err:
                    raise ConfigError(f"{err}{reads_hint(test, where)}") from None
        return replace(base, settings=settings, **changes)

    @staticmethod
    def setting_type(path: Sequence[str]) -> Any:
        """Returns the declared type at `path` of a measure section (["tests"], [group, field] or
        [group, field, key] inside a dict field); Any where nothing is declared (the loader then names the mistake).
        """
        if list(path) == ["tests"]:
            return tuple[str, ...]
        known = available_tests()
        owner = GROUPS.get(path[0]) or (known[path[0]].Config if path[0] in known else None)
        if owner is None or len(path) < 2 or path[1] not in own_fields(owner):
            return Any
        hint = hints(owner)[path[1]]
        if len(path) == 3:
            args = typing.get_args(hint)
            return args[1] if typing.get_origin(hint) is dict and args else Any
        return hint

    def as_dict(self) -> dict:
        """Returns every setting each registered test runs with, nested as a measure section (JSON-safe)."""
        out: dict[str, Any] = {"tests": list(self.tests), **{g: asdict(getattr(self, g)) for g in GROUPS}}
        for name, test in configurable(available_tests()).items():
            cfg = self.settings_of(test)
            out[name] = {f: getattr(cfg, f) for f in own_fields(test.Config)}
        return json.loads(json.dumps(out, default=list))

    def changes(self) -> dict:
        """Returns the settings of `as_dict()` that differ from their defaults, per group (groups without any left out).

        What a run id hashes: a setting added later with a default that keeps today's behaviour
        leaves every earlier run's id as it was.
        """
        defaults = MeasureConfig().as_dict()
        out: dict[str, Any] = {}
        for key, value in self.as_dict().items():
            if key == "tests":
                if value != defaults["tests"]:
                    out[key] = value
                continue
            changed = non_default(value, defaults.get(key, {}))
            if changed:
                out[key] = changed
        return out


def configurable(known: Mapping[str, type[MeasurementTest]]) -> dict[str, type[MeasurementTest]]:
    """Returns the tests of `known` that have settings of their own (a Config)."""
    return {name: test for name, test in known.items() if test.Config is not None}


def reads_hint(test: type[MeasurementTest], where: str) -> str:
    """Returns where else `test` reads settings from, as an error's tail ("" when nowhere)."""
    if not test.reads:
        return ""
    return f" (it reads the rest from {', '.join(f'{where}.{name}' for name in test.reads)})"


def read_tests(value: Any, known: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """Returns a list of registered test names, checked."""
    tests = convert(value, tuple[str, ...], where)
    if not tests:
        raise ConfigError(f"{where} must be a non-empty list of tests")
    unknown = [t for t in tests if t not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown test {unknown[0]!r}; valid: {', '.join(known)}")
    return tests


def read_section(cls: type, data: Any, where: str, base: Any = None) -> Any:
    """Returns the Config `cls` (or `base` updated) from its section; its own checks failing name `where`."""
    try:
        return section_from(cls, data, where, base, settable=own_fields(cls))
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:  # a Config's own checks across fields (__post_init__)
        raise ConfigError(f"{where}: {err}") from None
