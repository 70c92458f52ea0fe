"""Image-test metrics (SPEC section 3): neighbour label votes, top-p accuracy, the two-model gap.

Everything here is a pure function of arrays (numpy, or anything ``np.asarray`` reads such as
CPU torch tensors), vectorized over records. Records are identified by their string ids, never
by position: rankings break ties by id so results do not depend on input order. Subsets
(``all``, ``canary``, ``non-canary``) are taken with ``AttackedSplit.subset``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

QUADRANTS = ("memorized", "correlated", "misrepresented", "unassociated")


def as_ids(ids: Sequence[str] | np.ndarray, n: int | None = None) -> np.ndarray:
    """Returns the ids as a numpy string array, checking they are unique (and `n` long if given).

    Example:
        >>> from dejavu.metrics.image import as_ids
        >>> as_ids(["b", "a"]).tolist()
        ['b', 'a']
        >>> as_ids(["b", "a", "b"])
        Traceback (most recent call last):
        ...
        ValueError: record ids must be unique; repeated: ['b']
    """
    arr = np.asarray(ids, dtype=str)
    if arr.ndim != 1:
        raise ValueError(f"ids must be one-dimensional, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"got {arr.shape[0]} ids for {n} records")
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"record ids must be unique; repeated: {uniq[counts > 1][:5].tolist()}")
    return arr


def keep_count(p: float, n: int) -> int:
    """Returns floor(p * n), the number of records that top-p keeps, for 0 < p <= 1.

    Example:
        >>> from dejavu.metrics.image import keep_count
        >>> keep_count(0.5, 5), keep_count(0.1, 5), keep_count(1.0, 5)
        (2, 0, 5)
        >>> keep_count(0.29, 100)  # 0.29 * 100 is 28.999999999999996 in floats
        29
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p must be in (0, 1], got {p}")
    # The 1e-9 guard stops float products like 0.29 * 100 = 28.999999999999996 losing a record.
    return int(math.floor(p * n + 1e-9))


@dataclass(frozen=True)
class VoteResult:
    """Per-record outcome of the neighbour label vote.

    `top5` holds the five best labels in vote order, padded with -1 when the neighbours carry
    fewer than five distinct labels. `entropy` is in nats; `confidence` is its negative.
    """

    pred: np.ndarray
    top5: np.ndarray
    entropy: np.ndarray
    confidence: np.ndarray


