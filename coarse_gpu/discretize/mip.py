"""The exact joint problem (K locations and the assignment) as a mixed-integer program: ``solver="mip"``.

Strong facility-location formulation over the N x M profit table Pi, solved by HiGHS through
``scipy.optimize.milp`` (branch and cut; no extra dependency):

    max  sum_im Pi_im x_im
    s.t. sum_m x_im = 1                              every customer is served          (N rows)
         x_im <= y_m                                 only by an open treatment         (N M rows)
         sum_m y_m = K                               exactly K treatments
         L y_m <= sum_i x_im <= H y_m                share bounds (integer counts)     (M rows each)
         lo_c <= sum_im w_ic v_mc x_im <= hi_c       side constraints (``Constraint``)
         sum_i s_im x_im >= n y_m                    experimental support (``Support``) (M rows)
         y binary, x in [0, 1] (binary when side constraints or support are present)

"Strong": the disaggregated linking rows x_im <= y_m (instead of sum_i x_im <= N y_m) make the LP
relaxation tight; on the random instances of the tests HiGHS closes them at the root node or after a
few branches. Without side constraints, once y is integral the x part is a transportation problem
(totally unimodular), so x is left continuous and read off by the exact capacitated assignment of
the chosen columns. With side constraints or support an LP vertex can split a few customers, so
``solver="mip"`` (``mip_columns``) first solves with x continuous (a relaxation: its bound is
an upper bound on the optimum), gives the chosen treatments the exact integral assignment, and
accepts it when it is within ``mip_rel_gap`` of that bound; only otherwise is x declared integral
(``integral_x=True``), which is slow (measured on 300 x 20 with a budget and a parity band: 4-11 s
for the relaxed MIP, 30-180 s with x integral).

Size: N M continuous variables and N M linking rows. Measured with share bounds: 1,200 x 49 in 17 s;
1,500 x 42 and 1,200 x 60 not closed within 300 s (HiGHS returns its incumbent and gap, see
``mip_time_limit``); beyond ``mip_max_entries`` (default ``MAX_ENTRIES``) the call is refused before any work.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from coarse_gpu.discretize.spec import Solution

if TYPE_CHECKING:  # annotations only
    from coarse_gpu.discretize.state import Call, SearchState

#: Default of ``SolverOptions.mip_max_entries``: the N x M entries solver="mip" starts on (twice the
#: ~1e5 it is meant for; 1.09 million ran 131 s and 3.7 GB before this limit).
MAX_ENTRIES = 200_000


def size_problem(n: int, m: int, max_entries: int = MAX_ENTRIES, key: str = "mip_max_entries") -> Optional[str]:
    """Why an N x M problem is too large for the MIP (naming the size, the limit, the alternative and
    the key that raises the limit), or None."""
    if n * m <= max_entries:
        return None
    return (f"solver='mip': N x M = {n} x {m} = {n * m:,} profit entries is beyond the {max_entries:,} the exact "
            f"mixed-integer program is run on (it is meant for about 1e5 and may run for many minutes above); use "
            f"the sinkhorn solver, which takes the same share bounds and constraints, or raise {key}")


def check_size(n: int, m: int, max_entries: int = MAX_ENTRIES) -> None:
    """ValueError when N x M is beyond ``max_entries`` (before any work)."""
    problem = size_problem(n, m, max_entries)
    if problem:
        raise ValueError(problem)


def solve_mip(X: np.ndarray, k: int, L: int, H: int, side=None, support=None,
              time_limit: Optional[float] = None, rel_gap: float = 1e-4, verbose: bool = False,
              integral_x: Optional[bool] = None, max_entries: int = MAX_ENTRIES):
    """Exact K locations and assignment of the (N, M) float64 profits X (module docstring).

    L, H : integer count bounds per open treatment (0 and N when there are no share bounds).
    side : ``constraints.SideConstraints`` or None. support : ``constraints.Support`` or None.
    time_limit : seconds (None: none). rel_gap : HiGHS' relative optimality gap at which it stops.

    Returns (cols (K,) int64 sorted, x (N, M) float64 or None, info dict): info holds "mip_status"
    (HiGHS' message), "mip_optimal" (bool: proven optimal within rel_gap), "mip_gap" (relative gap
    between the incumbent and the dual bound), "mip_dual_bound" (upper bound on the optimum, total
    profit), "mip_objective", "mip_nodes", "mip_s".
    Raises ValueError when N x M exceeds ``max_entries`` or the problem is infeasible.
    """
    N, M = X.shape
    check_size(N, M, max_entries)
    t0 = time.perf_counter()
    nx = N * M
    A, lb, ub = _rows(N, M, k, L, H, side, support)
    if integral_x is None:
        integral_x = side is not None or support is not None
    integrality = np.concatenate([np.full(nx, 1 if integral_x else 0), np.ones(M)]).astype(np.uint8)
    c = np.concatenate([-np.asarray(X, dtype=np.float64).ravel(), np.zeros(M)])
    options = {"disp": bool(verbose), "mip_rel_gap": float(rel_gap)}
    if time_limit is not None:
        options["time_limit"] = float(time_limit)
    res = milp(c, constraints=LinearConstraint(A, lb, ub),
               integrality=integrality, bounds=Bounds(0.0, 1.0), options=options)
    info = {"mip_status": str(res.message), "mip_optimal": bool(res.status == 0),
            "mip_s": time.perf_counter() - t0,
            "mip_nodes": int(getattr(res, "mip_node_count", 0) or 0)}
    if res.x is None:
        if res.status == 2:
            raise ValueError("solver='mip': the problem is infeasible: no K treatments and assignment satisfy "
                             + _what(L, H, N, side, support))
        raise RuntimeError(f"solver='mip' found no feasible solution ({res.message}); raise mip_time_limit")
    y = res.x[nx:]
    chosen = np.sort(np.argsort(-y, kind="stable")[:k]).astype(np.int64)
    info["mip_objective"] = float(-res.fun)
    bound = getattr(res, "mip_dual_bound", None)
    info["mip_dual_bound"] = float(-bound) if bound is not None and np.isfinite(bound) else None
    gap = getattr(res, "mip_gap", None)
    info["mip_gap"] = float(gap) if gap is not None and np.isfinite(gap) else None
    x = res.x[:nx].reshape(N, M)
    return chosen, (x if integral_x else None), info


def _rows(N: int, M: int, k: int, L: int, H: int, side, support):
    """The MIP's constraint rows over the variables (x (N M) row-major, y (M)): a sparse A and its
    bounds lb <= A z <= ub (module docstring's formulation)."""
    nx = N * M
    ix = np.arange(nx)
    cust = ix // M
    cand = ix % M
    rows, cols, vals, lb, ub = [], [], [], [], []
    r = 0

    def add(block_rows, block_cols, block_vals, lo, hi):
        nonlocal r
        rows.append(np.asarray(block_rows) + r)
        cols.append(np.asarray(block_cols))
        vals.append(np.asarray(block_vals, dtype=np.float64))
        lb.append(np.asarray(lo, dtype=np.float64))
        ub.append(np.asarray(hi, dtype=np.float64))
        r += len(lb[-1])

    add(cust, ix, np.ones(nx), np.ones(N), np.ones(N))  # each customer served once
    # x_im - y_m <= 0 (the strong linking rows)
    add(np.concatenate([ix, ix]), np.concatenate([ix, nx + cand]),
        np.concatenate([np.ones(nx), -np.ones(nx)]), np.full(nx, -np.inf), np.zeros(nx))
    add(np.zeros(M, dtype=np.int64), nx + np.arange(M), np.ones(M), [float(k)], [float(k)])
    if L > 0:  # sum_i x_im - L y_m >= 0
        add(np.concatenate([cand, np.arange(M)]), np.concatenate([ix, nx + np.arange(M)]),
            np.concatenate([np.ones(nx), np.full(M, -float(L))]), np.zeros(M), np.full(M, np.inf))
    if H < N:  # sum_i x_im - H y_m <= 0
        add(np.concatenate([cand, np.arange(M)]), np.concatenate([ix, nx + np.arange(M)]),
            np.concatenate([np.ones(nx), np.full(M, -float(H))]), np.full(M, -np.inf), np.zeros(M))
    if side is not None:
        for c in range(side.n_constraints):
            coef = (side.W[:, c][:, None] * side.V[:, c][None, :]).ravel()
            nz = np.flatnonzero(coef)
            add(np.zeros(nz.size, dtype=np.int64), nz, coef[nz], [side.lo[c]], [side.hi[c]])
    if support is not None:  # sum_i s_im x_im - n y_m >= 0
        s = support.matrix(np.arange(M)).ravel()
        nz = np.flatnonzero(s)
        add(np.concatenate([cand[nz], np.arange(M)]), np.concatenate([nz, nx + np.arange(M)]),
            np.concatenate([s[nz], np.full(M, -float(support.n))]), np.zeros(M), np.full(M, np.inf))
    A = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, nx + M))
    return A, np.concatenate(lb), np.concatenate(ub)


