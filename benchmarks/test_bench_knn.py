"""Exact kNN against bare faiss and a naive torch search, side by side, and the approximate index's recall.

Targets (issue 13), at the image test's ImageNet-like size, 10k queries x 200k keys x 128 dims, k=100:
dejavu's exact search (faiss backend) within 1.1x of a bare faiss IndexFlatL2 (add + search), its
torch backend within 2x. The cases run in turn within each round and keep their fastest round
(benchmarks/sidebyside.py), and the ratios print at the end of each test (`-s` shows them).

    pytest benchmarks/test_bench_knn.py -s --benchmark-columns=min,rounds

DEJAVU_BENCH_SCALE multiplies both counts (0.1 for a quick run); DEJAVU_BENCH_ROUNDS sets the
rounds (default 3).
"""

import os

import faiss
import pytest
import torch
from sidebyside import Rounds, clustered

from dejavu.knn import ApproximateIndex, recall_at_k, search

SCALE = float(os.environ.get("DEJAVU_BENCH_SCALE", "1"))
ROUNDS = int(os.environ.get("DEJAVU_BENCH_ROUNDS", "3"))
N_QUERIES, N_KEYS, DIM, K = max(1, int(10_000 * SCALE)), max(1000, int(200_000 * SCALE)), 128, 100


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N_QUERIES, DIM, generator=g), torch.randn(N_KEYS, DIM, generator=g)


def bare_faiss(queries: torch.Tensor, keys: torch.Tensor, k: int) -> torch.Tensor:
    """Returns the k nearest by a bare IndexFlatL2, built and searched: what a user would write."""
    index = faiss.IndexFlatL2(keys.shape[1])
    index.add(keys.numpy())
    return torch.from_numpy(index.search(queries.numpy(), k)[1])


def naive_torch(queries: torch.Tensor, keys: torch.Tensor, k: int) -> torch.Tensor:
    """Returns the k nearest by the plain torch recipe: ||k||² - 2 q·k in blocks of queries, then topk."""
    key_sq = (keys * keys).sum(dim=1)
    return torch.cat([(key_sq - 2.0 * q @ keys.T).topk(k, dim=1, largest=False).indices
                      for q in queries.split(1024)])


def test_exact_knn_against_bare_faiss(benchmark, data):
    queries, keys = data
    cases = {"bare faiss IndexFlatL2": lambda: bare_faiss(queries, keys, K),
             "dejavu faiss": lambda: search(queries, keys, K, backend="faiss"),
             "dejavu torch": lambda: search(queries, keys, K, backend="torch"),
             "naive torch matmul+topk": lambda: naive_torch(queries, keys, K)}
    if torch.cuda.is_available():
        cases["dejavu torch cuda"] = lambda: search(queries, keys, K, backend="torch", device="cuda")
    rounds = Rounds(cases)
    benchmark.group = f"exact kNN {N_QUERIES}x{N_KEYS}x{DIM} k={K}"
    benchmark.pedantic(rounds, rounds=ROUNDS, iterations=1)
    rounds.report(benchmark.group, "bare faiss IndexFlatL2", benchmark)
    ours = rounds.results["dejavu faiss"]
    for name in ("dejavu torch", "dejavu torch cuda"):
        if name in rounds.results:  # every backend returns the same neighbours and distances
            assert torch.equal(rounds.results[name].indices, ours.indices)
            assert torch.equal(rounds.results[name].distances, ours.distances)
    # the bare search differs from the exact one only where float32 rounding reorders near-ties
    assert (rounds.results["bare faiss IndexFlatL2"] == ours.indices).float().mean() > 0.99


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_recall_and_speed(benchmark, kind):
    """The opt-in approximate index on clustered embeddings: recall@k and time against exact search."""
    queries, keys = clustered(N_QUERIES, N_KEYS, DIM)
    exact = search(queries, keys, K)
    rounds = Rounds({"dejavu exact": lambda: search(queries, keys, K),
                     f"dejavu {kind}": lambda: search(queries, keys, K, index=ApproximateIndex(kind))})
    benchmark.group = f"approximate kNN {N_QUERIES}x{N_KEYS}x{DIM} k={K} (clustered)"
    benchmark.pedantic(rounds, rounds=1, iterations=1)
    recall = recall_at_k(rounds.results[f"dejavu {kind}"].indices, exact.indices)
    benchmark.extra_info["recall@k"] = recall
    rounds.report(f"{benchmark.group}, {ApproximateIndex(kind)}: recall@{K} {recall:.4f}", "dejavu exact",
                  benchmark)
    assert recall > 0.8
