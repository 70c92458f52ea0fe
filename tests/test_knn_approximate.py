"""The approximate kNN index (faiss IVF / HNSW): off by default, high recall on clustered data, exact re-ranking."""

import pytest
import torch

from dejavu.knn import ApproximateIndex, approximate_index, recall_at_k, search


def clustered(n_keys=3000, n_queries=200, dim=16, n_clusters=30, seed=0):
    """Returns (queries, keys) drawn around the same cluster centres, as embeddings of classes are."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=g) * 4
    keys = centres[torch.randint(0, n_clusters, (n_keys,), generator=g)] + torch.randn(n_keys, dim, generator=g)
    queries = centres[torch.randint(0, n_clusters, (n_queries,), generator=g)] + torch.randn(n_queries, dim, generator=g)
    return queries, keys


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_recall_is_high_on_clustered_data_and_found_neighbours_keep_exact_distances(kind, metric):
    queries, keys = clustered()
    exact = search(queries, keys, 20, metric=metric)
    approx = search(queries, keys, 20, metric=metric, index=ApproximateIndex(kind, nprobe=8))
    assert approx.index == kind and exact.index == "exact"
    assert recall_at_k(approx.indices, exact.indices) >= 0.95
    # a neighbour found by both has the same exact distance; rows stay sorted by (distance, index)
    found = approx.indices == exact.indices
    assert found.float().mean() > 0.9
    assert torch.equal(approx.distances[found], exact.distances[found])
    assert torch.all(approx.distances[:, 1:] >= approx.distances[:, :-1])


def test_ivf_with_every_list_probed_is_exact():
    queries, keys = clustered(n_keys=800, n_queries=50)
    index = ApproximateIndex("ivf", nlist=10, nprobe=10)
    exact = search(queries, keys, 10)
    approx = search(queries, keys, 10, index=index)
    assert torch.equal(approx.indices, exact.indices) and torch.equal(approx.distances, exact.distances)


def test_ivf_is_reproducible_with_its_seed():
    queries, keys = clustered(n_keys=1500, n_queries=60)
    index = ApproximateIndex("ivf", nprobe=2, seed=7)
    assert torch.equal(search(queries, keys, 10, index=index).indices, search(queries, keys, 10, index=index).indices)


def test_queries_the_index_finds_too_few_keys_for_are_searched_exactly():
    queries, keys = clustered(n_keys=400, n_queries=30)
    # one probed list of forty cannot hold k + margin keys for every query
    approx = search(queries, keys, 30, index=ApproximateIndex("ivf", nlist=40, nprobe=1))
    exact = search(queries, keys, 30)
    assert torch.equal(approx.indices, exact.indices) and torch.equal(approx.distances, exact.distances)


def test_recall_at_k_counts_the_exact_neighbours_found():
    exact = search(torch.tensor([[0.0], [10.0]]), torch.arange(6.0)[:, None] * 2, 2)  # keys 0, 2, ..., 10
    assert exact.indices.tolist() == [[0, 1], [5, 4]]
    assert recall_at_k(torch.tensor([[1, 3], [4, 5]]), exact.indices) == 0.75
    assert recall_at_k(exact.indices, exact.indices) == 1.0


def test_config_names_exact_or_an_index_with_its_settings():
    assert approximate_index("exact") is None and approximate_index() is None
    assert approximate_index("hnsw", {"ef_search": 64}) == ApproximateIndex("hnsw", ef_search=64)
    with pytest.raises(ValueError, match="unknown ivf index setting 'probes'; valid: ef_construction"):
        approximate_index("ivf", {"probes": 3})
    with pytest.raises(ValueError, match="apply to an approximate index"):
        approximate_index("exact", {"nprobe": 3})
    with pytest.raises(ValueError, match="unknown kNN index 'lsh'"):
        approximate_index("lsh")
    with pytest.raises(ValueError, match="nprobe must be a positive integer"):
        ApproximateIndex("ivf", nprobe=0)


def test_preset_measure_section_selects_the_index():
    from bench.presets import PresetError, load_preset

    preset = load_preset("smoke", ["measure.image-two-model.index=hnsw",
                                   "measure.image-two-model.index_params.ef_search=64"])
    assert preset.measure.section("image-two-model").search_index == ApproximateIndex("hnsw", ef_search=64)
    assert load_preset("smoke").measure.section("image-two-model").search_index is None  # exact by default
    with pytest.raises(PresetError, match="measure.image-two-model: unknown ivf index setting 'probes'"):
        load_preset("smoke", ["measure.image-two-model.index=ivf", "measure.image-two-model.index_params.probes=3"])
    with pytest.raises(PresetError, match="measure.image-two-model.index must be one of 'exact', 'ivf', 'hnsw'"):
        load_preset("smoke", ["measure.image-two-model.index=annoy"])
