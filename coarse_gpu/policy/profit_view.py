"""The profit matrix the baselines read, dense or factored, and the reductions they need over it.

A baseline's profit is either an explicit (N, M) array or a
:class:`~coarse_gpu.discretize.profit.FactoredProfit` Pi = V @ W.T with V (N, A) and W (M, A) (A = the
model's arms, ~15): at 2,000,000 customers x 546 candidates the dense float64 matrix is 8.7 GB, the
factors 0.24 GB. :class:`ProfitView` gives both the same interface, and for a factored matrix never
forms more than a block of rows of it (``BLOCK_BYTES``):

* ``col_mean()`` / ``col_sum()``  (M,)  mean / total profit of each candidate        = mean(V) @ W.T
* ``row_argmax()`` / ``row_max()`` (N,)  each customer's best candidate and its profit  row blocks
* ``ideal_candidates()``                 the distinct best candidates and each row's index among them
* ``at(cols)``                    (N,)  Pi[i, cols[i]]                                 = sum_a V_ia W_(cols_i)a
* ``argmax_columns(cols)``        (N,)  position in ``cols`` of each row's best of those columns
* ``columns(idx)``                (N, J) Pi[:, idx] (J small: the K chosen treatments)
* ``rows(idx)``                   (n, M) Pi[idx] (a sample of rows)
* ``segment_means(labels, k)``    (k, M) mean profit of each segment                  = (onehot^T V) W^T / size

The dense path computes exactly what the baselines computed before this module existed (same numpy
calls), so results on a dense matrix are unchanged bit for bit. The K-independent reductions (column
means and sums, row maxima) are cached on the view: one view shared across K computes them once.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from coarse_gpu.discretize.profit import FactoredProfit

__all__ = ["BLOCK_BYTES", "ProfitView", "as_view", "to_numpy"]

#: Bytes of one (rows, M) float64 block of a factored matrix: 64 MB keeps the row-blocked reductions
#: at a few hundred MB of working memory whatever N is, with blocks large enough for BLAS to run at speed.
BLOCK_BYTES = 64 << 20


def to_numpy(a, name: str) -> np.ndarray:
    """``a`` (array-like or torch tensor) as a float64 numpy array; ValueError naming ``name`` otherwise."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array, got {type(a).__name__}") from exc


