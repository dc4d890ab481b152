"""The restart search of the ``sinkhorn`` and ``lloyd`` solvers (``search``): seeds, Lloyd restarts,
annealed restarts, the two-level search on a sample, the 1-swap polish of the best solutions and the
exact polish of a subsample's winner on every customer (``solver.py``'s docstring tells the whole
scheme and its measurements).

Every phase reads the search state (``state.SearchState``), draws from the call's one generator
(``state.Call.gen``) in a fixed order and adds its restarts to the pool (``state.Pool``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from coarse_gpu.discretize.anneal import _anneal_and_polish, _eps_schedule
from coarse_gpu.discretize.constraints import Prices
from coarse_gpu.discretize.exact import share_counts
from coarse_gpu.discretize.mip import mip_columns, size_problem
from coarse_gpu.discretize.priced import PricedSource
from coarse_gpu.discretize.profit import ProfitSource
from coarse_gpu.discretize.seeding import _anneal_starts, _feasible_start, _greedy_seed, _seeds, _subsample_size
from coarse_gpu.discretize.spec import Solution
from coarse_gpu.discretize.state import Call, Pool, SearchState, _best_distinct_sets

_GREEDY_AFFORDABLE = 1 << 24  # two-level search below this: Lloyd's greedy restart on all search rows too


@dataclass
class _Plan:
    """How one search runs its restarts: the temperatures, how many restarts (the first ``n_a``
    annealed), whether restart 0 is greedy-seeded, the annealing sample (``coarse``, with its side
    constraints) and whether the restarts run on two levels; ``pbar`` the progress bar."""

    eps_list: list
    n_restarts: int
    n_a: int
    greedy: bool
    coarse: Optional[ProfitSource]
    coarse_side: Any
    two_level: bool
    pbar: Any

    @property
    def anneal_ids(self) -> np.ndarray:
        return np.arange(self.n_a)  # the annealed restarts are restarts 0..n_a-1 on both paths


def search(run: SearchState, call: Call) -> Solution:
    """sinkhorn / lloyd: restarts, annealing, swaps; the best columns found and their prices."""
    opts, info = run.opts, call.info
    full_run, run = run, _search_state(run, call)
    t_ph = time.perf_counter()
    plan = _plan(run, call)
    pool = Pool()
    info["restart_objectives"] = {}
    seed_src = run.src
    if opts["solver"] == "sinkhorn" and run.side is not None:
        seed_src = _anneal_first(run, call, plan, pool)
        t_ph = time.perf_counter()
    seeds, anneal_from, lloyd_ids = _starts(run, call, plan, seed_src)
    call.phase_s["seed"] = time.perf_counter() - t_ph
    if plan.two_level:
        _two_level_restarts(run, call, plan, pool, seeds, anneal_from, lloyd_ids)
    else:
        _one_level_restarts(run, call, plan, pool, seeds, anneal_from, lloyd_ids)
    plan.pbar.update(1)
    plan.pbar.close()
    _feasible_restart(run, call, pool, plan.n_restarts + 1)
    allC, allobj = pool.stacked()
    C_best, best_prices = _best_and_swapped(run, call, plan, pool, allC, allobj)
    if run is not full_run:  # exact Lloyd polish of the sample's winner on every customer
        C_best, best_prices = _polish_full(full_run, run, call, C_best, best_prices)
    info["phase_s"] = call.phase_s
    if not math.isfinite(float(allobj.max())) and run.rows_priced:
        return Solution(_mip_fallback(full_run, call), None, 0.0)
    return Solution(C_best, best_prices, call.eps_target if opts["solver"] == "sinkhorn" else 0.0)


def _search_state(run: SearchState, call: Call) -> SearchState:
    """The state the search runs on: ``run`` (all customers) or a subsample's (options.SolverOptions.subsample)."""
    N, k = run.src.n, run.k
    n_sub = _subsample_size(run.opts["subsample"], N, run.rows_priced)
    if n_sub is None:
        return run
    sub_idx = np.sort(np.random.default_rng(int(call.seed)).choice(N, n_sub, replace=False))
    sub_src, sub_side = _rows_of(run.src, run.side, sub_idx)
    Ls, Hs = share_counts(n_sub, k, call.min_share, call.max_share)
    sub_sup = run.support.rows(sub_idx) if run.support is not None else None
    call.info["subsample"] = n_sub
    return SearchState(sub_src, k, Ls, Hs, run.shares, run.opts, run.scale, run.trace, run.rel_tol, side=sub_side,
                       support=sub_sup)


