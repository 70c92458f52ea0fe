"""Exact k-nearest-neighbour search with a deterministic tie rule (SPEC sections 3 and 5).

Two interchangeable backends find candidates: faiss (`faiss.knn` on CPU, which reads the keys where
they lie instead of copying them into an index; a flat GPU index when faiss has GPU support and the
inputs live on CUDA) and torch (per block of keys, addmm on the key norms writes one block of
scores and one selection reads it, CPU or CUDA, memory bounded by `chunk_size`). Both then go
through the same exact re-ranking, which is what makes them agree index for index:

1. the backend returns `k + TIE_MARGIN` candidates per query, ranked by its float32 distances;
2. the candidates' distances are recomputed in float64 from their float32 rows, widened one block
   at a time (sum of squared differences, or 1 - dot of unit vectors with the dot rounded first),
   rounded to float32, and sorted by (distance, key index): among equal distances the smaller key
   index comes first;
3. a query whose last candidate is within the float32 error bound of its k-th exact distance may
   have tied or near-tied keys beyond its candidates. One more pass over all keys, in blocks, takes
   every key within that bound as a candidate and keeps a running top k by (distance, index), so
   it holds one block of distances and k neighbours per query however many keys tie. Keys outside
   the bound are provably farther than the k-th neighbour.

Both backends therefore return identical indices and identical distances. No float64 copy of the
keys is ever made, nor any other n_keys x d temporary: validation is one sum, and norms are taken
block by block.

`ApproximateIndex` swaps step 1 for a faiss IVF or HNSW index, for public sets past a single
machine's exact search. Its candidates go through the same exact re-ranking; the neighbours it
misses lower recall@k (benchmarks/test_bench_knn_scale.py reports it). Exact search is the default.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np
import torch

from dejavu.finite import non_finite_rows

METRICS = ("l2", "cosine")
BACKENDS = ("auto", "faiss", "torch")
#: "exact" (the default, the papers' protocol) or a faiss approximate index
INDEXES = ("exact", "ivf", "hnsw")
#: extra candidates per query beyond k; enough that the near-tie scan is rare on continuous data
TIE_MARGIN = 16
#: faiss GPU indexes return at most this many neighbours per query
_FAISS_GPU_MAX_K = 2048
#: float64 values the re-ranking widens at once: below torch's parallel grain, so each op runs on one
#: thread within L2, as fast as two threads on a quiet CPU and far faster on one shared with other jobs
_WIDEN_BLOCK = 2 ** 15
#: values the validation and the norms read at once
_ROW_BLOCK = 2 ** 20
#: keys per torch block of scores: rows this wide leave the selection a small share of the time
_KEY_BLOCK = 2 ** 16
#: group size of the torch backend's two-step selection (see `_smallest`)
_GROUP = 8
#: stands for "no key" in a running top k; sorts after every real key index
_NO_KEY = torch.iinfo(torch.int64).max


@dataclass(frozen=True)
class Neighbours:
    """The k nearest keys of each query, nearest first, as CPU tensors.

    `distances` are squared L2 for metric "l2" and 1 - cosine similarity for "cosine".

    See `search` for an example.
    """

    indices: torch.Tensor  # int64 [n_queries, k], row numbers of the keys
    distances: torch.Tensor  # float32 [n_queries, k], non-decreasing along each row
    metric: str
    backend: str  # "faiss" or "torch": which one found the candidates
    device: str  # where the candidate search ran, "cpu" or "cuda"
    index: str = "exact"  # "exact", or the approximate index ("ivf", "hnsw") that found the candidates

    @property
    def k(self) -> int:
        """Returns the number of neighbours per query."""
        return self.indices.shape[1]


@dataclass(frozen=True)
class ApproximateIndex:
    """A faiss IVF or HNSW index in place of exact search, for public sets too large to search exactly.

    Off by default. The candidates it returns are re-ranked exactly, so every neighbour it finds has
    its exact distance and the tie rule; a neighbour it misses is replaced by a farther key. IVF
    (IndexIVFFlat) trains its k-means with `seed` and is reproducible; HNSW builds its graph on all
    threads, so two builds may differ slightly.

    Example:
        On a set this small the index finds every neighbour, so it agrees with exact search:

        >>> import torch
        >>> from dejavu.knn import ApproximateIndex, search
        >>> keys = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [1.0, 0.0]])
        >>> nearest = search(torch.tensor([[0.0, 0.0]]), keys, k=3, index=ApproximateIndex("hnsw"))
        >>> nearest.indices, nearest.index
        (tensor([[0, 2, 3]]), 'hnsw')
    """

    kind: str = "ivf"  # "ivf" or "hnsw"
    nlist: int | None = None  # IVF lists; None: about sqrt(n_keys)
    nprobe: int = 32  # IVF lists scanned per query: recall against speed
    hnsw_m: int = 32  # HNSW links per node
    ef_construction: int = 64  # HNSW build breadth
    ef_search: int = 256  # HNSW search breadth (raised to k + TIE_MARGIN when smaller)
    seed: int = 0  # IVF k-means seed

    def __post_init__(self):
        if self.kind not in INDEXES[1:]:
            raise ValueError(f"unknown kNN index {self.kind!r}; choose one of {INDEXES}")
        for name in ("nprobe", "hnsw_m", "ef_construction", "ef_search"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.nlist is not None and (not isinstance(self.nlist, int) or self.nlist < 1):
            raise ValueError(f"nlist must be a positive integer or None, got {self.nlist!r}")

    def lists(self, n_keys: int) -> int:
        """Returns the IVF list count for `n_keys` keys: `nlist`, or about sqrt(n_keys), at most n_keys.

        Example:
            >>> from dejavu.knn import ApproximateIndex
            >>> ApproximateIndex().lists(10_000), ApproximateIndex(nlist=500).lists(100)
            (100, 100)
        """
        return max(1, min(n_keys, self.nlist or round(math.sqrt(n_keys))))

    def build(self, keys: torch.Tensor, metric: str):
        """Returns the faiss index over the float32 keys (unit vectors for cosine)."""
        import faiss

        data = np.ascontiguousarray(keys.detach().cpu().numpy(), dtype=np.float32)
        d = data.shape[1]
        faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.hnsw_m, faiss_metric)
            index.hnsw.efConstruction = self.ef_construction
        else:
            quantizer = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, self.lists(len(data)), faiss_metric)
            index.cp.seed = self.seed
            index.cp.max_points_per_centroid = 64  # k-means on a sample: its cost, not recall, grows with n
            index.train(data)
        index.add(data)
        return index

    def candidates(self, index, queries: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the index's m candidates per query: float32 distances and int64 key rows (-1: none)."""
        if self.kind == "hnsw":
            index.hnsw.efSearch = max(self.ef_search, m)
        else:
            index.nprobe = min(self.nprobe, index.nlist)
        dist, idx = index.search(np.ascontiguousarray(queries.detach().cpu().numpy()), m)
        return torch.from_numpy(dist), torch.from_numpy(idx)


