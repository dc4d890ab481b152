"""The kernel-smoothed DR value for continuously randomized doses (coarse_gpu.evaluate.kernel_dr, gps)."""
from __future__ import annotations

import numpy as np
import pytest

from coarse_gpu.data.dose_simulator import DoseSimulator
from coarse_gpu.evaluate.dr import dr_value
from coarse_gpu.evaluate.gps import BinnedDoseDensity, dose_density
from coarse_gpu.evaluate.kernel_dr import (bandwidth_rule, kernel_dr_scores, kernel_dr_value, kernel_weights,
                                           paired_difference)

SUPPORT = ([0.0], [0.5])


def _threshold_policy(data, hi=0.3, lo=0.1):
    return np.where(data.features["recency"].to_numpy() > 0, hi, lo)[:, None]


def test_kernel_ipw_closed_form_by_hand():
    # mu = 0 and a uniform design (f = 2 on [0, 0.5]): psi_i = K_h(t_i - tau_i) / f * y_i, with the
    # Epanechnikov k(u) = 0.75 (1 - u^2) on |u| <= 1; tau = 0.25 is > h from both edges (mass 1).
    t = np.array([0.2, 0.25, 0.4])
    tau = np.full(3, 0.25)
    y = np.array([1.0, 2.0, 3.0])
    with pytest.warns(RuntimeWarning, match="only 2 customers lie within a bandwidth"):
        s = kernel_dr_scores(y, t, tau, np.zeros(3), np.zeros(3), np.full(3, 2.0), 0.1, support=SUPPORT)
    # u = -0.5, 0, 1.5 -> k = 0.5625, 0.75, 0 -> /h = 5.625, 7.5, 0 -> /f = 2.8125, 3.75, 0 -> * y
    np.testing.assert_allclose(s, [2.8125, 7.5, 0.0])
    assert kernel_dr_value(s, n_boot=0).value == pytest.approx(10.3125 / 3)


def test_gaussian_kernel_closed_form():
    with pytest.warns(RuntimeWarning, match="only 2 customers"):
        s = kernel_dr_scores([1.0, 1.0], [0.2, 0.3], [0.25, 0.25], [0.0, 0.0], [0.5, 0.5], [2.0, 2.0], 0.05,
                             kernel="gaussian", support=([-100.0], [100.0]))
    # u = -+1: phi(1) / 0.05 / 2 * (1 - 0) + 0.5
    np.testing.assert_allclose(s, 0.5 + 0.24197072451914337 / 0.05 / 2.0)


@pytest.mark.parametrize("kernel", ["epanechnikov", "gaussian"])
@pytest.mark.parametrize("tau", [0.0, 0.03, 0.25, 0.5])
def test_boundary_kernels_integrate_to_one_over_the_design(kernel, tau):
    # E[w / f] = int over [0, 0.5] of the kernel = 1 for t ~ U[0, 0.5] at every tau, also at the edges
    # where half the window falls outside the range (a plain kernel gives 0.5 at tau = 0). The linear
    # boundary kernel also has a zero first moment there, E[w (t - tau) / f] = 0 (bias O(h^2)); the
    # renormalized one's is 3h/8 at tau = 0 for the Epanechnikov, int_0^1 u k(u) du / (1/2).
    h = 0.08
    t = np.random.default_rng(0).uniform(0, 0.5, 400_000)
    tau_v = np.full_like(t, tau)
    lin = kernel_weights(t, tau_v, h, kernel=kernel, support=SUPPORT) / 2.0
    ren = kernel_weights(t, tau_v, h, kernel=kernel, support=SUPPORT, boundary="renormalize") / 2.0
    assert np.mean(lin) == pytest.approx(1.0, abs=0.02) and np.mean(ren) == pytest.approx(1.0, abs=0.02)
    assert np.mean(lin * (t - tau)) / h == pytest.approx(0.0, abs=0.01)
    if kernel == "epanechnikov" and tau == 0.0:
        assert np.mean(ren * (t - tau)) / h == pytest.approx(0.375, abs=0.01)
    if tau == 0.25:  # inside the range both are the plain kernel
        np.testing.assert_allclose(lin, ren)