def _plan(run: SearchState, call: Call) -> _Plan:
    """The search's plan (``_Plan``), with the annealing sample drawn (see ``anneal.anneal``)."""
    opts, k = run.opts, run.k
    solver, n_restarts = opts["solver"], int(opts["n_restarts"])
    greedy = solver == "lloyd" or _greedy_seed(opts["greedy_seed"], run.src.n, run.src.m, run.constrained)
    n_a = n_restarts if opts["n_anneal"] is None else min(n_restarts, int(opts["n_anneal"]))
    eps_list = _eps_schedule(float(opts["eps_start"]), call.eps_target, float(opts["eps_decay"]))
    # The annealing sample: the annealing runs on it, the polish on all the search's customers.
    a_rows, coarse, coarse_side = opts["anneal_rows"], None, None
    if solver == "sinkhorn" and a_rows is not None and run.src.n > 2 * int(a_rows) and len(eps_list) > 1:
        coarse, coarse_side = _rows_of(run.src, run.side, np.sort(np.random.default_rng(int(call.seed) + 1).choice(
            run.src.n, int(a_rows), replace=False)))  # None where the source cannot subsample
    # Two-level search (sinkhorn, large search, no shares): every restart runs to its fixed point on
    # the annealing sample, and only the best n_swap distinct ones are polished on all the search's
    # customers (see options.SolverOptions.coarse_restarts).
    two_level = solver == "sinkhorn" and coarse is not None and not greedy and not run.constrained \
        and bool(opts["coarse_restarts"])
    pbar = tqdm(total=len(eps_list) + 2, desc=f"discretize K={k}", disable=not opts["verbose"], leave=False)
    return _Plan(eps_list, n_restarts, n_a, greedy, coarse, coarse_side, two_level, pbar)


def _starts(run: SearchState, call: Call, plan: _Plan, seed_src: ProfitSource):
    """(Lloyd seeds (R_l, K), annealing starts (n_a, K), the Lloyd restarts' ids)."""
    k, gen, init, n_restarts = run.k, call.gen, call.init, plan.n_restarts
    if plan.greedy:  # restart 0 greedy (or init), 1.. k-means++; the first n_a of them also annealed
        seeds = _seeds(seed_src, k, n_restarts, gen, init)
        return seeds, seeds[:plan.n_a], np.arange(n_restarts)
    # restarts 0..n_a-1 annealed from cheap starts, n_a.. k-means++ Lloyd
    anneal_from = _anneal_starts(plan.coarse if plan.two_level and plan.coarse is not None else run.src, plan.n_a,
                                 k, gen, init)
    # k-means++ draws customers in proportion to their regret: drawing them from the annealing
    # sample (a uniform subsample) gives the same distribution of seeds at a fraction of the
    # row-max pass; the Lloyd restarts themselves then run on all the search's customers.
    seeds = _seeds(plan.coarse if plan.coarse is not None else run.src, k, n_restarts - plan.n_a + 1, gen, None,
                   first=False)
    return seeds, anneal_from, np.arange(plan.n_a, n_restarts)


def _one_level_restarts(run: SearchState, call: Call, plan: _Plan, pool: Pool, seeds, anneal_from, lloyd_ids):
    """The Lloyd restarts on all the search's customers, then (sinkhorn without side constraints) the
    annealed ones."""
    if lloyd_ids.size:
        t_ph = time.perf_counter()
        C_l, obj_l, p_l = run.lloyd(seeds, "lloyd", lloyd_ids)
        call.phase_s["lloyd"] = time.perf_counter() - t_ph
        pool.add(C_l, obj_l, lloyd_ids.tolist(), p_l)
        call.info["restart_objectives"]["lloyd"] = obj_l.tolist()
    plan.pbar.update(1)
    if run.opts["solver"] == "sinkhorn" and run.side is None:
        _anneal_recorded(run, call, plan, pool, anneal_from, None)


