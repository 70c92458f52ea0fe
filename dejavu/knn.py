"""Exact k-nearest-neighbour search with a deterministic tie rule (SPEC sections 3 and 5).

Two interchangeable backends find candidates: faiss (IndexFlatL2 / IndexFlatIP, on GPU when faiss
has GPU support and the inputs live on CUDA) and torch (chunked matmul + topk, CPU or CUDA, memory
bounded by `chunk_size`). Both then go through the same exact re-ranking, which is what makes them
agree index for index:

1. the backend returns `k + margin` candidates per query, ranked by its float32 distances;
2. the candidates' distances are recomputed in float64 directly from the vectors (sum of squared
   differences, or 1 - dot of unit vectors with the dot rounded first), rounded to float32, and
   sorted by (distance, key index): among equal returned distances the smaller key index comes first;
3. a query whose last candidate is within the float32 error bound of its k-th exact distance may
   have tied or near-tied keys beyond the candidates: it is searched again with twice the margin,
   up to all keys. Keys outside the candidates are then provably farther than the k-th neighbour.

Both backends therefore return identical indices and identical distances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

METRICS = ("l2", "cosine")
BACKENDS = ("auto", "faiss", "torch")
#: extra candidates per query beyond k; enough that a re-search is rare on continuous data
TIE_MARGIN = 16
#: faiss GPU indexes return at most this many neighbours per query
_FAISS_GPU_MAX_K = 2048


@dataclass(frozen=True)
class Neighbours:
    """The k nearest keys of each query, nearest first, as CPU tensors.

    `distances` are squared L2 for metric "l2" and 1 - cosine similarity for "cosine".
    """

    indices: torch.Tensor  # int64 [n_queries, k], row numbers of the keys
    distances: torch.Tensor  # float32 [n_queries, k], non-decreasing along each row
    metric: str
    backend: str  # "faiss" or "torch": which one found the candidates
    device: str  # where the candidate search ran, "cpu" or "cuda"

    @property
    def k(self) -> int:
        """Returns the number of neighbours per query."""
        return self.indices.shape[1]


def faiss_has_gpu() -> bool:
    """Returns True when the installed faiss can build GPU indexes and sees a GPU."""
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _as_matrix(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [n, d] matrix, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    bad = (~torch.isfinite(x).all(dim=1)).nonzero()
    if len(bad):
        raise ValueError(f"{name} contain NaN or Inf (first at row {int(bad[0])}); re-embed or drop those rows")
    return x


def _validate(queries, keys, k: int, metric: str, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
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
    if metric == "cosine":
        for name, x in (("queries", queries), ("keys", keys)):
            zero = (x.norm(dim=1) == 0).nonzero()
            if len(zero):
                raise ValueError(f"{name} row {int(zero[0])} is the zero vector, which has no cosine similarity")
    return queries, keys.to(queries.device)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


class _FaissCandidates:
    """Candidate search with a flat (exact) faiss index over the keys."""

    def __init__(self, keys: torch.Tensor, metric: str, on_gpu: bool):
        import faiss

        self.metric = metric
        data = np.ascontiguousarray(keys.detach().cpu().numpy(), dtype=np.float32)
        index = faiss.IndexFlatL2(data.shape[1]) if metric == "l2" else faiss.IndexFlatIP(data.shape[1])
        if on_gpu:
            self._resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._resources, torch.cuda.current_device(), index)
        index.add(data)
        self.index = index
        self.max_m = _FAISS_GPU_MAX_K if on_gpu else keys.shape[0]

    def __call__(self, queries: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        data = np.ascontiguousarray(queries.detach().cpu().numpy(), dtype=np.float32)
        dist, idx = self.index.search(data, m)
        dist = torch.from_numpy(dist)
        if self.metric == "cosine":
            dist = 1.0 - dist
        return dist.to(queries.device), torch.from_numpy(idx).to(queries.device)


class _TorchCandidates:
    """Candidate search by blocks of matmul + topk, holding at most about `chunk_size` distances at once."""

    def __init__(self, keys: torch.Tensor, metric: str, chunk_size: int):
        self.metric = metric
        self.keys = keys.float()
        self.key_sq = (self.keys * self.keys).sum(dim=1)
        self.chunk_size = chunk_size
        self.max_m = keys.shape[0]

    def _distances(self, q: torch.Tensor, q_sq: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        dots = q @ self.keys[start:stop].T
        if self.metric == "cosine":
            return 1.0 - dots
        return (q_sq[:, None] + self.key_sq[None, start:stop] - 2.0 * dots).clamp_min_(0.0)

    def __call__(self, queries: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        queries = queries.float()
        n_keys = self.keys.shape[0]
        q_block = max(1, min(queries.shape[0], 1024, self.chunk_size // m))
        k_block = max(m, self.chunk_size // q_block)
        out_d, out_i = [], []
        for qs in range(0, queries.shape[0], q_block):
            q = queries[qs:qs + q_block]
            q_sq = (q * q).sum(dim=1)
            best_d = best_i = None
            for ks in range(0, n_keys, k_block):
                d = self._distances(q, q_sq, ks, min(ks + k_block, n_keys))
                d, i = d.topk(min(m, d.shape[1]), dim=1, largest=False)
                i += ks
                if best_d is not None:
                    d, pick = torch.cat([best_d, d], dim=1).topk(m, dim=1, largest=False)
                    i = torch.cat([best_i, i], dim=1).gather(1, pick)
                best_d, best_i = d, i
            out_d.append(best_d)
            out_i.append(best_i)
        return torch.cat(out_d), torch.cat(out_i)


def _exact_distances(queries64: torch.Tensor, keys64: torch.Tensor, cand: torch.Tensor,
                     metric: str, chunk_size: int) -> torch.Tensor:
    """Returns float32 distances [n, m] of each query to its candidate keys, computed pair by pair in float64.

    Rounding to float32 is what defines a tie: it merges float64 last-bit noise such as
    cos((1,1), (2,2)) computed through different norms. For cosine the similarity is rounded before
    taking 1 - s, so that a near-1 similarity becomes exactly distance 0.
    """
    n, m = cand.shape
    d = keys64.shape[1]
    out = torch.empty(n, m, dtype=torch.float32, device=queries64.device)
    rows = max(1, chunk_size // max(1, m * d))
    cols = max(1, chunk_size // (rows * d))
    for rs in range(0, n, rows):
        q = queries64[rs:rs + rows, None, :]
        for cs in range(0, m, cols):
            k = keys64[cand[rs:rs + rows, cs:cs + cols]]
            # a pure per-pair expression: equal key vectors get bitwise-equal distances wherever they sit
            if metric == "l2":
                out[rs:rs + rows, cs:cs + cols] = ((q - k) ** 2).sum(dim=-1).float()
            else:
                out[rs:rs + rows, cs:cs + cols] = 1.0 - (q * k).sum(dim=-1).float()
    return out


def _rank(exact: torch.Tensor, cand: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the first k (distance, index) pairs of each row, sorted by distance, then by index."""
    by_index, order = cand.sort(dim=1, stable=True)
    exact = exact.gather(1, order)
    exact, order = exact.sort(dim=1, stable=True)
    return exact[:, :k], by_index.gather(1, order)[:, :k]


