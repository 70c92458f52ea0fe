"""The image déjà vu test (SPEC section 3): infer the foreground label from a background crop.

Each model embeds the public images and the background crops of the attacked records; the
labels of a crop's k nearest public images vote for its foreground label. The target model was
trained on the record, the reference was not; the gap in accuracy between them is memorization.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dejavu.attacks.common import StatsConfig, class_index, gap_rows, require_labels, subset_masks
from dejavu.crops import CropResult
from dejavu.embed import Embeddings, embed_records
from dejavu.encoders import Encoder
from dejavu.knn import Neighbours, search
from dejavu.metrics import (
    AttackedSplit,
    VoteResult,
    auroc,
    direction_gap_stat,
    label_vote,
    sample_scores,
    subset_gap_pvalue,
)
from dejavu.records import RecordSet
from dejavu.results import Row

TEST = "image-two-model"


@dataclass(frozen=True)
class ImageTestConfig:
    """Search and reporting settings of the image test; the defaults are the original's."""

    k: int = 100
    metric: str = "l2"  # squared L2 on un-normalized embeddings, as published; or "cosine"
    backend: str = "auto"
    top_p: tuple[float, ...] = (0.05, 0.2, 1.0)
    pvalue_p: float = 0.2  # the top-p level of the canary permutation test
    stats: StatsConfig = field(default_factory=StatsConfig)
    batch_size: int = 256
    num_workers: int = 0


@dataclass(frozen=True)
class LabelAttack:
    """One model's neighbour vote on the crops of one attacked split."""

    ids: list[str]
    labels: np.ndarray  # true class numbers
    vote: VoteResult
    neighbours: Neighbours  # rows of the public set

    @property
    def correct(self) -> np.ndarray:
        return self.vote.pred == self.labels


class PublicIndex:
    """One model's embeddings of the labelled public images, the kNN database of the attack."""

    def __init__(self, encoder: Encoder, public: RecordSet, classes: dict[str, int], cfg: ImageTestConfig,
                 cache_dir: Path | None, progress: bool):
        self.encoder, self.public, self.cfg = encoder, public, cfg
        self.embeddings = embed_records(encoder, public, cache_dir=cache_dir, batch_size=cfg.batch_size,
                                        num_workers=cfg.num_workers, progress=progress)
        self.labels = np.array([classes[r.label] for r in public], dtype=np.int64)
        self.n_classes = len(classes)

    def attack(self, crops: Embeddings, labels: np.ndarray) -> LabelAttack:
        """Returns the vote of the k nearest public images of each crop embedding."""
        if crops.dim != self.embeddings.dim:
            raise ValueError(f"crop embeddings have {crops.dim} dims but public embeddings {self.embeddings.dim}; "
                             "both must come from the same encoder and layer")
        nbrs = search(crops.vectors, self.embeddings.vectors, self.cfg.k, metric=self.cfg.metric,
                      backend=self.cfg.backend)
        vote = label_vote(self.labels[nbrs.indices.numpy()], nbrs.distances.numpy(), self.n_classes)
        return LabelAttack(crops.ids, labels, vote, nbrs)


@dataclass
class ImageTestResult:
    """The rows of the image test and the per-record outcomes behind them."""

    rows: list[Row]
    records: pd.DataFrame  # one row per attacked record: split, canary, predictions, entropies, score
    target_on_a: LabelAttack
    public: RecordSet
    classes: dict[str, int]


def attacked_records(records: RecordSet, crops: CropResult, split: str) -> RecordSet:
    """Returns the records of `split` that have a background crop (Ā in the papers)."""
    return RecordSet([r for r in records if r.split == split and r.id in crops.crops], name=f"attacked {split}")


def embed_crops(encoder: Encoder, attacked: RecordSet, crops: CropResult, cfg: ImageTestConfig,
                cache_dir: Path | None, progress: bool) -> Embeddings:
    """Returns the encoder's embeddings of the background crops of `attacked`."""
    return embed_records(encoder, attacked, crops=crops.crops, cache_dir=cache_dir, batch_size=cfg.batch_size,
                         num_workers=cfg.num_workers, progress=progress)


