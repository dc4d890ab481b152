"""The gradient-boosting S-learner on raw doses: pi_hat(x, t) = trees([x, t]) at ANY dose t.

``GBSLearner`` (coarse_gpu.models.boosting) already fits one regressor on [x, t], but predicts through
the experiment's arms (``predict_arms``, then the arms' interpolation): with a continuously randomized
dose every customer is her own arm, and the per-arm bookkeeping refuses such data (arms with one row).
``GBSDose`` keeps the same trees and parameters and predicts at the requested doses directly, as the
dose-response networks do (``predict_profit(X, T)``, ``profit_oracle(X)``): between and beyond the
observed doses the trees are piecewise constant (a tree never extrapolates: beyond the range it gives
the edge's value). What the main job uses for ``model=gb_s`` when the data are a continuous dose
(coarse_gpu.experiment.dose).
"""
from __future__ import annotations

import numpy as np
import torch

from coarse_gpu.models.base import check_inputs, check_loss_outcome, check_treatments
from coarse_gpu.models.boosting import GBSLearner
from coarse_gpu.models.interpolate import ArmGrid

__all__ = ["GBSDose"]

#: Rows x doses predicted per call of the trees (bounds the (rows * doses, p + d) design matrix).
_BLOCK = 1 << 20


class GBSDose(GBSLearner):
    """S-learner on [x, t] predicting at any dose (module docstring); GBSLearner's parameters.

    Fitted attributes: arms_ (A, d) the distinct training doses (their range bounds what a saved policy
    may offer), arm_counts_, n_arms_, grid_, n_features_in_, n_treatment_dims_, trees_ (BoostedTrees).
    """

    def fit(self, X, t, y, propensity=None) -> "GBSDose":
        """X (N, p), t (N, d) or (N,) doses, y (N,) outcome; ``propensity`` is not needed (ignored)."""
        X, T, y, _ = check_inputs(X, t, y, None)
        check_loss_outcome(y, self.loss, "GBSDose")
        arms, counts = np.unique(T, axis=0, return_counts=True)
        if arms.shape[0] < 2:
            raise ValueError(f"t has a single distinct value {arms[0].tolist()}: need at least 2 doses")
        self.arms_, self.arm_counts_, self.n_arms_ = arms, counts.astype(np.int64), int(arms.shape[0])
        try:
            self.grid_ = ArmGrid.from_arms(arms)
        except ValueError:
            self.grid_ = None
        self.n_features_in_, self.n_treatment_dims_ = int(X.shape[1]), int(T.shape[1])
        self.trees_ = self._fit_trees(np.hstack([X, T]), y)
        return self

    def _doses(self, T) -> np.ndarray:
        self._check_fitted()
        t = T.detach().cpu().numpy() if isinstance(T, torch.Tensor) else np.asarray(T, dtype=np.float64)
        d = self.arms_.shape[1]
        t = t.reshape(-1, d) if t.ndim <= 1 else t
        if t.shape[1] != d or not np.all(np.isfinite(t)):
            raise ValueError(f"T must be finite (M, {d}) doses, got shape {t.shape}")
        return t.astype(np.float64)

    def predict_profit(self, X, T) -> np.ndarray:
        """(N, M) float64 predicted outcome of each customer at each of the M doses T (M, d)."""
        x, t = self._X(X), self._doses(T)
        n, p = x.shape
        out = np.empty((n, t.shape[0]))
        rows = max(1, _BLOCK // max(1, t.shape[0]))
        for lo in range(0, n, rows):
            xb = x[lo:lo + rows]
            z = np.hstack([np.repeat(xb, t.shape[0], axis=0), np.tile(t, (xb.shape[0], 1))])
            out[lo:lo + rows] = self.trees_.predict(z).reshape(xb.shape[0], t.shape[0])
        return self._mean(out)

    def predict_at(self, X, t) -> np.ndarray:
        """(N,) predicted outcome of customer i at her own dose t_i (t (N, d) or (N,))."""
        x = self._X(X)
        T = check_treatments(t, x.shape[0])
        return self._mean(self.trees_.predict(np.hstack([x, T])))

    def predict_arms(self, X) -> np.ndarray:
        """(N, A) predicted outcome at every distinct training dose ``arms_``."""
        return self.predict_profit(X, self.arms_)

    def profit_oracle(self, X, device=None, dtype=torch.float64):
        """Callable T (M, d) -> (N, M) tensor of pi_hat on ``device`` (the discretizer's refinement)."""
        x = self._X(X)
        dev = torch.device("cpu" if device is None else device)
        return lambda T: torch.as_tensor(self.predict_profit(x, T), dtype=dtype, device=dev)
