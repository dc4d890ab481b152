"""Kernel-smoothed doubly robust value of a policy when the treatment is a continuously randomized dose.

Setting: customer i received a dose t_i in R^d drawn from the generalized propensity score f(t | x_i)
(a density: known by design, or estimated, see ``coarse_gpu.evaluate.gps``) and yielded profit y_i.
A deterministic policy gives customer i the dose tau_i = pi(x_i). No customer received exactly tau_i,
so the arms-based AIPW (``coarse_gpu.evaluate.dr``) has no matching customers; the kernel DR
(Kallus & Zhou 2018, "Policy evaluation and optimization with continuous treatments"; Colangelo &
Lee 2020) borrows the customers whose dose lies near tau_i:

    psi_i = mu(x_i, tau_i) + K_h(t_i - tau_i) / f(t_i | x_i) * (y_i - mu(x_i, t_i)),
    V(pi) = (1/N) sum_i psi_i,

with the product kernel K_h(u) = prod_j k(u_j / h_j) / h_j. Why it works: given x_i,
E[K_h(t - tau)/f(t|x) g(t)] = int K_h(t - tau) g(t) dt = g(tau) + (h^2 kappa_2 / 2) g''(tau) + ...
With g = mu_true - mu_model, E[psi_i | x_i] = mu_true(x_i, tau_i) + O(h^2 * curvature of the model's
error): the smoothing bias is the *product* of the bandwidth and the outcome model's error, zero when
the model is right (whatever h) and when f is right the model's error is removed up to O(h^2).

Kernel (``kernel=``): Epanechnikov, k(u) = 3/4 (1 - u^2) on |u| <= 1, by default. It has the smallest
asymptotic MSE among second-order kernels, and, being compactly supported, a policy dose only borrows
customers within h of it: the weights are bounded (by 0.75/h/f per dimension inside the range, a
few times that at its edges) and a dose with no
observed doses nearby gets no weight at all, which the overlap check can see. The Gaussian kernel
(``kernel="gaussian"``) never leaves a window empty (useful for very small N), at the price of
borrowing, a little, from every dose.

Boundaries: a policy dose at (or within h of) the edge of the randomized range, e.g. "no discount" at
t = 0, has half its kernel window outside the range: int over the support of K_h(t - tau) dt < 1 and
the correction would remove only part of the model's residual (an O(1) bias). Two corrections, per
dimension, with the truncated moments a_k = int_l^r u^k k(u) du of the window [l, r] (closed forms):
  * ``boundary="linear"`` (default): the local-linear boundary kernel (Jones 1993),
    k_b(u) = (a_2 - a_1 u) k(u) / (a_0 a_2 - a_1^2). It integrates to 1 and has a zero first moment on
    the truncated window, so the bias stays O(h^2) times the model's error at the edge as inside (it
    takes negative values at the far side of the window, and its variance at the edge is about 4x
    the interior's: the CI widens there, honestly);
  * ``boundary="renormalize"``: k(u) / a_0. Integrates to 1, but its first moment is not zero, so the
    bias at the edge is O(h) times the slope of the model's error: with a tree-based mu (piecewise
    constant in t, the error's slope is the truth's), this is what breaks the CI of "no discount" for
    half the customers (docs/evaluation.md, the coverage study) -- and the undersmoothing rate below
    assumes an O(h^2) bias.
Inside the range (window within the support: a_0 = 1, a_1 = 0) both are the plain kernel.

Bandwidth (``bandwidth_rule``): h_j = c_K * s_j * N^(-r), with s_j = min(sd_j, IQR_j / 1.349) the
robust spread of the observed doses and c_K the normal-reference constant (Silverman 1986, sec. 3.4:
c = (4 / (d + 2))^(1 / (d + 4)) for the Gaussian kernel, 1.06 at d = 1; x 2.214 for the Epanechnikov's
wider canonical scale, 2.34 at d = 1). The bias of V is O(h^2) (times the model's error), the variance
O(1 / (N h^d)); the MSE-optimal rate r = 1/(d + 4) (``rule="silverman"``) balances them, so the bias is
of the same order as the standard error and a CI centred on V under-covers. For confidence intervals
the default ``rule="undersmooth"`` takes r = 1/(d + 3), the simplest rate inside Colangelo & Lee's
conditions (N h^d -> inf and N h^(d + 4) -> 0): the bias vanishes faster than the standard error.

Standard errors and CIs: the psi_i are per-customer scores; ``dr_value`` (coarse_gpu.evaluate.dr) gives
the percentile bootstrap CI from the run's shared resamples, and ``paired_difference`` the paired CI of
the difference between two policies scored on the same customers (the bandwidth and the outcome model
are held fixed across resamples, as the arms-based evaluator does).
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence

import numpy as np
from scipy.stats import norm

from coarse_gpu.evaluate.dr import DRResult, dr_value

__all__ = ["KERNELS", "bandwidth_rule", "kernel_weights", "kernel_dr_scores", "kernel_dr_value",
           "paired_difference"]

KERNELS = ("epanechnikov", "gaussian")
#: Epanechnikov / Gaussian ratio of canonical bandwidths (Silverman 1986, Table 3.1: 2.345 / 1.059).
_EPANECHNIKOV_SCALE = 2.214
#: Rows with nonzero kernel weight below which the estimate rests on too few customers to trust.
_MIN_WINDOW_ROWS = 20


def _as_2d(a, name: str) -> np.ndarray:
    x = np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, d) (or (N,) for one dimension), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


def _pdf(u: np.ndarray, kernel: str) -> np.ndarray:
    if kernel == "gaussian":
        return norm.pdf(u)
    return np.where(np.abs(u) <= 1.0, 0.75 * (1.0 - u * u), 0.0)


def bandwidth_rule(treatment, *, kernel: str = "epanechnikov", rule: str = "undersmooth",
                   n: Optional[int] = None) -> np.ndarray:
    """(d,) bandwidths h_j = c_K * min(sd_j, IQR_j / 1.349) * N^(-r) (module docstring).

    treatment : (N, d) or (N,) observed doses. kernel : one of ``KERNELS``.
    rule : "undersmooth" (r = 1/(d+3), for CIs; default) or "silverman" (r = 1/(d+4), MSE rate).
    n : the sample size in the rate (default N, the rows of ``treatment``).
    """
    _check_kernel(kernel)
    t = _as_2d(treatment, "treatment")
    if rule not in ("undersmooth", "silverman"):
        raise ValueError(f"rule must be 'undersmooth' or 'silverman', got {rule!r}")
    n = t.shape[0] if n is None else int(n)
    if t.shape[0] < 2 or n < 2:
        raise ValueError(f"bandwidth_rule needs at least 2 doses, got {t.shape[0]} (n={n})")
    d = t.shape[1]
    q75, q25 = np.percentile(t, [75, 25], axis=0)
    spread = np.minimum(t.std(axis=0, ddof=1), (q75 - q25) / 1.349)
    spread = np.where(spread > 0, spread, t.std(axis=0, ddof=1))  # IQR 0 (a lumpy dose): plain sd
    if np.any(spread <= 0):
        j = int(np.flatnonzero(spread <= 0)[0])
        raise ValueError(f"treatment dimension {j} is constant: no dose was randomized, no bandwidth")
    c = (4.0 / (d + 2)) ** (1.0 / (d + 4))
    c *= _EPANECHNIKOV_SCALE if kernel == "epanechnikov" else 1.0
    r = 1.0 / (d + 3) if rule == "undersmooth" else 1.0 / (d + 4)
    return c * spread * float(n) ** (-r)


def _support(t: np.ndarray, support) -> tuple[np.ndarray, np.ndarray]:
    if support is None:
        return t.min(axis=0), t.max(axis=0)
    low = np.asarray(support[0], dtype=np.float64).reshape(-1)
    high = np.asarray(support[1], dtype=np.float64).reshape(-1)
    if low.shape != (t.shape[1],) or high.shape != (t.shape[1],) or not np.all(low < high):
        raise ValueError(f"support must be (low, high) with {t.shape[1]} values each and low < high, got {support}")
    return low, high


def _moments(lo: np.ndarray, hi: np.ndarray, kernel: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Truncated kernel moments a_0, a_1, a_2 = int_lo^hi u^k k(u) du (elementwise)."""
    if kernel == "gaussian":
        a0 = norm.cdf(hi) - norm.cdf(lo)
        a1 = norm.pdf(lo) - norm.pdf(hi)
        return a0, a1, a0 + lo * norm.pdf(lo) - hi * norm.pdf(hi)
    lo, hi = np.clip(lo, -1.0, 1.0), np.clip(hi, -1.0, 1.0)
    prim = lambda f: f(hi) - f(lo)  # noqa: E731 - definite integral of a primitive
    return (prim(lambda u: 0.75 * u - 0.25 * u ** 3), prim(lambda u: 0.375 * u ** 2 - 0.1875 * u ** 4),
            prim(lambda u: 0.25 * u ** 3 - 0.15 * u ** 5))


