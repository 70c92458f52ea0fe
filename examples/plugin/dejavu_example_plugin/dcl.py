"""A training recipe: Decoupled Contrastive Learning (Yeh et al. 2022), SimCLR with lightly's DCL loss.

It keeps SimCLR's projector widths, views and temperature, so only the loss is new.
"""

from lightly.loss import DCLLoss

from bench.recipes.ssl import SimCLR


class DCL(SimCLR):
    name = "dcl"
    projector_of = "simclr"  # the train config's projector widths it uses

    def build_criterion(self):
        return DCLLoss(temperature=self.cfg.temperature)
