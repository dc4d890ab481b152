"""The programs HiGHS solves for the constrained assignment (scipy): the restricted LP of the customers
left free (``_rows``, ``_lp``) and the rounding of its optimum to an integral assignment (``_round``,
``_milp``); see ``constrained.py`` for the scheme and its certificates."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from coarse_gpu.discretize.constraints import Prices

if TYPE_CHECKING:  # the problem type only annotates: constrained.py imports this module
    from coarse_gpu.discretize.constrained import _Problem

_MILP_SECONDS = 10.0  # time limit of one rounding MILP (see _milp)
_MILP_MAX = 1024  # customers the rounding MILP may free (beyond: the assignment's gap is reported, not closed)


def _values_rows(prob: _Problem, a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(mask)
    if prob.Wc.shape[1] == 0:
        return np.zeros(0)
    return np.einsum("nc,cn->c", prob.Wc[idx], prob.Vk[:, a[idx]])


def _make_room(free: np.ndarray, a0: np.ndarray, order: np.ndarray, L: np.ndarray, H: np.ndarray) -> None:
    """Free the least committed customers of over-full columns (and of columns above L when the free
    customers cannot fill the columns below L), so that the restricted share bounds can hold."""
    K = L.shape[0]
    for _ in range(2 * K + 2):
        used = np.bincount(a0[~free], minlength=K)
        over = used - H
        short = int(np.maximum(L - used, 0).sum()) - int(free.sum())
        if over.max() <= 0 and short <= 0:
            return
        for k in range(K):
            need = int(over[k]) if over[k] > 0 else 0
            if short > 0 and used[k] > L[k]:
                need = max(need, min(short, int(used[k] - L[k])))
                short -= need
            if need > 0:
                cand = order[(a0[order] == k) & ~free[order]][:need]
                free[cand] = True


def _rows(prob: _Problem, F: np.ndarray, L: np.ndarray, H: np.ndarray, vfix: np.ndarray):
    """Sparse rows of the restricted problem on customers F: (A_eq, A_ub, b_ub, kinds), x_ik i-major;
    side rows are divided by their largest coefficient (HiGHS' tolerances are absolute)."""
    n, K = F.size, prob.U.shape[1]
    nv = n * K
    ix = np.arange(nv)
    A_eq = sparse.csr_matrix((np.ones(nv), (ix // K, ix)), shape=(n, nv))
    blocks: list = []
    b: list = []
    kinds: list[tuple[str, Any, float]] = []  # (row kind, share column or constraint, scale)
    col = sparse.csr_matrix((np.ones(nv), (ix % K, ix)), shape=(K, nv))
    up = np.flatnonzero(H < n)
    if up.size:
        blocks.append(col[up])
        b.append(H[up].astype(np.float64))
        kinds += [("H", k, 1.0) for k in up]
    low = np.flatnonzero(L > 0)
    if low.size:
        blocks.append(-col[low])
        b.append(-L[low].astype(np.float64))
        kinds += [("L", k, 1.0) for k in low]
    for c in range(prob.Wc.shape[1]):
        coef = (prob.Wc[F, c][:, None] * prob.Vk[c][None, :]).ravel()
        s = float(np.abs(coef).max())
        if s == 0.0:  # no free customer can change this row (HiGHS' IPM fails on empty rows): check it here
            if vfix[c] > prob.hi[c] + prob.tol[c] or vfix[c] < prob.lo[c] - prob.tol[c]:
                kinds.append(("infeasible", c, 1.0))
            continue
        row = sparse.csr_matrix(coef[None, :] / s)
        if np.isfinite(prob.hi[c]):
            blocks.append(row)
            b.append(np.array([(prob.hi[c] - vfix[c]) / s]))
            kinds.append(("hi", c, s))
        if np.isfinite(prob.lo[c]):
            blocks.append(-row)
            b.append(np.array([-(prob.lo[c] - vfix[c]) / s]))
            kinds.append(("lo", c, s))
    A_ub = sparse.vstack(blocks).tocsr() if blocks else None
    return A_eq, A_ub, (np.concatenate(b) if b else None), kinds


def _lp(prob: _Problem, F: np.ndarray, L: np.ndarray, H: np.ndarray, vfix: np.ndarray):
    """LP on the customers F with residual bounds: (x (|F|, K), Prices) or None when infeasible."""
    n, K = F.size, prob.U.shape[1]
    if np.any(L > H) or L.sum() > n or H.sum() < n:
        return None
    A_eq, A_ub, b_ub, kinds = _rows(prob, F, L, H, vfix)
    if any(kind == "infeasible" for kind, _, _ in kinds):
        return None
    u = float(np.abs(prob.U[F]).max()) or 1.0  # objective in units of u: duals scale back by u
    # interior point + crossover: a vertex (few split customers) at 5x the speed of dual simplex on
    # these LPs (0.2 s against 1.0 s for 4096 x 5 with two dense side rows, measured)
    for method in ("highs-ipm", "highs-ds"):  # dual simplex when the interior point method fails numerically
        res = linprog(-prob.U[F].ravel() / u, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=np.ones(n), bounds=(0, None),
                      method=method, options={"dual_feasibility_tolerance": 1e-9, "primal_feasibility_tolerance": 1e-9})
        if res.status in (0, 2):
            break
    if res.status == 2:
        return None
    if res.status != 0:
        raise RuntimeError(f"constrained assignment: HiGHS failed on the restricted LP ({res.message})")
    g = np.zeros(K)
    lam = np.zeros(prob.Wc.shape[1])
    marg = res.ineqlin.marginals * u if A_ub is not None else np.zeros(0)
    for (kind, j, s), mrg in zip(kinds, marg):
        # marginal = d(min -U x)/d(rhs) <= 0; see the module docstring for the sign of each price
        if kind == "H":
            g[j] += mrg
        elif kind == "L":
            g[j] -= mrg
        elif kind == "hi":
            lam[j] -= mrg / s
        else:
            lam[j] += mrg / s
    return res.x.reshape(n, K), Prices(g, lam)


def _round(prob: _Problem, x: np.ndarray, prices: Prices):
    """Exact integral assignment from the optimal LP x (module docstring, step 3): (a, ok, gap), gap =
    LP bound minus the value (0 if certified optimal, else an upper bound on the loss)."""
    N, K = x.shape
    a = x.argmax(1)
    frac = x.max(1) < 1.0 - 1e-9
    if not frac.any() and _feasible(prob, a):
        return a, True, 0.0
    P = prob.priced(prices)
    rows = np.arange(N)
    rc = P.max(1)[:, None] - P
    rc[rows, a] = np.inf
    margin = rc.min(1)  # cheapest move away from the LP's choice
    margin[frac] = -np.inf
    order = np.argsort(margin, kind="stable")
    lp_value = float((prob.U * x).sum())
    span = float(prob.U.max() - prob.U.min()) + 1e-300
    n_f = min(N, int(frac.sum()) + max(64, 4 * (K + prob.Wc.shape[1])))
    best = None
    while True:
        free = np.zeros(N, dtype=bool)
        free[order[:n_f]] = True
        aF, solved = _milp(prob, np.flatnonzero(free), a)
        if aF is not None:
            cand = a.copy()
            cand[free] = aF
            delta = max(0.0, lp_value - float(prob.U[rows, cand].sum()))
            if best is None or delta < best[1]:
                best = (cand, delta)
            # no customer left fixed could move at a loss below delta: certified optimal (only when the
            # MILP of the free ones was solved to optimality, not stopped at its time limit)
            if solved and (n_f == N or not np.any(margin[~free] < delta - 1e-9 * span)):
                return cand, True, 0.0
            if not solved:  # a larger MILP would not finish either: keep the feasible incumbent, gap reported
                return best[0], True, best[1]
        if n_f == N or 4 * n_f > max(_MILP_MAX, int(frac.sum()) + 64):
            if best is not None:
                return best[0], True, best[1]
            if n_f == N:
                return a, False, 0.0
        n_f = min(N, 4 * n_f)


def _feasible(prob: _Problem, a: np.ndarray) -> bool:
    counts = np.bincount(a, minlength=prob.U.shape[1])
    if np.any(counts < prob.L) or np.any(counts > prob.H):
        return False
    v = prob.values(a)
    return bool(np.all(v >= prob.lo - prob.tol) and np.all(v <= prob.hi + prob.tol))


def _milp(prob: _Problem, F: np.ndarray, a: np.ndarray):
    """Integral assignment of the customers F (others fixed at a) by HiGHS, exactly feasible, and whether
    HiGHS proved it optimal; (None, False) when it found none. A budget with few free customers is a
    knapsack that HiGHS can branch on for minutes (measured: > 2 min on 1,500 x 99 at K = 4), hence the
    time limit: past it the incumbent is returned and the rounding gap says what it may lose."""
    N, K = prob.U.shape
    fixed = np.ones(N, dtype=bool)
    fixed[F] = False
    used = np.bincount(a[fixed], minlength=K)
    L, H = np.maximum(prob.L - used, 0), prob.H - used
    n = F.size
    if np.any(L > H) or L.sum() > n or H.sum() < n:
        return None, False
    vfix = _values_rows(prob, a, fixed)
    shrink = np.zeros(prob.Wc.shape[1])
    for _ in range(4):
        A_eq, A_ub, b_ub, kinds = _rows(prob, F, L, H, vfix)
        if any(kind == "infeasible" for kind, _, _ in kinds):
            return None, False
        cons = [LinearConstraint(A_eq, 1.0, 1.0)]
        if A_ub is not None:
            tight = np.array([shrink[j] / s if kind in ("hi", "lo") else 0.0 for kind, j, s in kinds])
            cons.append(LinearConstraint(A_ub, -np.inf, b_ub - tight))
        u = float(np.abs(prob.U[F]).max()) or 1.0
        res = milp(-prob.U[F].ravel() / u, constraints=cons, integrality=np.ones(n * K, dtype=np.uint8),
                   bounds=Bounds(0, 1), options={"mip_rel_gap": 0.0, "time_limit": _MILP_SECONDS})
        if res.x is None:
            return None, False
        aF = res.x.reshape(n, K).argmax(1)
        full = a.copy()
        full[F] = aF
        v = prob.values(full)
        over = np.maximum(v - prob.hi, prob.lo - v)
        if np.all(over <= prob.tol):
            return aF, bool(res.status == 0)
        # HiGHS' feasibility tolerance let a row slip by more than float rounding: tighten it and retry
        shrink = np.where(over > prob.tol, shrink + 2.0 * over, shrink)
    return None, False