def kernel_weights(treatment, policy_treatment, bandwidth, *, kernel: str = "epanechnikov",
                   support: Optional[tuple[Sequence[float], Sequence[float]]] = None,
                   boundary: str = "linear") -> np.ndarray:
    """(N,) boundary-corrected product kernel prod_j k_b((t_ij - tau_ij) / h_j) / h_j (1 / units^d).

    treatment, policy_treatment : (N, d) observed and policy doses. bandwidth : scalar or (d,) h > 0.
    support : (low (d,), high (d,)) the randomized range (default: the observed doses' range); the
        window of tau_ij is truncated to it. A policy dose outside the support is refused (the
        overlap check: no customer received anything like it), naming the row.
    boundary : "linear" (local-linear boundary kernel) or "renormalize" (module docstring).
    """
    _check_kernel(kernel)
    if boundary not in ("linear", "renormalize"):
        raise ValueError(f"boundary must be 'linear' or 'renormalize', got {boundary!r}")
    t = _as_2d(treatment, "treatment")
    tau = _as_2d(policy_treatment, "policy_treatment")
    if tau.shape != t.shape:
        raise ValueError(f"policy_treatment must have shape {t.shape} like treatment, got {tau.shape}")
    h = np.broadcast_to(np.asarray(bandwidth, dtype=np.float64), (t.shape[1],))
    if not np.all(np.isfinite(h) & (h > 0)):
        raise ValueError(f"bandwidth must be positive and finite, got {np.asarray(bandwidth).tolist()}")
    low, high = _support(t, support)
    outside = ~np.all((tau >= low - 1e-12) & (tau <= high + 1e-12), axis=1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"policy_treatment row {i}: dose {tau[i].tolist()} lies outside the randomized range "
            f"[{low.tolist()}, {high.tolist()}] ({int(outside.sum())} rows do): no customer received a dose "
            f"near it, the kernel DR cannot evaluate it")
    u = (t - tau) / h
    a0, a1, a2 = _moments((low - tau) / h, (high - tau) / h, kernel)
    if boundary == "renormalize":
        k = _pdf(u, kernel) / a0
    else:
        k = (a2 - a1 * u) * _pdf(u, kernel) / (a0 * a2 - a1 * a1)
    return np.prod(k / h, axis=1)


