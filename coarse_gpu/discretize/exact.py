"""Exact references: brute-force K-subset enumeration and the exact capacitated (share-constrained) assignment.

Capacitated hard assignment
---------------------------
With K fixed treatments and integer capacities L_k <= n_k <= H_k (n_k customers on treatment k), the
best assignment is the transportation LP

    max sum_ik x_ik U_ik   s.t.  sum_k x_ik = 1,  L_k <= sum_i x_ik <= H_k,  x >= 0,

whose constraint matrix is totally unimodular, so a vertex solution is integral. LP duality gives a
cheap exact optimality certificate for any integral assignment a: it is optimal iff there are column
prices g (K,) with
    (a) every customer takes a best priced column: U_{i,a_i} + g_{a_i} >= U_ik + g_k for all k,
    (b) g_k > 0 only where n_k = L_k and g_k < 0 only where n_k = H_k.
These are difference constraints on K + 1 nodes (the K columns and a "zero" node): an edge a -> b of
weight D_ab = min_{i: a_i = a} (U_ia - U_ib), an edge zero -> k of weight 0 when n_k > L_k and an edge
k -> zero of weight 0 when n_k < H_k. They are feasible iff that graph has no negative cycle (a negative
cycle IS an improving exchange of customers), and then the shortest-path distances are the prices.
``certify`` runs Bellman-Ford on this tiny graph in O(N K + K^3).

``assign_with_shares`` solves the LP with POT's network simplex (``ot.emd``, exact, C++) on a
transportation formulation: sources are the customers (mass 1) plus a dummy source holding the spare
capacity sum(H) - N, sinks are "mandatory" parts (capacity L_k) and "optional" parts (H_k - L_k) of each
column; the dummy may only fill optional parts. Network simplex is fast up to ~2e4 customers but grows
super-linearly (1e5 customers take minutes), so for larger N it solves only a *restricted* problem:
near-optimal prices g (passed in warm, e.g. the entropic dual potentials or the previous Lloyd iteration's
certificate, or the exact prices of a random 1/8 subsample, itself solved this way: multilevel) fix every customer whose
priced margin is large to its priced argmax; the ambiguous customers (smallest margins) are solved
exactly with the residual capacities. The result is then improved by cancelling negative exchange
cycles (moving, in bulk, the customers cheapest to move around an improving cycle of columns) on a
working set of the least committed customers, and the certificate is checked on the FULL problem; if it
fails the working set grows (x4, in the limit everybody). The returned assignment is therefore always
certified optimal, not approximately optimal.
(scipy's HiGHS was measured 15x slower than ot.emd on the same 1e4 x 5 instance, so it is not used.)
"""
from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from coarse_gpu.discretize.facility import best_subset
from coarse_gpu.discretize.spec import Solution

if TYPE_CHECKING:  # annotations only
    from coarse_gpu.discretize.state import Call, SearchState

_EMD_FULL_MAX = 6000  # customers solved directly by network simplex
_AMBIGUOUS0 = 4096  # first restricted-problem size
_PRICE_SAMPLE = 4096  # customers in the subsample whose exact solution gives the starting prices
_WORK0 = 65536  # working set of the cycle cancelling


def share_counts(n: int, k: int, min_share: Optional[float],
                 max_share: Optional[float]) -> tuple[np.ndarray, np.ndarray]:
    """Integer capacities (L, H) per column from share bounds: L = ceil(min_share N), H = floor(max_share N).

    Raises ValueError when the shares are out of range or infeasible (k * min_share > 1,
    k * max_share < 1, or no integer split of N customers exists).
    """
    lo = 0.0 if min_share is None else float(min_share)
    hi = 1.0 if max_share is None else float(max_share)
    if not (0.0 <= lo <= 1.0) or math.isnan(lo):
        raise ValueError(f"min_share must lie in [0, 1], got {min_share!r}")
    if not (0.0 < hi <= 1.0) or math.isnan(hi):
        raise ValueError(f"max_share must lie in (0, 1], got {max_share!r}")
    if lo > hi:
        raise ValueError(f"min_share={lo} exceeds max_share={hi}")
    if k * lo > 1.0 + 1e-12:
        raise ValueError(f"min_share={lo} is infeasible with k={k}: k * min_share = {k * lo:.4g} > 1")
    if k * hi < 1.0 - 1e-12:
        raise ValueError(f"max_share={hi} is infeasible with k={k}: k * max_share = {k * hi:.4g} < 1")
    L = int(math.ceil(lo * n - 1e-9))
    H = int(math.floor(hi * n + 1e-9))
    if k * L > n or k * H < n:
        raise ValueError(
            f"share bounds [min_share={lo}, max_share={hi}] admit no split of N={n} customers into k={k} "
            f"groups of integer sizes in [{L}, {H}]"
        )
    return np.full(k, L, dtype=np.int64), np.full(k, H, dtype=np.int64)


