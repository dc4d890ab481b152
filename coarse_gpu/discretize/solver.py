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
the best ``n_swap`` (2) distinct solutions get a 1-swap local search (``swap.swap``); the best of all
is returned. Small searches (N M < 2**22) and share constraints also run Lloyd's greedy-seeded
restart, so there the result is never below Lloyd's from the same seeds; large ones skip it and draw
the k-means++ seeds on the annealing sample, because seeding on all N x M profits is most of Lloyd's
time at scale (``greedy_seed``). Large searches also run on two levels (``coarse_restarts``): the
restarts and the annealing on the 16k annealing sample, the best ``n_swap`` polished on all the
search's customers (``search._two_level_restarts``); below N M = 2**24 the greedy restart is added back on all
of them, where it is cheap.

``exact``: enumerate all C(M, K) subsets (``exact.enumerate_optimum``), for small problems.

``mip``: the exact joint problem as a mixed-integer program (``mip.py``: strong facility-location
formulation, HiGHS through scipy), with shares and side constraints; N M up to about 1e5 entries.
The reference of the tests.

Under share bounds or side constraints the swap search is ``swap.swap_constrained``: each candidate
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
Where the code lives (one concept per module): this module is the public entry point, which
validates the call and dispatches through the solver table (``spec.py``, built-ins registered in
``solvers.py``); ``inputs.py`` coerces the inputs, ``state.py`` holds the state the phases share,
``seeding.py`` the restarts' starts, ``lloyd.py`` / ``anneal.py`` / ``swap.py`` the phases,
``search.py`` the restart search of sinkhorn and lloyd, ``exact.py`` and ``mip.py`` the exact solvers,
``finish.py`` the final assignment, refinement and report, ``result.py`` the ``Discretization``.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from coarse_gpu.discretize import solvers  # noqa: F401  (registers the built-in solvers in the table)
from coarse_gpu.discretize.constraints import check_constraints, check_support
from coarse_gpu.discretize.exact import share_counts
from coarse_gpu.discretize.finish import finish
from coarse_gpu.discretize.inputs import (  # noqa: F401  (DEFAULT_OPTIONS, DEFAULT_EPSILON: public defaults)
    DEFAULT_EPSILON,
    DEFAULT_OPTIONS,
    _check_options,
    _check_search_inputs,
    _default_memory_limit,
    _make_source,
)
from coarse_gpu.discretize.result import Discretization
from coarse_gpu.discretize.spec import SOLVER_TABLE, get_solver
from coarse_gpu.discretize.state import Call, SearchState, _profit_scale
from coarse_gpu.discretize.state import SearchState as _Run  # noqa: F401  (the former name; tests patch its phases)
from coarse_gpu.utils.device import resolve_device

SOLVERS = tuple(SOLVER_TABLE)  # the built-in solvers' names, in the table's order

__all__ = ["DEFAULT_OPTIONS", "Discretization", "SOLVERS", "discretize"]


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
    spec = get_solver(opts["solver"])
    dev = resolve_device(device)
    mem = int(opts["memory_limit_bytes"]) if opts["memory_limit_bytes"] is not None else _default_memory_limit(dev)
    src, cand = _source(profit, candidates, dev, dtype, mem, opts, spec, distributed,
                        dict(min_share=min_share, max_share=max_share, constraints=constraints, k=k, seed=seed,
                             epsilon=epsilon))
    N, M = src.n, src.m
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not (1 <= int(k) <= M):
        raise ValueError(f"k must be an integer in [1, M={M}], got {k!r}")
    k = int(k)
    L, H = share_counts(N, k, min_share, max_share)
    shares = bool(L[0] > 0 or H[0] < N)
    side = check_constraints(constraints, N, M, k)
    support = check_support(opts["support"], N, M, k, int(H[0]))
    init, refine_oracle, bounds = _check_search_inputs(opts, k, M, cand, side if side is not None else support)
    refused = spec.refusals(shares=shares, constraints=side is not None, support=support is not None)
    if refused:
        raise ValueError(refused[0])
    if spec.precheck is not None:
        spec.precheck(N, M, opts, mem)  # refused before any profit is evaluated

    gen = torch.Generator().manual_seed(int(seed))
    info: dict = {"n_candidates": M, "n_customers": N, "path": src.path, "device": str(dev),
                  "dtype": opts["dtype"], "shares_binding_possible": shares}
    scale = _profit_scale(src, gen)
    info["profit_scale"] = scale
    rel_tol = 1e-6 if dtype == torch.float32 else 1e-12
    run = SearchState(src, k, L, H, shares, opts, scale, [], rel_tol, side=side, support=support)
    call = Call(k, int(seed), gen, eps_target, init, min_share, max_share, info)
    sol = spec.run(run, call)
    if distributed:
        src.same_on_all_ranks(sol.columns)
        info["distributed"] = {"world_size": src.comm.world, "rank": src.comm.rank, "n_local": src.n_local}
    return finish(run, call, spec, sol, cand, refine_oracle, bounds, t_start)


def _source(profit, candidates, dev, dtype, mem: int, opts: dict, spec, distributed, request: dict):
    """(profit source, candidates (M, d)): this process's shard under ``distributed`` (after refusing
    what the sharded solve and the solver cannot do), else the whole table."""
    if not isinstance(distributed, bool):
        raise ValueError(f"distributed must be True or False, got {distributed!r}")
    if not distributed:
        return _make_source(profit, candidates, dev, dtype, mem, opts["lazy"])
    from coarse_gpu.discretize import distributed as sharding  # torch.distributed only when asked for

    sharding.check_request(spec.name, request["min_share"], request["max_share"], request["constraints"], opts)
    return sharding.shard_source(lambda: _make_source(profit, candidates, dev, dtype, mem, opts["lazy"]),
                                 dict(opts, k=request["k"], seed=request["seed"], epsilon=request["epsilon"]))
