"""Vision-language test metrics (SPEC section 5): objects predicted from neighbours, PPG/PRG/AUCG.

Object sets are multi-hot matrices (records x vocabulary, bool) whose columns are in sorted
object-name order, so set sizes, intersections, precision and recall are vectorized, and "ties
broken by object name" is "ties broken by column index".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from dejavu.metrics.image import as_ids

ORDERINGS = ("min_dist", "crct_pred", "max_pred_gap")
DEFAULT_PHIS = (0.001, 0.01, 0.1)


def object_vocabulary(*collections: Iterable[Iterable[str]]) -> tuple[str, ...]:
    """Returns the sorted distinct object names found in any of the given collections of object sets.

    Example:
        >>> from dejavu.metrics import object_vocabulary
        >>> object_vocabulary([["dog", "ball"]], [["cat"], ["dog"]])
        ('ball', 'cat', 'dog')
    """
    return tuple(sorted({obj for sets in collections for objects in sets for obj in objects}))


def multi_hot(object_sets: Sequence[Iterable[str]], vocabulary: Sequence[str], ids=None) -> np.ndarray:
    """Returns a bool [n, V] matrix with row i marking the objects of set i; unknown names raise.

    Example:
        >>> from dejavu.metrics import multi_hot
        >>> multi_hot([["dog"], ["cat", "ball"]], ("ball", "cat", "dog"))
        array([[False, False,  True],
               [ True,  True, False]])
        >>> multi_hot([["cow"]], ("ball", "cat", "dog"))
        Traceback (most recent call last):
        ...
        ValueError: row 0: object 'cow' is not in the vocabulary
    """
    column = {name: j for j, name in enumerate(vocabulary)}
    if list(column) != sorted(column) or len(column) != len(vocabulary):
        raise ValueError("vocabulary must be sorted and free of repeats (use object_vocabulary)")
    out = np.zeros((len(object_sets), len(vocabulary)), dtype=bool)
    for i, objects in enumerate(object_sets):
        for obj in objects:
            if obj not in column:
                who = f"record {ids[i]!r}" if ids is not None else f"row {i}"
                raise ValueError(f"{who}: object {obj!r} is not in the vocabulary")
            out[i, column[obj]] = True
    return out


def neighbour_object_counts(public_objects, neighbours) -> np.ndarray:
    """Returns int [n, V]: for each record, how many of its k neighbours contain each object.

    Example:
        Two records with k = 2 neighbours among three public images:

        >>> from dejavu.metrics.vlm import neighbour_object_counts
        >>> public = [[1, 0, 1], [1, 1, 0], [0, 0, 1]]  # objects of 3 public images over (ball, cat, dog)
        >>> neighbour_object_counts(public, neighbours=[[0, 1], [2, 0]])
        array([[2, 1, 1],
               [1, 0, 2]], dtype=int32)
    """
    public = np.asarray(public_objects, dtype=bool)
    nbrs = np.asarray(neighbours)
    if public.ndim != 2 or nbrs.ndim != 2:
        raise ValueError(f"need public objects [N, V] and neighbour indices [n, k]; got {public.shape}, {nbrs.shape}")
    if nbrs.size and (nbrs.min() < 0 or nbrs.max() >= public.shape[0]):
        raise ValueError(f"neighbour indices must lie in [0, {public.shape[0]})")
    counts = np.zeros((nbrs.shape[0], public.shape[1]), dtype=np.int32)
    # Loop over the k neighbour slots (k is small), never over records; avoids an [n, k, V] tensor.
    for j in range(nbrs.shape[1]):
        counts += public[nbrs[:, j]]
    return counts


def union_objects(public_objects, neighbours) -> np.ndarray:
    """Returns bool [n, V]: the union of the ground-truth objects of each record's neighbours.

    Example:
        >>> from dejavu.metrics import union_objects
        >>> public = [[1, 0, 1], [1, 1, 0], [0, 0, 1]]  # objects of 3 public images over (ball, cat, dog)
        >>> union_objects(public, neighbours=[[0, 1], [2, 0]])
        array([[ True,  True,  True],
               [ True, False,  True]])
    """
    return neighbour_object_counts(public_objects, neighbours) > 0


def top_t_objects(public_objects, neighbours, t: int) -> np.ndarray:
    """Returns bool [n, V]: the t objects found in most neighbours, ties by name; never a 0-count object.

    Example:
        The neighbours of record 0 hold (ball, cat, dog) 2, 1 and 1 times, those of record 1
        1, 0 and 2 times. With t = 2, record 0 breaks the cat-dog tie by name; with t = 3,
        record 1 still gets no cat, which none of its neighbours holds:

        >>> from dejavu.metrics import top_t_objects
        >>> public = [[1, 0, 1], [1, 1, 0], [0, 0, 1]]  # objects of 3 public images over (ball, cat, dog)
        >>> top_t_objects(public, [[0, 1], [2, 0]], t=2)
        array([[ True,  True, False],
               [ True, False,  True]])
        >>> top_t_objects(public, [[0, 1], [2, 0]], t=3)[1]
        array([ True, False,  True])
    """
    if t < 1:
        raise ValueError(f"T must be at least 1, got {t}")
    counts = neighbour_object_counts(public_objects, neighbours)
    # A stable sort on -count keeps equal counts in column order, i.e. by object name.
    best = np.argsort(-counts, axis=1, kind="stable")[:, :t]
    pred = np.zeros(counts.shape, dtype=bool)
    np.put_along_axis(pred, best, True, axis=1)
    return pred & (counts > 0)


def hits(gt, pred) -> np.ndarray:
    """Returns int [n]: |G ∩ Ŷ|, the number of ground-truth objects each record's prediction got.

    Example:
        >>> from dejavu.metrics import hits
        >>> hits(gt=[[1, 1, 0], [0, 0, 1]], pred=[[1, 0, 1], [0, 0, 0]])
        array([1, 0])
    """
    g, y = _pair(gt, pred)
    return (g & y).sum(axis=1)


def precision_recall(gt, pred, ids=None) -> tuple[np.ndarray, np.ndarray]:
    """Returns per-record precision |G∩Ŷ|/|Ŷ| (0 when Ŷ is empty) and recall |G∩Ŷ|/|G|.

    Records with no ground-truth objects must be dropped (and counted) by the caller; they raise.

    Example:
        Record 0 predicts one of its three objects, record 1 its one object and a wrong one,
        record 2 nothing:

        >>> from dejavu.metrics import precision_recall
        >>> prec, rec = precision_recall(gt=[[1, 1, 1], [0, 0, 1], [1, 0, 0]],
        ...                              pred=[[1, 0, 0], [0, 1, 1], [0, 0, 0]])
        >>> prec, rec.round(3)
        (array([1. , 0.5, 0. ]), array([0.333, 1.   , 0.   ]))
    """
    g, y = _pair(gt, pred)
    n_gt = g.sum(axis=1)
    if (n_gt == 0).any():
        bad = np.flatnonzero(n_gt == 0)[:5]
        names = [repr(ids[i]) for i in bad] if ids is not None else [f"row {i}" for i in bad]
        raise ValueError(f"records without ground-truth objects must be dropped first: {', '.join(names)}")
    inter = (g & y).sum(axis=1)
    n_pred = y.sum(axis=1)
    prec = np.divide(inter, n_pred, out=np.zeros(inter.shape, dtype=np.float64), where=n_pred > 0)
    return prec, inter / n_gt


def pairwise_gap(a, b) -> float:
    """Returns frac(a > b) - frac(a < b); ties count for neither side.

    Example:
        >>> from dejavu.metrics.vlm import pairwise_gap
        >>> pairwise_gap([0.5, 1.0, 0.2, 0.3], [0.5, 0.0, 0.1, 0.9])  # (0 + 1 + 1 - 1) / 4
        0.25
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two equal, non-empty 1-d arrays; got {a.shape} and {b.shape}")
    return float(np.sign(a - b).mean())


