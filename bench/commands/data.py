"""`bench data scenes`: build the embedded scenes benchmark, write its preview, print a summary."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.preflight import check_writable_folder
from dejavu.data.manifest import read_manifest
from dejavu.data.preview import write_preview
from dejavu.data.scenes import PRESETS, build_scenes, read_marker
from dejavu.records import SPLITS

PREVIEW = "preview.png"


def register(subparsers) -> None:
    """Adds the `data` command and its `scenes` subcommand."""
    data = subparsers.add_parser("data", help="build or inspect datasets")
    kinds = data.add_subparsers(dest="data_command", required=True, metavar="DATASET")
    scenes = kinds.add_parser("scenes", help="build the embedded scenes benchmark (no download)")
    scenes.add_argument("--out", type=Path, required=True, help="folder to write the dataset into")
    scenes.add_argument("--preset", choices=sorted(PRESETS), default="default")
    scenes.add_argument("--seed", type=int, default=0)
    scenes.add_argument("--workers", type=int, default=1, help="processes rendering images")
    scenes.set_defaults(func=run_scenes)


def summary(out_dir: Path, seconds: float) -> str:
    """Returns a human-readable summary of a built scenes folder."""
    marker = read_marker(out_dir)
    counts = ", ".join(f"{split}={marker['counts'][split]}" for split in SPLITS)
    return "\n".join([
        f"scenes dataset in {out_dir} (config key {marker['key']}, seed {marker['seed']})",
        f"  records per split: {counts}",
        f"  canaries: {marker['n_canaries']} A records repeated x{marker['canary_repeat']}",
        f"  classes ({len(marker['classes'])}): {', '.join(marker['classes'])}",
        f"  scenes ({len(marker['scenes'])}): {', '.join(marker['scenes'])}",
        f"  build seconds: {marker['build_seconds']} (this call: {seconds:.2f})",
        f"  preview: {out_dir / PREVIEW}",
    ])


def run_scenes(args: argparse.Namespace) -> int:
    """Builds the dataset (or reuses an identical build), writes the preview and prints the summary."""
    start = time.perf_counter()
    check_writable_folder(args.out, "--out")
    out_dir = build_scenes(args.out, args.preset, args.seed, workers=args.workers)
    records = read_manifest(out_dir)
    # Show the attacked split first: those are the records whose boxes and crops matter most.
    write_preview(sorted(records, key=lambda r: (r.split != "A", r.id)), out_dir / PREVIEW)
    print(summary(out_dir, time.perf_counter() - start))
    return 0
