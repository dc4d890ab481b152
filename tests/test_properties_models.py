"""Properties of step 1's plumbing: cross-fitting folds, fold membership, input scaling, interpolation.

* balance: ``fold_indices`` splits every stratum AND the whole sample as evenly as possible, whatever the
  strata (many one-row strata included: they rotate over the folds instead of piling into fold 0);
* membership: the members of fold k trained on exactly the rows outside fold k (a hand-written
  cross-fit: a recording model sees its training rows), and out-of-fold predictions come from them;
* scaling: the network inputs of the training rows are centred and unit-scaled whatever the columns'
  units, constant columns map to 0, heavy-tailed columns too;
* interpolation: tent weights reproduce a linear function of the treatment exactly, on every cell.
``scripts/mutation_check.py`` plants the bugs these catch ("m15".."m19").
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator

from coarse_gpu.models import CrossFitted
from coarse_gpu.models.crossfit import fold_indices
from coarse_gpu.models.interpolate import linear_weights_1d
from coarse_gpu.models.scaling import apply_scaling, fit_scaling

FAST = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

strata_lists = st.lists(st.integers(0, 30), min_size=2, max_size=120)


# ---- folds ------------------------------------------------------------------------------------
@FAST
@given(strata=strata_lists, n_folds=st.integers(2, 7), seed=st.integers(0, 2 ** 20))
def test_folds_are_balanced_within_every_stratum_and_overall(strata, n_folds, seed):
    s = np.asarray(strata)
    n = s.shape[0]
    f = fold_indices(n, n_folds, seed=seed, strata=s)
    assert f.shape == (n,) and f.min() >= 0 and f.max() < n_folds
    for v in np.unique(s):
        c = np.bincount(f[s == v], minlength=n_folds)
        assert c.max() - c.min() <= 1, (v, c)
    total = np.bincount(f, minlength=n_folds)
    # the strata are laid end to end over the folds: the whole sample is as balanced as one stratum
    assert total.max() - total.min() <= 1, total
    if n >= n_folds:
        assert np.all(total > 0)
    np.testing.assert_array_equal(fold_indices(n, n_folds, seed=seed, strata=s), f)  # reproducible


@FAST
@given(n=st.integers(4, 60), n_folds=st.integers(2, 6), seed=st.integers(0, 2 ** 20))
def test_one_row_strata_spread_over_the_folds(n, n_folds, seed):
    """Every customer its own stratum (e.g. a continuous dose stratified by mistake): still k-fold."""
    f = fold_indices(n, n_folds, seed=seed, strata=np.arange(n))
    c = np.bincount(f, minlength=n_folds)
    assert c.max() - c.min() <= 1, c


class Recorder(BaseEstimator):
    """A fake model that remembers the ids (column 0) of its training rows; it predicts the id."""

    def __init__(self, *, seed=0):
        self.seed = seed

    def fit(self, X, t, y, propensity=None):
        self.rows_ = np.sort(np.asarray(X)[:, 0].astype(int))
        return self

    def predict_profit(self, X, T):
        return np.repeat(np.asarray(X)[:, :1].astype(float), len(np.atleast_1d(T)), axis=1) + 1e3 * self.seed


@FAST
@given(n=st.integers(8, 80), n_folds=st.integers(2, 4), n_seeds=st.integers(1, 2), n_arms=st.integers(2, 4),
       seed=st.integers(0, 1000))
def test_a_member_never_trains_on_its_own_held_out_fold(n, n_folds, n_seeds, n_arms, seed):
    X = np.c_[np.arange(n), np.zeros(n)]
    t = np.random.default_rng(seed).integers(0, n_arms, n)
    t[:n_arms] = np.arange(n_arms)  # every arm present
    cf = CrossFitted(Recorder(), n_folds=n_folds, n_seeds=n_seeds, seed=seed).fit(X, t, np.zeros(n))
    assert len(cf.models_) == n_folds and all(len(m) == n_seeds for m in cf.models_)
    for k, members in enumerate(cf.models_):
        outside = np.flatnonzero(cf.fold_ != k)
        for m in members:
            np.testing.assert_array_equal(m.rows_, outside)  # exactly the other folds' rows, each once
    # out-of-fold predictions of fold k's rows are the mean of fold k's members (the id + their seeds)
    oof = cf.predict_profit_oof([0.0])[:, 0]
    for k, members in enumerate(cf.models_):
        rows = cf.fold_ == k
        np.testing.assert_allclose(oof[rows], np.arange(n)[rows] + 1e3 * np.mean([m.seed for m in members]))


# ---- scaling ------------------------------------------------------------------------------------
@FAST
@given(seed=st.integers(0, 2 ** 20), n=st.integers(30, 300), units=st.floats(1e-3, 1e4), shift=st.floats(-1e4, 1e4),
       transform=st.sampled_from(["auto", "standard"]))
def test_network_inputs_are_centred_unit_scaled_and_unit_free(seed, n, units, shift, transform):
    rng = np.random.default_rng(seed)
    X = np.c_[rng.normal(size=n), rng.lognormal(0.0, 2.0, n), np.full(n, 7.0), rng.integers(0, 2, n)]
    X[:2, 3] = [0, 1]  # both levels present
    st_ = fit_scaling(X, transform)
    Z = apply_scaling(X, st_["x_mean_"], st_["x_scale_"], st_["x_log_"], st_["x_center_"], st_["x_spread_"])
    assert np.all(np.isfinite(Z))
    np.testing.assert_allclose(Z[:, 2], 0.0)  # a constant column carries no information: 0, not NaN
    live = [0, 3, 1] if transform == "auto" else [0, 3]  # "standard" clips the log-normal's tail at 8 sd
    np.testing.assert_allclose(Z[:, live].astype(np.float64).mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(Z[:, live].astype(np.float64).std(0), 1.0, atol=1e-5)
    assert st_["x_log_"][1] == (transform == "auto") and not st_["x_log_"][[0, 2, 3]].any()
    order = np.argsort(X[:, 1], kind="stable")
    assert np.all(np.diff(Z[order, 1]) >= 0)  # the squash keeps the customers' order
    # the same customers in other units (income in thousands, a shifted origin) give the same inputs
    X2 = X.copy()
    X2[:, 0] = X[:, 0] * units + shift
    X2[:, 1] = X[:, 1] * units
    st2 = fit_scaling(X2, transform)
    Z2 = apply_scaling(X2, st2["x_mean_"], st2["x_scale_"], st2["x_log_"], st2["x_center_"], st2["x_spread_"])
    np.testing.assert_allclose(Z2, Z, atol=2e-3)


# ---- interpolation ------------------------------------------------------------------------------
@FAST
@given(levels=st.lists(st.floats(-10, 10), min_size=2, max_size=6, unique=True), seed=st.integers(0, 2 ** 20))
def test_tent_weights_reproduce_linear_functions_on_every_cell(levels, seed):
    lv = np.sort(np.asarray(levels))
    if np.min(np.diff(lv)) < 1e-3:
        return
    x = np.r_[lv, np.random.default_rng(seed).uniform(lv[0], lv[-1], 20)]  # the levels themselves included
    w = linear_weights_1d(lv, x)
    assert np.all(w >= -1e-12) and np.allclose(w.sum(1), 1.0)
    np.testing.assert_allclose(w @ lv, x, atol=1e-9)  # a linear function is interpolated exactly
    np.testing.assert_allclose(w[: len(lv)], np.eye(len(lv)), atol=1e-12)  # a unit row at every level
    assert np.all((w > 1e-12).sum(1) <= 2)
