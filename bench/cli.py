"""The `bench` command line: one argparse subcommand per module in `bench.commands`.

Each command module exposes `register(subparsers)`, which adds its parser and sets `func` (called with
the parsed arguments; it returns an exit code). Add a command by appending its module to COMMANDS.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import warnings

from bench.commands import data, measure, plot, report, run, sweep
from bench.recipes.train import TrainingDirError
from bench.sweep import LauncherError
from dejavu.records import RecordError
from mitigations.base import MitigationError

COMMANDS = (run, sweep, measure, plot, report, data)
#: errors that describe a bad request or bad input: printed as one line, not as a traceback.
#: Not RuntimeError at large: torch raises it for bugs, and those need their traceback.
USER_ERRORS = (RecordError, MitigationError, TrainingDirError, LauncherError, FileNotFoundError, ValueError,
               KeyError, PermissionError, NotADirectoryError, IsADirectoryError)
#: operating-system errors that the user's machine, not a bug, causes (a full disk, a read-only folder)
USER_ERRNOS = {errno.ENOSPC: "free space on that disk, or point --out and --cache at another one",
               errno.EDQUOT: "free space within your quota, or point --out and --cache elsewhere",
               errno.EROFS: "it is on a read-only file system; point --out and --cache at a writable folder",
               errno.EACCES: "check the file's permissions, or point --out and --cache at a writable folder",
               errno.EPERM: "check the file's permissions, or point --out and --cache at a writable folder",
               errno.ENAMETOOLONG: "use a shorter path"}


def one_line(err: BaseException) -> str:
    """Returns the message of a user error on one line, with what to do about an OS error."""
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])  # str(KeyError) would quote it
    elif isinstance(err, OSError) and err.errno in USER_ERRNOS:
        where = f" ({err.filename})" if err.filename else ""
        text = f"{err.strerror or os.strerror(err.errno)}{where}; {USER_ERRNOS[err.errno]}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def build_parser() -> argparse.ArgumentParser:
    """Returns the top-level parser with every command in COMMANDS registered."""
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description="Benchmark deja vu memorization and its mitigations.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def configure_logging() -> None:
    """Shows the suite's own progress lines and keeps the libraries' banners to warnings."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("dejavu", "bench", "mitigations"):
        logging.getLogger(name).setLevel(logging.INFO)
    # Lightning's "GPU available" banners and tips, repeated for every model, would bury the summary.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # run.json sits beside the checkpoints on purpose (it names the run the folder holds)
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")


def main(argv: list[str] | None = None) -> int:
    """Returns the exit code of the command that `argv` (default: sys.argv) names."""
    configure_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (*USER_ERRORS, OSError) as err:
        user_error = isinstance(err, USER_ERRORS) or (isinstance(err, OSError) and err.errno in USER_ERRNOS)
        if not user_error or os.environ.get("DEJAVU_DEBUG"):  # a bug, or a developer who wants the traceback
            raise
        print(f"{parser.prog} {args.command}: error: {one_line(err)}", file=sys.stderr)
        print("(set DEJAVU_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2
