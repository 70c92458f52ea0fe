"""Subcommands of `python -m bench`; each module exposes `register(subparsers)`."""
