"""The vision-language déjà vu test (SPEC section 5): objects revealed by a caption.

A caption of a training record is embedded with the model's text tower; its k nearest public
images (t2i) or public captions (t2t) vote for objects, and precision/recall against the record's
ground-truth objects compare the target (trained on A) with the reference (trained on B).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dejavu.attacks.common import StatsConfig, excluded_rows, subset_masks
from dejavu.config import from_group
from dejavu.embed import Embeddings, embed_captions, embed_records
from dejavu.encoders import Encoder
from dejavu.knn import search
from dejavu.metrics import (
    batched_top_l_gaps,
    bootstrap_aucg,
    bootstrap_auroc,
    bootstrap_difference,
    bootstrap_indices,
    bootstrap_mean,
    bootstrap_ppg,
    bootstrap_prg,
    hits,
    mean_gap_stat,
    multi_hot,
    object_log_likelihood,
    object_vocabulary,
    ordering_score,
    pairwise_gap_stat,
    precision_recall,
    sample_order,
    soft_object_counts,
    subset_gap_pvalue,
    top_l_gaps,
    top_t_objects,
    union_objects,
)
from dejavu.metrics.stats import percentile_interval
from dejavu.metrics.vlm import DEFAULT_PHIS, ORDERINGS, TOP_L_GAPS
from dejavu.records import RecordSet
from dejavu.results import Row
from dejavu.rules import at_least, check_fields, each, fraction, one_of

log = logging.getLogger(__name__)

TEST = "vlm-two-model"
TEXT_TEST = "vlm-one-model-text"
VLM_INDEXES = ("t2i", "t2t")  # what the caption searches: public images, or public captions


@dataclass(frozen=True)
class VLMTestConfig:
    """The caption two-model test's settings (`measure.vlm-two-model`); k=10 as in the published scripts.

    They are the settings of the caption retrieval, which the one-model caption test reuses.
    """

    k: int = field(default=10, metadata=at_least(1))  # neighbours of the retrieval (the scripts' k)
    index: str = field(default="t2i", metadata=one_of(VLM_INDEXES))  # public images (t2i) or public captions (t2t)
    top_t: tuple[int, ...] = field(default=(1, 10), metadata=each(at_least(1)))  # the top-L levels of its gap (ppg@L)
    phis: tuple[float, ...] = field(default=DEFAULT_PHIS, metadata=each(fraction()))
    stats: StatsConfig = field(default_factory=StatsConfig, metadata=from_group("stats"))
    batch_size: int = field(default=256, metadata=at_least(1))

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class CaptionQueries:
    """The records whose captions are attacked, their ground truth, and who was left out and why."""

    records: RecordSet
    truth: np.ndarray  # bool [n, V]
    excluded: Counter


@dataclass(frozen=True)
class PublicObjects:
    """The public records, their object sets as a multi-hot matrix, and the shared vocabulary."""

    records: RecordSet
    objects: np.ndarray  # bool [N, V]
    vocabulary: tuple[str, ...]

    def captioned(self) -> PublicObjects:
        """Returns the public records that have a caption: the keys of caption-to-caption search."""
        keep = np.array([bool(r.caption) for r in self.records], dtype=bool)
        records = RecordSet([r for r, k in zip(self.records, keep, strict=True) if k], name="captioned public")
        return PublicObjects(records, self.objects[keep], self.vocabulary)


@dataclass(frozen=True)
class Retrieval:
    """One model's object prediction for every query, with the distance to its nearest key.

    `soft_counts` [n, V] is the kernel-weighted number of the k neighbours holding each object
    (`dejavu.metrics.likelihood`), from which the per-record log-likelihood ratio is computed.
    """

    pred: np.ndarray  # bool [n, V]
    min_dist: np.ndarray
    soft_counts: np.ndarray
    k: int

    def object_log_likelihood(self, truth: np.ndarray) -> np.ndarray:
        """Returns float [n]: the mean log-probability of each record's true objects under its neighbours."""
        return object_log_likelihood(truth, self.soft_counts, self.k)

    def take(self, mask: np.ndarray) -> Retrieval:
        """Returns the retrieval of the queries picked by a boolean mask."""
        return Retrieval(self.pred[mask], self.min_dist[mask], self.soft_counts[mask], self.k)


