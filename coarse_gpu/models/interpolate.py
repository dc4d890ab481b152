"""From per-arm predictions to any treatment: interpolation weights on a tensor-product grid of arms.

A CATE model with one head per experimental arm predicts V (N, A) = pi_i at the A arms. To evaluate
pi_i(t) at treatments the experiment never ran, we interpolate across arms with a *linear* operator
W (M, A) that depends only on the arms and the query treatments T (M, d):

    pi_hat(x_i, T_m) = sum_a V[i, a] * W[m, a],   i.e.   V @ W.T   (N, M).

Because W does not depend on the customer, one (M, A) matrix serves every customer (and stays on
the GPU as a small dense matrix in downstream code).

Two methods, both tensor products of 1-D operators over each treatment dimension:
  * ``"linear"``: multilinear (tent) weights, nonnegative, summing to 1, nonzero on the 2^d arms
    around T only. Safe (no overshoot) but kinked at the arms, so argmax over T lands on arms.
  * ``"spline"``: per-dimension interpolating splines (cubic with >= 4 levels, quadratic with 3,
    linear with 2). The 1-D operator is the spline that interpolates the identity matrix, so its
    column j is the cardinal spline of level j. Smooth in T, reproduces polynomials of degree <= k.
Both are exact at the arms (W is a unit row there) and clip T to the hull of the arms: the
experiment carries no information outside it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import make_interp_spline

METHODS = ("spline", "linear")


def linear_weights_1d(levels: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(M, n) piecewise-linear (tent) weights of the n sorted ``levels`` at points x (M,).

    x must already lie within [levels[0], levels[-1]]. Rows are nonnegative, sum to 1 and have at
    most two nonzero entries (the bracketing levels).
    """
    n = levels.shape[0]
    w = np.zeros((x.shape[0], n))
    if n == 1:
        w[:, 0] = 1.0
        return w
    # Index of the left bracketing level, kept in [0, n-2] so that x == levels[-1] uses the last cell.
    j = np.clip(np.searchsorted(levels, x, side="right") - 1, 0, n - 2)
    frac = (x - levels[j]) / (levels[j + 1] - levels[j])
    rows = np.arange(x.shape[0])
    w[rows, j] = 1.0 - frac
    w[rows, j + 1] = frac
    return w


