"""Exact kNN: hand-worked neighbours, the tie rule, backend agreement, and clear errors."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dejavu.knn as knn
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
def test_tie_block_wider_than_the_margin_triggers_a_wider_search(backend, monkeypatch):
    keys = torch.ones(60, 2)
    keys[::7] = 9.0  # far keys interleaved between the duplicates
    candidate_lists = []
    exact = knn._exact_distances

    def spy(q, x, cand, metric, chunk_size):
        candidate_lists.append(cand.shape[1])
        return exact(q, x, cand, metric, chunk_size)

    monkeypatch.setattr(knn, "_exact_distances", spy)
    out = search(torch.ones(1, 2), keys, 5, backend=backend)
    ones = [i for i in range(60) if i % 7]
    assert out.indices.tolist() == [ones[:5]]
    assert candidate_lists[0] == 5 + knn.TIE_MARGIN and len(candidate_lists) > 1


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
    cpu = search(queries, keys, 20, backend="faiss")
    for backend in ("auto", "torch"):
        gpu = search(queries.cuda(), keys.cuda(), 20, backend=backend)
        assert gpu.device == "cuda"
        assert torch.equal(gpu.indices, cpu.indices)
        assert torch.equal(gpu.distances, cpu.distances)
