"""The measurement tests, registered by name: the built-ins, then those other packages add.

A package adds a test by subclassing `MeasurementTest` and naming the class under the entry-point
group `dejavu_bench.tests` in its pyproject.toml:

    [project.entry-points."dejavu_bench.tests"]
    my-test = "my_package.my_module:MyTest"

It then runs wherever `my-test` is in the measure section's `tests` (`--set measure.tests=[...]`).

    >>> list(available_tests())[:3]
    ['image-two-model', 'image-one-model-nb', 'image-one-model-crop']
"""

from __future__ import annotations

from dejavu.measurements.base import MeasureContext, MeasurementTest, Models
from dejavu.measurements.caption import CaptionOneModelTextTest, CaptionTwoModelTest
from dejavu.measurements.image import CropClassifierTest, ImageTwoModelTest, NaiveBayesTest
from dejavu.measurements.reconstruction import ImageReconstructionTest
from dejavu.measurements.utility import UtilityTest
from dejavu.plugins import TESTS_GROUP, load_plugins, subclass_of

__all__ = ["ENTRY_POINT_GROUP", "MeasureContext", "MeasurementTest", "Models", "available_tests", "get_tests"]

ENTRY_POINT_GROUP = TESTS_GROUP
#: the built-in tests, in the order they run and are reported; those after UtilityTest are opt-in (not in
#: dejavu.results.TESTS, the default list)
BUILTINS: dict[str, type[MeasurementTest]] = {cls.name: cls for cls in (
    ImageTwoModelTest, NaiveBayesTest, CropClassifierTest, CaptionTwoModelTest, CaptionOneModelTextTest,
    UtilityTest, ImageReconstructionTest)}


def available_tests() -> dict[str, type[MeasurementTest]]:
    """Returns every known test class by name: the built-ins, then the entry-point plugins."""
    return load_plugins(ENTRY_POINT_GROUP, BUILTINS, subclass_of(MeasurementTest), "test")


def get_tests(names: tuple[str, ...] | list[str]) -> list[MeasurementTest]:
    """Returns the named tests in run order; an unknown name raises ValueError listing the known ones."""
    known = available_tests()
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown tests {unknown}; choose from {', '.join(known)}")
    return [cls() for name, cls in known.items() if name in names]
