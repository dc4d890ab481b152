"""Cross-fitting and ensembles (coarse_gpu.models.crossfit) and AIPW scores (coarse_gpu.models.scores)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator

from coarse_gpu.evaluate.dr import dr_scores
from coarse_gpu.models import CrossFitted, DoseVC, TARNet, aipw_scores, model_aipw_scores
from coarse_gpu.models.crossfit import fold_indices
from coarse_gpu.models.scores import aipw_ate

FAST = dict(hidden=16, n_repr_layers=1, n_head_layers=1, batch_size=128, max_epochs=30, patience=5, lr=3e-3,
            device="cpu", n_ensemble=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def binary():
    """y = x0 + t (1 + x1) + N(0, 0.5^2), t ~ Bernoulli(1/2): ATE 1, CATE 1 + x1."""
    rng = np.random.default_rng(0)
    n = 1200
    X = rng.standard_normal((n, 3)).astype(np.float32)
    t = rng.integers(0, 2, n)
    y = X[:, 0] + t * (1 + X[:, 1]) + 0.5 * rng.standard_normal(n)
    return X, t, y


class Recorder(BaseEstimator):
    """A fake model that remembers which rows it was fitted on and predicts their count."""

    def __init__(self, *, seed=0):
        self.seed = seed

    def fit(self, X, t, y, propensity=None):
        self.rows_ = set(np.asarray(X)[:, 0].astype(int).tolist())
        return self

    def predict_profit(self, X, T):
        ids = np.asarray(X)[:, 0].astype(int)
        seen = np.array([i in self.rows_ for i in ids], dtype=float)
        return np.repeat(seen[:, None], len(np.atleast_1d(T)), axis=1) + (self.seed % 2) * 1e-3


def test_out_of_fold_rows_never_scored_by_a_model_that_saw_them():
    n = 100
    X = np.c_[np.arange(n), np.zeros(n)]
    t = np.arange(n) % 2
    cf = CrossFitted(Recorder(), n_folds=5, n_seeds=2, seed=1).fit(X, t, np.zeros(n))
    oof, sd = cf.predict_profit_oof([0, 1], return_std=True)
    assert oof.shape == (n, 2) and np.all(oof < 0.5)  # 0 = "not seen" (plus the seed offset)
    assert np.all(sd > 0)  # two seeds differ
    assert np.bincount(cf.fold_).tolist() == [20] * 5
    # for new customers the ensemble averages all 10 members: each training row was seen by 4 of 5 folds
    mean, std = cf.predict_profit(X, [0], return_std=True)
    np.testing.assert_allclose(mean[:, 0], 0.8 + 0.5e-3)
    np.testing.assert_allclose(oof, 0.5e-3)
    assert np.all(std > 0)


def test_fold_indices_balanced_within_strata():
    strata = np.r_[np.zeros(30, int), np.ones(12, int)]
    f = fold_indices(42, 3, seed=0, strata=strata)
    for s in (0, 1):
        counts = np.bincount(f[strata == s], minlength=3)
        assert counts.max() - counts.min() <= 1


def test_crossfit_tarnet_oof_accuracy_and_aipw(binary):
    X, t, y = binary
    cf = CrossFitted(TARNet(**dict(FAST, n_head_layers=2, hidden=32)), n_folds=3, n_seeds=1, seed=0).fit(X, t, y)
    mu = cf.predict_arms_oof()
    assert mu.shape == (len(y), 2)
    cate = mu[:, 1] - mu[:, 0]
    true = 1 + X[:, 1]
    assert np.corrcoef(cate, true)[0, 1] > 0.8
    # AIPW pseudo-outcomes: the ATE estimate covers 1 and its se is sensible
    e = np.full(len(y), 0.5)
    G = aipw_scores(y, t, e, mu)
    ate, se = aipw_ate(G, 1, 0)
    assert abs(ate - 1.0) < 3 * se + 0.05 and 0.01 < se < 0.1, (ate, se)
    # reuses the evaluation module's policy score (unit kappa): column a == dr_scores at arm a
    k1 = np.tile([0.0, 1.0], (len(y), 1))
    np.testing.assert_allclose(G[:, 1], dr_scores(y, t, e, mu, mu[:, 1], k1))
    # the model-level helper maps treatments to arms and uses empirical propensities by default
    G2 = model_aipw_scores(cf.members()[0], X, t, y, mu_arms=mu)
    np.testing.assert_allclose(G2, aipw_scores(y, t, np.bincount(t)[t] / len(t), mu))
    # ensemble for new rows: mean and a positive spread across the 3 fold models
    m, s = cf.predict_profit(X[:50], [0, 1], return_std=True)
    assert m.shape == s.shape == (50, 2) and np.all(s > 0)


def test_aipw_unbiased_when_outcome_model_is_wrong(binary):
    """With known propensities AIPW arm means are right even for mu = 0 (IPW)."""
    X, t, y = binary
    G = aipw_scores(y, t, np.full(len(y), 0.5), np.zeros((len(y), 2)))
    ate, se = aipw_ate(G, 1, 0)
    assert abs(ate - 1.0) < 3 * se, (ate, se)


def test_crossfit_works_with_a_dose_model_and_factory():
    rng = np.random.default_rng(2)
    n = 600
    X = rng.standard_normal((n, 2)).astype(np.float32)
    t = rng.uniform(0, 1, n)  # a continuous dose: every row its own value
    y = X[:, 0] * t + 0.1 * rng.standard_normal(n)
    cf = CrossFitted(lambda seed: DoseVC(n_basis=3, seed=seed, **FAST), n_folds=2).fit(X, t, y)
    assert cf.predict_profit_oof([0.0, 0.5, 1.0]).shape == (n, 3)


def test_crossfit_errors(binary):
    X, t, y = binary
    with pytest.raises(RuntimeError, match="not fitted"):
        CrossFitted(TARNet(**FAST)).predict_profit(X, [0, 1])
    with pytest.raises(ValueError, match="n_folds"):
        CrossFitted(TARNet(**FAST), n_folds=0).fit(X, t, y)
    cf = CrossFitted(Recorder(), n_folds=1).fit(np.c_[np.arange(10), np.zeros(10)], np.arange(10) % 2, np.zeros(10))
    with pytest.raises(RuntimeError, match="n_folds >= 2"):
        cf.predict_profit_oof([0])
    with pytest.raises(ValueError, match="not one of the model's"):
        model_aipw_scores(_Armed(), X[:3], [0, 1, 5], y[:3])


class _Armed:
    arms_ = np.array([[0.0], [1.0]])

    def predict_arms(self, X):
        return np.zeros((len(X), 2))