def _two_level_restarts(run: SearchState, call: Call, plan: _Plan, pool: Pool, seeds, anneal_from, lloyd_ids):
    """Restarts to their fixed points on the annealing sample, the best ``n_swap`` distinct ones polished
    on all the search's customers, and (small enough searches) Lloyd's greedy restart on all of them.

    Every Lloyd iteration of a restart costs a pass over its customers' profits; on the sample (16k of the
    65k search customers) most iterations cost a quarter, and only the few solutions worth keeping pay
    for passes over all of them (typically 1-2 polish iterations: the sample's fixed point is close).
    """
    k, opts, phase_s, coarse = run.k, run.opts, call.phase_s, plan.coarse
    assert coarse is not None  # two levels only with an annealing sample (_plan)
    crun = SearchState(coarse, k, *share_counts(coarse.n, k, None, None), False, opts, run.scale, run.trace,
                       run.rel_tol)
    crun.unit = run.src.n / coarse.n  # trace in units of the search's customers
    t_ph = time.perf_counter()
    if lloyd_ids.size:
        C_l, obj_l, _ = crun.lloyd(seeds, "lloyd-coarse", lloyd_ids)
    else:
        C_l, obj_l = anneal_from[:0], torch.empty(0, dtype=torch.float64)
    phase_s["lloyd"] = time.perf_counter() - t_ph
    plan.pbar.update(1)
    t_ph = time.perf_counter()
    anneal_ids = plan.anneal_ids
    C_a, _, _ = crun.anneal(anneal_from, plan.eps_list, anneal_ids, plan.pbar)
    C_a, obj_a, _ = crun.lloyd(C_a, "polish-coarse", anneal_ids)
    phase_s["anneal"] = time.perf_counter() - t_ph
    call.info["restart_objectives"] = {"lloyd": (obj_l * crun.unit).tolist(),
                                       "sinkhorn": (obj_a * crun.unit).tolist()}
    C_all, obj_all = torch.cat([C_a, C_l], 0), torch.cat([obj_a, obj_l], 0)
    ids = np.concatenate([anneal_ids, lloyd_ids])
    keep = _best_distinct_sets(C_all, obj_all, int(opts["n_swap"] or plan.n_restarts))
    t_ph = time.perf_counter()
    C_p, obj_p, _ = run.lloyd(C_all[keep], "polish", ids[keep])
    phase_s["polish"] = time.perf_counter() - t_ph
    pool.add(C_p, obj_p, ids[keep].tolist())
    if opts["greedy_seed"] == "auto" and run.src.n * run.src.m < _GREEDY_AFFORDABLE:
        # Lloyd's own greedy restart on all the search's customers, where its K passes are cheap
        t_ph = time.perf_counter()
        C_g, obj_g, _ = run.lloyd(_seeds(run.src, k, 1, call.gen, None), "greedy", [plan.n_restarts])
        phase_s["greedy"] = time.perf_counter() - t_ph
        pool.add(C_g, obj_g, [plan.n_restarts])
        call.info["restart_objectives"]["greedy"] = obj_g.tolist()


def _anneal_first(run: SearchState, call: Call, plan: _Plan, pool: Pool) -> PricedSource:
    """Side constraints: anneal first (its multipliers learn the constraints' prices), record the
    polished restarts, and return the profits priced by the best one's multipliers, on which the Lloyd
    seeds are drawn so that the restarts start near feasibility."""
    starts = _anneal_starts(plan.coarse if plan.coarse is not None else run.src, plan.n_a, run.k, call.gen, call.init)
    obj_p, p_p = _anneal_recorded(run, call, plan, pool, starts, plan.coarse_side)
    lam0 = p_p[int(obj_p.argmax())].lam[:run.n_side]
    return PricedSource(run.src, run.side.W, run.side.V, lam0)


def _anneal_recorded(run: SearchState, call: Call, plan: _Plan, pool: Pool, starts, coarse_side):
    """Anneal and polish ``starts``, recording the phase time and the restarts in the pool; returns
    (objectives, prices) of the polished restarts."""
    t_ph = time.perf_counter()
    C_p, obj_p, p_p = _anneal_and_polish(run, starts, plan.eps_list, plan.anneal_ids, plan.pbar, plan.coarse,
                                         coarse_side)
    call.phase_s["anneal"] = time.perf_counter() - t_ph
    pool.add(C_p, obj_p, plan.anneal_ids.tolist(), p_p)
    call.info["restart_objectives"]["sinkhorn"] = obj_p.tolist()
    return obj_p, p_p