def _check_overlap(density: np.ndarray, weight: np.ndarray, policy_density: Optional[np.ndarray],
                   min_density: float, overlap: str) -> None:
    """Refuse (or warn about) policy doses that customers like the one at hand (almost) never received,
    and kernel windows resting on customers whose received dose had a tiny density (huge K_h / f)."""
    used = weight != 0
    if used.sum() < _MIN_WINDOW_ROWS:
        warnings.warn(f"kernel DR: only {int(used.sum())} customers lie within a bandwidth of their policy "
                      f"dose; the estimate rests on them alone (a wider bandwidth or more data)",
                      RuntimeWarning, stacklevel=3)
    msgs = []
    if policy_density is not None and np.any(policy_density < min_density):
        bad = policy_density < min_density
        i = int(np.flatnonzero(bad)[0])
        msgs.append(f"kernel DR overlap: {int(bad.sum())} customers' policy doses have a density f(tau|x) below "
                    f"min_density={min_density:.4g} (row {i}: {policy_density[i]:.4g}): customers like them were "
                    f"(almost) never given such a dose, their value would be the outcome model's extrapolation")
    thin = used & (density < min_density)
    if thin.any():
        i = int(np.flatnonzero(thin)[0])
        msgs.append(f"kernel DR overlap: {int(thin.sum())} customers in a policy dose's window have a density "
                    f"f(t|x) below min_density={min_density:.4g} (row {i}: {density[i]:.4g}); their weights "
                    f"K_h/f would dominate the estimate")
    for msg in msgs:
        if overlap == "raise":
            raise ValueError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def kernel_dr_scores(outcome, treatment, policy_treatment, mu_observed, mu_policy, density, bandwidth, *,
                     kernel: str = "epanechnikov", support=None, boundary: str = "linear", policy_density=None,
                     min_density: Optional[float] = None, overlap: str = "raise") -> np.ndarray:
    """(N,) kernel-DR pseudo-outcomes psi_i of a policy (module docstring); their mean is V(pi).

    outcome : (N,) realized profit y_i (currency units). treatment : (N, d) received doses t_i.
    policy_treatment : (N, d) the policy's doses tau_i = pi(x_i).
    mu_observed : (N,) model prediction mu(x_i, t_i) (cross-fitted); mu_policy : (N,) mu(x_i, tau_i).
        mu = 0 for both gives the kernel IPW estimator.
    density : (N,) generalized propensity score f(t_i | x_i) > 0 (1 / treatment units^d), known or estimated.
    bandwidth : scalar or (d,) (``bandwidth_rule``). kernel, support, boundary : see ``kernel_weights``.
    policy_density : optional (N,) f(tau_i | x_i), the density at the policy's own dose (from the same
        known or estimated f): the overlap check refuses policy doses that customers like x_i (almost)
        never received (a window of such customers is empty, and the value would be mu's extrapolation).
    min_density : the overlap floor (default 5 % of the uniform density on the support, i.e. weights at
        most 20x a uniform design's); overlap : "raise" (default) or "warn" when policy_density or a
        window's density falls below it.
    """
    y = _as_2d(outcome, "outcome")[:, 0]
    n = y.shape[0]
    arrays = {"mu_observed": mu_observed, "mu_policy": mu_policy, "density": density}
    mu_o, mu_p, f = (_as_2d(v, k)[:, 0] for k, v in arrays.items())
    for name, v in zip(arrays, (mu_o, mu_p, f)):
        if v.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) like outcome, got {v.shape}")
    if not np.all(f > 0):
        i = int(np.flatnonzero(~(f > 0))[0])
        raise ValueError(f"density must be > 0 at every received dose, row {i} has {f[i]}")
    if overlap not in ("raise", "warn"):
        raise ValueError(f"overlap must be 'raise' or 'warn', got {overlap!r}")
    t = _as_2d(treatment, "treatment")
    if t.shape[0] != n:
        raise ValueError(f"treatment must have {n} rows like outcome, got {t.shape[0]}")
    w = kernel_weights(t, policy_treatment, bandwidth, kernel=kernel, support=support, boundary=boundary)
    low, high = _support(t, support)
    floor = 0.05 / float(np.prod(high - low)) if min_density is None else float(min_density)
    pf = None if policy_density is None else _as_2d(policy_density, "policy_density")[:, 0]
    if pf is not None and pf.shape != (n,):
        raise ValueError(f"policy_density must have shape ({n},) like outcome, got {pf.shape}")
    _check_overlap(f, w, pf, floor, overlap)
    return mu_p + w / f * (y - mu_o)


def kernel_dr_value(scores, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> DRResult:
    """Mean of the kernel-DR scores with the project's shared-bootstrap CI (``dr_value``)."""
    return dr_value(scores, n_boot=n_boot, alpha=alpha, seed=seed)


def paired_difference(scores_a, scores_b, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> DRResult:
    """V(a) - V(b) of two policies scored on the same customers, with a paired CI.

    The mean of the differences is the difference of the means, and bootstrapping the per-customer
    differences resamples both policies' scores jointly (the same resamples as ``dr_value``)."""
    a = _as_2d(scores_a, "scores_a")[:, 0]
    b = _as_2d(scores_b, "scores_b")[:, 0]
    if a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b must score the same customers, got {a.shape} and {b.shape}")
    return dr_value(a - b, n_boot=n_boot, alpha=alpha, seed=seed)
