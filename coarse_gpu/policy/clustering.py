"""k-means for the segmentation baselines: on all rows up to ``MAX_FIT_ROWS``, on a seeded sample above.

Why and how the sampling works is in the module docstring of ``coarse_gpu.policy.baselines``.
``cluster_rows`` is the one place that decides: at most ``max_fit_rows`` points -> exactly the k-means
the baselines always ran (sklearn ``KMeans`` on every row, or one segment per distinct row when there
are at most k of them); more -> k-means on a uniform sample of ``max_fit_rows`` rows drawn with the
seed, then every row to its nearest center.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Optional

import numpy as np
from sklearn.cluster import KMeans

__all__ = ["MAX_FIT_ROWS", "Embedding", "cluster_rows", "kmeans", "nearest_center", "sample_rows"]

#: Rows above which k-means and the policy trees are fitted on a uniform random sample of this many rows
#: (and every row is then assigned by the fitted centers / tree). 200,000 rows pin k-means centers to
#: well under 1 % of a segment's spread while keeping a fit at a few seconds on 2 cores.
MAX_FIT_ROWS = 200_000
#: Rows per block when assigning to the nearest center: (rows, q) float64 temporaries of ~10 MB.
_NEAREST_ROWS = 65536


def sample_rows(n: int, max_rows: Optional[int], seed: int) -> Optional[np.ndarray]:
    """Sorted uniform sample without replacement of ``max_rows`` of range(n), drawn with ``seed``;
    None when n <= max_rows (or max_rows is None): then the caller uses every row."""
    if max_rows is None or n <= max_rows:
        return None
    if max_rows < 1:
        raise ValueError(f"max_fit_rows must be >= 1 or None, got {max_rows}")
    return np.sort(np.random.default_rng(seed).choice(n, size=int(max_rows), replace=False))


def kmeans(points: np.ndarray, k: int, seed: int, n_init: int,
           sample_weight: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """sklearn k-means -> (labels (n,) int64, centers (k, q)). Needs at least k distinct points."""
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    km = KMeans(n_clusters=k, n_init=n_init, random_state=int(seed))
    km.fit(points, sample_weight=sample_weight)
    return km.labels_.astype(np.int64), km.cluster_centers_


def nearest_center(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(n,) int64 index of the nearest (Euclidean) finite center for each row of ``points`` (n, q);
    all-NaN center rows (empty segments) are never chosen. The distances are differences squared (not
    the expanded |x|^2 - 2 x.c + |c|^2), so a point equal to a center is always assigned to it."""
    c = np.asarray(centers, dtype=np.float64)
    live = np.flatnonzero(np.all(np.isfinite(c), axis=1))
    out = np.empty(points.shape[0], dtype=np.int64)
    for lo in range(0, points.shape[0], _NEAREST_ROWS):
        blk = points[lo:lo + _NEAREST_ROWS]
        d2 = np.full((blk.shape[0], c.shape[0]), np.inf)
        for j in live:  # one center at a time: (rows, q) temporaries, not (rows, K, q)
            d2[:, j] = ((blk - c[j]) ** 2).sum(-1)
        out[lo:lo + _NEAREST_ROWS] = d2.argmin(1)
    return out


@dataclass(frozen=True)
class Embedding:
    """The points a segmentation baseline clusters, z (N, q), with its distinct rows computed once."""

    z: np.ndarray

    @cached_property
    def unique(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct rows (u, q), inverse (N,) int64): computed on first use, then kept (K-independent)."""
        uniq, inverse = np.unique(self.z, axis=0, return_inverse=True)
        return uniq, inverse.reshape(-1)

    @property
    def n_distinct(self) -> int:
        return int(self.unique[0].shape[0])

    def more_distinct_than(self, k: int) -> bool:
        """Whether z has more than k distinct rows; prefixes first, so that it rarely sorts all N rows."""
        n = self.z.shape[0]
        for size in (1_000, 10_000):
            if size < n and np.unique(self.z[:size], axis=0).shape[0] > k:
                return True
        return self.n_distinct > k


def cluster_rows(emb: Embedding, k: int, seed: int, n_init: int,
                 max_fit_rows: Optional[int] = MAX_FIT_ROWS) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Segments of the N rows of ``emb.z``: (labels (N,) int64 in [0, k), centers (k, q), fit rows).

    At most k distinct rows: one segment per distinct row (in sorted order), centers = those rows and
    all-NaN rows for the spare slots. Otherwise k-means (``seed``, ``n_init``) on every row when
    N <= max_fit_rows (labels = k-means' own), else on ``sample_rows(N, max_fit_rows, seed)`` with every
    row then assigned to its nearest center. fit rows: the sample's row indices, None when all rows.
    """
    z = emb.z
    if not emb.more_distinct_than(k):
        uniq, inverse = emb.unique
        centers = np.full((k, z.shape[1]), np.nan)
        centers[: uniq.shape[0]] = uniq
        return inverse, centers, None
    rows = sample_rows(z.shape[0], max_fit_rows, seed)
    if rows is None:
        labels, centers = kmeans(z, k, seed, n_init)
        return labels, centers, None
    zs = z[rows]
    if np.unique(zs, axis=0).shape[0] <= k:  # a sample too uniform for k clusters: fit on every row instead
        labels, centers = kmeans(z, k, seed, n_init)
        return labels, centers, None
    _, centers = kmeans(zs, k, seed, n_init)
    return nearest_center(z, centers), centers, rows
