"""Doubly robust (AIPW) value of a policy from randomized data, with bootstrap confidence intervals.

Setting: customer i received arm A_i (one of A experimental arms) with known probability
e_i = P(A_i | x_i) (the propensity of the received arm), and yielded profit y_i. A policy gives
customer i the treatment tau_i, possibly off the experimental arms. With an outcome model
mu(x, t) (any model, possibly wrong), the AIPW pseudo-outcome is

    psi_i = mu_policy_i + sum_a kappa_ia * 1{A_i = a} / e_i * (y_i - mu_arms[i, a])
          = mu_policy_i + kappa_i,A_i / e_i * (y_i - mu_arms[i, A_i]),

where mu_policy_i = mu(x_i, tau_i), mu_arms[i, a] = mu(x_i, arm_a), and kappa_i (A,) maps tau_i to
the arms:
  * tau_i is an arm a*: kappa_i = unit vector of a*, and psi_i is the standard AIPW score; its mean
    is unbiased for the policy's value if EITHER the propensities are right (always, in an
    experiment) OR mu is right: E[psi_i | x_i] = mu_policy_i + (pi_i(a*) - mu_i(a*)) = pi_i(a*).
  * tau_i off the arms: kappa_i = the multilinear (tent) interpolation weights of tau_i on the
    tensor grid of arms (nonzero on the 2^d surrounding arms, summing to 1; see ``arm_weights``).
    Then E[psi_i | x_i] = mu(x_i, tau_i) + sum_a kappa_ia (pi_i(a) - mu_i(a)): the model's value at
    tau_i, corrected by the interpolated residuals of the surrounding arms. It equals pi_i(tau_i)
    when mu is right, and when the truth is multilinear between arms; otherwise, with a wrong mu,
    the bias is only the gap between the truth and the model's curvature within one cell of arms
    (the residual of the *interpolated* truth is removed). This is the "evaluation on the
    experiment's arms" option of method.md; a kernel-smoothed DR is the alternative.

``dr_value`` averages the scores: the estimate, a percentile-bootstrap CI, and the normal-approx se.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from coarse_gpu.evaluate.bootstrap import SharedBootstrap, percentile_ci

__all__ = ["DRResult", "arm_weights", "dr_scores", "dr_value"]


@dataclass(frozen=True)
class DRResult:
    """Doubly robust value estimate (currency units per customer).

    value : mean of the AIPW scores.
    ci : (lo, hi) percentile-bootstrap confidence interval at level 1 - alpha (normal-approx
        interval when n_boot = 0).
    se : normal-approximation standard error, sd(scores) / sqrt(N).
    n : number of customers the estimate averages over.
    """

    value: float
    ci: tuple[float, float]
    se: float
    n: int = 0


def _np(a) -> np.ndarray:
    """numpy view of an array-like or a (CPU or GPU) torch tensor."""
    return np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a)


def _vec(a, name: str, dtype=np.float64) -> np.ndarray:
    x = _np(a)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {x.shape}")
    return x.astype(dtype, copy=False)


def dr_scores(outcome, arm, propensity, mu_arms, mu_policy, kappa) -> np.ndarray:
    """(N,) AIPW pseudo-outcomes of a policy (see the module docstring for the formula).

    outcome : (N,) realized profit y_i (currency units).
    arm : (N,) int index in [0, A) of the arm customer i received.
    propensity : (N,) probability in (0, 1] that customer i received that arm.
    mu_arms : (N, A) model predictions of the profit at every arm (mu = 0 is allowed: IPW).
    mu_policy : (N,) model prediction at the policy's treatment for customer i.
    kappa : (N, A) weights mapping customer i's policy treatment to the arms (a unit row when it is
        an arm; multilinear interpolation weights off the arms, see ``arm_weights``).
    """
    y = _vec(outcome, "outcome")
    n = y.shape[0]
    a_raw = _np(arm)
    if a_raw.ndim != 1 or a_raw.shape[0] != n:
        raise ValueError(f"arm must be 1-D with N={n} entries like outcome, got shape {a_raw.shape}")
    if a_raw.size and not np.issubdtype(a_raw.dtype, np.integer):
        if not np.all(np.mod(a_raw, 1) == 0):
            raise ValueError("arm must hold integer arm indices")
    a = a_raw.astype(np.int64)
    e = _vec(propensity, "propensity")
    mu_a = _np(mu_arms).astype(np.float64, copy=False)
    mu_p = _vec(mu_policy, "mu_policy")
    k = _np(kappa).astype(np.float64, copy=False)
    if e.shape != (n,):
        raise ValueError(f"propensity must have shape ({n},), got {e.shape}")
    if mu_p.shape != (n,):
        raise ValueError(f"mu_policy must have shape ({n},), got {mu_p.shape}")
    if mu_a.ndim != 2 or mu_a.shape[0] != n or mu_a.shape[1] == 0:
        raise ValueError(f"mu_arms must have shape ({n}, A), got {mu_a.shape}")
    n_arms = mu_a.shape[1]
    if k.shape != (n, n_arms):
        raise ValueError(f"kappa must have shape ({n}, {n_arms}) like mu_arms, got {k.shape}")
    if n and (a.min() < 0 or a.max() >= n_arms):
        raise ValueError(f"arm indices must lie in [0, A={n_arms}), got range [{a.min()}, {a.max()}]")
    if not np.all((e > 0) & (e <= 1)):
        bad = e[~((e > 0) & (e <= 1))][:3]
        raise ValueError(f"propensity must lie in (0, 1], got values such as {bad.tolist()}")
    for name, v in (("outcome", y), ("mu_arms", mu_a), ("mu_policy", mu_p), ("kappa", k)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} contains NaN or inf")
    rows = np.arange(n)
    return mu_p + k[rows, a] / e * (y - mu_a[rows, a])


def dr_value(scores, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> DRResult:
    """Mean of the AIPW scores with a percentile-bootstrap CI and a normal-approx standard error.

    scores : (N,) pseudo-outcomes from ``dr_scores``.
    n_boot : bootstrap resamples (0 = normal-approximation CI value -+ z_{1-alpha/2} se).
    alpha : 1 - confidence level. seed : bootstrap RNG seed.
    The resamples are ``SharedBootstrap(N, n_boot, seed)``'s: the same for every call with that seed,
    so two policies scored on the same customers get paired intervals (coarse_gpu.evaluate.bootstrap).
    """
    s = _vec(scores, "scores")
    n = s.shape[0]
    if n < 2:
        raise ValueError(f"scores needs at least 2 customers, got {n}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contains NaN or inf")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    value = float(s.mean())
    se = float(s.std(ddof=1) / np.sqrt(n))
    if n_boot == 0:
        z = float(norm.ppf(1 - alpha / 2))
        return DRResult(value, (value - z * se, value + z * se), se, n)
    lo, hi = percentile_ci(SharedBootstrap(n, n_boot, seed).means(s), alpha)
    return DRResult(value, (float(lo), float(hi)), se, n)


def arm_weights(treatments, arms) -> np.ndarray:
    """(M, A) multilinear interpolation weights of treatments (M, d) on a tensor grid of arms (A, d).

    The kappa of ``dr_scores`` for customers given those treatments: ``arm_weights(policy.treatments,
    arms)[policy.assignment]``. A unit row at an arm; treatments outside the arms' hull are clipped
    to it. Same mapping as ``ArmGrid.weights(T, "linear")`` of the models (it is that function).
    """
    from coarse_gpu.models.interpolate import ArmGrid  # local import: evaluation does not need the models

    return ArmGrid.from_arms(arms).weights(treatments, "linear")
