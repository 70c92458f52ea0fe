"""The mitigation seam: a named, strength-parameterized change to a training plan (SPEC section 8).

Trained models are cached under `TrainingPlan.training_key()`, so applying a mitigation
(`Mitigation.__call__`, which `registry.apply_mitigations` uses) keeps that key honest by itself:

- ``affects_training = True`` (the default): after `apply`, the mitigation's `training_note`
  (its `spec()` unless it says otherwise) is appended to `plan.training_notes`, which the key
  covers. A mitigation whose whole change is already in the key's other fields (crop scale,
  epochs) returns None there; it is then refused if it changed the caption transforms or the
  callbacks, which the key does not cover.
- ``affects_training = False`` (measurement only): the mitigation is refused if `apply` changed
  anything that shapes training, since models cached without it would be reused.

`apply` itself only changes the plan; it never writes training notes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

#: A caption transform gets the caption and a seeded generator and returns the caption to train on.
CaptionTransform = Callable[[str, np.random.Generator], str]


class MitigationError(ValueError):
    """A mitigation that is unknown, out of range, or does not apply to the recipe."""


@dataclass(frozen=True)
class TrainingPlan:
    """Everything a mitigation may change about how a recipe trains and is measured.

    Recipes read it; mitigations return modified copies. `training_key()` is the part that
    changes the trained weights, so runs that differ only in measurement share models.
    """

    recipe: str
    modality: str  # "image" (SSL / supervised) or "image-text" (CLIP)
    max_epochs: int
    crop_scale: tuple[float, float] = (0.2, 1.0)  # RandomResizedCrop scale bounds of training views
    caption_transforms: tuple[CaptionTransform, ...] = ()
    callbacks: tuple[Any, ...] = ()  # Lightning callbacks added to the Trainer
    measure_layer: str | int = "projector"  # a layer name, or k = k levels below the projector output
    applied: tuple[str, ...] = ()  # the mitigations applied, in order, as their Mitigation.spec() strings
    training_notes: tuple[str, ...] = ()  # training-affecting descriptions, part of the cache key

    #: fields that shape training but stay out of the key; the training notes stand for them
    UNKEYED_TRAINING_FIELDS: ClassVar[tuple[str, ...]] = ("caption_transforms", "callbacks")

    def training_key(self) -> dict:
        """Returns the fields that affect the trained weights (not the measurement)."""
        return {"recipe": self.recipe, "max_epochs": self.max_epochs,
                "crop_scale": list(self.crop_scale), "training_notes": list(self.training_notes)}

    def training_changes(self, other: TrainingPlan) -> list[str]:
        """Returns the names of the training-shaping fields (keyed or not) that differ in `other`."""
        mine, theirs = self.training_key(), other.training_key()
        return ([name for name in mine if mine[name] != theirs[name]]
                + [name for name in self.UNKEYED_TRAINING_FIELDS if getattr(self, name) != getattr(other, name)])

    def with_changes(self, **changes) -> TrainingPlan:
        """Returns a copy of the plan with the given fields replaced."""
        return replace(self, **changes)

    def fresh_callbacks(self) -> list[Any]:
        """Returns new copies of the callbacks for one Trainer.

        Callbacks such as EarlyStopping keep per-fit state, so the target and the reference
        Trainer must not share instances.
        """
        return [copy.deepcopy(c) for c in self.callbacks]


@dataclass(frozen=True)
class Mitigation:
    """Base class: subclasses set the class attributes and implement `apply`.

    `options` holds the variant (key "variant", one of `variants`, the first by default) and
    the mitigation-specific settings named in `option_names`; values may be strings as
    parsed from the command line.
    """

    strength: float
    options: dict = field(default_factory=dict)

    name: ClassVar[str] = ""
    #: inclusive bounds of the strength; 0 is always "no mitigation"
    strength_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    #: modalities the mitigation applies to
    modalities: ClassVar[tuple[str, ...]] = ("image", "image-text")
    #: whether it changes the trained weights: True enters `training_note` into the training key,
    #: False (measurement only, models are reused) forbids changing what shapes training
    affects_training: ClassVar[bool] = True
    #: the strength a bare name (e.g. "crop") stands for
    default_strength: ClassVar[float] = 0.5
    #: the named variants; the first is the default
    variants: ClassVar[tuple[str, ...]] = ()
    #: the option keys, besides "variant", the mitigation reads
    option_names: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        lo, hi = self.strength_range
        if not (isinstance(self.strength, int | float) and not isinstance(self.strength, bool)
                and math.isfinite(self.strength) and lo <= self.strength <= hi):
            raise MitigationError(f"{self.name}: strength {self.strength!r} is outside [{lo}, {hi}]")
        known = (("variant",) if self.variants else ()) + self.option_names
        unknown = sorted(set(self.options) - set(known))
        if unknown:
            raise MitigationError(f"{self.name}: unknown option(s) {unknown}; known: {list(known)}")
        if self.variants and self.variant not in self.variants:
            raise MitigationError(f"{self.name}: unknown variant {self.variant!r}; known: {list(self.variants)}")

    @property
    def variant(self) -> str | None:
        """Returns the selected variant (the default when none was given), or None without variants."""
        return self.options.get("variant", self.variants[0]) if self.variants else None

    @property
    def numeric_strength(self) -> float:
        """Returns the strength as the number plotted on a strength axis (NaN when none applies)."""
        return float(self.strength)

    def spec(self) -> str:
        """Returns the canonical command-line form, `name[:variant]=strength[,key=value...]`."""
        head = self.name
        if self.variants and self.variant != self.variants[0]:
            head += f":{self.variant}"
        extra = "".join(f",{k}={v}" for k, v in sorted(self.options.items()) if k != "variant")
        return f"{head}={self.strength:g}{extra}"

    def check(self, plan: TrainingPlan) -> None:
        """Raises MitigationError when the mitigation does not apply to the plan's recipe."""
        if plan.modality not in self.modalities:
            raise MitigationError(
                f"{self.name} does not apply to recipe {plan.recipe!r} ({plan.modality} model); "
                f"it applies to {', '.join(self.modalities)} recipes")

    def training_note(self, plan: TrainingPlan) -> str | None:
        """Returns what applying this mitigation to `plan` adds to the training key: `spec()` by default.

        Override it to keep an established note, or to return None when the key's other fields
        (crop scale, epochs) already hold the whole change, so the cache key stays as before.
        """
        return self.spec()

    def __call__(self, plan: TrainingPlan) -> TrainingPlan:
        """Returns the plan with this mitigation applied and recorded, in the training key too."""
        self.check(plan)
        out = self.apply(plan)
        changed = plan.training_changes(out)
        if self.affects_training:
            out = self._noted(plan, out, changed)
        elif changed:
            raise MitigationError(
                f"{self.name} declares affects_training = False but changed {', '.join(changed)}, which "
                "shape the trained weights: models cached without it would be reused; declare "
                "affects_training = True")
        return out.with_changes(applied=out.applied + (self.spec(),))

    def _noted(self, plan: TrainingPlan, out: TrainingPlan, changed: list[str]) -> TrainingPlan:
        """Returns `out` with this mitigation's training note appended to its training notes."""
        note = self.training_note(plan)
        if note is not None:
            return out.with_changes(training_notes=out.training_notes + (note,))
        unkeyed = [name for name in changed if name in plan.UNKEYED_TRAINING_FIELDS]
        if unkeyed:
            raise MitigationError(
                f"{self.name} gives no training note but changed {', '.join(unkeyed)}, which the training "
                "key does not cover: models cached without it would be reused; give a training note")
        return out

    def apply(self, plan: TrainingPlan) -> TrainingPlan:  # pragma: no cover - abstract
        raise NotImplementedError
