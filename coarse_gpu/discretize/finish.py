"""What every solver's columns go through at the end (``finish``): the final hard assignment in float64,
the continuous off-grid refinement (``refine.py``), the entropic value at the target temperature, the
certificates and the report, packed as a ``Discretization``."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from coarse_gpu.discretize.exact import certify
from coarse_gpu.discretize.refine import grid_steps, integer_dims, refine_treatments
from coarse_gpu.discretize.result import Discretization
from coarse_gpu.discretize.sinkhorn import entropic_plan, entropic_value
from coarse_gpu.discretize.spec import Solution, SolverSpec
from coarse_gpu.discretize.state import Call, SearchState


def finish(run: SearchState, call: Call, spec: SolverSpec, sol: Solution, cand: np.ndarray, refine_oracle,
           bounds, t_start: float) -> Discretization:
    """Final hard assignment in float64, refinement, entropic value and the result's report."""
    src, k, info, C_best = run.src, run.k, call.info, sol.columns
    info["grid_index"] = C_best.cpu().numpy().astype(np.int64).tolist()  # before refinement: warm start for K+1
    U64 = src.columns64(C_best)
    if sol.assignment is not None:  # solver="mip" with side constraints: its integral assignment
        a, prices, feasible = torch.as_tensor(sol.assignment, device=U64.device), None, True
        prices = run.hard_assign(U64, None, C_best, integral=False)[1]  # the LP duals (the report)
    else:
        a, prices, feasible = run.hard_assign(U64, sol.prices, C_best)
    if not feasible:
        run.raise_infeasible()
    assignment = a.cpu().numpy().astype(np.int64)
    T = cand[C_best.cpu().numpy()].copy()
    cand_index = C_best.cpu().numpy().astype(np.int64)
    if refine_oracle is not None:
        T, assignment, U64, moved = _refine(run, call, refine_oracle, bounds, cand, T, assignment)
        cand_index = np.where(moved, -1, cand_index)
        info["refined"] = moved.tolist()

    a_t = torch.as_tensor(assignment, device=U64.device)
    objective = float(src.reduce_sum(U64.gather(1, a_t[:, None]).sum()))
    entropic = objective
    if spec.entropic:
        entropic = _final_entropic(run, U64, prices, cand_index, call.eps_target, run.opts, info)
    _report(run, info, U64, assignment, cand_index, prices)
    counts = src.reduce_sum(np.bincount(assignment, minlength=k))
    info["epsilon_abs"] = sol.epsilon * run.scale
    info["time_s"] = time.perf_counter() - t_start
    return Discretization(
        treatments=np.asarray(T, dtype=np.float64),
        assignment=assignment,
        objective=objective,
        entropic_objective=entropic,
        trace=run.trace,
        solver=spec.name,
        epsilon=sol.epsilon,
        candidate_index=cand_index,
        shares=counts / src.n,
        info=info,
    )


def _refine(run: SearchState, call: Call, refine_oracle, bounds, cand: np.ndarray, T: np.ndarray,
            assignment: np.ndarray):
    """The pattern-search refinement of the treatments T (K, d) off the grid within ``bounds`` (default
    the candidates' box), the frozen dimensions held: (T, assignment, U64 (N, K), moved (K,) bools)."""
    opts, info, src = run.opts, call.info, run.src
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
    return refine_treatments(refine_oracle, T, assignment, bounds, steps, reassign, src.device,
                             max_rounds=int(opts["refine_rounds"]), trace=run.trace, reduce=src.reduce_sum)


def _report(run: SearchState, info: dict, U64: torch.Tensor, assignment: np.ndarray, cand_index: np.ndarray,
            prices) -> None:
    """The share certificate, each constraint's value and multiplier, the support counts and the
    rounding gap, written to ``info``."""
    k = run.k
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


def _final_entropic(run: SearchState, U64, prices, cols, eps_target: float, opts: dict, info: dict) -> float:
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
    kw: dict[str, Any] = dict(g=g0, tol=min(float(opts["tol"]), 1e-6), max_iter=max(1000, int(opts["sinkhorn_iter"])))
    if run.side is not None:
        side = (torch.as_tensor(run.side.W, device=U64.device), torch.as_tensor(run.side.at(cols), device=U64.device),
                torch.as_tensor(run.side.lo), torch.as_tensor(run.side.hi))
        lam0 = torch.as_tensor(prices.lam[:run.n_side], device=U64.device) if prices is not None else None
        P, _, err, _, _ = entropic_plan(U64, eps_target * scale, run.lo, run.hi, side=side, lam=lam0, **kw)
    else:
        P, _, err, _ = entropic_plan(U64, eps_target * scale, run.lo, run.hi, **kw)
    info["final_marginal_error"] = float(err)
    return float((P * U64).sum()) * N
