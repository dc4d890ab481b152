"""Choose K treatments and the assignment of N customers to them: ``discretize``.

Problem: given profits Pi (N, M) of N customers at M candidate treatments, pick K distinct candidates
c_1..c_K and an assignment a(i) to maximize sum_i Pi[i, c_a(i)], optionally with every treatment's share
of customers in [min_share, max_share].

Solvers
-------
``lloyd`` (the paper's reference, "adapt Lloyd's algorithm"): exact alternation. Assignment step: each
customer takes its best current treatment (with shares: the exact capacitated assignment, see
``exact.py``). Location step: the K treatments move to the K *distinct* candidates maximizing the summed
profit of their segments (a K x M linear assignment, so two segments never collapse onto one treatment;
the current locations are feasible for it, so the objective never decreases). Repeat to a fixed point.
Restarts: restart 0 is greedy facility-location seeding (each new treatment maximizes the profit gain
sum_i (Pi_im - best_i)_+), the others k-means++-style (a customer is drawn with probability
proportional to its regret under the treatments chosen so far; its ideal treatment is added).

``sinkhorn`` (default): deterministic annealing with the semi-relaxed entropic plan (``sinkhorn.py``):
the hard assignment is replaced by the plan P_ik ∝ exp((Pi_ik + g_k) / eps) (rows 1/N; column masses
free or boxed by the shares through the dual potentials g), the location step maximizes
sum_i P_ik Pi_im, and eps decreases geometrically from ``eps_start`` to ``epsilon`` (both relative to the
profit scale: the root-mean-square over customers of the std of their profits across candidates),
warm-starting the potentials. Each annealed solution is then rounded to a hard assignment and polished
by the exact Lloyd alternation. Only ``n_anneal`` (default 1) restarts are annealed: from eps_start = 1
every start flows to the same solution. The other restarts are plain Lloyd from k-means++ seeds, and
the best ``n_swap`` (2) distinct solutions get a 1-swap local search (``_Run.swap``); the best of all
is returned. Small searches (N M < 2**22) and share constraints also run Lloyd's greedy-seeded
restart, so there the result is never below Lloyd's from the same seeds; large ones skip it and draw
the k-means++ seeds on the annealing sample, because seeding on all N x M profits is most of Lloyd's
time at scale (``greedy_seed``). Large searches also run on two levels (``coarse_restarts``): the
restarts and the annealing on the 16k annealing sample, the best ``n_swap`` polished on all the
search's customers (``_two_level_search``); below N M = 2**24 the greedy restart is added back on all
of them, where it is cheap.

``exact``: enumerate all C(M, K) subsets (``exact.enumerate_optimum``), for small problems.

``mip``: the exact joint problem as a mixed-integer program (``mip.py``: strong facility-location
formulation, HiGHS through scipy), with shares and side constraints; N M up to about 1e5 entries.
The reference of the tests.

Under share bounds or side constraints the swap search is ``_Run.swap_constrained``: each candidate
swap's value is bounded by weak duality with the current set's prices, swaps are verified by the exact
constrained assignment in decreasing bound, and (exact screening) the search stops when no bound
exceeds the current objective. Measured on four mid-size share-bounded instances (N = 1,200-2,000,
M = 42-60, K = 4-8, shares 10-40 %) against the MIP: 0.0001 %, 0 % and above the MIP's incumbent on
the other two (HiGHS stopped at its 300 s limit there); before it, 0.035 % below on one of them.

Side constraints (``constraints.py``, ``Constraint``): every hard assignment is the exact assignment
under the constraints (restricted LP + MILP rounding, certified), the search compares sets by their
LP optimum (the rounding, a HiGHS MILP, runs once at the end), Lloyd's location step is priced by the
current assignment's multipliers (segment profit minus lam_c times the segment's constraint weight at
each candidate: the LP-guided move), the annealing carries one multiplier per constraint in the
entropic plan and runs first, and the Lloyd restarts are seeded on the profits priced by its
multipliers (``PricedSource``), so that they start near feasibility. Restarts whose treatments admit no
feasible assignment score -inf and are moved by phase-one prices (large multipliers on the violated
constraints). Measured on 16 random 300 x 20 instances with a binding budget and a parity band (with
and without shares 10-40 %): at most 0.002 % below the MIP, never above its dual bound.

All restarts run batched: one pass over Pi serves every restart (a (N, R K) plan times Pi).

Shares: the annealing uses the boxed plan; every hard assignment is the exact capacitated assignment
(network simplex on the ambiguous customers + LP-duality certificate, ``exact.assign_with_shares``),
warm-started with the entropic prices; integer capacities are ceil(min_share N) and floor(max_share N).

Sharded: with ``distributed=True`` each process of a torch.distributed group passes its own customers
and the same search runs in lockstep on all of them, reductions over customers crossing processes
(``distributed.py``).

Continuous refinement: with ``refine_oracle`` the final treatments leave the grid by pattern search
within ``bounds`` (``refine.py``); ``candidate_index`` is then -1 for the moved ones.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from coarse_gpu.discretize.constraints import (
    PricedSource,
    Prices,
    assign_constrained,
    check_constraints,
    check_support,
)
from coarse_gpu.discretize.exact import _assign_with_counts, certify, enumerate_optimum, share_counts
from coarse_gpu.discretize.profit import (
    DenseSource,
    FactoredProfit,
    FactoredSource,
    OracleSource,
    ProfitSource,
    call_oracle,
    relu_colsum,
    swap_values,
)
from coarse_gpu.discretize.facility import column_means, greedy
from coarse_gpu.discretize.options import SOLVERS, check_solver_options, default_options  # noqa: F401
from coarse_gpu.discretize.refine import grid_steps, integer_dims, refine_treatments
from coarse_gpu.discretize.sinkhorn import entropic_plan, entropic_value
from coarse_gpu.utils.device import resolve_device

DEFAULT_EPSILON = 0.01  # target temperature, relative to the profit scale
# Every plain-valued option and its default is ``options.SolverOptions`` (also the Hydra schema of the
# discretizer group); these four are objects the caller builds.
DEFAULT_OPTIONS = dict(
    default_options(),
    refine_oracle=None,  # callable (T, d) float64 tensor -> (N, T) profits: continuous refinement
    bounds=None,  # (low (d,), high (d,)): the box the refinement stays in
    init=None,  # K candidate indices seeding restart 0 (e.g. the previous K's solution)
    # (d,) bools: the treatment dimensions the refinement never moves (discrete and categorical kinds,
    # coarse_gpu.data.treatments); None: the ``refine_integer_dims`` heuristic decides
    frozen_dims=None,
    # Experimental support per segment: a constraints.Support (each segment must hold >= n customers of
    # the group supporting its treatment, e.g. those randomized to the arm nearest it); None: none.
    support=None,
)
_SMALL_SEARCH = 1 << 22  # N x M entries below which sinkhorn also runs the greedy-seeded restart ("auto")
_GREEDY_AFFORDABLE = 1 << 24  # two-level search below this: Lloyd's greedy restart on all search rows too


@dataclass
class Discretization:
    """The K treatments chosen by ``discretize`` and the assignment of the N customers.

    treatments : (K, d) float64 treatments.
    assignment : (N,) int64 in [0, K).
    objective : total estimated profit sum_i Pi[i, treatment of i] of the hard assignment.
    entropic_objective : total profit N * sum_ik P_ik Pi_ik of the entropic plan at the target
        temperature on the returned treatments (equals ``objective`` for lloyd / exact).
    trace : per-iteration records {"restart", "phase", "eps", "iter", "objective", "marginal_error", ...};
        "eps" is relative to the profit scale; during annealing "objective" is the argmax rounding.
        Phases run on a sample of the customers ("anneal" with a "rows" field, "lloyd-coarse",
        "polish-coarse") report the sample's totals scaled to all the search's customers (estimates).
    solver : solver used. epsilon : target temperature, relative (0 for lloyd / exact).
    candidate_index : (K,) index of each treatment in the candidates, -1 when refined off the grid.
    shares : (K,) fraction of customers on each treatment.
    info : extra details (profit scale, absolute epsilon, path, timings, restart objectives, ...).
    """

    treatments: np.ndarray
    assignment: np.ndarray
    objective: float
    entropic_objective: float
    trace: list
    solver: str
    epsilon: float
    candidate_index: np.ndarray
    shares: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.treatments.shape[0])

    def assign(self, profit) -> np.ndarray:
        """Assign new customers to the chosen treatments by argmax (no share constraints).

        ``profit`` is either (N', K) profits at the K treatments (in ``treatments`` order) or (N', M)
        profits at the original M candidates (needs every treatment on the grid; when K == M the
        candidate reading is used), or a ``FactoredProfit`` over the candidates.
        """
        n_cand = self.info.get("n_candidates")
        on_grid = bool(np.all(self.candidate_index >= 0))
        if isinstance(profit, FactoredProfit):
            if not on_grid:
                raise ValueError("profit: a FactoredProfit over the candidates cannot score refined off-grid treatments")
            V = np.asarray(profit.V if not isinstance(profit.V, torch.Tensor) else profit.V.detach().cpu(), np.float64)
            W = np.asarray(profit.W if not isinstance(profit.W, torch.Tensor) else profit.W.detach().cpu(), np.float64)
            return (V @ W[self.candidate_index].T).argmax(1).astype(np.int64)
        X = profit.detach().cpu().numpy() if isinstance(profit, torch.Tensor) else np.asarray(profit, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"profit must be a 2-D array (N', K) or (N', M), got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("profit contains NaN or inf")
        if X.shape[1] == n_cand and on_grid:
            X = X[:, self.candidate_index]
        elif X.shape[1] != self.k:
            raise ValueError(
                f"profit has {X.shape[1]} columns; expected K={self.k} (the treatments) or M={n_cand} "
                "(the candidates, only when every treatment is on the grid)"
            )
        return X.argmax(1).astype(np.int64)


# ----------------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------------
def _default_memory_limit(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.4 * free)
    return 4 << 30


def _as_candidates(candidates, m: Optional[int]) -> np.ndarray:
    if candidates is None:
        return np.arange(m, dtype=np.float64)[:, None]
    c = candidates.detach().cpu().numpy() if isinstance(candidates, torch.Tensor) else np.asarray(candidates)
    c = c.astype(np.float64)
    if c.ndim == 1:
        c = c[:, None]
    if c.ndim != 2 or c.shape[0] == 0:
        raise ValueError(f"candidates must be an (M, d) array, got shape {np.shape(candidates)}")
    if not np.all(np.isfinite(c)):
        raise ValueError("candidates contain NaN or inf")
    if m is not None and c.shape[0] != m:
        raise ValueError(f"candidates has {c.shape[0]} rows but profit has M={m} columns (shapes mismatch)")
    return c


def _make_source(profit, candidates, device, dtype, memory_limit, lazy) -> tuple[ProfitSource, np.ndarray]:
    if isinstance(profit, FactoredProfit):
        src = FactoredSource(profit, device, dtype, memory_limit, lazy)
        return src, _as_candidates(candidates, src.m)
    if callable(profit) and not isinstance(profit, (np.ndarray, torch.Tensor)):
        if candidates is None:
            raise ValueError("candidates must be given when profit is a callable oracle")
        cand = _as_candidates(candidates, None)
        probe = call_oracle(profit, torch.as_tensor(cand[:1], dtype=torch.float64, device=device), None, device, dtype)
        n = probe.shape[0]
        itemsize = torch.finfo(dtype).bits // 8
        if n * cand.shape[0] * itemsize <= memory_limit:
            # Small enough: evaluate the whole grid once (in column chunks) and work densely.
            src0 = OracleSource(profit, cand, n, device, dtype, memory_limit)
            X = torch.cat([blk for _, blk in src0._chunks()], 1)
            src = DenseSource(X, device, dtype, memory_limit)
            src.host = _OracleHost(profit, cand, n, device, X)
            src.path = "oracle-dense"
            return src, cand
        return OracleSource(profit, cand, n, device, dtype, memory_limit), cand
    if isinstance(profit, torch.Tensor):
        arr = profit
    else:
        try:
            arr = np.asarray(profit)
        except Exception as err:  # pragma: no cover
            raise ValueError(f"profit must be an (N, M) array, a FactoredProfit or a callable, got {type(profit)}") from err
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"profit must be a numeric (N, M) array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"profit must be a 2-D (N, M) array, got shape {tuple(arr.shape)}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"profit must have at least one customer and one candidate, got shape {tuple(arr.shape)}")
    src = DenseSource(arr, device, dtype, memory_limit)
    return src, _as_candidates(candidates, src.m)


class _OracleHost:
    """Lets a densely evaluated oracle give float64 columns (re-evaluated in double on demand)."""

    def __init__(self, oracle, cand, n, device, X) -> None:
        self.oracle, self.cand, self.n, self.device = oracle, cand, n, device
        self.shape = X.shape

    def columns64(self, cols) -> torch.Tensor:
        T = torch.as_tensor(self.cand[np.asarray(cols)], dtype=torch.float64, device=self.device)
        return call_oracle(self.oracle, T, self.n, self.device, torch.float64)


# ----------------------------------------------------------------------------------------------------
# building blocks (batched over restarts)
# ----------------------------------------------------------------------------------------------------
def _profit_scale(src: ProfitSource, gen: torch.Generator) -> float:
    """RMS over (sampled) customers of the std of their profits across (sampled) candidates."""
    rows = torch.randperm(src.n, generator=gen)[:2048].sort().values.to(src.device)
    cols = torch.randperm(src.m, generator=gen)[:256].sort().values.to(src.device)
    sub = src.submatrix(rows, cols).to(torch.float64)
    if sub.shape[1] < 2:
        s = float(sub.std()) if sub.numel() > 1 else 0.0
    else:
        s = float(sub.var(1).mean().sqrt())
    if not math.isfinite(s) or s <= 0:
        s = float(sub.abs().mean()) or 1.0
    return s




def _seeds(src: ProfitSource, k: int, n_restarts: int, gen: torch.Generator, init, first: bool = True) -> torch.Tensor:
    """(R, K) distinct candidate indices per restart: init / greedy for restart 0, k-means++ for the rest.

    ``first=False``: only the R - 1 k-means++ seeds (the same ones, drawn from ``gen`` in the same order).
    """
    N, M = src.n, src.m
    seeds = []
    if first and init is not None:
        seeds.append([int(x) for x in init])
    elif first:
        seeds.append(greedy(src, k))  # facility-location greedy
    if n_restarts > 1:
        best_full, ideal = src.row_max()
    for _ in range(1, n_restarts):
        i = int(torch.randint(N, (1,), generator=gen))
        chosen = [int(src.row_item(ideal, i))]
        best = src.columns(torch.tensor(chosen, device=src.device))[:, 0]
        for _ in range(1, k):
            m = None
            regret = torch.relu(best_full - best)
            for _try in range(8):
                cand = int(src.row_item(ideal, src.sample_row(regret, gen))) if float(src.max_value(regret)) > 0 \
                    else -1
                if cand >= 0 and cand not in chosen:
                    m = cand
                    break
            if m is None:  # every customer already has its ideal treatment, or bad luck: a random new one
                free = np.setdiff1d(np.arange(M), chosen)
                m = int(free[int(torch.randint(free.size, (1,), generator=gen))])
            chosen.append(m)
            best = torch.maximum(best, src.columns(torch.tensor([m], device=src.device))[:, 0])
        seeds.append(chosen)
    return torch.tensor(seeds, dtype=torch.long, device=src.device).reshape(-1, k)


def _anneal_starts(src: ProfitSource, r: int, k: int, gen: torch.Generator, init) -> torch.Tensor:
    """(R, K) starts for annealing without the Lloyd seeding: ``init`` or the K best columns on average
    for start 0, random distinct candidates for the others.

    Costs one column-mean pass (O(N A) on a factored source) where the greedy / k-means++ seeding of
    ``_seeds`` needs K relu-sum passes and a row max over all N x M profits. From ``eps_start`` = 1
    the annealing forgets its start (8 random starts flowed to one solution on the benchmark).
    """
    if init is not None:
        first = torch.as_tensor(np.asarray(init, dtype=np.int64))
    else:
        first = column_means(src).topk(k).indices.cpu()
    starts = [first] + [torch.randperm(src.m, generator=gen)[:k] for _ in range(1, r)]
    return torch.stack(starts).to(src.device)


def _greedy_seed(option, n: int, m: int, shares: bool) -> bool:
    """Whether ``sinkhorn`` runs the greedy-seeded Lloyd restart; see options.SolverOptions.greedy_seed."""
    if option == "auto":
        return shares or n * m < _SMALL_SEARCH
    if not isinstance(option, bool):
        raise ValueError(f"greedy_seed must be 'auto', True or False, got {option!r}")
    return option


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


class _Run:
    """State shared by the phases of one ``discretize`` call.

    ``side``: the side constraints over this run's customers (``constraints.SideConstraints``) or None.
    Prices (``constraints.Prices``: share potentials g, constraint multipliers lam) travel with every
    hard assignment; they warm-start the next one and price the location step under side constraints.
    """

    def __init__(self, src, k, L, H, shares, opts, scale, trace, rel_tol, side=None, support=None):
        self.src, self.k, self.L, self.H, self.shares = src, k, L, H, shares
        self.opts, self.scale, self.trace, self.rel_tol = opts, scale, trace, rel_tol
        self.lo = float(L[0]) / src.n
        self.hi = float(H[0]) / src.n
        self.unit = 1.0  # trace objectives are reported x unit (a sample's totals in units of the search's)
        self.side, self.support = side, support
        self.n_side = 0 if side is None else side.n_constraints
        self.rows_priced = side is not None or support is not None  # assignments come with LP multipliers
        self.constrained = shares or self.rows_priced
        if support is not None:  # candidates that can never hold n supporters: off limits to the location step
            self.forbidden = np.minimum(support.counts(), H[0]) < support.n
            self.cand_group = np.asarray(support.candidate_group)
            g = np.asarray(support.customer_group)
            size = np.bincount(g[g >= 0], minlength=int(self.cand_group.max()) + 1)
            self.group_cap = np.floor(size / support.n).astype(np.int64)  # slots a group can support
        if side is not None:
            self.side_W = torch.as_tensor(side.W, device=src.device, dtype=src.dtype)  # (N, C)
            self.side_V = torch.as_tensor(side.V, device=src.device, dtype=src.dtype)  # (M, C)
        self.lam0 = None if side is None else np.zeros(side.n_constraints)  # multipliers of infeasible starts

    def hard_assign(self, U: torch.Tensor, prices=None, cols=None, integral: bool = True):
        """Hard assignment of one restart's (N, K) profits to the columns ``cols`` (K,): argmax, exact
        capacitated, or exact under the side constraints; returns (a, Prices or None, feasible).
        ``integral=False`` (the search, under side constraints): the LP's assignment, and its value in
        ``Prices.lp_value`` (see ``constraints.assign_constrained``)."""
        if not self.constrained:
            return U.argmax(1), None, True
        U64 = U.detach().to(torch.float64).cpu().numpy()
        if not self.rows_priced:
            a, g = _assign_with_counts(U64, self.L, self.H, None if prices is None else prices.g)
            return torch.as_tensor(a, device=U.device), Prices(np.asarray(g, dtype=np.float64)), True
        c = np.asarray(cols.cpu() if isinstance(cols, torch.Tensor) else cols, dtype=np.int64)
        a, p, ok = assign_constrained(U64, self.L, self.H, self.side, c, prices, integral=integral,
                                      support=self.support)
        return torch.as_tensor(a, device=U.device), p, ok

    def value(self, U: torch.Tensor, a: torch.Tensor, prices, feasible: bool) -> float:
        """What the search compares sets by: the assignment's total profit, the LP optimum under side
        constraints (``hard_assign(integral=False)``), -inf when infeasible."""
        if not feasible:
            return -math.inf
        if self.rows_priced and prices is not None and prices.lp_value is not None:
            return prices.lp_value
        return float(U.gather(1, a[:, None]).to(torch.float64).sum())

    def priced_scores(self, S: np.ndarray, A: torch.Tensor, prices) -> np.ndarray:
        """Location scores (K, M) of one hard assignment A (N,) under side constraints: the segment
        profits minus the multipliers times the segment's constraint weight at every candidate,
        S_km - sum_c lam_c (sum_{i in k} w_ic) v_mc, so a move that would break a binding constraint
        pays its price (the LP-guided location step)."""
        k, C = self.k, self.n_side
        if self.support is not None:
            S = S.copy()
            S[:, self.forbidden] = S.min() - 1e6 * (np.abs(S).max() + 1.0)
        if prices is None or not np.any(prices.lam):
            return S
        if self.side is not None and np.any(prices.lam[:C]):
            Wseg = torch.zeros(k, C, dtype=self.side_W.dtype, device=self.side_W.device)
            Wseg.index_add_(0, A, self.side_W)
            lam = torch.as_tensor(prices.lam[:C], dtype=self.side_W.dtype, device=self.side_W.device)
            S = S - ((Wseg * lam) @ self.side_V.T).to(torch.float64).cpu().numpy()
        if self.support is not None and np.any(prices.lam[C:]):
            # support rows: segment k gains -lam_k (>= 0 when binding) per supporter of candidate m it holds
            g = np.asarray(self.support.customer_group)
            a = A.cpu().numpy()
            G = int(max(self.cand_group.max(), g.max(initial=-1))) + 1
            cnt = np.zeros((k, G))
            ok = g >= 0
            np.add.at(cnt, (a[ok], g[ok]), 1.0)
            S = S - prices.lam[C:][:, None] * cnt[:, self.cand_group]
        return S

    def lloyd(self, C0: torch.Tensor, phase: str, restart_ids, prices=None):
        """Exact alternation from (R, K) starts; returns (C (R, K), objective (R,) float64, prices).

        Under side constraints the location step is priced by each restart's multipliers and no longer
        monotone, so every restart keeps its best feasible set and stops at the first iteration that
        does not improve it (an infeasible set scores -inf: its phase-one prices move it toward
        feasibility, for at most max_iter iterations).
        """
        src, k = self.src, self.k
        R = C0.shape[0]
        C = C0.clone()
        obj = torch.full((R,), -math.inf, dtype=torch.float64)
        active = np.ones(R, dtype=bool)
        prices = list(prices) if prices is not None else [None] * R
        guard = self.rows_priced
        best = [(C[r].clone(), -math.inf, prices[r]) for r in range(R)] if guard else None
        for it in range(int(self.opts["max_iter"])):
            act = np.flatnonzero(active)
            if act.size == 0:
                break
            Ca = C[torch.as_tensor(act, device=C.device)]
            U = src.columns(Ca.reshape(-1)).view(-1, act.size, k)  # this process's rows (all but sharded)
            A = torch.empty(U.shape[0], act.size, dtype=torch.long, device=U.device)
            feasible = np.ones(act.size, dtype=bool)
            for j, r in enumerate(act):
                A[:, j], prices[r], feasible[j] = self.hard_assign(U[:, j], prices[r], Ca[j], integral=False)
            vals = src.reduce_sum(U.gather(2, A[:, :, None])[:, :, 0].to(torch.float64).sum(0)).cpu()
            if guard:
                vals = torch.tensor([self.value(U[:, j], A[:, j], prices[r], feasible[j])
                                     for j, r in enumerate(act)], dtype=torch.float64)
            counts = src.reduce_sum(torch.stack([torch.bincount(A[:, j], minlength=k) for j in range(act.size)]))
            S = src.segment_scores(A, k).to(torch.float64).cpu().numpy()  # (Ra, K, M)
            for j, r in enumerate(act):
                obj[r] = vals[j]
                self.trace.append({"restart": int(restart_ids[r]), "phase": phase, "eps": 0.0, "iter": it,
                                   "objective": float(vals[j]) * self.unit, "marginal_error": 0.0})
                if guard:
                    if feasible[j] and not float(vals[j]) > best[r][1] + self.rel_tol * (abs(best[r][1]) + 1.0) \
                            and math.isfinite(best[r][1]):
                        active[r] = False  # no better than this restart's best: stop there
                        continue
                    if feasible[j]:
                        best[r] = (C[r].clone(), float(vals[j]), prices[r])
                empty = torch.nonzero(counts[j] == 0).flatten().tolist()
                if empty and feasible[j]:
                    # Re-seed empty segments where they gain most (never lowers the objective). Only a
                    # strictly positive gain counts: when every customer already has its best candidate
                    # among the other treatments (e.g. a model whose ideal points sit on a few arms), no
                    # candidate attracts anyone, and re-seeding would cycle to max_iter at an unchanged
                    # objective; the empty treatment is then harmless and the location step goes on.
                    best_i = U[:, j].gather(1, A[:, j:j + 1])[:, 0]
                    cur = C[r].clone()
                    reseeded = False
                    for e in empty:
                        gain = src.gains(best_i)
                        gain[cur] = -math.inf
                        m = int(gain.argmax())
                        if not float(gain[m]) > self.rel_tol * (abs(float(vals[j])) + 1.0):
                            break
                        cur[e] = m
                        reseeded = True
                        best_i = torch.maximum(best_i, src.columns(torch.tensor([m], device=src.device))[:, 0])
                    if reseeded:
                        C[r] = cur
                        continue
                Sj = self.priced_scores(S[j], A[:, j], prices[r])
                new = _best_distinct(Sj, C[r].cpu().numpy(), self.rel_tol)
                if self.support is not None:  # no more slots on a supporting group than it can fill
                    fixed = _repair_groups(Sj, new if new is not None else C[r].cpu().numpy(), self.cand_group,
                                           self.group_cap)
                    new = fixed if new is not None or not np.array_equal(fixed, C[r].cpu().numpy()) else None
                if new is None:
                    active[r] = False
                else:
                    C[r] = torch.as_tensor(new, device=C.device)
        if guard:
            for r in range(R):
                C[r], obj[r], prices[r] = best[r][0], best[r][1], best[r][2]
        return C, obj, prices

    def anneal(self, C0: torch.Tensor, eps_list, restart_ids, pbar=None, coarse: Optional[ProfitSource] = None,
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
        k, M = self.k, self.src.m
        R = C0.shape[0]
        C = C0.clone()
        g = lam = None
        side = self.side if coarse is None else coarse_side
        if side is not None:
            Wt = torch.as_tensor(side.W, device=self.src.device, dtype=self.src.dtype)
            Vt = torch.as_tensor(side.V, device=self.src.device, dtype=self.src.dtype)
            bounds = (torch.as_tensor(side.lo), torch.as_tensor(side.hi))
        for li, rel in enumerate(eps_list):
            src = coarse if coarse is not None else self.src
            N = src.n
            eps = rel * self.scale
            for it in range(int(self.opts["iter_per_eps"])):
                U = src.columns(C.reshape(-1)).view(-1, R, k)
                if side is None:
                    P, g, err, n_in = entropic_plan(U, eps, self.lo, self.hi, g=g, tol=float(self.opts["tol"]),
                                                    max_iter=int(self.opts["sinkhorn_iter"]))
                else:  # one multiplier per constraint and restart; the location step pays its price
                    Vk = Vt[C.reshape(-1)].view(R, k, -1).transpose(1, 2)  # (R, C, K)
                    # fewer inner iterations: the multipliers' Newton steps keep improving across the
                    # location updates and temperatures (warm starts), and the polish prices exactly
                    P, g, err, n_in, lam = entropic_plan(U, eps, self.lo, self.hi, g=g, tol=float(self.opts["tol"]),
                                                         max_iter=min(50, int(self.opts["sinkhorn_iter"])),
                                                         side=(Wt, Vk, *bounds), lam=lam)
                if src.n_local != N:  # sharded (free masses): the plan's rows are 1/N of the whole sample
                    P = P * (src.n_local / N)
                S = src.scores(P.reshape(-1, R * k)).view(R, k, M)
                if side is not None:
                    S = S - torch.einsum("rkc,rc,mc->rkm", (P.reshape(N, R * k).T @ Wt).view(R, k, -1), lam, Vt)
                S = S.to(torch.float64).cpu().numpy()
                # totals in units of all the run's customers (estimates while on the coarse sample)
                soft = src.reduce_sum((P * U).to(torch.float64).sum((0, 2))).cpu() * (self.src.n * self.unit)
                hard = src.reduce_sum(U.max(2).values.to(torch.float64).sum(0)).cpu() * (self.src.n * self.unit / N)
                changed = False
                for r in range(R):
                    self.trace.append({"restart": int(restart_ids[r]), "phase": "anneal", "eps": rel, "iter": it,
                                       "objective": float(hard[r]), "entropic_objective": float(soft[r]),
                                       "marginal_error": float(err[r]), "sinkhorn_iters": n_in, "rows": N})
                    new = _best_distinct(S[r], C[r].cpu().numpy(), self.rel_tol)
                    if new is not None:
                        C[r] = torch.as_tensor(new, device=C.device)
                        changed = True
                if not changed:
                    break
            if pbar is not None:
                pbar.update(1)
        return C, g, lam


    def objective(self, C: torch.Tensor) -> float:
        """Total profit of the argmax assignment to columns C (K,) (no shares)."""
        return float(self.src.reduce_sum(self.src.columns(C).max(1).values.to(torch.float64).sum()))

    def swap(self, C: torch.Tensor, obj: float, gen: torch.Generator, restart_id: int):
        """1-swap local search: replace one treatment by one candidate while that raises the objective.

        The value of swapping slot k for candidate m is sum_i max(r_ik, Pi_im), r_ik = the best profit of
        customer i without slot k: all (k, m) pairs cost two passes over a screening sample of customers
        (``swap_values``; all customers when N * M is small: then the screening is exact). The best
        screened swaps are verified on all customers. When no swap improves, a Lloyd polish; stops
        when neither a swap nor the polish improves. (No share constraints.)
        """
        src, k, M = self.src, self.k, self.src.m
        if k >= M:
            return C, obj
        rows, n_s, exact_screen = self._screen_rows(gen)
        Xs = src.submatrix(rows)
        polished = True  # the starts are Lloyd fixed points
        for rnd in range(int(self.opts["max_iter"])):
            Us = Xs[:, C]
            base = Us.max(1).values
            G = swap_values(Xs, Us)
            G[:, C] = -math.inf
            delta = (G - base.to(torch.float64).sum()).flatten()
            tol = self.rel_tol * (abs(obj) + 1.0)
            order = torch.argsort(delta, descending=True)[:4]
            accepted = False
            for f in order.tolist():
                if float(delta[f]) <= (tol if exact_screen else -math.inf):
                    break
                j, m = divmod(f, M)
                C2 = C.clone()
                C2[j] = m
                val = self.objective(C2)
                if val > obj + tol:
                    C, obj, accepted = C2, val, True
                    break
            self.trace.append({"restart": restart_id, "phase": "swap", "eps": 0.0, "iter": rnd, "objective": obj,
                               "marginal_error": 0.0, "accepted": accepted})
            if accepted:
                polished = False
                continue
            if polished:  # no improving swap from a Lloyd fixed point: done
                break
            # One Lloyd polish per run of accepted swaps (not one per swap: each polish costs a few
            # full passes over the profits, a swap round one screening pass and a verification).
            Cp, objp, _ = self.lloyd(C[None], "swap-polish", [restart_id])
            polished = True
            val = self.objective(Cp[0])
            if not val > obj + tol:
                break
            C, obj = Cp[0], val
        return C, obj

    def _screen_rows(self, gen: torch.Generator):
        """(rows (n_s,) sorted, n_s, exact): the customers a swap search screens on; all of them (exact
        screening) when N * M <= 2**22 and ``swap_rows`` is unset, else a random sample."""
        src, N, M = self.src, self.src.n, self.src.m
        n_s = self.opts["swap_rows"]
        n_s = min(N, N if n_s is None and N * M <= 2**22 else int(n_s or max(4096, 2**22 // M)))
        exact = n_s == N
        rows = torch.arange(N, device=src.device) if exact else \
            torch.randperm(N, generator=gen)[:n_s].sort().values.to(src.device)
        return rows, n_s, exact

    def swap_constrained(self, C: torch.Tensor, obj: float, prices, gen: torch.Generator, restart_id: int):
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
        src, k, N, M = self.src, self.k, self.src.n, self.src.m
        if k >= M or prices is None:
            return C, obj, prices
        rows, n_s, exact_screen = self._screen_rows(gen)
        Xs = src.submatrix(rows).to(torch.float64)
        Ws = self.side_W[rows].to(torch.float64) if self.side is not None else None
        polished = True
        for rnd in range(int(self.opts["max_iter"])):
            B = self._swap_bounds(Xs, Ws, C, prices, N / n_s)
            B[:, C] = -math.inf
            tol = self.rel_tol * (abs(obj) + 1.0)
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
                a2, p2, ok = self.hard_assign(U2, prices, C2, integral=False)
                val = self.value(U2, a2, p2, ok)
                if val > obj + tol:
                    C, obj, prices, accepted = C2, val, p2, True
                    break
            self.trace.append({"restart": restart_id, "phase": "swap", "eps": 0.0, "iter": rnd, "objective": obj,
                               "marginal_error": 0.0, "accepted": accepted})
            if accepted:
                polished = False
                continue
            if polished:
                break
            Cp, objp, pp = self.lloyd(C[None], "swap-polish", [restart_id], prices=[prices])
            polished = True
            if not float(objp[0]) > obj + tol:
                break
            C, obj, prices = Cp[0], float(objp[0]), pp[0]
        return C, obj, prices

    def _swap_bounds(self, Xs: torch.Tensor, Ws, C: torch.Tensor, prices, unit: float) -> torch.Tensor:
        """(K, M) Lagrangian bounds B_jm of ``swap_constrained`` on the screening rows (x ``unit``)."""
        k = self.k
        g = torch.as_tensor(prices.g, dtype=torch.float64, device=Xs.device)
        Xp = Xs
        const = -float(np.sum(np.maximum(prices.g, 0) * self.L - np.maximum(-prices.g, 0) * self.H))
        if self.side is not None and prices.lam.size:
            # support multipliers are left out (0): weak duality holds for any multipliers
            lam = torch.as_tensor(prices.lam[:self.n_side], dtype=torch.float64, device=Xs.device)
            Xp = Xs - (Ws * lam) @ self.side_V.to(torch.float64).T
            hi = np.where(np.isfinite(self.side.hi), self.side.hi, 0.0)  # lam > 0 only on a finite hi
            lo = np.where(np.isfinite(self.side.lo), self.side.lo, 0.0)
            lam_c = prices.lam[:self.n_side]
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
        cols[best[1]] = best[2]


def _best_distinct_sets(C: torch.Tensor, obj: torch.Tensor, n: int) -> list[int]:
    """Rows of C (R, K) holding the n best distinct treatment sets by objective (R,), best first."""
    keep, seen = [], set()
    for i in torch.argsort(obj, descending=True).tolist():
        key = tuple(sorted(C[i].tolist()))
        if key not in seen:
            seen.add(key)
            keep.append(i)
            if len(keep) >= max(1, n):
                break
    return keep


def _two_level_search(run: _Run, coarse: ProfitSource, seeds, anneal_from, eps_list, lloyd_ids, anneal_ids,
                      n_keep: int, pbar, phase_s: dict, info: dict):
    """Restarts to their fixed points on the annealing sample, the best ``n_keep`` distinct ones polished
    on all the search's customers; returns (C (R, K), objective (R,), restart ids), R <= n_keep.

    Every Lloyd iteration of a restart costs a pass over its customers' profits; on the sample (16k of the
    65k search customers) most iterations cost a quarter, and only the few solutions worth keeping pay
    for passes over all of them (typically 1-2 polish iterations: the sample's fixed point is close).
    """
    k = run.k
    crun = _Run(coarse, k, *share_counts(coarse.n, k, None, None), False, run.opts, run.scale, run.trace, run.rel_tol)
    crun.unit = run.src.n / coarse.n  # trace in units of the search's customers
    t_ph = time.perf_counter()
    if lloyd_ids.size:
        C_l, obj_l, _ = crun.lloyd(seeds, "lloyd-coarse", lloyd_ids)
    else:
        C_l, obj_l = anneal_from[:0], torch.empty(0, dtype=torch.float64)
    phase_s["lloyd"] = time.perf_counter() - t_ph
    pbar.update(1)
    t_ph = time.perf_counter()
    C_a, _, _ = crun.anneal(anneal_from, eps_list, anneal_ids, pbar)
    C_a, obj_a, _ = crun.lloyd(C_a, "polish-coarse", anneal_ids)
    phase_s["anneal"] = time.perf_counter() - t_ph
    info["restart_objectives"] = {"lloyd": (obj_l * crun.unit).tolist(), "sinkhorn": (obj_a * crun.unit).tolist()}
    C_all, obj_all = torch.cat([C_a, C_l], 0), torch.cat([obj_a, obj_l], 0)
    ids = np.concatenate([anneal_ids, lloyd_ids])
    keep = _best_distinct_sets(C_all, obj_all, n_keep)
    t_ph = time.perf_counter()
    C_p, obj_p, _ = run.lloyd(C_all[keep], "polish", ids[keep])
    phase_s["polish"] = time.perf_counter() - t_ph
    return C_p, obj_p, ids[keep].tolist()


def _subsample_size(option, n: int, side: bool = False) -> Optional[int]:
    """Customers the search runs on (None: all of them); see options.SolverOptions.subsample.

    Under side constraints "auto" means 16384 customers when N > 65536: every Lloyd iteration and
    verified swap then costs an exact constrained assignment of the search's customers (restricted LP
    + certificate, ~0.1 s at 20,000 customers, seconds at 1e5), and the exact polish on all N follows.
    """
    if option is None:
        return None
    if option == "auto":
        if side:
            return 16384 if n > 65536 else None
        return 65536 if n > 262144 else None
    if isinstance(option, bool) or not isinstance(option, (int, np.integer)) or int(option) < 1:
        raise ValueError(f"subsample must be 'auto', None or a positive int, got {option!r}")
    return int(option) if int(option) < n else None


def _eps_schedule(eps_start: float, eps_target: float, decay: float) -> list[float]:
    if eps_start <= eps_target:
        return [eps_target]
    n = int(math.ceil(math.log(eps_target / eps_start) / math.log(decay)))
    out = [eps_start * decay**i for i in range(n)]
    return out + [eps_target]


# ----------------------------------------------------------------------------------------------------
# public entry point
# ----------------------------------------------------------------------------------------------------
def discretize(
    profit,
    k: int,
    candidates=None,
    min_share: Optional[float] = None,
    max_share: Optional[float] = None,
    epsilon: Optional[float] = None,
    device="auto",
    seed: int = 0,
    constraints=None,
    distributed: bool = False,
    **options,
) -> Discretization:
    """Choose K treatments among candidates and assign every customer to one (see module docstring).

    Parameters
    ----------
    profit : (N, M) numpy array / torch tensor of estimated profits at the M candidates, or a
        ``FactoredProfit(V, W)`` (profit = V @ W.T, evaluated lazily), or a callable oracle mapping a
        (T, d) float64 tensor of treatments to (N, T) profits (then ``candidates`` is required).
    k : number of distinct treatments, 1 <= k <= M.
    candidates : (M, d) candidate treatments; default the indices 0..M-1 as an (M, 1) array.
    min_share, max_share : bounds on every treatment's share of customers (exactly honoured by the
        hard assignment, with integer capacities ceil(min_share N) .. floor(max_share N)).
    epsilon : target entropic temperature relative to the profit scale (sinkhorn; default 0.01).
    device : "auto" | "cpu" | "cuda" | "cuda:N" | torch.device.
    seed : seeds the k-means++ restarts.
    constraints : a ``Constraint`` or a list of them (``constraints.py``): sum_i w_i v[c(i)] in [lo, hi],
        exactly satisfied by the returned assignment; ``info["constraints"]`` reports each one's value,
        bounds and dual multiplier. Not with ``refine_oracle`` (values are per candidate) or solver="exact".
    **options : the plain-valued options of ``options.SolverOptions`` (solver, n_restarts, max_iter, tol,
        dtype, lazy, eps_start, eps_decay, iter_per_eps, sinkhorn_iter, refine_rounds, n_anneal,
        anneal_rows, swap, n_swap, swap_rows, subsample, greedy_seed, coarse_restarts, memory_limit_bytes,
        verbose, mip_time_limit, mip_rel_gap; each documented there) and four objects:
        refine_oracle (callable (T, d) -> (N, T): continuous refinement within ``bounds``),
        bounds ((low (d,), high (d,))), init (K candidate indices seeding restart 0) and support
        (a ``constraints.Support``).
    distributed : True: ``profit`` is this rank's shard (rows) of one problem split over the initialized
        torch.distributed default process group, in rank order (``distributed.py``); every rank returns
        the same treatments, ``assignment`` (N_rank,) for its own rows, and the global objective and
        shares. Not with shares, constraints, support or solver "exact" / "mip"; with refine_oracle each
        rank passes the oracle of its own rows.
    """
    t_start = time.perf_counter()
    opts, dtype, eps_target = _check_options(options, epsilon)
    solver = opts["solver"]
    dev = resolve_device(device)
    mem = int(opts["memory_limit_bytes"]) if opts["memory_limit_bytes"] is not None else _default_memory_limit(dev)

    if not isinstance(distributed, bool):
        raise ValueError(f"distributed must be True or False, got {distributed!r}")
    if distributed:
        from coarse_gpu.discretize import distributed as sharding

        sharding.check_request(solver, min_share, max_share, constraints, opts)
        src, cand = sharding.shard_source(lambda: _make_source(profit, candidates, dev, dtype, mem, opts["lazy"]),
                                          dict(opts, k=k, seed=seed, epsilon=epsilon))
    else:
        src, cand = _make_source(profit, candidates, dev, dtype, mem, opts["lazy"])
    N, M = src.n, src.m
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not (1 <= int(k) <= M):
        raise ValueError(f"k must be an integer in [1, M={M}], got {k!r}")
    k = int(k)
    L, H = share_counts(N, k, min_share, max_share)
    shares = bool(L[0] > 0 or H[0] < N)
    side = check_constraints(constraints, N, M, k)
    support = check_support(opts["support"], N, M, k, int(H[0]))
    init, refine_oracle, bounds = _check_search_inputs(opts, k, M, cand, side if side is not None else support)
    if solver == "mip":
        from coarse_gpu.discretize.mip import check_size

        check_size(N, M, int(opts["mip_max_entries"]))  # refused before any profit is evaluated

    gen = torch.Generator().manual_seed(int(seed))
    trace: list = []
    info: dict = {"n_candidates": M, "n_customers": N, "path": src.path, "device": str(dev),
                  "dtype": opts["dtype"], "shares_binding_possible": shares}
    scale = _profit_scale(src, gen)
    info["profit_scale"] = scale
    rel_tol = 1e-6 if dtype == torch.float32 else 1e-12
    run = _Run(src, k, L, H, shares, opts, scale, trace, rel_tol, side=side, support=support)

    best_prices, fixed_assignment = None, None
    if solver == "exact":
        if N * M * 8 > mem:
            raise ValueError("solver='exact' needs the dense N x M profit within memory_limit_bytes")
        X = src.columns64(torch.arange(M, device=dev)).cpu().numpy()
        best_set, _ = enumerate_optimum(X, k, min_share=min_share if shares else None,
                                        max_share=max_share if shares else None)
        C_best = torch.as_tensor(best_set, device=dev)
        eps_used = 0.0
    elif solver == "mip":
        C_best, fixed_assignment = _mip_solve(run, src, k, L, H, side, opts, info)
        eps_used = 0.0
    else:
        C_best, best_prices, eps_used = _search(run, src, k, L, H, side, init, opts, eps_target, gen, seed,
                                                min_share, max_share, info)
    if distributed:
        src.same_on_all_ranks(C_best)
        info["distributed"] = {"world_size": src.comm.world, "rank": src.comm.rank, "n_local": src.n_local}
    return _finish(run, src, cand, C_best, best_prices, fixed_assignment, solver, eps_used, eps_target,
                   refine_oracle, bounds, opts, trace, info, t_start)


def _check_options(options: dict, epsilon):
    """Merged options, torch dtype and target epsilon; ValueError naming a bad option before any work."""
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; known options: {sorted(DEFAULT_OPTIONS)}")
    opts = {**DEFAULT_OPTIONS, **options}
    check_solver_options(opts)
    dtype = torch.float32 if opts["dtype"] == "float32" else torch.float64
    if epsilon is not None and not (float(epsilon) > 0 and math.isfinite(float(epsilon))):
        raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
    eps_target = DEFAULT_EPSILON if epsilon is None else float(epsilon)
    return opts, dtype, eps_target


def _check_search_inputs(opts: dict, k: int, M: int, cand: np.ndarray, side):
    """(init, refine_oracle, bounds) validated; ValueError before any work."""
    init = opts["init"]
    if init is not None:
        init = np.asarray(init).astype(np.int64).reshape(-1)
        if init.size != k or np.unique(init).size != k or init.min() < 0 or init.max() >= M:
            raise ValueError(f"init must hold {k} distinct candidate indices in [0, {M}), got {opts['init']!r}")
    refine_oracle = opts["refine_oracle"]
    if refine_oracle is not None and not callable(refine_oracle):
        raise ValueError("refine_oracle must be a callable (T, d) -> (N, T) profits")
    if side is not None and refine_oracle is not None:  # side: the constraints or the support
        raise ValueError("constraints and support cannot be combined with refine_oracle: they are given per "
                         "candidate, so treatments must stay on the grid")
    if side is not None and opts["solver"] == "exact":
        raise ValueError("solver='exact' (subset enumeration) does not take constraints or support; use solver='mip'")
    bounds = opts["bounds"]
    if bounds is not None:
        try:
            low, high = (np.asarray(b, dtype=np.float64).reshape(-1) for b in bounds)
        except Exception as err:
            raise ValueError("bounds must be a pair (low (d,), high (d,))") from err
        if low.shape != (cand.shape[1],) or high.shape != (cand.shape[1],) or np.any(low > high):
            raise ValueError(f"bounds must be (low, high) arrays of shape ({cand.shape[1]},) with low <= high")
        bounds = (low, high)
    return init, refine_oracle, bounds


def _mip_solve(run: _Run, src, k: int, L, H, side, opts: dict, info: dict):
    """solver="mip": (C (K,) tensor, assignment (N,) int64 or None) from ``mip.solve_mip``.

    The MIP is solved with x continuous (y binary): a relaxation when side constraints are present,
    so its optimum bounds the true one from above. The chosen treatments then get the exact integral
    assignment (``assign_constrained``); when its value is within ``mip_rel_gap`` of the bound the
    result is proven optimal, otherwise (or if it has no integral assignment) the MIP is solved again
    with x integral. Measured on 300 x 20 instances with a budget and a parity band: 4-11 s for the
    relaxed MIP, 30-180 s with x integral from the start.
    """
    from coarse_gpu.discretize.mip import solve_mip

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


def _rows_of(src, side, idx):
    """(source, side constraints) restricted to the sorted customers idx (source None if unsupported)."""
    sub = src.rows(idx)
    return sub, (side.rows(idx) if side is not None and sub is not None else None)


def _search(run: _Run, src, k: int, L, H, side, init, opts: dict, eps_target: float, gen, seed: int,
            min_share, max_share, info: dict):
    """sinkhorn / lloyd: restarts, annealing, swaps (module docstring); returns (C (K,), Prices, eps)."""
    from tqdm.auto import tqdm

    solver, n_restarts, N, M = opts["solver"], int(opts["n_restarts"]), src.n, src.m
    shares = run.shares
    # The search runs on `run` (all customers) or on a subsample's run; see options.SolverOptions.subsample.
    full_run = run
    n_sub = _subsample_size(opts["subsample"], N, run.rows_priced)
    if n_sub is not None:
        sub_idx = np.sort(np.random.default_rng(int(seed)).choice(N, n_sub, replace=False))
        sub_src, sub_side = _rows_of(src, side, sub_idx)
        Ls, Hs = share_counts(n_sub, k, min_share, max_share)
        sub_sup = run.support.rows(sub_idx) if run.support is not None else None
        run = _Run(sub_src, k, Ls, Hs, shares, opts, run.scale, run.trace, run.rel_tol, side=sub_side, support=sub_sup)
        info["subsample"] = n_sub
    phase_s: dict[str, float] = {}  # wall time per phase (info["phase_s"])
    greedy = solver == "lloyd" or _greedy_seed(opts["greedy_seed"], run.src.n, M, run.constrained)
    n_a = n_restarts if opts["n_anneal"] is None else min(n_restarts, int(opts["n_anneal"]))
    eps_list = _eps_schedule(float(opts["eps_start"]), eps_target, float(opts["eps_decay"]))
    t_ph = time.perf_counter()
    # The annealing sample (see _Run.anneal): the annealing runs on it, the polish on all run rows.
    a_rows, coarse, coarse_side = opts["anneal_rows"], None, None
    if solver == "sinkhorn" and a_rows is not None and run.src.n > 2 * int(a_rows) and len(eps_list) > 1:
        coarse, coarse_side = _rows_of(run.src, run.side, np.sort(np.random.default_rng(int(seed) + 1).choice(
            run.src.n, int(a_rows), replace=False)))  # None where the source cannot subsample
    # Two-level search (sinkhorn, large search, no shares): every restart runs to its fixed point on
    # the annealing sample, and only the best n_swap distinct ones are polished on all the search's
    # customers (see options.SolverOptions.coarse_restarts).
    two_level = solver == "sinkhorn" and coarse is not None and not greedy and not run.constrained \
        and bool(opts["coarse_restarts"])
    anneal_ids = np.arange(n_a)  # the annealed restarts are restarts 0..n_a-1 on both paths
    pbar = tqdm(total=len(eps_list) + 2, desc=f"discretize K={k}", disable=not opts["verbose"], leave=False)
    results, result_ids, result_prices = [], [], []  # (C (R, K), objective (R,)) per phase, restart ids, prices
    info["restart_objectives"] = {}
    seed_src = run.src
    if solver == "sinkhorn" and run.side is not None:
        seed_src = _anneal_first(run, coarse, coarse_side, n_a, k, gen, init, eps_list, anneal_ids, pbar, phase_s,
                                 results, result_ids, result_prices, info)
        t_ph = time.perf_counter()
    if greedy:  # restart 0 greedy (or init), 1.. k-means++; the first n_a of them also annealed
        seeds = _seeds(seed_src, k, n_restarts, gen, init)
        anneal_from, lloyd_ids = seeds[:n_a], np.arange(n_restarts)
    else:  # restarts 0..n_a-1 annealed from cheap starts, n_a.. k-means++ Lloyd
        anneal_from = _anneal_starts(coarse if two_level else run.src, n_a, k, gen, init)
        # k-means++ draws customers in proportion to their regret: drawing them from the annealing
        # sample (a uniform subsample) gives the same distribution of seeds at a fraction of the
        # row-max pass; the Lloyd restarts themselves then run on all the search's customers.
        seeds = _seeds(coarse if coarse is not None else run.src, k, n_restarts - n_a + 1, gen, None, first=False)
        lloyd_ids = np.arange(n_a, n_restarts)
    phase_s["seed"] = time.perf_counter() - t_ph
    if two_level:
        C_r, obj_r, ids_r = _two_level_search(run, coarse, seeds, anneal_from, eps_list, lloyd_ids, anneal_ids,
                                              int(opts["n_swap"] or n_restarts), pbar, phase_s, info)
        results.append((C_r, obj_r))
        result_ids.extend(ids_r)
        result_prices.extend([None] * len(ids_r))
        if opts["greedy_seed"] == "auto" and run.src.n * M < _GREEDY_AFFORDABLE:
            # Lloyd's own greedy restart on all the search's customers, where its K passes are cheap
            t_ph = time.perf_counter()
            C_g, obj_g, _ = run.lloyd(_seeds(run.src, k, 1, gen, None), "greedy", [n_restarts])
            phase_s["greedy"] = time.perf_counter() - t_ph
            results.append((C_g, obj_g))
            result_ids.append(n_restarts)
            result_prices.append(None)
            info["restart_objectives"]["greedy"] = obj_g.tolist()
    else:
        if lloyd_ids.size:
            t_ph = time.perf_counter()
            C_l, obj_l, p_l = run.lloyd(seeds, "lloyd", lloyd_ids)
            phase_s["lloyd"] = time.perf_counter() - t_ph
            results.append((C_l, obj_l))
            result_ids.extend(lloyd_ids.tolist())
            result_prices.extend(p_l)
            info["restart_objectives"]["lloyd"] = obj_l.tolist()
        pbar.update(1)
        if solver == "sinkhorn" and run.side is None:
            _anneal_recorded(run, anneal_from, eps_list, anneal_ids, pbar, coarse, None, phase_s, results, result_ids,
                             result_prices, info)
    pbar.update(1)
    pbar.close()
    _feasible_restart(run, k, n_restarts + 1, results, result_ids, result_prices, phase_s, info)
    allC = torch.cat([c for c, _ in results], 0)
    allobj = torch.cat([o for _, o in results], 0)
    best = int(allobj.argmax())
    C_best, best_prices = allC[best], result_prices[best]
    if solver == "sinkhorn" or run.side is not None:
        # lloyd too under side constraints: its priced fixed points can sit far below the optimum
        # (measured up to 20 % below the MIP under a budget), which the constrained swap search closes
        info["best_from"] = "sinkhorn" if solver == "sinkhorn" and result_ids[best] in set(anneal_ids.tolist()) \
            else "lloyd"
        if opts["swap"]:
            t_ph = time.perf_counter()
            C_best, best_prices = _swap_phase(run, allC, allobj, result_ids, result_prices, C_best, best_prices,
                                              gen, int(opts["n_swap"] or len(result_ids)), info)
            phase_s["swap"] = time.perf_counter() - t_ph
    if run is not full_run:  # exact Lloyd polish of the sample's winner on every customer
        t_ph = time.perf_counter()
        warm = None
        if best_prices is not None:  # a sample's multipliers are N / n times smaller per unit weight
            warm = [Prices(best_prices.g, best_prices.lam * (full_run.src.n / run.src.n))]
        C_f, obj_f, p_f = full_run.lloyd(C_best[None], "polish-full", np.arange(1), prices=warm)
        phase_s["polish_full"] = time.perf_counter() - t_ph
        C_best, best_prices = C_f[0], p_f[0]
        info["objective_after_full_polish"] = float(obj_f[0])
    info["phase_s"] = phase_s
    if not math.isfinite(float(allobj.max())) and run.rows_priced:
        return _mip_fallback(full_run, src, k, opts, info), None, 0.0
    return C_best, best_prices, (eps_target if solver == "sinkhorn" else 0.0)


def _feasible_restart(run: _Run, k: int, restart_id: int, results, result_ids, result_prices, phase_s, info) -> None:
    """Lloyd from ``_feasible_start`` (when there is one), recorded with the other restarts: under side
    constraints the search then always holds a feasible set if a trivially feasible one exists."""
    feas = _feasible_start(run, k)
    if feas is None:
        return
    t_ph = time.perf_counter()
    C_f, obj_f, p_f = run.lloyd(feas, "feasible-start", np.array([restart_id]))
    phase_s["feasible_start"] = time.perf_counter() - t_ph
    results.append((C_f, obj_f))
    result_ids.append(restart_id)
    result_prices.extend(p_f)
    info["restart_objectives"]["feasible_start"] = obj_f.tolist()


def _mip_fallback(run: _Run, src, k: int, opts: dict, info: dict) -> torch.Tensor:
    """No restart found a feasible set: on an instance within ``mip_max_entries`` the exact MIP decides
    (its treatments, or the proof that none exist); beyond it the search's refusal stands."""
    from coarse_gpu.discretize.mip import size_problem

    if size_problem(run.src.n, run.src.m, int(opts["mip_max_entries"])) is not None:
        _raise_infeasible(run)
    try:
        C, _ = _mip_solve(run, src, k, run.L, run.H, run.side, opts, info)
    except ValueError as err:
        if "infeasible" not in str(err):
            raise
        _raise_infeasible(run, proven=True)
    info["fallback"] = "mip: no restart of the search found a feasible set"
    return C


