"""Exact kNN, faiss against torch on the same data, side by side in one pytest-benchmark group.

Default size is the image test at ImageNet-like scale: 10k queries x 200k keys x 128 dims, k=100.
DEJAVU_BENCH_SCALE multiplies both counts (0.1 for a quick run); DEJAVU_BENCH_ROUNDS sets the
rounds per backend (default 1: one full run is already seconds to minutes).

    pytest benchmarks/test_bench_knn.py --benchmark-columns=min,mean,rounds
"""

import os

import pytest
import torch

from dejavu.knn import search

SCALE = float(os.environ.get("DEJAVU_BENCH_SCALE", "1"))
ROUNDS = int(os.environ.get("DEJAVU_BENCH_ROUNDS", "1"))
N_QUERIES, N_KEYS, DIM, K = max(1, int(10_000 * SCALE)), max(100, int(200_000 * SCALE)), 128, 100

CASES = [("faiss", "cpu"), ("torch", "cpu")]
if torch.cuda.is_available():
    CASES += [("auto", "cuda"), ("torch", "cuda")]

_results: dict[tuple[str, str], object] = {}


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N_QUERIES, DIM, generator=g), torch.randn(N_KEYS, DIM, generator=g)


@pytest.mark.parametrize(("backend", "device"), CASES, ids=[f"{b}-{d}" for b, d in CASES])
def test_knn_search(benchmark, data, backend, device):
    queries, keys = (x.to(device) for x in data)
    benchmark.group = f"exact kNN {N_QUERIES}x{N_KEYS}x{DIM} k={K}"
    out = benchmark.pedantic(search, args=(queries, keys, K), kwargs={"backend": backend},
                             rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert out.indices.shape == (N_QUERIES, K)
    _results[backend, device] = out


def test_backends_returned_the_same_neighbours():
    if len(_results) < 2:
        pytest.skip("run the whole file to compare backends")
    (_, first), *others = _results.items()
    for _, out in others:
        assert torch.equal(out.indices, first.indices)
        assert torch.equal(out.distances, first.distances)