def approximate_index(kind: str = "exact", params: dict | None = None) -> ApproximateIndex | None:
    """Returns the ApproximateIndex a config names, or None for exact search ("exact", the default).

    Example:
        >>> from dejavu.knn import approximate_index
        >>> approximate_index() is None
        True
        >>> approximate_index("ivf", {"nprobe": 8})
        ApproximateIndex(kind='ivf', nlist=None, nprobe=8, hnsw_m=32, ef_construction=64, ef_search=256, seed=0)
        >>> approximate_index("ivf", {"probes": 8})
        Traceback (most recent call last):
        ...
        ValueError: unknown ivf index setting 'probes'; valid: ef_construction, ef_search, hnsw_m, nlist, nprobe, seed
    """
    params = dict(params or {})
    if kind == "exact":
        if params:
            raise ValueError(f"index settings {sorted(params)} apply to an approximate index ('ivf' or 'hnsw'), "
                             f"not to exact search")
        return None
    valid = sorted(f.name for f in fields(ApproximateIndex) if f.name != "kind")
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"unknown {kind} index setting {unknown[0]!r}; valid: {', '.join(valid)}")
    return ApproximateIndex(kind, **params)


def recall_at_k(found, exact) -> float:
    """Returns recall@k: the fraction of the exact k nearest keys (rows of `exact`) that `found` also holds.

    Both are [n, k] key indices, e.g. `Neighbours.indices` of an approximate and of the exact search.
    A negative entry of `found` (faiss's -1: fewer than k found) matches nothing, and a key found
    twice counts once.

    Example:
        The first query found one of its two exact neighbours, the second both: 3 of 4.

        >>> from dejavu.knn import recall_at_k
        >>> recall_at_k(found=[[0, 1], [3, 2]], exact=[[0, 2], [2, 3]])
        0.75
        >>> recall_at_k(found=[[0, 2], [-1, 1]], exact=[[0, 2], [1, 2]])  # faiss found one for the second
        0.75
    """
    found, exact = torch.as_tensor(found), torch.as_tensor(exact)
    if found.shape != exact.shape:
        raise ValueError(f"neighbour lists {tuple(found.shape)} and {tuple(exact.shape)} differ in shape")
    if exact.numel() == 0:
        raise ValueError("recall@k of empty neighbour lists is undefined")
    # exact[i, j] is found when it appears anywhere in row i of found; in blocks of rows, since the
    # comparison holds k * k booleans per row
    hits = sum(int((exact[a:b, :, None] == found[a:b, None, :]).any(dim=2).sum())
               for a, b in _blocks(len(exact), max(1, 2**24 // max(1, exact.shape[1] ** 2))))
    return hits / exact.numel()


def faiss_has_gpu() -> bool:
    """Returns True when the installed faiss can build GPU indexes and sees a GPU."""
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _blocks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """Yields (start, stop) of consecutive blocks of at most `size` (at least 1) rows."""
    size = max(1, size)
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _as_matrix(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [n, d] matrix, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    bad = non_finite_rows(x)
    if bad:
        raise ValueError(f"{name} contain NaN or Inf (first at row {bad[0]}); re-embed or drop those rows")
    return x


def _search_device(device: str | None, queries: torch.Tensor) -> torch.device:
    """Returns where the search runs: with the queries (None), on a GPU when torch sees one ("auto"), or as named."""
    if device is None:
        return queries.device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; choose None, 'auto', 'cpu' or 'cuda'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no GPU; use 'auto' or 'cpu'")
    return torch.device(device)


def _validate(queries, keys, k: int, metric: str, backend: str,
              device: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    queries, keys = _as_matrix(queries, "queries"), _as_matrix(keys, "keys")
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries have dimension {queries.shape[1]} but keys have {keys.shape[1]}; "
                         f"embed both with the same encoder and layer")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > keys.shape[0]:
        raise ValueError(f"k={k} exceeds the public set size {keys.shape[0]}; lower k or add public records")
    where = _search_device(device, queries)
    return queries.to(where), keys.to(where)


@dataclass(frozen=True)
class _Vectors:
    """One side of a search, read without a float64 copy: the re-ranking widens only the rows it needs."""

    rows: torch.Tensor  # [n, d] as given: float32, or float64 whose precision the re-ranking keeps
    search: torch.Tensor  # float32 [n, d] the backend searches: `rows` for l2, their unit vectors for cosine
    search_sq: torch.Tensor  # float64 [n], squared norms of `search`: the error bound and the addmm term
    norms: torch.Tensor | None  # float64 [n], norms of `rows` widened: cosine divides widened rows by them

    def widened(self, idx: torch.Tensor) -> torch.Tensor:
        """Returns float64 [len(idx), d]: the rows idx widened, divided by their norms for cosine."""
        x = self.rows.index_select(0, idx).double()
        if self.norms is not None:
            x /= self.norms[idx, None]
        return x

    def take(self, idx: torch.Tensor) -> _Vectors:
        """Returns the vectors of rows idx only."""
        return _Vectors(self.rows[idx], self.search[idx], self.search_sq[idx],
                        None if self.norms is None else self.norms[idx])


def _prepare(x: torch.Tensor, metric: str, name: str) -> _Vectors:
    """Returns x as the search and the re-ranking read it; a cosine zero vector is an error naming its row."""
    n, d = x.shape
    if metric == "l2":
        search = x.float()  # no copy when x is float32 already; float64 input keeps its precision in `rows`
        return _Vectors(x, search, _squared_norms(search), None)
    norms = torch.empty(n, dtype=torch.float64, device=x.device)
    search = torch.empty(n, d, dtype=torch.float32, device=x.device)
    for start, stop in _blocks(n, _ROW_BLOCK // max(1, d)):
        block = x[start:stop].float()
        norms[start:stop] = x[start:stop].double().norm(dim=1)
        search[start:stop] = block / block.norm(dim=1, keepdim=True)
    zero = (norms == 0).nonzero()
    if len(zero):
        raise ValueError(f"{name} row {int(zero[0])} is the zero vector, which has no cosine similarity")
    return _Vectors(x, search, _squared_norms(search), norms)


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    """Returns float64 [n]: the squared row norms of float32 x, in one pass and without an n x d temporary.

    They scale the error bound and are the torch backend's addmm term; neither needs them to the last bit.
    """
    return torch.linalg.vector_norm(x, dim=1).double().square_()


class _FaissCandidates:
    """Candidate search with faiss: `faiss.knn` on CPU (no copy of the keys), a flat index on GPU."""

    name = "faiss"

    def __init__(self, keys: _Vectors, metric: str):
        import faiss

        self.cosine = metric == "cosine"
        self.metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        self.index = None
        self.max_m = keys.search.shape[0]
        if keys.search.is_cuda:
            d = keys.search.shape[1]
            self._resources = faiss.StandardGpuResources()
            index = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
            self.index = faiss.index_cpu_to_gpu(self._resources, torch.cuda.current_device(), index)
            self.index.add(np.ascontiguousarray(keys.search.cpu().numpy()))
            self.max_m = min(self.max_m, _FAISS_GPU_MAX_K)
        else:
            self.keys = keys.search.numpy()

    def __call__(self, queries: torch.Tensor, queries_sq: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        import faiss

        data = np.ascontiguousarray(queries.detach().cpu().numpy(), dtype=np.float32)
        if self.index is None:
            dist, idx = faiss.knn(data, self.keys, m, metric=self.metric)
        else:
            dist, idx = self.index.search(data, m)
        dist = torch.from_numpy(dist)
        if self.cosine:
            dist = 1.0 - dist
        return dist.to(queries.device), torch.from_numpy(idx).to(queries.device)


class _TorchCandidates:
    """Candidate search by blocks of keys: one addmm writes a block of scores, one selection reads it.

    The scores bias - alpha q·k (||k||² - 2q·k for l2, -q·k for cosine) rank keys like their
    distances: the term ||q||² is the same along a row, so it is added only to the m scores kept.
    """

    name = "torch"

    def __init__(self, keys: _Vectors, metric: str, chunk_size: int):
        self.keys, self.metric, self.chunk_size = keys.search, metric, chunk_size
        n_keys = keys.search.shape[0]
        self.bias = keys.search_sq.float() if metric == "l2" else keys.search.new_zeros(n_keys)
        self.alpha = -2.0 if metric == "l2" else -1.0
        self.max_m = n_keys

    def block_shape(self, n_queries: int, width: int, budget: int) -> tuple[int, int]:
        """Returns (queries, keys) per block: keys at least `width`, about `budget` scores in all."""
        keys = max(width, min(self.keys.shape[0], _KEY_BLOCK, budget))
        return max(1, min(n_queries, budget // keys)), keys

    def scores(self, q: torch.Tensor, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Returns float32 [len(q), stop - start], the scores of keys start:stop, written into `out` if given."""
        if out is None:
            out = q.new_empty(len(q), stop - start)
        # one GEMM per block: few large parallel calls also hold up on a CPU shared with other jobs
        return torch.addmm(self.bias[start:stop], q, self.keys[start:stop].T, alpha=self.alpha, out=out)

    def distances(self, scores: torch.Tensor, q_sq: torch.Tensor) -> torch.Tensor:
        """Returns the float32 distances of `scores` (in place): ||q||² added back, or 1 - similarity."""
        if self.metric == "l2":
            return scores.add_(q_sq.float()[:, None]).clamp_min_(0.0)
        return scores.add_(1.0)

    def __call__(self, queries: torch.Tensor, queries_sq: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        q_block, k_block = self.block_shape(len(queries), m, self.chunk_size)
        buffer = queries.new_empty(q_block * k_block)  # reused: fresh pages for every block cost more than the GEMM
        out_d, out_i = [], []
        for qs, qe in _blocks(len(queries), q_block):
            q = queries[qs:qe]
            best_s = best_i = None
            for ks, ke in _blocks(self.keys.shape[0], k_block):
                s, i = _smallest(self.scores(q, ks, ke, buffer[:(qe - qs) * (ke - ks)].view(qe - qs, ke - ks)), m)
                i += ks
                if best_s is not None:
                    s, pick = torch.cat([best_s, s], dim=1).topk(m, dim=1, largest=False, sorted=False)
                    i = torch.cat([best_i, i], dim=1).gather(1, pick)
                best_s, best_i = s, i
            out_d.append(self.distances(best_s, queries_sq[qs:qe]))
            out_i.append(best_i)
        return torch.cat(out_d), torch.cat(out_i)


def _smallest(scores: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the min(m, width) smallest scores of each row and their columns, in no particular order.

    Columns c, c + w, c + 2w, ... form a group (w = width / _GROUP). The m groups with the smallest
    minima hold m smallest scores: every other group's minimum is at least the m-th smallest group
    minimum, which m distinct candidates already reach. So topk reads the group minima and then m
    groups, an eighth of the row, instead of the whole row.
    """
    rows, width = scores.shape
    groups = width // _GROUP
    if width % _GROUP or groups < m:
        return scores.topk(min(m, width), dim=1, largest=False, sorted=False)
    _, best_groups = scores.view(rows, _GROUP, groups).amin(dim=1).topk(m, dim=1, largest=False, sorted=False)
    cols = (best_groups[:, :, None] + torch.arange(0, width, groups, device=scores.device)).view(rows, -1)
    values, pick = scores.gather(1, cols).topk(m, dim=1, largest=False, sorted=False)
    return values, cols.gather(1, pick)


def _exact_distances(queries: _Vectors, keys: _Vectors, rows: torch.Tensor, cand: torch.Tensor,
                     metric: str) -> torch.Tensor:
    """Returns float32 [len(rows), c]: the distance of query rows[i] to key cand[i, j], computed in float64.

    Rounding to float32 is what defines a tie: it merges float64 last-bit noise such as
    cos((1,1), (2,2)) computed through different norms. For cosine the similarity is rounded before
    taking 1 - s, so that a near-1 similarity becomes exactly distance 0.
    """
    n, c = cand.shape
    d = keys.rows.shape[1]
    out = torch.empty(n, c, dtype=torch.float32, device=cand.device)
    for start, stop in _blocks(n, _WIDEN_BLOCK // max(1, c * d)):
        q = queries.widened(rows[start:stop])[:, None, :]
        x = keys.widened(cand[start:stop].reshape(-1)).view(stop - start, c, d)
        # a pure per-pair expression: equal key vectors get bitwise-equal distances wherever they sit
        if metric == "l2":
            out[start:stop] = x.sub_(q).square_().sum(dim=-1)
        else:
            out[start:stop] = 1.0 - x.mul_(q).sum(dim=-1).float()
    return out


def _rank(exact: torch.Tensor, cand: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the first k (distance, index) pairs of each row, sorted by distance, then by index."""
    by_index, order = cand.sort(dim=1, stable=True)
    exact = exact.gather(1, order)
    exact, order = exact.sort(dim=1, stable=True)
    return exact[:, :k], by_index.gather(1, order)[:, :k]


def _float32_error_bound(queries: _Vectors, keys: _Vectors) -> torch.Tensor:
    """Returns, per query, a bound on the backend's float32 distance error (||q||²+||k||²-2q·k rounding)."""
    eps = torch.finfo(torch.float32).eps
    if queries.search.is_cuda and torch.get_float32_matmul_precision() != "highest":
        eps = 2.0 ** -10  # TF32 matmuls keep a 10-bit mantissa
    return 4.0 * queries.search.shape[1] * eps * (queries.search_sq + keys.search_sq.max())


def _merge(best_d: torch.Tensor, best_i: torch.Tensor, hit_row: torch.Tensor, hit_d: torch.Tensor,
           hit_i: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the k smallest (distance, index) of each row among its running best and its new hits."""
    counts = torch.bincount(hit_row, minlength=best_d.shape[0])
    # nonzero lists hits row by row: a hit's column is its rank after its row's first hit
    column = torch.arange(len(hit_row), device=hit_row.device) - (counts.cumsum(0) - counts)[hit_row]
    shape = (best_d.shape[0], int(counts.max()))
    new_d = torch.full(shape, math.inf, device=best_d.device)
    new_i = torch.full(shape, _NO_KEY, dtype=torch.long, device=best_i.device)
    new_d[hit_row, column], new_i[hit_row, column] = hit_d, hit_i
    return _rank(torch.cat([best_d, new_d], dim=1), torch.cat([best_i, new_i], dim=1), k)


def _scan_near_ties(queries: _Vectors, keys: _Vectors, radius: torch.Tensor, k: int, metric: str,
                    chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the exact (distances, indices) of the k nearest keys of every query, by one pass over all keys.

    `radius` is each query's k-th exact distance among its first candidates plus the float32 error
    bound: every key whose float32 distance is within it is re-ranked exactly, block by block, into
    a running top k. A block holds about chunk_size / 8 distances (a tied block may make each of them
    a candidate), so memory does not grow with the number of tied keys.
    """
    scorer = _TorchCandidates(keys, metric, chunk_size)
    q_block, k_block = scorer.block_shape(len(radius), k, max(1, chunk_size // 8))
    # rounding the radius up to float32 keeps every key within it: a superset of candidates is still exact
    limit = torch.nextafter(radius.float(), torch.full_like(radius, math.inf, dtype=torch.float32))
    buffer = queries.search.new_empty(q_block * k_block)
    out_d, out_i = [], []
    for qs, qe in _blocks(len(radius), q_block):
        rows = torch.arange(qs, qe, device=radius.device)
        q, q_sq = queries.search[qs:qe], queries.search_sq[qs:qe]
        best_d = torch.full((qe - qs, k), math.inf, device=radius.device)
        best_i = torch.full((qe - qs, k), _NO_KEY, dtype=torch.long, device=radius.device)
        for ks, ke in _blocks(keys.rows.shape[0], k_block):
            scores = scorer.scores(q, ks, ke, buffer[:(qe - qs) * (ke - ks)].view(qe - qs, ke - ks))
            near = scorer.distances(scores, q_sq) <= limit[qs:qe, None]
            hit_row, hit_col = near.nonzero(as_tuple=True)
            if len(hit_row):
                hit_key = hit_col + ks
                hit_d = _exact_distances(queries, keys, rows[hit_row], hit_key[:, None], metric)[:, 0]
                best_d, best_i = _merge(best_d, best_i, hit_row, hit_d, hit_key, k)
        out_d.append(best_d)
        out_i.append(best_i)
    return torch.cat(out_d), torch.cat(out_i)


def _every_key_neighbours(queries: _Vectors, keys: _Vectors, k: int, metric: str):
    """Returns the exact k nearest when every key is a candidate: nothing can hide beyond the list."""
    n_queries, n_keys = len(queries.rows), len(keys.rows)
    device = queries.rows.device
    cand = torch.arange(n_keys, device=device).expand(n_queries, n_keys)
    return _rank(_exact_distances(queries, keys, torch.arange(n_queries, device=device), cand, metric), cand, k)


def _exact_neighbours(queries: _Vectors, keys: _Vectors, k: int, metric: str, finder,
                      chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (distances, indices) [n, k] of the exact k nearest keys, ties to the smaller index."""
    m = min(len(keys.rows), k + TIE_MARGIN)
    if m == len(keys.rows):
        return _every_key_neighbours(queries, keys, k, metric)
    approx, cand = finder(queries.search, queries.search_sq, m)
    rows = torch.arange(len(queries.rows), device=cand.device)
    dist, idx = _rank(_exact_distances(queries, keys, rows, cand, metric), cand, k)
    tolerance = _float32_error_bound(queries, keys)
    unsure = (approx.max(dim=1).values.double() <= dist[:, -1].double() + tolerance).nonzero()[:, 0]
    if len(unsure):
        radius = dist[unsure, -1].double() + tolerance[unsure]
        dist[unsure], idx[unsure] = _scan_near_ties(queries.take(unsure), keys, radius, k, metric, chunk_size)
    return dist, idx


def _approximate_neighbours(queries: _Vectors, keys: _Vectors, k: int, metric: str, index: ApproximateIndex,
                            chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (distances, indices) [n, k]: the index's candidates, re-ranked exactly.

    A query the index finds fewer than k keys for (an IVF probe of nearly empty lists) is searched
    exactly instead.
    """
    m = min(len(keys.rows), k + TIE_MARGIN)
    _, cand = index.candidates(index.build(keys.search, metric), queries.search, m)
    missing = cand < 0
    rows = torch.arange(len(queries.rows))
    exact = _exact_distances(queries, keys, rows, cand.clamp_min(0), metric).masked_fill_(missing, math.inf)
    dist, idx = _rank(exact, cand.masked_fill(missing, _NO_KEY), k)
    short = (idx[:, -1] == _NO_KEY).nonzero()[:, 0]
    if len(short):
        finder = _TorchCandidates(keys, metric, chunk_size)
        dist[short], idx[short] = _exact_neighbours(queries.take(short), keys, k, metric, finder, chunk_size)
    return dist, idx


def search(queries, keys, k: int, *, metric: str = "l2", backend: str = "auto", device: str | None = None,
           chunk_size: int = 2 ** 24, index: ApproximateIndex | None = None) -> Neighbours:
    """Returns the exact k nearest keys of every query, ties broken by the smaller key index.

    `metric="l2"` ranks by squared L2 distance on the vectors as given (un-normalized, the original
    image test); `"cosine"` normalizes both sides and returns 1 - cosine similarity. The search runs
    where the queries live (`device=None`), on a GPU when torch sees one (`"auto"`), or on the named
    device. `backend="auto"` uses faiss on CPU, faiss GPU on CUDA when faiss has GPU support, and
    torch on CUDA otherwise. `chunk_size` bounds the distances the torch backend holds at once.
    `index` swaps exact candidates for a faiss IVF or HNSW index (CPU), re-ranked exactly.

    Example:
        Keys 2 and 3 are both at squared distance 1 from the query, so the smaller index comes
        first; key 1 (distance 25) is not among the k = 3 nearest:

        >>> import torch
        >>> from dejavu.knn import search
        >>> keys = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [1.0, 0.0]])
        >>> nearest = search(torch.tensor([[0.0, 0.0]]), keys, k=3)
        >>> nearest.indices, nearest.distances
        (tensor([[0, 2, 3]]), tensor([[0., 1., 1.]]))
        >>> torch.equal(search(torch.tensor([[0.0, 0.0]]), keys, k=3, backend="torch").indices, nearest.indices)
        True

        With cosine, length does not count: key 0 points the query's way (distance 0), key 2 is
        45 degrees off (distance 1 - cos 45° = 0.2929):

        >>> nearest = search(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]]),
        ...                  k=2, metric="cosine")
        >>> nearest.indices, nearest.distances
        (tensor([[0, 2]]), tensor([[0.0000, 0.2929]]))
    """
    queries, keys = _validate(queries, keys, k, metric, backend, device)
    on_cuda = queries.is_cuda
    if backend == "auto":
        backend = "faiss" if not on_cuda or faiss_has_gpu() else "torch"
    if (backend == "faiss" and on_cuda and not faiss_has_gpu()) or index is not None:
        queries, keys, on_cuda = queries.cpu(), keys.cpu(), False  # faiss-cpu: its indexes need CPU arrays
    q, x = _prepare(queries, metric, "queries"), _prepare(keys, metric, "keys")
    if index is not None:
        dist, idx = _approximate_neighbours(q, x, k, metric, index, chunk_size)
        return Neighbours(idx, dist, metric, "faiss", "cpu", index.kind)
    finder = _FaissCandidates(x, metric) if backend == "faiss" else _TorchCandidates(x, metric, chunk_size)
    if min(len(x.rows), k + TIE_MARGIN) > finder.max_m:  # past faiss GPU's largest k: torch on the same GPU
        finder = _TorchCandidates(x, metric, chunk_size)
    dist, idx = _exact_neighbours(q, x, k, metric, finder, chunk_size)
    return Neighbours(idx.cpu(), dist.cpu(), metric, finder.name, "cuda" if on_cuda else "cpu")
