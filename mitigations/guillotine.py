"""Guillotine regularization: measure below the projector.

Bordes, Balestriero, Garrido, Bardes, Vincent. *Guillotine Regularization: Why Removing
Layers Is Needed to Improve Generalization in Self-Supervised Learning.* TMLR 2023 (arXiv
2206.13378); Meehan et al. 2023 (arXiv 2304.13850) find that projector embeddings memorize
more than backbone embeddings.

It does not change training: the same trained models are measured at another layer, for
every downstream use (attacks and utility). Strength k is an integer >= 0, the number of
levels below the projector output; recipes resolve it against their ``embedding_layers()``
list (top first) and clamp at the backbone. The ``layer`` option names a layer instead
(strength is then ignored and plotted as NaN).

Command line: ``guillotine`` (k = 1), ``guillotine=2``, ``guillotine,layer=backbone``.
"""

from __future__ import annotations

import math

from mitigations.base import Mitigation, MitigationError, TrainingPlan


class Guillotine(Mitigation):
    """Moves the measurement layer k levels below the projector output, or to a named layer."""

    name = "guillotine"
    strength_range = (0, math.inf)
    affects_training = False
    default_strength = 1
    option_names = ("layer",)

    def __post_init__(self):
        super().__post_init__()
        if not float(self.strength).is_integer():
            raise MitigationError(f"{self.name}: strength {self.strength!r} must be a whole number of levels")
        object.__setattr__(self, "strength", int(self.strength))
        if "layer" in self.options and not str(self.options["layer"]):
            raise MitigationError(f"{self.name}: the layer option needs a layer name")

    @property
    def numeric_strength(self) -> float:
        """Returns k, or NaN when a named layer replaces it."""
        return math.nan if "layer" in self.options else float(self.strength)

    def spec(self) -> str:
        """Returns `guillotine=k`, or `guillotine,layer=NAME` for a named layer."""
        return f"{self.name},layer={self.options['layer']}" if "layer" in self.options else super().spec()

    def apply(self, plan: TrainingPlan) -> TrainingPlan:
        """Returns the plan measuring at the chosen layer; the training key is unchanged."""
        return plan.with_changes(measure_layer=str(self.options["layer"]) if "layer" in self.options
                                 else self.strength)
