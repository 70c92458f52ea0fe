"""The worked example of examples/plugin: a test, a recipe and a reader, each one file plus its entry point."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

import dejavu.plugins
from bench.cli import main
from bench.presets import PresetError, load_preset
from bench.recipes import available_recipes, get_recipe
from bench.recipes.train import load_trained
from bench.store import ResultsStore
from dejavu.data import available_readers, check_spec, load_dataset
from dejavu.data.manifest import read_manifest
from dejavu.records import RecordError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin"


def entry_points_of(pyproject: Path) -> dict[str, list]:
    """Returns {group: [entry point]} as `pip install` would register them from the example's pyproject."""
    from importlib.metadata import EntryPoint

    import tomllib

    groups = tomllib.loads(pyproject.read_text())["project"]["entry-points"]
    return {group: [EntryPoint(name, value, group) for name, value in entries.items()]
            for group, entries in groups.items()}


@pytest.fixture
def installed(monkeypatch):
    """Makes the example plugin importable and its entry points found, as if pip-installed."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    groups = entry_points_of(EXAMPLE / "pyproject.toml")
    monkeypatch.setattr(dejavu.plugins.metadata, "entry_points", lambda group: groups.get(group, []))
    yield
    for name in [m for m in sys.modules if m.startswith("dejavu_example_plugin")]:
        del sys.modules[name]


def test_the_example_registers_one_of_each_kind(installed):
    assert "dcl" in available_recipes() and get_recipe("dcl").name == "dcl"
    assert "csv" in available_readers()
    assert "repeat-count" in dejavu.plugins.load_plugins(dejavu.plugins.TESTS_GROUP, {}, lambda obj: True, "test")


def test_without_the_plugin_its_names_are_unknown(monkeypatch):
    monkeypatch.setattr(dejavu.plugins.metadata, "entry_points", lambda group: [])  # even where it is installed
    with pytest.raises(ValueError, match="unknown recipe 'dcl'"):
        get_recipe("dcl")
    with pytest.raises(ValueError, match="unknown dataset kind 'csv'"):
        check_spec("csv:/tmp/x.csv")


def test_the_plugin_recipe_trains_and_the_plugin_test_measures_it(installed, tiny_scenes, tmp_path):
    code = main(["run", "--preset", "smoke", "--recipe", "dcl", "--out", str(tmp_path / "out"),
                 "--cache", str(tmp_path / "cache"), "--no-progress", "--set", "train.epochs=1",
                 "--set", "train_by_recipe.dcl.projector=[64,32]", "--set", "train_by_recipe.dcl.sigma=0.5",
                 "--set", 'measure.tests=["image-two-model", "repeat-count"]',
                 "--set", "measure.repeat-count.min_repeat=2"])
    assert code == 0
    table = ResultsStore(tmp_path / "out" / "runs.csv").read()
    assert set(table.recipe) == {"dcl"} and set(table.test) == {"image-two-model", "repeat-count"}
    count = table[table.test == "repeat-count"]
    assert count.metric.tolist() == ["records_repeated>=2"] and count.n.tolist() == [4]  # smoke's 4 canaries
    (checkpoint,) = (tmp_path / "cache" / "models").glob("dcl-*/target/last.ckpt")
    module = load_trained(checkpoint).module  # its own hyperparameters trained it, and came back with it
    assert (module.recipe_cfg.sigma, module.recipe_cfg.projector, type(module.criterion).__name__) == (
        0.5, (64, 32), "DCLWLoss")


def test_the_plugin_recipe_owns_its_hyperparameters(installed):
    preset = load_preset("smoke", ["train_by_recipe.dcl.temperature=0.2"])
    own = preset.recipe_config("dcl")
    assert (own.temperature, own.sigma, own.projector) == (0.2, None, (2048, 128))  # SimCLR's, and one of its own
    assert preset.recipe_config("simclr").temperature == 0.1  # SimCLR's own is another recipe's
    with pytest.raises(PresetError, match="unknown field train_by_recipe.dcl.tau; valid fields: .*temperature, sigma"):
        load_preset("smoke", ["train_by_recipe.dcl.tau=1"])
    with pytest.raises(PresetError, match="train_by_recipe.dcl.sigma must be a finite number > 0"):
        load_preset("smoke", ["train_by_recipe.dcl.sigma=0"])


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "image", "width", "height", "label", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_the_plugin_reader_reads_checks_and_contains(installed, tiny_scenes):
    source = list(read_manifest(tiny_scenes))[:3]
    rows = [{"id": r.id, "image": str(Path(r.image).relative_to(tiny_scenes)), "width": r.width, "height": r.height,
             "label": r.label, "caption": r.caption} for r in source]
    path = write_csv(tiny_scenes / "records.csv", rows)
    records = load_dataset(f"csv:{path}")
    assert [(r.id, r.image, r.label) for r in records] == [(r.id, r.image, r.label) for r in source]
    write_csv(path, [*rows, {**rows[0], "id": "x", "width": "wide"}])
    with pytest.raises(RecordError, match=r"record 'x', file '.*records.csv:5': width and height must be integers"):
        load_dataset(f"csv:{path}")
    assert load_dataset(f"csv:{path}", on_error="exclude").exclusions == {"bad-size": 1}
    write_csv(path, [{**rows[0], "image": "../elsewhere.png"}])
    with pytest.raises(RecordError, match="outside the dataset folder"):
        load_dataset(f"csv:{path}")
    with pytest.raises(ValueError, match="'csv' takes 1 to 1 comma-separated paths, got 2"):
        check_spec(f"csv:{path},{path}")