def _float32_error_bound(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Returns, per query, a bound on the backend's float32 distance error (||q||²+||k||²-2q·k rounding)."""
    eps = torch.finfo(torch.float32).eps
    if queries.is_cuda and torch.get_float32_matmul_precision() != "highest":
        eps = 2.0 ** -10  # TF32 matmuls keep a 10-bit mantissa
    scale = (queries.double() ** 2).sum(dim=1) + (keys.double() ** 2).sum(dim=1).max()
    return 4.0 * queries.shape[1] * eps * scale


def search(queries, keys, k: int, *, metric: str = "l2", backend: str = "auto",
           chunk_size: int = 2 ** 24) -> Neighbours:
    """Returns the exact k nearest keys of every query, ties broken by the smaller key index.

    `metric="l2"` ranks by squared L2 distance on the vectors as given (un-normalized, the original
    image test); `"cosine"` normalizes both sides and returns 1 - cosine similarity. `backend="auto"`
    uses faiss for CPU inputs, faiss GPU for CUDA inputs when faiss has GPU support, and torch on
    CUDA otherwise. `chunk_size` bounds the distances the torch backend and the re-ranking hold at once.
    """
    queries, keys = _validate(queries, keys, k, metric, backend)
    on_cuda = queries.is_cuda
    if backend == "auto":
        backend = "faiss" if not on_cuda or faiss_has_gpu() else "torch"
    if backend == "faiss" and on_cuda and not faiss_has_gpu():
        queries, keys, on_cuda = queries.cpu(), keys.cpu(), False
    search_q = _unit(queries.float()) if metric == "cosine" else queries.float()
    search_k = _unit(keys.float()) if metric == "cosine" else keys.float()
    exact_q = _unit(queries.double()) if metric == "cosine" else queries.double()
    exact_k = _unit(keys.double()) if metric == "cosine" else keys.double()
    finder = (_FaissCandidates(search_k, metric, on_gpu=on_cuda) if backend == "faiss"
              else _TorchCandidates(search_k, metric, chunk_size))
    tolerance = _float32_error_bound(search_q, search_k)

    n, n_keys = queries.shape[0], keys.shape[0]
    indices = torch.empty(n, k, dtype=torch.long, device=queries.device)
    distances = torch.empty(n, k, dtype=torch.float32, device=queries.device)
    pending = torch.arange(n, device=queries.device)
    margin = TIE_MARGIN
    while len(pending):
        m = min(n_keys, k + margin)
        if m < n_keys and m <= finder.max_m:
            approx, cand = finder(search_q[pending], m)
        else:  # every key is a candidate: nothing can hide beyond the list
            approx, cand = None, torch.arange(n_keys, device=queries.device).expand(len(pending), n_keys)
        exact, idx = _rank(_exact_distances(exact_q[pending], exact_k, cand, metric, chunk_size), cand, k)
        if approx is None:
            unsure = torch.zeros(len(pending), dtype=torch.bool, device=queries.device)
        else:
            unsure = approx.max(dim=1).values.double() <= exact[:, -1].double() + tolerance[pending]
        done = pending[~unsure]
        indices[done], distances[done] = idx[~unsure], exact[~unsure]
        pending = pending[unsure]
        margin *= 2
    return Neighbours(indices.cpu(), distances.cpu(), metric, backend, "cuda" if on_cuda else "cpu")