def spline_weights_1d(levels: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(M, n) interpolating-spline weights of the n sorted ``levels`` at points x (M,).

    Degree k = min(3, n - 1). Column j is the cardinal spline that is 1 at levels[j] and 0 at the
    other levels, so ``values @ W.T`` is the spline through ``values`` (linear in the values).
    """
    n = levels.shape[0]
    if n == 1:
        return np.ones((x.shape[0], 1))
    spline = make_interp_spline(levels, np.eye(n), k=min(3, n - 1))
    return np.asarray(spline(x), dtype=np.float64).reshape(x.shape[0], n)


def snap_to_levels(w: np.ndarray, levels: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Replace rows of w whose point x sits on a level by the exact unit row (removes ~1e-16 spline error)."""
    j = np.clip(np.searchsorted(levels, x), 0, levels.shape[0] - 1)
    on = levels[j] == x
    if np.any(on):
        w = w.copy()
        w[on] = 0.0
        w[np.flatnonzero(on), j[on]] = 1.0
    return w


@dataclass(frozen=True)
class ArmGrid:
    """Experimental arms that form a full tensor-product grid in R^d.

    Attributes
    ----------
    arms : (A, d) float64 arms, in the caller's order (column a of every weight matrix is arm a).
    levels : tuple of d sorted 1-D float64 arrays, the distinct values of each dimension.
    multi_index : (A, d) int64, position of each arm's value in ``levels`` per dimension.
    flat_to_arm : (prod n_j,) int64, arm index of each grid cell in row-major (C) order.
    """

    arms: np.ndarray
    levels: tuple
    multi_index: np.ndarray
    flat_to_arm: np.ndarray

    @classmethod
    def from_arms(cls, arms) -> "ArmGrid":
        """Detect the per-dimension levels of (A, d) arms (1-D input = one dimension).

        Raises ValueError if the arms are not exactly the Cartesian product of their levels (each
        combination once): interpolating between arms then needs a continuous dose model instead.
        """
        a = np.asarray(arms, dtype=np.float64)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2 or a.shape[0] < 1:
            raise ValueError(f"ArmGrid: arms must be an (A, d) array, got shape {np.shape(arms)}")
        if not np.all(np.isfinite(a)):
            raise ValueError("ArmGrid: arms contain NaN or inf")
        levels = tuple(np.unique(a[:, j]) for j in range(a.shape[1]))
        shape = tuple(len(lv) for lv in levels)
        mi = np.stack([np.searchsorted(lv, a[:, j]) for j, lv in enumerate(levels)], axis=1).astype(np.int64)
        flat = np.ravel_multi_index(tuple(mi.T), shape)
        if a.shape[0] != int(np.prod(shape)) or np.unique(flat).shape[0] != a.shape[0]:
            raise ValueError(
                f"ArmGrid: the {a.shape[0]} arms are not a full tensor-product grid of their levels "
                f"(levels per dimension: {list(shape)}, product {int(np.prod(shape))}, duplicates or missing "
                "combinations); interpolating between such arms needs a continuous dose model, not per-arm heads"
            )
        flat_to_arm = np.empty(a.shape[0], dtype=np.int64)
        flat_to_arm[flat] = np.arange(a.shape[0])
        return cls(arms=a, levels=levels, multi_index=mi, flat_to_arm=flat_to_arm)

    @property
    def n_arms(self) -> int:
        return int(self.arms.shape[0])

    @property
    def dim(self) -> int:
        return int(self.arms.shape[1])

    @property
    def low(self) -> np.ndarray:
        """(d,) lowest level per dimension."""
        return np.array([lv[0] for lv in self.levels])

    @property
    def high(self) -> np.ndarray:
        """(d,) highest level per dimension."""
        return np.array([lv[-1] for lv in self.levels])

    def as_treatments(self, T) -> np.ndarray:
        """Coerce T to an (M, d) float64 array.

        Accepts numpy arrays, lists and torch tensors. With d = 1 a flat list [t_1, ..., t_M] is M
        treatments; with d > 1 a flat list of length d is one treatment.
        """
        if hasattr(T, "detach"):  # torch tensor, without importing torch here
            T = T.detach().cpu().numpy()
        t = np.asarray(T, dtype=np.float64)
        if t.ndim == 0 or (t.ndim == 1 and self.dim == 1):
            t = t.reshape(-1, 1)
        elif t.ndim == 1 and t.shape[0] == self.dim:
            t = t[None, :]
        if t.ndim != 2 or t.shape[1] != self.dim:
            raise ValueError(f"T must be an (M, {self.dim}) array of treatments, got shape {np.shape(T)}")
        if not np.all(np.isfinite(t)):
            raise ValueError("T contains NaN or inf")
        return t

    def weights(self, T, method: str = "spline") -> np.ndarray:
        """(M, A) float64 interpolation matrix W: per-arm values V (N, A) give ``V @ W.T`` (N, M) at T.

        T : (M, d) treatments (see ``as_treatments`` for accepted forms), clipped to the arms' hull.
        method : "spline" (tensor-product interpolating splines) or "linear" (multilinear / tent).
        At an arm, the row of W is exactly the unit vector of that arm.
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        t = np.clip(self.as_treatments(T), self.low, self.high)
        one_d = linear_weights_1d if method == "linear" else spline_weights_1d
        per_dim = [snap_to_levels(one_d(lv, t[:, j]), lv, t[:, j]) for j, lv in enumerate(self.levels)]
        # Tensor product: the weight of arm a is the product over dimensions of its level's weight.
        w = np.ones((t.shape[0], self.n_arms))
        for j, wj in enumerate(per_dim):
            w *= wj[:, self.multi_index[:, j]]
        return w

    def arm_index(self, t) -> np.ndarray:
        """(N,) int64 arm index of N treatments (N, d) that are exactly arms (1-D input if d = 1).

        Raises ValueError naming the first row that is not an arm.
        """
        x = np.asarray(t, dtype=np.float64)
        if x.ndim == 1 and self.dim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"arm_index: treatments must have shape (N, {self.dim}), got {np.shape(t)}")
        pos, ok = [], np.ones(x.shape[0], dtype=bool)
        for j, lv in enumerate(self.levels):
            k = np.clip(np.searchsorted(lv, x[:, j]), 0, lv.shape[0] - 1)
            ok &= lv[k] == x[:, j]
            pos.append(k)
        if not np.all(ok):
            bad = int(np.flatnonzero(~ok)[0])
            raise ValueError(
                f"arm_index: row {bad} treatment {x[bad].tolist()} is not one of the {self.n_arms} arms"
            )
        shape = tuple(len(lv) for lv in self.levels)
        return self.flat_to_arm[np.ravel_multi_index(tuple(pos), shape)]
