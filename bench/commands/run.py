"""`python -m bench run`: train target and reference, measure them, append to the results table."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.report import print_summary
from bench.run import RunSpec, execute


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options `run` and `sweep` share (data, preset, seed, folders, overrides)."""
    parser.add_argument("--data", default="scenes",
                        help="scenes | manifest:DIR | imagenet:TRAIN,BBOX | coco:IMAGES,INSTANCES,CAPTIONS "
                             "(default: %(default)s, the embedded benchmark)")
    parser.add_argument("--preset", default="default", help="smoke | default | paper (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="folder of the results table runs.csv (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=Path(".cache/dejavu-bench"),
                        help="datasets, trained models and embeddings (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.FIELD=VALUE",
                        help="override a preset field, e.g. --set train.epochs=5 (repeatable)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def register(subparsers) -> argparse.ArgumentParser:
    """Returns the `run` subcommand parser added to `subparsers`."""
    parser = subparsers.add_parser("run", help="train target (A) and reference (B), measure memorization "
                                               "and utility, append rows to the results table")
    parser.add_argument("--recipe", default="clip",
                        help="vicreg | simclr | barlowtwins | byol | supervised | clip (default: %(default)s)")
    parser.add_argument("--mitigation", action="append", default=[], dest="mitigations", metavar="NAME[=STRENGTH]",
                        help="a mitigation plugin, e.g. textrand=0.5; repeat to compose, applied in order")
    add_run_arguments(parser)
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Returns 0 after running one configuration and printing its summary."""
    spec = RunSpec(recipe=args.recipe, mitigations=tuple(args.mitigations), data=args.data, preset=args.preset,
                   seed=args.seed, out=args.out, cache=args.cache, overrides=tuple(args.overrides),
                   progress=args.progress)
    rows = execute(spec)
    print_summary(rows, args.out / "runs.csv")
    return 0