def label_vote(neighbour_labels, neighbour_dists, n_classes: int) -> VoteResult:
    """Returns the majority label of each record's k neighbours, its top-5, entropy and confidence.

    Labels are ranked by count (descending), then summed neighbour distance (ascending), then
    class index (ascending), so ties are deterministic. Only row-wise sorts of the [n, k] input
    are used, so the cost does not depend on n_classes.

    Example:
        Two records, three neighbours each. The first has two neighbours of class 2; the second
        has one neighbour of each class, so the nearest one (class 1) wins the tie:

        >>> from dejavu.metrics import label_vote
        >>> vote = label_vote([[2, 0, 2], [1, 0, 2]], [[0.1, 0.2, 0.4], [0.1, 0.2, 0.3]], n_classes=3)
        >>> vote.pred
        array([2, 1])
        >>> vote.top5
        array([[ 2,  0, -1, -1, -1],
               [ 1,  0,  2, -1, -1]])
        >>> vote.entropy.round(4)  # -(2/3 ln 2/3 + 1/3 ln 1/3) and ln 3
        array([0.6365, 1.0986])
    """
    labels = np.asarray(neighbour_labels)
    dists = np.asarray(neighbour_dists, dtype=np.float64)
    if labels.ndim != 2 or labels.shape != dists.shape or labels.shape[1] == 0:
        raise ValueError(f"neighbour labels {labels.shape} and distances {dists.shape} must be equal [n, k>0]")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"neighbour labels must be integer class indices, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"neighbour labels must lie in [0, {n_classes}); got [{labels.min()}, {labels.max()}]")
    if not np.isfinite(dists).all():
        raise ValueError("neighbour distances must be finite")
    n, k = labels.shape
    bits = max(1, (k - 1).bit_length())  # a slot number 0..k-1 fits in `bits` bits
    if 3 * bits + 1 > 63:
        raise ValueError(f"k={k} neighbours is too many to rank in one int64 key per label")
    slots = np.arange(k)
    row_start = (np.arange(n) * k)[:, None]
    # Sorting each row by label makes every (record, label) pair one run; a run's first slot
    # carries its count and summed distance, the other slots stay empty (count 0, distance inf).
    # Label and slot packed in one unique int64 sort in neighbour order within a label, as a stable
    # argsort would, but by numpy's much faster unstable sort.
    by_label = np.sort((labels.astype(np.int64) << bits) | slots, axis=1)
    sorted_labels = by_label >> bits
    sorted_dists = dists.ravel()[row_start + (by_label & (2**bits - 1))]
    starts = np.ones((n, k), dtype=bool)
    starts[:, 1:] = sorted_labels[:, 1:] != sorted_labels[:, :-1]
    first = np.flatnonzero(starts)
    counts = np.diff(first, append=n * k)
    count_at = np.zeros((n, k), dtype=np.int64)
    dist_at = np.full((n, k), np.inf)
    count_at.ravel()[first] = counts
    dist_at.ravel()[first] = np.add.reduceat(sorted_dists.ravel(), first)

    # Rank by count, then summed distance, then label (the run order): one sort of unique int64 keys
    # (k - count, rank of the distance in its row, slot). Equal distances share a rank, so the
    # unstable sort that finds the ranks cannot reorder them.
    by_dist = row_start + np.argsort(dist_at, axis=1)
    ordered = dist_at.ravel()[by_dist]
    dist_rank = np.zeros((n, k), dtype=np.int64)
    dist_rank.ravel()[by_dist[:, 1:]] = np.cumsum(ordered[:, 1:] != ordered[:, :-1], axis=1)
    ranked = row_start + (np.sort(((k - count_at) << 2 * bits) | (dist_rank << bits) | slots, axis=1)[:, :5]
                          & (2**bits - 1))
    top5 = np.full((n, 5), -1, dtype=np.int64)
    top5[:, : ranked.shape[1]] = np.where(count_at.ravel()[ranked] > 0, sorted_labels.ravel()[ranked], -1)
    pred = top5[:, 0].copy()

    entropy = count_entropy(count_at, k)
    return VoteResult(pred=pred, top5=top5, entropy=entropy, confidence=0.0 - entropy)


def count_entropy(counts, k: int) -> np.ndarray:
    """Returns float [n]: the entropy in nats of each row's label counts (zeros allowed), out of k votes.

    The terms -(c/k) log(c/k) are summed in ascending order of c, one column at a time, never in
    class order: two records with the same counts in any class order get bit-for-bit the same
    entropy, so top-p breaks their tie by id (SPEC section 3), not by rounding.

    Example:
        >>> from dejavu.metrics import count_entropy
        >>> count_entropy([[2, 2, 0], [4, 0, 0]], k=4).round(4)  # ln 2, and 0 for a unanimous vote
        array([0.6931, 0.    ])
    """
    c = np.asarray(counts, dtype=np.int64)
    if c.ndim != 2 or (c < 0).any() or (c.sum(axis=1) != k).any():
        raise ValueError(f"need an [n, m] matrix of non-negative counts summing to k={k} per row")
    c = np.sort(c, axis=1)
    share = c / k
    terms = -share * np.log(np.where(c > 0, share, 1.0))  # a zero count adds exactly 0
    entropy = np.zeros(c.shape[0])
    for j in range(c.shape[1]):  # a fixed left-to-right order; np.sum's blocking may vary by layout
        entropy += terms[:, j]
    return entropy


def confidence_order(confidence, ids) -> np.ndarray:
    """Returns record positions from most to least confident, ties broken by ascending id.

    Example:
        >>> from dejavu.metrics import confidence_order
        >>> confidence_order([0.5, 0.9, 0.5], ids=["c", "a", "b"])  # "b" before "c" at 0.5
        array([1, 2, 0])
    """
    conf = np.asarray(confidence, dtype=np.float64)
    ids = as_ids(ids, conf.shape[0])
    if np.isnan(conf).any():
        bad = ids[np.isnan(conf)][:5].tolist()
        raise ValueError(f"confidence is NaN for records {bad}")
    return np.lexsort((ids, -conf))


