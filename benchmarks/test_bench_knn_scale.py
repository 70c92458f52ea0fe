"""Exact kNN at a million keys: time and peak memory side by side with bare faiss, one process per case.

Targets (issue 13), at 10k queries x 1M keys x 256 dims, k=100 (the keys alone are 1 GiB): dejavu's
exact search within 1.1x of a bare faiss IndexFlatL2 (add + search) in time and within 1.5x of its
peak RSS. Each case runs in a fresh subprocess that draws the same clustered embeddings, times the
search alone, and saves its neighbours; its peak RSS comes from os.wait4. The cases run in turn
within each round and keep their fastest round. The IVF index's recall@k is measured against the
exact neighbours of the same run.

    pytest benchmarks/test_bench_knn_scale.py -s --benchmark-columns=min,rounds

DEJAVU_SCALE_QUERIES, DEJAVU_SCALE_KEYS and DEJAVU_SCALE_DIM set the size (default 10000, 1000000,
256; the issue's 100k queries take about ten times as long); DEJAVU_SCALE_CASES a comma-separated
subset of CASES; DEJAVU_SCALE_ROUNDS the rounds (default 1).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from dejavu.knn import ApproximateIndex, recall_at_k, search

N_QUERIES = int(os.environ.get("DEJAVU_SCALE_QUERIES", "10000"))
N_KEYS = int(os.environ.get("DEJAVU_SCALE_KEYS", "1000000"))
DIM = int(os.environ.get("DEJAVU_SCALE_DIM", "256"))
ROUNDS = int(os.environ.get("DEJAVU_SCALE_ROUNDS", "1"))
K = 100
BARE = "bare faiss IndexFlatL2"


def _bare_faiss(queries: torch.Tensor, keys: torch.Tensor) -> np.ndarray:
    index = faiss.IndexFlatL2(keys.shape[1])
    index.add(keys.numpy())
    return index.search(queries.numpy(), K)[1]


def _dejavu(**kwargs):
    def run(queries: torch.Tensor, keys: torch.Tensor) -> np.ndarray:
        return search(queries, keys, K, **kwargs).indices.numpy()

    return run


CASES = {BARE: _bare_faiss, "dejavu faiss": _dejavu(backend="faiss"), "dejavu torch": _dejavu(backend="torch"),
         "dejavu ivf": _dejavu(index=ApproximateIndex("ivf"))}
SELECTED = [c for c in os.environ.get("DEJAVU_SCALE_CASES", ",".join(CASES)).split(",") if c]


def run_case(case: str, out: Path) -> dict:
    """Runs one case in a fresh interpreter; returns its search seconds, peak RSS and RSS after the data."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, __file__, case, str(N_QUERIES), str(N_KEYS), str(DIM), str(out)],
                            stdout=subprocess.PIPE, text=True, env=env)
    report = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # the rusage of this child alone
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"case {case!r} failed with exit code {proc.returncode}")
    return {**json.loads(report.strip().splitlines()[-1]), "peak_rss_gib": usage.ru_maxrss / 2**20}


def test_scale_time_and_peak_memory(benchmark, tmp_path):
    best: dict[str, dict] = {}

    def one_round():
        for case in SELECTED:
            result = run_case(case, tmp_path / f"{case}.npy")
            if case not in best or result["seconds"] < best[case]["seconds"]:
                best[case] = result

    benchmark.group = f"exact kNN at scale {N_QUERIES}x{N_KEYS}x{DIM} k={K}"
    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    lines = [benchmark.group + f" (load average {os.getloadavg()[0]:.1f})"]
    for case, r in best.items():
        line = f"  {case}: search {r['seconds']:.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB " \
               f"({r['data_rss_gib']:.2f} GiB after drawing the data)"
        if BARE in best and case != BARE:
            time_ratio = r["seconds"] / best[BARE]["seconds"]
            rss_ratio = r["peak_rss_gib"] / best[BARE]["peak_rss_gib"]
            line += f"; {time_ratio:.3f}x bare faiss's time, {rss_ratio:.3f}x its peak RSS"
            benchmark.extra_info[f"{case} time ratio"] = round(time_ratio, 4)
            benchmark.extra_info[f"{case} peak RSS ratio"] = round(rss_ratio, 4)
        lines.append(line)
    if "dejavu ivf" in best and "dejavu faiss" in best:
        recall = recall_at_k(*(np.load(tmp_path / f"{c}.npy") for c in ("dejavu ivf", "dejavu faiss")))
        benchmark.extra_info["ivf recall@k"] = recall
        lines.append(f"  dejavu ivf recall@{K} against exact: {recall:.4f}")
    print("\n" + "\n".join(lines))
    if "dejavu torch" in best and "dejavu faiss" in best:  # the backends agree at scale too
        assert np.array_equal(np.load(tmp_path / "dejavu torch.npy"), np.load(tmp_path / "dejavu faiss.npy"))


def _child(case: str, n_queries: int, n_keys: int, dim: int, out: str) -> None:
    """Draws the data, runs one case, saves its neighbours and prints its timings as one JSON line.

    Every case imports the same modules (faiss, torch, dejavu.knn) before it starts, so the RSS they
    add is the same for all.
    """
    from sidebyside import clustered

    queries, keys = clustered(n_queries, n_keys, dim)
    data_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    indices = CASES[case](queries, keys)
    seconds = time.perf_counter() - start
    np.save(out, indices)
    print(json.dumps({"seconds": seconds, "data_rss_gib": data_rss}))


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
