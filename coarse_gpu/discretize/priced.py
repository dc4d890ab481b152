"""The profit table priced by fixed constraint multipliers, never formed: ``PricedSource``, on which the
search draws its Lloyd seeds under side constraints."""
from __future__ import annotations

import math

import numpy as np
import torch

from coarse_gpu.discretize.profit import ProfitSource, relu_colsum


class PricedSource(ProfitSource):
    """Pi_im - sum_c lam_c W_ic V_mc over a ProfitSource, never formed: the profit table under fixed
    multipliers, on which the greedy / k-means++ seeds are drawn (so that they respect the constraints
    as the Lagrangian does). Implements the ProfitSource operations the seeding uses (the row
    reductions are ProfitSource's single-process ones: constraints are refused when sharded); the rank-C
    correction is added to ``columns`` / ``scores`` / ``submatrix``, and the N x M reductions
    (``row_max``, ``gains``) run over column chunks of ``columns``."""

    def __init__(self, base, W: np.ndarray, V: np.ndarray, lam: np.ndarray, chunk_bytes: int = 1 << 26) -> None:
        self.base, self.n, self.m = base, base.n, base.m
        self.device, self.dtype, self.lazy, self.path = base.device, base.dtype, True, base.path
        self.Wl = torch.as_tensor(W * lam[None, :], device=self.device, dtype=self.dtype)
        self.Vt = torch.as_tensor(V, device=self.device, dtype=self.dtype)
        self.W, self.V, self.lam = W, V, lam
        itemsize = torch.finfo(self.dtype).bits // 8
        self.chunk = max(1, int(chunk_bytes // max(1, self.n * itemsize)))
        self._rowmax = None

    def columns(self, idx):
        return self.base.columns(idx) - self.Wl @ self.Vt[idx.to(self.device)].T

    def scores(self, P):
        return self.base.scores(P) - (P.T @ self.Wl) @ self.Vt.T

    def submatrix(self, rows, cols=None):
        V = self.Vt if cols is None else self.Vt[cols.to(self.device)]
        return self.base.submatrix(rows, cols) - self.Wl[rows.to(self.device)] @ V.T

    def _blocks(self):
        for lo in range(0, self.m, self.chunk):
            yield lo, self.columns(torch.arange(lo, min(self.m, lo + self.chunk), device=self.device))

    def row_max(self):
        if self._rowmax is None:
            best = torch.full((self.n,), -math.inf, device=self.device, dtype=self.dtype)
            arg = torch.zeros(self.n, dtype=torch.long, device=self.device)
            for lo, blk in self._blocks():
                v, a = blk.max(1)
                better = v > best
                best, arg = torch.where(better, v, best), torch.where(better, a + lo, arg)
            self._rowmax = (best, arg)
        return self._rowmax

    def gains(self, best):

        out = torch.empty(self.m, device=self.device, dtype=self.dtype)
        for lo, blk in self._blocks():
            out[lo:lo + blk.shape[1]] = relu_colsum(blk, best)
        return out

    def rows(self, idx):
        sub = self.base.rows(idx)
        return None if sub is None else PricedSource(sub, self.W[idx], self.V, self.lam)