class ProfitView:
    """An (N, M) profit matrix, dense (``dense``) or factored (``V`` (N, A), ``W`` (M, A)); checked once.

    profit : (N, M) array / tensor, a ``FactoredProfit``; name : what error messages call it.
    """

    def __init__(self, profit, name: str = "profit") -> None:
        self.name = name
        self.dense: Optional[np.ndarray] = None
        self.V: Optional[np.ndarray] = None
        self.W: Optional[np.ndarray] = None
        if isinstance(profit, FactoredProfit):
            V, W = to_numpy(profit.V, f"{name} (FactoredProfit.V)"), to_numpy(profit.W, f"{name} (FactoredProfit.W)")
            if V.ndim != 2 or W.ndim != 2 or V.shape[1] != W.shape[1] or V.shape[0] == 0 or W.shape[0] == 0:
                raise ValueError(f"{name}: a FactoredProfit needs non-empty V (N, A) and W (M, A) sharing A, got "
                                 f"shapes {V.shape} and {W.shape}")
            if not (np.all(np.isfinite(V)) and np.all(np.isfinite(W))):
                raise ValueError(f"{name} contains NaN or inf")
            self.V, self.W = V, W
            self.n, self.m = int(V.shape[0]), int(W.shape[0])
        else:
            p = to_numpy(profit, name)
            if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
                raise ValueError(f"{name} must be a non-empty 2-D (N, M) array, got shape {p.shape}")
            if not np.all(np.isfinite(p)):
                raise ValueError(f"{name} contains NaN or inf")
            self.dense = p
            self.n, self.m = int(p.shape[0]), int(p.shape[1])
        self._cache: dict = {}

    @property
    def factored(self) -> bool:
        return self.dense is None

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.m

    def source(self):
        """What the discretizer takes: the dense array or the ``FactoredProfit``."""
        return self.dense if self.dense is not None else FactoredProfit(self.V, self.W)

    # -- row blocks of a factored matrix ------------------------------------------------------------
    def _steps(self, width: int):
        """(lo, hi) row ranges whose (rows, width) float64 block fits BLOCK_BYTES."""
        step = max(1, BLOCK_BYTES // (8 * max(1, width)))
        for lo in range(0, self.n, step):
            yield lo, min(self.n, lo + step)

    # -- K-independent reductions (cached) ----------------------------------------------------------
    def col_mean(self) -> np.ndarray:
        """(M,) mean profit of each candidate over the customers."""
        if "col_mean" not in self._cache:
            self._cache["col_mean"] = self.dense.mean(axis=0) if self.dense is not None else self.W @ self.V.mean(0)
        return self._cache["col_mean"]

    def col_sum(self) -> np.ndarray:
        """(M,) total profit of each candidate."""
        if "col_sum" not in self._cache:
            self._cache["col_sum"] = self.dense.sum(0) if self.dense is not None else self.W @ self.V.sum(0)
        return self._cache["col_sum"]

    def _row_best(self) -> tuple[np.ndarray, np.ndarray]:
        if "row_best" not in self._cache:
            if self.dense is not None:
                best = (self.dense.argmax(axis=1), None)  # the max is computed only if asked for
            else:
                arg = np.empty(self.n, dtype=np.int64)
                val = np.empty(self.n)
                for lo, hi in self._steps(self.m):
                    blk = self.V[lo:hi] @ self.W.T
                    arg[lo:hi] = blk.argmax(axis=1)
                    val[lo:hi] = blk[np.arange(hi - lo), arg[lo:hi]]
                best = (arg, val)
            self._cache["row_best"] = best
        return self._cache["row_best"]

    def row_argmax(self) -> np.ndarray:
        """(N,) int64 each customer's best candidate (first on ties)."""
        return self._row_best()[0]

    def ideal_candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct best candidates (u,) sorted, inverse (N,) int64): np.unique of ``row_argmax()``, kept."""
        if "ideal" not in self._cache:
            used, inverse = np.unique(self.row_argmax(), return_inverse=True)
            self._cache["ideal"] = (used, inverse.reshape(-1))
        return self._cache["ideal"]

    def row_max(self) -> np.ndarray:
        """(N,) each customer's largest profit."""
        arg, val = self._row_best()
        if val is None:
            val = self.dense.max(axis=1)
            self._cache["row_best"] = (arg, val)
        return val

    # -- K-dependent reductions -------------------------------------------------------------------
    def at(self, cols: np.ndarray) -> np.ndarray:
        """(N,) Pi[i, cols[i]] for one column per row ``cols`` (N,) int."""
        cols = np.asarray(cols)
        if self.dense is not None:
            return self.dense[np.arange(self.n), cols]
        out = np.empty(self.n)
        for lo, hi in self._steps(self.W.shape[1]):
            out[lo:hi] = np.einsum("ia,ia->i", self.V[lo:hi], self.W[cols[lo:hi]])
        return out

    def columns(self, idx) -> np.ndarray:
        """(N, J) Pi[:, idx]."""
        idx = np.asarray(idx, dtype=np.int64)
        return self.dense[:, idx] if self.dense is not None else self.V @ self.W[idx].T

    def rows(self, idx) -> np.ndarray:
        """(n, M) Pi[idx] (idx: row indices)."""
        return self.dense[idx] if self.dense is not None else self.V[idx] @ self.W.T

    def argmax_columns(self, cols) -> np.ndarray:
        """(N,) int64 position in ``cols`` of each row's best among columns ``cols`` (first on ties)."""
        cols = np.asarray(cols, dtype=np.int64)
        if self.dense is not None:
            return self.dense[:, cols].argmax(axis=1).astype(np.int64)
        out = np.empty(self.n, dtype=np.int64)
        Wc = self.W[cols].T
        for lo, hi in self._steps(cols.size):
            out[lo:hi] = (self.V[lo:hi] @ Wc).argmax(axis=1)
        return out

    def segment_means(self, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """((k, M) mean profit of each segment (0 for empty ones), (k,) int64 sizes) for labels (N,) in [0, k).

        Factored: the segment sums of V (one bincount per column of V), times W^T -- O(N A + k A M)."""
        sizes = np.bincount(labels, minlength=k).astype(np.int64)
        if self.dense is not None:
            sums = np.zeros((k, self.m))
            np.add.at(sums, labels, self.dense)
        else:
            sums = np.stack([np.bincount(labels, weights=self.V[:, a], minlength=k) for a in range(self.V.shape[1])],
                            axis=1) @ self.W.T
        return sums / np.maximum(sizes, 1)[:, None], sizes


def as_view(profit, name: str = "profit") -> ProfitView:
    """``profit`` as a ProfitView (an existing view is returned as is: its checks and caches are kept)."""
    return profit if isinstance(profit, ProfitView) else ProfitView(profit, name)
