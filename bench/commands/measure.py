"""`python -m bench measure`: measure existing models (one- or two-model) without training."""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import time
from pathlib import Path

import torch

from bench.commands.run import add_allow_outside
from bench.preflight import check_measurable, check_writable_folder, report_long_captions
from bench.presets import load_preset
from bench.recipes.train import load_trained
from bench.record import record_run
from bench.report import print_summary
from bench.run import load_preset_dataset
from dejavu.data import check_spec
from dejavu.data.validate import check_images
from dejavu.encoders import TINY_CLIP_CONFIG, OpenClipEncoder
from dejavu.measure import Models, measure

MODEL_SPECS = "checkpoint:PATH | open_clip:ARCH[@WEIGHTS] | tiny-clip[:SEED]"


def load_model(spec: str, layer: str) -> tuple[object, object | None]:
    """Returns (image encoder at `layer`, joint-space encoder or None) for a model spec."""
    kind, _, rest = spec.partition(":")
    if kind == "checkpoint":
        model = load_trained(Path(rest))
        vlm = model.encoder("projector") if model.module.modality == "image-text" else None
        return model.encoder(layer), vlm
    if kind == "open_clip":
        arch, _, weights = rest.partition("@")
        return (OpenClipEncoder.from_config(arch, weights or None, layer=layer),
                OpenClipEncoder.from_config(arch, weights or None))
    if kind == "tiny-clip":
        torch.manual_seed(int(rest or 0))  # random weights, reproducible
        encoder = OpenClipEncoder.from_config(TINY_CLIP_CONFIG, name=f"tiny-clip-{rest or 0}")
        return (OpenClipEncoder(encoder.model, encoder.image_transform, encoder.tokenizer, layer)
                if layer != "projector" else encoder), encoder
    raise ValueError(f"unknown model spec {spec!r}; use {MODEL_SPECS}")


def register(subparsers) -> argparse.ArgumentParser:
    """Returns the `measure` subcommand parser added to `subparsers`."""
    parser = subparsers.add_parser("measure", help="measure an existing model or checkpoint without training")
    parser.add_argument("--target", required=True, help=f"the model trained on split A: {MODEL_SPECS}")
    parser.add_argument("--reference", default=None,
                        help="a model trained on split B (two-model tests); without it only one-model tests run")
    parser.add_argument("--layer", default="projector", help="image embedding layer (default: %(default)s)")
    parser.add_argument("--data", default="scenes", help="dataset spec, as for `run` (default: %(default)s)")
    parser.add_argument("--preset", default="default", help="measurement settings preset (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--cache", type=Path, default=Path(".cache/dejavu-bench"))
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    add_allow_outside(parser)
    parser.set_defaults(func=main)
    return parser


def repeat_command(args: argparse.Namespace) -> str:
    """Returns the `python -m bench measure` line that measures these models again."""
    words = ["python -m bench measure", f"--target {shlex.quote(args.target)}"]
    if args.reference:
        words.append(f"--reference {shlex.quote(args.reference)}")
    words += [f"--layer {args.layer}", f"--data {shlex.quote(args.data)}", f"--preset {args.preset}"]
    words += [f"--set {shlex.quote(o)}" for o in args.overrides]
    return " ".join(words)


def main(args: argparse.Namespace) -> int:
    """Returns 0 after measuring and printing every applicable test."""
    start = time.perf_counter()
    preset = load_preset(args.preset, list(args.overrides))
    check_spec(args.data)
    check_writable_folder(args.out, "--out")
    check_writable_folder(args.cache, "--cache")
    # Models before data: a mistyped model spec or checkpoint path fails before a dataset is built.
    target, target_vlm = load_model(args.target, args.layer)
    reference, reference_vlm = load_model(args.reference, args.layer) if args.reference else (None, None)
    records = load_preset_dataset(args.data, preset.data, args.cache / "data", allow_outside=args.allow_outside_paths)
    cfg = preset.measure
    check_images(records, max_pixels=preset.data.max_pixels, cache_dir=args.cache / "checked")
    check_measurable(records, cfg, captions=target_vlm is not None)
    if target_vlm is not None:
        report_long_captions(target_vlm, list(records))
    models = Models(target, reference, target_vlm, reference_vlm)
    # keyed by content (weights, layer, image bytes, the settings that differ from their defaults), not by
    # where the files lie
    encoders = (models.target, models.reference, models.target_vlm, models.reference_vlm)
    key = json.dumps({"models": [m.fingerprint if m is not None else None for m in encoders],
                      "data": records.fingerprint(), "measure": preset.measure.changes()}, sort_keys=True, default=list)
    run_id = hashlib.sha256(key.encode()).hexdigest()[:12]
    rows = measure(models, records, cfg,
                   cache_dir=args.cache / "embeddings", progress=args.progress,
                   report_dir=args.out / "reports" / run_id)
    meta = {"run_id": run_id, "recipe": f"external:{args.target}", "mitigation": "none", "strength": 0.0,
            "seed": 0, "dataset": f"{args.data}:{records.fingerprint()}", "preset": args.preset,
            "wall_s": round(time.perf_counter() - start, 1)}
    settings = {"command": repeat_command(args), "preset": preset.name, "description": preset.description,
                "sections": {"measure": preset.measure.as_dict()}}
    print_summary(record_run(args.out, meta, rows, lambda: settings), args.out / "runs.csv")
    return 0
