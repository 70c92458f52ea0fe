"""The image test end to end on planted encoders: memorization must show up, and only where planted."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from dejavu.attacks.common import StatsConfig
from dejavu.attacks.grid import write_memorized_grid
from dejavu.attacks.image import ImageTestConfig, image_two_model
from dejavu.crops import background_crops
from dejavu.records import Box, Record, RecordSet

CLASSES = ("cat", "dog", "fox", "owl")
SIZE = 24


def _code_color(i: int) -> tuple[int, int, int]:
    return (i % 256, (i // 256) % 256, 7)


class LookupEncoder:
    """Embeds an image by the record index hidden in its solid colour, through a lookup table.

    A record it "memorized" maps to its label's centroid; any other attacked record maps to noise,
    as a model with no background correlation would. Public images always map near their label.
    """

    supports_text = False
    layer = "projector"

    def __init__(self, table: dict[int, torch.Tensor], name: str):
        self.table, self.fingerprint = table, f"lookup-{name}"

    @staticmethod
    def image_transform(image: Image.Image) -> torch.Tensor:
        r, g, _ = image.getpixel((image.width - 1, image.height - 1))
        return torch.tensor([float(r + 256 * g)]).view(1, 1, 1)

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.table[int(c)] for c in pixels.flatten().tolist()])

    def embed_texts(self, texts):  # pragma: no cover - image-only
        raise TypeError


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(0)
    centroids = {c: torch.tensor(rng.normal(size=8) * 10, dtype=torch.float32) for c in CLASSES}
    records, i = [], 0
    for split, per_class in (("A", 12), ("B", 12), ("public", 30)):
        for label in CLASSES:
            for _ in range(per_class):
                path = folder / f"{i}.png"
                Image.new("RGB", (SIZE, SIZE), _code_color(i)).save(path)
                box = (Box(0, 0, 8, SIZE, label),)
                records.append(Record(id=f"r{i:04d}", image=path, width=SIZE, height=SIZE, label=label,
                                      boxes=box, split=split, repeat=3 if split == "A" and _ < 2 else 1))
                i += 1
    records = RecordSet(records)

    def encoder(memorized_split: str, name: str) -> LookupEncoder:
        table = {}
        for n, r in enumerate(records):
            near = r.split == "public" or r.split == memorized_split
            noise = torch.tensor(rng.normal(size=8) * (0.5 if near else 10), dtype=torch.float32)
            table[n] = (centroids[r.label] if near else 0) + noise
        return LookupEncoder(table, name)

    return records, encoder("A", "a"), encoder("B", "b")


CFG = ImageTestConfig(k=5, stats=StatsConfig(n_bootstrap=50, n_permutations=50))


def _value(result, metric, subset="all"):
    rows = [r for r in result.rows if r.metric == metric and r.subset == subset]
    assert len(rows) == 1, (metric, subset)
    return rows[0]


def test_planted_memorization_gives_a_large_gap(planted):
    records, model_a, model_b = planted
    crops = background_crops([r for r in records if r.split in "AB"])
    result = image_two_model(model_a, model_b, records, crops, CFG, progress=False)
    gap = _value(result, "dv_gap@100")
    assert gap.value > 0.5 and gap.ci_low > 0.3
    assert _value(result, "memorized").value > 0.5
    # the identity of SPEC section 3 on real pipeline output
    assert gap.value == pytest.approx(_value(result, "memorized").value - _value(result, "misrepresented").value)


def test_swapped_roles_give_a_negative_gap(planted):
    records, model_a, model_b = planted
    crops = background_crops([r for r in records if r.split in "AB"])
    result = image_two_model(model_b, model_a, records, crops, CFG, progress=False)
    assert _value(result, "dv_gap@100").value < -0.5


def test_a_model_against_itself_has_no_gap(planted):
    records, model_a, _ = planted
    crops = background_crops([r for r in records if r.split in "AB"])
    result = image_two_model(model_a, model_a, records, crops, CFG, progress=False)
    for p in ("5", "20", "100"):
        assert _value(result, f"dv_gap@{p}").value == 0.0
    assert _value(result, "memorized").value == 0.0


def test_canaries_are_reported_separately(planted):
    records, model_a, model_b = planted
    crops = background_crops([r for r in records if r.split in "AB"])
    result = image_two_model(model_a, model_b, records, crops, CFG, progress=False)
    canary = _value(result, "dv_gap@100", "canary")
    assert canary.n == sum(r.is_canary for r in records)
    assert {r.subset for r in result.rows} >= {"all", "canary", "non-canary"}
    assert 0.0 <= _value(result, "pvalue_dv_gap@20", "canary").value <= 1.0


def test_record_order_does_not_change_the_numbers(planted):
    records, model_a, model_b = planted
    shuffled = list(records)
    random.Random(3).shuffle(shuffled)
    shuffled = RecordSet(shuffled)
    rows = []
    for rs in (records, shuffled):
        crops = background_crops([r for r in rs if r.split in "AB"])
        result = image_two_model(model_a, model_b, rs, crops, CFG, progress=False)
        rows.append({(r.subset, r.metric): r.value for r in result.rows if not r.metric.startswith("pvalue")})
    assert rows[0] == pytest.approx(rows[1], nan_ok=True)


def test_k_larger_than_public_is_a_clear_error(planted):
    records, model_a, model_b = planted
    crops = background_crops([r for r in records if r.split in "AB"])
    with pytest.raises(ValueError, match="exceeds the public set size"):
        image_two_model(model_a, model_b, records, crops, ImageTestConfig(k=10_000), progress=False)


def test_public_record_without_label_names_it(planted):
    records, model_a, model_b = planted
    broken = RecordSet([r if r.id != "r0100" else Record(**{**r.__dict__, "label": None}) for r in records])
    crops = background_crops([r for r in broken if r.split in "AB"])
    with pytest.raises(ValueError, match="r0100"):
        image_two_model(model_a, model_b, broken, crops, CFG, progress=False)


def _crops(records):
    return background_crops([r for r in records if r.split in "AB"])


def test_memorized_grid_has_one_row_per_memorized_record(planted, tmp_path):
    records, model_a, model_b = planted
    crops = _crops(records)
    result = image_two_model(model_a, model_b, records, crops, CFG, progress=False)
    small = write_memorized_grid(result, records, crops, tmp_path / "one.png", n=1, n_neighbours=2)
    large = write_memorized_grid(result, records, crops, tmp_path / "three.png", n=3, n_neighbours=4)
    with Image.open(small) as one, Image.open(large) as three:
        # rows are records, columns the crop plus its neighbours: the figure grows with both
        assert three.height == pytest.approx(3 * one.height, rel=0.05)
        assert three.width == pytest.approx(5 / 3 * one.width, rel=0.05)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "three.png"]  # no temporary files left


def test_memorized_grid_is_skipped_when_nothing_is_memorized(planted, tmp_path):
    records, model_a, _ = planted
    crops = _crops(records)
    result = image_two_model(model_a, model_a, records, crops, CFG, progress=False)
    assert write_memorized_grid(result, records, crops, tmp_path / "grid.png") is None
    assert not (tmp_path / "grid.png").exists()


def test_named_records_keep_ids_and_name_the_classes(planted):
    records, model_a, model_b = planted
    result = image_two_model(model_a, model_b, records, _crops(records), CFG, progress=False)
    named = result.named_records()
    assert sorted(named.id) == sorted(r.id for r in records if r.split in "AB")
    assert all(named.label == [records.by_id(i).label for i in named.id])
    memorized = named[named.correct_target & ~named.correct_reference]
    assert len(memorized) > 0 and (memorized.pred_target == memorized.label).all()
    assert np.isfinite(memorized.score).all() and np.isneginf(named.score[~named.index.isin(memorized.index)]).all()


def test_target_and_reference_may_differ_in_width(planted):
    records, model_a, model_b = planted
    narrow = LookupEncoder({i: v[:5] for i, v in model_b.table.items()}, "b-narrow")
    result = image_two_model(model_a, narrow, records, _crops(records), CFG, progress=False)
    assert _value(result, "dv_gap@100").value > 0.5


def test_nan_embedding_names_the_record(planted):
    records, model_a, model_b = planted
    table = dict(model_a.table)
    table[100] = torch.full((8,), float("nan"))  # r0100 is a public record
    broken = LookupEncoder(table, "a-nan")
    with pytest.raises(ValueError, match=r"NaN/Inf image embeddings, first for record 'r0100'"):
        image_two_model(broken, model_b, records, _crops(records), CFG, progress=False)


class FlattenEncoder(LookupEncoder):
    """Flattens the raw pixels: its width depends on the image size, so crops and full images differ."""

    def __init__(self):
        self.fingerprint, self.name = "flatten", "flatten"

    @staticmethod
    def image_transform(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.flatten(1)


def test_crop_and_public_widths_that_differ_are_a_clear_error(planted):
    records, _, model_b = planted
    with pytest.raises(ValueError, match=r"encoder flatten .* embeds background crops in 1152 dims but public "
                                         r"images in 1728"):
        image_two_model(FlattenEncoder(), model_b, records, _crops(records), CFG, progress=False)


def test_crops_of_other_records_are_an_error_not_a_silent_drop(planted):
    records, model_a, model_b = planted
    crops_of_a = background_crops([r for r in records if r.split == "A"])
    with pytest.raises(ValueError, match=r"48 B records have neither a background crop nor an exclusion reason"):
        image_two_model(model_a, model_b, records, crops_of_a, CFG, progress=False)


def test_log_likelihood_ratio_per_record_and_its_canary_auroc(planted):
    records, model_a, model_b = planted
    crops = background_crops([r for r in records if r.split in "AB"])
    result = image_two_model(model_a, model_b, records, crops, CFG, progress=False)
    frame = result.records
    # model A embeds every A crop near its label's centroid: all k = 5 neighbours carry the label,
    # so p = (5 + 1) / (5 + 4 classes)
    in_a = frame[frame.split == "A"]
    assert in_a.log_likelihood_target.to_numpy() == pytest.approx(np.log(6 / 9), abs=1e-12)
    assert (frame.llr == frame.log_likelihood_target - frame.log_likelihood_reference).all()
    # ... which is the most any model attains, so no A record has a negative llr; where none of model B's
    # neighbours carries the label (p = 1 / 9), it is ln 6
    assert in_a.llr.min() >= -1e-12 and in_a.llr.max() == pytest.approx(np.log(6), abs=1e-12)
    row = _value(result, "canary_auroc@llr", "canary")
    assert row.n == len(in_a) and row.ci_low <= row.value <= row.ci_high
    # swapping the models negates every llr; a model against itself has llr 0 everywhere
    swapped = image_two_model(model_b, model_a, records, crops, CFG, progress=False)
    assert _value(swapped, "canary_auroc@llr", "canary").value == pytest.approx(1 - row.value, abs=1e-12)
    same = image_two_model(model_a, model_a, records, crops, CFG, progress=False)
    assert (same.records.llr == 0).all() and _value(same, "canary_auroc@llr", "canary").value == 0.5
