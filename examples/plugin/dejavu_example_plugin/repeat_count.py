"""A measurement test: how many records of split A are seen at least `min_repeat` times per epoch.

It owns its settings: its Config holds their defaults and checks, and a preset sets them in its own
section, measure["repeat-count"] (`--set measure.repeat-count.min_repeat=3`).
"""

from dataclasses import dataclass, field

from dejavu.measurements import MeasureContext, MeasurementTest
from dejavu.results import Row
from dejavu.rules import at_least, check_fields


@dataclass(frozen=True)
class RepeatCountConfig:
    min_repeat: int = field(default=2, metadata=at_least(1))

    def __post_init__(self):
        check_fields(self)


class RepeatCount(MeasurementTest):
    name = "repeat-count"
    Config = RepeatCountConfig

    def run(self, ctx: MeasureContext) -> list[Row]:
        cfg = self.settings(ctx)
        n = sum(r.split == "A" and r.repeat >= cfg.min_repeat for r in ctx.records)
        return [Row(self.name, "all", f"records_repeated>={cfg.min_repeat}", float(n), n=n)]
