"""Typed reading of JSON configs into frozen dataclasses: every value read as its field's type and checked.

    >>> from dataclasses import dataclass, field
    >>> from dejavu.rules import at_least
    >>> @dataclass(frozen=True)
    ... class Knobs:
    ...     k: int = field(default=10, metadata=at_least(1))
    ...     top_p: tuple[float, ...] = (0.05, 1.0)
    >>> section_from(Knobs, {"top_p": [0.2]}, "measure.knobs")
    Knobs(k=10, top_p=(0.2,))
    >>> section_from(Knobs, {"kk": 3}, "measure.knobs")
    Traceback (most recent call last):
    ...
    dejavu.config.ConfigError: unknown field measure.knobs.kk; valid fields: k, top_p
    >>> parse("0", int, "measure.knobs.k")  # an override string, read as the field's type
    0

JSON lists become tuples where a tuple is declared; a name that is not a field is an error that
lists the valid ones. The bench's presets read their sections with it, and
`dejavu.measure.MeasureConfig.from_dict` the measurement's.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Any

from dejavu.rules import field_problem

__all__ = ["ConfigError", "checked", "convert", "from_group", "group_fields", "hints", "non_default", "own_fields",
           "parse", "read_field", "section_from"]

GROUP = "group"


class ConfigError(ValueError):
    """A config or override that names an unknown field or holds a value of the wrong type."""


def from_group(name: str) -> dict:
    """Returns the metadata of a field filled from a group the whole config shares (e.g. the measurement's `stats`).

    Such a field is not read from its own section: one value serves every config that has it.
    """
    return {GROUP: name}


def group_fields(cls) -> dict[str, str]:
    """Returns field name -> group of the fields of `cls` filled from a shared group."""
    return {f.name: f.metadata[GROUP] for f in fields(cls) if GROUP in f.metadata}


def own_fields(cls) -> list[str]:
    """Returns the names of the fields of `cls` its own section sets (those not filled from a shared group)."""
    return [f.name for f in fields(cls) if GROUP not in f.metadata]


def type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


#: the JSON scalars a field may declare, and what a value of each looks like (a bool is no number)
_SCALARS: dict[Any, Any] = {
    type(None): lambda v: v is None,
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
}


def convert(value: Any, hint, where: str) -> Any:
    """Returns `value` as type `hint` (JSON lists become tuples where a tuple is declared)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    bad = ConfigError(f"{where}: {value!r} is not of type {type_name(hint)}")
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return convert(value, arm, where)
            except ConfigError:
                continue
        raise bad
    if hint in _SCALARS:
        if _SCALARS[hint](value):
            return float(value) if hint is float else value
        raise bad
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        key_hint, value_hint = args or (Any, Any)
        return {convert(k, key_hint, where): convert(v, value_hint, f"{where}.{k}") for k, v in value.items()}
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise bad
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [convert(v, args[0], where) for v in value]
        elif origin is tuple and args:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {list(value)!r}")
            items = [convert(v, a, where) for v, a in zip(value, args, strict=True)]
        else:
            items = [convert(v, args[0] if args else Any, where) for v in value]
        return tuple(items) if origin is tuple else items
    raise ConfigError(f"{where}: unsupported field type {type_name(hint)}")


def parse(text: str, hint, where: str) -> Any:
    """Returns an override string read as type `hint` (JSON syntax, or a bare string)."""
    if hint is str:
        return text
    if hint is bool and text.lower() in ("true", "false", "yes", "no", "1", "0"):
        return text.lower() in ("true", "yes", "1")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text  # a bare word, e.g. devices=auto
    return convert(value, hint, where)


def hints(cls) -> dict[str, Any]:
    """Returns the resolved type of every field of the dataclass `cls`."""
    return typing.get_type_hints(cls)


def checked(cls, name: str, value: Any, where: str) -> Any:
    """Returns `value` if it is allowed for field `name` of `cls`; raises ConfigError naming `where`."""
    problem = field_problem(cls, name, value)
    if problem:
        raise ConfigError(f"{where} {problem}")
    return value


def read_field(cls, name: str, value: Any, where: str) -> Any:
    """Returns a JSON value read as field `name` of `cls`, its type and range checked."""
    return checked(cls, name, convert(value, hints(cls)[name], where), where)


def non_default(values: dict, defaults: dict) -> dict:
    """Returns the items of `values` that differ from `defaults` (a key `defaults` lacks counts as changed).

    What run ids hash, so that a setting added later with a default that keeps today's behaviour leaves
    every earlier id as it was.

        >>> non_default({"k": 20, "metric": "l2", "new": 1}, {"k": 100, "metric": "l2"})
        {'k': 20, 'new': 1}
    """
    missing = object()
    return {k: v for k, v in values.items() if defaults.get(k, missing) != v}


def section_from(cls, data: Any, where: str, base=None, settable: Sequence[str] | None = None):
    """Returns the dataclass `cls` (or `base` updated) from a JSON object of its fields.

    `settable` limits the fields the object may name (default: all of them).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object, got {data!r}")
    valid = list(settable) if settable is not None else [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigError(f"unknown field {where}.{unknown[0]}; valid fields: {', '.join(valid)}")
    values = {k: read_field(cls, k, v, f"{where}.{k}") for k, v in data.items()}
    return replace(base, **values) if base is not None else cls(**values)
