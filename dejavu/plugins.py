"""Plugins found through entry points: measurement tests, training recipes and dataset readers.

Another package adds one by naming it under the group's entry points in its pyproject.toml, e.g.

    [project.entry-points."dejavu_bench.tests"]
    my-test = "my_package.my_module:MyTest"

Each group has a kind of object it accepts (a subclass of a base class, or an instance of a
description class) whose `name` is the entry point's name. A plugin that fails to load, is not of
that kind, is named otherwise, or takes a built-in's name is skipped with a warning, so that one
broken package cannot take the built-ins down with it.

(The mitigation registry, mitigations/registry.py, does the same for its group: the mitigations
package imports nothing from this one.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

TESTS_GROUP = "dejavu_bench.tests"
RECIPES_GROUP = "dejavu_bench.recipes"
READERS_GROUP = "dejavu_bench.readers"


def subclass_of(base: type) -> Callable[[object], bool]:
    """Returns a check that an entry point's object is a subclass of `base`."""
    return lambda obj: isinstance(obj, type) and issubclass(obj, base)


def instance_of(kind: type) -> Callable[[object], bool]:
    """Returns a check that an entry point's object is an instance of `kind`."""
    return lambda obj: isinstance(obj, kind)


def load_plugins(group: str, builtins: Mapping[str, T], accepts: Callable[[object], bool], what: str) -> dict[str, T]:
    """Returns the built-ins by name, then every valid plugin of the entry-point `group` by name."""
    known: dict[str, T] = dict(builtins)
    for ep in metadata.entry_points(group=group):
        try:
            obj = ep.load()
        except Exception as err:  # a broken plugin must not take the built-ins down with it
            log.warning("skipping %s plugin %r (%s): %s", what, ep.name, ep.value, err)
            continue
        if not accepts(obj) or getattr(obj, "name", None) != ep.name:
            log.warning("skipping %s plugin %r: %s is not a %s named %r", what, ep.name, ep.value, what, ep.name)
        elif known.get(ep.name, obj) is not obj:
            log.warning("skipping %s plugin %r: the name is taken by %s", what, ep.name, known[ep.name])
        else:
            known[ep.name] = obj
    return known