def _feasible_start(run: _Run, k: int) -> Optional[torch.Tensor]:
    """(1, K) start whose hard assignment is feasible, for side constraints without shares or support:
    the candidate that satisfies every constraint when it serves all customers alone (a budget's
    cheapest treatment, e.g. no promotion at cost 0), the best such on average, then the greedy
    facility-location columns. None when no such candidate exists (the MIP fallback decides then)."""
    side = run.side
    if side is None or run.support is not None or run.shares or k > run.src.m:
        return None
    alone = side.W.sum(0)[None, :] * side.V  # (M, C): each constraint's value with everyone on candidate m
    ok = np.all((alone >= side.lo - side.tol) & (alone <= side.hi + side.tol), axis=1)
    if not ok.any():
        return None
    means = column_means(run.src).to(torch.float64).cpu().numpy()
    first = int(np.flatnonzero(ok)[np.argmax(means[ok])])
    return torch.tensor([greedy(run.src, k, start=[first])], dtype=torch.long, device=run.src.device)


def _anneal_first(run: _Run, coarse, coarse_side, n_a, k, gen, init, eps_list, anneal_ids, pbar, phase_s,
                  results, result_ids, result_prices, info):
    """Side constraints: anneal first (its multipliers learn the constraints' prices), record the
    polished restarts, and return the profits priced by the best one's multipliers, on which the Lloyd
    seeds are drawn so that the restarts start near feasibility."""
    starts = _anneal_starts(coarse if coarse is not None else run.src, n_a, k, gen, init)
    obj_p, p_p = _anneal_recorded(run, starts, eps_list, anneal_ids, pbar, coarse, coarse_side, phase_s, results,
                                  result_ids, result_prices, info)
    lam0 = p_p[int(obj_p.argmax())].lam[:run.n_side]
    return PricedSource(run.src, run.side.W, run.side.V, lam0)


