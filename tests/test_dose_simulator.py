"""The continuously randomized dose simulator (coarse_gpu.data.dose_simulator, dose_design)."""
from __future__ import annotations

import numpy as np
import pytest

from coarse_gpu.data.dose_design import UniformDoseDesign
from coarse_gpu.data.dose_simulator import DoseSimulator, DoseTruth


def test_every_customer_a_different_dose_and_no_arms():
    d = DoseSimulator(n_customers=5000, seed=0).sample()
    assert d.treatment.shape == (5000, 1) and len(np.unique(d.treatment)) == 5000
    assert d.treatment.min() >= 0 and d.treatment.max() <= 0.5
    assert d.arms.shape == (0, 1) and d.n_arms == 0 and np.all(d.arm == -1)
    np.testing.assert_array_equal(d.propensity, 2.0)  # f(t | x) = 1 / 0.5
    assert d.meta["continuous_dose"] and d.meta["propensity_kind"] == "density"
    assert UniformDoseDesign.from_meta(d.meta["dose_design"]) == UniformDoseDesign((0.0,), (0.5,))
    assert d.X.shape == (5000, len(d.feature_names)) and d.X.dtype == np.float32
    assert {"browse_1", "browse_5", "channel=web", "tier=gold"} <= set(d.feature_names)
    # subset keeps the representation (and the truth's rows)
    s = d.subset(np.arange(10, 20))
    np.testing.assert_array_equal(s.truth.profit_at(s.treatment), d.truth.profit_at(d.treatment)[10:20])
    assert s.arms.shape == (0, 1) and np.all(s.arm == -1)


def test_outcome_is_unbiased_for_the_true_profit():
    d = DoseSimulator(n_customers=40_000, seed=1).sample()
    resid = d.outcome - d.truth.profit_at(d.treatment)
    assert abs(resid.mean()) < 3 * resid.std() / np.sqrt(len(resid))
    # and the discount matters on average: profit at t = 0.5 (margin - t = 0) is zero
    assert np.allclose(d.truth.profit(np.array([[0.5]])), 0.0)


def test_truth_protocol_and_heterogeneous_optimal_discount():
    d = DoseSimulator(n_customers=20_000, seed=2).sample()
    grid = np.linspace(0, 0.5, 51)[:, None]
    p = d.truth.profit(grid)
    assert p.shape == (20_000, 51)
    np.testing.assert_allclose(p[:, 10], d.truth.profit_at(np.full(20_000, grid[10, 0])))
    best = grid[p.argmax(1), 0]
    # the profit-maximizing discount varies: a sizeable share at 0, a sizeable share well inside the range
    assert 0.15 < np.mean(best == 0) < 0.7
    assert np.mean(best >= 0.1) > 0.2
    # it solves (margin - t) beta (1 - P) = 1 where interior (first-order condition, up to the grid step)
    i = np.flatnonzero((best > 0.05) & (best < 0.45))[:50]
    assert len(i) == 50
    t_star = best[i]
    p_star = np.diag(d.truth.purchase_probability(t_star[:, None], i))
    np.testing.assert_allclose((0.5 - t_star) * d.truth.beta[i] * (1 - p_star), 1.0, atol=0.25)
    # the irrelevant covariates do not enter the truth
    df = DoseSimulator(n_customers=100, seed=3).covariates(np.random.default_rng(0))
    sim = DoseSimulator(n_customers=100)
    base = sim.truth_from(df)
    df2 = df.copy()
    df2["browse_1"] = 100.0
    assert np.allclose(sim.truth_from(df2).profit(grid), base.profit(grid))


def test_same_seed_same_data_and_bad_arguments_named():
    a, b = DoseSimulator(n_customers=300, seed=7).sample(), DoseSimulator(n_customers=300, seed=7).sample()
    np.testing.assert_array_equal(a.outcome, b.outcome)
    np.testing.assert_array_equal(a.treatment, b.treatment)
    with pytest.raises(ValueError, match="dose_low, dose_high"):
        DoseSimulator(dose_low=0.3, dose_high=0.2)
    with pytest.raises(ValueError, match="n_customers"):
        DoseSimulator(n_customers=1)
    with pytest.raises(ValueError, match="n_trips"):
        DoseSimulator(n_trips=0)
    with pytest.raises(ValueError, match="1 column"):
        DoseTruth(np.ones(2), np.zeros(2), np.ones(2), 0.5).profit(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="dimension 0 needs finite low < high"):
        UniformDoseDesign((0.5,), (0.5,))


def test_uniform_design_density():
    des = UniformDoseDesign((0.0, 1.0), (0.5, 3.0))
    np.testing.assert_allclose(des.density(np.array([[0.1, 2.0], [0.6, 2.0], [0.5, 1.0]])), [1.0, 0.0, 1.0])
    t = des.sample(np.random.default_rng(0), 1000)
    assert t.shape == (1000, 2) and np.all(des.density(t) == 1.0)
    with pytest.raises(ValueError, match="shape"):
        des.density(np.zeros((3, 3)))
