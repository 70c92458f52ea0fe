"""A training recipe: Decoupled Contrastive Learning (Yeh et al. 2022), SimCLR with lightly's DCL loss.

It extends SimCLR's own hyperparameters (projector widths, views, temperature) with one of its own,
the weighting of DCLW; a preset sets them under `train_by_recipe.dcl`, e.g.
`--set train_by_recipe.dcl.sigma=0.5 --set train_by_recipe.dcl.projector=[64,32]`.
"""

from dataclasses import dataclass, field

from lightly.loss import DCLLoss, DCLWLoss

from bench.recipes.ssl import SimCLR, SimCLRConfig
from bench.rules import finite


@dataclass(frozen=True)
class DCLConfig(SimCLRConfig):
    # DCLW's von Mises-Fisher weighting of the positive pair (the paper's sigma); None: plain DCL
    sigma: float | None = field(default=None, metadata=finite(0, strictly=True))


class DCL(SimCLR):
    name = "dcl"
    Config = DCLConfig

    def build_criterion(self):
        if self.recipe_cfg.sigma is None:
            return DCLLoss(temperature=self.recipe_cfg.temperature)
        return DCLWLoss(temperature=self.recipe_cfg.temperature, sigma=self.recipe_cfg.sigma)
