"""The 1-swap local search that polishes the best solutions of the search: ``swap`` (no share bounds;
screened by ``profit.swap_values``) and ``swap_constrained`` (shares and side constraints; pruned by
Lagrangian bounds, ``_swap_bounds``)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from coarse_gpu.discretize.profit import relu_colsum, swap_values

if TYPE_CHECKING:  # annotations only: state.py imports this module for its phase methods
    from coarse_gpu.discretize.state import SearchState


def swap(run: SearchState, C: torch.Tensor, obj: float, gen: torch.Generator, restart_id: int):
    """1-swap local search: replace one treatment by one candidate while that raises the objective.

    The value of swapping slot k for candidate m is sum_i max(r_ik, Pi_im), r_ik = the best profit of
    customer i without slot k: all (k, m) pairs cost two passes over a screening sample of customers
    (``swap_values``; all customers when N * M is small: then the screening is exact). The best
    screened swaps are verified on all customers. When no swap improves, a Lloyd polish; stops
    when neither a swap nor the polish improves. (No share constraints.)
    """
    src, k, M = run.src, run.k, run.src.m
    if k >= M:
        return C, obj
    rows, n_s, exact_screen = screen_rows(run, gen)
    Xs = src.submatrix(rows)
    polished = True  # the starts are Lloyd fixed points
    for rnd in range(int(run.opts["max_iter"])):
        Us = Xs[:, C]
        base = Us.max(1).values
        G = swap_values(Xs, Us)
        G[:, C] = -math.inf
        delta = (G - base.to(torch.float64).sum()).flatten()
        tol = run.rel_tol * (abs(obj) + 1.0)
        order = torch.argsort(delta, descending=True)[:4]
        accepted = False
        for f in order.tolist():
            if float(delta[f]) <= (tol if exact_screen else -math.inf):
                break
            j, m = divmod(f, M)
            C2 = C.clone()
            C2[j] = m
            val = run.objective(C2)
            if val > obj + tol:
                C, obj, accepted = C2, val, True
                break
        run.trace.append({"restart": restart_id, "phase": "swap", "eps": 0.0, "iter": rnd, "objective": obj,
                           "marginal_error": 0.0, "accepted": accepted})
        if accepted:
            polished = False
            continue
        if polished:  # no improving swap from a Lloyd fixed point: done
            break
        # One Lloyd polish per run of accepted swaps (not one per swap: each polish costs a few
        # full passes over the profits, a swap round one screening pass and a verification).
        Cp, objp, _ = run.lloyd(C[None], "swap-polish", [restart_id])
        polished = True
        val = run.objective(Cp[0])
        if not val > obj + tol:
            break
        C, obj = Cp[0], val
    return C, obj


def screen_rows(run: SearchState, gen: torch.Generator):
    """(rows (n_s,) sorted, n_s, exact): the customers a swap search screens on; all of them (exact
    screening) when N * M <= 2**22 and ``swap_rows`` is unset, else a random sample."""
    src, N, M = run.src, run.src.n, run.src.m
    n_s = run.opts["swap_rows"]
    n_s = min(N, N if n_s is None and N * M <= 2**22 else int(n_s or max(4096, 2**22 // M)))
    exact = n_s == N
    rows = torch.arange(N, device=src.device) if exact else \
        torch.randperm(N, generator=gen)[:n_s].sort().values.to(src.device)
    return rows, n_s, exact


def swap_constrained(run: SearchState, C: torch.Tensor, obj: float, prices, gen: torch.Generator, restart_id: int):
    """1-swap local search under share bounds and side constraints, pruned by Lagrangian bounds.

    With the current set's optimal prices (g, lam), weak duality bounds the value of ANY set: the
    set with slot j replaced by candidate m is worth at most
        B_jm = sum_i max(r_ij, Pi~_im + g_j) - sum_k (g_k^+ L_k - g_k^- H_k) + sum_c (lam_c^+ hi_c - lam_c^- lo_c),
    Pi~ = Pi - sum_c lam_c w_c v_c^T the priced profits, r_ij = customer i's best priced profit without
    slot j (K relu-sum passes over the screening rows). Swaps are verified (exact constrained
    assignment) in decreasing B_jm; with exact screening (all customers, N M <= 2**22) the search
    stops as soon as B_jm <= the current objective (or after 32 verifications), so the 1-swap
    neighbourhood is covered as far as the bounds are tight; otherwise the first 16 candidates
    per round are verified. An accepted swap
    refreshes the prices; a run of swaps ends with a Lloyd polish, as in ``swap``.
    """
    src, k, N, M = run.src, run.k, run.src.n, run.src.m
    if k >= M or prices is None:
        return C, obj, prices
    rows, n_s, exact_screen = screen_rows(run, gen)
    Xs = src.submatrix(rows).to(torch.float64)
    Ws = run.side_W[rows].to(torch.float64) if run.side is not None else None
    polished = True
    for rnd in range(int(run.opts["max_iter"])):
        B = _swap_bounds(run, Xs, Ws, C, prices, N / n_s)
        B[:, C] = -math.inf
        tol = run.rel_tol * (abs(obj) + 1.0)
        order = torch.argsort(B.flatten(), descending=True)
        accepted = False
        for n_ver, f in enumerate(order.tolist()):
            # at most 32 verifications a round even with exact screening: bounds that leave out
            # the support multipliers, or of sets far from this one, can be loose
            if float(B.flatten()[f]) <= (obj + tol if exact_screen else -math.inf) or n_ver >= (
                    32 if exact_screen else 16):
                break
            j, m = divmod(f, M)
            C2 = C.clone()
            C2[j] = m
            U2 = src.columns(C2)
            a2, p2, ok = run.hard_assign(U2, prices, C2, integral=False)
            val = run.value(U2, a2, p2, ok)
            if val > obj + tol:
                C, obj, prices, accepted = C2, val, p2, True
                break
        run.trace.append({"restart": restart_id, "phase": "swap", "eps": 0.0, "iter": rnd, "objective": obj,
                           "marginal_error": 0.0, "accepted": accepted})
        if accepted:
            polished = False
            continue
        if polished:
            break
        Cp, objp, pp = run.lloyd(C[None], "swap-polish", [restart_id], prices=[prices])
        polished = True
        if not float(objp[0]) > obj + tol:
            break
        C, obj, prices = Cp[0], float(objp[0]), pp[0]
    return C, obj, prices


def _swap_bounds(run: SearchState, Xs: torch.Tensor, Ws, C: torch.Tensor, prices, unit: float) -> torch.Tensor:
    """(K, M) Lagrangian bounds B_jm of ``swap_constrained`` on the screening rows (x ``unit``)."""
    k = run.k
    g = torch.as_tensor(prices.g, dtype=torch.float64, device=Xs.device)
    Xp = Xs
    const = -float(np.sum(np.maximum(prices.g, 0) * run.L - np.maximum(-prices.g, 0) * run.H))
    if run.side is not None and prices.lam.size:
        # support multipliers are left out (0): weak duality holds for any multipliers
        lam = torch.as_tensor(prices.lam[:run.n_side], dtype=torch.float64, device=Xs.device)
        Xp = Xs - (Ws * lam) @ run.side_V.to(torch.float64).T
        hi = np.where(np.isfinite(run.side.hi), run.side.hi, 0.0)  # lam > 0 only on a finite hi
        lo = np.where(np.isfinite(run.side.lo), run.side.lo, 0.0)
        lam_c = prices.lam[:run.n_side]
        const += float(np.sum(np.maximum(lam_c, 0) * hi - np.maximum(-lam_c, 0) * lo))
    Up = Xp[:, C] + g  # (n, K) priced profits of the current treatments
    B = torch.empty(k, Xs.shape[1], dtype=torch.float64, device=Xs.device)
    for j in range(k):
        r = torch.cat([Up[:, :j], Up[:, j + 1:]], 1).amax(1) if k > 1 else torch.full_like(Up[:, 0], -math.inf)
        if k == 1:
            B[j] = (Xp + g[j]).sum(0)
            continue
        B[j] = r.sum() + relu_colsum(Xp + g[j], r)
    return B * unit + const
