"""Embedding records and captions: order by id, crops, the content cache, and errors naming records."""

import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from dejavu.embed import Embeddings, MissingIdsError, embed_captions, embed_records
from dejavu.encoders import NonFiniteEmbeddingError
from dejavu.records import Box, Record, RecordError, RecordSet

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def to_unit_tensor(image):
    """A fixed-size eval transform: nearest resize to 8x6 keeps flat colours flat."""
    return pil_to_tensor(image.resize((8, 6), Image.NEAREST)).float() / 255


class MeanColour:
    """A counting encoder whose embedding of an image is its mean RGB colour."""

    layer = "mean"
    image_transform = staticmethod(to_unit_tensor)

    def __init__(self, fingerprint="mean-v1", nan_for=None, adapter_errors=False):
        self.fingerprint = fingerprint
        self.image_calls = 0
        self.text_calls = 0
        self.nan_for = nan_for
        self.adapter_errors = adapter_errors

    def embed_images(self, pixels):
        self.image_calls += 1
        out = pixels.mean(dim=(2, 3))
        if self.nan_for is not None:
            hit = (out == torch.tensor(self.nan_for)).all(dim=1)
            if self.adapter_errors and hit.any():
                raise NonFiniteEmbeddingError("nan", rows=hit.nonzero().flatten().tolist())
            out[hit] = float("nan")
        return out

    @property
    def supports_text(self):
        return True

    def embed_texts(self, texts):
        self.text_calls += 1
        out = torch.tensor([[float(len(t)), 1.0] for t in texts])
        if self.nan_for is not None:
            out[[t == self.nan_for for t in texts]] = float("nan")
        return out / out.norm(dim=1, keepdim=True)


def make_records(tmp_path, colours, name="records"):
    records = []
    for i, colour in enumerate(colours):
        path = tmp_path / f"img{i}.png"
        if colour == "split":  # left half red, right half blue
            image = Image.new("RGB", (8, 6), RED)
            image.paste(BLUE, (4, 0, 8, 6))
        else:
            image = Image.new("RGB", (8, 6), colour)
        image.save(path)
        records.append(Record(id=f"r{i}", image=path, width=8, height=6, label="x"))
    return RecordSet(records, name=name)


def test_embeddings_follow_record_order_across_batches(tmp_path):
    records = make_records(tmp_path, [RED, BLUE, GREEN, RED, BLUE])
    encoder = MeanColour()
    out = embed_records(encoder, records, batch_size=2, progress=False)
    assert out.ids == ["r0", "r1", "r2", "r3", "r4"]
    assert out.vectors.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert encoder.image_calls == 3 and out.dim == 3 and len(out) == 5


def test_crops_replace_the_full_image_only_where_given(tmp_path):
    records = make_records(tmp_path, ["split", "split"])

    class Crop:
        box = Box(4, 0, 8, 6, "background")

    out = embed_records(MeanColour(), records, crops={"r0": Crop(), "absent": Crop()}, progress=False)
    assert out.vectors.tolist() == [[0, 0, 1], [0.5, 0, 0.5]]
    left = embed_records(MeanColour(), records, crops={"r1": (0, 0, 4, 6)}, progress=False)
    assert left.vectors.tolist() == [[0.5, 0, 0.5], [1, 0, 0]]


def test_cache_hit_skips_the_encoder_and_keys_on_content(tmp_path):
    records = make_records(tmp_path, [RED, BLUE, GREEN])
    cache = tmp_path / "cache"
    first = MeanColour()
    a = embed_records(first, records, cache_dir=cache, progress=False)
    second = MeanColour()
    b = embed_records(second, records, cache_dir=cache, progress=False)
    assert first.image_calls == 1 and second.image_calls == 0
    assert b.ids == a.ids and torch.equal(a.vectors, b.vectors)
    assert [p.suffix for p in cache.iterdir()] == [".pt"]  # written atomically: no temporary file left
    for changed in (dict(crops={"r0": (0, 0, 4, 3)}), dict(encoder=MeanColour("mean-v2")),
                    dict(records=records.where(id="r1"))):
        encoder = changed.pop("encoder", MeanColour())
        embed_records(encoder, changed.pop("records", records), cache_dir=cache, progress=False, **changed)
        assert encoder.image_calls == 1
    assert len(list(cache.iterdir())) == 4


def test_damaged_cache_file_is_recomputed(tmp_path):
    records = make_records(tmp_path, [RED])
    cache = tmp_path / "cache"
    embed_records(MeanColour(), records, cache_dir=cache, progress=False)
    (path,) = cache.iterdir()
    path.write_bytes(b"not a torch file")
    encoder = MeanColour()
    assert embed_records(encoder, records, cache_dir=cache, progress=False).vectors.tolist() == [[1, 0, 0]]
    assert encoder.image_calls == 1


