"""`python -m bench report RUN_ID`: write a run's self-contained HTML report page and print its path."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.report_page import PAGE, find_run, write_page
from bench.screenshot import screenshot
from bench.store import ResultsStore


def register(subparsers) -> argparse.ArgumentParser:
    """Returns the `report` subcommand parser added to `subparsers`."""
    parser = subparsers.add_parser(
        "report", help="write a run's report page (HTML, no external requests)",
        description=f"Writes <out>/reports/<run_id>/{PAGE}: the run's configuration and package versions, every "
                    "number with its 95% interval, the most memorized records, any reconstructions, and the "
                    "run on its recipe's trade-off plot. Every run writes it too; this redraws it.")
    parser.add_argument("run_id", metavar="RUN_ID", help="a run id of the results table, or a unique prefix of one")
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="folder of the results table runs.csv (default: %(default)s)")
    parser.add_argument("--screenshot", action="store_true",
                        help="also render the page to report.png beside it with a headless chromium")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Returns 0 after writing the page (and its screenshot), 2 when the run is not in the table."""
    table_path = args.out / "runs.csv"
    try:
        run_id = find_run(ResultsStore(table_path).read(), args.run_id, table_path)
    except KeyError as err:
        print(f"python -m bench report: error: {err.args[0]}", file=sys.stderr)
        return 2
    page = write_page(args.out, run_id)
    print(page)
    if args.screenshot:
        print(screenshot(page, page.with_suffix(".png")))
    return 0
