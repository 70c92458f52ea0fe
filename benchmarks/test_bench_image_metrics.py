"""The image test's metric cost next to the kNN search it follows.

Target: votes, entropy, top-p, quadrants and 200 bootstrap resamples cost at most 10% of an
exact faiss search of 10k queries against 200k public embeddings (128 dims, k=100).

    pytest benchmarks/test_bench_image_metrics.py --benchmark-only

DEJAVU_BENCH_SCALE (default 1.0) scales the number of queries and public images, e.g. 0.1 for
1k x 20k. The search cost grows with the square of the scale and the metrics linearly, so a
small scale overstates the metrics' share.
"""

import os

import faiss
import numpy as np
import pytest

from dejavu.metrics.image import AttackedSplit, label_vote, sample_scores
from dejavu.metrics.stats import bootstrap_dejavu_gap, bootstrap_indices, bootstrap_quadrants

SCALE = float(os.environ.get("DEJAVU_BENCH_SCALE", "1.0"))
N_QUERIES = max(100, int(10_000 * SCALE))
N_PUBLIC = max(1_000, int(200_000 * SCALE))
DIMS, K, N_CLASSES = 128, 100, 1000
PS = (0.05, 0.2, 1.0)
N_RESAMPLES = 200


@pytest.fixture(scope="module")
def embeddings():
    rng = np.random.default_rng(0)
    public = rng.standard_normal((N_PUBLIC, DIMS), dtype=np.float32)
    queries = rng.standard_normal((N_QUERIES, DIMS), dtype=np.float32)
    return public, queries


def synthetic_neighbours(rng, labels):
    """Returns neighbour labels that agree with the true label about half the time, and sorted distances."""
    n = labels.size
    agree = rng.random((n, K)) < rng.random((n, 1))
    neighbour_labels = np.where(agree, labels[:, None], rng.integers(0, N_CLASSES, (n, K)))
    return neighbour_labels, np.sort(rng.random((n, K)), axis=1)


@pytest.fixture(scope="module")
def neighbour_arrays():
    """Both directions: each split attacked by its target and by its reference model."""
    rng = np.random.default_rng(1)
    out = {}
    for split in ("A", "B"):
        labels = rng.integers(0, N_CLASSES, N_QUERIES)
        ids = np.array([f"{split}{i:07d}" for i in range(N_QUERIES)])
        out[split] = (ids, labels, synthetic_neighbours(rng, labels), synthetic_neighbours(rng, labels))
    return out


def image_metrics(neighbour_arrays):
    """Runs everything the image test adds after the search, for both directions."""
    splits, entropies = {}, {}
    for split, (ids, labels, target_nn, reference_nn) in neighbour_arrays.items():
        target = label_vote(*target_nn, n_classes=N_CLASSES)
        reference = label_vote(*reference_nn, n_classes=N_CLASSES)
        splits[split] = AttackedSplit.from_votes(ids, labels, target, reference)
        entropies[split] = (target.entropy, reference.entropy)
    idx_a = bootstrap_indices(N_QUERIES, N_RESAMPLES, seed=0)
    idx_b = bootstrap_indices(N_QUERIES, N_RESAMPLES, seed=1)
    gaps = bootstrap_dejavu_gap(splits["A"], splits["B"], PS, idx_a, idx_b)
    quads = bootstrap_quadrants(splits["A"], splits["B"], idx_a, idx_b)
    scores = sample_scores(*entropies["A"], splits["A"].memorized())
    return gaps, quads, scores


@pytest.mark.benchmark(group="image-test")
def test_faiss_flat_l2_search(benchmark, embeddings):
    public, queries = embeddings
    index = faiss.IndexFlatL2(DIMS)
    index.add(public)
    dists, nbrs = benchmark.pedantic(index.search, args=(queries, K), rounds=1, iterations=1)
    assert nbrs.shape == (N_QUERIES, K) and (np.diff(dists, axis=1) >= 0).all()


@pytest.mark.benchmark(group="image-test")
def test_image_metrics_both_directions_200_resamples(benchmark, neighbour_arrays):
    gaps, quads, scores = benchmark.pedantic(image_metrics, args=(neighbour_arrays,), rounds=3, iterations=1)
    assert set(gaps) == set(PS) and gaps[1.0]["gap"].n == 2 * N_QUERIES
    assert sum(q.value for q in quads.values()) == pytest.approx(1.0)
    assert scores.shape == (N_QUERIES,)
