"""Stronger crop augmentation: smaller random-resized crops.

Meehan, Bordes, Vincent, Chaudhuri, Guo. *Do SSL Models Have Déjà Vu?* 2023 (arXiv
2304.13850): stronger crops lower déjà vu memorization, because with small crops one view
rarely holds the object while the other holds only background, so the model is less pushed
to associate backgrounds with specific objects.

Mapping: strength s in [0, 1] lowers the lower scale bound of RandomResizedCrop to
``max(MIN_SCALE, base_min * (1 - s))``; a bound already below MIN_SCALE is left as is. The
upper bound is unchanged. s = 0 leaves the plan unchanged; s = 1 reaches MIN_SCALE.
Background-aware crops (SPEC section 8, an extension) are not implemented.

Command line: ``crop`` (s = 0.5), ``crop=0.8``.
"""

from __future__ import annotations

from mitigations.base import Mitigation, TrainingPlan

#: the smallest crop area fraction the mitigation sets (2% of the image)
MIN_SCALE = 0.02


def lowered_scale(scale: tuple[float, float], strength: float) -> tuple[float, float]:
    """Returns the crop scale bounds with the lower bound lowered by `strength`."""
    low, high = scale
    return (max(min(MIN_SCALE, low), low * (1.0 - strength)), high)


class StrongerCrop(Mitigation):
    """Lowers the lower scale bound of the training views' random-resized crops."""

    name = "crop"
    strength_range = (0.0, 1.0)
    default_strength = 0.5

    def training_note(self, plan: TrainingPlan) -> None:
        """Returns None: the crop scale, part of the training key, holds the whole change."""
        return None

    def apply(self, plan: TrainingPlan) -> TrainingPlan:
        """Returns the plan with the lowered crop scale."""
        return plan.with_changes(crop_scale=lowered_scale(plan.crop_scale, self.strength))