def test_bandwidth_rule_on_a_known_input():
    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    # spread = min(sd = 1.5811, IQR / 1.349 = 2 / 1.349 = 1.48258); Epanechnikov c = 2.214 (4/3)^(1/5)
    # = 2.34511; undersmooth 5^(-1/4) = 0.668740, silverman 5^(-1/5) = 0.724780
    assert bandwidth_rule(t)[0] == pytest.approx(2.34511 * 1.48258 * 0.668740, rel=1e-4)
    assert bandwidth_rule(t, rule="silverman")[0] == pytest.approx(2.34511 * 1.48258 * 0.724780, rel=1e-4)
    assert bandwidth_rule(t, kernel="gaussian", rule="silverman")[0] == pytest.approx(
        1.05922 * 1.48258 * 0.724780, rel=1e-4)
    # uniform doses on [0, 0.5]: sd = 0.5 / sqrt(12) < IQR / 1.349; h shrinks as N^(-1/4)
    u = np.random.default_rng(1).uniform(0, 0.5, 10_000)
    assert bandwidth_rule(u)[0] == pytest.approx(2.34511 * 0.5 / np.sqrt(12) * 10_000 ** -0.25, rel=0.02)
    with pytest.raises(ValueError, match="rule"):
        bandwidth_rule(t, rule="cv")
    with pytest.raises(ValueError, match="constant"):
        bandwidth_rule(np.ones(10))


def test_unbiased_with_the_true_model_and_nearly_with_a_wrong_one():
    # mu = truth: E[psi_i | x_i] = pi_i(tau_i) exactly; mu = 0 (kernel IPW) or a model off by a factor:
    # only an O(h^2) smoothing bias remains, the design's density removes the model's error
    errs = {"truth": [], "ipw": [], "half": []}
    for rep in range(6):
        d = DoseSimulator(n_customers=6000, seed=rep).sample()
        tau = _threshold_policy(d)
        mo, mp = d.truth.profit_at(d.treatment), d.truth.profit_at(tau)
        h = bandwidth_rule(d.treatment)
        for name, a, b in (("truth", mo, mp), ("ipw", 0 * mo, 0 * mp), ("half", 0.5 * mo, 0.5 * mp)):
            s = kernel_dr_scores(d.outcome, d.treatment, tau, a, b, d.propensity, h, support=SUPPORT)
            errs[name].append(s.mean() - mp.mean())
    for name, e in errs.items():
        e = np.asarray(e)
        assert abs(e.mean()) < 3 * e.std(ddof=1) / np.sqrt(len(e)) + 0.05, (name, e)
    # the plug-in of the wrong model is far off; the DR correction is what removes it
    assert np.mean(np.abs(errs["half"])) < 0.5


def test_invariant_to_row_order():
    d = DoseSimulator(n_customers=3000, seed=3).sample()
    tau = _threshold_policy(d)
    mo, mp = 0.8 * d.truth.profit_at(d.treatment), 0.8 * d.truth.profit_at(tau)
    h = bandwidth_rule(d.treatment)
    s = kernel_dr_scores(d.outcome, d.treatment, tau, mo, mp, d.propensity, h)
    p = np.random.default_rng(0).permutation(len(d))
    sp = kernel_dr_scores(d.outcome[p], d.treatment[p], tau[p], mo[p], mp[p], d.propensity[p],
                          bandwidth_rule(d.treatment[p]))
    np.testing.assert_allclose(sp, s[p])
    assert sp.mean() == pytest.approx(s.mean(), rel=1e-12)


def test_overlap_check_refuses_a_dose_outside_the_randomized_range():
    d = DoseSimulator(n_customers=500, seed=0).sample()
    tau = _threshold_policy(d, hi=0.6)
    mo = np.zeros(len(d))
    with pytest.raises(ValueError, match=r"policy_treatment row \d+: dose \[0.6\] lies outside"):
        kernel_dr_scores(d.outcome, d.treatment, tau, mo, mo, d.propensity, 0.05, support=SUPPORT)
    with pytest.raises(ValueError, match="outside the randomized range"):  # default support: observed range
        kernel_dr_scores(d.outcome, d.treatment, np.full((len(d), 1), 0.55), mo, mo, d.propensity, 0.05)