def _feasible_restart(run: SearchState, call: Call, pool: Pool, restart_id: int) -> None:
    """Lloyd from ``_feasible_start`` (when there is one), recorded with the other restarts: under side
    constraints the search then always holds a feasible set if a trivially feasible one exists."""
    feas = _feasible_start(run, run.k)
    if feas is None:
        return
    t_ph = time.perf_counter()
    C_f, obj_f, p_f = run.lloyd(feas, "feasible-start", np.array([restart_id]))
    call.phase_s["feasible_start"] = time.perf_counter() - t_ph
    pool.add(C_f, obj_f, [restart_id], p_f)
    call.info["restart_objectives"]["feasible_start"] = obj_f.tolist()


def _best_and_swapped(run: SearchState, call: Call, plan: _Plan, pool: Pool, allC, allobj):
    """The pool's best restart (columns, prices), improved by the 1-swap search on the best ``n_swap``
    distinct solutions where the solver runs it."""
    opts, info = run.opts, call.info
    best = int(allobj.argmax())
    C_best, best_prices = allC[best], pool.prices[best]
    if opts["solver"] == "sinkhorn" or run.side is not None:
        # lloyd too under side constraints: its priced fixed points can sit far below the optimum
        # (measured up to 20 % below the MIP under a budget), which the constrained swap search closes
        annealed = pool.ids[best] in set(plan.anneal_ids.tolist())
        info["best_from"] = "sinkhorn" if opts["solver"] == "sinkhorn" and annealed else "lloyd"
        if opts["swap"]:
            t_ph = time.perf_counter()
            C_best, best_prices = _swap_phase(run, call, pool, allC, allobj, C_best, best_prices,
                                              int(opts["n_swap"] or len(pool.ids)))
            call.phase_s["swap"] = time.perf_counter() - t_ph
    return C_best, best_prices


def _swap_phase(run: SearchState, call: Call, pool: Pool, allC, allobj, C_best, best_prices, n_swap: int):
    """The 1-swap search on the best n_swap distinct solutions (``swap`` or ``swap_constrained``)."""
    best_obj = float(allobj.max())
    for idx in _best_distinct_sets(allC, allobj, n_swap):
        if not math.isfinite(float(allobj[idx])):
            continue
        if run.constrained:
            Cs, objs, ps = run.swap_constrained(allC[idx].clone(), float(allobj[idx]), pool.prices[idx], call.gen,
                                                pool.ids[idx])
        else:
            Cs, objs = run.swap(allC[idx].clone(), float(allobj[idx]), call.gen, pool.ids[idx])
            ps = None
        if objs > best_obj:
            C_best, best_obj, best_prices = Cs, objs, ps
            call.info["best_from"] = "swap"
    return C_best, best_prices


def _polish_full(full_run: SearchState, run: SearchState, call: Call, C_best, best_prices):
    """The exact Lloyd polish of the subsample's winner on every customer: (columns, prices)."""
    t_ph = time.perf_counter()
    warm = None
    if best_prices is not None:  # a sample's multipliers are N / n times smaller per unit weight
        warm = [Prices(best_prices.g, best_prices.lam * (full_run.src.n / run.src.n))]
    C_f, obj_f, p_f = full_run.lloyd(C_best[None], "polish-full", np.arange(1), prices=warm)
    call.phase_s["polish_full"] = time.perf_counter() - t_ph
    call.info["objective_after_full_polish"] = float(obj_f[0])
    return C_f[0], p_f[0]


def _mip_fallback(run: SearchState, call: Call) -> torch.Tensor:
    """No restart found a feasible set: on an instance within ``mip_max_entries`` the exact MIP decides
    (its treatments, or the proof that none exist); beyond it the search's refusal stands."""
    if size_problem(run.src.n, run.src.m, int(run.opts["mip_max_entries"])) is not None:
        run.raise_infeasible()
    try:
        C, _ = mip_columns(run, call.info)
    except ValueError as err:
        if "infeasible" not in str(err):
            raise
        run.raise_infeasible(proven=True)
    call.info["fallback"] = "mip: no restart of the search found a feasible set"
    return C


def _rows_of(src, side, idx):
    """(source, side constraints) restricted to the sorted customers idx (source None if unsupported)."""
    sub = src.rows(idx)
    return sub, (side.rows(idx) if side is not None and sub is not None else None)
