"""The simulated promotions experiment: documented formulas, unbiased outcomes, randomization, difficulty."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from coarse_gpu.data import PromotionsSimulator
from coarse_gpu.evaluate import oracle_control_value, oracle_full_personalization, oracle_value, share_of_full
from coarse_gpu.policy import full_personalization, kmeans_features, single_best


def sigma(z):
    return 1.0 / (1.0 + np.exp(-z))


def documented_parameters(df, beta_max=15.0, gamma_max=2.0, k=4.0):
    """The module docstring's formulas, written out independently of the simulator's code."""
    r, f, m, ten, age = (df[c].to_numpy(float) for c in ("recency", "frequency", "monetary", "tenure", "age"))
    gold = (df["tier"] == "gold").to_numpy(float)
    silver = (df["tier"] == "silver").to_numpy(float)
    app = (df["channel"] == "app").to_numpy(float)
    web = (df["channel"] == "web").to_numpy(float)
    store = (df["channel"] == "store").to_numpy(float)
    north = (df["region"] == "north").to_numpy(float)
    v = np.exp(3.3 + 0.35 * m + 0.25 * gold + 0.10 * silver)
    alpha = -1.2 + 0.6 * f - 0.5 * r + 0.3 * app + 0.4 * gold
    beta = beta_max * sigma(k * (-0.5 + 1.3 * r - 0.9 * m + 0.7 * web - 0.6 * gold + 0.5 * age * ten))
    gamma = gamma_max * sigma(k * (-0.3 + 1.2 * ten - 0.8 * f + 0.8 * store + 0.5 * north))
    return v, alpha, beta, gamma


def test_true_profit_matches_documented_formula_off_the_arms():
    sim = PromotionsSimulator(n_customers=2000, seed=1)
    data = sim.sample()
    truth = data.truth
    v, alpha, beta, gamma = documented_parameters(data.features)
    np.testing.assert_allclose(truth.basket_value, v, rtol=1e-12)
    np.testing.assert_allclose(truth.alpha, alpha, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(truth.beta, beta, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(truth.gamma, gamma, rtol=1e-12, atol=1e-12)
    rng = np.random.default_rng(0)
    T = np.stack([rng.uniform(0, 0.5, 7), rng.uniform(0, 4, 7)], axis=1)  # random, off the arms
    delta, s = T[None, :, 0], T[None, :, 1]
    P = sigma(alpha[:, None] + beta[:, None] * delta + gamma[:, None] * np.log(1.0 + s))
    pi = v[:, None] * (0.5 - delta) * P - 0.35 * s  # margin 0.5, contact cost 0.35 (defaults)
    np.testing.assert_allclose(truth.profit(T), pi, rtol=1e-10, atol=1e-10)
    rows = np.array([3, 10, 1999])
    np.testing.assert_allclose(truth.profit(T, rows=rows), pi[rows], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(truth.purchase_probability(T), P, rtol=1e-10)


def test_mean_outcome_per_arm_converges_to_mean_true_profit():
    n = 150_000
    sim = PromotionsSimulator(n_customers=n, seed=2)
    data = sim.sample()
    truth = data.truth
    rows = np.arange(n)
    pi = truth.profit(data.arms)[rows, data.arm]
    P = truth.purchase_probability(data.arms)[rows, data.arm]
    rev = truth.basket_value * (sim.margin - data.treatment[:, 0])  # revenue if bought, E[L] = 1
    # Var(y | x, t) = P v^2 (m - delta)^2 E[L^2] - (P v (m - delta))^2, E[L^2] = exp(sigma^2)
    # and the outcome is the mean of n_trips independent trips.
    var = (P * rev ** 2 * np.exp(sim.basket_sigma ** 2) - (P * rev) ** 2) / sim.n_trips
    resid = data.outcome - pi
    z_arm = []
    for a in range(data.n_arms):
        m = data.arm == a
        z_arm.append(resid[m].mean() / np.sqrt(var[m].sum() / m.sum() ** 2))
    z_arm = np.array(z_arm)
    assert np.all(np.abs(z_arm) < 4.0), z_arm
    z_all = resid.mean() / np.sqrt(var.sum() / n ** 2)
    assert abs(z_all) < 4.0
    # the variance formula itself is right (sample variance of the residuals matches it)
    assert resid.var() == pytest.approx(var.mean(), rel=0.05)


def test_randomization_is_uniform_with_known_propensity():
    sim = PromotionsSimulator(
        n_customers=60_000, discount_levels=(0.0, 0.15, 0.3), duration_levels=(0.0, 1.0, 3.0), seed=3
    )
    data = sim.sample()
    A = data.n_arms
    assert A == 9
    expected_arms = np.array([[d, s] for d in (0.0, 0.15, 0.3) for s in (0.0, 1.0, 3.0)])
    np.testing.assert_array_equal(data.arms, expected_arms)  # discount-major order
    np.testing.assert_array_equal(data.treatment, data.arms[data.arm])
    np.testing.assert_array_equal(data.propensity, np.full(len(data), 1.0 / A))
    counts = np.bincount(data.arm, minlength=A)
    assert chisquare(counts).pvalue > 1e-3
    # and the arm is independent of the covariates (randomized): arm means of a covariate agree
    rec = data.features["recency"].to_numpy()
    means = np.array([rec[data.arm == a].mean() for a in range(A)])
    assert np.all(np.abs(means) < 4.0 / np.sqrt(counts))


def test_same_seed_same_data():
    a = PromotionsSimulator(n_customers=500, seed=9).sample()
    b = PromotionsSimulator(n_customers=500, seed=9).sample()
    np.testing.assert_array_equal(a.outcome, b.outcome)
    np.testing.assert_array_equal(a.X, b.X)


def test_simulator_is_hard_for_naive_policies():
    """The must-show: with TRUE profits, one treatment for all and segmenting on covariates leave
    much of full personalization's incremental profit on the table (so coarse personalization has
    something to win), while the candidate grid itself loses almost nothing."""
    sim = PromotionsSimulator(n_customers=20_000, seed=0)
    data = sim.sample()
    truth, space = data.truth, data.space
    cand = space.grid([26, 21])
    P = truth.profit(cand)
    control = oracle_control_value(truth, space)
    full, _ = oracle_full_personalization(truth, space)
    share = lambda pol: share_of_full(oracle_value(truth, pol), control, full)  # noqa: E731
    one = share(single_best(P, cand))
    seg5 = share(kmeans_features(data.X, P, cand, 5, seed=0))
    grid_full = share(full_personalization(P, cand))
    assert one <= 0.80, one
    assert seg5 <= 0.90, seg5
    assert grid_full >= 0.995, grid_full
    assert full > control
