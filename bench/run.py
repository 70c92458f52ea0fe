"""One bench run: train the target (A) and the reference (B), measure them, store the rows.

Everything that can be wrong with a request (recipe, mitigation, strength, data path, preset
field, output folders) is checked by `prepare` before any data is read, and everything that can be
wrong with the records (images, split sizes, labels, captions, layers) by `check_records` before
any training starts. Trained models are cached by what shapes their weights, so a
measurement-only mitigation (guillotine) or a re-run reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from bench.preflight import (
    check_devices,
    check_measurable,
    check_recipe,
    check_schedule,
    check_training_sets,
    check_writable_folder,
)
from bench.presets import DataSection, Preset, load_preset
from bench.recipes import RecipeConfig, TrainConfig, get_recipe, legacy
from bench.recipes.train import TrainedModel, adopt_training_dir, expanded_length, train_model
from bench.record import record_run
from bench.report_page import run_settings
from bench.store import ResultsStore
from dejavu.data import check_spec, load_dataset
from dejavu.data.validate import check_images
from dejavu.measure import MeasureConfig, Models, measure
from dejavu.records import RecordSet
from dejavu.splits import assign_splits, plant_canaries, training_records
from mitigations.base import TrainingPlan
from mitigations.registry import apply_mitigations, describe, parse_mitigations

log = logging.getLogger(__name__)

#: training settings that change how fast a run goes, not its numbers
NOT_RUN_IDENTITY = ("num_workers", "log_every_n_steps")


@dataclass(frozen=True)
class RunSpec:
    """What a user asks `python -m bench run` for."""

    recipe: str = "clip"
    mitigations: tuple[str, ...] = ()
    data: str = "scenes"
    preset: str = "default"
    seed: int = 0
    out: Path = Path("results")
    cache: Path = Path(".cache/dejavu-bench")
    overrides: tuple[str, ...] = ()
    progress: bool = True
    allow_outside_paths: bool = False  # trust the dataset's image paths that lead out of its folder


@dataclass
class PreparedRun:
    """A validated run: the preset, the mitigated plan, and the run's identity."""

    spec: RunSpec
    preset: Preset
    plan: TrainingPlan
    mitigation: str
    strength: float
    mitigations: list = field(default_factory=list)

    @property
    def train(self) -> TrainConfig:
        """Returns the recipe's shared training config under this preset."""
        return self.preset.train_config(self.spec.recipe)

    @property
    def recipe_cfg(self) -> RecipeConfig:
        """Returns the recipe's own hyperparameters under this preset (before mitigations)."""
        return self.preset.recipe_config(self.spec.recipe)

    def run_id(self, dataset_fingerprint: str) -> str:
        """Returns a stable id for what shapes the run's numbers: recipe, mitigations, data content, settings, seed.

        The settings enter as the recipe's resolved preset sections (the fields that differ from
        their defaults), not as the preset's name and the --set overrides, so two spellings of one
        configuration are one run, and a knob added later leaves earlier ids alone; settings that
        only change how fast it runs (loader workers, logging) are left out. The data enters by its content
        fingerprint, so the id does not depend on where the data or the cache lives.
        """
        settings = self.preset.resolved_changes(self.spec.recipe)
        settings["train"] = {k: v for k, v in settings["train"].items() if k not in NOT_RUN_IDENTITY}
        key = json.dumps({"recipe": self.spec.recipe, "mitigation": self.mitigation, "data": dataset_fingerprint,
                          "settings": settings, "seed": self.spec.seed}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:12]


def training_plan(recipe: str, train: TrainConfig, recipe_cfg: RecipeConfig) -> TrainingPlan:
    """Returns the unmitigated training plan of `recipe`: the shared config's epochs, the recipe's crop scale."""
    return TrainingPlan(recipe=recipe, modality=get_recipe(recipe).modality, max_epochs=train.epochs,
                        crop_scale=tuple(recipe_cfg.crop_scale))


def prepare(spec: RunSpec) -> PreparedRun:
    """Returns the validated run; raises a clear error for any bad request before training."""
    get_recipe(spec.recipe)
    check_spec(spec.data)  # a sweep's jobs must not find a mistyped path only once they start
    check_writable_folder(spec.out, "--out")
    check_writable_folder(spec.cache, "--cache")
    preset = load_preset(spec.preset, list(spec.overrides))
    mitigations = parse_mitigations(list(spec.mitigations))
    train = preset.train_config(spec.recipe)
    plan = apply_mitigations(training_plan(spec.recipe, train, preset.recipe_config(spec.recipe)), mitigations)
    check_schedule(train, plan)
    check_devices(train)
    name, strength = describe(mitigations)
    return PreparedRun(spec, preset, plan, name, strength, mitigations)


def load_records(prepared: PreparedRun) -> RecordSet:
    """Returns the run's records with A/B/public/eval splits assigned and checked."""
    spec, preset = prepared.spec, prepared.preset
    # assign_splits logs the summary
    return load_preset_dataset(spec.data, preset.data_section(spec.recipe), spec.cache / "data",
                               allow_outside=spec.allow_outside_paths)


def load_preset_dataset(data: str, section: DataSection, root: Path, *, allow_outside: bool = False) -> RecordSet:
    """Returns the records of a data spec with splits assigned (and canaries planted, where the section says)."""
    if data == "scenes":
        data = f"scenes:{section.scenes}"
    records = load_dataset(data, root=root, seed=section.seed, scenes_overrides=section.params,
                           allow_outside=allow_outside)
    per_class = section.per_class if section.per_class is not None else 10**9
    records = assign_splits(records, per_class=per_class, seed=section.seed)
    if section.canaries is not None:
        records = plant_canaries(records, section.canaries, section.canary_repeat, section.seed)
        log.info("planted %d canaries in A, each seen %dx per epoch", section.canaries, section.canary_repeat)
    return records


