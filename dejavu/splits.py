"""Deterministic per-class A / B / public / eval splits (SPEC section 1).

The rule, per class c (records grouped by `label`; unlabelled records form one group of their own):

1. Records with boxes are ordered by a seeded hash of their id, so the order depends on the seed and
   the ids only, never on the order of the input.  Canaries (`repeat > 1`) come first, because the
   canary test needs them in A.
2. The first ``m_c = min(floor(n_bbox_c / 2), per_class)`` go to A and the next ``m_c`` to B.
3. Optionally, ``pad_shared`` box-less records of the class become ``"shared"`` padding that trains
   both models (the original pads A and B with un-annotated images); off by default.
4. Everything else (later box records and box-less records) is the remainder: a seeded
   ``floor(eval_fraction * n_rest)`` of it goes to eval, the rest to public.

Manifests that already give every record a split are respected and only validated.  In a mixed
manifest only the records whose split is null are assigned: ``n_bbox_c`` counts the box records that
may train (unassigned or preset to A or B; a preset public or eval record is out of that pool), A and
B are filled up to ``m_c`` box records each from the unassigned box records, and the eval fraction
applies to the unassigned remainder.  Preset records are never moved, so a preset A larger than
``m_c`` stays as it is.

Afterwards every split is checked to be disjoint (by id and by image file) and every canary to be
in A; a violation raises RecordError naming the record.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace

import pandas as pd

from dejavu.records import SPLITS, Record, RecordError, RecordSet

log = logging.getLogger(__name__)

SHARED = "shared"
"""Split value of the optional padding records that train both the target (A) and the reference (B)."""

SPLIT_VALUES = (*SPLITS, SHARED)
DEFAULT_EVAL_FRACTION = 0.2


def split_rank(seed: int, salt: str, record_id: str) -> str:
    """Returns the seeded sort key of a record id (a hex digest), independent of input order.

    Example:
        >>> import hashlib
        >>> from dejavu.splits import split_rank
        >>> split_rank(0, "order", "img-1") == hashlib.sha256(b"0\\x00order\\x00img-1").hexdigest()
        True
        >>> split_rank(0, "order", "img-1") == split_rank(1, "order", "img-1")  # another seed, another order
        False
    """
    return hashlib.sha256(f"{seed}\x00{salt}\x00{record_id}".encode()).hexdigest()


def assign_splits(
    records: Iterable[Record],
    *,
    per_class: int,
    seed: int,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    pad_shared: int = 0,
) -> RecordSet:
    """Returns the records, in input order, with every null `split` assigned by the per-class rule.

    Example:
        Six boxed cat records, one of them a canary, and one dog record without boxes. With
        per_class=2, A and B get two cats each, the canary in A; the other two cats and the dog
        are the remainder, of which floor(0.5 * 2) = 1 cat and floor(0.5 * 1) = 0 dogs go to eval:

        >>> from dejavu.records import Box, Record, RecordSet
        >>> from dejavu.splits import assign_splits
        >>> cats = [Record(f"cat{i}", f"cat{i}.png", 8, 8, "cat", (Box(0, 0, 4, 4, "cat"),),
        ...                repeat=5 if i == 5 else 1) for i in range(6)]
        >>> out = assign_splits(RecordSet(cats + [Record("dog0", "dog0.png", 8, 8, "dog")]),
        ...                     per_class=2, seed=0, eval_fraction=0.5)
        >>> sorted((r.label, r.split) for r in out)  # doctest: +NORMALIZE_WHITESPACE
        [('cat', 'A'), ('cat', 'A'), ('cat', 'B'), ('cat', 'B'), ('cat', 'eval'), ('cat', 'public'),
         ('dog', 'public')]
        >>> out.by_id("cat5").split
        'A'
    """
    if per_class < 0 or pad_shared < 0:
        raise ValueError(f"per_class ({per_class}) and pad_shared ({pad_shared}) must be >= 0")
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    name = records.name if isinstance(records, RecordSet) else "records"
    records = list(records)
    for r in records:
        if r.split is not None and r.split not in SPLIT_VALUES:
            raise RecordError(f"unknown split {r.split!r}; use one of {', '.join(SPLIT_VALUES)} or null",
                              record_id=r.id, file=r.source)
    # Preset overlaps are reported before RecordSet's generic duplicate-id error can mask them.
    check_disjoint(r for r in records if r.split is not None)
    RecordSet(records)  # duplicate ids among unassigned records

    by_class: dict[str | None, list[Record]] = defaultdict(list)
    for r in records:
        by_class[r.label].append(r)
    assigned: dict[str, str] = {}
    for group in by_class.values():
        assigned.update(_assign_class(group, per_class=per_class, seed=seed,
                                      eval_fraction=eval_fraction, pad_shared=pad_shared))

    out = [replace(r, split=assigned[r.id]) if r.split is None else r for r in records]
    check_disjoint(out)
    check_canaries(out)
    result = RecordSet(out, name=name)
    log.info("splits (seed=%d, per_class=%d):\n%s", seed, per_class, summarize_splits(result))
    return result


def _assign_class(group: list[Record], *, per_class: int, seed: int, eval_fraction: float,
                  pad_shared: int) -> dict[str, str]:
    """Returns {id: split} for the unassigned records of one class."""
    free = [r for r in group if r.split is None]
    # Records a manifest put in public or eval are out of the A/B pool, so they do not count towards m_c.
    m_c = min(sum(1 for r in group if r.boxes and r.split in (None, "A", "B")) // 2, per_class)
    free_boxed = sorted((r for r in free if r.boxes),
                        key=lambda r: (not r.is_canary, split_rank(seed, "order", r.id)))
    preset = Counter(r.split for r in group if r.split is not None and r.boxes)
    n_a = max(0, m_c - preset["A"])
    n_b = max(0, m_c - preset["B"])
    out = {r.id: "A" for r in free_boxed[:n_a]}
    out.update({r.id: "B" for r in free_boxed[n_a:n_a + n_b]})

    boxless = sorted((r for r in free if not r.boxes), key=lambda r: split_rank(seed, "pad", r.id))
    out.update({r.id: SHARED for r in boxless[:pad_shared]})

    rest = sorted(free_boxed[n_a + n_b:] + boxless[pad_shared:], key=lambda r: split_rank(seed, "eval", r.id))
    n_eval = math.floor(eval_fraction * len(rest))
    out.update({r.id: "eval" for r in rest[:n_eval]})
    out.update({r.id: "public" for r in rest[n_eval:]})
    return out


def check_disjoint(records: Iterable[Record]) -> None:
    """Returns None; raises RecordError naming the record when an id or image file is in two splits.

    Example:
        >>> from dejavu.records import Record
        >>> from dejavu.splits import check_disjoint
        >>> check_disjoint([Record("a", "x.png", 8, 8, split="A"), Record("b", "y.png", 8, 8, split="public")])
        >>> check_disjoint([Record("a", "x.png", 8, 8, split="A"),
        ...                 Record("b", "x.png", 8, 8, split="public")])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dejavu.records.RecordError: record 'b', file 'x.png': same image as record 'a' but in split 'public' ...
    """
    split_of_id: dict[str, str | None] = {}
    owner_of_image: dict[str, Record] = {}
    # Sorted, so that which record of a clashing pair gets named does not depend on input order.
    for r in sorted(records, key=lambda r: (r.id, str(r.split))):
        if r.id in split_of_id:
            raise RecordError(f"listed twice, under {split_of_id[r.id]!r} and {r.split!r}; "
                              "keep one entry per record", record_id=r.id, file=r.source)
        split_of_id[r.id] = r.split
        key = os.path.normpath(str(r.image))
        other = owner_of_image.setdefault(key, r)
        if other is not r and other.split != r.split:
            raise RecordError(f"same image as record {other.id!r} but in split {r.split!r} instead of "
                              f"{other.split!r}; splits must be disjoint, remove one of them",
                              record_id=r.id, file=r.image)


def check_canaries(records: Iterable[Record]) -> None:
    """Returns None; raises RecordError naming a canary (repeat > 1) outside split A (the smallest id).

    Example:
        >>> from dejavu.records import Box, Record
        >>> from dejavu.splits import check_canaries
        >>> canary = Record("c", "c.png", 8, 8, "cat", (Box(0, 0, 4, 4, "cat"),), split="B", repeat=5)
        >>> check_canaries([canary])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dejavu.records.RecordError: record 'c': canary (repeat=5) is in split 'B', not A; set its split to A in ...
    """
    stray = sorted((r for r in records if r.is_canary and r.split != "A"), key=lambda r: r.id)
    if stray:
        r = stray[0]
        why = " (it has no boxes, so the rule cannot pick it)" if not r.boxes else ""
        more = f" ({len(stray) - 1} more canaries are outside A)" if len(stray) > 1 else ""
        raise RecordError(f"canary (repeat={r.repeat}) is in split {r.split!r}, not A{why}{more}; "
                          "set its split to A in the manifest or drop its repeat",
                          record_id=r.id, file=r.source)


def plant_canaries(records: RecordSet, n: int, repeat: int, seed: int) -> RecordSet:
    """Returns `records` with exactly `n` canaries, seen `repeat` times per epoch; every other record once.

    The canaries are the first `n` of A's box-annotated records in a seeded order of their ids, so one
    built dataset serves designs with different canary counts. The images are untouched.

        >>> from dejavu.records import Box, Record
        >>> rs = RecordSet([Record(f"r{i}", "x.png", 8, 8, "cat", (Box(0, 0, 4, 4, "cat"),), split="A")
        ...                 for i in range(5)])
        >>> sum(r.is_canary for r in plant_canaries(rs, 2, repeat=30, seed=0))
        2
    """
    if n < 0 or repeat < 1:
        raise ValueError(f"canaries need n >= 0 and repeat >= 1, got n={n}, repeat={repeat}")
    candidates = sorted((r for r in records if r.split == "A" and r.boxes),
                        key=lambda r: split_rank(seed, "canary", r.id))
    if n > len(candidates):
        raise ValueError(f"{n} canaries asked for, but split A has only {len(candidates)} box-annotated records")
    chosen = {r.id for r in candidates[:n]}
    return RecordSet((replace(r, repeat=repeat if r.id in chosen else 1) for r in records), name=records.name)


def training_records(records: RecordSet, split: str) -> RecordSet:
    """Returns the records that train the model of `split` ("A" or "B"): the split plus shared padding.

    Example:
        >>> from dejavu.records import Record, RecordSet
        >>> from dejavu.splits import training_records
        >>> rs = RecordSet([Record(name, f"{name}.png", 8, 8, split=split)
        ...                 for name, split in [("a", "A"), ("b", "B"), ("pad", "shared"), ("p", "public")]])
        >>> training_records(rs, "A").ids, training_records(rs, "B").ids
        (['a', 'pad'], ['b', 'pad'])
    """
    if split not in ("A", "B"):
        raise ValueError(f"only A and B train models, got {split!r}")
    return RecordSet((r for r in records if r.split in (split, SHARED)), name=f"{records.name}:{split}")


@dataclass(frozen=True)
class SplitSummary:
    """Record counts per split and per class, with the attacked (box-annotated) sizes of A and B."""

    counts: dict[str, int]
    per_class: dict[str, dict[str, int]]
    with_boxes: dict[str, int]
    canaries: int
    shared: int = 0

    def __str__(self) -> str:
        lines = [f"{'split':<8}{'records':>9}{'with boxes':>12}"]
        lines += [f"{s:<8}{self.counts.get(s, 0):>9}{self.with_boxes.get(s, 0):>12}" for s in SPLIT_VALUES]
        lines.append(f"canaries in A: {self.canaries}; shared padding: "
                     + (f"{self.shared} records in both A and B" if self.shared else "off"))
        table = pd.DataFrame.from_dict(self.per_class, orient="index").reindex(columns=list(SPLIT_VALUES))
        table = table.fillna(0).astype(int).sort_index()
        lines += ["per class:", table.to_string()]
        return "\n".join(lines)


def summarize_splits(records: Iterable[Record]) -> SplitSummary:
    """Returns the SplitSummary (counts per split, per class, with boxes, canaries) of split records.

    Example:
        >>> from dejavu.records import Box, Record
        >>> from dejavu.splits import summarize_splits
        >>> box = (Box(0, 0, 4, 4, "cat"),)
        >>> print(summarize_splits([Record("c1", "c1.png", 8, 8, "cat", box, split="A", repeat=5),
        ...                         Record("c2", "c2.png", 8, 8, "cat", box, split="B"),
        ...                         Record("d1", "d1.png", 8, 8, "dog", split="public")]))
        split     records  with boxes
        A               1           1
        B               1           1
        public          1           0
        eval            0           0
        shared          0           0
        canaries in A: 1; shared padding: off
        per class:
             A  B  public  eval  shared
        cat  1  1       0     0       0
        dog  0  0       1     0       0
    """
    records = list(records)
    per_class: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        per_class["(unlabelled)" if r.label is None else r.label][r.split] += 1
    return SplitSummary(
        counts=dict(Counter(r.split for r in records)),
        per_class={c: dict(n) for c, n in per_class.items()},
        with_boxes=dict(Counter(r.split for r in records if r.boxes)),
        canaries=sum(1 for r in records if r.is_canary and r.split == "A"),
        shared=sum(1 for r in records if r.split == SHARED),
    )
