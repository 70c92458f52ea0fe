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
    parser.add_argument("--seed", type=seed_number, default=0, help="training seed (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="folder of the results table runs.csv (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=Path(".cache/dejavu-bench"),
                        help="datasets, trained models and embeddings (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.FIELD=VALUE",
                        help="override a preset field, e.g. --set train.epochs=5 (repeatable)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    add_allow_outside(parser)


def add_allow_outside(parser: argparse.ArgumentParser) -> None:
    """Adds --allow-outside-paths, the explicit opt-out of the dataset folder containment check."""
    parser.add_argument("--allow-outside-paths", action="store_true",
                        help="read image paths that resolve outside the dataset's folder (absolute paths, '..', "
                             "symlinks); by default such a record is an error, so a manifest cannot make a run "
                             "read arbitrary files")


def seed_number(text: str) -> int:
    """Returns a seed read from the command line; numpy's generators take only non-negative integers."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if seed < 0:
        raise argparse.ArgumentTypeError(f"{seed} is negative; seeds are integers >= 0")
    return seed


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
                   progress=args.progress, allow_outside_paths=args.allow_outside_paths)
    rows = execute(spec)
    if len(rows):  # a DDP helper process measures nothing and prints nothing
        print_summary(rows, args.out / "runs.csv")
    return 0
