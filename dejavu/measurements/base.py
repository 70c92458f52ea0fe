"""The seam every measurement test plugs into: a name, what it needs, and `run` returning rows.

A test reads what it needs from a `MeasureContext`: the models, the records, the settings, and the
intermediate results several tests share (the background crops, the target's votes), each computed
once per measurement by whichever test asks first.

    >>> class CountCanaries(MeasurementTest):
    ...     name = "count-canaries"
    ...     def run(self, ctx):
    ...         n = sum(r.is_canary for r in ctx.records)
    ...         return [Row(self.name, "canary", "count", float(n), n=n)]
    >>> CountCanaries().missing(Models(target=None))  # needs neither a reference nor a text tower
    >>> class NeedsReference(CountCanaries):
    ...     needs_reference = True
    >>> NeedsReference().missing(Models(target=None))
    'no reference model'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from dejavu.records import RecordSet
from dejavu.results import Row

if TYPE_CHECKING:
    from dejavu.measure import MeasureConfig

T = TypeVar("T")


@dataclass(frozen=True)
class Models:
    """The encoders a measurement uses.

    `target`/`reference` embed images at the measured layer (the image test and the linear
    probe); `target_vlm`/`reference_vlm` are the same models at the joint image-text space (the
    caption test and zero-shot), None for image-only models. `reference` None: one-model tests only.
    """

    target: Any
    reference: Any | None = None
    target_vlm: Any | None = None
    reference_vlm: Any | None = None
    text_model: Any | None = None  # the text-only reference; loaded on demand when None


@dataclass
class MeasureContext:
    """One measurement's inputs, and the intermediate results its tests share."""

    models: Models
    records: RecordSet
    cfg: MeasureConfig
    cache_dir: Path | None = None
    progress: bool = True
    report_dir: Path | None = None
    _shared: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def embed_options(self) -> dict[str, Any]:
        """Returns the keyword arguments every embedding call of this measurement takes."""
        return {"cache_dir": self.cache_dir, "progress": self.progress}

    def shared(self, key: str, compute: Callable[[], T]) -> T:
        """Returns the intermediate result `key`, computed by `compute` the first time it is asked for."""
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]

    def wants(self, test: str) -> bool:
        """True when `test` is among the tests this measurement runs."""
        return test in self.cfg.tests


class MeasurementTest:
    """Base class of a measurement test: subclasses set `name` (and what they need) and implement `run`.

    Register a test of another package under the entry-point group `dejavu_bench.tests`
    (see dejavu.measurements.available_tests); it then runs wherever its name is in the
    measure section's `tests`.
    """

    name: ClassVar[str]
    #: the dataclass of this test's own settings (None: it has none): its defaults and checks. A preset
    #: sets them under measure.<name>; `settings(ctx)` returns them, the shared groups filled in
    Config: ClassVar[type | None] = None
    #: the tests whose settings this one reads besides its own (the settings a family of tests shares)
    reads: ClassVar[tuple[str, ...]] = ()
    needs_reference: ClassVar[bool] = False  # a second model, trained on split B
    needs_text: ClassVar[bool] = False  # the target's image-text space (a vision-language model)
    needs_reference_text: ClassVar[bool] = False  # the reference's image-text space too

    def settings(self, ctx: MeasureContext) -> Any:
        """Returns this test's Config under the measurement's settings (None when it has none)."""
        return ctx.cfg.settings_of(type(self))

    def missing(self, models: Models) -> str | None:
        """Returns why this test cannot run on `models` (None when it can)."""
        if self.needs_reference and models.reference is None:
            return "no reference model"
        if self.needs_text and models.target_vlm is None:
            return "the target has no text tower"
        if self.needs_reference_text and models.reference_vlm is None:
            return "no reference vision-language model"
        return None

    def run(self, ctx: MeasureContext) -> list[Row]:
        """Returns this test's rows (test, subset, metric, value, interval, n)."""
        raise NotImplementedError