@pytest.mark.parametrize("adapter_errors", [False, True])
def test_non_finite_embedding_names_the_first_record(tmp_path, adapter_errors):
    records = make_records(tmp_path, [RED, GREEN, BLUE, GREEN])
    encoder = MeanColour(nan_for=[0.0, 1.0, 0.0], adapter_errors=adapter_errors)
    with pytest.raises(ValueError, match=r"NaN/Inf image embeddings, first for record 'r1' \(file .*img1.png"):
        embed_records(encoder, records, batch_size=3, progress=False)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_bad_images_and_crops_raise_record_errors(tmp_path, num_workers):
    records = make_records(tmp_path, [RED, BLUE])
    (tmp_path / "img1.png").unlink()
    # the same plain message with worker processes: no worker traceback in front of it
    with pytest.raises(RecordError, match=r"^record 'r1', file .*img1.png.*does not exist"):
        embed_records(MeanColour(), records, num_workers=num_workers, progress=False)
    records = make_records(tmp_path, [RED, BLUE])
    with pytest.raises(RecordError, match=r"record 'r0'.*crop \(2, 2, 9, 4\) is empty or outside the 8x6 image"):
        embed_records(MeanColour(), records, crops={"r0": (2, 2, 9, 4)}, progress=False)


def test_transform_failures_and_size_mismatch_name_the_record(tmp_path):
    records = make_records(tmp_path, [RED, BLUE])
    records = RecordSet([records[0], Record(id="tall", image=records[1].image, width=8, height=6)])

    class Failing(MeanColour):
        image_transform = staticmethod(lambda image: 1 / 0)

    with pytest.raises(RecordError, match=r"record 'r0'.*image transform failed \(ZeroDivisionError"):
        embed_records(Failing(), records, progress=False)
    class NoResize(MeanColour):
        image_transform = staticmethod(lambda image: pil_to_tensor(image).float())

    with pytest.raises(RecordError, match=r"record 'tall'.*transformed to \(3, 6, 4\), unlike \(3, 6, 8\)"):
        embed_records(NoResize(), records, crops={"tall": (0, 0, 4, 6)}, progress=False)


def test_subset_keeps_the_requested_order_and_lists_missing_ids():
    emb = Embeddings(["a", "b", "c"], torch.tensor([[1.0], [2.0], [3.0]]))
    assert emb.subset(["c", "a"]).vectors.tolist() == [[3.0], [1.0]]
    assert emb.subset(["c", "a"]).ids == ["c", "a"]
    with pytest.raises(MissingIdsError, match="^2 query records are missing from the embeddings: x, y$"):
        emb.subset(["a", "x", "y"], what="query records")


def test_embeddings_reject_inconsistent_rows():
    with pytest.raises(ValueError, match="one row per id"):
        Embeddings(["a"], torch.zeros(2, 3))
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        Embeddings(["a", "a"], torch.zeros(2, 3))
    with pytest.raises(ValueError, match="float32"):
        Embeddings(["a"], torch.zeros(1, 3, dtype=torch.float64))


def test_captions_are_embedded_in_order_and_cached(tmp_path):
    texts = {"r2": "a dog", "r0": "a cat on a mat"}
    encoder = MeanColour()
    out = embed_captions(encoder, texts, cache_dir=tmp_path, batch_size=1, progress=False)
    assert out.ids == ["r2", "r0"] and encoder.text_calls == 2
    assert torch.allclose(out.vectors[0], torch.tensor([5.0, 1.0]) / 26 ** 0.5)
    again = MeanColour()
    embed_captions(again, texts, cache_dir=tmp_path, progress=False)
    assert again.text_calls == 0
    embed_captions(again, {"r2": "a dog", "r0": "a cat"}, cache_dir=tmp_path, progress=False)
    assert again.text_calls == 1


def test_caption_errors_name_the_record():
    with pytest.raises(RecordError, match="record 'r1': caption must be a string"):
        embed_captions(MeanColour(), {"r0": "ok", "r1": None}, progress=False)
    with pytest.raises(ValueError, match="NaN/Inf text embeddings, first for record 'r1'"):
        embed_captions(MeanColour(nan_for="bad"), {"r0": "ok", "r1": "bad"}, progress=False)

    class ImageOnly(MeanColour):
        supports_text = False

    with pytest.raises(TypeError, match="has no text encoder"):
        embed_captions(ImageOnly(), {"r0": "ok"}, progress=False)


def test_a_cache_written_with_the_ids_as_a_list_still_loads(tmp_path):
    from dejavu.embed import _load_cached

    path = tmp_path / "old.pt"
    torch.save({"ids": ["a", "b"], "vectors": torch.ones(2, 3), "meta": {}}, path)  # as releases before wrote it
    loaded = _load_cached(path, ["a", "b"])
    assert loaded.ids == ["a", "b"] and torch.equal(loaded.vectors, torch.ones(2, 3))
    assert _load_cached(path, ["b", "a"]) is None, "other ids than requested are recomputed"
