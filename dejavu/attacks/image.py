"""The image déjà vu test (SPEC section 3): infer the foreground label from a background crop.

Each model embeds the public images and the background crops of the attacked records; the
labels of a crop's k nearest public images vote for its foreground label. The target model was
trained on the record, the reference was not; the gap in accuracy between them is memorization.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dejavu.attacks.common import StatsConfig, class_index, gap_rows, pct, require_labels, subset_masks
from dejavu.config import from_group
from dejavu.crops import CropResult
from dejavu.embed import Embeddings, embed_records
from dejavu.encoders import Encoder
from dejavu.knn import BACKENDS, INDEXES, METRICS, ApproximateIndex, Neighbours, approximate_index, search
from dejavu.metrics import (
    AttackedSplit,
    VoteResult,
    bootstrap_auroc,
    direction_gap_stat,
    label_log_likelihood,
    label_vote,
    sample_scores,
    subset_gap_pvalue,
)
from dejavu.records import RecordSet
from dejavu.results import Row
from dejavu.rules import at_least, check_fields, each, fraction, one_of

TEST = "image-two-model"


@dataclass(frozen=True)
class ImageTestConfig:
    """The image two-model test's settings (`measure.image-two-model`); the defaults are the original's.

    They are the settings of the target's kNN attack on A, which the one-model image tests reuse
    (so they read them from here), and the top-p levels every image test reports.
    """

    k: int = field(default=100, metadata=at_least(1))  # neighbours of the vote (the original's k)
    metric: str = field(default="l2", metadata=one_of(METRICS))  # squared L2 on un-normalized embeddings, as published
    # "exact" (as published) or a faiss index, "ivf" or "hnsw", for public sets too large to search exactly;
    # index_params holds its settings (dejavu.knn.ApproximateIndex, e.g. {"nprobe": 64})
    index: str = field(default="exact", metadata=one_of(INDEXES))
    index_params: dict[str, Any] = field(default_factory=dict)
    backend: str = field(default="auto", metadata=one_of(BACKENDS))
    device: str | None = None  # where the search runs: None with the embeddings (CPU), "auto" a GPU if present
    top_p: tuple[float, ...] = field(default=(0.05, 0.2, 1.0), metadata=each(fraction()))
    # the top-p level of the canary permutation test (pvalue_dv_gap@<100 p>)
    pvalue_p: float = field(default=0.2, metadata=fraction())
    stats: StatsConfig = field(default_factory=StatsConfig, metadata=from_group("stats"))
    batch_size: int = field(default=256, metadata=at_least(1))
    num_workers: int = field(default=0, metadata=at_least(0))

    def __post_init__(self):
        check_fields(self)
        object.__setattr__(self, "top_p", tuple(self.top_p))
        approximate_index(self.index, self.index_params)  # index_params that do not fit the index fail here

    @property
    def search_index(self) -> ApproximateIndex | None:
        """Returns the approximate index the search uses, None for exact search."""
        return approximate_index(self.index, self.index_params)


@dataclass(frozen=True)
class LabelAttack:
    """One model's neighbour vote on the crops of one attacked split."""

    ids: list[str]
    labels: np.ndarray  # true class numbers
    vote: VoteResult
    neighbours: Neighbours  # rows of the public set
    log_likelihood: np.ndarray  # log p(true label) under the soft neighbour vote (dejavu.metrics.likelihood)

    @property
    def correct(self) -> np.ndarray:
        return self.vote.pred == self.labels


def labelled_public(records: RecordSet, k: int) -> RecordSet:
    """Returns the public records, checking that each has a label and that there are at least k."""
    public = records.where(split="public")
    require_labels(public, "public")
    if k > len(public):
        raise ValueError(f"k={k} exceeds the public set size {len(public)}; lower k or add public images")
    return public


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
            name = getattr(self.encoder, "name", type(self.encoder).__name__)
            raise ValueError(f"encoder {name} (layer {self.encoder.layer!r}) embeds background crops in {crops.dim} "
                             f"dims but public images in {self.embeddings.dim}; its embedding width must not "
                             f"depend on the input image size (resize in image_transform)")
        nbrs = search(crops.vectors, self.embeddings.vectors, self.cfg.k, metric=self.cfg.metric,
                      backend=self.cfg.backend, device=self.cfg.device, index=self.cfg.search_index)
        nbr_labels, dists = self.labels[nbrs.indices.numpy()], nbrs.distances.numpy()
        vote = label_vote(nbr_labels, dists, self.n_classes)
        return LabelAttack(crops.ids, labels, vote, nbrs, label_log_likelihood(nbr_labels, dists, labels, self.n_classes))


@dataclass
class ImageTestResult:
    """The rows of the image test and the per-record outcomes behind them."""

    rows: list[Row]
    records: pd.DataFrame  # one row per attacked record: split, canary, predictions, entropies, score
    target_on_a: LabelAttack
    public: RecordSet
    classes: dict[str, int]

    def named_records(self) -> pd.DataFrame:
        """Returns `records` with class names in place of class numbers in the label and prediction columns."""
        names = {i: c for c, i in self.classes.items()}
        columns = [c for c in ("label", "pred_target", "pred_reference") if c in self.records]
        return self.records.assign(**{c: self.records[c].map(names) for c in columns})