def test_overlap_check_on_an_estimated_density():
    # doses depend on x: x > 0 drew from [0, 0.25], x <= 0 from [0.25, 0.5]; f is estimated
    rng = np.random.default_rng(0)
    n = 4000
    x = rng.standard_normal((n, 3))
    t = np.where(x[:, 0] > 0, rng.uniform(0, 0.25, n), rng.uniform(0.25, 0.5, n))[:, None]
    g = BinnedDoseDensity(n_bins=8, C=10.0).fit(x, t)
    f = g.predict_density(x, t)
    # the true density is 4 on each customer's half; the classifier recovers it (separable halves)
    assert np.median(f) == pytest.approx(4.0, rel=0.15)
    y, z = rng.standard_normal(n), np.zeros(n)
    ok = np.where(x[:, :1] > 0, 0.1, 0.4)  # each customer a dose her kind received: accepted
    kernel_dr_scores(y, t, ok, z, z, f, 0.05, policy_density=g.predict_density(x, ok))
    # 0.4 to the x > 0 customers, who never received anything near it: refused, naming f(tau|x)
    bad = np.full((n, 1), 0.4)
    with pytest.raises(ValueError, match=r"policy doses have a density f\(tau\|x\) below min_density"):
        kernel_dr_scores(y, t, bad, z, z, f, 0.05, policy_density=g.predict_density(x, bad))
    # a window using customers whose own dose had a tiny estimated density: refused, or warned about
    f_bad = f.copy()
    f_bad[np.flatnonzero(np.abs(t[:, 0] - ok[:, 0]) < 0.05)[:5]] = 0.01
    with pytest.raises(ValueError, match=r"window have a density f\(t\|x\) below min_density"):
        kernel_dr_scores(y, t, ok, z, z, f_bad, 0.05)
    with pytest.warns(RuntimeWarning, match="overlap"):
        kernel_dr_scores(y, t, ok, z, z, f_bad, 0.05, overlap="warn")


def test_estimated_density_of_a_uniform_design_is_flat():
    d = DoseSimulator(n_customers=4000, seed=2).sample()
    f = BinnedDoseDensity().fit(d.X, d.treatment).predict_density(d.X, d.treatment)
    assert np.mean(f) == pytest.approx(2.0, rel=0.05)
    assert np.percentile(f, 5) > 1.0 and np.percentile(f, 95) < 3.0


def test_ci_coverage_with_the_true_model_is_near_nominal():
    truth_df, truth = DoseSimulator(n_customers=2).population(400_000, seed=99)
    tau_pop = np.where(truth_df["recency"].to_numpy() > 0, 0.3, 0.1)
    v = truth.profit_at(tau_pop).mean()
    hits = []
    for rep in range(30):
        d = DoseSimulator(n_customers=1000, seed=100 + rep).sample()
        tau = _threshold_policy(d)
        s = kernel_dr_scores(d.outcome, d.treatment, tau, d.truth.profit_at(d.treatment), d.truth.profit_at(tau),
                             d.propensity, bandwidth_rule(d.treatment), support=SUPPORT)
        lo, hi = dr_value(s, n_boot=300, seed=rep).ci
        hits.append(lo <= v <= hi)
    assert np.mean(hits) >= 0.8