def _anneal_recorded(run: _Run, starts, eps_list, anneal_ids, pbar, coarse, coarse_side, phase_s, results, result_ids,
                     result_prices, info):
    """Anneal and polish ``starts``, recording the phase time, the results, their restart ids and prices;
    returns (objectives, prices) of the polished restarts."""
    t_ph = time.perf_counter()
    C_p, obj_p, p_p = _anneal_and_polish(run, starts, eps_list, anneal_ids, pbar, coarse, coarse_side)
    phase_s["anneal"] = time.perf_counter() - t_ph
    results.append((C_p, obj_p))
    result_ids.extend(anneal_ids.tolist())
    result_prices.extend(p_p)
    info["restart_objectives"]["sinkhorn"] = obj_p.tolist()
    return obj_p, p_p


def _anneal_and_polish(run: _Run, starts, eps_list, ids, pbar, coarse, coarse_side):
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


def _swap_phase(run: _Run, allC, allobj, result_ids, result_prices, C_best, best_prices, gen, n_swap: int,
                info: dict):
    """The 1-swap search on the best n_swap distinct solutions (``swap`` or ``swap_constrained``)."""
    best_obj = float(allobj.max())
    for idx in _best_distinct_sets(allC, allobj, n_swap):
        if not math.isfinite(float(allobj[idx])):
            continue
        if run.constrained:
            Cs, objs, ps = run.swap_constrained(allC[idx].clone(), float(allobj[idx]), result_prices[idx], gen,
                                                result_ids[idx])
        else:
            Cs, objs = run.swap(allC[idx].clone(), float(allobj[idx]), gen, result_ids[idx])
            ps = None
        if objs > best_obj:
            C_best, best_obj, best_prices = Cs, objs, ps
            info["best_from"] = "swap"
    return C_best, best_prices


