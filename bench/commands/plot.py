"""`python -m bench plot`: draw the trade-off plots from the results table and print their paths."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.plot import UTILITY_METRICS, MetricChoice, plot_results
from bench.preflight import check_writable_folder
from bench.store import ResultsStore


def register(subparsers) -> argparse.ArgumentParser:
    """Returns the `plot` subcommand parser added to `subparsers`."""
    default = MetricChoice()
    parser = subparsers.add_parser(
        "plot", help="draw memorization/utility trade-off plots from the results table",
        description="Writes tradeoff.{png,svg} (memorization vs utility per recipe, Pareto front marked) "
                    "and strength.{png,svg} (memorization vs mitigation strength) and prints their paths.")
    parser.add_argument("--results", type=Path, default=Path("results/runs.csv"),
                        help="the results table (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="folder for the figures (default: %(default)s)")
    parser.add_argument("--test", default=default.test, help="memorization test (default: %(default)s)")
    parser.add_argument("--metric", default=default.metric, help="memorization metric (default: %(default)s)")
    parser.add_argument("--subset", action="append", dest="subsets", metavar="SUBSET",
                        help="memorization subset; repeat for a fallback order "
                             f"(default: {' then '.join(default.subsets)})")
    parser.add_argument("--utility", action="append", dest="utility", metavar="METRIC",
                        help="utility metric of the trade-off plot; repeat for a fallback order "
                             f"(default: {' then '.join(UTILITY_METRICS)})")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Returns the exit status after plotting: 0 when figures were written, 1 when none, 2 without a table."""
    if not args.results.is_file():
        print(f"no results table at {args.results}; run `python -m bench run` first or pass --results",
              file=sys.stderr)
        return 2
    check_writable_folder(args.out, "--out")
    choice = MetricChoice(args.test, args.metric, tuple(args.subsets or MetricChoice.subsets))
    paths = plot_results(ResultsStore(args.results).read(), args.out, choice, tuple(args.utility or UTILITY_METRICS))
    for path in paths:
        print(path)
    if not paths:
        print("no figure written: the table lacks the metrics (see the warnings above)", file=sys.stderr)
        return 1
    return 0