def test_paired_difference_is_the_difference_with_a_tighter_paired_interval():
    d = DoseSimulator(n_customers=4000, seed=5).sample()
    h = bandwidth_rule(d.treatment)
    mo = d.truth.profit_at(d.treatment)
    sc = {}
    for name, tau in (("a", _threshold_policy(d, 0.3, 0.1)), ("b", _threshold_policy(d, 0.3, 0.12))):
        sc[name] = kernel_dr_scores(d.outcome, d.treatment, tau, mo, d.truth.profit_at(tau), d.propensity, h,
                                    support=SUPPORT)
    diff = paired_difference(sc["a"], sc["b"], n_boot=300)
    va, vb = dr_value(sc["a"], n_boot=300), dr_value(sc["b"], n_boot=300)
    assert diff.value == pytest.approx(va.value - vb.value)
    # the two policies give the recency > 0 half the same dose, hence the same scores: the paired
    # interval is far narrower than that of two independently resampled estimates
    width = lambda r: r.ci[1] - r.ci[0]  # noqa: E731
    assert width(diff) < 0.8 * np.hypot(width(va), width(vb))
    with pytest.raises(ValueError, match="same customers"):
        paired_difference(sc["a"], sc["b"][:-1])


def test_bad_input_is_named():
    y = np.ones(4)
    t = np.array([0.1, 0.2, 0.3, 0.4])
    z = np.zeros(4)
    with pytest.raises(ValueError, match="density must be > 0 at every received dose, row 2"):
        kernel_dr_scores(y, t, t, z, z, np.array([2.0, 2.0, 0.0, 2.0]), 0.1)
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        kernel_dr_scores(y, t, t, z, z, np.full(4, 2.0), 0.0)
    with pytest.raises(ValueError, match="mu_policy must have shape"):
        kernel_dr_scores(y, t, t, z, z[:3], np.full(4, 2.0), 0.1)
    with pytest.raises(ValueError, match="kernel must be one of"):
        kernel_dr_scores(y, t, t, z, z, np.full(4, 2.0), 0.1, kernel="box")
    with pytest.raises(ValueError, match="policy_treatment must have shape"):
        kernel_weights(t, t[:3], 0.1)


def test_dose_density_uses_the_declared_design_else_estimates():
    d = DoseSimulator(n_customers=3000, seed=4).sample()
    f = dose_density(d)
    np.testing.assert_array_equal(f(d.X, d.treatment), 2.0)
    np.testing.assert_array_equal(f(d.X[:2], np.array([[0.1], [0.7]])), [2.0, 0.0])  # off the design: 0
    d.meta.pop("dose_design")
    g = dose_density(d)(d.X, d.treatment)
    # estimated in-sample: the classifier overfits its own rows a little, so f is a few % high there
    assert not np.all(g == 2.0) and np.mean(g) == pytest.approx(2.0, rel=0.1)


def test_two_dose_dimensions_use_the_product_kernel():
    rng = np.random.default_rng(0)
    t = rng.uniform([0.0, 0.0], [0.5, 4.0], size=(2000, 2))
    tau = np.tile([[0.0, 2.0]], (2000, 1))  # at the discount's edge, inside the duration's range
    h = np.array([0.08, 0.6])
    sup = ([0.0, 0.0], [0.5, 4.0])
    w = kernel_weights(t, tau, h, support=sup)
    w0 = kernel_weights(t[:, :1], tau[:, :1], h[0], support=([0.0], [0.5]))
    w1 = kernel_weights(t[:, 1:], tau[:, 1:], h[1], support=([0.0], [4.0]))
    np.testing.assert_allclose(w, w0 * w1)
    assert bandwidth_rule(t).shape == (2,)
    # f = 1 / (0.5 * 4) = 0.5: the product kernel still integrates to one over the box
    big = rng.uniform([0.0, 0.0], [0.5, 4.0], size=(400_000, 2))
    wb = kernel_weights(big, np.tile([[0.0, 2.0]], (400_000, 1)), h, support=sup)
    assert np.mean(wb / 0.5) == pytest.approx(1.0, abs=0.03)


def test_the_arms_based_aipw_refuses_a_dose_experiment():
    from coarse_gpu.evaluate.dr import dr_scores

    d = DoseSimulator(n_customers=200, seed=0).sample()
    n = len(d)
    with pytest.raises(ValueError, match="arm indices"):
        dr_scores(d.outcome, d.arm, d.propensity, np.zeros((n, 1)), np.zeros(n), np.ones((n, 1)))
