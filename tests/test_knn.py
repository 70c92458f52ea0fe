"""Exact kNN: hand-worked neighbours, the tie rule, backend agreement, and clear errors."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dejavu.knn as knn
from dejavu import finite
from dejavu.knn import search

BACKENDS = ["faiss", "torch"]


def brute_force(queries, keys, k, metric):
    """Reference: float64 distances (cosine: similarities) rounded to float32, sorted by (distance, index)."""
    q, x = torch.as_tensor(queries, dtype=torch.float64), torch.as_tensor(keys, dtype=torch.float64)
    if metric == "l2":
        dist = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1).float()
    else:
        dist = 1 - ((q / q.norm(dim=1, keepdim=True)) @ (x / x.norm(dim=1, keepdim=True)).T).float()
    order = [sorted(range(len(row)), key=lambda j, row=row: (row[j].item(), j))[:k] for row in dist]
    idx = torch.tensor(order, dtype=torch.long)
    return idx, dist.gather(1, idx)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_worked_l2_is_squared_and_ties_go_to_the_smaller_index(backend):
    keys = torch.tensor([[0.0], [3.0], [1.0], [1.0], [5.0]])
    out = search(torch.tensor([[1.0]]), keys, 3, backend=backend)
    assert out.indices.tolist() == [[2, 3, 0]]
    assert out.distances.tolist() == [[0.0, 0.0, 1.0]]
    assert out.indices.dtype == torch.int64 and out.distances.dtype == torch.float32
    assert (out.metric, out.backend, out.device, out.k) == ("l2", backend, "cpu", 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cosine_distance_is_one_minus_cosine_and_ignores_length(backend):
    keys = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    out = search(torch.tensor([[5.0, 0.0]]), keys, 3, metric="cosine", backend=backend)
    assert out.indices.tolist() == [[0, 2, 1]]
    assert out.distances[0].tolist() == pytest.approx([0.0, 1 - 1 / math.sqrt(2), 1.0], abs=1e-7)
    assert out.metric == "cosine"


def test_l2_uses_unnormalized_vectors_unlike_cosine():
    keys = torch.tensor([[10.0, 0.0], [0.9, 0.1]])
    query = torch.tensor([[1.0, 0.0]])
    assert search(query, keys, 1, metric="l2").indices.item() == 1
    assert search(query, keys, 1, metric="cosine").indices.item() == 0


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_backends_agree_with_brute_force_on_integer_data_full_of_ties(metric):
    g = torch.Generator().manual_seed(0)
    queries = torch.randint(1, 4, (40, 3), generator=g).float()
    keys = torch.randint(1, 4, (200, 3), generator=g).float()
    keys[100:140] = keys[7]  # a block of duplicates, bigger than the candidate margin
    want_idx, want_dist = brute_force(queries, keys, 25, metric)
    results = [search(queries, keys, 25, metric=metric, backend=b, chunk_size=997) for b in BACKENDS]
    for out in results:
        assert torch.equal(out.indices, want_idx)
        assert torch.equal(out.distances, want_dist)
    assert torch.equal(results[0].indices, results[1].indices)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tie_block_wider_than_the_margin_is_resolved_by_the_near_tie_scan(backend, monkeypatch):
    keys = torch.ones(60, 2)
    keys[::7] = 9.0  # far keys interleaved between the duplicates
    scans = []
    scan = knn._scan_near_ties

    def spy(queries, *args):
        scans.append(len(queries.rows))
        return scan(queries, *args)

    monkeypatch.setattr(knn, "_scan_near_ties", spy)
    out = search(torch.ones(1, 2), keys, 5, backend=backend)
    ones = [i for i in range(60) if i % 7]
    assert out.indices.tolist() == [ones[:5]]
    assert scans == [1]


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_many_duplicate_keys_stay_bounded_in_memory(metric, monkeypatch):
    """Thousands of identical keys make every key a candidate of every query; no step may hold them all."""
    n_queries, n_dup, chunk_size, k = 40, 3000, 4096, 5
    keys = torch.cat([torch.full((n_dup, 3), 2.0), torch.tensor([[9.0, 1.0, 1.0], [1.0, 9.0, 3.0]])])
    queries = torch.full((n_queries, 3), 2.0) + torch.linspace(0, 0.5, n_queries)[:, None] * torch.tensor([1.0, 0, 0])
    held = []  # the pairs each re-ranking call and each running top-k merge holds at once
    exact, merge = knn._exact_distances, knn._merge

    def exact_spy(queries, keys, rows, cand, metric):
        held.append(cand.numel())
        return exact(queries, keys, rows, cand, metric)

    def merge_spy(best_d, best_i, hit_row, hit_d, hit_i, k):
        held.append(best_d.numel() + len(best_d) * int(torch.bincount(hit_row).max()))
        return merge(best_d, best_i, hit_row, hit_d, hit_i, k)

    monkeypatch.setattr(knn, "_exact_distances", exact_spy)
    monkeypatch.setattr(knn, "_merge", merge_spy)
    out = search(queries, keys, k, metric=metric, chunk_size=chunk_size)
    want_idx, want_dist = brute_force(queries, keys, k, metric)
    assert torch.equal(out.indices, want_idx) and torch.equal(out.distances, want_dist)
    assert out.indices[0].tolist() == [0, 1, 2, 3, 4]  # all tied: the smallest indices
    # every query was unsure, and every one of the n_queries * n_dup pairs was a candidate, yet no
    # call held more than one block of them
    assert len(held) > n_queries and max(held) <= chunk_size < n_queries * n_dup


def test_grouped_selection_returns_the_m_smallest_scores_even_when_tied():
    g = torch.Generator().manual_seed(3)
    for scores in (torch.randn(7, 8 * 300, generator=g),
                   torch.randint(0, 5, (7, 8 * 300), generator=g).float(),
                   torch.zeros(3, 8 * 300)):
        values, cols = knn._smallest(scores, 40)
        assert torch.equal(values.sort(dim=1).values, scores.topk(40, dim=1, largest=False).values.sort(dim=1).values)
        assert torch.equal(scores.gather(1, cols), values)
        assert all(len(set(row)) == 40 for row in cols.tolist())


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_torch_blocks_wide_enough_to_group_agree_with_brute_force(metric):
    g = torch.Generator().manual_seed(4)
    queries = torch.randint(1, 5, (30, 6), generator=g).float()
    keys = torch.randint(1, 5, (4096, 6), generator=g).float()  # four blocks of 1024 keys, 128 groups each
    keys[2000:2300] = keys[11]
    want_idx, want_dist = brute_force(queries, keys, 10, metric)
    out = search(queries, keys, 10, metric=metric, backend="torch", chunk_size=1024)
    assert torch.equal(out.indices, want_idx) and torch.equal(out.distances, want_dist)


def test_float32_l2_keys_are_searched_in_place():
    keys = torch.randn(100, 4)
    prepared = knn._prepare(keys, "l2", "keys")
    assert prepared.rows.data_ptr() == keys.data_ptr() == prepared.search.data_ptr()
    assert prepared.norms is None


@settings(max_examples=25, deadline=None)
@given(n_keys=st.integers(5, 40), n_queries=st.integers(1, 6), dim=st.integers(1, 5),
       k=st.integers(1, 5), seed=st.integers(0, 2**16), metric=st.sampled_from(["l2", "cosine"]))
def test_property_both_backends_equal_brute_force(n_keys, n_queries, dim, k, seed, metric):
    rng = np.random.default_rng(seed)
    keys = rng.integers(1, 3, (n_keys, dim)).astype(np.float32) + rng.random((n_keys, dim), np.float32) * 0.5
    queries = rng.integers(1, 3, (n_queries, dim)).astype(np.float32)
    want_idx, want_dist = brute_force(queries, keys, k, metric)
    for backend in BACKENDS:
        out = search(torch.from_numpy(queries), torch.from_numpy(keys), k, metric=metric, backend=backend)
        assert torch.equal(out.indices, want_idx)
        assert torch.allclose(out.distances, want_dist, atol=1e-6)


def test_continuous_data_distances_match_within_float_tolerance():
    g = torch.Generator().manual_seed(1)
    queries, keys = torch.randn(30, 16, generator=g), torch.randn(500, 16, generator=g)
    a = search(queries, keys, 10, backend="faiss")
    b = search(queries, keys, 10, backend="torch", chunk_size=1000)
    assert torch.equal(a.indices, b.indices)
    assert torch.allclose(a.distances, b.distances, rtol=1e-6)
    assert torch.all(a.distances[:, 1:] >= a.distances[:, :-1])


def test_k_larger_than_the_public_set_is_a_clear_error():
    with pytest.raises(ValueError, match="k=100 exceeds the public set size 50"):
        search(torch.zeros(2, 3), torch.zeros(50, 3), 100)


@pytest.mark.parametrize("which", ["queries", "keys"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_name_the_row(which, bad):
    queries, keys = torch.zeros(3, 2), torch.zeros(4, 2)
    (queries if which == "queries" else keys)[2, 1] = bad
    with pytest.raises(ValueError, match=f"{which} contain NaN or Inf \\(first at row 2\\)"):
        search(queries, keys, 1)


def test_validation_reads_blocks_and_still_names_the_row(monkeypatch):
    monkeypatch.setattr(finite, "_BLOCK_ELEMENTS", 4)  # more rows than one validation block
    keys = torch.zeros(10, 1)
    keys[7, 0] = float("nan")
    with pytest.raises(ValueError, match="keys contain NaN or Inf \\(first at row 7\\)"):
        search(torch.zeros(1, 1), keys, 1)


def test_device_auto_runs_where_torch_sees_a_gpu():
    out = search(torch.randn(4, 3), torch.randn(30, 3), 2, device="auto")
    assert out.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert out.indices.device.type == "cpu"
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        search(torch.randn(4, 3), torch.randn(30, 3), 2, device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_asking_for_a_missing_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="torch sees no GPU; use 'auto' or 'cpu'"):
        search(torch.randn(4, 3), torch.randn(30, 3), 2, device="cuda")


def test_dimension_mismatch_and_bad_arguments():
    with pytest.raises(ValueError, match="queries have dimension 3 but keys have 4"):
        search(torch.zeros(2, 3), torch.zeros(5, 4), 1)
    with pytest.raises(ValueError, match="unknown metric 'ip'"):
        search(torch.zeros(2, 3), torch.zeros(5, 3), 1, metric="ip")
    with pytest.raises(ValueError, match="unknown backend"):
        search(torch.zeros(2, 3), torch.zeros(5, 3), 1, backend="annoy")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        search(torch.zeros(2, 3), torch.zeros(5, 3), 0)
    with pytest.raises(ValueError, match="keys row 1 is the zero vector"):
        search(torch.ones(2, 3), torch.tensor([[1.0, 0, 0], [0, 0, 0]]), 1, metric="cosine")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_inputs_give_the_cpu_answer():
    g = torch.Generator().manual_seed(2)
    queries = torch.randint(0, 3, (64, 8), generator=g).float()
    keys = torch.randint(0, 3, (3000, 8), generator=g).float()
    keys[1000:1500] = keys[3]  # a tie block wider than the margin: the near-tie scan runs on the GPU too
    cpu = search(queries, keys, 20, backend="faiss")
    for backend in ("auto", "torch"):
        gpu = search(queries.cuda(), keys.cuda(), 20, backend=backend)
        assert gpu.device == "cuda"
        assert torch.equal(gpu.indices, cpu.indices)
        assert torch.equal(gpu.distances, cpu.distances)
    moved = search(queries, keys, 20, device="cuda", backend="torch")
    assert moved.device == "cuda" and torch.equal(moved.indices, cpu.indices)