def ppg(prec_a, prec_b) -> float:
    """Returns the population precision gap frac(prec_A > prec_B) - frac(prec_A < prec_B).

    Example:
        Model A is more precise on two of four records and never less precise:

        >>> from dejavu.metrics import ppg
        >>> ppg([1.0, 0.5, 0.5, 0.0], [0.5, 0.5, 0.0, 0.0])
        0.5
    """
    return pairwise_gap(prec_a, prec_b)


def prg(rec_a, rec_b) -> float:
    """Returns the population recall gap frac(rec_A > rec_B) - frac(rec_A < rec_B).

    Example:
        Model A recalls more on two records, less on one and as much on one: (2 - 1) / 4.

        >>> from dejavu.metrics import prg
        >>> prg([1.0, 0.5, 0.0, 0.5], [0.0, 1.0, 0.0, 0.0])
        0.25
    """
    return pairwise_gap(rec_a, rec_b)


def recall_auc(rec) -> float:
    """Returns the exact area under t -> frac(recall >= t) for t in [0, 1].

    The curve is a step function that drops by 1/n at each sorted recall r_(j), so the area is
    sum_j (r_(j) - r_(j-1)) * (n - j + 1) / n, which telescopes to mean(recall).

    Example:
        >>> from dejavu.metrics import recall_auc
        >>> recall_auc([1.0, 0.5, 0.0, 0.25])  # (1 + 0.5 + 0 + 0.25) / 4
        0.4375
    """
    r = np.sort(np.asarray(rec, dtype=np.float64))
    if r.ndim != 1 or r.size == 0:
        raise ValueError("need a non-empty 1-d array of recalls")
    if r[0] < 0 or r[-1] > 1:
        raise ValueError(f"recalls must lie in [0, 1]; got [{r[0]}, {r[-1]}]")
    widths = np.diff(r, prepend=0.0)
    heights = np.arange(r.size, 0, -1) / r.size
    return float(widths @ heights)


