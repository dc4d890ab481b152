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

All restarts run batched: one pass over Pi serves every restart (a (N, R K) plan times Pi).

Shares: the annealing uses the boxed plan; every hard assignment is the exact capacitated assignment
(network simplex on the ambiguous customers + LP-duality certificate, ``exact.assign_with_shares``),
warm-started with the entropic prices; integer capacities are ceil(min_share N) and floor(max_share N).

Continuous refinement: with ``refine_oracle`` the final treatments leave the grid by pattern search
within ``bounds`` (``refine.py``); ``candidate_index`` is then -1 for the moved ones.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from coarse_gpu.discretize.exact import _assign_with_counts, certify, enumerate_optimum, share_counts
from coarse_gpu.discretize.profit import (
    DenseSource,
    FactoredProfit,
    FactoredSource,
    OracleSource,
    ProfitSource,
    call_oracle,
    swap_values,
)
from coarse_gpu.discretize.refine import grid_steps, refine_treatments
from coarse_gpu.discretize.sinkhorn import entropic_plan, entropic_value
from coarse_gpu.utils.device import resolve_device

SOLVERS = ("sinkhorn", "lloyd", "exact")
DEFAULT_EPSILON = 0.01  # target temperature, relative to the profit scale
DEFAULT_OPTIONS = dict(
    solver="sinkhorn",
    n_restarts=8,
    max_iter=100,  # Lloyd / polish iterations (and the cap of annealing iterations per eps = iter_per_eps)
    tol=1e-4,  # share violation tolerated by the entropic plan (fraction of all customers)
    dtype="float32",
    refine_oracle=None,
    bounds=None,
    memory_limit_bytes=None,
    verbose=False,
    init=None,
    lazy="auto",  # factored profits: "auto" (KeOps on CUDA, row-blocked torch on CPU) | "keops" | "torch"
    eps_start=1.0,  # first annealing temperature (relative)
    eps_decay=0.5,  # geometric factor between temperatures
    iter_per_eps=4,  # location updates per temperature
    sinkhorn_iter=200,  # inner Sinkhorn iterations per plan (only with share constraints)
    refine_rounds=5,
    # Annealing from eps_start = 1 forgets its start: at that temperature every treatment's plan spans
    # most customers, so all seeds flow to the same solution (measured: 8 seeds -> 1 distinct result on
    # the benchmark instances). Annealing one seed and spending the rest on plain Lloyd restarts (cheap)
    # and the swap search (which is what closes the last 0.1-0.5 %) is the faster mix.
    n_anneal=1,  # sinkhorn: how many of the restarts are annealed (the first ones; None: all)
    # Annealing on this many sampled customers, then the Lloyd polish on all (None: all of them);
    # see _Run.anneal. The k-means++ seeds of the non-greedy path are drawn from the same sample. 16384 customers estimate a segment's mean profit curve to ~1 % of its spread.
    anneal_rows=16384,
    swap=True,  # sinkhorn: finish with 1-swap local search (facility-location moves) on the best solutions
    n_swap=2,  # how many of the best distinct solutions get the swap search (None: n_restarts)
    swap_rows=None,  # customers used to screen swaps (default: all when N * M <= 2**24, else a sample)
    # Large N: search (seeding, restarts, annealing, swaps) on a random subsample of customers, then
    # polish the winner by the exact Lloyd alternation on all N. The K locations depend on the
    # customers only through sums over segments, so a 65k-customer sample pins them down to a
    # sampling error far below the objective's resolution, and the full-data polish removes the rest.
    # "auto": 65536 customers when N > 262144; None: never; an int: that sample size.
    subsample="auto",
    # sinkhorn: restart 0 of the plain Lloyd restarts is the greedy facility-location seed (True) or is
    # left to the annealed solution (False). The greedy seed costs K relu-sum passes over all N x M
    # profits (0.5 s of a 1.5 s Lloyd run on the 65k x 1024 search sample; the k-means++ seeds need one
    # row max), while annealing needs only plan x profit products (O(N K A) on a factored source).
    # "auto": greedy while the search's N x M < 2**22 entries (cheap there) or under share constraints
    # (no swap search there); in the two-level search (coarse_restarts) below 2**24 entries, Lloyd's
    # greedy restart also runs on all the search's customers, next to the sampled restarts (on
    # Gaussian-noise tables it is Lloyd's best restart every time, and no sampled restart reaches it).
    # True / False: always / never. solver="lloyd" always seeds greedily.
    greedy_seed="auto",
    # sinkhorn, large search without the greedy seed and without shares: the k-means++ Lloyd restarts run
    # to their fixed points on the annealing sample too (a quarter of the 65k search rows), and only the
    # best n_swap distinct solutions are polished on all the search's customers before the swap search.
    coarse_restarts=True,
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


def _sample_index(weights: torch.Tensor, gen: torch.Generator) -> int:
    """One index drawn with probability proportional to nonnegative weights (any length)."""
    c = torch.cumsum(weights.to(torch.float64), 0)
    total = float(c[-1])
    if not total > 0:
        return int(torch.randint(weights.shape[0], (1,), generator=gen))
    u = float(torch.rand(1, generator=gen, dtype=torch.float64)) * total
    return int(min(weights.shape[0] - 1, int(torch.searchsorted(c, torch.tensor([u], dtype=c.dtype, device=c.device)))))


def _column_means(src: ProfitSource) -> torch.Tensor:
    """(M,) mean profit of each candidate over the customers (one P^T Pi product)."""
    return src.scores(torch.full((src.n, 1), 1.0 / src.n, device=src.device, dtype=src.dtype))[0]


def _seeds(src: ProfitSource, k: int, n_restarts: int, gen: torch.Generator, init, first: bool = True) -> torch.Tensor:
    """(R, K) distinct candidate indices per restart: init / greedy for restart 0, k-means++ for the rest.

    ``first=False``: only the R - 1 k-means++ seeds (the same ones, drawn from ``gen`` in the same order).
    """
    N, M = src.n, src.m
    seeds = []
    if first and init is not None:
        seeds.append([int(x) for x in init])
    elif first:
        chosen = [int(_column_means(src).argmax())]
        best = src.columns(torch.tensor(chosen, device=src.device))[:, 0]
        for _ in range(1, k):
            gain = src.gains(best)
            gain[torch.tensor(chosen, device=src.device)] = -math.inf
            m = int(gain.argmax())
            chosen.append(m)
            best = torch.maximum(best, src.columns(torch.tensor([m], device=src.device))[:, 0])
        seeds.append(chosen)
    if n_restarts > 1:
        best_full, ideal = src.row_max()
    for _ in range(1, n_restarts):
        i = int(torch.randint(N, (1,), generator=gen))
        chosen = [int(ideal[i])]
        best = src.columns(torch.tensor(chosen, device=src.device))[:, 0]
        for _ in range(1, k):
            m = None
            regret = torch.relu(best_full - best)
            for _try in range(8):
                cand = int(ideal[_sample_index(regret, gen)]) if float(regret.max()) > 0 else -1
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
        first = _column_means(src).topk(k).indices.cpu()
    starts = [first] + [torch.randperm(src.m, generator=gen)[:k] for _ in range(1, r)]
    return torch.stack(starts).to(src.device)


def _greedy_seed(option, n: int, m: int, shares: bool) -> bool:
    """Whether ``sinkhorn`` runs the greedy-seeded Lloyd restart; see DEFAULT_OPTIONS["greedy_seed"]."""
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
    """State shared by the phases of one ``discretize`` call."""

    def __init__(self, src, k, L, H, shares, opts, scale, trace, rel_tol):
        self.src, self.k, self.L, self.H, self.shares = src, k, L, H, shares
        self.opts, self.scale, self.trace, self.rel_tol = opts, scale, trace, rel_tol
        self.lo = float(L[0]) / src.n
        self.hi = float(H[0]) / src.n
        self.unit = 1.0  # trace objectives are reported x unit (a sample's totals in units of the search's)

    def hard_assign(self, U: torch.Tensor, prices=None):
        """Hard assignment of one restart's (N, K) profits: argmax or exact capacitated; returns (a, prices)."""
        if not self.shares:
            return U.argmax(1), None
        a, g = _assign_with_counts(U.detach().to(torch.float64).cpu().numpy(), self.L, self.H, prices)
        return torch.as_tensor(a, device=U.device), g

    def lloyd(self, C0: torch.Tensor, phase: str, restart_ids, prices=None):
        """Exact alternation from (R, K) starts; returns (C (R, K), objective (R,) float64)."""
        src, k, N, M = self.src, self.k, self.src.n, self.src.m
        R = C0.shape[0]
        C = C0.clone()
        obj = torch.full((R,), -math.inf, dtype=torch.float64)
        active = np.ones(R, dtype=bool)
        prices = list(prices) if prices is not None else [None] * R
        for it in range(int(self.opts["max_iter"])):
            act = np.flatnonzero(active)
            if act.size == 0:
                break
            Ca = C[torch.as_tensor(act, device=C.device)]
            U = src.columns(Ca.reshape(-1)).view(N, act.size, k)
            A = torch.empty(N, act.size, dtype=torch.long, device=U.device)
            for j, r in enumerate(act):
                A[:, j], prices[r] = self.hard_assign(U[:, j], prices[r])
            vals = U.gather(2, A[:, :, None])[:, :, 0].to(torch.float64).sum(0).cpu()
            counts = torch.stack([torch.bincount(A[:, j], minlength=k) for j in range(act.size)])  # (Ra, K)
            S = src.segment_scores(A, k).to(torch.float64).cpu().numpy()  # (Ra, K, M)
            for j, r in enumerate(act):
                obj[r] = vals[j]
                self.trace.append({"restart": int(restart_ids[r]), "phase": phase, "eps": 0.0, "iter": it,
                                   "objective": float(vals[j]) * self.unit, "marginal_error": 0.0})
                empty = torch.nonzero(counts[j] == 0).flatten().tolist()
                if empty:
                    # Re-seed empty segments where they gain most (never lowers the objective). Only a
                    # strictly positive gain counts: when every customer already has its best candidate
                    # among the other treatments (e.g. a model whose ideal points sit on a few arms), no
                    # candidate attracts anyone, and re-seeding would cycle to max_iter at an unchanged
                    # objective; the empty treatment is then harmless and the location step goes on.
                    best = U[:, j].gather(1, A[:, j:j + 1])[:, 0]
                    cur = C[r].clone()
                    reseeded = False
                    for e in empty:
                        gain = src.gains(best)
                        gain[cur] = -math.inf
                        m = int(gain.argmax())
                        if not float(gain[m]) > self.rel_tol * (abs(float(vals[j])) + 1.0):
                            break
                        cur[e] = m
                        reseeded = True
                        best = torch.maximum(best, src.columns(torch.tensor([m], device=src.device))[:, 0])
                    if reseeded:
                        C[r] = cur
                        continue
                new = _best_distinct(S[j], C[r].cpu().numpy(), self.rel_tol)
                if new is None:
                    active[r] = False
                else:
                    C[r] = torch.as_tensor(new, device=C.device)
        return C, obj, prices

    def anneal(self, C0: torch.Tensor, eps_list, restart_ids, pbar=None, coarse: Optional[ProfitSource] = None):
        """Deterministic annealing with the entropic plan; returns (C (R, K), potentials g (R, K)).

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
        g = None
        for li, rel in enumerate(eps_list):
            src = coarse if coarse is not None else self.src
            N = src.n
            eps = rel * self.scale
            for it in range(int(self.opts["iter_per_eps"])):
                U = src.columns(C.reshape(-1)).view(N, R, k)
                P, g, err, n_in = entropic_plan(U, eps, self.lo, self.hi, g=g, tol=float(self.opts["tol"]),
                                                max_iter=int(self.opts["sinkhorn_iter"]))
                S = src.scores(P.reshape(N, R * k)).view(R, k, M).to(torch.float64).cpu().numpy()
                # totals in units of all the run's customers (estimates while on the coarse sample)
                soft = (P * U).to(torch.float64).sum((0, 2)).cpu() * (self.src.n * self.unit)
                hard = U.max(2).values.to(torch.float64).sum(0).cpu() * (self.src.n * self.unit / N)
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
        return C, g


    def objective(self, C: torch.Tensor) -> float:
        """Total profit of the argmax assignment to columns C (K,) (no shares)."""
        return float(self.src.columns(C).max(1).values.to(torch.float64).sum())

    def swap(self, C: torch.Tensor, obj: float, gen: torch.Generator, restart_id: int):
        """1-swap local search: replace one treatment by one candidate while that raises the objective.

        The value of swapping slot k for candidate m is sum_i max(r_ik, Pi_im), r_ik = the best profit of
        customer i without slot k: all (k, m) pairs cost two passes over a screening sample of customers
        (``swap_values``; all customers when N * M is small: then the screening is exact). The best
        screened swaps are verified on all customers. When no swap improves, a Lloyd polish; stops
        when neither a swap nor the polish improves. (No share constraints.)
        """
        src, k, N, M = self.src, self.k, self.src.n, self.src.m
        if k >= M:
            return C, obj
        n_s = self.opts["swap_rows"]
        n_s = N if n_s is None and N * M <= 2**22 else int(n_s or max(4096, 2**22 // M))
        n_s = min(N, n_s)
        exact_screen = n_s == N
        rows = torch.arange(N, device=src.device) if exact_screen else \
            torch.randperm(N, generator=gen)[:n_s].sort().values.to(src.device)
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
    C_a, _ = crun.anneal(anneal_from, eps_list, anneal_ids, pbar)
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


def _subsample_size(option, n: int) -> Optional[int]:
    """Customers the search runs on (None: all of them); see DEFAULT_OPTIONS["subsample"]."""
    if option is None:
        return None
    if option == "auto":
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
    **options : solver ("sinkhorn" | "lloyd" | "exact"), n_restarts (8), max_iter (100), tol (1e-4),
        dtype ("float32" | "float64"), refine_oracle, bounds, memory_limit_bytes, verbose, init,
        lazy ("auto" | "keops" | "torch"), eps_start (1.0), eps_decay (0.5), iter_per_eps (4),
        sinkhorn_iter (200), refine_rounds (5), n_anneal (1: restarts annealed), swap (True), n_swap (2),
        subsample ("auto": search on 65536 sampled customers
        when N > 262144, then an exact Lloyd polish on all N; None: search on all N; or an int).
    """
    t_start = time.perf_counter()
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; known options: {sorted(DEFAULT_OPTIONS)}")
    opts = {**DEFAULT_OPTIONS, **options}
    solver = opts["solver"]
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if opts["dtype"] not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {opts['dtype']!r}")
    dtype = torch.float32 if opts["dtype"] == "float32" else torch.float64
    n_restarts = int(opts["n_restarts"])
    if n_restarts < 1:
        raise ValueError(f"n_restarts must be >= 1, got {opts['n_restarts']}")
    if opts["n_anneal"] is not None and (isinstance(opts["n_anneal"], bool) or int(opts["n_anneal"]) < 1):
        raise ValueError(f"n_anneal must be >= 1 or None (all restarts), got {opts['n_anneal']!r}")
    if epsilon is not None and not (float(epsilon) > 0 and math.isfinite(float(epsilon))):
        raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
    eps_target = DEFAULT_EPSILON if epsilon is None else float(epsilon)
    if int(opts["max_iter"]) < 1:
        raise ValueError(f"max_iter must be >= 1, got {opts['max_iter']}")
    if not (0.0 < float(opts["eps_decay"]) < 1.0):
        raise ValueError(f"eps_decay must lie in (0, 1), got {opts['eps_decay']}")
    _greedy_seed(opts["greedy_seed"], 0, 0, False)  # validates the option before any work
    dev = resolve_device(device)
    mem = int(opts["memory_limit_bytes"]) if opts["memory_limit_bytes"] is not None else _default_memory_limit(dev)
    if mem <= 0:
        raise ValueError(f"memory_limit_bytes must be positive, got {opts['memory_limit_bytes']}")

    src, cand = _make_source(profit, candidates, dev, dtype, mem, opts["lazy"])
    N, M = src.n, src.m
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not (1 <= int(k) <= M):
        raise ValueError(f"k must be an integer in [1, M={M}], got {k!r}")
    k = int(k)
    L, H = share_counts(N, k, min_share, max_share)
    shares = bool(L[0] > 0 or H[0] < N)
    init = opts["init"]
    if init is not None:
        init = np.asarray(init).astype(np.int64).reshape(-1)
        if init.size != k or np.unique(init).size != k or init.min() < 0 or init.max() >= M:
            raise ValueError(f"init must hold {k} distinct candidate indices in [0, {M}), got {opts['init']!r}")
    refine_oracle = opts["refine_oracle"]
    if refine_oracle is not None and not callable(refine_oracle):
        raise ValueError("refine_oracle must be a callable (T, d) -> (N, T) profits")
    bounds = opts["bounds"]
    if bounds is not None:
        try:
            low, high = (np.asarray(b, dtype=np.float64).reshape(-1) for b in bounds)
        except Exception as err:
            raise ValueError("bounds must be a pair (low (d,), high (d,))") from err
        if low.shape != (cand.shape[1],) or high.shape != (cand.shape[1],) or np.any(low > high):
            raise ValueError(f"bounds must be (low, high) arrays of shape ({cand.shape[1]},) with low <= high")
        bounds = (low, high)

    gen = torch.Generator().manual_seed(int(seed))
    trace: list = []
    info: dict = {"n_candidates": M, "n_customers": N, "path": src.path, "device": str(dev),
                  "dtype": opts["dtype"], "shares_binding_possible": shares}
    scale = _profit_scale(src, gen)
    info["profit_scale"] = scale
    rel_tol = 1e-6 if dtype == torch.float32 else 1e-12
    run = _Run(src, k, L, H, shares, opts, scale, trace, rel_tol)

    if solver == "exact":
        itemsize = 8
        if N * M * itemsize > mem:
            raise ValueError("solver='exact' needs the dense N x M profit within memory_limit_bytes")
        X = src.columns64(torch.arange(M, device=dev)).cpu().numpy()
        best_set, _ = enumerate_optimum(X, k, min_share=min_share if shares else None,
                                        max_share=max_share if shares else None)
        C_best = torch.as_tensor(best_set, device=dev)
        eps_used = 0.0
    else:
        from tqdm.auto import tqdm

        # The search runs on `run` (all customers) or on a subsample's run; see DEFAULT_OPTIONS["subsample"].
        full_run = run
        n_sub = _subsample_size(opts["subsample"], N)
        sub_src = src.rows(np.sort(np.random.default_rng(int(seed)).choice(N, n_sub, replace=False))) \
            if n_sub is not None else None
        if sub_src is not None:
            Ls, Hs = share_counts(n_sub, k, min_share, max_share)
            run = _Run(sub_src, k, Ls, Hs, shares, opts, scale, trace, rel_tol)
            info["subsample"] = n_sub
        phase_s: dict[str, float] = {}  # wall time per phase (info["phase_s"])
        greedy = solver == "lloyd" or _greedy_seed(opts["greedy_seed"], run.src.n, M, shares)
        n_a = n_restarts if opts["n_anneal"] is None else min(n_restarts, int(opts["n_anneal"]))
        eps_list = _eps_schedule(float(opts["eps_start"]), eps_target, float(opts["eps_decay"]))
        t_ph = time.perf_counter()
        # The annealing sample (see _Run.anneal): the annealing runs on it, the polish on all run rows.
        a_rows, coarse = opts["anneal_rows"], None
        if solver == "sinkhorn" and a_rows is not None and run.src.n > 2 * int(a_rows) and len(eps_list) > 1:
            coarse = run.src.rows(np.sort(np.random.default_rng(int(seed) + 1).choice(
                run.src.n, int(a_rows), replace=False)))  # None where the source cannot subsample
        # Two-level search (sinkhorn, large search, no shares): every restart runs to its fixed point on
        # the annealing sample, and only the best n_swap distinct ones are polished on all the search's
        # customers (see DEFAULT_OPTIONS["coarse_restarts"]).
        two_level = solver == "sinkhorn" and coarse is not None and not greedy and not shares \
            and bool(opts["coarse_restarts"])
        if greedy:  # restart 0 greedy (or init), 1.. k-means++; the first n_a of them also annealed
            seeds = _seeds(run.src, k, n_restarts, gen, init)
            anneal_from, lloyd_ids = seeds[:n_a], np.arange(n_restarts)
        else:  # restarts 0..n_a-1 annealed from cheap starts, n_a.. k-means++ Lloyd
            anneal_from = _anneal_starts(coarse if two_level else run.src, n_a, k, gen, init)
            # k-means++ draws customers in proportion to their regret: drawing them from the annealing
            # sample (a uniform subsample) gives the same distribution of seeds at a fraction of the
            # row-max pass; the Lloyd restarts themselves then run on all the search's customers.
            seeds = _seeds(coarse if coarse is not None else run.src, k, n_restarts - n_a + 1, gen, None, first=False)
            lloyd_ids = np.arange(n_a, n_restarts)
        phase_s["seed"] = time.perf_counter() - t_ph
        anneal_ids = np.arange(n_a)  # the annealed restarts are restarts 0..n_a-1 on both paths
        pbar = tqdm(total=len(eps_list) + 2, desc=f"discretize K={k}", disable=not opts["verbose"], leave=False)
        results, result_ids = [], []  # (C (R, K), objective (R,)) per phase, and the restart id of each row
        info["restart_objectives"] = {}
        if two_level:
            C_r, obj_r, ids_r = _two_level_search(run, coarse, seeds, anneal_from, eps_list, lloyd_ids, anneal_ids,
                                                  int(opts["n_swap"] or n_restarts), pbar, phase_s, info)
            results.append((C_r, obj_r))
            result_ids.extend(ids_r)
            if opts["greedy_seed"] == "auto" and run.src.n * M < _GREEDY_AFFORDABLE:
                # Lloyd's own greedy restart on all the search's customers, where its K passes are cheap
                t_ph = time.perf_counter()
                C_g, obj_g, _ = run.lloyd(_seeds(run.src, k, 1, gen, None), "greedy", [n_restarts])
                phase_s["greedy"] = time.perf_counter() - t_ph
                results.append((C_g, obj_g))
                result_ids.append(n_restarts)
                info["restart_objectives"]["greedy"] = obj_g.tolist()
            eps_used = eps_target
        else:
            if lloyd_ids.size:
                t_ph = time.perf_counter()
                C_l, obj_l, _ = run.lloyd(seeds, "lloyd", lloyd_ids)
                phase_s["lloyd"] = time.perf_counter() - t_ph
                results.append((C_l, obj_l))
                result_ids.extend(lloyd_ids.tolist())
                info["restart_objectives"]["lloyd"] = obj_l.tolist()
            pbar.update(1)
            if solver == "sinkhorn":
                t_ph = time.perf_counter()
                C_a, g = run.anneal(anneal_from, eps_list, anneal_ids, pbar, coarse=coarse)
                prices = [g[r].to(torch.float64).cpu().numpy() for r in range(n_a)] if shares else None
                C_p, obj_p, _ = run.lloyd(C_a, "polish", anneal_ids, prices=prices)
                phase_s["anneal"] = time.perf_counter() - t_ph
                results.append((C_p, obj_p))
                result_ids.extend(anneal_ids.tolist())
                info["restart_objectives"]["sinkhorn"] = obj_p.tolist()
                eps_used = eps_target
            else:
                eps_used = 0.0
        pbar.update(1)
        pbar.close()
        allC = torch.cat([c for c, _ in results], 0)
        allobj = torch.cat([o for _, o in results], 0)
        best = int(allobj.argmax())
        C_best = allC[best]
        if solver == "sinkhorn":
            best_id = result_ids[best]
            info["best_from"] = "sinkhorn" if best_id in set(anneal_ids.tolist()) else "lloyd"
            if opts["swap"] and not shares:
                t_ph = time.perf_counter()
                best_obj = float(allobj[best])
                for idx in _best_distinct_sets(allC, allobj, int(opts["n_swap"] or len(result_ids))):
                    Cs, objs = run.swap(allC[idx].clone(), float(allobj[idx]), gen, result_ids[idx])
                    if objs > best_obj:
                        C_best, best_obj = Cs, objs
                        info["best_from"] = "swap"
                phase_s["swap"] = time.perf_counter() - t_ph
        if run is not full_run:  # exact Lloyd polish of the sample's winner on every customer
            run = full_run
            t_ph = time.perf_counter()
            C_f, obj_f, _ = run.lloyd(C_best[None], "polish-full", np.arange(1))
            phase_s["polish_full"] = time.perf_counter() - t_ph
            C_best = C_f[0]
            info["objective_after_full_polish"] = float(obj_f[0])
        info["phase_s"] = phase_s

    # ---- final hard assignment in float64 --------------------------------------------------------------
    info["grid_index"] = C_best.cpu().numpy().astype(np.int64).tolist()  # before refinement: warm start for K+1
    U64 = src.columns64(C_best)
    a, prices = run.hard_assign(U64)
    assignment = a.cpu().numpy().astype(np.int64)
    T = cand[C_best.cpu().numpy()].copy()
    cand_index = C_best.cpu().numpy().astype(np.int64)

    if refine_oracle is not None:
        if bounds is None:
            bounds = (cand.min(0), cand.max(0))
        reassign = lambda U: run.hard_assign(U)[0].cpu().numpy()  # noqa: E731
        T, assignment, U64, moved = refine_treatments(
            refine_oracle, T, assignment, bounds, grid_steps(cand, *bounds), reassign, dev,
            max_rounds=int(opts["refine_rounds"]), trace=trace,
        )
        cand_index = np.where(moved, -1, cand_index)
        info["refined"] = moved.tolist()

    a_t = torch.as_tensor(assignment, device=U64.device)
    objective = float(U64.gather(1, a_t[:, None]).sum())
    if solver == "sinkhorn":
        # Warm start from the hard assignment's LP prices (same sign convention: a_i = argmax_k U_ik + g_k);
        # at a small eps the entropic potentials are within O(eps) of them, so this converges in a few
        # iterations where a cold start needs hundreds (10 s at N = 1e5 with binding shares).
        if shares:
            g0 = torch.as_tensor(np.asarray(prices, dtype=np.float64), device=U64.device) if prices is not None else None
            P, _, err, _ = entropic_plan(U64, eps_target * scale, run.lo, run.hi, g=g0, tol=min(float(opts["tol"]), 1e-6),
                                         max_iter=max(1000, int(opts["sinkhorn_iter"])))
            entropic = float((P * U64).sum()) * N
            info["final_marginal_error"] = float(err)
        else:  # free column masses: the plan is a row softmax, its rows sum to 1/N exactly
            entropic = entropic_value(U64, eps_target * scale)
            info["final_marginal_error"] = 0.0
    else:
        entropic = objective
    if shares:
        ok, _ = certify(U64.cpu().numpy(), assignment, L, H)
        info["share_assignment_certified_optimal"] = bool(ok)
    counts = np.bincount(assignment, minlength=k)
    info["epsilon_abs"] = eps_used * scale
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
