"""B-spline bases in torch (any device), with linear continuation outside the knot range: the
varying-coefficient dose head's basis (coarse_gpu.models.dose.DoseVC).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn


# ---------------------------------------------------------------------------------------------
# B-spline basis in torch (any device), with linear continuation outside the knot range
# ---------------------------------------------------------------------------------------------
def _bspline(u: torch.Tensor, knots: torch.Tensor, degree: int) -> torch.Tensor:
    """(M, n_basis) B-spline basis (Cox-de Boor) at u (M,) in [knots[degree], knots[-degree-1]].

    ``knots`` is the full clamped knot vector (boundary knots repeated degree + 1 times).
    """
    t = knots
    n_int = t.shape[0] - 1
    u = u[:, None]
    # degree 0: indicator of [t_i, t_{i+1}); the right end belongs to the last non-empty interval
    B = ((u >= t[:-1]) & (u < t[1:])).to(u.dtype)
    last = int(torch.nonzero(t[1:] > t[:-1]).max())
    B[:, last] = torch.where(u[:, 0] == t[-1], torch.ones_like(u[:, 0]), B[:, last])
    for k in range(1, degree + 1):
        n = n_int - k
        left_den = t[k : k + n] - t[:n]
        right_den = t[k + 1 : k + 1 + n] - t[1 : 1 + n]
        left = torch.where(left_den > 0, (u - t[:n]) / torch.where(left_den > 0, left_den, 1), 0.0)
        right = torch.where(right_den > 0, (t[k + 1 : k + 1 + n] - u) / torch.where(right_den > 0, right_den, 1), 0.0)
        B = left * B[:, :n] + right * B[:, 1 : n + 1]
    return B


class SplineBasis1D(nn.Module):
    """1-D clamped B-spline basis on [lo, hi] with linear continuation outside (no parameters)."""

    def __init__(self, inner_knots: np.ndarray, lo: float, hi: float, degree: int) -> None:
        super().__init__()
        knots = np.concatenate([[lo] * (degree + 1), np.asarray(inner_knots, dtype=np.float64), [hi] * (degree + 1)])
        self.register_buffer("knots", torch.as_tensor(knots, dtype=torch.float64))
        self.degree = int(degree)
        self.lo, self.hi = float(lo), float(hi)
        self.n_basis = int(knots.shape[0] - degree - 1)
        # value and slope of every basis function at both ends (slope by a one-sided difference)
        h = 1e-6 * (hi - lo)
        ends = torch.tensor([lo, lo + h, hi - h, hi], dtype=torch.float64)
        v = _bspline(ends, self.knots, self.degree)
        self.register_buffer("lo_val", v[0].clone())
        self.register_buffer("lo_slope", (v[1] - v[0]) / h)
        self.register_buffer("hi_val", v[3].clone())
        self.register_buffer("hi_slope", (v[3] - v[2]) / h)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """(M,) doses -> (M, n_basis) basis values (dtype of u)."""
        x = u.to(torch.float64)
        inside = _bspline(x.clamp(self.lo, self.hi), self.knots, self.degree)
        below = self.lo_val + (x - self.lo)[:, None] * self.lo_slope
        above = self.hi_val + (x - self.hi)[:, None] * self.hi_slope
        out = torch.where((x < self.lo)[:, None], below, torch.where((x > self.hi)[:, None], above, inside))
        return out.to(u.dtype)


class TensorSplineBasis(nn.Module):
    """Tensor product of per-dimension ``SplineBasis1D``: (M, d) -> (M, prod n_basis_j), C order."""

    def __init__(self, bases: Sequence[SplineBasis1D]) -> None:
        super().__init__()
        self.bases = nn.ModuleList(bases)
        self.shape = tuple(b.n_basis for b in bases)
        self.n_basis = int(np.prod(self.shape))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        out = None
        for j, b in enumerate(self.bases):
            bj = b(t[:, j])
            out = bj if out is None else (out[:, :, None] * bj[:, None, :]).reshape(t.shape[0], -1)
        return out
