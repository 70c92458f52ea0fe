"""Side-by-side timing for the benchmark suites: ratios, not absolute times, on a shared machine.

The cases of one comparison run in turn within each round, so a neighbour's job slows all of them
alike, and each case keeps its fastest round. Only the ratios printed at the end mean something
from one machine to the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def clustered(n_queries: int, n_keys: int, dim: int, n_clusters: int = 1000, seed: int = 0,
              spread: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns float32 (queries, keys) around shared cluster centres, as class embeddings are.

    Keys are drawn block by block into one tensor, so generating 1M x 256 keys holds no more than them.
    """
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=g)

    def draw(n: int) -> torch.Tensor:
        out = torch.empty(n, dim)
        for start in range(0, n, 65536):
            stop = min(start + 65536, n)
            out[start:stop] = torch.randn(stop - start, dim, generator=g).mul_(spread)
            out[start:stop] += centres[torch.randint(0, n_clusters, (stop - start,), generator=g)]
        return out

    return draw(n_queries), draw(n_keys)


class Rounds:
    """Runs named cases in turn for a number of rounds and keeps each one's fastest time and last result."""

    def __init__(self, cases: dict[str, Callable[[], object]]):
        self.cases = cases
        self.best = {name: float("inf") for name in cases}
        self.results: dict[str, object] = {}

    def __call__(self) -> None:
        """Runs one round: every case once, in order."""
        for name, fn in self.cases.items():
            start = time.perf_counter()
            self.results[name] = fn()
            self.best[name] = min(self.best[name], time.perf_counter() - start)

    def ratios(self, reference: str) -> dict[str, float]:
        """Returns each case's fastest time divided by the reference case's."""
        return {name: t / self.best[reference] for name, t in self.best.items()}

    def report(self, title: str, reference: str, benchmark=None) -> str:
        """Returns (and prints, and stores in the benchmark's extra_info) the ratios to `reference`."""
        ratios = self.ratios(reference)
        line = f"{title}: " + ", ".join(f"{name} {r:.3f}x" for name, r in ratios.items() if name != reference)
        line += f" (of {reference})"
        if benchmark is not None:
            benchmark.extra_info.update({f"ratio {name}": round(r, 4) for name, r in ratios.items()})
        print("\n" + line)
        return line

