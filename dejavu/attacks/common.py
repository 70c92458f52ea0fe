"""What the image and vision-language tests share: subsets, class indices, interval rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

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
from dejavu.rules import at_least

#: the fewest bootstrap resamples a configured measurement reports intervals from (SPEC section 6)
MIN_BOOTSTRAP = 200


@dataclass(frozen=True)
class StatsConfig:
    """How population numbers get their intervals and how the canary subset is tested: the measurement's `stats`.

    The typed loader (`dejavu.measure.MeasureConfig.from_dict`) holds these to their rules; code may
    still build one with fewer resamples for a quick check, as the examples here do.
    """

    n_bootstrap: int = field(default=MIN_BOOTSTRAP, metadata=at_least(MIN_BOOTSTRAP))
    # random subsets of A in the canary-gap test
    n_permutations: int = field(default=1000, metadata=at_least(1))
    # the bootstrap resamples, the permutation tests, the one-model estimators and the linear probe
    seed: int = field(default=0, metadata=at_least(0))


def subset_masks(canary: np.ndarray) -> dict[str, np.ndarray]:
    """Returns the `all`, `canary` and `non-canary` masks for a per-record canary flag.

    Example:
        >>> from dejavu.attacks.common import subset_masks
        >>> {name: mask.tolist() for name, mask in subset_masks([True, False, False]).items()}
        {'all': [True, True, True], 'canary': [True, False, False], 'non-canary': [False, True, True]}
    """
    canary = np.asarray(canary, dtype=bool)
    return {"all": np.ones_like(canary), "canary": canary, "non-canary": ~canary}


def class_index(*record_sets: RecordSet) -> dict[str, int]:
    """Returns label -> class number over the labels of all records, in sorted label order.

    Example:
        >>> from dejavu.attacks.common import class_index
        >>> from dejavu.records import Record, RecordSet
        >>> public = RecordSet([Record("p1", "p1.png", 8, 8, "dog"), Record("p2", "p2.png", 8, 8)])
        >>> class_index(public, RecordSet([Record("a1", "a1.png", 8, 8, "cat")]))  # p2 has no label
        {'cat': 0, 'dog': 1}
    """
    labels = sorted({r.label for rs in record_sets for r in rs if r.label is not None})
    return {label: i for i, label in enumerate(labels)}


def require_labels(records: RecordSet, role: str) -> None:
    """Raises RecordError naming the first record of `records` without a label.

    Example:
        >>> from dejavu.attacks.common import require_labels
        >>> from dejavu.records import Record, RecordSet
        >>> public = RecordSet([Record("p1", "p1.png", 8, 8, "dog"), Record("p2", "p2.png", 8, 8)])
        >>> require_labels(public, "public")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dejavu.records.RecordError: record 'p2', file 'p2.png': public record has no label; the image test ...
    """
    for r in records:
        if r.label is None:
            raise RecordError(f"{role} record has no label; the image test needs a label for every {role} record",
                              record_id=r.id, file=r.source or r.image)


def excluded_rows(test: str, excluded: Counter, prefix: str = "") -> list[Row]:
    """Returns one `<prefix>excluded_<reason>` row per reason, its value and n the number of records left out.

    Example:
        >>> from collections import Counter
        >>> from dejavu.attacks.common import excluded_rows
        >>> [(row.metric, row.n) for row in excluded_rows("image-two-model", Counter(tiny_crop=1, no_boxes=3))]
        [('excluded_no_boxes', 3), ('excluded_tiny_crop', 1)]
    """
    return [Row(test, "all", f"{prefix}excluded_{reason}", float(n), n=n) for reason, n in sorted(excluded.items())]


def pct(p: float) -> str:
    """Returns the percent spelling used in metric names: 0.05 -> '5', 1.0 -> '100'.

    Example:
        >>> from dejavu.attacks.common import pct
        >>> pct(0.05), pct(1.0), pct(0.005)
        ('5', '100', '0.5')
    """
    return f"{p * 100:g}"


def gap_rows(test: str, subset: str, split_a: AttackedSplit, split_b: AttackedSplit | None,
             ps: Sequence[float], stats: StatsConfig, prefix: str = "") -> list[Row]:
    """Returns dv_gap@p, target/reference accuracies and the quadrants, each with its interval.

    With both splits it is the symmetrized two-model test (SPEC section 3). With `split_b` None or
    empty (a one-model test, or the canaries, which exist only in A) it is the one-direction gap.
    `prefix` starts every metric name (`null_` for the same rows on the eval records).

    Example:
        The splits of `dejavu.metrics.dejavu_gap`, whose DV(100%) is 0.125:

        >>> from dejavu.attacks.common import StatsConfig, gap_rows
        >>> from dejavu.metrics import AttackedSplit
        >>> a = AttackedSplit(["a1", "a2", "a3", "a4"], [1, 1, 0, 0], [.9, .8, .2, .1],
        ...                   [1, 0, 0, 0], [.1, .9, .8, .2])
        >>> b = AttackedSplit(["b1", "b2"], [1, 0], [.9, .1], [0, 1], [.5, .6])
        >>> rows = gap_rows("image-two-model", "all", a, b, [1.0], StatsConfig(n_bootstrap=50))
        >>> [(row.metric, row.value) for row in rows]  # doctest: +NORMALIZE_WHITESPACE
        [('dv_gap@100', 0.125), ('target_acc@100', 0.5), ('reference_acc@100', 0.375),
         ('memorized', 0.375), ('correlated', 0.125), ('misrepresented', 0.25), ('unassociated', 0.25)]
        >>> {row.n for row in rows}  # the records of both splits
        {6}
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

    Example:
        A one-direction gap of 1/2 - 1/4 on the attacked records, of 1/2 - 1/2 on the null:

        >>> from dejavu.attacks.common import StatsConfig, corrected_gap_rows
        >>> from dejavu.metrics import AttackedSplit
        >>> attacked = AttackedSplit(["a1", "a2", "a3", "a4"], [1, 1, 0, 0], [.9, .8, .2, .1],
        ...                          [1, 0, 0, 0], [.1, .9, .8, .2])
        >>> null = AttackedSplit(["e1", "e2"], [1, 0], [.9, .1], [0, 1], [.5, .6])
        >>> [row] = corrected_gap_rows("image-one-model-nb", "all", attacked, null, [1.0],
        ...                            StatsConfig(n_bootstrap=50))
        >>> row.metric, row.value, row.n
        ('corrected_dv_gap@100', 0.25, 6)
    """
    if len(split) == 0 or len(null) == 0:
        return []
    return [bootstrap_difference(direction_gap_stat(split, p), len(split), direction_gap_stat(null, p), len(null),
                                 stats.n_bootstrap, stats.seed).row(test, subset, f"corrected_dv_gap@{pct(p)}")
            for p in ps]
