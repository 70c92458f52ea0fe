"""Decoded pixels: splitting an eval transform at ToTensor, the uint8 pixel array and its cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import v2 as T2

from dejavu.embed import _pixel_batches, embed_records
from dejavu.encoders import ModuleEncoder
from dejavu.pixels import (
    TensorStage,
    decoded_pixels,
    pil_to_uint8,
    split_at_to_tensor,
    stable_repr,
)
from dejavu.records import Record, RecordError, RecordSet

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def eval_transform() -> T.Compose:
    return T.Compose([T.Resize(8), T.CenterCrop(8), T.ToTensor(), T.Normalize(MEAN, STD)])


def random_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def make_records(folder, sizes, name="records") -> RecordSet:
    """Returns records of random RGB PNGs of the given (width, height) sizes, ids r0, r1, ..."""
    records = []
    for i, (width, height) in enumerate(sizes):
        path = folder / f"img{i}.png"
        random_image(width, height, seed=i).save(path)
        records.append(Record(id=f"r{i}", image=path, width=width, height=height, label="x"))
    return RecordSet(records, name=name)


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.Flatten(),
                         nn.Linear(6 * 6 * 6, 5))


# ---------------------------------------------------------------- split_at_to_tensor


def test_split_stages_compose_to_the_full_transform_bit_for_bit():
    full = eval_transform()
    stages = split_at_to_tensor(full)
    assert stages is not None
    pil_stage, tensor_stage = stages
    assert isinstance(tensor_stage, TensorStage)
    assert [type(t) for t in pil_stage.transforms] == [T.Resize, T.CenterCrop]
    assert [type(t) for t in tensor_stage.steps] == [T.Normalize]
    for seed, (w, h) in enumerate([(13, 9), (8, 8), (20, 31), (9, 16)]):
        image = random_image(w, h, seed)
        expected = full(image)
        pixels = pil_to_uint8(pil_stage(image))
        assert pixels.dtype == torch.uint8 and pixels.shape == (3, 8, 8)
        single = tensor_stage(pixels[None])[0]
        assert single.dtype == expected.dtype and torch.equal(single, expected)


def test_tensor_stage_on_a_batch_equals_the_per_image_transform():
    full = eval_transform()
    pil_stage, tensor_stage = split_at_to_tensor(full)
    images = [random_image(11 + i, 9 + 2 * i, seed=10 + i) for i in range(5)]
    batch = torch.stack([pil_to_uint8(pil_stage(im)) for im in images])
    assert torch.equal(tensor_stage(batch), torch.stack([full(im) for im in images]))


def test_split_accepts_a_v2_normalize_tail_and_a_bare_to_tensor():
    full = T.Compose([T.CenterCrop(6), T.ToTensor(), T2.Normalize(MEAN, STD), T.Normalize([0.1] * 3, [2.0] * 3)])
    pil_stage, tensor_stage = split_at_to_tensor(full)
    image = random_image(10, 7, seed=3)
    assert torch.equal(tensor_stage(pil_to_uint8(pil_stage(image))[None])[0], full(image))
    pil_stage, tensor_stage = split_at_to_tensor(T.Compose([T.ToTensor()]))
    assert pil_stage.transforms == [] and tensor_stage.steps == []
    assert torch.equal(tensor_stage(pil_to_uint8(image)[None])[0], T.ToTensor()(image))


@pytest.mark.parametrize("transform", [
    T.Compose([T.Resize(8), T.CenterCrop(8), T.PILToTensor()]),
    T.Compose([T.Resize(8), T.Normalize(MEAN, STD)]),
    T.Compose([T.ToTensor(), T.ToTensor()]),
    lambda image: eval_transform()(image),
    T.ToTensor(),
    T.Compose([T.Resize(8), T.ToTensor(), T.CenterCrop(6), T.Normalize(MEAN, STD)]),
    T.Compose([T.ToTensor(), T.Normalize(MEAN, STD), T.RandomErasing(p=1.0)]),
], ids=["pil-to-tensor", "no-to-tensor", "two-to-tensors", "lambda", "bare-to-tensor", "tensor-crop-tail",
        "erasing-tail"])
def test_split_refuses_transforms_it_cannot_batch_identically(transform):
    assert split_at_to_tensor(transform) is None


def test_tensor_stage_scales_like_to_tensor_and_has_a_repr():
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16)
    stage = TensorStage([])
    out = stage(pixels)
    assert out.dtype == torch.float32 and torch.equal(out, pixels.float() / 255)
    assert "Normalize" in repr(TensorStage([T.Normalize(MEAN, STD)]))


def test_pil_to_uint8_matches_numpy_for_rgb_and_grayscale():
    rgb = random_image(5, 4, seed=1)
    out = pil_to_uint8(rgb)
    assert out.dtype == torch.uint8 and out.shape == (3, 4, 5)
    assert np.array_equal(out.permute(1, 2, 0).numpy(), np.asarray(rgb))
    gray = rgb.convert("L")
    out = pil_to_uint8(gray)
    assert out.shape == (1, 4, 5) and np.array_equal(out[0].numpy(), np.asarray(gray))


def test_stable_repr_strips_memory_addresses():
    def fn(x):
        return x

    text = stable_repr(T.Compose([T.Lambda(fn), T.ToTensor()]))
    assert " at 0x" in repr(fn)
    assert " at 0x" not in text and "Lambda" in text
    assert stable_repr(fn) == stable_repr(fn) and " at 0x" not in stable_repr(fn)
    assert stable_repr(object()) == stable_repr(object()) == "<object object>"
    assert stable_repr("at 0x12") == repr("at 0x12"), "only ' at 0x<hex>' is stripped"
    assert stable_repr(eval_transform()) == repr(eval_transform())


# ---------------------------------------------------------------- decoded_pixels


def test_decoded_pixels_are_the_records_images_in_order(tmp_path):
    records = make_records(tmp_path, [(7, 5)] * 4)
    array = decoded_pixels(records, batch_size=3, progress=False)
    assert isinstance(array, np.ndarray) and array.dtype == np.uint8 and array.shape == (4, 3, 5, 7)
    for i, record in enumerate(records):
        assert np.array_equal(array[i].transpose(1, 2, 0), np.asarray(record.load_image()))


def test_decoded_pixels_run_the_stage(tmp_path):
    records = make_records(tmp_path, [(13, 9), (9, 14), (8, 8)])
    stage = T.Compose([T.Resize(8), T.CenterCrop(8)])
    array = decoded_pixels(records, stage=stage, progress=False)
    assert array.shape == (3, 3, 8, 8)
    for i, record in enumerate(records):
        assert np.array_equal(array[i].transpose(1, 2, 0), np.asarray(stage(record.load_image())))


def test_decoded_pixels_of_boxes_are_the_crops(tmp_path):
    records = make_records(tmp_path, [(10, 8), (10, 8), (10, 8)])
    boxes = {"r0": (2, 1, 6, 5), "r2": (6, 4, 10, 8)}
    stage = T.CenterCrop(4)
    array = decoded_pixels(records, stage=stage, boxes={**boxes, "absent": (0, 0, 1, 1)}, progress=False)
    assert array.shape == (3, 3, 4, 4)
    for i, record in enumerate(records):
        image = record.load_image()
        expected = image.crop(boxes[record.id]) if record.id in boxes else stage(image)
        assert np.array_equal(array[i].transpose(1, 2, 0), np.asarray(expected))
    # without a stage the crops themselves come back, at their own (common) size
    crops = decoded_pixels(records[:1], boxes=boxes, progress=False)
    assert crops.shape == (1, 3, 4, 4)
    assert np.array_equal(crops[0].transpose(1, 2, 0), np.asarray(records[0].load_image())[1:5, 2:6])


def test_a_box_outside_the_image_names_the_record(tmp_path):
    records = make_records(tmp_path, [(10, 8), (10, 8)])
    with pytest.raises(RecordError, match="r1") as err:
        decoded_pixels(records, boxes={"r1": (5, 5, 12, 8)}, progress=False)
    assert err.value.record_id == "r1" and "crop" in str(err.value)


def test_the_cache_is_one_npy_memory_mapped_and_not_decoded_again(tmp_path, monkeypatch):
    records = make_records(tmp_path, [(12, 9), (9, 12), (10, 10)])
    stage = T.Compose([T.Resize(6), T.CenterCrop(6)])
    cache = tmp_path / "cache"
    first = decoded_pixels(records, stage=stage, cache_dir=cache, progress=False)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy", files
    assert np.array_equal(np.load(files[0]), first)

    def no_decoding(self):
        raise AssertionError(f"decoded {self.id} again")

    monkeypatch.setattr(Record, "load_image", no_decoding)
    second = decoded_pixels(records, stage=stage, cache_dir=cache, progress=False)
    assert isinstance(second, np.memmap)
    assert second.dtype == np.uint8 and np.array_equal(np.asarray(second), first)
    assert list(cache.iterdir()) == files, "no second file, no temporary left behind"


def test_the_cache_key_follows_the_stage_and_boxes(tmp_path):
    records = make_records(tmp_path, [(10, 10), (10, 10)])
    cache = tmp_path / "cache"
    a = decoded_pixels(records, stage=T.CenterCrop(6), cache_dir=cache, progress=False)
    b = decoded_pixels(records, stage=T.CenterCrop(4), cache_dir=cache, progress=False)
    c = decoded_pixels(records, stage=T.CenterCrop(4), boxes={"r0": (0, 0, 5, 5)}, cache_dir=cache,
                       progress=False)
    assert a.shape == (2, 3, 6, 6) and b.shape == (2, 3, 4, 4) and c.shape == (2, 3, 4, 4)
    assert not np.array_equal(b[0], c[0]) and np.array_equal(b[1], c[1])
    assert len(list(cache.glob("*.npy"))) == 3


def test_an_unreadable_cache_is_decoded_again(tmp_path):
    records = make_records(tmp_path, [(6, 6), (6, 6)])
    cache = tmp_path / "cache"
    first = decoded_pixels(records, cache_dir=cache, progress=False)
    (path,) = cache.glob("*.npy")
    path.write_bytes(b"not a numpy file")
    again = decoded_pixels(records, cache_dir=cache, progress=False)
    assert np.array_equal(again, first)
    assert np.array_equal(np.load(path), first), "the damaged file is replaced"


def test_a_corrupt_image_names_its_record(tmp_path):
    records = make_records(tmp_path, [(6, 6), (6, 6), (6, 6)])
    records[1].image.write_bytes(b"this is not a png")
    with pytest.raises(RecordError, match="r1") as err:
        decoded_pixels(records, progress=False)
    assert err.value.record_id == "r1"


def test_a_missing_image_names_its_record(tmp_path):
    records = make_records(tmp_path, [(6, 6), (6, 6)])
    records[0].image.unlink()
    with pytest.raises(RecordError, match="r0") as err:
        decoded_pixels(records, stage=T.CenterCrop(4), progress=False)
    assert err.value.record_id == "r0" and "does not exist" in str(err.value)


def test_a_corrupt_image_names_its_record_from_a_worker(tmp_path):
    records = make_records(tmp_path, [(6, 6), (6, 6), (6, 6)])
    records[2].image.write_bytes(b"garbage")
    with pytest.raises(RecordError, match="r2") as err:
        decoded_pixels(records, num_workers=1, progress=False)
    assert err.value.record_id == "r2"


@pytest.mark.parametrize("batch_size", [
    256,  # the odd image inside the only batch
    1,  # the odd image in a later batch
    2,  # the odd image opens a later batch: it is named, not the conforming one after it
])
def test_images_of_different_sizes_without_a_resize_name_the_odd_one(tmp_path, batch_size):
    records = make_records(tmp_path, [(8, 6), (8, 6), (7, 6), (8, 6)])
    with pytest.raises(RecordError) as err:
        decoded_pixels(records, batch_size=batch_size, progress=False)
    assert err.value.record_id == "r2"
    assert str(err.value).startswith("record 'r2'")


def test_no_records_give_an_empty_array(tmp_path):
    array = decoded_pixels(RecordSet([], name="none"), progress=False)
    assert array.dtype == np.uint8 and array.shape[0] == 0 and array.ndim == 4


# ---------------------------------------------------------------- embed_records: split vs per-image path


def test_pixel_batches_of_both_paths_are_identical(tmp_path):
    records = make_records(tmp_path, [(13, 9), (9, 14), (8, 8), (20, 11), (12, 12)])
    transform = eval_transform()
    boxes = {"r3": (2, 1, 14, 10)}
    # a batch of the split path lives in one reused buffer until the next is drawn, so each is copied
    split = [(p, x.clone()) for p, x in _pixel_batches(transform, records, boxes, cache_dir=tmp_path / "c",
                                                       batch_size=2, num_workers=0, progress=False)]
    per_image = list(_pixel_batches(lambda im: transform(im), records, boxes, cache_dir=None, batch_size=2,
                                    num_workers=0, progress=False))
    assert [p for p, _ in split] == [p for p, _ in per_image] == [[0, 1], [2, 3], [4]]
    for (_, a), (_, b) in zip(split, per_image, strict=True):
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)
    assert len(list((tmp_path / "c" / "pixels").glob("*.npy"))) == 1


def test_an_array_over_the_size_cap_streams_instead_unless_it_is_already_cached(tmp_path, monkeypatch):
    import dejavu.embed as embed

    records = make_records(tmp_path, [(13, 9), (9, 14), (8, 8)])
    encoder = ModuleEncoder(tiny_net(), "output", eval_transform(), device="cpu")
    cache = tmp_path / "cache"
    monkeypatch.setattr(embed, "MAX_PIXEL_BYTES", 3 * (13 * 9 + 9 * 14 + 8 * 8) - 1)  # one byte short
    streamed = embed_records(encoder, records, cache_dir=cache, progress=False)
    assert not (cache / "pixels").exists(), "an array over the cap is not built"
    monkeypatch.setattr(embed, "MAX_PIXEL_BYTES", 3 * (13 * 9 + 9 * 14 + 8 * 8))  # exactly at the cap: built
    for f in cache.glob("*.pt"):
        f.unlink()
    built = embed_records(encoder, records, cache_dir=cache, progress=False)
    assert len(list((cache / "pixels").glob("*.npy"))) == 1
    monkeypatch.setattr(embed, "MAX_PIXEL_BYTES", 0)  # an array already built is used whatever the cap
    for f in cache.glob("*.pt"):
        f.unlink()
    monkeypatch.setattr(Record, "load_image", lambda self: pytest.fail(f"decoded {self.id} again"))
    again = embed_records(encoder, records, cache_dir=cache, progress=False)
    assert torch.equal(streamed.vectors, built.vectors) and torch.equal(built.vectors, again.vectors)


def test_an_encoder_output_that_views_its_input_survives_the_reused_batch_buffer(tmp_path):
    records = make_records(tmp_path, [(13, 9), (9, 14), (8, 8), (20, 11), (12, 12)])
    transform = eval_transform()
    flat = ModuleEncoder(nn.Flatten(), "output", transform, device="cpu")  # its output is a view of the batch
    batched = embed_records(flat, records, cache_dir=tmp_path / "c", batch_size=2, progress=False)
    per_image = torch.stack([transform(r.load_image()).flatten() for r in records])
    assert torch.equal(batched.vectors, per_image)


def test_embeddings_are_bit_identical_through_the_pixel_array_and_per_image(tmp_path, monkeypatch):
    records = make_records(tmp_path, [(13, 9), (9, 14), (8, 8), (20, 11), (12, 12), (30, 8), (9, 9)])
    transform = eval_transform()
    crops = {"r1": (1, 2, 9, 12), "r5": (0, 0, 16, 8)}
    split = ModuleEncoder(tiny_net(), "output", transform, device="cpu")
    lam = ModuleEncoder(tiny_net(), "output", lambda im: transform(im), device="cpu")
    assert split_at_to_tensor(split.image_transform) is not None
    assert split_at_to_tensor(lam.image_transform) is None
    cache = tmp_path / "cache"
    a = embed_records(split, records, crops=crops, cache_dir=cache, batch_size=3, progress=False)
    assert len(list((cache / "pixels").glob("*.npy"))) == 1, "the split path went through the pixel array"
    b = embed_records(lam, records, crops=crops, batch_size=3, progress=False)
    assert a.ids == b.ids == records.ids
    assert a.vectors.shape == (7, 5) and torch.equal(a.vectors, b.vectors)
    # and again from the pixel cache (a fresh embedding cache, the same pixel array)
    (cache / "pixels").rename(tmp_path / "pixels")
    (tmp_path / "fresh").mkdir()
    (tmp_path / "pixels").rename(tmp_path / "fresh" / "pixels")

    def no_decoding(self):
        raise AssertionError(f"decoded {self.id} again")

    monkeypatch.setattr(Record, "load_image", no_decoding)
    c = embed_records(split, records, crops=crops, cache_dir=tmp_path / "fresh", batch_size=3, progress=False)
    assert torch.equal(c.vectors, a.vectors)
