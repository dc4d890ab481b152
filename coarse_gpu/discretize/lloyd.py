"""The exact Lloyd alternation (the paper's "adapted Lloyd's algorithm"), batched over restarts.

Assignment step: each customer takes its best current treatment (with shares: the exact capacitated
assignment, ``exact.py``; under side constraints or support: the exact constrained assignment,
``constrained.py``). Location step: the K treatments move to the K *distinct* candidates maximizing the
summed profit of their segments (a K x M linear assignment, ``_best_distinct``, so two segments never
collapse onto one treatment; the current locations are feasible for it, so the objective never
decreases). Repeat to a fixed point.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

if TYPE_CHECKING:  # annotations only: state.py imports this module for its phase methods
    from coarse_gpu.discretize.state import SearchState


def lloyd(run: SearchState, C0: torch.Tensor, phase: str, restart_ids, prices=None):
    """Exact alternation from (R, K) starts; returns (C (R, K), objective (R,) float64, prices).

    Under side constraints the location step is priced by each restart's multipliers and no longer
    monotone, so every restart keeps its best feasible set and stops at the first iteration that
    does not improve it (an infeasible set scores -inf: its phase-one prices move it toward
    feasibility, for at most max_iter iterations).
    """
    src, k = run.src, run.k
    R = C0.shape[0]
    C = C0.clone()
    obj = torch.full((R,), -math.inf, dtype=torch.float64)
    active = np.ones(R, dtype=bool)
    prices = list(prices) if prices is not None else [None] * R
    guard = run.rows_priced
    best = [(C[r].clone(), -math.inf, prices[r]) for r in range(R)] if guard else []  # per restart: its best
    for it in range(int(run.opts["max_iter"])):
        act = np.flatnonzero(active)
        if act.size == 0:
            break
        Ca = C[torch.as_tensor(act, device=C.device)]
        U = src.columns(Ca.reshape(-1)).view(-1, act.size, k)  # this process's rows (all but sharded)
        A = torch.empty(U.shape[0], act.size, dtype=torch.long, device=U.device)
        feasible = np.ones(act.size, dtype=bool)
        for j, r in enumerate(act):
            A[:, j], prices[r], feasible[j] = run.hard_assign(U[:, j], prices[r], Ca[j], integral=False)
        vals = src.reduce_sum(U.gather(2, A[:, :, None])[:, :, 0].to(torch.float64).sum(0)).cpu()
        if guard:
            vals = torch.tensor([run.value(U[:, j], A[:, j], prices[r], feasible[j])
                                 for j, r in enumerate(act)], dtype=torch.float64)
        counts = src.reduce_sum(torch.stack([torch.bincount(A[:, j], minlength=k) for j in range(act.size)]))
        S = src.segment_scores(A, k).to(torch.float64).cpu().numpy()  # (Ra, K, M)
        for j, r in enumerate(act):
            obj[r] = vals[j]
            run.trace.append({"restart": int(restart_ids[r]), "phase": phase, "eps": 0.0, "iter": it,
                               "objective": float(vals[j]) * run.unit, "marginal_error": 0.0})
            if guard:
                if feasible[j] and not float(vals[j]) > best[r][1] + run.rel_tol * (abs(best[r][1]) + 1.0) \
                        and math.isfinite(best[r][1]):
                    active[r] = False  # no better than this restart's best: stop there
                    continue
                if feasible[j]:
                    best[r] = (C[r].clone(), float(vals[j]), prices[r])
            empty = torch.nonzero(counts[j] == 0).flatten().tolist()
            if empty and feasible[j]:
                cur = _reseed_empty(run, U[:, j], A[:, j], C[r], empty, float(vals[j]))
                if cur is not None:
                    C[r] = cur
                    continue
            new = _location_step(run, S[j], A[:, j], C[r], prices[r])
            if new is None:
                active[r] = False
            else:
                C[r] = torch.as_tensor(new, device=C.device)
    if guard:
        for q in range(R):
            C[q], obj[q], prices[q] = best[q][0], best[q][1], best[q][2]
    return C, obj, prices



def _reseed_empty(run: SearchState, U: torch.Tensor, a: torch.Tensor, C: torch.Tensor, empty: list,
                  value: float) -> Optional[torch.Tensor]:
    """One restart's columns C (K,) with its empty segments re-seeded where they gain most (never lowers
    the objective), or None when no candidate gains anything.

    Only a strictly positive gain counts: when every customer already has its best candidate among the
    other treatments (e.g. a model whose ideal points sit on a few arms), no candidate attracts anyone,
    and re-seeding would cycle to max_iter at an unchanged objective; the empty treatment is then
    harmless and the location step goes on. U (N, K) the restart's profits, a (N,) its assignment.
    """
    src = run.src
    best_i = U.gather(1, a[:, None])[:, 0]
    cur = C.clone()
    reseeded = False
    for e in empty:
        gain = src.gains(best_i)
        gain[cur] = -math.inf
        m = int(gain.argmax())
        if not float(gain[m]) > run.rel_tol * (abs(value) + 1.0):
            break
        cur[e] = m
        reseeded = True
        best_i = torch.maximum(best_i, src.columns(torch.tensor([m], device=src.device))[:, 0])
    return cur if reseeded else None


def _location_step(run: SearchState, S: np.ndarray, a: torch.Tensor, C: torch.Tensor, prices) -> Optional[np.ndarray]:
    """The K distinct candidates one restart moves to from its segment scores S (K, M) (priced under side
    constraints, at most a supporting group's capacity per group), or None at a fixed point."""
    Sj = run.priced_scores(S, a, prices)
    new = _best_distinct(Sj, C.cpu().numpy(), run.rel_tol)
    if run.support is not None:  # no more slots on a supporting group than it can fill
        fixed = _repair_groups(Sj, new if new is not None else C.cpu().numpy(), run.cand_group, run.group_cap)
        new = fixed if new is not None or not np.array_equal(fixed, C.cpu().numpy()) else None
    return new


def _best_distinct(S: np.ndarray, current: np.ndarray, rel_tol: float) -> Optional[np.ndarray]:
    """K distinct columns maximizing sum_k S[k, c_k] (linear assignment), or None if no strict gain."""
    rows, cols = linear_sum_assignment(S, maximize=True)
    new = np.empty(S.shape[0], dtype=np.int64)
    new[rows] = cols
    cur_val = float(S[np.arange(S.shape[0]), current].sum())
    new_val = float(S[np.arange(S.shape[0]), new].sum())
    if new_val > cur_val + rel_tol * (abs(cur_val) + np.abs(S).max() + 1e-30) and not np.array_equal(new, current):
        return new
    return None


def _repair_groups(S: np.ndarray, cols: np.ndarray, groups: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """K distinct candidates with at most cap[g] of them in supporting group g (``Support``): while a
    group is over-subscribed, the slot on it whose best candidate in a group with room loses the
    least score S (K, M) moves there. (The K x M linear assignment of the location step cannot hold
    group capacities; two slots on one arm's candidates would split its supporters and both fall
    short.)"""
    cols = np.asarray(cols, dtype=np.int64).copy()
    M = S.shape[1]
    while True:
        used = np.bincount(groups[cols], minlength=cap.size)
        over = np.flatnonzero(used > cap)
        if over.size == 0:
            return cols
        room = (used[groups] < cap[groups]) & ~np.isin(np.arange(M), cols)
        if not room.any():
            return cols
        best = None
        for k in np.flatnonzero(np.isin(groups[cols], over)):
            m = int(np.flatnonzero(room)[S[k, room].argmax()])
            loss = S[k, cols[k]] - S[k, m]
            if best is None or loss < best[0]:
                best = (loss, k, m)
        assert best is not None  # an over-subscribed group holds a slot
        cols[best[1]] = best[2]
