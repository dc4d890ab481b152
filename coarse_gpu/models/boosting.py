"""Gradient-boosting CATE learners with the neural models' contract: S-, T- and DR-learner.

All three fit ``fit(X, t, y, propensity=None)`` on a randomized experiment and predict the outcome
at every experimental arm (``predict_arms`` (N, A)); ``predict_profit(X, T)`` extends that to any
treatment with the same interpolation across arms as TARNet (``ArmModel``). The base learner is
scikit-learn's ``HistGradientBoostingRegressor`` with its defaults (the bar a new user would try
first); each fitted ensemble is kept as plain arrays (``BoostedTrees``) so saved policies load
without pickle.

``GBSLearner`` (S-learner): one regressor on [x, t] -- the treatment is a feature, so arms share
    every split that does not involve t, and t can be any numeric vector.
``GBTLearner`` (T-learner): one regressor per arm on that arm's rows only.
``DRLearner`` (DR-learner, Kennedy 2023, for A arms): cross-fitted T-learner outcome models give
    AIPW pseudo-outcomes Gamma_ia = mu_a(x_i) + 1{a_i = a}/e_i (y_i - mu_a(x_i)) (N, A); the effect
    of each arm against the reference arm r (the first, i.e. the lowest treatment) is a regression of
    Gamma_a - Gamma_r on x, and the reference level mu_r(x) is a regression on arm r's own rows:
    predict_arms = mu_r(x) + [tau_a(x)]_a. With known propensities (an experiment) the pseudo-outcome
    is unbiased for the effect whatever the outcome models' errors, which is what protects the
    effects from the outcome models' regularization bias.
Propensities: the probability of the received arm; None = the arm's share of the rows (a
completely randomized experiment).

``loss`` (S- and T-learner): "mse" (default, squared error: the mean outcome), "bce" (a 0/1 outcome:
``HistGradientBoostingClassifier``, predictions are probabilities), "poisson" (a count: the mean
count) or "gamma" (a positive amount: the mean amount). With "bce", "poisson" and "gamma" the trees
fit the log-odds / log-mean and predictions go through the inverse link; these are the response and
value parts of ``coarse_gpu.models.twopart.TwoPart``.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from coarse_gpu.models.arms import ArmModel
from coarse_gpu.models.base import check_inputs, check_loss_outcome, check_X
from coarse_gpu.models.crossfit import CrossFitted
from coarse_gpu.models.interpolate import METHODS
from coarse_gpu.models.trees import BoostedTrees
from coarse_gpu.utils.params import NONNEG, POSITIVE, check_params, choice, integer

__all__ = ["BOOSTING_LOSSES", "DRLearner", "GBSLearner", "GBTLearner"]

#: Outcome losses of the boosting learners (module docstring) -> scikit-learn's loss name.
BOOSTING_LOSSES = {"mse": "squared_error", "bce": "log_loss", "poisson": "poisson", "gamma": "gamma"}


def inverse_link(raw: np.ndarray, loss: str) -> np.ndarray:
    """The mean outcome from the trees' raw sum: identity (mse), sigmoid (bce), exp (poisson, gamma)."""
    if loss == "bce":
        return 1.0 / (1.0 + np.exp(-raw))
    if loss in ("poisson", "gamma"):
        return np.exp(raw)
    return raw


class _Constant:
    """A fitted-estimator stand-in with no trees and a constant raw prediction (``BoostedTrees`` reads it)."""

    def __init__(self, raw: float, n_features: int) -> None:
        self._predictors = []
        self._baseline_prediction = np.array([[raw]])
        self.n_features_in_ = n_features


class _Boosted(ArmModel, BaseEstimator):
    """Shared parameters, validation and bookkeeping of the boosting learners.

    Parameters (HistGradientBoostingRegressor's, same defaults)
    ----------
    learning_rate, max_iter, max_leaf_nodes, min_samples_leaf, l2_regularization :
        of every regressor the learner fits.
    early_stopping : "auto" (on above 10,000 rows, on a 10 % validation split), True or False.
    interpolation : "linear" | "spline", how per-arm predictions extend to any t (``ArmModel``).
    seed : random_state of every regressor (and of the DR-learner's folds).
    """

    #: Each parameter's allowed values, stated once (``fit`` and the config check of ``model.*`` read them).
    _parameter_constraints = {"learning_rate": POSITIVE, "max_iter": integer(1), "max_leaf_nodes": integer(2),
                              "min_samples_leaf": integer(1), "l2_regularization": NONNEG,
                              "interpolation": choice(*METHODS), "loss": choice(*BOOSTING_LOSSES)}

    def __init__(self, *, learning_rate: float = 0.1, max_iter: int = 100, max_leaf_nodes: int = 31,
                 min_samples_leaf: int = 20, l2_regularization: float = 0.0, early_stopping="auto",
                 interpolation: str = "linear", seed: int = 0, loss: str = "mse") -> None:
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.early_stopping = early_stopping
        self.interpolation = interpolation
        self.seed = seed
        self.loss = loss

    def _regressor(self, salt: int = 0):
        kw = dict(learning_rate=self.learning_rate, max_iter=self.max_iter, max_leaf_nodes=self.max_leaf_nodes,
                  min_samples_leaf=self.min_samples_leaf, l2_regularization=self.l2_regularization,
                  early_stopping=self.early_stopping, random_state=int(self.seed) + salt)
        loss = getattr(self, "loss", "mse")
        if loss == "bce":
            return HistGradientBoostingClassifier(**kw)
        return HistGradientBoostingRegressor(loss=BOOSTING_LOSSES[loss], **kw)

    def _fit_trees(self, X: np.ndarray, y: np.ndarray, salt: int = 0) -> BoostedTrees:
        if getattr(self, "loss", "mse") == "bce" and np.unique(y).shape[0] < 2:
            # one class only (an arm where nobody bought): a constant log-odds, clipped off +-inf
            p = float(np.clip(y.mean(), 1e-4, 1 - 1e-4))
            return BoostedTrees.from_estimator(_Constant(np.log(p / (1 - p)), X.shape[1]))
        return BoostedTrees.from_estimator(self._regressor(salt).fit(X, y))

    def _mean(self, raw: np.ndarray) -> np.ndarray:
        return inverse_link(raw, getattr(self, "loss", "mse"))

    def _validate(self, X, t, y, propensity):
        name = type(self).__name__
        check_params(self)  # the ranges in _parameter_constraints (coarse_gpu.utils.params)
        X, T, y, e = check_inputs(X, t, y, propensity)
        check_loss_outcome(y, self.loss, name)
        arm = self._set_arms(T)
        self.n_features_in_ = int(X.shape[1])
        return X, T, y, e, arm

    def _check_fitted(self) -> None:
        if not hasattr(self, "arms_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet: call fit(X, t, y) first")

    def _X(self, X) -> np.ndarray:
        self._check_fitted()
        return check_X(X, self.n_features_in_)