def mip_columns(run: SearchState, info: dict):
    """solver="mip": (C (K,) tensor, assignment (N,) int64 or None) from ``solve_mip``.

    The MIP is solved with x continuous (y binary): a relaxation when side constraints are present,
    so its optimum bounds the true one from above. The chosen treatments then get the exact integral
    assignment (``assign_constrained``); when its value is within ``mip_rel_gap`` of the bound the
    result is proven optimal, otherwise (or if it has no integral assignment) the MIP is solved again
    with x integral. Measured on 300 x 20 instances with a budget and a parity band: 4-11 s for the
    relaxed MIP, 30-180 s with x integral from the start.
    """
    src, k, L, H, side, opts = run.src, run.k, run.L, run.H, run.side, run.opts
    X = src.columns64(torch.arange(src.m, device=src.device)).cpu().numpy()
    kw = dict(side=side, support=run.support, time_limit=opts["mip_time_limit"], rel_gap=float(opts["mip_rel_gap"]),
              verbose=bool(opts["verbose"]), max_entries=int(opts["mip_max_entries"]))
    cols, _, mip_info = solve_mip(X, k, int(L[0]), int(H[0]), integral_x=False, **kw)
    info.update(mip_info)
    C = torch.as_tensor(cols, device=src.device)
    if not run.rows_priced:
        return C, None
    a, _, ok = run.hard_assign(torch.as_tensor(X[:, cols]), None, C)
    bound = mip_info["mip_dual_bound"] if mip_info["mip_dual_bound"] is not None else mip_info["mip_objective"]
    value = float(X[np.arange(X.shape[0]), cols[a.cpu().numpy()]].sum()) if ok else -math.inf
    gap = (bound - value) / max(abs(bound), 1e-300)
    if ok and gap <= float(opts["mip_rel_gap"]) + 1e-12:
        info.update(mip_gap=max(0.0, gap), mip_rounding="exact assignment of the relaxed MIP's treatments")
        return C, a.cpu().numpy().astype(np.int64)
    cols2, x2, info2 = solve_mip(X, k, int(L[0]), int(H[0]), integral_x=True, **kw)
    info.update(info2, mip_rounding="x integral (the relaxed MIP's treatments lost more than mip_rel_gap)")
    return torch.as_tensor(cols2, device=src.device), x2[:, cols2].argmax(1).astype(np.int64)


def solve(run: SearchState, call: Call) -> Solution:
    """The solver table's entry for ``solver="mip"``: the MIP's columns and, under side constraints or
    support, its integral assignment (kept by the final step)."""
    C, fixed = mip_columns(run, call.info)
    return Solution(C, None, 0.0, fixed)


def precheck(n: int, m: int, opts: dict, memory_bytes: int) -> None:
    """Refuses an N x M beyond ``mip_max_entries`` before any profit is evaluated."""
    check_size(n, m, int(opts["mip_max_entries"]))


def _what(L, H, N, side, support) -> str:
    parts = []
    if L > 0 or H < N:
        parts.append(f"the share bounds (counts in [{L}, {H}])")
    if side is not None:
        parts.append("the constraints " + ", ".join(repr(n) for n in side.names))
    if support is not None:
        parts.append(f"the support of at least {support.n} customers per segment")
    return " and ".join(parts) or "the problem"
