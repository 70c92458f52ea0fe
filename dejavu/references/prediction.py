"""ReferencePrediction: what every one-model reference yields per record (SPEC section 4)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import entr


@dataclass
class ReferencePrediction:
    """Per-record predicted label, confidence (higher = surer) and entropy in nats, keyed by id.

    `probs` ([n, C], rows summing to 1) and `classes` (the C column names) are present when the
    reference has a normalized posterior. `pred` is None for a record the reference has no
    opinion on; the orchestrator then counts it as wrong.
    """

    ids: list[str]
    pred: list[str | None]
    confidence: np.ndarray
    entropy: np.ndarray
    probs: np.ndarray | None = None
    classes: list[str] | None = None

    def __post_init__(self):
        self.ids = list(self.ids)
        self.pred = list(self.pred)
        self.confidence = np.asarray(self.confidence, dtype=np.float64)
        self.entropy = np.asarray(self.entropy, dtype=np.float64)
        n = len(self.ids)
        sizes = {"pred": len(self.pred), "confidence": len(self.confidence), "entropy": len(self.entropy)}
        if self.probs is not None:
            sizes["probs"] = len(self.probs)
            if self.classes is None or self.probs.shape[1] != len(self.classes):
                raise ValueError("probs needs `classes` naming each of its columns")
        wrong = {k: v for k, v in sizes.items() if v != n}
        if wrong:
            raise ValueError(f"ReferencePrediction has {n} ids but {wrong}")
        if len(set(self.ids)) != n:
            raise ValueError("ReferencePrediction ids must be unique")

    @classmethod
    def from_probs(cls, ids: Sequence[str], probs: np.ndarray, classes: Sequence[str]) -> ReferencePrediction:
        """Returns argmax predictions, max-probability confidences and entropies of a posterior.

        Ties go to the earliest column; with `classes` sorted, that is the smallest class name.
        """
        probs = np.asarray(probs, dtype=np.float64)
        classes = list(classes)
        top = probs.argmax(axis=1)
        return cls(
            ids=list(ids),
            pred=[classes[j] for j in top],
            confidence=probs.max(axis=1),
            entropy=entr(probs).sum(axis=1),
            probs=probs,
            classes=classes,
        )

    def to_frame(self) -> pd.DataFrame:
        """Returns one row per id with columns pred, confidence, entropy (index: id)."""
        return pd.DataFrame(
            {"pred": self.pred, "confidence": self.confidence, "entropy": self.entropy},
            index=pd.Index(self.ids, name="id"),
        )