def check_records(prepared: PreparedRun, records: RecordSet) -> None:
    """Returns None when the records can train both models and feed every test; raises a clear error otherwise."""
    spec, preset = prepared.spec, prepared.preset
    check_images(records, max_pixels=preset.data_section(spec.recipe).max_pixels, cache_dir=spec.cache / "checked")
    splits = check_training_sets(records, prepared.train.batch_size)
    check_recipe(spec.recipe, prepared.train, prepared.recipe_cfg, prepared.plan, splits)
    check_measurable(records, measure_config(prepared), captions=prepared.plan.modality == "image-text")


def measure_config(prepared: PreparedRun) -> MeasureConfig:
    """Returns the measurement settings of the run's recipe under its preset."""
    return prepared.preset.measure_section(prepared.spec.recipe)


def model_dir(prepared: PreparedRun, records: RecordSet, role: str, *, data_key: str | None = None,
              train_key: dict | None = None) -> Path:
    """Returns the cache folder of the model `role` (target or reference) for this training setup.

    The key holds the plan, the shared config and the recipe's own one (not other recipes'), the data
    and the seed. `data_key` and `train_key` replace the records' fingerprint and the configs, to find
    the folder an earlier release keyed otherwise.
    """
    configs = train_key or {"train": prepared.train.as_dict(), "recipe": prepared.recipe_cfg.as_dict()}
    key = json.dumps({"plan": prepared.plan.training_key(), **configs, "data": data_key or records.fingerprint(),
                      "seed": prepared.spec.seed}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return prepared.spec.cache / "models" / f"{prepared.spec.recipe}-{digest}" / role


def earlier_model_dirs(prepared: PreparedRun, records: RecordSet, role: str) -> list[Path]:
    """Returns the folders earlier releases cached this model in, newest layout first.

    Those keyed it by the flat config of every recipe (bench.recipes.legacy), by the data's content and,
    before that, by its image paths.
    """
    recipe = get_recipe(prepared.spec.recipe)
    flat = legacy.flat_config(recipe, prepared.train, prepared.preset.recipe_config)
    if flat is None:
        return []
    return [model_dir(prepared, records, role, data_key=data, train_key={"train": flat})
            for data in (records.fingerprint(), records.path_fingerprint())]


def train_pair(prepared: PreparedRun, records: RecordSet) -> tuple[TrainedModel, TrainedModel]:
    """Returns the target trained on A and the reference trained on B for as many steps."""
    a, b = training_records(records, "A"), training_records(records, "B")
    cfg, recipe_cfg, seed, plan = prepared.train, prepared.recipe_cfg, prepared.spec.seed, prepared.plan
    for role, trained_on in (("target", a), ("reference", b)):  # models cached by earlier releases
        for earlier in earlier_model_dirs(prepared, records, role):
            adopt_training_dir(earlier, model_dir(prepared, records, role), trained_on)
    target = train_model(plan, a, cfg, recipe_cfg, model_dir(prepared, records, "target"), seed,
                         progress=prepared.spec.progress)
    reference = train_model(plan, b, cfg, recipe_cfg, model_dir(prepared, records, "reference"), seed,
                            epoch_length=expanded_length(a), progress=prepared.spec.progress)
    return target, reference


def models_for(prepared: PreparedRun, target: TrainedModel, reference: TrainedModel) -> Models:
    """Returns the encoders to measure: the plan's layer for images, the joint space for captions."""
    layer = prepared.plan.measure_layer
    vlm = prepared.plan.modality == "image-text"
    image = [m.encoder(layer) for m in (target, reference)]
    if not vlm:
        joint = [None, None]
    elif layer == "projector":  # the image encoder is the joint one: reuse it, not fingerprint the weights twice
        joint = image
    else:
        joint = [m.encoder("projector") for m in (target, reference)]
    return Models(target=image[0], reference=image[1], target_vlm=joint[0], reference_vlm=joint[1])


def execute(spec: RunSpec) -> pd.DataFrame:
    """Returns the stored rows of one run, training and measuring what the cache does not hold."""
    start = time.perf_counter()
    prepared = prepare(spec)
    records = load_records(prepared)
    check_records(prepared, records)  # first: the run id hashes the image bytes this checks
    store = ResultsStore(spec.out / "runs.csv")
    run_id = prepared.run_id(records.fingerprint())
    if store.has_run(run_id):  # finished before (a resumed sweep, or a repeated command)
        log.info("run %s is already in %s; not re-measured", run_id, store.path)
        stored = store.read()
        return stored[stored.run_id == run_id]
    target, reference = train_pair(prepared, records)
    if rank_zero_only.rank != 0:  # a DDP helper process, started by training: the launching one measures
        return pd.DataFrame()
    cfg = measure_config(prepared)
    rows = measure(models_for(prepared, target, reference), records, cfg,
                   cache_dir=spec.cache / "embeddings", progress=spec.progress,
                   report_dir=spec.out / "reports" / run_id)
    meta = {"run_id": run_id, "recipe": spec.recipe,
            "mitigation": prepared.mitigation, "strength": prepared.strength, "seed": spec.seed,
            "dataset": f"{spec.data}:{records.fingerprint()}", "preset": spec.preset,
            "wall_s": round(time.perf_counter() - start, 1)}
    return record_run(spec.out, meta, rows, lambda: run_settings(prepared.preset, spec.recipe, data=spec.data,
                                                                mitigations=spec.mitigations,
                                                                overrides=spec.overrides))