def attacked_records(records: RecordSet, crops: CropResult, split: str) -> RecordSet:
    """Returns the labelled records of `split` that have a background crop (Ā in the papers).

    Every record of the split must have a crop or a counted exclusion in `crops`; one with neither
    means the crops were computed on other records, and is an error rather than a silent drop.
    """
    in_split = [r for r in records if r.split == split]
    unknown = [r.id for r in in_split if r.id not in crops.crops and r.id not in crops.excluded_ids]
    if unknown:
        raise ValueError(f"{len(unknown)} {split} records have neither a background crop nor an exclusion "
                         f"reason, e.g. {unknown[:5]}; compute the crops with background_crops() over these records")
    attacked = RecordSet([r for r in in_split if r.id in crops.crops], name=f"attacked {split}")
    if len(attacked) == 0:
        raise ValueError(f"split {split} has no record with a background crop; nothing to attack ({crops})")
    require_labels(attacked, f"attacked {split}")
    return attacked


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
    public = labelled_public(records, cfg.k)
    attacked = {s: attacked_records(records, crops, s) for s in ("A", "B")}
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
    in_a = frame[frame.split == "A"]
    rows += canary_rows(TEST, splits["A"], canary["A"], in_a.score.to_numpy(), cfg.pvalue_p, cfg.stats,
                        llr=in_a.llr.to_numpy())
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
    public = labelled_public(records, cfg.k)
    attacked = {"A": attacked_records(records, crops, "A")}
    classes = class_index(public, attacked["A"], fit_labels(records))
    votes = attack_all({"A": target}, public, attacked, crops, classes, cfg, cache_dir, progress)
    t = votes["A", "A"]
    frame = pd.DataFrame({"id": t.ids, "split": "A", "canary": [r.is_canary for r in attacked["A"]],
                          "label": t.labels, "pred_target": t.vote.pred, "correct_target": t.correct,
                          "entropy_target": t.vote.entropy})
    return ImageTestResult([], frame, t, public, classes)


def attack_split(target: Encoder, records: RecordSet, crops: CropResult, split: str, classes: dict[str, int],
                 cfg: ImageTestConfig = ImageTestConfig(), *, cache_dir: Path | None = None,
                 progress: bool = True) -> LabelAttack:
    """Returns the target's vote on the background crops of `split`, e.g. the eval records of a null.

    `classes` is the class numbering of the test the vote is compared with; a label it lacks gets
    -1, which no neighbour vote can match.
    """
    public = labelled_public(records, cfg.k)
    attacked = attacked_records(records, crops, split)
    labels = np.array([classes.get(r.label, -1) for r in attacked], dtype=np.int64)
    index = PublicIndex(target, public, classes, cfg, cache_dir, progress)
    return index.attack(embed_crops(target, attacked, crops, cfg, cache_dir, progress), labels)


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
            "log_likelihood_target": t.log_likelihood, "log_likelihood_reference": r.log_likelihood,
            "llr": t.log_likelihood - r.log_likelihood,
        }))
    return pd.concat(parts, ignore_index=True)


def canary_rows(test: str, split_a: AttackedSplit, canary: np.ndarray, scores: np.ndarray, level: float,
                stats: StatsConfig, llr: np.ndarray | None = None) -> list[Row]:
    """Returns the canary permutation p-value of dv_gap@level and the AUROC of the sample-level score.

    `canary_auroc` ranks by the published score (entropy gap of memorized records); with `llr`, the
    per-record log-likelihood ratio of the true label, `canary_auroc@llr` ranks by it. All need
    canaries and other records in A; otherwise there are no rows. When the level keeps no canary
    (floor(level * n_canary) = 0) the canary gap is undefined, and so is its p-value (NaN).

    Example:
        Six A records; the two canaries are memorized (target right, reference wrong), the other
        four are not. Only one of the C(6, 2) = 15 random pairs of records has the canaries' gap,
        so the p-value is close to 1/15; the score ranks both canaries first, so the AUROC is 1:

        >>> import numpy as np
        >>> from dejavu.attacks.common import StatsConfig
        >>> from dejavu.attacks.image import canary_rows
        >>> from dejavu.metrics import AttackedSplit
        >>> a = AttackedSplit([f"a{i}" for i in range(6)], [1, 1, 1, 0, 1, 0], np.zeros(6),
        ...                   [0, 0, 1, 0, 1, 0], np.zeros(6))
        >>> canary = np.array([True, True, False, False, False, False])
        >>> scores = np.array([0.5, 0.7, -np.inf, -np.inf, -np.inf, -np.inf])  # see metrics.sample_scores
        >>> p_value, auc = canary_rows("image-two-model", a, canary, scores, 1.0, StatsConfig(n_bootstrap=50))
        >>> p_value.metric, abs(p_value.value - 1 / 15) < 0.02, p_value.n
        ('pvalue_dv_gap@100', True, 2)
        >>> auc.metric, auc.value, auc.ci_low
        ('canary_auroc', 1.0, 1.0)
    """
    if not canary.any() or canary.all():
        return []
    perm = subset_gap_pvalue(direction_gap_stat(split_a, level), canary, stats.n_permutations, stats.seed)
    p_value = perm.p_value if np.isfinite(perm.canary_gap) else float("nan")
    rows = [Row(test, "canary", f"pvalue_dv_gap@{pct(level)}", p_value, n=perm.n_canary),
            bootstrap_auroc(scores, canary, stats.n_bootstrap, stats.seed).row(test, "canary", "canary_auroc")]
    if llr is not None:
        rows.append(bootstrap_auroc(llr, canary, stats.n_bootstrap, stats.seed).row(test, "canary", "canary_auroc@llr"))
    return rows