def aucg(rec_a, rec_b) -> float:
    """Returns AUC_A - AUC_B of the recall curves (equal to the gap in mean recall).

    Example:
        >>> from dejavu.metrics import aucg
        >>> aucg([1.0, 0.5], [0.5, 0.0])  # 0.75 - 0.25
        0.5
    """
    return recall_auc(rec_a) - recall_auc(rec_b)


def ordering_score(kind: str, *, min_dist=None, hits_a=None, hits_b=None) -> np.ndarray:
    """Returns the per-record score of a sample-level ordering; higher ranks first.

    min_dist: minus the target distance to the nearest public key; crct_pred: |G∩Ŷ_A|;
    max_pred_gap: |G∩Ŷ_A| - |G∩Ŷ_B|.

    Example:
        >>> from dejavu.metrics import ordering_score
        >>> ordering_score("max_pred_gap", hits_a=[3, 1, 2], hits_b=[1, 1, 0])
        array([2., 0., 2.])
        >>> ordering_score("min_dist", min_dist=[0.5, 0.25])
        array([-0.5 , -0.25])
    """
    if kind == "min_dist":
        return -np.asarray(_required(min_dist, "min_dist", kind), dtype=np.float64)
    if kind == "crct_pred":
        return np.asarray(_required(hits_a, "hits_a", kind), dtype=np.float64)
    if kind == "max_pred_gap":
        return np.asarray(_required(hits_a, "hits_a", kind) - _required(hits_b, "hits_b", kind), dtype=np.float64)
    raise ValueError(f"unknown ordering {kind!r}; choose one of {ORDERINGS}")


def sample_order(kind: str, ids, *, min_dist=None, hits_a=None, hits_b=None) -> np.ndarray:
    """Returns record positions in the order `kind` ranks them for the top-L curve, ties by id.

    min_dist: ascending target distance to the nearest public key; crct_pred: descending
    |G∩Ŷ_A|; max_pred_gap: descending |G∩Ŷ_A| - |G∩Ŷ_B|.

    Example:
        Records "c" and "b" both have a hit gap of 2, so "b" comes first; "a" (gap 0) is last:

        >>> from dejavu.metrics import sample_order
        >>> sample_order("max_pred_gap", ["c", "a", "b"], hits_a=[3, 1, 2], hits_b=[1, 1, 0])
        array([2, 0, 1])
        >>> sample_order("min_dist", ["a", "b", "c"], min_dist=[0.3, 0.1, 0.2])
        array([1, 2, 0])
    """
    key = -ordering_score(kind, min_dist=min_dist, hits_a=hits_a, hits_b=hits_b)
    ids = as_ids(ids, key.shape[0])
    return np.lexsort((ids, key))


def log_spaced_phis(n: int, num: int = 50) -> np.ndarray:
    """Returns `num` log-spaced fractions from 1/n to 1, for the full top-L curve.

    Example:
        >>> from dejavu.metrics import log_spaced_phis
        >>> log_spaced_phis(100, num=3)
        array([0.01, 0.1 , 1.  ])
    """
    return np.geomspace(1.0 / n, 1.0, num)


TOP_L_GAPS = ("precision_gap", "recall_gap", "f_gap")