def caption_queries(records: RecordSet, split: str, vocabulary: tuple[str, ...]) -> CaptionQueries:
    """Returns the `split` records with a caption and ground-truth objects; the rest are counted.

    Example:
        >>> from dejavu.attacks.vlm import caption_queries
        >>> from dejavu.records import Record, RecordSet
        >>> records = RecordSet([Record("a1", "a1.png", 8, 8, caption="a dog", objects=("dog",), split="A"),
        ...                      Record("a2", "a2.png", 8, 8, objects=("cat",), split="A"),
        ...                      Record("b1", "b1.png", 8, 8, caption="a cat", objects=("cat",), split="B")])
        >>> queries = caption_queries(records, "A", vocabulary=("cat", "dog"))
        >>> queries.records.ids, queries.truth, dict(queries.excluded)
        (['a1'], array([[False,  True]]), {'no-caption': 1})
    """
    keep, excluded = [], Counter()
    for r in records:
        if r.split != split:
            continue
        if not r.caption:
            excluded["no-caption"] += 1
        elif not r.objects:
            excluded["no-objects"] += 1
        else:
            keep.append(r)
    rs = RecordSet(keep, name=f"captions {split}")
    return CaptionQueries(rs, multi_hot([r.objects for r in rs], vocabulary, rs.ids), excluded)


def public_objects(records: RecordSet) -> PublicObjects:
    """Returns the public records and a vocabulary covering every object of every record.

    Example:
        >>> from dejavu.attacks.vlm import public_objects
        >>> from dejavu.records import Record, RecordSet
        >>> records = RecordSet([Record("p1", "p1.png", 8, 8, objects=("dog", "ball"), split="public"),
        ...                      Record("a1", "a1.png", 8, 8, objects=("cat",), split="A")])
        >>> public = public_objects(records)
        >>> public.vocabulary, public.records.ids, public.objects
        (('ball', 'cat', 'dog'), ['p1'], array([[ True, False,  True]]))
    """
    public = records.where(split="public")
    vocabulary = object_vocabulary([r.objects or () for r in records])
    return PublicObjects(public, multi_hot([r.objects or () for r in public], vocabulary, public.ids), vocabulary)


def _unit(e: Embeddings) -> torch.Tensor:
    return torch.nn.functional.normalize(e.vectors, dim=1)


class CaptionRetriever:
    """One text encoder's kNN over public images (with its image tower) or public captions."""

    def __init__(self, encoder: Encoder, public: PublicObjects, index: str, k: int, *,
                 cache_dir: Path | None, batch_size: int, progress: bool):
        if index not in VLM_INDEXES:
            raise ValueError(f"index must be 't2i' or 't2t', not {index!r}")
        if index == "t2t":
            public = public.captioned()
        if k > len(public.records):
            what = "public" if index == "t2i" else "captioned public"
            raise ValueError(f"k={k} exceeds the number of {what} records ({len(public.records)}) searched by "
                             f"{index}; lower k or add public records")
        self.encoder, self.public, self.k = encoder, public, k
        self.cache_dir, self.batch_size, self.progress = cache_dir, batch_size, progress
        if index == "t2i":
            keys = embed_records(encoder, public.records, cache_dir=cache_dir, batch_size=batch_size,
                                 progress=progress)
        else:
            keys = self.captions(public.records)
        self.keys = _unit(keys)

    def captions(self, records: RecordSet) -> Embeddings:
        """Returns the encoder's caption embeddings of `records`, which all have a caption."""
        return embed_captions(self.encoder, {r.id: r.caption for r in records}, cache_dir=self.cache_dir,
                              batch_size=self.batch_size, progress=self.progress)

    def retrieve(self, queries: RecordSet, top_ts: Sequence[int] = ()) -> list[Retrieval]:
        """Returns the union of the objects of each caption's k nearest public keys, then the top-T of each T.

        One search serves every prediction rule: they differ only in how the neighbours' objects are pooled.
        """
        q = _unit(self.captions(queries))
        if q.shape[1] != self.keys.shape[1]:
            name = getattr(self.encoder, "name", type(self.encoder).__name__)
            raise ValueError(f"encoder {name} embeds captions in {q.shape[1]} dims but its public keys in "
                             f"{self.keys.shape[1]}; text-to-image search needs the joint image-text space "
                             f"(layer 'projector')")
        nbrs = search(q, self.keys, self.k, metric="cosine")
        idx, dists = nbrs.indices.numpy(), nbrs.distances.numpy()
        min_dist = dists[:, 0].astype(np.float64)
        soft = soft_object_counts(self.public.objects, idx, dists)
        preds = [union_objects(self.public.objects, idx)] + [top_t_objects(self.public.objects, idx, t) for t in top_ts]
        return [Retrieval(pred, min_dist, soft, self.k) for pred in preds]


