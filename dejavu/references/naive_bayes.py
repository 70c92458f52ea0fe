"""Naive Bayes over background tags: a one-model correlation reference (SPEC section 4).

Following Meehan et al. (2023, arXiv 2304.13850), the score of class c for a crop with tags O is

    score_c = prod_{o in O} n_c(o) / N(o),

where n_c(o) counts the class-c crops of the fit split that carry tag o and N(o) = sum_c n_c(o).
A tag never seen in fitting is neutral (factor 1).

Smoothing of an unseen (tag, class) pair:
- ``"epsilon"`` (the original): n_c(o) is replaced by the pseudo-count ``eps``; the original
  script's ``--smooth`` default is 1e-10, which is our default ``eps``. The factor is then
  eps / N(o), not eps itself.
- ``"laplace"``: add-alpha counts, (n_c(o) + alpha) / (N(o) + C alpha), over the C fit classes.

Confidence:
- ``normalize=True`` (the **default**, with ``smoothing="epsilon"``): the maximum of the posterior
  softmax(log score). Raw products shrink with the number of tags, so ranking crops by them
  mostly ranks by tag count; the normalized posterior is comparable across crops. Predictions are
  identical to the original's, since normalizing does not move the argmax.
- ``normalize=False``: the original's unnormalized maximum score, including its quirks: a crop
  with no tags scores 0 and a crop whose tags are all unseen scores 1 (every factor is neutral).

Prediction is the argmax; ties go to the smallest class name (the original's max over
(score, "<wnid>_<name>") pairs gave ties to the largest key instead). A crop with no known tag has
a uniform posterior (entropy log C) and is predicted by that tie rule, as the original also made a
prediction for it; `known_tag_counts` tells how many such crops there are.
Entropy (nats) is always that of the normalized posterior. Work is in log space for stability.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from scipy import sparse
from scipy.special import softmax

from dejavu.references.prediction import ReferencePrediction
from dejavu.references.tags import top_tags

SMOOTHINGS = ("epsilon", "laplace")

TagInput = Iterable[str] | Iterable[tuple[str, float]]


class NaiveBayesReference:
    """Predicts a crop's foreground label from its background tags (see module docstring)."""

    def __init__(
        self,
        smoothing: Literal["epsilon", "laplace"] = "epsilon",
        eps: float = 1e-10,
        alpha: float = 1.0,
        normalize: bool = True,
        top_t: int | None = None,
    ):
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"smoothing must be 'epsilon' or 'laplace', not {smoothing!r}")
        if smoothing == "epsilon" and not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        if smoothing == "laplace" and not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        if top_t is not None and top_t < 1:
            raise ValueError(f"top_t must be at least 1 or None, got {top_t}")
        self.smoothing = smoothing
        self.eps = eps
        self.alpha = alpha
        self.normalize = normalize
        self.top_t = top_t

    @classmethod
    def original(cls, top_t: int | None = None) -> NaiveBayesReference:
        """Returns the estimator exactly as published: epsilon smoothing, unnormalized scores."""
        return cls(smoothing="epsilon", eps=1e-10, normalize=False, top_t=top_t)

    def select(self, tags: TagInput) -> frozenset[str]:
        """Returns the tags of one crop that the estimator uses (the top_t best when scored).

        Tags come as plain strings (annotations) or (tag, score) pairs (a Tagger); top_t needs
        scores, since keeping "the best t" of unscored tags would be arbitrary.
        """
        if isinstance(tags, str):
            raise TypeError(f"tags must be a collection of tags, not the string {tags!r}")
        items = list(tags)
        scored = [isinstance(item, tuple) for item in items]
        if items and all(scored):
            return top_tags(items, self.top_t)
        if any(scored):
            raise TypeError("mix of scored (tag, score) pairs and plain tags in one crop")
        if self.top_t is not None and items:
            raise ValueError(f"top_t={self.top_t} needs (tag, score) pairs, got plain tags {sorted(items)}")
        return frozenset(str(t).strip() for t in items)

    def fit(self, tag_sets: Sequence[TagInput], labels: Sequence[str]) -> NaiveBayesReference:
        """Returns self, fit on the tags and foreground labels of the fit split's crops."""
        if len(tag_sets) != len(labels):
            raise ValueError(f"{len(tag_sets)} tag sets but {len(labels)} labels")
        if any(label is None for label in labels):
            raise ValueError("every fit crop needs a foreground label; drop or label the None ones first")
        selected = [self.select(t) for t in tag_sets]
        self.classes_ = sorted(set(labels))
        self.tags_ = sorted(set().union(*selected)) if selected else []
        class_index = {c: j for j, c in enumerate(self.classes_)}
        self._tag_index = {t: i for i, t in enumerate(self.tags_)}
        counts = np.zeros((len(self.tags_), len(self.classes_)))
        for tags, label in zip(selected, labels, strict=True):
            for tag in tags:
                counts[self._tag_index[tag], class_index[label]] += 1
        self.counts_ = counts
        return self

    def log_factors(self) -> np.ndarray:
        """Returns log(n_c(o)/N(o)) after smoothing, one row per fitted tag, one column per class."""
        n = self.counts_
        total = n.sum(axis=1, keepdims=True)
        if self.smoothing == "epsilon":
            return np.log(np.where(n > 0, n, self.eps)) - np.log(total)
        return np.log(n + self.alpha) - np.log(total + self.alpha * len(self.classes_))

    def _indicator(self, selected: list[frozenset[str]]) -> sparse.csr_matrix:
        """Returns the [crops, fitted tags] 0/1 matrix of the known tags of each crop."""
        rows, cols = [], []
        for r, tags in enumerate(selected):
            for tag in tags:
                if tag in self._tag_index:  # unseen tags are neutral: they add nothing
                    rows.append(r)
                    cols.append(self._tag_index[tag])
        return sparse.csr_matrix(
            (np.ones(len(rows)), (rows, cols)), shape=(len(selected), len(self.tags_))
        )

    def log_scores(self, tag_sets: Sequence[TagInput]) -> np.ndarray:
        """Returns log score_c for every crop (rows) and fitted class (columns)."""
        self._check_fitted()
        return self._log_scores([self.select(t) for t in tag_sets])

    def _log_scores(self, selected: list[frozenset[str]]) -> np.ndarray:
        return np.asarray(self._indicator(selected) @ self.log_factors())

    def known_tag_counts(self, tag_sets: Sequence[TagInput]) -> np.ndarray:
        """Returns, per crop, how many of its selected tags were seen in fitting (0 = no evidence)."""
        self._check_fitted()
        indicator = self._indicator([self.select(t) for t in tag_sets])
        return np.asarray(indicator.sum(axis=1)).ravel().astype(int)

    def predict(self, tag_sets: Sequence[TagInput], ids: Sequence[str]) -> ReferencePrediction:
        """Returns the per-id prediction, confidence and entropy for the crops' tag sets."""
        self._check_fitted()
        if len(tag_sets) != len(ids):
            raise ValueError(f"{len(tag_sets)} tag sets but {len(ids)} ids")
        selected = [self.select(t) for t in tag_sets]
        log_scores = self._log_scores(selected)
        result = ReferencePrediction.from_probs(ids, softmax(log_scores, axis=1), self.classes_)
        if not self.normalize:
            has_tags = np.array([len(tags) > 0 for tags in selected], dtype=bool)
            result.confidence = np.where(has_tags, np.exp(log_scores.max(axis=1, initial=-np.inf)), 0.0)
        return result

    def _check_fitted(self):
        if not hasattr(self, "counts_"):
            raise RuntimeError("NaiveBayesReference.fit must be called before predicting")
        if not self.classes_:
            raise RuntimeError("NaiveBayesReference was fit on no crops")
