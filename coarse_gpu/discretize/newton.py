"""Near-optimal LP duals of the constrained assignment by damped Newton on the entropically smoothed
dual (``_newton_prices``): the starting and refined prices of ``constrained.assign_constrained``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from coarse_gpu.discretize.constraints import Prices

if TYPE_CHECKING:  # the problem type only annotates: constrained.py imports this module
    from coarse_gpu.discretize.constrained import _Problem


def _newton_prices(prob: _Problem, warm: Optional[Prices] = None,
                   schedule=(0.1, 0.03, 0.01, 0.003), max_iter: int = 40) -> Prices:
    """Near-optimal LP duals by damped Newton on the smoothed dual, eps decreasing through ``schedule``
    (relative to the mean row std of U), from ``warm`` prices if given.

    The LP dual is min over (g, lam) of D = sum_i max_k (U_ik + g_k - sum_c lam_c a_cik)
    + sum_k max(-g_k L_k, -g_k H_k) + sum_c max(lam_c hi_c, lam_c lo_c), a convex function of only
    K + C variables. Smoothing the max over k by eps * logsumexp(. / eps) and each box kink by a
    softplus of width eps makes it smooth and strictly convex (up to the uniform shift of g), so Newton
    with a backtracking line search converges in a handful of steps per temperature; each step costs
    O(N K (K + C)^2). (The Sinkhorn-style block updates of ``entropic_plan`` zig-zag here: the share
    potentials and the multipliers move the same customers, and at N = 20,000 with a binding budget
    they left lam 7 % off after 80 iterations, which made the restricted LP grow to 12,000 customers.)
    The multipliers are optimized as mu_c = lam_c s_c, s_c = mean_i |w_ic| max_k |v_ck|, so every
    coordinate is in profit units.
    """
    U, Wc, Vk = prob.U, prob.Wc, prob.Vk
    N, K = U.shape
    C = Wc.shape[1]
    spread = float(U.std(1).mean()) or 1.0
    sc = np.abs(Wc).mean(0) * np.abs(Vk).max(1) + 1e-300  # (C,)
    B = Wc / sc  # (N, C)
    big = 2.0 * np.abs(Wc).sum(0) * np.abs(Vk).max(1) + 1.0  # beyond any achievable |value|
    lo = np.where(np.isfinite(prob.lo), prob.lo, -big - np.abs(np.where(np.isfinite(prob.hi), prob.hi, 0.0)))
    hi = np.where(np.isfinite(prob.hi), prob.hi, big + np.abs(np.where(np.isfinite(prob.lo), prob.lo, 0.0)))
    L, H = prob.L.astype(np.float64), prob.H.astype(np.float64)
    BV = B[:, :, None] * Vk[None, :, :]  # (N, C, K): a_cik / s_c
    theta = np.zeros(K + C)
    if warm is not None:
        theta[:K], theta[K:] = warm.g, warm.lam * sc

    def parts(th, eps):
        g, mu = th[:K], th[K:]
        Z = (U + g - (B * mu) @ Vk) / eps
        zmax = Z.max(1, keepdims=True)
        E = np.exp(Z - zmax)
        tot = E.sum(1, keepdims=True)
        val = eps * float((np.log(tot) + zmax).sum())
        tau = eps
        val += float(np.sum(-g * L + (H - L) * tau * np.logaddexp(0.0, -g / tau)))
        val += float(np.sum((mu * lo + (hi - lo) * tau * np.logaddexp(0.0, mu / tau)) / sc))
        return val, E / tot

    levels = list(schedule)
    restarted = False
    while levels:
        rel = levels.pop(0)
        eps = rel * spread
        f, Pm = parts(theta, eps)
        stuck = False
        for _ in range(max_iter):
            grad, step = _newton_direction(theta, Pm, BV, (L, H, lo, hi), sc, eps)
            dec = float(grad @ step)  # ~ twice the distance to the minimum, in total profit
            if not dec > 1e-3 * eps:
                break
            t = 1.0
            while t > 1e-8:
                f2, P2 = parts(theta - t * step, eps)
                if f2 <= f - 0.25 * t * dec:
                    break
                t *= 0.5
            if t <= 1e-8:
                stuck = True
                break
            theta, f, Pm = theta - t * step, f2, P2
        if stuck and warm is not None and not restarted:
            # warm prices far from these treatments' (e.g. a phase-one start): the plan is one-hot there,
            # the Hessian vanishes and no Newton step descends; start cold, from a high temperature
            theta, restarted = np.zeros(K + C), True
            levels = [x for x in (0.1, 0.03) if x > rel] + [rel] + levels
    return Prices(theta[:K].copy(), theta[K:] / sc)



def _newton_direction(theta: np.ndarray, Pm: np.ndarray, BV: np.ndarray, box, sc: np.ndarray, eps: float):
    """(gradient, Newton step) of the smoothed dual at theta = (g (K,), mu (C,)): Pm (N, K) the plan,
    BV (N, C, K) the scaled constraint coefficients, box = (L, H (K,), lo, hi (C,)), sc (C,) the scales."""
    L, H, lo, hi = box
    K, C = Pm.shape[1], BV.shape[1]
    g, mu = theta[:K], theta[K:]
    sg, sm = _sigmoid(-g / eps), _sigmoid(mu / eps)
    mean_a = np.einsum("nk,nck->nc", Pm, BV)
    grad = np.concatenate([Pm.sum(0) - L - (H - L) * sg,
                           -mean_a.sum(0) + (lo + (hi - lo) * sm) / sc])
    # Hessian of the smoothed max: (1/eps) sum_i J_i (diag p_i - p_i p_i^T) J_i^T, J_i = [I; -a_i / s]
    Hgg = np.diag(Pm.sum(0)) - Pm.T @ Pm
    PA = Pm[:, None, :] * BV  # (N, C, K)
    Hgm = -(PA.sum(0).T - Pm.T @ mean_a)  # (K, C)
    Hmm = np.einsum("nck,ndk->cd", PA, BV) - mean_a.T @ mean_a
    Hs = np.block([[Hgg, Hgm], [Hgm.T, Hmm]]) / eps
    Hs[np.arange(K), np.arange(K)] += (H - L) * sg * (1 - sg) / eps
    Hs[np.arange(K, K + C), np.arange(K, K + C)] += (hi - lo) * sm * (1 - sm) / (eps * sc)
    Hs += np.eye(K + C) * (1e-9 * np.trace(Hs) / (K + C) + 1e-300)
    return grad, np.linalg.solve(Hs, grad)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))
