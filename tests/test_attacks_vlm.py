"""The caption test end to end on planted vision-language encoders (SPEC section 5).

Public images form clusters with disjoint object sets. A model that memorized an A record embeds
its caption at the centre of the cluster holding the record's objects, so the neighbours reveal
objects the caption never mentions; a model that did not embeds it at an unrelated cluster.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from dejavu.attacks.common import StatsConfig
from dejavu.attacks.vlm import VLMTestConfig, vlm_one_model_text, vlm_two_model
from dejavu.records import Record, RecordSet

N_CLUSTERS = 6
PER_CLUSTER = 3  # = k, so the k neighbours of a cluster centre are exactly that cluster's images
NOISE_OBJECTS = ("lamp", "rug")
CFG = VLMTestConfig(k=PER_CLUSTER, stats=StatsConfig(n_bootstrap=100, n_permutations=100))


class CaptionLookupEncoder:
    """A fake CLIP: images embed by the record number in their colour, captions by a lookup table."""

    supports_text = True
    layer = "projector"

    def __init__(self, images: dict[int, torch.Tensor], texts: dict[str, torch.Tensor], name: str):
        self.images, self.texts, self.fingerprint, self.name = images, texts, f"vlm-{name}", name

    @staticmethod
    def image_transform(image: Image.Image) -> torch.Tensor:
        r, g, _ = image.getpixel((0, 0))
        return torch.tensor([float(r + 256 * g)]).view(1, 1, 1)

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.images[int(c)] for c in pixels.flatten().tolist()])

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.stack([self.texts[t] for t in texts]), dim=1)


def _cluster_objects(c: int) -> tuple[str, str]:
    return f"obj{c}a", f"obj{c}b"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Returns (records, expected neighbour clusters of A captions per model, encoders by name)."""
    folder = tmp_path_factory.mktemp("vlm")
    rng = np.random.default_rng(0)
    axis = torch.eye(N_CLUSTERS)
    records, images, public_text = [], {}, {}

    def add(split, objects, caption, repeat=1, vector=None):
        n = len(records)
        path = folder / f"{n}.png"
        Image.new("RGB", (4, 4), (n % 256, n // 256, 0)).save(path)
        rid = f"v{n:03d}"
        records.append(Record(id=rid, image=path, width=4, height=4, label="x", caption=caption,
                              objects=objects, split=split, repeat=repeat))
        images[n] = vector if vector is not None else torch.zeros(N_CLUSTERS)
        return rid

    for c in range(N_CLUSTERS):
        for j in range(PER_CLUSTER):
            noise = torch.tensor(rng.normal(size=N_CLUSTERS) * 0.05, dtype=torch.float32)
            objects = (*_cluster_objects(c), NOISE_OBJECTS[(c + j) % 2])
            rid = add("public", objects, f"public {c}.{j}: a room", vector=axis[c] + noise)
            public_text[f"public {c}.{j}: a room"] = axis[c] + noise
    # A: the caption mentions one object; the memorizing model reveals the other (and the noise ones)
    truth_cluster, memorized_by = {}, {}
    for i in range(30):
        c = i % N_CLUSTERS
        extra = ("vase",) if i % 3 == 0 else ()  # in no public image: no model can reveal it
        canary = i < 6
        rid = add("A", (*_cluster_objects(c), *extra), f"{i}: a photo with {_cluster_objects(c)[0]}",
                  repeat=4 if canary else 1)
        truth_cluster[rid] = c
        # canaries are always memorized by the target; others mostly (the reference sometimes guesses right)
        memorized_by[rid] = {"target": canary or rng.random() < 0.9, "reference": not canary and rng.random() < 0.1}
    add("A", None, "an A record without objects")
    add("A", (), "another A record without objects")
    add("A", ("obj0a",), None)
    for i in range(12):
        add("eval", _cluster_objects(i % N_CLUSTERS), f"eval {i}")

    def encoder(name: str, seed: int) -> CaptionLookupEncoder:
        local = np.random.default_rng(seed)
        texts = dict(public_text)
        for r in records:
            if r.split == "A" and r.id in truth_cluster:
                c = truth_cluster[r.id]
                hit = memorized_by[r.id].get(name, False)
                texts[r.caption] = axis[c if hit else (c + 3) % N_CLUSTERS]
            elif r.split == "eval":  # nobody saw eval: each model lands at an arbitrary cluster
                texts[r.caption] = axis[int(local.integers(N_CLUSTERS))]
        return CaptionLookupEncoder(images, texts, name)

    models = {"target": encoder("target", 1), "reference": encoder("reference", 2)}
    return RecordSet(records), truth_cluster, memorized_by, models


def _rows(rows, metric, subset="all"):
    found = [r for r in rows if r.metric == metric and r.subset == subset]
    assert len(found) == 1, (metric, subset, len(found))
    return found[0]


def _hand_scores(records, truth_cluster, memorized_by, model):
    """Returns per-record (precision, recall) by hand: a hit retrieves the record's own cluster, a miss
    the cluster three along; either way the three neighbours carry both noise objects."""
    prec, rec = [], []
    for rid, c in truth_cluster.items():
        g = set(records.by_id(rid).objects)
        hit = memorized_by[rid].get(model, False)
        retrieved = {*_cluster_objects(c if hit else (c + 3) % N_CLUSTERS), *NOISE_OBJECTS}
        prec.append(len(g & retrieved) / len(retrieved))
        rec.append(len(g & retrieved) / len(g))
    return np.array(prec), np.array(rec)


def test_planted_memorization_gives_large_positive_gaps(world):
    records, truth_cluster, memorized_by, models = world
    rows = vlm_two_model(models["target"], models["reference"], records, CFG, progress=False)
    for metric in ("ppg", "prg", "aucg"):
        row = _rows(rows, metric)
        assert row.value > 0.5 and row.ci_low > 0, row
        assert row.n == len(truth_cluster)
    # AUCG is exactly the gap in mean recall, here computed by hand from the construction
    _, rec_a = _hand_scores(records, truth_cluster, memorized_by, "target")
    _, rec_b = _hand_scores(records, truth_cluster, memorized_by, "reference")
    assert _rows(rows, "aucg").value == pytest.approx(rec_a.mean() - rec_b.mean(), abs=1e-12)
    assert _rows(rows, "prg").value == pytest.approx(np.sign(rec_a - rec_b).mean(), abs=1e-12)
    assert _rows(rows, "aucg").value == pytest.approx(
        _rows(rows, "recall_target").value - _rows(rows, "recall_reference").value, abs=1e-12)


def test_precision_counts_every_retrieved_object(world):
    records, truth_cluster, memorized_by, models = world
    rows = vlm_two_model(models["target"], models["reference"], records, CFG, progress=False)
    prec_a, _ = _hand_scores(records, truth_cluster, memorized_by, "target")
    prec_b, _ = _hand_scores(records, truth_cluster, memorized_by, "reference")
    assert set(prec_a) == {0.0, 0.5}  # a hit gets 2 of the 4 retrieved objects right
    assert _rows(rows, "precision_target").value == pytest.approx(prec_a.mean(), abs=1e-12)
    assert _rows(rows, "ppg").value == pytest.approx(np.sign(prec_a - prec_b).mean(), abs=1e-12)


def test_top_t_objects_by_hand(world):
    records, truth_cluster, memorized_by, models = world
    rows = vlm_two_model(models["target"], models["reference"], records, CFG, progress=False)
    # three neighbours hold 4 distinct objects, so the top 10 is the union
    for metric in ("ppg", "prg", "aucg", "precision_target", "recall_reference"):
        assert _rows(rows, f"{metric}@top10").value == _rows(rows, metric).value
    # top 1: both cluster objects are in all 3 neighbours; the tie goes to the name obj<c>a, which a
    # hit's record holds (precision 1, recall 1/|G|) and a miss's does not
    hits = np.array([memorized_by[rid]["target"] for rid in truth_cluster])
    sizes = np.array([len(records.by_id(rid).objects) for rid in truth_cluster])
    assert _rows(rows, "precision_target@top1").value == pytest.approx(hits.mean())
    assert _rows(rows, "recall_target@top1").value == pytest.approx((hits / sizes).mean())


def test_swapped_roles_give_negative_gaps(world):
    records, _, _, models = world
    rows = vlm_two_model(models["reference"], models["target"], records, CFG, progress=False)
    for metric in ("ppg", "prg", "aucg"):
        row = _rows(rows, metric)
        assert row.value < -0.5 and row.ci_high < 0, row


def test_a_model_against_itself_has_no_gap(world):
    records, _, _, models = world
    rows = vlm_two_model(models["target"], models["target"], records, CFG, progress=False)
    for metric in ("ppg", "prg", "aucg", "ppg@top1", "aucg@top10"):
        assert _rows(rows, metric).value == 0.0
    assert all(r.value == 0.0 for r in rows if "top_l_" in r.metric)


def test_records_without_objects_or_caption_are_dropped_and_counted(world):
    records, truth_cluster, _, models = world
    rows = vlm_two_model(models["target"], models["reference"], records, CFG, progress=False)
    assert _rows(rows, "excluded_no-objects").value == 2
    assert _rows(rows, "excluded_no-caption").value == 1
    assert _rows(rows, "ppg").n == len(truth_cluster)


def test_top_l_rows_and_their_null_on_eval(world):
    records, _, _, models = world
    rows = vlm_two_model(models["target"], models["reference"], records, CFG, progress=False)
    for ordering in ("min_dist", "crct_pred", "max_pred_gap"):
        for gap in ("precision_gap", "recall_gap", "f_gap"):
            assert _rows(rows, f"top_l_{gap}@{ordering}@0.1").n == 3  # floor(0.1 * 30)
            assert _rows(rows, f"null_top_l_{gap}@{ordering}@0.1").n == 1  # max(1, floor(0.1 * 12))
    # max_pred_gap ties at 2 for every memorized record and breaks ties by id: v018-v020, the first
    # three canaries, whose target recalls are 2/3 (v018 holds the unrevealable vase), 1, 1 and reference 0
    assert _rows(rows, "top_l_recall_gap@max_pred_gap@0.1").value == pytest.approx(8 / 9)
    # every top-L gap has a bootstrap interval; a gap in [-1, 1] has its interval there too
    for metric in ("top_l_f_gap@crct_pred@0.1", "null_top_l_recall_gap@min_dist@0.1"):
        gap = _rows(rows, metric)
        assert -1.0 <= gap.ci_low <= gap.ci_high <= 1.0


def test_canaries_get_subset_rows_a_pvalue_and_an_auroc(world):
    records, truth_cluster, memorized_by, models = world
    rows = vlm_two_model(models["target"], models["reference"], records, CFG, progress=False)
    n_canary = sum(records.by_id(rid).is_canary for rid in truth_cluster)
    assert _rows(rows, "ppg", "canary").n == n_canary
    assert _rows(rows, "ppg", "canary").value == 1.0  # every canary was planted as memorized
    assert _rows(rows, "ppg", "non-canary").n == len(truth_cluster) - n_canary
    # every canary has the top hit gap (2); another record is below it unless it too is memorized
    # by the target and not the reference, which is a tie worth one half
    others = [rid for rid in truth_cluster if not records.by_id(rid).is_canary]
    tie = [memorized_by[r]["target"] and not memorized_by[r]["reference"] for r in others]
    auroc_row = _rows(rows, "canary_auroc", "canary")
    assert auroc_row.value == pytest.approx(1 - 0.5 * np.mean(tie))
    assert auroc_row.ci_low <= auroc_row.value <= auroc_row.ci_high and auroc_row.n == len(truth_cluster)
    # The orderings that use only the target's success are reported too, with their intervals.
    for ordering in ("crct_pred", "min_dist"):
        row = _rows(rows, f"canary_auroc@{ordering}", "canary")
        assert 0.0 <= row.ci_low <= row.value <= row.ci_high <= 1.0
    assert 0.0 <= _rows(rows, "pvalue_ppg", "canary").value <= 0.2


def test_one_model_text_test_against_a_text_model(world):
    records, truth_cluster, memorized_by, models = world
    # the "reference" encoder as the text-only model: its public caption keys are its image keys, so
    # its caption-to-caption search retrieves what its text-to-image search would
    rows = vlm_one_model_text(models["target"], models["reference"], records, CFG, progress=False)
    prec_a, rec_a = _hand_scores(records, truth_cluster, memorized_by, "target")
    prec_b, rec_b = _hand_scores(records, truth_cluster, memorized_by, "reference")
    for suffix in ("", "_t2t"):
        assert _rows(rows, f"ppg{suffix}").value == pytest.approx(np.sign(prec_a - prec_b).mean(), abs=1e-12)
        assert _rows(rows, f"aucg{suffix}").value == pytest.approx(rec_a.mean() - rec_b.mean(), abs=1e-12)
    assert _rows(rows, "ppg").value > 0.5
    assert _rows(rows, "excluded_no-objects").value == 2
    assert _rows(rows, "aucg_t2t", "canary").n == sum(records.by_id(r).is_canary for r in truth_cluster)
    # the target as its own text model: its caption-to-caption search is the reference's exactly
    same = vlm_one_model_text(models["target"], models["target"], records, CFG, progress=False)
    for metric in ("ppg_t2t", "prg_t2t", "aucg_t2t"):
        assert _rows(same, metric).value == 0.0


def test_k_larger_than_public_is_a_clear_error(world):
    records, _, _, models = world
    with pytest.raises(ValueError, match="k=100 exceeds the number of public records"):
        vlm_two_model(models["target"], models["reference"], records, VLMTestConfig(k=100), progress=False)


def test_text_and_image_widths_that_differ_are_a_clear_error(world):
    records, _, _, models = world
    target = models["target"]
    wide = CaptionLookupEncoder({i: torch.cat([v, v]) for i, v in target.images.items()}, target.texts, "wide")
    with pytest.raises(ValueError, match=r"encoder wide embeds captions in 6 dims but its public keys in 12"):
        vlm_two_model(wide, models["reference"], records, CFG, progress=False)


def test_population_null_on_eval_records(world):
    records, _, _, models = world
    rows = vlm_two_model(models["target"], models["reference"], records, CFG, progress=False)
    n_eval = sum(r.split == "eval" and bool(r.caption) and bool(r.objects) for r in records)
    for metric in ("null_ppg", "null_prg", "null_aucg"):
        assert _rows(rows, metric).n == n_eval
    same = vlm_two_model(models["target"], models["target"], records, CFG, progress=False)
    assert _rows(same, "null_ppg").value == 0.0 and _rows(same, "null_aucg").value == 0.0


def test_corrected_gaps_are_the_gap_minus_its_eval_null(world):
    records, _, _, models = world
    for rows, suffixes in ((vlm_two_model(models["target"], models["reference"], records, CFG, progress=False), ("",)),
                           (vlm_one_model_text(models["target"], models["reference"], records, CFG, progress=False),
                            ("", "_t2t"))):
        for suffix in suffixes:
            for metric in ("ppg", "prg", "aucg"):
                null = _rows(rows, f"null_{metric}{suffix}")
                for subset in ("all", "canary", "non-canary"):
                    raw, corrected = _rows(rows, f"{metric}{suffix}", subset), _rows(rows, f"corrected_{metric}{suffix}", subset)
                    assert corrected.value == pytest.approx(raw.value - null.value, abs=1e-12)
                    assert corrected.n == raw.n + null.n
                    assert corrected.ci_low <= corrected.value <= corrected.ci_high


def test_one_model_null_of_a_text_model_that_is_the_target_is_zero(world):
    records, _, _, models = world
    rows = vlm_one_model_text(models["target"], models["target"], records, CFG, progress=False)
    assert _rows(rows, "null_ppg_t2t").value == 0.0
    assert _rows(rows, "corrected_ppg_t2t", "canary").value == _rows(rows, "ppg_t2t", "canary").value == 0.0


def test_log_likelihood_ratio_ranks_canaries_as_planted(world):
    records, truth_cluster, memorized_by, models = world
    rows = vlm_two_model(models["target"], models["reference"], records, CFG, progress=False)
    # A hit's 3 neighbours all hold both cluster objects (soft count 3, p = 4/5), a miss's none (p = 1/5),
    # the vase is in no public image (p = 1/5): llr = (hit_target - hit_reference) * 2 ln 4 / |G|.
    ids = list(truth_cluster)
    hand = np.array([(memorized_by[r]["target"] - memorized_by[r].get("reference", False)) * 2 * np.log(4)
                     / len(records.by_id(r).objects) for r in ids])
    canary = np.array([records.by_id(r).is_canary for r in ids])
    expected = roc_auc_score(canary, hand)
    # the soft counts are 3 up to rounding, so records tied by hand may be ordered either way
    tied = sum(np.isclose(hand[i], hand[j]) for i in np.flatnonzero(canary) for j in np.flatnonzero(~canary))
    row = _rows(rows, "canary_auroc@llr", "canary")
    assert abs(row.value - expected) <= 0.5 * tied / (canary.sum() * (~canary).sum())
    assert row.value > 0.5 and row.ci_low <= row.value <= row.ci_high and row.n == len(ids)
    # swapping the models negates every llr exactly; a model against itself has llr 0 everywhere
    swapped = vlm_two_model(models["reference"], models["target"], records, CFG, progress=False)
    assert _rows(swapped, "canary_auroc@llr", "canary").value == pytest.approx(1 - row.value, abs=1e-12)
    same = vlm_two_model(models["target"], models["target"], records, CFG, progress=False)
    assert _rows(same, "canary_auroc@llr", "canary").value == 0.5