def top_l_gaps(order, prec_a, rec_a, prec_b, rec_b, phis=DEFAULT_PHIS) -> pd.DataFrame:
    """Returns, per phi, L = max(1, floor(phi*n)) and the gaps in mean precision, mean recall and F.

    F = 2PR/(P+R+1e-5) is computed from the means over the top L records, for each model.

    Example:
        Four records, already in ranking order. Model A is more precise than B on the first
        record only, and recalls more on it; on the top two the mean precisions are 1 and 1/2,
        the mean recalls 3/4 and 1/4:

        >>> from dejavu.metrics import top_l_gaps
        >>> gaps = top_l_gaps([0, 1, 2, 3], prec_a=[1, 1, 0.5, 0], rec_a=[1, 0.5, 0.5, 0],
        ...                   prec_b=[0, 1, 0.5, 0], rec_b=[0, 0.5, 0.5, 0], phis=[0.25, 0.5, 1.0])
        >>> print(gaps.round(3).to_string(index=False))
         phi  L  precision_gap  recall_gap  f_gap
        0.25  1           1.00        1.00  1.000
        0.50  2           0.50        0.50  0.524
        1.00  4           0.25        0.25  0.256
    """
    n = np.asarray(order).size
    gaps = batched_top_l_gaps(order, prec_a, rec_a, prec_b, rec_b, phis, np.arange(n)[None])
    return pd.DataFrame({"phi": np.asarray(phis, dtype=np.float64), "L": top_l_lengths(phis, n),
                         **{name: values[0] for name, values in gaps.items()}})


def top_l_lengths(phis, n: int) -> np.ndarray:
    """Returns L = max(1, floor(phi*n)), at most n, for each phi.

    Example:
        >>> from dejavu.metrics.vlm import top_l_lengths
        >>> top_l_lengths([0.001, 0.5, 2.0], n=10)
        array([ 1,  5, 10])
    """
    lengths = np.maximum(1, np.floor(np.asarray(phis, dtype=np.float64) * n + 1e-9).astype(np.int64))
    return np.minimum(lengths, n)


def batched_top_l_gaps(order, prec_a, rec_a, prec_b, rec_b, phis, idx) -> dict[str, np.ndarray]:
    """Returns each top-L gap as float [B, len(phis)], on each row of idx (a [B, m] matrix of positions).

    A row's records are ranked by their places in the global `order`, which already breaks ties by
    id, so a resample ranks exactly as ordering it afresh would; a repeated record stays a block.

    Example:
        The data of `top_l_gaps`, on the records themselves and on a resample that draws the
        first two records twice each. At phi = 1/2 the top L = 2 of the resample are record 0
        twice, where A's precision is 1 and B's 0:

        >>> from dejavu.metrics import batched_top_l_gaps
        >>> gaps = batched_top_l_gaps([0, 1, 2, 3], [1, 1, 0.5, 0], [1, 0.5, 0.5, 0], [0, 1, 0.5, 0],
        ...                           [0, 0.5, 0.5, 0], phis=[0.5], idx=[[0, 1, 2, 3], [0, 0, 1, 1]])
        >>> sorted(gaps)
        ['f_gap', 'precision_gap', 'recall_gap']
        >>> gaps["precision_gap"]
        array([[0.5],
               [1. ]])
    """
    order = np.asarray(order)
    idx = np.asarray(idx)
    cols = [np.asarray(x, dtype=np.float64) for x in (prec_a, rec_a, prec_b, rec_b)]
    n = order.size
    if n == 0 or any(c.shape != (n,) for c in cols):
        raise ValueError("order, precisions and recalls must be non-empty and of one length")
    if idx.ndim != 2:
        raise ValueError(f"idx must be a [B, m] matrix of positions, got shape {idx.shape}")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    ranked = order[np.sort(rank[idx], axis=1)]
    lengths = top_l_lengths(phis, idx.shape[1])
    pa, ra, pb, rb = (np.cumsum(c[ranked], axis=1)[:, lengths - 1] / lengths for c in cols)
    f_a = 2 * pa * ra / (pa + ra + 1e-5)
    f_b = 2 * pb * rb / (pb + rb + 1e-5)
    return dict(zip(TOP_L_GAPS, (pa - pb, ra - rb, f_a - f_b), strict=True))


def _pair(gt, pred) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(gt, dtype=bool)
    y = np.asarray(pred, dtype=bool)
    if g.ndim != 2 or g.shape != y.shape:
        raise ValueError(f"ground truth {g.shape} and prediction {y.shape} must be equal [n, V] matrices")
    return g, y


def _required(values, name: str, kind: str) -> np.ndarray:
    if values is None:
        raise ValueError(f"ordering {kind!r} needs {name}")
    return np.asarray(values, dtype=np.float64)
