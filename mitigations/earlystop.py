"""Early stopping: train for fewer epochs.

Meehan, Bordes, Vincent, Chaudhuri, Guo. *Do SSL Models Have Déjà Vu?* 2023 (arXiv
2304.13850): déjà vu memorization grows with the number of training epochs (their sweep runs
from 50 to 1000 epochs), so stopping earlier trades utility for less memorization.

Strength s in [0, 1) is the fraction of training cut:

- ``fraction`` (default): train ``max(1, ceil((1 - s) * E))`` of the recipe's E epochs.
- ``val``: keep E as the ceiling and add a Lightning ``EarlyStopping`` callback on a
  validation metric (``monitor``, default "val_loss", minimized) with patience
  ``max(1, ceil((1 - s) * E / 10))`` epochs unless the ``patience`` option is given.
  Limitation: it needs a recipe that logs the monitored metric (a validation loop); in
  strict mode Lightning raises "Early stopping conditioned on metric `val_loss` which is not
  available" otherwise, rather than silently training every epoch.

Command line: ``earlystop`` (s = 0.5), ``earlystop=0.75``, ``earlystop:val=0.5,patience=3``.
"""

from __future__ import annotations

import math

from mitigations.base import Mitigation, MitigationError, TrainingPlan


def _ceil(x: float) -> int:
    # rounding first keeps float noise such as (1 - 0.95) * 1000 = 50.00000000000004 from adding an epoch
    return math.ceil(round(x, 9))


def shortened_epochs(max_epochs: int, strength: float) -> int:
    """Returns the number of epochs left after cutting the fraction `strength` of them."""
    return max(1, _ceil((1.0 - strength) * max_epochs))


def derived_patience(max_epochs: int, strength: float) -> int:
    """Returns the validation patience in epochs: a tenth of the uncut share of training."""
    return max(1, _ceil((1.0 - strength) * max_epochs / 10))


class EarlyStop(Mitigation):
    """Cuts training short, by a fixed epoch fraction or on a validation criterion."""

    name = "earlystop"
    strength_range = (0.0, 1.0)  # 1 itself is excluded: it would train no epoch at all
    default_strength = 0.5
    variants = ("fraction", "val")
    option_names = ("monitor", "patience")

    def __post_init__(self):
        super().__post_init__()
        if self.strength >= 1:
            raise MitigationError(f"{self.name}: strength {self.strength!r} must be below 1 "
                                  "(the fraction of training cut)")
        if "patience" in self.options and not str(self.options["patience"]).isdigit():
            raise MitigationError(f"{self.name}: patience {self.options['patience']!r} must be a whole "
                                  "number of epochs")

    @property
    def monitor(self) -> str:
        """Returns the validation metric the val variant watches."""
        return str(self.options.get("monitor", "val_loss"))

    def patience(self, plan: TrainingPlan) -> int:
        """Returns the val variant's patience in epochs for the plan's recipe."""
        return int(self.options.get("patience", derived_patience(plan.max_epochs, self.strength)))

    def training_note(self, plan: TrainingPlan) -> str | None:
        """Returns None for fewer epochs (part of the training key), else the callback's settings.

        The val note keeps the wording of earlier releases, whose cached models are keyed by it.
        """
        if self.variant == "fraction":
            return None
        return f"earlystop:val monitor={self.monitor} patience={self.patience(plan)}"

    def apply(self, plan: TrainingPlan) -> TrainingPlan:
        """Returns the plan with fewer epochs, or with an EarlyStopping callback (variant val)."""
        if self.variant == "fraction":
            return plan.with_changes(max_epochs=shortened_epochs(plan.max_epochs, self.strength))
        # imported here because Lightning is slow to import and only this variant needs it
        from lightning.pytorch.callbacks import EarlyStopping

        stopper = EarlyStopping(monitor=self.monitor, patience=self.patience(plan), mode="min", strict=True)
        return plan.with_changes(callbacks=plan.callbacks + (stopper,))
