"""The bench command line: bad requests fail at once with one clear line; `measure` runs without training."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.store import ResultsStore
from dejavu.results import SUBSETS, TESTS

ERROR_HINT = "(set DEJAVU_DEBUG=1 for the full traceback)"


@pytest.fixture(autouse=True)
def _user_errors_print_one_line(monkeypatch):
    monkeypatch.delenv("DEJAVU_DEBUG", raising=False)


def folders(tmp_path) -> list[str]:
    """Returns the --out and --cache options pointing into `tmp_path`."""
    return ["--out", str(tmp_path / "results"), "--cache", str(tmp_path / "cache"), "--no-progress"]


BAD_REQUESTS = {
    "unknown recipe": (["run", "--recipe", "nope"], "unknown recipe 'nope'"),
    "unknown mitigation": (["run", "--mitigation", "nope"], "unknown mitigation 'nope'"),
    "strength out of range": (["run", "--mitigation", "textrand=1.5"], "strength 1.5 is outside [0.0, 1.0]"),
    "textrand on an image recipe": (["run", "--recipe", "vicreg", "--mitigation", "textrand=0.5"],
                                    "textrand does not apply to recipe 'vicreg'"),
    "missing manifest": (["run", "--data", "manifest:/nonexistent"], "dataset path '/nonexistent'"),
    "unknown dataset kind": (["run", "--data", "cifar:/tmp"], "unknown dataset kind 'cifar'"),
    "unknown scenes preset": (["run", "--data", "scenes:huge"], "unknown scenes preset 'huge'"),
    "unknown preset field": (["run", "--set", "train.nope=1"], "unknown field train.nope"),
    "unknown preset": (["run", "--preset", "nope"], "unknown preset 'nope'"),
    # the bad grid point comes last: no earlier point may run before the grid is refused
    "bad point in a sweep grid": (["sweep", "--recipes", "clip", "vicreg", "--mitigations", "none", "textrand=0.5"],
                                  "textrand does not apply to recipe 'vicreg'"),
    "missing path in a submitit sweep": (["sweep", "--launcher", "submitit-local", "--data", "manifest:/nonexistent"],
                                         "dataset path '/nonexistent'"),
    "unknown model spec": (["measure", "--target", "resnet:1"], "unknown model spec 'resnet:1'"),
    "missing checkpoint": (["measure", "--target", "checkpoint:/nonexistent.ckpt"],
                           "no checkpoint at /nonexistent.ckpt"),
}


def assert_fails_before_any_work(argv, message, tmp_path, capsys) -> None:
    """Asserts exit code 2, the one-line error naming `message`, and no file written under tmp_path."""
    command, *options = argv  # options last, so that a case's own --preset wins over smoke
    assert main([command, "--preset", "smoke", *folders(tmp_path), *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"python -m bench {command}: error: ") and message in err[0], err
    assert err[1:] == [ERROR_HINT]
    assert list(tmp_path.iterdir()) == []  # no dataset, no model dir, no results table, no job folder


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_fails_before_any_work(case, tmp_path, capsys):
    argv, message = BAD_REQUESTS[case]
    assert_fails_before_any_work(argv, message, tmp_path, capsys)


def test_slurm_sweep_without_sbatch_fails_before_any_run(tmp_path, capsys, monkeypatch):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))  # wherever this runs, no sbatch
    work = tmp_path / "work"
    work.mkdir()
    assert_fails_before_any_work(["sweep", "--launcher", "slurm"], "needs Slurm, but `sbatch` is not on PATH",
                                 work, capsys)


def test_argparse_rejects_unknown_launcher(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--launcher", "pbs"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'pbs'" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    def broken(spec):
        raise RuntimeError("shape mismatch deep inside torch")

    monkeypatch.setattr("bench.commands.run.execute", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        main(["run", "--preset", "smoke", *folders(tmp_path)])


def test_debug_variable_shows_the_traceback_of_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DEJAVU_DEBUG", "1")
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        main(["run", "--recipe", "nope", "--preset", "smoke", *folders(tmp_path)])


# -- measure: external models, no training -------------------------------------------------------
@pytest.fixture(scope="module")
def measure_dirs(tmp_path_factory):
    """Returns a folder whose cache/ holds the smoke dataset and embeddings shared by the measure tests."""
    return tmp_path_factory.mktemp("measure")


def run_measure(dirs, out: str, *models: str) -> int:
    """Returns the exit code of `measure` on the smoke preset, writing out/runs.csv under `dirs`."""
    return main(["measure", *models, "--preset", "smoke", "--out", str(dirs / out),
                 "--cache", str(dirs / "cache"), "--no-progress"])


def test_measure_two_models_runs_and_stores_every_test(measure_dirs, capsys):
    assert run_measure(measure_dirs, "two", "--target", "tiny-clip:1", "--reference", "tiny-clip:2") == 0
    printed = capsys.readouterr().out
    table = ResultsStore(measure_dirs / "two" / "runs.csv").read()
    assert set(table.test) == set(TESTS)
    assert all(test in printed for test in TESTS)
    assert set(table.recipe) == {"external:tiny-clip:1"} and table.run_id.nunique() == 1
    assert set(table.subset) == set(SUBSETS)
    assert f"{len(table)} rows appended to" in printed
    assert not (measure_dirs / "cache" / "models").exists()  # measured, never trained
    # recorded as `bench run` records a run: the same table, and a report page that says how to repeat it
    html = (measure_dirs / "two" / "reports" / table.run_id.iloc[0] / "report.html").read_text()
    assert ("python -m bench measure --target tiny-clip:1 --reference tiny-clip:2 --layer projector "
            "--data scenes --preset smoke") in html


def test_measure_one_model_runs_only_one_model_tests(measure_dirs, capsys):
    assert run_measure(measure_dirs, "one", "--target", "tiny-clip:1") == 0
    printed = capsys.readouterr().out
    table = ResultsStore(measure_dirs / "one" / "runs.csv").read()
    one_model = {"image-one-model-nb", "image-one-model-crop", "vlm-one-model-text", "utility"}
    assert set(table.test) == one_model
    assert "image-two-model" not in printed and "vlm-two-model" not in printed
    assert set(table.recipe) == {"external:tiny-clip:1"}
