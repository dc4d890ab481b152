"""Semi-relaxed entropic OT between N customers (mass 1/N each) and K treatment columns with boxed masses.

Given the profits U (N, K) of the K current treatments, the entropic plan solves

    max_P  sum_ik P_ik U_ik - eps sum_ik P_ik (log P_ik - 1)
    s.t.   sum_k P_ik = 1/N                 (every customer is served, mass 1/N)
           lo <= s_k = sum_i P_ik <= hi      (treatment k's share; lo = 0, hi = 1 means free masses)

Dual (Lagrange multipliers nu_k >= 0 for s_k >= lo, mu_k >= 0 for s_k <= hi, g_k = nu_k - mu_k):
the plan is P_ik = exp((U_ik + f_i + g_k) / eps) with the row potential
    f_i = -eps * logsumexp_k((U_ik + g_k) / eps) - eps * log N        (rows sum to 1/N exactly)
and g minimizes the convex dual  eps * sum_i exp(...)  - sum_i f_i / N + sum_k h_k(g_k),
h_k(g) = -lo * g for g >= 0 and -hi * g for g < 0 (the support function of the box).
Exact block minimization over g_k with f fixed: with b_k = sum_i exp((U_ik + f_i) / eps) (the column
mass at g_k = 0), s_k(g_k) = exp(g_k / eps) b_k and the optimality condition is
    g_k > 0 => s_k = lo,   g_k < 0 => s_k = hi,   g_k = 0 => lo <= s_k <= hi,
i.e. g_k = eps * clip(0, [log(lo / b_k), log(hi / b_k)])  (project 0 onto that interval).
In terms of the current column sums S_k = exp(g_k / eps) b_k this is

    g_k <- clip(0, [g_k + eps log(lo / S_k),  g_k + eps log(hi / S_k)]).

Alternating the two exact block updates is Sinkhorn's algorithm for this box-constrained problem
(block coordinate ascent on a smooth concave dual; no Dykstra corrections are needed because the
box is handled exactly in the dual). Without share constraints g = 0 and the plan is a row softmax.
Everything is in the log domain, so tiny eps is safe.

Why plain torch here rather than GeomLoss: GeomLoss' Sinkhorn returns (debiased) divergences and
dual potentials between two point clouds with *fixed* masses; it has no semi-relaxed plan with free
or boxed column masses, and its cost is a function of point coordinates, not an arbitrary profit
table. The plan here is N x K with K ~ 5, so dense torch log-sum-exp is already memory-bound optimal.
"""
from __future__ import annotations

import math
from typing import Optional

import torch


def entropic_plan(
    U: torch.Tensor,
    eps,
    lo: float = 0.0,
    hi: float = 1.0,
    g: Optional[torch.Tensor] = None,
    tol: float = 1e-5,
    max_iter: int = 1000,
):
    """Box-constrained semi-relaxed entropic plan, batched over restarts.

    Parameters
    ----------
    U : (N, K) or (N, R, K) profits of the chosen columns (R independent problems share the rows).
    eps : positive float (or (R,) tensor): entropic temperature in profit units.
    lo, hi : column-share box (fractions of the total mass 1).
    g : optional warm start (K,) or (R, K) column potentials.
    tol : stop when the summed share violation sum_k (s_k - hi)_+ + (lo - s_k)_+ is below tol.

    Returns
    -------
    P : plan, same shape as U; every row sums to exactly 1/N.
    g : column potentials (R, K) (or (K,)).
    err : (R,) (or scalar) share violation of the returned plan.
    n_iter : iterations used.
    """
    squeeze = U.ndim == 2
    if squeeze:
        U = U[:, None, :]
        if g is not None and g.ndim == 1:
            g = g[None, :]
    N, R, K = U.shape
    if isinstance(eps, torch.Tensor):
        eps_t = eps.to(U).reshape(1, -1, 1) if eps.numel() > 1 else eps.to(U).reshape(1, 1, 1)
    else:
        eps_t = torch.tensor(float(eps), dtype=U.dtype, device=U.device)
    g = torch.zeros(R, K, dtype=U.dtype, device=U.device) if g is None else g.to(U).reshape(R, K).clone()
    free = lo <= 0.0 and hi >= 1.0
    log_lo = math.log(lo) if lo > 0 else -math.inf
    log_hi = math.log(hi) if hi < 1 else 0.0
    logN = math.log(N)
    eps_rk = eps_t.reshape(-1, 1) if eps_t.ndim == 3 else eps_t  # broadcastable against (R, K)
    err = torch.zeros(R, dtype=U.dtype, device=U.device)
    # Floor on log-weights relative to each row's best column: entries below it are set to the floor
    # (a relative weight < 1e-25, far below the dtype's resolution). This keeps every exp() and every
    # plan entry a *normal* float: subnormal arithmetic is ~100x slower on x86 CPUs.
    floor = -(math.log(torch.finfo(U.dtype).tiny) * -1.0 - math.log(max(N, 2) * K) - 2.0)
    floor = max(floor, -700.0)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        logits = (U + g) / eps_t
        z = (logits - logits.amax(dim=2, keepdim=True)).clamp_min(floor)
        logP = z - torch.log(torch.exp(z).sum(dim=2, keepdim=True)) - logN
        if free:
            break
        S = torch.exp(logP).sum(0)  # (R, K) column shares
        err = (torch.relu(S - hi) + torch.relu(lo - S)).sum(1)
        if float(err.max()) <= tol:
            break
        logS = torch.log(S.clamp_min(torch.finfo(U.dtype).tiny))
        a = g + eps_rk * (log_lo - logS)
        b = g + eps_rk * (log_hi - logS)
        g = torch.maximum(a, torch.minimum(torch.zeros_like(b), b))
    P = torch.exp(logP)
    if not free:
        S = P.sum(0)
        err = (torch.relu(S - hi) + torch.relu(lo - S)).sum(1)
    if squeeze:
        return P[:, 0, :], g[0], err[0], n_iter
    return P, g, err, n_iter


def entropic_value(U: torch.Tensor, eps: float, block: int = 1 << 14) -> float:
    """Total profit N * sum_ik P_ik U_ik of the free-mass plan P_ik ∝ exp(U_ik / eps), rows 1/N, for U (N, K).

    The plan ``entropic_plan`` returns without share bounds, evaluated in row blocks: the plan is only
    needed through this sum, and block-sized temporaries stay in cache where whole N x K ones do not
    (~0.1 s of page faults at N = 1e6 on CPU).
    """
    N = U.shape[0]
    step = N if U.device.type == "cuda" else block
    total = torch.zeros((), dtype=torch.float64, device=U.device)
    for lo in range(0, N, step):
        u = U[lo:lo + step]
        total += (torch.softmax(u / eps, dim=1) * u).to(torch.float64).sum()
    return float(total)
