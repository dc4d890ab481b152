"""Doubly robust (AIPW) pseudo-outcomes per customer and arm.

For customer i who received arm A_i with known probability e_i, an outcome model mu_a(x) and any arm a:

    Gamma_ia = mu_a(x_i) + 1{A_i = a} / e_i * (y_i - mu_a(x_i))

E[Gamma_ia | x_i] = pi_i(a) when either the propensities (always, in an experiment) or the outcome
model is right, so column means estimate arm values, differences of columns estimate effects
(ATE_ab = mean(Gamma_a - Gamma_b), with se from the per-customer differences), and rows can be
regressed on x for policy learning / evaluation. The outcome model should be cross-fitted
(``CrossFitted.predict_arms_oof``) so that no customer's own outcome shaped its mu.

This is the unit-vector special case of the evaluation module's policy score
(``coarse_gpu.evaluate.dr.dr_scores`` with kappa = e_a); the models layer computes it itself
(evaluate/ sits above models/ and is not imported from here).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["aipw_ate", "aipw_scores", "model_aipw_scores", "pseudo_outcomes"]


def aipw_scores(outcome, arm, propensity, mu_arms) -> np.ndarray:
    """(N, A) AIPW pseudo-outcomes Gamma_ia (module docstring).

    outcome (N,), arm (N,) int in [0, A), propensity (N,) probability of the received arm in (0, 1],
    mu_arms (N, A) outcome-model predictions at every arm.
    """
    mu = np.asarray(mu_arms.detach().cpu().numpy() if hasattr(mu_arms, "detach") else mu_arms, dtype=np.float64)
    if mu.ndim != 2:
        raise ValueError(f"mu_arms must have shape (N, A), got {mu.shape}")
    n, n_arms = mu.shape
    y = np.asarray(outcome, dtype=np.float64).reshape(-1)
    a = np.asarray(arm).reshape(-1)
    e = np.asarray(propensity, dtype=np.float64).reshape(-1)
    if y.shape[0] != n or a.shape[0] != n or e.shape[0] != n:
        raise ValueError(f"outcome, arm and propensity must have N={n} entries like mu_arms")
    if a.size and (not np.all(np.mod(a, 1) == 0) or a.min() < 0 or a.max() >= n_arms):
        raise ValueError(f"arm must hold integer arm indices in [0, A={n_arms})")
    if not np.all((e > 0) & (e <= 1)):
        raise ValueError("propensity must lie in (0, 1]")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(mu))):
        raise ValueError("outcome and mu_arms must be finite")
    return pseudo_outcomes(y, a.astype(np.int64), e, mu)


def pseudo_outcomes(y: np.ndarray, arm: np.ndarray, e: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """(N, A) Gamma from validated float64 outcomes y (N,), int arms (N,), propensities e (N,), mu (N, A)."""
    gamma = np.array(mu, dtype=np.float64)
    rows = np.arange(y.shape[0])
    gamma[rows, arm] += (y - mu[rows, arm]) / e
    return gamma


def model_aipw_scores(model, X, t, y, propensity=None, mu_arms: Optional[np.ndarray] = None) -> np.ndarray:
    """(N, A) AIPW pseudo-outcomes at the fitted model's arms ``model.arms_`` for data (X, t, y).

    t : (N,) or (N, d) received treatments, each one of ``model.arms_``.
    propensity : (N,) probability of the received arm; None -> the empirical arm frequencies of t
        (right for a completely randomized experiment).
    mu_arms : (N, A) predictions to use instead of ``model.predict_arms(X)`` (pass out-of-fold ones).
    """
    arms = np.asarray(model.arms_, dtype=np.float64)
    tt = np.asarray(t, dtype=np.float64)
    if tt.ndim == 1:
        tt = tt[:, None]
    if tt.ndim != 2 or tt.shape[1] != arms.shape[1]:
        raise ValueError(f"t must have shape (N, {arms.shape[1]}), got {np.shape(t)}")
    match = np.all(tt[:, None, :] == arms[None, :, :], axis=2)
    if not match.any(1).all():
        bad = int(np.flatnonzero(~match.any(1))[0])
        raise ValueError(f"row {bad}: treatment {tt[bad].tolist()} is not one of the model's {len(arms)} arms")
    arm = match.argmax(1)
    if propensity is None:
        freq = np.bincount(arm, minlength=len(arms)) / len(arm)
        propensity = freq[arm]
    mu = model.predict_arms(X) if mu_arms is None else mu_arms
    return aipw_scores(y, arm, propensity, mu)


def aipw_ate(scores: np.ndarray, a: int, b: int = 0) -> tuple[float, float]:
    """(estimate, standard error) of E[pi(a) - pi(b)] from (N, A) AIPW scores."""
    diff = np.asarray(scores)[:, a] - np.asarray(scores)[:, b]
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(diff.shape[0]))