def pair_rows(test: str, subset: str, truth: np.ndarray, a: Retrieval, b: Retrieval, stats: StatsConfig,
              suffix: str = "", prefix: str = "") -> list[Row]:
    """Returns PPG, PRG, AUCG and both models' mean precision/recall, with intervals."""
    prec_a, rec_a = precision_recall(truth, a.pred)
    prec_b, rec_b = precision_recall(truth, b.pred)
    n = truth.shape[0]
    idx = bootstrap_indices(n, stats.n_bootstrap, stats.seed)
    rows = [bootstrap_ppg(prec_a, prec_b, idx).row(test, subset, f"{prefix}ppg{suffix}"),
            bootstrap_prg(rec_a, rec_b, idx).row(test, subset, f"{prefix}prg{suffix}"),
            bootstrap_aucg(rec_a, rec_b, idx).row(test, subset, f"{prefix}aucg{suffix}")]
    for name, values in (("precision_target", prec_a), ("recall_target", rec_a),
                         ("precision_reference", prec_b), ("recall_reference", rec_b)):
        rows.append(bootstrap_mean(values, idx).row(test, subset, f"{prefix}{name}{suffix}"))
    return rows


def top_l_rows(test: str, prefix: str, ids: list[str], truth: np.ndarray, a: Retrieval, b: Retrieval,
               phis, stats: StatsConfig) -> list[Row]:
    """Returns the top-L precision, recall and F gaps for each ordering of SPEC section 5, with intervals.

    Each bootstrap resample of the records is ranked and cut at its own top L, as the point estimate is.
    """
    prec_a, rec_a = precision_recall(truth, a.pred)
    prec_b, rec_b = precision_recall(truth, b.pred)
    hits_a, hits_b = hits(truth, a.pred), hits(truth, b.pred)
    idx = bootstrap_indices(truth.shape[0], stats.n_bootstrap, stats.seed)
    rows = []
    for ordering in ORDERINGS:
        order = sample_order(ordering, ids, min_dist=a.min_dist, hits_a=hits_a, hits_b=hits_b)
        table = top_l_gaps(order, prec_a, rec_a, prec_b, rec_b, phis)
        samples = batched_top_l_gaps(order, prec_a, rec_a, prec_b, rec_b, phis, idx)
        for j, row in enumerate(table.itertuples()):
            for gap in TOP_L_GAPS:
                rows.append(percentile_interval(float(getattr(row, gap)), samples[gap][:, j], int(row.L))
                            .row(test, "all", f"{prefix}top_l_{gap}@{ordering}@{row.phi:g}"))
    return rows


def attacked_captions(records: RecordSet) -> tuple[PublicObjects, CaptionQueries]:
    """Returns the public object index and the attacked A captions, raising when no A record qualifies."""
    public = public_objects(records)
    queries = caption_queries(records, "A", public.vocabulary)
    if len(queries.records) == 0:
        raise ValueError(f"no A record has a caption and objects (excluded: {dict(queries.excluded)})")
    return public, queries


def subset_pair_rows(test: str, queries: CaptionQueries, a: Retrieval, b: Retrieval, stats: StatsConfig,
                     suffix: str = "") -> list[Row]:
    """Returns `pair_rows` for all, canary and non-canary queries (a subset without records has none)."""
    canary = np.array([r.is_canary for r in queries.records])
    rows: list[Row] = []
    for subset, mask in subset_masks(canary).items():
        if mask.any():
            rows += pair_rows(test, subset, queries.truth[mask], a.take(mask), b.take(mask), stats, suffix)
    return rows


