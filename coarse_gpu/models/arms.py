"""What every per-arm CATE model shares: the experiment's arms and the map from arms to any treatment.

A per-arm model predicts V (N, A) = mu_a(x_i) at the A experimental arms (``predict_arms``) and
extends it to treatments T (M, d) with a linear operator W (M, A) that depends only on the arms:

    predict_profit(X, T) = predict_arms(X) @ treatment_weights(T).T          (N, M)

``ArmModel`` holds that contract once, for the neural models (TARNet, DragonNet) and the
gradient-boosting learners alike: ``_set_arms`` at fit time records ``arms_``, ``arm_counts_`` and
``grid_`` (an ``ArmGrid`` when the arms form a full tensor grid, else None: then only the arms
themselves can be evaluated). The factored form (per-arm predictions, W) is what the discretizer's
lazy profit source consumes without an N x M matrix.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from coarse_gpu.models.interpolate import ArmGrid

__all__ = ["ArmModel", "as_array", "find_arms"]


def as_array(a, name: str) -> np.ndarray:
    """numpy view of an array-like, a pandas object or a (CPU/GPU) torch tensor."""
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    elif hasattr(a, "to_numpy"):  # pandas
        a = a.to_numpy()
    try:
        return np.asarray(a)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name} could not be converted to a numpy array: {err}") from err


def find_arms(treatments: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct treatment rows: (arms (A, d) lexicographically sorted, arm index (N,), counts (A,))."""
    arms, inverse, counts = np.unique(treatments, axis=0, return_inverse=True, return_counts=True)
    return arms, inverse.reshape(-1).astype(np.int64), counts


class ArmModel:
    """Mixin: arms bookkeeping and ``predict_profit`` from ``predict_arms`` (module docstring).

    Subclasses implement ``predict_arms(X) -> (N, A)`` and ``_check_fitted()``, call
    ``_set_arms(T)`` in ``fit`` and define the ``interpolation`` parameter ("linear" | "spline").
    """

    interpolation: str = "linear"

    def _set_arms(self, T: np.ndarray, min_rows: int = 2) -> np.ndarray:
        """Record the arms of the (N, d) training treatments; returns each row's arm index (N,)."""
        arms, arm, counts = find_arms(T)
        if arms.shape[0] < 2:
            raise ValueError(f"t has a single distinct value {arms[0].tolist()}: need at least 2 arms to estimate effects")
        few = np.flatnonzero(counts < min_rows)
        if few.size:
            raise ValueError(
                f"{few.size} of the {arms.shape[0]} arms have fewer than {min_rows} observations (e.g. arm "
                f"{arms[few[0]].tolist()} with {int(counts[few[0]])}); a per-arm model needs several rows per arm "
                "(is t a continuous dose? then bin it into arms first)"
            )
        self.arms_ = arms
        self.n_arms_ = int(arms.shape[0])
        self.arm_counts_ = counts.astype(np.int64)
        try:
            self.grid_: Optional[ArmGrid] = ArmGrid.from_arms(arms)
        except ValueError:
            # Not a tensor grid: predictions are fine at the arms, but there is no interpolation.
            self.grid_ = None
        return arm

    def _check_fitted(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def predict_arms(self, X) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def treatment_weights(self, T) -> np.ndarray:
        """(M, A) linear map from per-arm predictions to treatments T (M, d) (``self.interpolation``).

        With arms that are not a full tensor grid, only the arms themselves can be evaluated.
        """
        self._check_fitted()
        if self.grid_ is not None:
            return self.grid_.weights(T, self.interpolation)
        d = self.arms_.shape[1]
        t = as_array(T, "T").astype(np.float64)
        if t.ndim == 1:
            t = t.reshape(-1, 1) if d == 1 else t[None, :]
        if t.ndim != 2 or t.shape[1] != d:
            raise ValueError(f"T must be an (M, {d}) array of treatments, got shape {t.shape}")
        match = np.all(t[:, None, :] == self.arms_[None, :, :], axis=2)  # (M, A)
        missing = np.flatnonzero(~match.any(1))
        if missing.size:
            raise ValueError(
                f"the {self.n_arms_} experimental arms are not a full tensor-product grid, so the model can only "
                f"predict at the arms themselves; treatment {t[missing[0]].tolist()} (row {int(missing[0])} of T) "
                "is not an arm. Use predict_arms, or run an experiment whose arms form a grid"
            )
        return match.astype(np.float64)

    def predict_profit(self, X, T) -> np.ndarray:
        """(N, M) float64 predicted outcome of each customer at each of M treatments T, in y's units.

        T : (M, d) treatments (or, for one treatment dimension, a list of M values, e.g. [0, 1] for the
            two potential outcomes of a binary treatment). Values outside the arms' range are clipped
            to it (the experiment carries no information beyond its arms).
        Equals ``predict_arms(X) @ treatment_weights(T).T``.
        """
        W = self.treatment_weights(T)
        return self.predict_arms(X) @ W.T
