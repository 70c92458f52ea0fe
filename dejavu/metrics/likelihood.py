"""A continuous per-record memorization score: how much likelier the truth is under the target's neighbours.

The published sample-level scores are differences of small integers (hits) or are defined only for
memorized records (entropies), so they tie a lot and rank canaries poorly (SPEC section 6). In the
spirit of per-example membership inference (LiRA, Carlini et al. 2022), the score here is a
log-likelihood ratio: the log-probability of the record's ground truth (its foreground label, or
its objects) under the target's neighbour distribution minus that under the reference's. The
reference never saw the record, so it calibrates what the record's background or caption reveals
anyway; what is left is what the target adds.

Each model's distribution is a soft vote of the record's k neighbours, Laplace-smoothed so that a
truth no neighbour carries has a finite, small probability:
- weights `w_j = exp(-(d_j - d_1) / (d_k - d_1))`: 1 for the nearest neighbour, e^-1 for the k-th;
  the kernel does not change when the distances are shifted or scaled, so squared L2 on raw
  embeddings and 1 - cosine get the same rule with no temperature to choose. All-equal distances
  weigh uniformly. Weights are scaled to sum to k, so they are neighbour counts, softened;
- label: `p(y) = (w_y + 1) / (k + C)`, w_y the summed weight of neighbours labelled y, C classes;
- objects: each object is present or absent in a neighbour, `p(o) = (w_o + 1) / (k + 2)`, w_o the
  summed weight of neighbours holding o; a record's log-likelihood is the mean over its objects.
"""

from __future__ import annotations

import numpy as np

LAPLACE = 1.0


def neighbour_weights(distances) -> np.ndarray:
    """Returns float [n, k]: each neighbour's kernel weight, rows summing to k (see the module docstring).

    Example:
        Distances 0, 1, 2 give raw weights e^0, e^-1/2, e^-1, scaled to sum to k = 3; equal
        distances weigh every neighbour 1:

        >>> from dejavu.metrics import neighbour_weights
        >>> neighbour_weights([[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]]).round(3)
        array([[1.519, 0.922, 0.559],
               [1.   , 1.   , 1.   ]])
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] == 0 or not np.isfinite(d).all():
        raise ValueError(f"need a finite [n, k>0] matrix of neighbour distances, got shape {d.shape}")
    if (np.diff(d, axis=1) < 0).any():
        raise ValueError("neighbour distances must be non-decreasing along each row (nearest first)")
    span = d[:, -1:] - d[:, :1]
    w = np.exp(-(d - d[:, :1]) / np.where(span > 0, span, 1.0))
    return d.shape[1] * w / w.sum(axis=1, keepdims=True)


def label_log_likelihood(neighbour_labels, distances, labels, n_classes: int) -> np.ndarray:
    """Returns float [n]: log p(y) of each record's true label y under its neighbours' soft vote.

    A true label outside [0, n_classes) (one no public image carries) gets the smoothing floor.

    Example:
        Two records of true class 1, three equidistant neighbours each, two classes. The first
        has two neighbours of class 1, so p(1) = (2 + 1) / (3 + 2); the second none, so p(1) is
        the floor 1 / (3 + 2):

        >>> import numpy as np
        >>> from dejavu.metrics import label_log_likelihood
        >>> log_p = label_log_likelihood([[1, 1, 0], [0, 0, 0]], np.zeros((2, 3)), labels=[1, 1], n_classes=2)
        >>> np.exp(log_p).round(3)
        array([0.6, 0.2])
    """
    nbr = np.asarray(neighbour_labels)
    y = np.asarray(labels)
    w = neighbour_weights(distances)
    if nbr.shape != w.shape or y.shape != (nbr.shape[0],):
        raise ValueError(f"neighbour labels {nbr.shape}, distances {w.shape} and labels {y.shape} do not match")
    if n_classes < 1:
        raise ValueError(f"need at least one class, got {n_classes}")
    k = nbr.shape[1]
    weight_of_truth = (w * (nbr == y[:, None])).sum(axis=1)
    return np.log((weight_of_truth + LAPLACE) / (k + n_classes * LAPLACE))


def soft_object_counts(public_objects, neighbours, distances) -> np.ndarray:
    """Returns float [n, V]: for each record, the summed weight of its neighbours that hold each object.

    Example:
        Three public images over the objects (ball, dog); one record whose two equidistant
        neighbours are images 0 (a ball) and 1 (a ball and a dog):

        >>> from dejavu.metrics import soft_object_counts
        >>> soft_object_counts([[1, 0], [1, 1], [0, 1]], neighbours=[[0, 1]], distances=[[0.5, 0.5]])
        array([[2., 1.]])
    """
    public = np.asarray(public_objects, dtype=np.float64)
    nbrs = np.asarray(neighbours)
    w = neighbour_weights(distances)
    if public.ndim != 2 or nbrs.shape != w.shape:
        raise ValueError(f"need public objects [N, V] and neighbours/distances [n, k]; got {public.shape}, "
                         f"{nbrs.shape}, {w.shape}")
    if nbrs.size and (nbrs.min() < 0 or nbrs.max() >= public.shape[0]):
        raise ValueError(f"neighbour indices must lie in [0, {public.shape[0]})")
    counts = np.zeros((nbrs.shape[0], public.shape[1]))
    for j in range(nbrs.shape[1]):  # k is small: loop over neighbour slots, not records
        counts += w[:, j:j + 1] * public[nbrs[:, j]]
    return counts


def object_log_likelihood(truth, soft_counts, k: int) -> np.ndarray:
    """Returns float [n]: the mean over each record's true objects of log p(o), p(o) = (w_o + 1)/(k + 2).

    Example:
        Soft counts 2 (ball) and 1 (dog) out of k = 2 neighbours give p(ball) = 3/4 and
        p(dog) = 2/4. A record whose only true object is the ball scores log 3/4; one with both
        scores the mean of the logs, the log of the geometric mean sqrt(3/4 * 1/2):

        >>> import numpy as np
        >>> from dejavu.metrics import object_log_likelihood
        >>> log_p = object_log_likelihood([[True, False], [True, True]], [[2.0, 1.0], [2.0, 1.0]], k=2)
        >>> np.exp(log_p).round(4)
        array([0.75  , 0.6124])
    """
    g = np.asarray(truth, dtype=bool)
    c = np.asarray(soft_counts, dtype=np.float64)
    if g.ndim != 2 or g.shape != c.shape:
        raise ValueError(f"truth {g.shape} and soft counts {c.shape} must be equal [n, V] matrices")
    n_true = g.sum(axis=1)
    if (n_true == 0).any():
        raise ValueError("records without ground-truth objects must be dropped first")
    log_p = np.log((c + LAPLACE) / (k + 2 * LAPLACE))
    return (log_p * g).sum(axis=1) / n_true
