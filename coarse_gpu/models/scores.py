"""Doubly robust (AIPW) pseudo-outcomes per customer and arm.

For customer i who received arm A_i with known probability e_i, an outcome model mu_a(x) and any arm a:

    Gamma_ia = mu_a(x_i) + 1{A_i = a} / e_i * (y_i - mu_a(x_i))

E[Gamma_ia | x_i] = pi_i(a) when either the propensities (always, in an experiment) or the outcome
model is right, so column means estimate arm values, differences of columns estimate effects
(ATE_ab = mean(Gamma_a - Gamma_b), with se from the per-customer differences), and rows can be
regressed on x for policy learning / evaluation. The outcome model should be cross-fitted
(``CrossFitted.predict_arms_oof``) so that no customer's own outcome shaped its mu.

This is the unit-vector special case of the evaluation module's policy score
(``coarse_gpu.evaluate.dr.dr_scores`` with kappa = e_a), which is reused here, not re-implemented.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from coarse_gpu.evaluate.dr import dr_scores

__all__ = ["aipw_ate", "aipw_scores", "model_aipw_scores"]


def aipw_scores(outcome, arm, propensity, mu_arms) -> np.ndarray:
    """(N, A) AIPW pseudo-outcomes Gamma_ia (module docstring).

    outcome (N,), arm (N,) int in [0, A), propensity (N,) probability of the received arm in (0, 1],
    mu_arms (N, A) outcome-model predictions at every arm. Inputs are validated by ``dr_scores``.
    """
    mu = np.asarray(mu_arms.detach().cpu().numpy() if hasattr(mu_arms, "detach") else mu_arms, dtype=np.float64)
    if mu.ndim != 2:
        raise ValueError(f"mu_arms must have shape (N, A), got {mu.shape}")
    n, n_arms = mu.shape
    out = np.empty((n, n_arms))
    eye = np.eye(n_arms)
    for a in range(n_arms):
        kappa = np.broadcast_to(eye[a], (n, n_arms))
        out[:, a] = dr_scores(outcome, arm, propensity, mu, mu[:, a], kappa)
    return out


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
