"""``ArmMeans``: the no-heterogeneity model -- arm means with covariate adjustment, effects constant in x.

    mu_a(x) = c_a + (x - x_mean) / x_scale . beta          (one common linear baseline, A intercepts)

fitted by ridge least squares on the standardized features and one-hot arms (the intercepts are not
penalized). Every customer's estimated profit differences between arms are the same numbers
c_a - c_b: whatever discretizer runs on it, every customer gets the same best treatment. It is what
``model=auto`` prefers, by its one-standard-error rule, when no learner's estimated heterogeneity
decides measurably better (coarse_gpu.models.select): "nothing to personalize here". The covariate
adjustment only sharpens the arm contrasts (a regression-adjusted difference in means, Lin 2013);
it cannot create heterogeneity.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from coarse_gpu.models.arms import ArmModel
from coarse_gpu.models.base import check_inputs, check_X
from coarse_gpu.models.interpolate import METHODS
from coarse_gpu.utils.params import NONNEG, check_params, choice

__all__ = ["ArmMeans"]


class ArmMeans(ArmModel, BaseEstimator):
    """Per-arm intercepts plus one common linear baseline in x (module docstring).

    Parameters: alpha (ridge penalty on the standardized slopes, >= 0), interpolation, seed (unused:
    the fit is deterministic; kept so that CrossFitted can set it).
    Fitted attributes: arms_, arm_counts_, grid_, n_features_in_, x_mean_ / x_scale_ (p,), coef_ (p,),
    intercepts_ (A,).
    """

    _parameter_constraints = {"alpha": NONNEG, "interpolation": choice(*METHODS)}

    def __init__(self, *, alpha: float = 1.0, interpolation: str = "linear", seed: int = 0) -> None:
        self.alpha = alpha
        self.interpolation = interpolation
        self.seed = seed

    def fit(self, X, t, y, propensity=None) -> "ArmMeans":
        check_params(self)
        X, T, y, _ = check_inputs(X, t, y, propensity)
        arm = self._set_arms(T)
        self.n_features_in_ = int(X.shape[1])
        self.x_mean_ = X.mean(0)
        sd = X.std(0)
        self.x_scale_ = np.where(sd > 1e-12, sd, 1.0)
        z = (X - self.x_mean_) / self.x_scale_
        # Arm intercepts are the per-arm means of y - z beta; beta from the within-arm (demeaned) ridge.
        zc, yc = z.copy(), y.copy()
        for a in range(self.n_arms_):
            rows = arm == a
            zc[rows] -= zc[rows].mean(0)
            yc[rows] -= yc[rows].mean()
        gram = zc.T @ zc + float(self.alpha) * np.eye(z.shape[1])
        self.coef_ = np.linalg.solve(gram, zc.T @ yc)
        resid = y - z @ self.coef_
        self.intercepts_ = np.array([resid[arm == a].mean() for a in range(self.n_arms_)])
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise RuntimeError("this ArmMeans is not fitted yet: call fit(X, t, y) first")

    def predict_arms(self, X) -> np.ndarray:
        """(N, A) float64: the common baseline plus each arm's intercept."""
        self._check_fitted()
        z = (check_X(X, self.n_features_in_) - self.x_mean_) / self.x_scale_
        return (z @ self.coef_)[:, None] + self.intercepts_[None, :]
