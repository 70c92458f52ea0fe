"""Pure memorization metrics on arrays: image test (SPEC §3), vision-language test (§5), statistics (§6).

Example:
    The image test end to end on two splits of two records each, with k = 3 neighbours per record.
    The target is the model trained on the split, the reference the one trained on the other split.
    On A the target's votes are both right and the reference's both wrong; on B each model gets
    one record right:

    >>> import numpy as np
    >>> from dejavu.metrics import AttackedSplit, dejavu_gap, label_vote, symmetric_quadrants
    >>> far = np.zeros((2, 3))  # neighbour distances: they only break ties between labels
    >>> a = AttackedSplit.from_votes(["a1", "a2"], [0, 1], target=label_vote([[0, 0, 1], [1, 1, 1]], far, 2),
    ...                              reference=label_vote([[1, 1, 0], [1, 0, 0]], far, 2))
    >>> b = AttackedSplit.from_votes(["b1", "b2"], [1, 0], target=label_vote([[1, 1, 0], [0, 1, 1]], far, 2),
    ...                              reference=label_vote([[0, 0, 0], [0, 0, 1]], far, 2))
    >>> a.memorized(), b.memorized()
    (array([ True,  True]), array([ True, False]))
    >>> dejavu_gap(a, b, 1.0)  # target (1 + 1/2) / 2, reference (0 + 1/2) / 2
    Gap(target=0.75, reference=0.25, gap=0.5)
    >>> dejavu_gap(a, b, 0.5)  # each model's most confident record only (lowest vote entropy, then id)
    Gap(target=1.0, reference=0.0, gap=1.0)
    >>> symmetric_quadrants(a, b)  # DV(100%) = memorized - misrepresented
    {'memorized': 0.75, 'correlated': 0.0, 'misrepresented': 0.25, 'unassociated': 0.0}
"""

from dejavu.metrics.image import (
    QUADRANTS,
    AttackedSplit,
    Gap,
    VoteResult,
    confidence_order,
    count_entropy,
    dejavu_gap,
    direction_gap,
    label_vote,
    most_memorized,
    quadrant_masks,
    quadrants,
    sample_scores,
    symmetric_quadrants,
    top_p_accuracy,
    top_p_curve,
)
from dejavu.metrics.likelihood import (
    label_log_likelihood,
    neighbour_weights,
    object_log_likelihood,
    soft_object_counts,
)
from dejavu.metrics.stats import (
    Interval,
    SubsetTest,
    auroc,
    batched_top_p_curve,
    bootstrap_aucg,
    bootstrap_auroc,
    bootstrap_dejavu_gap,
    bootstrap_difference,
    bootstrap_indices,
    bootstrap_mean,
    bootstrap_ppg,
    bootstrap_prg,
    bootstrap_quadrants,
    bootstrap_top_p_accuracy,
    direction_gap_stat,
    mean_gap_stat,
    pairwise_gap_stat,
    subset_gap_pvalue,
)
from dejavu.metrics.vlm import (
    aucg,
    batched_top_l_gaps,
    hits,
    log_spaced_phis,
    multi_hot,
    object_vocabulary,
    ordering_score,
    ppg,
    precision_recall,
    prg,
    recall_auc,
    sample_order,
    top_l_gaps,
    top_t_objects,
    union_objects,
)

__all__ = [
    "AttackedSplit", "Gap", "Interval", "QUADRANTS", "SubsetTest", "VoteResult", "aucg", "auroc",
    "batched_top_l_gaps", "batched_top_p_curve", "bootstrap_aucg", "bootstrap_auroc", "bootstrap_dejavu_gap",
    "bootstrap_difference", "bootstrap_indices", "bootstrap_mean", "bootstrap_ppg", "bootstrap_prg",
    "bootstrap_quadrants", "bootstrap_top_p_accuracy", "confidence_order", "count_entropy", "dejavu_gap",
    "direction_gap", "direction_gap_stat", "hits", "label_log_likelihood", "label_vote", "log_spaced_phis",
    "mean_gap_stat", "most_memorized", "multi_hot", "neighbour_weights", "object_log_likelihood",
    "object_vocabulary", "ordering_score", "pairwise_gap_stat", "ppg", "precision_recall", "prg",
    "quadrant_masks", "quadrants", "recall_auc", "sample_order", "sample_scores", "soft_object_counts",
    "subset_gap_pvalue", "symmetric_quadrants", "top_l_gaps", "top_p_accuracy", "top_p_curve",
    "top_t_objects", "union_objects",
]