def image_two_model(target: Encoder, reference: Encoder, records: RecordSet, crops: CropResult,
                    cfg: ImageTestConfig = ImageTestConfig(), *, cache_dir: Path | None = None,
                    progress: bool = True) -> ImageTestResult:
    """Returns the symmetrized two-model image test of SPEC section 3 on the attacked A and B records.

    `target` was trained on split A and `reference` on split B; B's records are attacked with the
    roles swapped. Rows are reported for all, canary and non-canary records.
    """
    public = records.where(split="public")
    require_labels(public, "public")
    attacked = {s: attacked_records(records, crops, s) for s in ("A", "B")}
    for s, rs in attacked.items():
        require_labels(rs, f"attacked {s}")
        if len(rs) == 0:
            raise ValueError(f"split {s} has no record with a background crop; nothing to attack "
                             f"({crops})")
    if cfg.k > len(public):
        raise ValueError(f"k={cfg.k} exceeds the public set size {len(public)}; lower k or add public images")
    classes = class_index(public, attacked["A"], attacked["B"])
    votes = attack_all({"A": target, "B": reference}, public, attacked, crops, classes, cfg, cache_dir, progress)

    # For split A the target is model A; for split B model B plays the target.
    splits = {s: AttackedSplit.from_votes(votes[s, s].ids, votes[s, s].labels, votes[s, s].vote,
                                          votes[o, s].vote)
              for s, o in (("A", "B"), ("B", "A"))}
    canary = {s: np.array([r.is_canary for r in attacked[s]]) for s in ("A", "B")}
    rows: list[Row] = []
    for subset in ("all", "canary", "non-canary"):
        masks = {s: subset_masks(canary[s])[subset] for s in ("A", "B")}
        rows += gap_rows(TEST, subset, splits["A"].subset(masks["A"]), splits["B"].subset(masks["B"]),
                         cfg.top_p, cfg.stats)

    frame = per_record_frame(attacked, votes, canary)
    rows += canary_rows(TEST, splits["A"], canary["A"], frame[frame.split == "A"].score.to_numpy(), cfg)
    return ImageTestResult(rows, frame, votes["A", "A"], public, classes)


def attack_all(models: dict[str, Encoder], public: RecordSet, attacked: dict[str, RecordSet], crops: CropResult,
               classes: dict[str, int], cfg: ImageTestConfig, cache_dir: Path | None,
               progress: bool) -> dict[tuple[str, str], LabelAttack]:
    """Returns the vote of every model (keyed by its training split) on every attacked split."""
    votes = {}
    for m, encoder in models.items():
        index = PublicIndex(encoder, public, classes, cfg, cache_dir, progress)
        for s, rs in attacked.items():
            labels = np.array([classes[r.label] for r in rs], dtype=np.int64)
            votes[m, s] = index.attack(embed_crops(encoder, rs, crops, cfg, cache_dir, progress), labels)
    return votes


def image_target_only(target: Encoder, records: RecordSet, crops: CropResult,
                      cfg: ImageTestConfig = ImageTestConfig(), *, cache_dir: Path | None = None,
                      progress: bool = True) -> ImageTestResult:
    """Returns the target's attack on A alone (no rows): what the one-model tests compare against."""
    public = records.where(split="public")
    require_labels(public, "public")
    attacked = {"A": attacked_records(records, crops, "A")}
    require_labels(attacked["A"], "attacked A")
    classes = class_index(public, attacked["A"], fit_labels(records))
    votes = attack_all({"A": target}, public, attacked, crops, classes, cfg, cache_dir, progress)
    t = votes["A", "A"]
    frame = pd.DataFrame({"id": t.ids, "split": "A", "canary": [r.is_canary for r in attacked["A"]],
                          "label": t.labels, "pred_target": t.vote.pred, "correct_target": t.correct,
                          "entropy_target": t.vote.entropy})
    return ImageTestResult([], frame, t, public, classes)


def fit_labels(records: RecordSet) -> RecordSet:
    """Returns the labelled B records, whose labels the one-model estimators may predict."""
    return RecordSet([r for r in records if r.split == "B" and r.label is not None])


def per_record_frame(attacked: dict[str, RecordSet], votes: dict[tuple[str, str], LabelAttack],
                     canary: dict[str, np.ndarray]) -> pd.DataFrame:
    """Returns one row per attacked record with both models' predictions and the sample-level score."""
    parts = []
    for s, o in (("A", "B"), ("B", "A")):
        t, r = votes[s, s], votes[o, s]
        memorized = t.correct & ~r.correct
        parts.append(pd.DataFrame({
            "id": t.ids, "split": s, "canary": canary[s], "label": t.labels,
            "pred_target": t.vote.pred, "pred_reference": r.vote.pred,
            "correct_target": t.correct, "correct_reference": r.correct,
            "entropy_target": t.vote.entropy, "entropy_reference": r.vote.entropy,
            "score": sample_scores(t.vote.entropy, r.vote.entropy, memorized),
        }))
    return pd.concat(parts, ignore_index=True)


def canary_rows(test: str, split_a: AttackedSplit, canary: np.ndarray, scores: np.ndarray,
                cfg: ImageTestConfig) -> list[Row]:
    """Returns the canary permutation p-value of dv_gap and the AUROC of the sample-level score."""
    if not canary.any() or canary.all():
        return []
    level = cfg.pvalue_p
    perm = subset_gap_pvalue(direction_gap_stat(split_a, level), canary, cfg.stats.n_permutations,
                             cfg.stats.seed)
    return [Row(test, "canary", f"pvalue_dv_gap@{level * 100:g}", perm.p_value, n=perm.n_canary),
            Row(test, "canary", "canary_auroc", auroc(scores, canary), n=int(canary.size))]
