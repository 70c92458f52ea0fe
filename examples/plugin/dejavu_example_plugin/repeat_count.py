"""A measurement test: how many records of split A are seen at least `min_repeat` times per epoch.

It has a setting of its own, which a preset sets under measure.options["repeat-count"].
"""

from dataclasses import dataclass

from dejavu.measurements import MeasureContext, MeasurementTest
from dejavu.results import Row


@dataclass(frozen=True)
class RepeatCountConfig:
    min_repeat: int = 2

    def __post_init__(self):
        if self.min_repeat < 1:
            raise ValueError(f"min_repeat must be >= 1, got {self.min_repeat}")


class RepeatCount(MeasurementTest):
    name = "repeat-count"
    Config = RepeatCountConfig

    def run(self, ctx: MeasureContext) -> list[Row]:
        cfg = self.settings(ctx)
        n = sum(r.split == "A" and r.repeat >= cfg.min_repeat for r in ctx.records)
        return [Row(self.name, "all", f"records_repeated>={cfg.min_repeat}", float(n), n=n)]
