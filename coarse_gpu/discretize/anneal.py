"""Deterministic annealing with the semi-relaxed entropic plan (the ``sinkhorn`` solver's core).

The hard assignment is replaced by the plan P_ik ∝ exp((Pi_ik + g_k) / eps) (``sinkhorn.py``: rows 1/N;
column masses free or boxed by the shares through the dual potentials g), the location step maximizes
sum_i P_ik Pi_im, and eps decreases geometrically from ``eps_start`` to the target (both relative to the
profit scale), warm-starting the potentials. Under side constraints the plan carries one multiplier per
constraint and the location step pays its price.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from coarse_gpu.discretize.constraints import Prices
from coarse_gpu.discretize.lloyd import _best_distinct
from coarse_gpu.discretize.profit import ProfitSource
from coarse_gpu.discretize.sinkhorn import entropic_plan

if TYPE_CHECKING:  # annotations only: state.py imports this module for its phase methods
    from coarse_gpu.discretize.state import SearchState


def anneal(run: SearchState, C0: torch.Tensor, eps_list, restart_ids, pbar=None, coarse: Optional[ProfitSource] = None,
           coarse_side=None):
    """Deterministic annealing with the entropic plan; returns (C (R, K), potentials g (R, K),
    multipliers lam (R, C) or None without side constraints).

    Under side constraints (``coarse_side``: those of the ``coarse`` sample) the plan carries one
    multiplier per constraint and the location step maximizes the priced scores.

    ``coarse``: a random subsample of the customers the whole annealing runs on. The location step
    only needs the segments' average profit curves, which a sample estimates well, and the exact
    Lloyd polish on all the search's customers follows; the cost per step on CPU is one skinny
    (RK x N) @ (N x M) product, memory-bound, so it scales with the rows read. (Running the last
    temperature on all customers instead gave the same objectives on the 72 stress instances of
    the closing note, at 2x the time.)
    """
    k, M = run.k, run.src.m
    R = C0.shape[0]
    C = C0.clone()
    g = lam = None
    side = run.side if coarse is None else coarse_side
    if side is not None:
        Wt = torch.as_tensor(side.W, device=run.src.device, dtype=run.src.dtype)
        Vt = torch.as_tensor(side.V, device=run.src.device, dtype=run.src.dtype)
        bounds = (torch.as_tensor(side.lo), torch.as_tensor(side.hi))
    for rel in eps_list:
        src = coarse if coarse is not None else run.src
        N = src.n
        eps = rel * run.scale
        for it in range(int(run.opts["iter_per_eps"])):
            U = src.columns(C.reshape(-1)).view(-1, R, k)
            if side is None:
                P, g, err, n_in = entropic_plan(U, eps, run.lo, run.hi, g=g, tol=float(run.opts["tol"]),
                                                max_iter=int(run.opts["sinkhorn_iter"]))
            else:  # one multiplier per constraint and restart; the location step pays its price
                Vk = Vt[C.reshape(-1)].view(R, k, -1).transpose(1, 2)  # (R, C, K)
                # fewer inner iterations: the multipliers' Newton steps keep improving across the
                # location updates and temperatures (warm starts), and the polish prices exactly
                P, g, err, n_in, lam = entropic_plan(U, eps, run.lo, run.hi, g=g, tol=float(run.opts["tol"]),
                                                     max_iter=min(50, int(run.opts["sinkhorn_iter"])),
                                                     side=(Wt, Vk, *bounds), lam=lam)
            if src.n_local != N:  # sharded (free masses): the plan's rows are 1/N of the whole sample
                P = P * (src.n_local / N)
            S = src.scores(P.reshape(-1, R * k)).view(R, k, M)
            if side is not None:
                S = S - torch.einsum("rkc,rc,mc->rkm", (P.reshape(N, R * k).T @ Wt).view(R, k, -1), lam, Vt)
            S = S.to(torch.float64).cpu().numpy()
            # totals in units of all the run's customers (estimates while on the coarse sample)
            soft = src.reduce_sum((P * U).to(torch.float64).sum((0, 2))).cpu() * (run.src.n * run.unit)
            hard = src.reduce_sum(U.max(2).values.to(torch.float64).sum(0)).cpu() * (run.src.n * run.unit / N)
            changed = False
            for r in range(R):
                run.trace.append({"restart": int(restart_ids[r]), "phase": "anneal", "eps": rel, "iter": it,
                                   "objective": float(hard[r]), "entropic_objective": float(soft[r]),
                                   "marginal_error": float(err[r]), "sinkhorn_iters": n_in, "rows": N})
                new = _best_distinct(S[r], C[r].cpu().numpy(), run.rel_tol)
                if new is not None:
                    C[r] = torch.as_tensor(new, device=C.device)
                    changed = True
            if not changed:
                break
        if pbar is not None:
            pbar.update(1)
    return C, g, lam


def _eps_schedule(eps_start: float, eps_target: float, decay: float) -> list[float]:
    if eps_start <= eps_target:
        return [eps_target]
    n = int(math.ceil(math.log(eps_target / eps_start) / math.log(decay)))
    out = [eps_start * decay**i for i in range(n)]
    return out + [eps_target]


def _anneal_and_polish(run: SearchState, starts, eps_list, ids, pbar, coarse, coarse_side):
    """Annealed restarts rounded and polished by Lloyd: (C (R, K), objective (R,), prices per restart)."""
    C_a, g, lam = run.anneal(starts, eps_list, ids, pbar, coarse=coarse, coarse_side=coarse_side)
    prices = None
    if run.constrained:
        f = run.src.n / coarse.n if coarse is not None else 1.0  # the sample's multipliers, per customer
        pad = np.zeros(run.k if run.support is not None else 0)  # the support rows' multipliers: cold
        prices = [Prices(g[r].to(torch.float64).cpu().numpy(),
                         np.concatenate([np.zeros(0) if lam is None else lam[r].to(torch.float64).cpu().numpy() * f,
                                         pad]))
                  for r in range(C_a.shape[0])]
    return run.lloyd(C_a, "polish", ids, prices=prices)