def _raise_infeasible(run: _Run, proven: bool = False):
    parts = []
    if run.side is not None:
        parts.append("constraints " + ", ".join(repr(n) for n in run.side.names))
    if run.support is not None:
        parts.append(f"the support of {run.support.n:g} customers per segment")
    extra = f" with the share bounds (counts in [{int(run.L[0])}, {int(run.H[0])}])" if run.shares else ""
    if proven:
        raise ValueError(f"{' and '.join(parts)} could not be satisfied{extra}: no K treatments have a feasible "
                         "assignment (proven by the exact MIP); loosen them")
    raise ValueError(f"{' and '.join(parts)} could not be satisfied{extra}: no restart found K treatments with a "
                     "feasible assignment; loosen them, or check with solver='mip' whether any exist")


def _finish(run: _Run, src, cand, C_best, prices, fixed_assignment, solver: str, eps_used: float,
            eps_target: float, refine_oracle, bounds, opts: dict, trace: list, info: dict, t_start: float):
    """Final hard assignment in float64, refinement, entropic value and the result's report."""
    N, k = src.n, run.k
    info["grid_index"] = C_best.cpu().numpy().astype(np.int64).tolist()  # before refinement: warm start for K+1
    U64 = src.columns64(C_best)
    if fixed_assignment is not None:  # solver="mip" with side constraints: its integral assignment
        a, prices, feasible = torch.as_tensor(fixed_assignment, device=U64.device), None, True
        prices = run.hard_assign(U64, None, C_best, integral=False)[1]  # the LP duals (the report)
    else:
        a, prices, feasible = run.hard_assign(U64, prices, C_best)
    if not feasible:
        _raise_infeasible(run)
    assignment = a.cpu().numpy().astype(np.int64)
    T = cand[C_best.cpu().numpy()].copy()
    cand_index = C_best.cpu().numpy().astype(np.int64)

    if refine_oracle is not None:
        if bounds is None:
            bounds = (cand.min(0), cand.max(0))
        reassign = lambda U: run.hard_assign(U)[0].cpu().numpy()  # noqa: E731
        steps = grid_steps(cand, *bounds)
        if opts["frozen_dims"] is not None:  # the dimensions' declared kinds win over the heuristic
            frozen = np.asarray(opts["frozen_dims"], dtype=bool).reshape(-1)
            if frozen.shape[0] != cand.shape[1]:
                raise ValueError(f"frozen_dims needs {cand.shape[1]} flags (one per treatment dimension), got "
                                 f"{frozen.shape[0]}")
            steps[frozen] = 0.0  # a zero step: the pattern search never moves that dimension
            info["refine_kept_fixed_dims"] = np.flatnonzero(frozen).tolist()
        elif not opts["refine_integer_dims"]:  # a zero step: the pattern search never moves that dimension
            frozen = integer_dims(cand)
            steps[frozen] = 0.0
            info["refine_kept_integer_dims"] = np.flatnonzero(frozen).tolist()
        T, assignment, U64, moved = refine_treatments(
            refine_oracle, T, assignment, bounds, steps, reassign, src.device,
            max_rounds=int(opts["refine_rounds"]), trace=trace, reduce=src.reduce_sum,
        )
        cand_index = np.where(moved, -1, cand_index)
        info["refined"] = moved.tolist()

    a_t = torch.as_tensor(assignment, device=U64.device)
    objective = float(src.reduce_sum(U64.gather(1, a_t[:, None]).sum()))
    entropic = objective
    if solver == "sinkhorn":
        entropic = _final_entropic(run, U64, prices, cand_index, eps_target, opts, info)
    if run.shares and not run.rows_priced:
        ok, _ = certify(U64.cpu().numpy(), assignment, run.L, run.H)
        info["share_assignment_certified_optimal"] = bool(ok)
    lam = prices.lam if prices is not None and prices.lam is not None else np.zeros(0)
    if run.side is not None:
        vals = run.side.values(assignment, cand_index)
        info["constraints"] = run.side.report(vals, lam[:run.n_side])
    if run.support is not None:
        info["support"] = {"n": run.support.n,
                           "segment_counts": run.support.segment_counts(assignment, cand_index).astype(int).tolist(),
                           "dual": [float(x) for x in lam[run.n_side:]] or [0.0] * k}
    if run.rows_priced:
        info["constraint_rounding_gap"] = float(prices.rounding_gap) if prices is not None else 0.0
    counts = src.reduce_sum(np.bincount(assignment, minlength=k))
    info["epsilon_abs"] = eps_used * run.scale
    info["time_s"] = time.perf_counter() - t_start
    return Discretization(
        treatments=np.asarray(T, dtype=np.float64),
        assignment=assignment,
        objective=objective,
        entropic_objective=entropic,
        trace=trace,
        solver=solver,
        epsilon=eps_used,
        candidate_index=cand_index,
        shares=counts / N,
        info=info,
    )


