"""A sweep: `run` over a grid of recipes x mitigation settings, locally or on Slurm via submitit.

Each grid point is an independent `execute` call. Finished runs are found in the results table
and skipped, trained models come from the model cache, and the store is process-safe, so a
killed sweep resumes where it stopped without duplicating rows.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from bench.run import RunSpec, execute, prepare

LAUNCHERS = ("local", "slurm", "submitit-local")


class LauncherError(RuntimeError):
    """A launcher that cannot run here (e.g. Slurm without `sbatch`)."""


def parse_setting(setting: str) -> tuple[str, ...]:
    """Returns the mitigation specs of one grid setting: 'none' -> (), 'a=1+b=2' -> ('a=1', 'b=2')."""
    setting = setting.strip()
    if setting in ("", "none"):
        return ()
    return tuple(part for part in setting.split("+") if part)


def grid(base: RunSpec, recipes: list[str], settings: list[str], seeds: list[int]) -> list[RunSpec]:
    """Returns one validated RunSpec per (recipe, mitigation setting, seed); a bad one fails before any run."""
    specs = [replace(base, recipe=r, mitigations=parse_setting(s), seed=seed)
             for r in recipes for s in settings for seed in seeds]
    for spec in specs:
        prepare(spec)  # unknown recipe or mitigation, bad strength, bad preset field: fail now
    return specs


def _execute_quietly(spec: RunSpec) -> int:
    return len(execute(spec))


def run_sweep(specs: list[RunSpec], launcher: str = "local", folder: Path = Path(".cache/dejavu-bench/submitit"),
              slurm: dict | None = None) -> list[int]:
    """Returns the number of rows each run stored; runs locally, or as submitit jobs (Slurm or local)."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"unknown launcher {launcher!r}; choose one of {', '.join(LAUNCHERS)}")
    if launcher == "local":
        return [_execute_quietly(s) for s in specs]
    import submitit

    if launcher == "slurm":
        if shutil.which("sbatch") is None:
            raise LauncherError("--launcher slurm needs Slurm, but `sbatch` is not on PATH; run on a Slurm "
                                "login node or use --launcher local")
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(**(slurm or {}))
    else:
        executor = submitit.AutoExecutor(folder=folder, cluster="local")
    executor.update_parameters(timeout_min=(slurm or {}).get("timeout_min", 60 * 24))
    jobs = executor.map_array(_execute_quietly, [replace(s, progress=False) for s in specs])
    return [job.result() for job in jobs]
