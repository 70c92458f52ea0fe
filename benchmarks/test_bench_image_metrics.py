"""The image test's metric cost next to the kNN search it follows, side by side in one run.

Target (issue 13): votes, entropy, top-p, quadrants and 200 bootstrap resamples, for both
directions, cost at most 10% of one exact faiss search of 10k queries against 200k public
embeddings (128 dims, k=100). The two run in turn within each round and keep their fastest round
(benchmarks/sidebyside.py); the ratio prints at the end (`-s` shows it).

    pytest benchmarks/test_bench_image_metrics.py -s --benchmark-columns=min,rounds

DEJAVU_BENCH_SCALE (default 1.0) scales the number of queries and public images, e.g. 0.1 for
1k x 20k. The search cost grows with the square of the scale and the metrics linearly, so a
small scale overstates the metrics' share. DEJAVU_BENCH_ROUNDS sets the rounds (default 3).
"""

import os

import faiss
import numpy as np
import pytest
from sidebyside import Rounds

from dejavu.metrics.image import AttackedSplit, label_vote, sample_scores
from dejavu.metrics.stats import bootstrap_dejavu_gap, bootstrap_indices, bootstrap_quadrants

SCALE = float(os.environ.get("DEJAVU_BENCH_SCALE", "1.0"))
N_QUERIES = max(100, int(10_000 * SCALE))
N_PUBLIC = max(1_000, int(200_000 * SCALE))
DIMS, K, N_CLASSES = 128, 100, 1000
PS = (0.05, 0.2, 1.0)
N_RESAMPLES = 200
ROUNDS = int(os.environ.get("DEJAVU_BENCH_ROUNDS", "3"))


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


def test_image_metrics_against_one_search(benchmark, embeddings, neighbour_arrays):
    public, queries = embeddings
    index = faiss.IndexFlatL2(DIMS)
    index.add(public)
    rounds = Rounds({"faiss IndexFlatL2 search": lambda: index.search(queries, K),
                     "image metrics, both directions, 200 resamples": lambda: image_metrics(neighbour_arrays)})
    benchmark.group = f"image test {N_QUERIES}x{N_PUBLIC}x{DIMS} k={K}"
    benchmark.pedantic(rounds, rounds=ROUNDS, iterations=1)
    rounds.report(benchmark.group, "faiss IndexFlatL2 search", benchmark)
    dists, nbrs = rounds.results["faiss IndexFlatL2 search"]
    assert nbrs.shape == (N_QUERIES, K) and (np.diff(dists, axis=1) >= 0).all()
    gaps, quads, scores = rounds.results["image metrics, both directions, 200 resamples"]
    assert set(gaps) == set(PS) and gaps[1.0]["gap"].n == 2 * N_QUERIES
    assert sum(q.value for q in quads.values()) == pytest.approx(1.0)
    assert scores.shape == (N_QUERIES,)
