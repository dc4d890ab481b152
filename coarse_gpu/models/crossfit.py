"""Cross-fitting and ensembles of any CATE model with ``fit(X, t, y)`` / ``predict_profit(X, T)``.

``CrossFitted(model_factory, n_folds=5, n_seeds=1)``:

* ``fit(X, t, y)`` splits the rows into ``n_folds`` folds (stratified by received treatment when the
  treatments are a few arms) and fits, for every fold k and seed s, a fresh model on the OTHER folds.
* ``predict_profit_oof(T)`` (N, M): each training row scored only by the models that never saw it
  (its own fold's models, averaged over seeds) -- the estimates the discretizer and the doubly
  robust scores should use, so that no customer's profit is scored by a model fitted on it.
  ``return_std=True`` adds the spread across those seeds (zeros with one seed).
* ``predict_profit(X, T, return_std=False)`` for NEW customers: the ensemble mean over all
  n_folds x n_seeds members, and with ``return_std=True`` the standard deviation across members (a
  cheap measure of model uncertainty).
* ``predict_arms_oof()`` / ``predict_arms(X)`` likewise at the arms (for AIPW scores).

The fits share nothing: on a CPU each runs with one thread, and large ones run in parallel worker
processes (``n_jobs``, coarse_gpu.models.parallel); the models are the same either way. Network
models (TARNet, DragonNet, the dose models) are instead trained together as one batched module
(``batched=True``, coarse_gpu.models.ensemble): every fold x seed x ensemble member in one run, each
on its own rows, coming out as the same per-fold models up to float rounding.

With ``n_folds=1`` there is no cross-fitting: ``n_seeds`` models on all rows (a plain seed ensemble;
``predict_profit_oof`` then raises).

``model_factory`` is either a callable ``seed -> unfitted model`` or an unfitted scikit-learn-style
estimator (``get_params`` / ``set_params``), copied per member with ``sklearn.base.clone`` and its
``seed`` replaced. ``CrossFitted`` is itself a ``BaseEstimator`` (keyword-only parameters after the
model), so it clones too.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import numpy as np
from sklearn.base import BaseEstimator, clone
from tqdm.auto import tqdm

from coarse_gpu.models.base import check_outcome, check_treatments, check_X, find_arms
from coarse_gpu.models.ensemble import batchable, fit_batched
from coarse_gpu.models.outcome import stack_outcome
from coarse_gpu.models.parallel import auto_jobs, fit_all

__all__ = ["CrossFitted", "fold_indices"]


def fold_indices(n: int, n_folds: int, seed: int = 0, strata: Optional[np.ndarray] = None) -> np.ndarray:
    """(n,) fold id in [0, n_folds) of every row; balanced within each stratum when ``strata`` is given."""
    rng = np.random.default_rng(seed)
    fold = np.empty(n, dtype=np.int64)
    if strata is None:
        strata = np.zeros(n, dtype=np.int64)
    offset = 0
    for s in np.unique(strata):
        rows = np.flatnonzero(strata == s)
        rows = rows[rng.permutation(rows.shape[0])]
        fold[rows] = (np.arange(rows.shape[0]) + offset) % n_folds
        offset += rows.shape[0]  # rotate so that small strata do not all start in fold 0
    return fold


class CrossFitted(BaseEstimator):
    """K-fold cross-fitted (and optionally seed-ensembled) CATE model. See the module docstring.

    Parameters (all but ``model_factory`` keyword-only, as in scikit-learn's meta-estimators)
    ----------
    model_factory : callable ``seed -> model`` or an unfitted estimator (``sklearn.base.clone``d per member).
    n_folds : folds for out-of-fold predictions (>= 2), or 1 for a plain ensemble on all rows.
    n_seeds : models per fold, with seeds ``seed + 1000 * fold + s``.
    seed : fold assignment and member seeds.
    stratify : balance the received treatments across folds when there are at most
        ``max_strata`` distinct treatments (a continuous dose is not stratified).
    batched : train the members' networks as one batched module where they can be (network models
        outside torch.distributed; coarse_gpu.models.ensemble); False fits them one by one (``n_jobs``).

    Fitted attributes: models_ (list over folds of lists over seeds), fold_ (N,), n_train_, arms_
    (distinct training treatments), X_ (the training features, for the out-of-fold predictions).
    """

    def __init__(self, model_factory: Union[Callable, object] = None, *, n_folds: int = 5, n_seeds: int = 1,
                 seed: int = 0, stratify: bool = True, max_strata: int = 100, verbose: bool = False,
                 n_jobs="auto", batched: bool = True) -> None:
        self.model_factory = model_factory
        self.n_folds = n_folds
        self.n_seeds = n_seeds
        self.seed = seed
        self.stratify = stratify
        self.max_strata = max_strata
        self.verbose = verbose
        self.n_jobs = n_jobs
        self.batched = batched

    def _make(self, seed: int):
        """An unfitted member with this seed."""
        f = self.model_factory
        if hasattr(f, "get_params") and hasattr(f, "fit"):
            return clone(f).set_params(seed=seed)
        if callable(f):
            return f(seed)
        raise TypeError("model_factory must be a callable seed -> model, or an unfitted estimator with "
                        "get_params() / set_params()")

    def fit(self, X, t, y, propensity=None, *, response=None, value=None) -> "CrossFitted":
        """Fit every fold's members. ``response`` / ``value`` (N,): the behaviour of a declared profit
        structure, handed to each member as the (N, 3) structured outcome [y, response, value]
        (coarse_gpu.models.twopart.stack_outcome) -- for two-part members only."""
        if not isinstance(self.n_folds, (int, np.integer)) or self.n_folds < 1:
            raise ValueError(f"CrossFitted: n_folds must be an integer >= 1, got {self.n_folds!r}")
        if not isinstance(self.n_seeds, (int, np.integer)) or self.n_seeds < 1:
            raise ValueError(f"CrossFitted: n_seeds must be an integer >= 1, got {self.n_seeds!r}")
        X = check_X(X)
        n = X.shape[0]
        T = check_treatments(t, n)
        y = check_outcome(y, n)
        if response is not None:

            y = stack_outcome(y, response, value)
        if self.n_folds > n // 2:
            raise ValueError(f"CrossFitted: n_folds={self.n_folds} is too many for {n} rows")
        arms, arm, _ = find_arms(T)
        strata = arm if self.stratify and arms.shape[0] <= self.max_strata else None
        self.fold_ = fold_indices(n, self.n_folds, self.seed, strata) if self.n_folds > 1 else np.zeros(n, np.int64)
        p = None if propensity is None else np.asarray(propensity, dtype=np.float64)
        models, data = [], []
        for k in range(self.n_folds):
            train = np.flatnonzero(self.fold_ != k) if self.n_folds > 1 else np.arange(n)
            for s in range(self.n_seeds):
                models.append(self._make(int(self.seed) + 1000 * k + s))
                data.append((X[train], T[train], y[train], None if p is None else p[train]))
        jobs = auto_jobs(models, n) if self.n_jobs == "auto" else int(self.n_jobs)
        if jobs > 1 and not hasattr(self.model_factory, "get_params"):
            jobs = 1  # a callable factory's models may not travel to worker processes
        bar = tqdm(total=len(models), desc="folds", disable=not self.verbose, leave=False, mininterval=5.0)
        if self.batched and batchable(models):  # every network in one batched run (models/ensemble.py)
            fitted = fit_batched(models, data)
        else:
            fitted = fit_all(models, data, jobs, progress=lambda: bar.update(1))
        bar.close()
        self.models_ = [fitted[k * self.n_seeds:(k + 1) * self.n_seeds] for k in range(self.n_folds)]
        self.arms_ = arms
        self.n_train_ = n
        self.n_features_in_ = int(X.shape[1])
        self.X_ = X
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise RuntimeError("this CrossFitted is not fitted yet: call fit(X, t, y) first")

    @staticmethod
    def _mean_std(preds: list[np.ndarray], return_std: bool):
        stack = np.stack(preds, 0)
        mean = stack.mean(0)
        if not return_std:
            return mean
        std = stack.std(0, ddof=1) if stack.shape[0] > 1 else np.zeros_like(mean)
        return mean, std

    def _oof(self, predict: Callable, return_std: bool):
        self._check_fitted()
        if self.n_folds < 2:
            raise RuntimeError("out-of-fold predictions need n_folds >= 2 (n_folds=1 fits every model on all rows)")
        out_mean, out_std = None, None
        for k, members in enumerate(self.models_):
            rows = np.flatnonzero(self.fold_ == k)
            res = self._mean_std([predict(m, self.X_[rows]) for m in members], True)
            if out_mean is None:
                out_mean = np.empty((self.n_train_,) + res[0].shape[1:])
                out_std = np.empty_like(out_mean)
            out_mean[rows], out_std[rows] = res
        return (out_mean, out_std) if return_std else out_mean

    def predict_profit_oof(self, T, return_std: bool = False):
        """(N, M) out-of-fold predictions for the training rows at treatments T (and their seed spread)."""
        return self._oof(lambda m, X: m.predict_profit(X, T), return_std)

    def predict_arms_oof(self, return_std: bool = False):
        """(N, A) out-of-fold predictions at the training arms ``arms_``."""
        return self._oof(lambda m, X: m.predict_profit(X, self.arms_), return_std)

    def members(self) -> list:
        self._check_fitted()
        return [m for members in self.models_ for m in members]

    def predict_profit(self, X, T, return_std: bool = False):
        """(N, M) ensemble mean over all members for new customers X (and the std across members)."""
        return self._mean_std([m.predict_profit(X, T) for m in self.members()], return_std)

    def predict_arms(self, X, return_std: bool = False):
        """(N, A) ensemble mean at the arms ``arms_`` (and the std across members)."""
        self._check_fitted()
        members = self.members()
        same_arms = all(np.array_equal(getattr(m, "arms_", None), self.arms_) for m in members)
        if return_std or not same_arms:
            return self.predict_profit(X, self.arms_, return_std)
        return np.mean([m.predict_arms(X) for m in members], axis=0)

    # The members share the training arms: the arm-to-treatment map is theirs (per-arm members).
    @property
    def grid_(self):
        return getattr(self.members()[0], "grid_", None)

    @property
    def interpolation(self):
        return getattr(self.members()[0], "interpolation", "linear")

    @property
    def n_arms_(self) -> int:
        return int(self.arms_.shape[0])

    def treatment_weights(self, T) -> np.ndarray:
        """(M, A) map from per-arm predictions to treatments T, as the members' (see ArmModel)."""
        return self.members()[0].treatment_weights(T)
