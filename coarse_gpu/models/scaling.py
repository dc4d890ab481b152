"""Input scaling of the neural models: standardize, and tame heavy-tailed columns first.

Customer data is full of skewed columns (spend, counts, tenure in days, incomes). Standardized as
they are, a few extreme rows dominate the first layer's inputs and the network spends its capacity
on them. ``transform="auto"`` therefore squashes a column before standardizing when it is heavy
tailed on the training rows (|skewness| >= 2 or excess kurtosis >= 10, with more than two distinct
values): z = (x - median) / s, x' = sign(z) log1p(|z|), with s the scaled IQR (or the sd when the IQR
is 0). The map is monotone, linear near the median and logarithmic in the tails, so it keeps order
and small differences; Gaussian-like, binary and one-hot columns are left alone. Then every column
is standardized (constant columns get scale 1) and clipped to +-``CLIP`` sd, which bounds what an
outlier among new customers can do to a prediction.

State: ``x_log_`` (p,) bool mask of squashed columns, ``x_center_`` / ``x_spread_`` (p,) the
squash's median and scale, ``x_mean_`` / ``x_scale_`` (p,) the standardization; models saved before
this module existed have only the last two, which is the plain standardization.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["CLIP", "TRANSFORMS", "fit_scaling", "apply_scaling"]

TRANSFORMS = ("auto", "standard")
CLIP = 8.0


def _heavy_tailed(x: np.ndarray) -> np.ndarray:
    """(p,) bool: columns with |skewness| >= 2 or excess kurtosis >= 10 and more than 2 distinct values."""
    mu = x.mean(0)
    sd = x.std(0)
    ok = sd > 1e-12 * np.maximum(1.0, np.abs(mu))
    z = (x - mu) / np.where(ok, sd, 1.0)
    skew = (z ** 3).mean(0)
    kurt = (z ** 4).mean(0) - 3.0
    many = np.array([np.unique(x[:, j][:1000]).shape[0] > 2 or np.unique(x[:, j]).shape[0] > 2
                     for j in range(x.shape[1])])
    return ok & many & ((np.abs(skew) >= 2.0) | (kurt >= 10.0))


def _squash(x: np.ndarray, center: np.ndarray, spread: np.ndarray) -> np.ndarray:
    z = (x - center) / spread
    return np.sign(z) * np.log1p(np.abs(z))


def fit_scaling(X: np.ndarray, transform: str = "auto") -> dict[str, np.ndarray]:
    """Scaling state for the (N, p) float64 training matrix (module docstring)."""
    if transform not in TRANSFORMS:
        raise ValueError(f"x_transform must be one of {TRANSFORMS}, got {transform!r}")
    p = X.shape[1]
    log = _heavy_tailed(X) if transform == "auto" else np.zeros(p, dtype=bool)
    center = np.zeros(p)
    spread = np.ones(p)
    if log.any():
        cols = np.flatnonzero(log)
        q25, q50, q75 = np.quantile(X[:, cols], [0.25, 0.5, 0.75], axis=0)
        s = (q75 - q25) / 1.349
        sd = X[:, cols].std(0)
        center[cols] = q50
        spread[cols] = np.where(s > 1e-12 * np.maximum(1.0, np.abs(q50)), s, np.where(sd > 0, sd, 1.0))
    Z = X.copy()
    if log.any():
        Z[:, log] = _squash(X[:, log], center[log], spread[log])
    mean = Z.mean(0)
    sd = Z.std(0)
    scale = np.where(sd > 1e-12 * np.maximum(1.0, np.abs(mean)), sd, 1.0)
    return {"x_log_": log, "x_center_": center, "x_spread_": spread, "x_mean_": mean, "x_scale_": scale}


def apply_scaling(X: np.ndarray, x_mean: np.ndarray, x_scale: np.ndarray, x_log: Optional[np.ndarray] = None,
                  x_center: Optional[np.ndarray] = None, x_spread: Optional[np.ndarray] = None) -> np.ndarray:
    """(N, p) float32 network input from the (N, p) float64 matrix X and a ``fit_scaling`` state."""
    if x_log is not None and np.any(x_log):
        log = np.asarray(x_log).astype(bool)
        X = X.copy()
        X[:, log] = _squash(X[:, log], np.asarray(x_center)[log], np.asarray(x_spread)[log])
    return np.clip((X - x_mean) / x_scale, -CLIP, CLIP).astype(np.float32)
