"""Evaluation: doubly robust values (unbiasedness, double robustness, CIs) and the oracle values."""
from __future__ import annotations

import numpy as np
import pytest

from coarse_gpu.data import PromotionsSimulator, TreatmentSpace, product_grid
from coarse_gpu.evaluate import (
    DRResult,
    arm_weights,
    dr_scores,
    dr_value,
    oracle_control_value,
    oracle_customer_profit,
    oracle_full_personalization,
    oracle_value,
    share_of_full,
)
from coarse_gpu.policy import (
    Policy,
    full_personalization,
    grid_search,
    kmeans_features,
    kmeans_preferences,
    single_best,
)

ARMS = product_grid([[0.0, 0.2, 0.4], [0.0, 2.0, 4.0]])  # 3 x 3 tensor grid of arms (A = 9)


def true_profit(x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """(N, M) bilinear-in-t profit with nonlinear heterogeneity in x: multilinear interpolation on
    the arms is exact for it, so off-arm DR values are unbiased too."""
    a = 5.0 + 2.0 * np.sin(x[:, 0]) + x[:, 1] ** 2
    b = 8.0 * np.tanh(x[:, 0]) - 2.0
    c = 0.8 * x[:, 1] - 0.3
    e = 1.5 * np.cos(x[:, 0] * x[:, 1])
    t1, t2 = T[None, :, 0], T[None, :, 1]
    return a[:, None] + b[:, None] * t1 + c[:, None] * t2 + e[:, None] * t1 * t2


def randomized_experiment(n: int, seed: int):
    """Stratified (x-dependent, known) randomization over the 9 arms, skewed heteroskedastic noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    logits = np.outer(x[:, 0], np.linspace(-1.0, 1.0, 9))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    arm = (probs.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1)
    mu_true = true_profit(x, ARMS)
    noise = (rng.lognormal(0.0, 0.75, n) - np.exp(0.75 ** 2 / 2)) * (1.0 + np.abs(x[:, 1]))
    y = mu_true[np.arange(n), arm] + noise
    return x, arm, probs[np.arange(n), arm], y, mu_true


def policy_scores(x, arm, prop, y, mu_arms, treatments, assignment, mu_at):
    kappa = arm_weights(treatments, ARMS)[assignment]
    mu_policy = mu_at(treatments)[np.arange(len(y)), assignment]
    return dr_scores(y, arm, prop, mu_arms, mu_policy, kappa)


# ---------------------------------------------------------------------------------------------
# doubly robust value
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("on_arms", [True, False])
def test_dr_is_unbiased_even_with_a_wrong_model_and_tighter_with_the_right_one(on_arms):
    n = 40_000
    x, arm, prop, y, mu_true = randomized_experiment(n, seed=11)
    if on_arms:  # a personalized policy over 3 arms
        treatments = ARMS[[1, 5, 7]]
    else:  # 3 treatments between the arms
        treatments = np.array([[0.1, 1.0], [0.33, 3.1], [0.05, 2.7]])
    assignment = np.where(x[:, 0] > 0.5, 0, np.where(x[:, 1] > 0, 1, 2))
    truth = true_profit(x, treatments)[np.arange(n), assignment].mean()

    results = {}
    models = {
        "zero": lambda T: np.zeros((n, len(T))),  # badly misspecified: pure IPW
        "wrong": lambda T: 20.0 - 30.0 * T[None, :, 0] + 3.0 * x[:, [0]],  # wrong and biased
        "right": lambda T: true_profit(x, T),
    }
    for name, mu_at in models.items():
        s = policy_scores(x, arm, prop, y, mu_at(ARMS), treatments, assignment, mu_at)
        r = dr_value(s, n_boot=300, seed=1)
        assert abs(r.value - truth) < 3 * r.se, (name, r.value, truth, r.se)
        results[name] = r
    # the plug-in of the wrong model alone is far off: it is the correction that removes the bias
    plug_in = models["wrong"](treatments)[np.arange(n), assignment].mean()
    assert abs(plug_in - truth) > 20 * results["wrong"].se
    width = {k: r.ci[1] - r.ci[0] for k, r in results.items()}
    assert width["right"] < 0.7 * width["zero"]
    assert results["right"].se < 0.7 * results["zero"].se


def test_dr_needs_the_propensities():
    # with non-uniform randomization, ignoring the propensity (or using 1/A) is biased
    n = 40_000
    x, arm, prop, y, _ = randomized_experiment(n, seed=3)
    treatments = ARMS[[8]]
    assignment = np.zeros(n, dtype=np.int64)
    truth = true_profit(x, treatments)[:, 0].mean()
    zero = np.zeros((n, 9))
    kappa = arm_weights(treatments, ARMS)[assignment]
    good = dr_value(dr_scores(y, arm, prop, zero, np.zeros(n), kappa), n_boot=0)
    bad = dr_value(dr_scores(y, arm, np.full(n, 1 / 9), zero, np.zeros(n), kappa), n_boot=0)
    assert abs(good.value - truth) < 3 * good.se
    assert abs(bad.value - truth) > 5 * bad.se


def test_on_arm_kappa_is_standard_aipw():
    rng = np.random.default_rng(0)
    n, A = 500, 9
    arm = rng.integers(0, A, n)
    prop = rng.uniform(0.05, 1.0, n)
    y = rng.normal(size=n)
    mu_arms = rng.normal(size=(n, A))
    tau = rng.integers(0, A, n)  # policy arm of each customer
    kappa = arm_weights(ARMS[tau], ARMS)
    np.testing.assert_array_equal(kappa, np.eye(A)[tau])  # unit vectors at the arms
    s = dr_scores(y, arm, prop, mu_arms, mu_arms[np.arange(n), tau], kappa)
    hand = mu_arms[np.arange(n), tau] + (arm == tau) / prop * (y - mu_arms[np.arange(n), arm])
    np.testing.assert_allclose(s, hand, rtol=1e-12, atol=1e-12)


def test_off_arm_kappa_is_interpolation_on_the_surrounding_arms():
    w = arm_weights(np.array([[0.1, 3.0], [0.4, 4.0], [0.7, -1.0]]), ARMS)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert np.all(w >= 0)
    # (0.1, 3.0): halfway between discount 0 and 0.2, halfway between duration 2 and 4
    expect = {tuple(ARMS[a]): v for a, v in enumerate(w[0]) if v > 0}
    assert expect == pytest.approx({(0.0, 2.0): 0.25, (0.0, 4.0): 0.25, (0.2, 2.0): 0.25, (0.2, 4.0): 0.25})
    assert w[1, 8] == 1.0  # an arm: unit row
    np.testing.assert_allclose(w[2], arm_weights(np.array([[0.4, 0.0]]), ARMS)[0])  # clipped to the arms


def test_bootstrap_ci_covers_at_nominal_rate():
    rng = np.random.default_rng(2024)
    truth = np.exp(0.5)  # mean of lognormal(0, 1): skewed scores
    reps, covered, normal_covered = 300, 0, 0
    for r in range(reps):
        s = rng.lognormal(0.0, 1.0, 400)
        res = dr_value(s, n_boot=400, alpha=0.1, seed=r)
        covered += res.ci[0] <= truth <= res.ci[1]
        nres = dr_value(s, n_boot=0, alpha=0.1)
        normal_covered += nres.ci[0] <= truth <= nres.ci[1]
    assert 0.84 <= covered / reps <= 0.95
    assert 0.84 <= normal_covered / reps <= 0.95


def test_dr_value_summary():
    s = np.random.default_rng(1).normal(3.0, 2.0, 5000)
    r = dr_value(s, n_boot=1000, seed=0)
    assert isinstance(r, DRResult) and r.n == 5000
    assert r.value == pytest.approx(s.mean())
    assert r.se == pytest.approx(s.std(ddof=1) / np.sqrt(5000))
    assert r.ci[0] < r.value < r.ci[1]
    assert (r.ci[1] - r.ci[0]) == pytest.approx(2 * 1.96 * r.se, rel=0.1)
    assert dr_value(s, n_boot=1000, seed=0) == r  # seeded


def test_dr_errors():
    n = 10
    ok = dict(outcome=np.zeros(n), arm=np.zeros(n, dtype=int), propensity=np.full(n, 0.5),
              mu_arms=np.zeros((n, 3)), mu_policy=np.zeros(n), kappa=np.zeros((n, 3)))
    assert dr_scores(**ok).shape == (n,)
    for key, bad, msg in [
        ("propensity", np.zeros(n), r"propensity must lie in \(0, 1\]"),
        ("propensity", np.full(n, 1.5), r"propensity must lie in \(0, 1\]"),
        ("arm", np.full(n, 3), r"arm indices must lie in \[0, A=3\)"),
        ("arm", np.zeros(n - 1, dtype=int), "arm must be 1-D with N=10"),
        ("kappa", np.zeros((n, 2)), r"kappa must have shape \(10, 3\)"),
        ("mu_policy", np.zeros((n, 1)), "mu_policy must be 1-D"),
        ("mu_arms", np.zeros(n), r"mu_arms must have shape \(10, A\)"),
        ("outcome", np.full(n, np.nan), "outcome contains NaN"),
    ]:
        with pytest.raises(ValueError, match=msg):
            dr_scores(**{**ok, key: bad})
    with pytest.raises(ValueError, match="alpha must lie in"):
        dr_value(np.zeros(5), alpha=1.5)
    with pytest.raises(ValueError, match="at least 2"):
        dr_value(np.zeros(1))


# ---------------------------------------------------------------------------------------------
# oracle values
# ---------------------------------------------------------------------------------------------
class QuadraticTruth:
    """pi_i(t) = a_i - sum_j w_j (t_j - c_ij)^2: the best t in the box is c_i clipped to the box."""

    def __init__(self, a, c, w):
        self.a, self.c, self.w = a, c, np.asarray(w)

    def __len__(self):
        return len(self.a)

    def profit(self, T, rows=None):
        sl = slice(None) if rows is None else rows
        T = np.atleast_2d(T)
        return self.a[sl, None] - (self.w * (T[None, :, :] - self.c[sl, None, :]) ** 2).sum(axis=2)

    def subset(self, rows):
        return QuadraticTruth(self.a[rows], self.c[rows], self.w)


SPACE = TreatmentSpace(names=("discount", "duration_weeks"), low=(0.0, 0.0), high=(0.5, 4.0), control=(0.0, 0.0))


def test_oracle_full_personalization_matches_analytic_max():
    rng = np.random.default_rng(0)
    n = 3000
    c = np.stack([rng.uniform(-0.05, 0.55, n), rng.uniform(-0.3, 4.3, n)], axis=1)  # some outside the box
    truth = QuadraticTruth(rng.normal(5.0, 1.0, n), c, w=(40.0, 0.5))
    best_t = np.clip(c, SPACE.low, SPACE.high)
    analytic = truth.profit(best_t)[np.arange(n), np.arange(n)]  # pi_i at its own clipped optimum
    value, treatments = oracle_full_personalization(truth, SPACE, points=(11, 9))
    coarse, _ = oracle_full_personalization(truth, SPACE, points=(11, 9), refine=False)
    assert treatments.shape == (n, 2)
    assert abs(value - analytic.mean()) < 1e-5
    assert analytic.mean() - coarse > 1e-3  # the grid alone is not enough: refinement matters
    np.testing.assert_allclose(treatments, best_t, atol=0.01 * SPACE.span.max() / 10)
    assert np.all(SPACE.contains(treatments))


def test_oracle_full_dominates_every_candidate_policy():
    sim = PromotionsSimulator(n_customers=3000, seed=4)
    data = sim.sample()
    truth, space = data.truth, data.space
    cand = space.grid([26, 21])
    P = truth.profit(cand)
    full, full_t = oracle_full_personalization(truth, space)
    policies = [full_personalization(P, cand), single_best(P, cand), grid_search(truth.profit(data.arms), data.arms, 3)]
    policies += [kmeans_features(data.X, P, cand, k) for k in (2, 5)]
    policies += [kmeans_preferences(P, cand, k, scale=space.span) for k in (2, 5, 8)]
    values = [oracle_value(truth, p) for p in policies]
    assert full >= max(values)
    assert full - values[0] > 0  # the continuous optimum beats the best candidate per customer
    # per customer too: the full-personalization treatment is at least as good as the best candidate
    own = truth.profit(full_t)[np.arange(3000), np.arange(3000)]
    assert np.all(own >= P.max(axis=1) - 1e-12)


def test_oracle_value_and_share_of_full():
    sim = PromotionsSimulator(n_customers=1500, seed=5)
    data = sim.sample()
    truth, space = data.truth, data.space
    control = oracle_control_value(truth, space)
    assert control == pytest.approx(truth.profit(np.array([space.control]))[:, 0].mean())
    full, full_t = oracle_full_personalization(truth, space)
    # the value of a policy is each customer's true profit at its own treatment, averaged
    pol = Policy("two", np.array([[0.1, 1.0], [0.3, 3.0]]), np.arange(1500) % 2)
    by_hand = np.mean([truth.profit(pol.treatments[a], rows=np.array([i]))[0, 0] for i, a in enumerate(pol.assignment)])
    assert oracle_value(truth, pol) == pytest.approx(by_hand, rel=1e-12)
    assert oracle_customer_profit(truth, pol).shape == (1500,)
    # share: full personalization ~ 1, control 0
    full_policy = Policy("full", full_t, np.arange(1500))
    assert share_of_full(oracle_value(truth, full_policy), control, full) == pytest.approx(1.0, abs=1e-12)
    ctrl_policy = Policy("control", np.array([space.control]), np.zeros(1500, dtype=int))
    assert share_of_full(oracle_value(truth, ctrl_policy), control, full) == pytest.approx(0.0, abs=1e-12)
    assert share_of_full(3.0, 1.0, 5.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="must exceed the control"):
        share_of_full(3.0, 5.0, 5.0)
    with pytest.raises(ValueError, match="finite"):
        share_of_full(np.nan, 1.0, 5.0)
    with pytest.raises(ValueError, match="same customers"):
        oracle_value(truth.subset(np.arange(10)), pol)
    with pytest.raises(ValueError, match="truth must provide profit"):
        oracle_control_value(None, space)


def test_shared_bootstrap_matches_an_independent_bootstrap_and_pairs_differences():
    """One set of resamples for every policy: the same CI as drawing fresh indices (within Monte Carlo
    error), regenerated identically per call, and paired intervals of differences that are much narrower
    than intervals of independent draws when the two policies' scores are correlated."""
    from coarse_gpu.evaluate.bootstrap import SharedBootstrap, percentile_ci

    rng = np.random.default_rng(0)
    n = 4000
    base = rng.lognormal(0.0, 1.0, n)
    a, b = base + 0.1 * rng.standard_normal(n), base + 0.05 + 0.1 * rng.standard_normal(n)
    boot = SharedBootstrap(n, 2000, seed=3)
    draws = boot.means(np.column_stack([a, b]))
    np.testing.assert_array_equal(draws, boot.means(np.column_stack([a, b])))  # same resamples every call
    np.testing.assert_allclose(draws[:, 0], boot.means(a), rtol=1e-12)  # one column alone: the same draws
    fresh = np.array([a[rng.integers(0, n, n)].mean() for _ in range(2000)])
    se = a.std() / np.sqrt(n)
    for got, ref in zip(percentile_ci(draws[:, 0], 0.05), percentile_ci(fresh, 0.05)):
        assert abs(got - ref) < 0.15 * se * 4  # endpoints agree to a fraction of the interval's width
    paired = percentile_ci(draws[:, 1] - draws[:, 0], 0.05)
    assert paired[0] > 0.0  # b - a = 0.05 is detected, although each interval alone is ~0.13 wide
    unpaired = percentile_ci(draws[:, 1] - np.random.default_rng(9).permutation(draws[:, 0]), 0.05)
    assert (paired[1] - paired[0]) < 0.2 * (unpaired[1] - unpaired[0])
