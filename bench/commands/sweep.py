"""`python -m bench sweep`: run a grid of recipes x mitigation settings; resumable."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands.run import add_run_arguments, seed_number
from bench.run import RunSpec
from bench.sweep import LAUNCHERS, grid, run_sweep


def register(subparsers) -> argparse.ArgumentParser:
    """Returns the `sweep` subcommand parser added to `subparsers`."""
    parser = subparsers.add_parser(
        "sweep", help="run a grid of recipes x mitigation settings (finished runs are skipped)",
        description="Each --mitigations item is one setting: 'none', 'textrand=0.5', or a composition "
                    "'textrand=0.5+earlystop=0.5'.")
    parser.add_argument("--recipes", nargs="+", default=["clip"], help="recipes (default: %(default)s)")
    parser.add_argument("--mitigations", nargs="+", default=["none"], help="settings (default: %(default)s)")
    parser.add_argument("--seeds", nargs="+", type=seed_number, default=None, help="seeds (default: --seed)")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="local",
                        help="local: one after another here; slurm: a submitit job array; "
                             "submitit-local: submitit's local executor (default: %(default)s)")
    parser.add_argument("--slurm-partition", default=None, help="Slurm partition for --launcher slurm")
    parser.add_argument("--slurm-gpus", type=int, default=1, help="GPUs per Slurm job (default: %(default)s)")
    add_run_arguments(parser)
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Returns 0 after every grid point has run (or was found finished)."""
    base = RunSpec(data=args.data, preset=args.preset, seed=args.seed, out=args.out, cache=args.cache,
                   overrides=tuple(args.overrides), progress=args.progress,
                   allow_outside_paths=args.allow_outside_paths)
    specs = grid(base, args.recipes, args.mitigations, args.seeds or [args.seed])
    slurm = {"slurm_partition": args.slurm_partition, "gpus_per_node": args.slurm_gpus}
    slurm = {k: v for k, v in slurm.items() if v is not None}
    counts = run_sweep(specs, args.launcher, folder=args.cache / "submitit", slurm=slurm)
    print(f"sweep finished: {len(specs)} runs, {sum(counts)} rows in {Path(args.out) / 'runs.csv'}")
    return 0