def _final_entropic(run: _Run, U64, prices, cols, eps_target: float, opts: dict, info: dict) -> float:
    """Total profit N sum_ik P_ik U_ik of the entropic plan at the target temperature on the final treatments.

    Warm-started from the hard assignment's LP prices (same sign convention: a_i = argmax_k U_ik + g_k
    - sum_c lam_c w_ic v_ck); at a small eps the entropic potentials are within O(eps) of them, so this
    converges in a few iterations where a cold start needs hundreds (10 s at N = 1e5 with binding shares).
    """
    N, scale = U64.shape[0], run.scale
    if not run.constrained:  # free column masses: the plan is a row softmax, its rows sum to 1/N exactly
        info["final_marginal_error"] = 0.0
        return run.src.reduce_sum(entropic_value(U64, eps_target * scale))
    g0 = torch.as_tensor(prices.g, device=U64.device) if prices is not None else None
    kw = dict(g=g0, tol=min(float(opts["tol"]), 1e-6), max_iter=max(1000, int(opts["sinkhorn_iter"])))
    if run.side is not None:
        side = (torch.as_tensor(run.side.W, device=U64.device), torch.as_tensor(run.side.at(cols), device=U64.device),
                torch.as_tensor(run.side.lo), torch.as_tensor(run.side.hi))
        lam0 = torch.as_tensor(prices.lam[:run.n_side], device=U64.device) if prices is not None else None
        P, _, err, _, _ = entropic_plan(U64, eps_target * scale, run.lo, run.hi, side=side, lam=lam0, **kw)
    else:
        P, _, err, _ = entropic_plan(U64, eps_target * scale, run.lo, run.hi, **kw)
    info["final_marginal_error"] = float(err)
    return float((P * U64).sum()) * N
