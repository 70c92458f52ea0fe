"""Allowed values of config fields, declared beside the fields they govern.

    >>> from dataclasses import dataclass, field
    >>> @dataclass(frozen=True)
    ... class Knobs:
    ...     epochs: int = field(default=10, metadata=at_least(1))
    ...     def __post_init__(self):
    ...         check_fields(self)
    >>> Knobs(epochs=0)
    Traceback (most recent call last):
    ...
    ValueError: epochs must be an integer >= 1, got 0

The typed loader (dejavu.config) asks `field_problem` for every value it reads, so that a bad
`--set` fails as it is parsed, naming the field, rather than after minutes of training. The rules
live in dejavu so that the measurement tests' Configs use them too (dejavu imports nothing of bench).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

RULE = "rule"


@dataclass(frozen=True)
class Rule:
    """A predicate over a field's value (None always passes: optional fields mean "unset") and its wording."""

    test: Callable[[Any], bool]
    text: str


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not to a config


def rule(test: Callable[[Any], bool], text: str) -> dict:
    """Returns field metadata holding the rule `test` described as `text` ("an integer >= 1")."""
    return {RULE: Rule(test, text)}


def at_least(low: int) -> dict:
    """Returns the metadata of an integer field that must be >= `low`."""
    return rule(lambda v: _integer(v) and v >= low, f"an integer >= {low}")


def int_within(low: int, high: int) -> dict:
    """Returns the metadata of an integer field that must lie in [low, high]."""
    return rule(lambda v: _integer(v) and low <= v <= high, f"an integer in [{low}, {high}]")


def finite(low: float = -math.inf, *, strictly: bool = False) -> dict:
    """Returns the metadata of a finite number that must be >= `low` (> `low` when `strictly`)."""
    above = (lambda v: v > low) if strictly else (lambda v: v >= low)
    where = "" if low == -math.inf else f" {'>' if strictly else '>='} {low:g}"
    return rule(lambda v: _number(v) and math.isfinite(v) and above(v), f"a finite number{where}")


def fraction(*, open_low: bool = True) -> dict:
    """Returns the metadata of a number in (0, 1] (or [0, 1] without `open_low`)."""
    low_ok = (lambda v: v > 0) if open_low else (lambda v: v >= 0)
    return rule(lambda v: _number(v) and low_ok(v) and v <= 1, f"a number in {'(' if open_low else '['}0, 1]")


def ordered_pair(low: float, high: float, *, open_low: bool = False) -> dict:
    """Returns the metadata of a (lo, hi) pair with low <= lo <= hi <= high (low < lo when `open_low`)."""
    def ok(v) -> bool:
        return (len(v) == 2 and all(_number(x) and math.isfinite(x) for x in v)
                and (v[0] > low if open_low else v[0] >= low) and v[0] <= v[1] <= high)
    return rule(ok, f"[lo, hi] with {low:g} {'<' if open_low else '<='} lo <= hi <= {high:g}")


def one_of(choices: Iterable[str]) -> dict:
    """Returns the metadata of a string field that must be one of `choices`."""
    choices = tuple(choices)
    return rule(lambda v: v in choices, "one of " + ", ".join(repr(c) for c in choices))


def each(item: dict, *, non_empty: bool = True) -> dict:
    """Returns the metadata of a sequence whose every item obeys the rule in `item`."""
    inner: Rule = item[RULE]
    return rule(lambda v: (len(v) > 0 or not non_empty) and all(inner.test(x) for x in v),
                f"{'a non-empty list' if non_empty else 'a list'} whose items are each {inner.text}")


def field_problem(cls: type, name: str, value: Any) -> str | None:
    """Returns "must be <rule>, got <value>" when `value` breaks the rule of field `name` of `cls`; else None."""
    for f in fields(cls):
        if f.name == name:
            found: Rule | None = f.metadata.get(RULE)
            if found is None or value is None:
                return None
            try:
                passed = bool(found.test(value))
            except (TypeError, ValueError):
                passed = False
            return None if passed else f"must be {found.text}, got {value!r}"
    return None


def check_fields(obj: Any) -> None:
    """Returns None when every field of the dataclass `obj` obeys its rule; raises ValueError naming the first."""
    for f in fields(obj):
        problem = field_problem(type(obj), f.name, getattr(obj, f.name))
        if problem:
            raise ValueError(f"{f.name} {problem}")
