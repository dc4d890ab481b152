"""One set of bootstrap resamples for every policy of a run: CIs and paired CIs of differences.

Drawing fresh resample indices per policy costs n_boot x N random draws and gathers for each of
the dozens of policies a run scores (it was half the default run's time), and it makes the
intervals of two policies independent although they are estimated on the same customers. Here
resample b is a count vector w_b (N,) (how often each customer is drawn; exactly the
nonparametric bootstrap), generated block by block from one seed, so the same resamples are
regenerated identically for every call: the bootstrap means of P policies' AIPW scores S (N, P)
are W @ S / N, one matrix product per block, and differences between policies are resampled
jointly (paired), which is what a comparison between methods needs.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from coarse_gpu.utils.device import usable_cpus

__all__ = ["SharedBootstrap", "percentile_ci"]

#: Resample-count entries per block (rows x customers): 16M float32 = 64 MB whatever N is.
_BLOCK_ELEMENTS = 16_000_000
#: Threads counting the resamples (``_counts``).
_THREADS = usable_cpus(4)


def percentile_ci(draws: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class SharedBootstrap:
    """The same ``n_boot`` resamples of ``n`` customers for every call (module docstring).

    n : customers; n_boot : resamples (>= 1); seed : the resamples' seed.
    """

    n: int
    n_boot: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError(f"the bootstrap needs at least 2 customers, got {self.n}")
        if self.n_boot < 1:
            raise ValueError(f"n_boot must be >= 1, got {self.n_boot}")

    def means(self, scores: np.ndarray) -> np.ndarray:
        """(n_boot, P) bootstrap means of the columns of ``scores`` (N, P); (n_boot,) for (N,) scores."""
        s = np.asarray(scores, dtype=np.float64)
        one = s.ndim == 1
        s = s[:, None] if one else s
        if s.shape[0] != self.n:
            raise ValueError(f"scores has {s.shape[0]} rows, the bootstrap was drawn for {self.n} customers")
        rng = np.random.default_rng(self.seed)
        rows = max(1, _BLOCK_ELEMENTS // self.n)
        out = np.empty((self.n_boot, s.shape[1]))
        with ThreadPoolExecutor(max_workers=_THREADS) as pool:
            for b in range(0, self.n_boot, rows):
                m = min(rows, self.n_boot - b)
                w = np.empty((m, self.n), dtype=np.float64)
                _counts(rng, self.n, w, pool)
                out[b: b + m] = w @ s / self.n
        return out[:, 0] if one else out


def _counts(rng: np.random.Generator, n: int, w: np.ndarray, pool: ThreadPoolExecutor) -> None:
    """Fill each row of w (m, n) with the counts of one resample of n customers.

    The draws come from ``rng`` in row order on this thread (so they are the sequential ones); the
    counting (a scatter over n entries, which leaves the CPU caches at millions of customers) runs on
    the pool's threads, which numpy lets run without the GIL, while the next resample is drawn."""
    pending: list = []

    def count(r: int, idx: np.ndarray) -> None:
        w[r] = np.bincount(idx, minlength=n)

    for r in range(w.shape[0]):
        pending.append(pool.submit(count, r, rng.integers(0, n, n)))
        if len(pending) > 2 * _THREADS:  # bound the drawn indices waiting to be counted
            pending.pop(0).result()
    for f in pending:
        f.result()