def corrected_pair_rows(test: str, queries: CaptionQueries, a: Retrieval, b: Retrieval, null: CaptionQueries,
                        null_a: Retrieval, null_b: Retrieval, stats: StatsConfig, suffix: str = "") -> list[Row]:
    """Returns corrected_ppg, corrected_prg and corrected_aucg per subset: each gap minus its null on eval.

    The null is the same comparison on the eval captions, which neither model saw: what the two
    retrievers' difference in predictive power produces without memorization. Only the corrected
    gap compares a one-model test with the two-model one (SPEC section 5).
    """
    nulls = gap_stats(null.truth, null_a, null_b)
    canary = np.array([r.is_canary for r in queries.records])
    rows: list[Row] = []
    for subset, mask in subset_masks(canary).items():
        if not mask.any():
            continue
        for name, stat in gap_stats(queries.truth[mask], a.take(mask), b.take(mask)).items():
            interval = bootstrap_difference(stat, int(mask.sum()), nulls[name], null.truth.shape[0],
                                            stats.n_bootstrap, stats.seed)
            rows.append(interval.row(test, subset, f"corrected_{name}{suffix}"))
    return rows


def gap_stats(truth: np.ndarray, a: Retrieval, b: Retrieval) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Returns the batched statistic of each population gap (ppg, prg, aucg) over record positions."""
    prec_a, rec_a = precision_recall(truth, a.pred)
    prec_b, rec_b = precision_recall(truth, b.pred)
    return {"ppg": pairwise_gap_stat(prec_a, prec_b), "prg": pairwise_gap_stat(rec_a, rec_b),
            "aucg": mean_gap_stat(rec_a, rec_b)}


def caption_canary_rows(test: str, queries: CaptionQueries, a: Retrieval, b: Retrieval,
                        stats: StatsConfig) -> list[Row]:
    """Returns the canary permutation p-value of PPG and how well each sample-level ordering ranks canaries.

    `canary_auroc` is the AUROC of the memorization score `max_pred_gap`; `canary_auroc@crct_pred` and
    `canary_auroc@min_dist` rank by the target's own success; `canary_auroc@llr` by the continuous
    score, the log-likelihood ratio of the record's objects under the target's and the reference's
    neighbours (`dejavu.metrics.likelihood`). All carry a bootstrap interval. Both need canaries and
    other records among the queries; otherwise there are no rows.
    """
    canary = np.array([r.is_canary for r in queries.records])
    if not canary.any() or canary.all():
        return []
    prec_a, _ = precision_recall(queries.truth, a.pred)
    prec_b, _ = precision_recall(queries.truth, b.pred)
    perm = subset_gap_pvalue(pairwise_gap_stat(prec_a, prec_b), canary, stats.n_permutations, stats.seed)
    rows = [Row(test, "canary", "pvalue_ppg", perm.p_value, n=perm.n_canary)]
    hits_a, hits_b = hits(queries.truth, a.pred), hits(queries.truth, b.pred)
    for ordering in ORDERINGS:
        score = ordering_score(ordering, min_dist=a.min_dist, hits_a=hits_a, hits_b=hits_b)
        metric = "canary_auroc" if ordering == "max_pred_gap" else f"canary_auroc@{ordering}"
        rows.append(bootstrap_auroc(score, canary, stats.n_bootstrap, stats.seed).row(test, "canary", metric))
    llr = a.object_log_likelihood(queries.truth) - b.object_log_likelihood(queries.truth)
    rows.append(bootstrap_auroc(llr, canary, stats.n_bootstrap, stats.seed).row(test, "canary", "canary_auroc@llr"))
    return rows


def vlm_two_model(target: Encoder, reference: Encoder, records: RecordSet, cfg: VLMTestConfig = VLMTestConfig(),
                  *, cache_dir: Path | None = None, progress: bool = True) -> list[Row]:
    """Returns the two-model caption test of SPEC section 5: target A against reference B on A's captions.

    The null (SPEC: "always show the null") comes from the eval records, which neither model saw:
    the top-L gaps there are what selection alone produces (rows `null_top_l_*`), and PPG/PRG/AUCG
    there (`null_ppg`, ...) are what a difference between the two models produces without
    memorization. Only the part of a gap above its null is memorization: `corrected_ppg`, ... per
    subset, the numbers to compare with the one-model test's.
    """
    public, queries = attacked_captions(records)
    retrievers = [CaptionRetriever(m, public, cfg.index, cfg.k, cache_dir=cache_dir, batch_size=cfg.batch_size,
                                   progress=progress) for m in (target, reference)]
    (a, *a_top), (b, *b_top) = (r.retrieve(queries.records, cfg.top_t) for r in retrievers)
    rows = excluded_rows(TEST, queries.excluded) + subset_pair_rows(TEST, queries, a, b, cfg.stats)
    for t, at, bt in zip(cfg.top_t, a_top, b_top, strict=True):
        rows += pair_rows(TEST, "all", queries.truth, at, bt, cfg.stats, suffix=f"@top{t}")
    rows += top_l_rows(TEST, "", queries.records.ids, queries.truth, a, b, cfg.phis, cfg.stats)
    null = caption_queries(records, "eval", public.vocabulary)
    if len(null.records):
        (na,), (nb,) = (r.retrieve(null.records) for r in retrievers)
        rows += top_l_rows(TEST, "null_", null.records.ids, null.truth, na, nb, cfg.phis, cfg.stats)
        rows += pair_rows(TEST, "all", null.truth, na, nb, cfg.stats, prefix="null_")
        rows += corrected_pair_rows(TEST, queries, a, b, null, na, nb, cfg.stats)
    else:
        log.warning("no eval record has a caption and objects, so the top-L null curve is missing; "
                    "top-L gaps alone overstate memorization")
    return rows + caption_canary_rows(TEST, queries, a, b, cfg.stats)


def vlm_one_model_text(target: Encoder, text_model: Encoder, records: RecordSet,
                       cfg: VLMTestConfig = VLMTestConfig(), *, cache_dir: Path | None = None,
                       progress: bool = True) -> list[Row]:
    """Returns the one-model caption test: the target (t2i and t2t) against a text-only model (t2t).

    The text-only model sees only captions, so what it retrieves is what the caption alone
    reveals; rows without a suffix are the target's t2i, rows with `_t2t` its t2t.

    The text model is a better retriever than the target even on captions neither saw, so the raw
    gap mixes memorization with that difference. The null (`null_ppg`, ...: the same comparison on
    the eval captions) measures it, and `corrected_ppg`, ... (gap - null) are the numbers comparable
    with the two-model test (SPEC section 5, "Null for one-model tests").
    """
    public, queries = attacked_captions(records)
    null = caption_queries(records, "eval", public.vocabulary)
    if not len(null.records):
        log.warning("no eval record has a caption and objects, so the one-model caption test has no null; "
                    "its raw gap mixes memorization with the text model's better retrieval")
    kw = dict(cache_dir=cache_dir, batch_size=cfg.batch_size, progress=progress)
    text = CaptionRetriever(text_model, public, "t2t", cfg.k, **kw)
    (ref,) = text.retrieve(queries.records)
    null_ref = text.retrieve(null.records)[0] if len(null.records) else None
    rows = excluded_rows(TEXT_TEST, queries.excluded)
    for index, suffix in (("t2i", ""), ("t2t", "_t2t")):
        retriever = CaptionRetriever(target, public, index, cfg.k, **kw)
        (tgt,) = retriever.retrieve(queries.records)
        rows += subset_pair_rows(TEXT_TEST, queries, tgt, ref, cfg.stats, suffix)
        if null_ref is not None:
            (null_tgt,) = retriever.retrieve(null.records)
            rows += pair_rows(TEXT_TEST, "all", null.truth, null_tgt, null_ref, cfg.stats, suffix, prefix="null_")
            rows += corrected_pair_rows(TEXT_TEST, queries, tgt, ref, null, null_tgt, null_ref, cfg.stats, suffix)
    return rows