def _as_np64(U) -> np.ndarray:
    if isinstance(U, torch.Tensor):
        return U.detach().cpu().to(torch.float64).numpy()
    return np.asarray(U, dtype=np.float64)


def _finite_matrix(a, name: str, shape: str) -> np.ndarray:
    """``a`` as a float64 2-D array; ValueError naming ``name`` if it is not 2-D or not finite."""
    X = _as_np64(a)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D {shape} array, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or inf")
    return X


def certify(U: np.ndarray, a: np.ndarray, L: np.ndarray, H: np.ndarray, tol: Optional[float] = None):
    """Exact optimality certificate of an integral capacitated assignment (see module docstring).

    Returns (optimal: bool, prices g (K,) or None). ``tol`` is an absolute slack on profits (default
    1e-9 times the profit range), so ties and rounding never fail a truly optimal assignment.
    """
    N, K = U.shape
    counts = np.bincount(a, minlength=K)
    if np.any(counts < L) or np.any(counts > H):
        return False, None
    if tol is None:
        span = float(U.max() - U.min()) if U.size else 0.0
        tol = 1e-9 * max(span, 1e-300) + 1e-300
    Ua = U[np.arange(N), a]
    diff = Ua[:, None] - U  # cost of moving i from a_i to k
    D = np.full((K, K), np.inf)
    order = np.argsort(a, kind="stable")
    starts = np.searchsorted(a[order], np.arange(K))
    present = counts > 0
    if present.any():
        red = np.minimum.reduceat(diff[order], starts[present], axis=0)
        D[present] = red
    np.fill_diagonal(D, np.inf)
    Z = K  # the zero node
    Wt = np.full((K + 1, K + 1), np.inf)
    Wt[:K, :K] = D
    Wt[Z, :K] = np.where(counts > L, 0.0, np.inf)
    Wt[:K, Z] = np.where(counts < H, 0.0, np.inf)
    dist = np.zeros(K + 1)
    for _ in range(K + 2):
        cand = np.min(dist[:, None] + Wt, axis=0)
        improved = cand < dist - tol
        if not improved.any():
            g = dist[:K] - dist[Z]
            return True, g
        dist = np.where(improved, cand, dist)
    return False, None


