"""What the image and vision-language tests share: subsets, class indices, interval rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dejavu.files import atomic_path  # noqa: F401  (the report writers import it from here)
from dejavu.metrics import (
    QUADRANTS,
    AttackedSplit,
    bootstrap_dejavu_gap,
    bootstrap_difference,
    bootstrap_indices,
    bootstrap_quadrants,
    direction_gap,
    direction_gap_stat,
    quadrant_masks,
    quadrants,
)
from dejavu.metrics.stats import percentile_interval
from dejavu.records import RecordError, RecordSet
from dejavu.results import Row


@dataclass(frozen=True)
class StatsConfig:
    """How population numbers get their intervals and how the canary subset is tested."""

    n_bootstrap: int = 200
    n_permutations: int = 1000
    seed: int = 0


def subset_masks(canary: np.ndarray) -> dict[str, np.ndarray]:
    """Returns the `all`, `canary` and `non-canary` masks for a per-record canary flag."""
    canary = np.asarray(canary, dtype=bool)
    return {"all": np.ones_like(canary), "canary": canary, "non-canary": ~canary}


def class_index(*record_sets: RecordSet) -> dict[str, int]:
    """Returns label -> class number over the labels of all records, in sorted label order."""
    labels = sorted({r.label for rs in record_sets for r in rs if r.label is not None})
    return {label: i for i, label in enumerate(labels)}


def require_labels(records: RecordSet, role: str) -> None:
    """Raises RecordError naming the first record of `records` without a label."""
    for r in records:
        if r.label is None:
            raise RecordError(f"{role} record has no label; the image test needs a label for every {role} record",
                              record_id=r.id, file=r.source or r.image)


def excluded_rows(test: str, excluded: Counter, prefix: str = "") -> list[Row]:
    """Returns one `<prefix>excluded_<reason>` row per reason, its value and n the number of records left out."""
    return [Row(test, "all", f"{prefix}excluded_{reason}", float(n), n=n) for reason, n in sorted(excluded.items())]


def pct(p: float) -> str:
    """Returns the percent spelling used in metric names: 0.05 -> '5', 1.0 -> '100'."""
    return f"{p * 100:g}"


def gap_rows(test: str, subset: str, split_a: AttackedSplit, split_b: AttackedSplit | None,
             ps: Sequence[float], stats: StatsConfig, prefix: str = "") -> list[Row]:
    """Returns dv_gap@p, target/reference accuracies and the quadrants, each with its interval.

    With both splits it is the symmetrized two-model test (SPEC section 3). With `split_b` None or
    empty (a one-model test, or the canaries, which exist only in A) it is the one-direction gap.
    `prefix` starts every metric name (`null_` for the same rows on the eval records).
    """
    rows: list[Row] = []
    if len(split_a) == 0:
        return rows
    idx_a = bootstrap_indices(len(split_a), stats.n_bootstrap, stats.seed)
    if split_b is not None and len(split_b) > 0:
        idx_b = bootstrap_indices(len(split_b), stats.n_bootstrap, stats.seed + 1)
        gaps = bootstrap_dejavu_gap(split_a, split_b, ps, idx_a, idx_b)
        for p in ps:
            for part, name in (("gap", "dv_gap"), ("target", "target_acc"), ("reference", "reference_acc")):
                rows.append(gaps[p][part].row(test, subset, f"{prefix}{name}@{pct(p)}"))
        for name, interval in bootstrap_quadrants(split_a, split_b, idx_a, idx_b).items():
            rows.append(interval.row(test, subset, f"{prefix}{name}"))
        return rows
    n = len(split_a)
    for p in ps:
        samples = direction_gap_stat(split_a, p)(idx_a)
        rows.append(percentile_interval(direction_gap(split_a, p), samples, n)
                    .row(test, subset, f"{prefix}dv_gap@{pct(p)}"))
        rows.append(Row(test, subset, f"{prefix}target_acc@{pct(p)}", float(split_a.target_accuracy([p])[0]), n=n))
        rows.append(Row(test, subset, f"{prefix}reference_acc@{pct(p)}", float(split_a.reference_accuracy([p])[0]),
                        n=n))
    point = quadrants(split_a.correct_target, split_a.correct_reference)
    masks = quadrant_masks(split_a.correct_target, split_a.correct_reference)
    for name in QUADRANTS:
        samples = masks[name][idx_a].mean(axis=1)
        rows.append(percentile_interval(point[name], samples, n).row(test, subset, f"{prefix}{name}"))
    return rows


def corrected_gap_rows(test: str, subset: str, split: AttackedSplit, null: AttackedSplit, ps: Sequence[float],
                       stats: StatsConfig) -> list[Row]:
    """Returns corrected_dv_gap@p: the one-direction gap on `split` minus the same gap on the `null` records.

    A one-model reference is a different kind of predictor from the target, so even on records
    neither saw (the null) the two differ; only the part of the gap above that is memorization
    (SPEC section 5, "Null for one-model tests").
    """
    if len(split) == 0 or len(null) == 0:
        return []
    return [bootstrap_difference(direction_gap_stat(split, p), len(split), direction_gap_stat(null, p), len(null),
                                 stats.n_bootstrap, stats.seed).row(test, subset, f"corrected_dv_gap@{pct(p)}")
            for p in ps]
