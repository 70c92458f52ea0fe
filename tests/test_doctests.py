"""The examples in the docstrings of dejavu, bench and mitigations run as doctests, torchmetrics style.

One case per module whose source holds an example (`>>>`). Modules are found by their files, so
collecting this file imports nothing; a case imports its module only when it runs. Examples must be
tiny: no training, no model loading, no data beyond a few hand-made rows.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import io
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dejavu", "bench", "mitigations")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

#: modules whose public functions carry examples: losing all of a module's examples fails the test
DOCUMENTED = (
    "dejavu.attacks.common",
    "dejavu.attacks.image",
    "dejavu.attacks.vlm",
    "dejavu.knn",
    "dejavu.metrics",
    "dejavu.metrics.image",
    "dejavu.metrics.likelihood",
    "dejavu.metrics.stats",
    "dejavu.metrics.vlm",
    "dejavu.results",
    "dejavu.splits",
)


def module_files() -> dict[str, Path]:
    """Returns {module name: source file} for every module of PACKAGES (packages included, `__main__` not)."""
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__" or any(not p.isidentifier() for p in parts):
                continue
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return dict(sorted(files.items()))


FILES = module_files()
MODULES = list(FILES)
WITH_EXAMPLES = [name for name, path in FILES.items() if ">>>" in path.read_text(encoding="utf-8")]


def doctests(name: str) -> list[doctest.DocTest]:
    """Returns the doctests of module `name` that hold at least one example, in a stable order."""
    module = importlib.import_module(name)
    found = doctest.DocTestFinder(exclude_empty=True).find(module)
    return sorted((t for t in found if t.examples), key=lambda t: t.name)


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name):
    tests = doctests(name)
    if not tests:
        pytest.skip(f"{name} mentions '>>>' but holds no docstring example")
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)
    if runner.failures:
        pytest.fail(f"{runner.failures} of {runner.tries} examples of {name} failed:\n{report.getvalue()}",
                    pytrace=False)


def test_discovery_finds_the_packages():
    assert {"dejavu", "dejavu.metrics.image", "bench.presets", "mitigations.registry"} <= set(MODULES)
    assert not [name for name in MODULES if name.endswith("__main__")]


@pytest.mark.parametrize("name", DOCUMENTED)
def test_documented_modules_keep_their_examples(name):
    assert name in WITH_EXAMPLES, f"{name} has no docstring example ('>>>') any more"
    assert doctests(name), f"{name} has no docstring example that doctest finds"


def test_every_public_metric_function_has_an_example():
    import dejavu.metrics as metrics

    missing = [name for name in metrics.__all__
               if inspect.isfunction(getattr(metrics, name)) and ">>>" not in (getattr(metrics, name).__doc__ or "")]
    assert not missing, f"public metric functions without a docstring example: {missing}"
