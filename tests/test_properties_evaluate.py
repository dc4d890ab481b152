"""Properties of the evaluation layer: the shared bootstrap is a true nonparametric bootstrap, and an
interval's width is the closed form's.

* balance: every customer can be drawn, each is drawn once per resample on average, each resample
  draws exactly N customers, and the resamples do not depend on the block size they are drawn in;
* exact references: on scores with a known sd, a (1 - alpha) percentile-bootstrap interval of the mean
  is 2 z_{1-alpha/2} sd / sqrt(N) wide (the normal limit of the mean), the n_boot = 0 interval is
  exactly that, and the 90 % / 95 % width ratio is z_0.95 / z_0.975;
* the AIPW score is the textbook formula on random inputs (a hand-written reference).
``scripts/mutation_check.py`` plants the bugs these catch ("e7".."e12").
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from coarse_gpu.evaluate import bootstrap
from coarse_gpu.evaluate.bootstrap import SharedBootstrap, percentile_ci
from coarse_gpu.evaluate.dr import dr_scores, dr_value

FAST = settings(max_examples=10, deadline=None, derandomize=True, database=None,
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) how often each customer is drawn in each resample (the bootstrap means of unit vectors)."""
    return np.rint(SharedBootstrap(n, n_boot, seed).means(np.eye(n)) * n)


@FAST
@given(n=st.integers(2, 40), seed=st.integers(0, 2 ** 20))
def test_every_customer_is_drawn_and_once_per_resample_on_average(n, seed):
    w = _counts(n, 600, seed)
    assert np.all(w.sum(1) == n)  # each resample draws N customers
    assert np.all(w.max(0) >= 1), f"never drawn: {np.flatnonzero(w.max(0) == 0).tolist()} of {n}"
    # E[count] = 1 per customer and resample; sd of the mean over 600 resamples <= sqrt(1/600) = 0.041
    np.testing.assert_allclose(w.mean(0), 1.0, atol=0.2)
    # the last customer is as likely as the first (the edge an off-by-one drops)
    assert abs(w[:, -1].mean() - w[:, 0].mean()) < 0.3


@FAST
@given(n=st.integers(2, 30), block=st.integers(1, 9), seed=st.integers(0, 2 ** 20))
def test_resamples_do_not_depend_on_the_block_size(n, block, seed, monkeypatch):
    """The resamples are drawn in row order from one seed, so the same seed gives the same resamples
    however many rows a block holds (the block size depends on N and memory, not on the data)."""
    s = np.random.default_rng(seed).standard_normal((n, 3))
    ref = SharedBootstrap(n, 25, seed).means(s)
    with monkeypatch.context() as m:
        m.setattr(bootstrap, "_BLOCK_ELEMENTS", block * n)
        np.testing.assert_allclose(SharedBootstrap(n, 25, seed).means(s), ref, rtol=1e-12, atol=1e-12)
    # paired: shifting one policy's scores by c shifts every resample's mean by exactly c
    np.testing.assert_allclose(SharedBootstrap(n, 25, seed).means(s + 2.5), ref + 2.5, rtol=1e-12)


def _scores_with(n: int, mean: float, sd: float, seed: int) -> np.ndarray:
    z = np.random.default_rng(seed).standard_normal(n)
    return mean + sd * (z - z.mean()) / z.std(ddof=1)  # exactly this mean and sd


@FAST
@given(alpha=st.sampled_from([0.05, 0.1, 0.2, 0.32, 0.5]), sd=st.floats(0.1, 50.0), seed=st.integers(0, 999))
def test_interval_width_is_the_closed_form(alpha, sd, seed):
    n = 2000
    s = _scores_with(n, 3.0, sd, seed)
    half = norm.ppf(1 - alpha / 2) * sd / np.sqrt(n)
    normal = dr_value(s, n_boot=0, alpha=alpha)
    assert normal.se == pytest.approx(sd / np.sqrt(n), rel=1e-12)
    assert normal.ci[0] == pytest.approx(3.0 - half, rel=1e-12) and normal.ci[1] == pytest.approx(3.0 + half, rel=1e-12)
    boot = dr_value(s, n_boot=4000, alpha=alpha, seed=seed)
    width = boot.ci[1] - boot.ci[0]
    # Monte Carlo error of the two bootstrap quantiles: about 1-2 % of the width at these alphas and
    # n_boot; an alpha halved (or doubled) anywhere moves the width by 14 % (alpha = 0.05) to 70 % (0.5)
    assert width == pytest.approx(2 * half, rel=0.06), (alpha, width / (2 * half))
    assert boot.ci[0] < boot.value < boot.ci[1] and boot.value == pytest.approx(3.0)


def test_a_90_percent_interval_is_narrower_than_a_95_percent_one_by_the_normal_ratio():
    s = _scores_with(3000, 0.0, 1.0, 7)
    w = {a: np.diff(dr_value(s, n_boot=6000, alpha=a, seed=1).ci)[0] for a in (0.05, 0.10)}
    ratio = norm.ppf(0.95) / norm.ppf(0.975)  # 0.839; an alpha halved somewhere gives 0.875 or 0.80
    assert w[0.10] / w[0.05] == pytest.approx(ratio, abs=0.02)
    draws = SharedBootstrap(3000, 6000, 1).means(s)
    lo, hi = percentile_ci(draws, 0.05)
    assert np.mean(draws < lo) == pytest.approx(0.025, abs=0.002)
    assert np.mean(draws > hi) == pytest.approx(0.025, abs=0.002)


@FAST
@given(n=st.integers(3, 60), a=st.integers(2, 5), seed=st.integers(0, 2 ** 20))
def test_aipw_scores_match_the_textbook_formula(n, a, seed):
    """psi_i = mu_pol_i + sum_a kappa_ia 1{A_i = a} / e_i (y_i - mu_ia), written out with loops."""
    rng = np.random.default_rng(seed)
    y, arm = rng.normal(size=n), rng.integers(0, a, n)
    e, mu, mu_p = rng.uniform(0.05, 1.0, n), rng.normal(size=(n, a)), rng.normal(size=n)
    kappa = rng.dirichlet(np.ones(a), n)
    ref = np.array([mu_p[i] + sum(kappa[i, b] * (arm[i] == b) / e[i] * (y[i] - mu[i, b]) for b in range(a))
                    for i in range(n)])
    np.testing.assert_allclose(dr_scores(y, arm, e, mu, mu_p, kappa), ref, rtol=1e-12, atol=1e-12)
