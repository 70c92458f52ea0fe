"""Find mitigations by name, parse their command-line form, apply and describe them.

Built-ins are always available; third-party packages add their own through the entry-point
group ``dejavu_bench.mitigations`` (name = the mitigation's name, value = its class)::

    [project.entry-points."dejavu_bench.mitigations"]
    mymit = "mypackage.mymit:MyMitigation"

A plugin only changes the plan in `apply`; applying it (`apply_mitigations`, through
`Mitigation.__call__`) enters it into the model cache key when it sets ``affects_training``
(the default), and refuses it when it claims measurement only but changed training (see
`mitigations.base`).

Spelling of one mitigation: ``NAME[:VARIANT][=STRENGTH][,KEY=VALUE...]``, e.g. ``textrand``
(the default strength of each mitigation), ``textrand:shuffle=0.5``, ``earlystop:val=0.5,patience=3``,
``guillotine,layer=backbone``. A combination joins them with ``+`` and applies them left to
right; ``none`` is the empty combination (the baseline).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from importlib import metadata

from mitigations.base import Mitigation, MitigationError, TrainingPlan
from mitigations.crop import StrongerCrop
from mitigations.earlystop import EarlyStop
from mitigations.guillotine import Guillotine
from mitigations.textrand import TextRandomization

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "dejavu_bench.mitigations"
BUILTINS: dict[str, type[Mitigation]] = {
    cls.name: cls for cls in (TextRandomization, StrongerCrop, EarlyStop, Guillotine)}
#: the name of the empty combination, with strength 0
BASELINE = "none"


def available() -> dict[str, type[Mitigation]]:
    """Returns every known mitigation class by name: built-ins, then entry-point plugins."""
    known = dict(BUILTINS)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as err:  # a broken plugin must not take the built-ins down with it
            log.warning("skipping mitigation plugin %r (%s): %s", ep.name, ep.value, err)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Mitigation)):
            log.warning("skipping mitigation plugin %r: %s is not a Mitigation subclass", ep.name, ep.value)
        elif cls.name != ep.name:
            log.warning("skipping mitigation plugin %r: its class is named %r", ep.name, cls.name)
        elif known.get(ep.name, cls) is not cls:
            log.warning("skipping mitigation plugin %r: the name is taken by %s", ep.name, known[ep.name])
        else:
            known[ep.name] = cls
    return known


def parse_mitigation(spec: str) -> Mitigation:
    """Returns the mitigation a `NAME[:VARIANT][=STRENGTH][,KEY=VALUE...]` string names."""
    head, *option_parts = spec.strip().split(",")
    name_part, has_strength, strength_text = head.partition("=")
    name, _, variant = name_part.strip().partition(":")
    known = available()
    if name not in known:
        raise MitigationError(f"unknown mitigation {name!r} in {spec!r}; known: {', '.join(sorted(known))}")
    cls = known[name]
    options: dict = {"variant": variant.strip()} if variant else {}
    for part in option_parts:
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise MitigationError(f"option {part!r} in {spec!r} is not KEY=VALUE")
        options[key.strip()] = value.strip()
    if not has_strength:
        return cls(cls.default_strength, options)
    try:
        strength = float(strength_text)
    except ValueError:
        raise MitigationError(f"strength {strength_text!r} in {spec!r} is not a number") from None
    return cls(strength, options)


def parse_mitigations(specs: Iterable[str]) -> list[Mitigation]:
    """Returns the mitigations of specs applied together, in order; items may join several with '+'."""
    out = [parse_mitigation(part) for spec in specs for part in spec.split("+")
           if part.strip() and part.strip() != BASELINE]
    names = [m.name for m in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise MitigationError(f"mitigation(s) {repeated} given more than once; give each once")
    return out


def apply_mitigations(plan: TrainingPlan, mitigations: Sequence[Mitigation]) -> TrainingPlan:
    """Returns the plan with the mitigations applied left to right; `plan.applied` records the order."""
    for mitigation in mitigations:
        plan = mitigation(plan)
    return plan


def describe(mitigations: Sequence[Mitigation]) -> tuple[str, float]:
    """Returns the results-table (mitigation, strength): ("none", 0.0) for none, NaN strength for a combination."""
    if not mitigations:
        return BASELINE, 0.0
    label = "+".join(m.spec() for m in mitigations)
    return label, mitigations[0].numeric_strength if len(mitigations) == 1 else math.nan