def _emd_assign(U: np.ndarray, L: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Exact capacitated assignment of all rows of U by network simplex (see module docstring)."""
    import ot  # here: importing POT takes ~0.7 s (its backends); only the exact solve needs it

    n, K = U.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    L = np.maximum(L, 0)
    spare = int(H.sum() - n)
    span = float(U.max() - U.min())
    C_real = (U.max() - U)  # nonnegative cost of serving i with k
    cols_mand = np.flatnonzero(L > 0)
    cols_opt = np.flatnonzero(H - L > 0)
    C = np.concatenate([C_real[:, cols_mand], C_real[:, cols_opt]], axis=1)
    b = np.concatenate([L[cols_mand], (H - L)[cols_opt]]).astype(np.float64)
    a = np.ones(n)
    if spare > 0:
        big = 4.0 * K * (span + 1.0) + 1.0  # larger than any exchange path's gain: dummy never fills L
        dummy = np.concatenate([np.full(cols_mand.size, big), np.zeros(cols_opt.size)])[None, :]
        C = np.concatenate([C, dummy], axis=0)
        a = np.append(a, float(spare))
    G, log = ot.emd(a, b, np.ascontiguousarray(C), numItermax=max(10**7, 100 * n * K), log=True)
    if log.get("warning"):
        raise RuntimeError(f"exact capacitated assignment: network simplex did not converge ({log['warning']})")
    mass = np.zeros((n, K))
    mass[:, cols_mand] += G[:n, : cols_mand.size]
    mass[:, cols_opt] += G[:n, cols_mand.size:]
    return mass.argmax(1).astype(np.int64)


def _sample_prices(U: np.ndarray, L: np.ndarray, H: np.ndarray, prices=None) -> np.ndarray:
    """Starting prices: the exact certificate prices of a random subsample with proportional capacities.

    The optimal prices are quantile-like statistics of the customers' profit differences, so a
    subsample estimates them well (error ~ 1 / sqrt(n)). The subsample (1/8 of the customers, at least
    _PRICE_SAMPLE) is itself solved exactly by the same multilevel scheme, down to a network simplex.
    """
    N, K = U.shape
    # at most half of N so that the recursion shrinks and ends at the network simplex
    n = min(N // 2, max(_PRICE_SAMPLE, N // 8))
    rows = np.sort(np.random.default_rng(N).choice(N, n, replace=False))
    Ls = np.floor(L * n / N).astype(np.int64)
    Hs = np.minimum(np.ceil(H * n / N).astype(np.int64), n)
    _, g = _assign_with_counts(U[rows], Ls, Hs, prices)
    return g


def assign_with_shares(
    profit_NK,
    min_share: Optional[float] = None,
    max_share: Optional[float] = None,
    prices: Optional[np.ndarray] = None,
    return_prices: bool = False,
):
    """Exact share-constrained hard assignment of N customers to K columns.

    profit_NK : (N, K) profits (numpy or torch). min_share / max_share : share bounds per column
    (fractions of N, turned into integer counts L = ceil(min_share N), H = floor(max_share N)).
    prices : optional warm-start column prices (K,) (e.g. the entropic dual potentials).

    Returns the (N,) int64 assignment (certified optimal; see module docstring), and with
    ``return_prices=True`` also the certificate's prices g (K,).
    """
    U = _finite_matrix(profit_NK, "profit_NK", "(N, K)")
    N, K = U.shape
    L, H = share_counts(N, K, min_share, max_share)
    out = _assign_with_counts(U, L, H, prices)
    return out if return_prices else out[0]


def _assign_with_counts(U: np.ndarray, L: np.ndarray, H: np.ndarray, prices=None):
    N, K = U.shape
    a = U.argmax(1)
    ok, g = certify(U, a, L, H)
    if ok:
        return a, g
    if prices is not None:
        a = (U + np.asarray(prices, dtype=np.float64)).argmax(1)
        ok, g = certify(U, a, L, H)
        if ok:
            return a, g
    if N <= _EMD_FULL_MAX:
        a = _emd_assign(U, L, H)
        ok, g = certify(U, a, L, H)
        if not ok:  # pragma: no cover - network simplex is exact; this guards numerical surprises
            raise RuntimeError("exact capacitated assignment failed its optimality certificate")
        return a, g
    g_sample = _sample_prices(U, L, H, prices)
    g = g_sample
    if prices is not None:  # warm prices (previous iteration / entropic potentials) if they fit better
        def excess(gg):
            c = np.bincount((U + gg).argmax(1), minlength=K)
            return int(np.maximum(c - H, 0).sum() + np.maximum(L - c, 0).sum())

        g_warm = np.asarray(prices, dtype=np.float64)
        if excess(g_warm) < excess(g_sample):
            g = g_warm
    priced = U + g
    a0 = priced.argmax(1)
    top2 = np.partition(priced, K - 2, axis=1)[:, K - 2:]
    margin = top2.max(1) - top2.min(1)
    # Ambiguous customers: the smallest priced margins, plus as many of the least committed customers of
    # over-full columns as needed to make the restricted problem feasible.
    order = np.argsort(margin, kind="stable")
    free = np.zeros(N, dtype=bool)
    free[order[: min(N, _AMBIGUOUS0)]] = True
    for _ in range(2 * K + 2):
        used = np.bincount(a0[~free], minlength=K)
        over = used - H
        short = np.maximum(L - used, 0).sum() - int(free.sum())
        if over.max() <= 0 and short <= 0:
            break
        for k in range(K):
            need = int(over[k]) if over[k] > 0 else 0
            if short > 0 and used[k] > L[k]:
                need = max(need, min(int(short), int(used[k] - L[k])))
                short -= need
            if need > 0:
                cand = order[(a0[order] == k) & ~free[order]][:need]
                free[cand] = True
    amb = np.flatnonzero(free)
    used = np.bincount(a0[~free], minlength=K)
    a = a0.copy()
    a[amb] = _emd_assign(U[amb], np.maximum(L - used, 0), H - used)
    # Cycle cancelling on a working set (the least committed customers under g, all ambiguous ones
    # included), the others held fixed; then the certificate on everybody; grow the set if it fails.
    n_work = max(_WORK0, 4 * amb.size)
    while True:
        work = np.zeros(N, dtype=bool)
        work[order[: min(N, n_work)]] = True
        work[amb] = True
        W = np.flatnonzero(work)
        fixed_counts = np.bincount(a[~work], minlength=K)
        a[W], _ = _cancel_cycles(U[W], a[W], np.maximum(L - fixed_counts, 0), H - fixed_counts)
        ok, g = certify(U, a, L, H)
        if ok:
            return a, g
        if W.size == N:  # pragma: no cover - cancelling on everybody ends certified
            raise RuntimeError("exact capacitated assignment failed its optimality certificate")
        n_work *= 4


def _exchange_graph(U: np.ndarray, a: np.ndarray, L: np.ndarray, H: np.ndarray):
    """Edge weights (K+1, K+1) and, per column edge, the customer realizing it (see module docstring)."""
    N, K = U.shape
    counts = np.bincount(a, minlength=K)
    diff = U[np.arange(N), a][:, None] - U
    Wt = np.full((K + 1, K + 1), np.inf)
    members = [np.flatnonzero(a == k) for k in range(K)]
    for k in range(K):
        if members[k].size:
            Wt[k, :K] = diff[members[k]].min(0)
    np.fill_diagonal(Wt, np.inf)
    Wt[K, :K] = np.where(counts > L, 0.0, np.inf)
    Wt[:K, K] = np.where(counts < H, 0.0, np.inf)
    return Wt, diff, members, counts


def _negative_cycle(Wt: np.ndarray, tol: float):
    """A negative cycle (list of nodes, in edge order) of the tiny dense graph, or None plus the distances.

    Bellman-Ford from a virtual source; a cycle of the predecessor graph is negative.
    """
    n = Wt.shape[0]
    dist = np.zeros(n)
    pred = np.full(n, -1)
    improved = np.zeros(n, dtype=bool)
    for _ in range(n + 1):
        cand = dist[:, None] + Wt
        best = cand.argmin(0)
        val = cand[best, np.arange(n)]
        improved = val < dist - tol
        if not improved.any():
            return None, dist
        dist = np.where(improved, val, dist)
        pred = np.where(improved, best, pred)
    for start in list(np.flatnonzero(improved)) + list(range(n)):
        seen: dict = {}
        path: list = []
        y = int(start)
        while y != -1 and y not in seen:
            seen[y] = len(path)
            path.append(y)
            y = int(pred[y])
        if y == -1:
            continue
        cycle = path[seen[y]:][::-1]  # predecessor order reversed = edge order
        weight = sum(Wt[u, v] for u, v in zip(cycle, cycle[1:] + cycle[:1]))
        if weight < -tol:
            return cycle, dist
    return None, dist  # pragma: no cover - only reachable through rounding at the tolerance


def _cancel_cycles(U: np.ndarray, a: np.ndarray, L: np.ndarray, H: np.ndarray, max_iter: int = 100000):
    """Improve a feasible assignment by cancelling negative exchange cycles until the certificate holds.

    Each cycle c_0 -> c_1 -> ... -> c_0 over the K columns (and the zero node, where a column's count
    may change within [L, H]) moves, along every column edge u -> v, the customers of u that are
    cheapest to move to v; all units of the cycle whose summed marginal cost is negative move at once
    (marginal costs rise with the unit count, so that is a prefix). Every step strictly raises the
    objective; on exit the shortest-path distances are the optimal prices.
    """
    N, K = U.shape
    span = float(U.max() - U.min()) if U.size else 0.0
    tol = 1e-9 * max(span, 1e-300) + 1e-300
    a = a.copy()
    for _ in range(max_iter):
        Wt, diff, members, counts = _exchange_graph(U, a, L, H)
        cycle, dist = _negative_cycle(Wt, tol)
        if cycle is None:
            return a, dist[:K] - dist[K]
        edges = list(zip(cycle, cycle[1:] + cycle[:1]))
        cap = N
        for u, v in edges:
            if u == K:
                cap = min(cap, int(counts[v] - L[v]))
            elif v == K:
                cap = min(cap, int(H[u] - counts[u]))
            else:
                cap = min(cap, members[u].size)
        cap = max(1, min(cap, 4096))
        moves = []
        total = np.zeros(cap)
        for u, v in edges:
            if u == K or v == K:
                continue
            c = diff[members[u], v]
            part = np.argpartition(c, cap - 1)[:cap] if cap < c.size else np.arange(c.size)
            part = part[np.argsort(c[part], kind="stable")]
            total += c[part]
            moves.append((members[u][part], v))
        n_move = int((total < -tol).sum())
        if n_move == 0:  # pragma: no cover - a cycle negative only within rounding: accept as optimal
            return a, dist[:K] - dist[K]
        for idx, v in moves:
            a[idx[:n_move]] = v
    raise RuntimeError("exact capacitated assignment: cycle cancelling did not converge")  # pragma: no cover


def enumerate_optimum(profit, k: int, min_share: Optional[float] = None, max_share: Optional[float] = None,
                      max_subsets: int = 2_000_000):
    """Brute force: the best K-subset of the M columns of ``profit`` (N, M).

    Without shares the value of a subset S is sum_i max_{m in S} profit[i, m]: ``facility.best_subset``'s
    exact enumeration (the exact float64 optimum; fine for C(M, k) up to ~1e6 with N in the thousands). With shares each
    subset's value is the exact capacitated assignment (``assign_with_shares``), so keep C(M, k) small.

    Returns (subset (k,) int64 sorted column indices, total objective float).
    """
    X = _finite_matrix(profit, "profit", "(N, M)")
    N, M = X.shape
    if not (1 <= int(k) <= M):
        raise ValueError(f"k must be in [1, M={M}], got {k}")
    k = int(k)
    n_sub = math.comb(M, k)
    if n_sub > max_subsets:
        raise ValueError(f"enumerate_optimum: C({M}, {k}) = {n_sub} subsets exceeds max_subsets={max_subsets}")
    best_val, best_set = -math.inf, None
    if min_share is not None or max_share is not None:
        L, H = share_counts(N, k, min_share, max_share)
        for S in itertools.combinations(range(M), k):
            U = X[:, S]
            a, _ = _assign_with_counts(U, L, H)
            val = float(U[np.arange(N), a].sum())
            if val > best_val:
                best_val, best_set = val, np.asarray(S, dtype=np.int64)
        return best_set, best_val
    cols, value = best_subset(torch.as_tensor(X, dtype=torch.float64), k, "exact")
    return np.asarray(cols, dtype=np.int64), value


def solve(run: SearchState, call: Call) -> Solution:
    """The solver table's entry for ``solver="exact"``: the optimal K-subset of the dense table by
    enumeration (``enumerate_optimum``), with the share bounds when they can bind."""
    src = run.src
    X = src.columns64(torch.arange(src.m, device=src.device)).cpu().numpy()
    best_set, _ = enumerate_optimum(X, run.k, min_share=call.min_share if run.shares else None,
                                    max_share=call.max_share if run.shares else None)
    return Solution(torch.as_tensor(best_set, device=src.device))


def precheck(n: int, m: int, opts: dict, memory_bytes: int) -> None:
    """Refuses a table whose dense float64 copy exceeds ``memory_limit_bytes``, before any evaluation."""
    if n * m * 8 > memory_bytes:
        raise ValueError("solver='exact' needs the dense N x M profit within memory_limit_bytes")