class GBSLearner(_Boosted):
    """S-learner: one gradient-boosting regressor on [x, t] (module docstring).

    Fitted attributes: arms_, arm_counts_, grid_, n_features_in_, trees_ (BoostedTrees).
    """

    def fit(self, X, t, y, propensity=None) -> "GBSLearner":
        X, T, y, _, _ = self._validate(X, t, y, propensity)
        self.trees_ = self._fit_trees(np.hstack([X, T]), y)
        return self

    def predict_arms(self, X) -> np.ndarray:
        """(N, A) float64 predicted outcome at every arm ``arms_``."""
        x = self._X(X)
        n, d = x.shape[0], self.arms_.shape[1]
        out = np.empty((n, self.n_arms_))
        z = np.empty((n, x.shape[1] + d))
        z[:, : x.shape[1]] = x
        for a in range(self.n_arms_):
            z[:, x.shape[1]:] = self.arms_[a]
            out[:, a] = self.trees_.predict(z)
        return self._mean(out)


class GBTLearner(_Boosted):
    """T-learner: one gradient-boosting regressor per arm, on that arm's rows (module docstring).

    Fitted attributes: arms_, arm_counts_, grid_, n_features_in_, trees_ (list of A BoostedTrees).
    """

    def fit(self, X, t, y, propensity=None) -> "GBTLearner":
        X, _, y, _, arm = self._validate(X, t, y, propensity)
        self.trees_ = [self._fit_trees(X[arm == a], y[arm == a], salt=a) for a in range(self.n_arms_)]
        return self

    def predict_arms(self, X) -> np.ndarray:
        """(N, A) float64 predicted outcome at every arm ``arms_``."""
        x = self._X(X)
        return self._mean(np.stack([tr.predict(x) for tr in self.trees_], axis=1))


class DRLearner(_Boosted):
    """DR-learner over A arms with gradient-boosting nuisance and effect models (module docstring).

    Extra parameter: n_folds, folds of the cross-fitted outcome models that build the pseudo-outcomes.
    Fitted attributes: arms_, arm_counts_, grid_, n_features_in_, base_ (BoostedTrees of the
    reference arm's level), effects_ (list of A - 1 BoostedTrees, arms 1..A-1 against arm 0).
    """

    def __init__(self, *, n_folds: int = 5, learning_rate: float = 0.1, max_iter: int = 100,
                 max_leaf_nodes: int = 31, min_samples_leaf: int = 20, l2_regularization: float = 0.0,
                 early_stopping="auto", interpolation: str = "linear", seed: int = 0, loss: str = "mse") -> None:
        super().__init__(learning_rate=learning_rate, max_iter=max_iter, max_leaf_nodes=max_leaf_nodes,
                         min_samples_leaf=min_samples_leaf, l2_regularization=l2_regularization,
                         early_stopping=early_stopping, interpolation=interpolation, seed=seed, loss=loss)
        self.n_folds = n_folds

    def fit(self, X, t, y, propensity=None) -> "DRLearner":
        if not isinstance(self.n_folds, (int, np.integer)) or self.n_folds < 2:
            raise ValueError(f"DRLearner: n_folds must be an integer >= 2, got {self.n_folds!r}")
        if self.loss != "mse":
            raise ValueError(f"DRLearner: loss must be 'mse' (its effects are differences), got {self.loss!r}")
        X, T, y, e, arm = self._validate(X, t, y, propensity)
        if e is None:  # completely randomized: the received arm's share of the rows
            e = (self.arm_counts_ / arm.shape[0])[arm]
        outcome = GBTLearner(**{k: v for k, v in self.get_params().items() if k != "n_folds"})
        cf = CrossFitted(outcome, n_folds=self.n_folds, seed=int(self.seed)).fit(X, T, y)
        mu = cf.predict_arms_oof()  # (N, A): no row's own outcome shaped its prediction
        rows = np.arange(arm.shape[0])
        gamma = mu.copy()
        gamma[rows, arm] += (y - mu[rows, arm]) / e
        self.base_ = self._fit_trees(X[arm == 0], y[arm == 0])
        self.effects_ = [self._fit_trees(X, gamma[:, a] - gamma[:, 0], salt=a) for a in range(1, self.n_arms_)]
        return self

    def predict_arms(self, X) -> np.ndarray:
        """(N, A) float64: reference level plus each arm's estimated effect against it."""
        x = self._X(X)
        base = self.base_.predict(x)
        return np.stack([base] + [base + tr.predict(x) for tr in self.effects_], axis=1)