def top_p_curve(correct, confidence, ids, ps) -> np.ndarray:
    """Returns Acc(S, p) for each p: the mean correctness of the floor(p*n) most confident records.

    A p that keeps no record gives NaN (the accuracy of an empty set is undefined).

    Example:
        Four records, the two most confident correct: the top 25% and 50% are all right, the top
        75% two out of three, all of them half; 10% of four records keeps none:

        >>> from dejavu.metrics import top_p_curve
        >>> top_p_curve([True, True, False, False], [0.9, 0.8, 0.7, 0.1], ["a", "b", "c", "d"],
        ...             [0.1, 0.25, 0.5, 0.75, 1.0]).round(3)
        array([  nan, 1.   , 1.   , 0.667, 0.5  ])
    """
    correct = np.asarray(correct, dtype=bool)
    order = confidence_order(confidence, ids)
    if correct.shape != order.shape:
        raise ValueError(f"correct {correct.shape} and confidence {order.shape} differ in length")
    hits = np.concatenate([[0], np.cumsum(correct[order])])
    keep = np.array([keep_count(p, correct.size) for p in np.atleast_1d(ps)], dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(keep > 0, hits[keep] / np.maximum(keep, 1), np.nan)


def top_p_accuracy(correct, confidence, ids, p: float) -> float:
    """Returns Acc(S, p): mean correctness over the floor(p*n) most confident records (NaN if none).

    Example:
        >>> from dejavu.metrics import top_p_accuracy
        >>> correct, confidence, ids = [False, True, True, False], [0.1, 0.9, 0.8, 0.7], ["a", "b", "c", "d"]
        >>> top_p_accuracy(correct, confidence, ids, 0.5), top_p_accuracy(correct, confidence, ids, 1.0)
        (1.0, 0.5)
    """
    return float(top_p_curve(correct, confidence, ids, [p])[0])


@dataclass(frozen=True)
class AttackedSplit:
    """One attacked split with the outcomes of the model trained on it and of the other model.

    For split A the target is model A and the reference model B; for split B the roles swap.

    Example:
        Four attacked records of split A: the target gets the first two right, the reference
        only the first:

        >>> from dejavu.metrics import AttackedSplit
        >>> a = AttackedSplit(ids=["a1", "a2", "a3", "a4"],
        ...                   correct_target=[1, 1, 0, 0], confidence_target=[.9, .8, .2, .1],
        ...                   correct_reference=[1, 0, 0, 0], confidence_reference=[.1, .9, .8, .2])
        >>> len(a), a.memorized()
        (4, array([False,  True, False, False]))
        >>> a.target_accuracy([0.5, 1.0]), a.reference_accuracy([0.5, 1.0])
        (array([1. , 0.5]), array([0.  , 0.25]))
        >>> a.subset([True, True, False, False]).ids
        array(['a1', 'a2'], dtype='<U2')
    """

    ids: np.ndarray
    correct_target: np.ndarray
    confidence_target: np.ndarray
    correct_reference: np.ndarray
    confidence_reference: np.ndarray

    def __post_init__(self):
        ids = as_ids(self.ids)
        object.__setattr__(self, "ids", ids)
        for name in ("correct_target", "correct_reference"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=bool))
        for name in ("confidence_target", "confidence_reference"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        for name in ("correct_target", "confidence_target", "correct_reference", "confidence_reference"):
            if getattr(self, name).shape != ids.shape:
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected {ids.shape}")

    @classmethod
    def from_votes(cls, ids, labels, target: VoteResult, reference: VoteResult) -> AttackedSplit:
        """Returns the split scored against the true labels by the target and reference votes."""
        labels = np.asarray(labels)
        return cls(ids=ids, correct_target=target.pred == labels, confidence_target=target.confidence,
                   correct_reference=reference.pred == labels, confidence_reference=reference.confidence)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def subset(self, selector) -> AttackedSplit:
        """Returns the records picked by a boolean mask or an index array (e.g. the canaries)."""
        sel = np.asarray(selector)
        if sel.dtype == bool and sel.shape != self.ids.shape:
            raise ValueError(f"mask has shape {sel.shape}, expected {self.ids.shape}")
        return AttackedSplit(self.ids[sel], self.correct_target[sel], self.confidence_target[sel],
                             self.correct_reference[sel], self.confidence_reference[sel])

    def target_accuracy(self, ps) -> np.ndarray:
        """Returns the target model's top-p accuracy on this split for each p."""
        return top_p_curve(self.correct_target, self.confidence_target, self.ids, ps)

    def reference_accuracy(self, ps) -> np.ndarray:
        """Returns the reference model's top-p accuracy on this split, ranked by its own confidence."""
        return top_p_curve(self.correct_reference, self.confidence_reference, self.ids, ps)

    def memorized(self) -> np.ndarray:
        """Returns the mask of records the target gets right and the reference gets wrong."""
        return self.correct_target & ~self.correct_reference


@dataclass(frozen=True)
class Gap:
    """The symmetrized top-p accuracies of target and reference, and their difference."""

    target: float
    reference: float
    gap: float


def dejavu_gap(split_a: AttackedSplit, split_b: AttackedSplit, p: float) -> Gap:
    """Returns target(p), reference(p) and DV(p) = target(p) - reference(p), averaged over both splits.

    Example:
        On split A (4 records) the target's two most confident records are right and the
        reference's two wrong; on split B (2 records) each model's most confident record is right:

        >>> from dejavu.metrics import AttackedSplit, dejavu_gap
        >>> a = AttackedSplit(["a1", "a2", "a3", "a4"], [1, 1, 0, 0], [.9, .8, .2, .1],
        ...                   [1, 0, 0, 0], [.1, .9, .8, .2])
        >>> b = AttackedSplit(["b1", "b2"], [1, 0], [.9, .1], [0, 1], [.5, .6])
        >>> dejavu_gap(a, b, 0.5)  # target (1 + 1) / 2, reference (0 + 1) / 2
        Gap(target=1.0, reference=0.5, gap=0.5)
        >>> dejavu_gap(a, b, 1.0)  # target (1/2 + 1/2) / 2, reference (1/4 + 1/2) / 2
        Gap(target=0.5, reference=0.375, gap=0.125)
    """
    target = 0.5 * (split_a.target_accuracy([p])[0] + split_b.target_accuracy([p])[0])
    reference = 0.5 * (split_a.reference_accuracy([p])[0] + split_b.reference_accuracy([p])[0])
    return Gap(float(target), float(reference), float(target - reference))


def direction_gap(split: AttackedSplit, p: float) -> float:
    """Returns Acc_target(S, p) - Acc_reference(S, p) on one split (the gap of a canary subset).

    Example:
        >>> from dejavu.metrics import AttackedSplit, direction_gap
        >>> a = AttackedSplit(["a1", "a2", "a3", "a4"], [1, 1, 0, 0], [.9, .8, .2, .1],
        ...                   [1, 0, 0, 0], [.1, .9, .8, .2])
        >>> direction_gap(a, 0.5), direction_gap(a, 1.0)  # 1 - 0, and 1/2 - 1/4
        (1.0, 0.25)
    """
    return float(split.target_accuracy([p])[0] - split.reference_accuracy([p])[0])


def quadrant_masks(correct_target, correct_reference) -> dict[str, np.ndarray]:
    """Returns, per quadrant name, the bool mask of the records that fall in it.

    Example:
        >>> from dejavu.metrics import quadrant_masks
        >>> masks = quadrant_masks([True, True, False, False], [True, False, True, False])
        >>> {name: mask.tolist() for name, mask in masks.items()}  # doctest: +NORMALIZE_WHITESPACE
        {'memorized': [False, True, False, False], 'correlated': [True, False, False, False],
         'misrepresented': [False, False, True, False], 'unassociated': [False, False, False, True]}
    """
    t = np.asarray(correct_target, dtype=bool)
    r = np.asarray(correct_reference, dtype=bool)
    if t.shape != r.shape or t.size == 0:
        raise ValueError(f"need two equal, non-empty correctness arrays; got {t.shape} and {r.shape}")
    return dict(zip(QUADRANTS, (t & ~r, t & r, ~t & r, ~t & ~r), strict=True))


def quadrants(correct_target, correct_reference) -> dict[str, float]:
    """Returns the fractions of records memorized, correlated, misrepresented and unassociated.

    Memorized: the target is right and the reference wrong; correlated: both right;
    misrepresented: only the reference right; unassociated: both wrong.

    Example:
        >>> from dejavu.metrics import quadrants
        >>> quadrants(correct_target=[True, True, True, False], correct_reference=[True, False, False, False])
        {'memorized': 0.5, 'correlated': 0.25, 'misrepresented': 0.0, 'unassociated': 0.25}
    """
    return {name: float(m.mean()) for name, m in quadrant_masks(correct_target, correct_reference).items()}


def symmetric_quadrants(split_a: AttackedSplit, split_b: AttackedSplit) -> dict[str, float]:
    """Returns the quadrant fractions averaged over both directions with equal weight ½ each.

    The unweighted average mirrors target(p) = ½[Acc + Acc], so DV(100%) = memorized -
    misrepresented holds even when the two splits differ in size.

    Example:
        A has 1 memorized, 1 correlated and 2 unassociated records out of 4; B 1 memorized and 1
        misrepresented out of 2. memorized - misrepresented = 0.375 - 0.25 is DV(100%) = 0.125
        (see `dejavu_gap`):

        >>> from dejavu.metrics import AttackedSplit, symmetric_quadrants
        >>> a = AttackedSplit(["a1", "a2", "a3", "a4"], [1, 1, 0, 0], [.9, .8, .2, .1],
        ...                   [1, 0, 0, 0], [.1, .9, .8, .2])
        >>> b = AttackedSplit(["b1", "b2"], [1, 0], [.9, .1], [0, 1], [.5, .6])
        >>> symmetric_quadrants(a, b)
        {'memorized': 0.375, 'correlated': 0.125, 'misrepresented': 0.25, 'unassociated': 0.25}
    """
    qa = quadrants(split_a.correct_target, split_a.correct_reference)
    qb = quadrants(split_b.correct_target, split_b.correct_reference)
    return {name: 0.5 * (qa[name] + qb[name]) for name in QUADRANTS}


def sample_scores(entropy_target, entropy_reference, memorized_mask) -> np.ndarray:
    """Returns reference entropy - target entropy for memorized records and -inf for the others.

    -inf ranks non-memorized records below every memorized one in sorts and in the AUROC.

    Example:
        >>> from dejavu.metrics import sample_scores
        >>> sample_scores([0.25, 0.5, 0.0], [1.0, 0.75, 1.0], memorized_mask=[True, True, False])
        array([0.75, 0.25, -inf])
    """
    et = np.asarray(entropy_target, dtype=np.float64)
    er = np.asarray(entropy_reference, dtype=np.float64)
    mem = np.asarray(memorized_mask, dtype=bool)
    if not et.shape == er.shape == mem.shape:
        raise ValueError(f"entropies {et.shape}, {er.shape} and mask {mem.shape} must have one shape")
    return np.where(mem, er - et, -np.inf)


def most_memorized(ids, scores, n: int) -> list[tuple[str, float]]:
    """Returns up to n (id, score) pairs with the highest finite scores, ties broken by id.

    Example:
        >>> from dejavu.metrics import most_memorized
        >>> most_memorized(["a", "b", "c", "d"], [0.25, float("-inf"), 0.75, 0.25], n=3)
        [('c', 0.75), ('a', 0.25), ('d', 0.25)]
        >>> most_memorized(["a", "b"], [float("-inf"), float("-inf")], n=3)  # nothing memorized
        []
    """
    scores = np.asarray(scores, dtype=np.float64)
    ids = as_ids(ids, scores.shape[0])
    order = np.lexsort((ids, -scores))
    order = order[np.isfinite(scores[order])][:n]
    return [(str(ids[i]), float(scores[i])) for i in order]
