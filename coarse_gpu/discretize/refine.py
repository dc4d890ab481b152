"""Moving treatments off the candidate grid: derivative-free pattern (compass) search per segment.

Given the segments from the grid solution, treatment k moves to a point of the box ``bounds`` with a
larger segment profit J_k(t) = sum_{i in S_k} pi_i(t): from t, try t +/- step_j e_j in every treatment
dimension j (all K * 2d trial points go through the oracle in ONE call), move to the best trial if it
improves J_k, otherwise halve that treatment's steps; stop when every step is below ``min_step``.
Then customers are re-assigned (argmax, or the exact share-constrained assignment) and the search
repeats until the assignment is stable. Every accepted move and every re-assignment can only raise
the total profit, so the result is never worse than the grid solution under the oracle.

Pattern search rather than gradients: the model oracles interpolate per-arm predictions (splines or
multilinear tents), which are only piecewise smooth, and a compass search needs nothing but values.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

from coarse_gpu.discretize.profit import call_oracle


def grid_steps(candidates: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(d,) initial step per dimension: the median spacing of the candidate grid along it."""
    d = candidates.shape[1]
    steps = np.zeros(d)
    for j in range(d):
        u = np.unique(candidates[:, j])
        if u.size > 1:
            steps[j] = float(np.median(np.diff(u)))
        else:
            steps[j] = float(high[j] - low[j]) / 4.0
    return steps


def integer_dims(values: np.ndarray) -> np.ndarray:
    """(d,) bool: the dimensions of the (M, d) treatments whose values are all integers and not all
    equal (coded categories, counts, on/off levers), which a continuous refinement must not move."""
    v = np.asarray(values, dtype=np.float64)
    whole = np.all(np.isfinite(v) & (v == np.round(v)), axis=0)
    return whole & (np.ptp(v, axis=0) > 0)


def _segment_sums(U: torch.Tensor, a: torch.Tensor, K: int) -> torch.Tensor:
    """(K, J) sum over the customers of each segment of U (N, J)."""
    out = torch.zeros(K, U.shape[1], dtype=U.dtype, device=U.device)
    return out.index_add_(0, a, U)


def refine_treatments(
    oracle: Callable,
    T: np.ndarray,
    assignment: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray],
    step0: np.ndarray,
    reassign: Callable,
    device: torch.device,
    max_rounds: int = 5,
    min_step_frac: float = 1e-3,
    max_evals: int = 200,
    trace: Optional[list] = None,
    reduce: Optional[Callable] = None,
):
    """Pattern-search refinement (module docstring). Returns (T, assignment, U (N, K) float64, moved (K,)).

    reduce : sums over the customers of other processes (``ShardedSource.reduce_sum``: the rows are one
        rank's shard, ``oracle`` scores them); every decision then rests on global sums, identical on every
        rank. None: the rows are all customers."""
    reduce = reduce or (lambda x: x)
    low, high = (np.asarray(b, dtype=np.float64).reshape(-1) for b in bounds)
    T = np.clip(np.asarray(T, dtype=np.float64).copy(), low, high)
    K, d = T.shape
    n = assignment.shape[0]
    f64 = torch.float64

    def evaluate(points: np.ndarray) -> torch.Tensor:
        return call_oracle(oracle, torch.as_tensor(points, dtype=f64, device=device), n, device, f64)

    U = evaluate(T)
    a = torch.as_tensor(assignment, device=device, dtype=torch.long)
    moved = np.zeros(K, dtype=bool)
    min_step = np.asarray(step0, dtype=np.float64) * min_step_frac
    total = float(reduce(U.gather(1, a[:, None]).sum()))
    for rnd in range(max_rounds):
        steps = np.tile(np.asarray(step0, dtype=np.float64), (K, 1))
        J = torch.diagonal(reduce(_segment_sums(U, a, K))).clone()
        n_evals = 0
        while n_evals < max_evals:
            live = np.flatnonzero((steps > min_step).any(1))
            if live.size == 0:
                break
            trials = []
            for k in live:
                for j in range(d):
                    if steps[k, j] <= min_step[j]:
                        continue
                    for sgn in (1.0, -1.0):
                        t = T[k].copy()
                        t[j] = np.clip(t[j] + sgn * steps[k, j], low[j], high[j])
                        trials.append((k, t))
            pts = np.stack([t for _, t in trials])
            S = reduce(_segment_sums(evaluate(pts), a, K))  # (K, n_trials)
            n_evals += 1
            owner = np.array([k for k, _ in trials])
            for k in live:
                cols = np.flatnonzero(owner == k)
                vals = S[k, torch.as_tensor(cols, device=S.device)]
                j = int(vals.argmax())
                gain = float(vals[j] - J[k])
                if gain > 1e-12 * (abs(float(J[k])) + 1.0):
                    T[k] = pts[cols[j]]
                    J[k] = vals[j]
                    moved[k] = True
                else:
                    steps[k] /= 2.0
        U = evaluate(T)
        a_new = torch.as_tensor(reassign(U), device=device, dtype=torch.long)
        new_total = float(reduce(U.gather(1, a_new[:, None]).sum()))
        if trace is not None:
            trace.append({"restart": -1, "phase": "refine", "eps": 0.0, "iter": rnd, "objective": new_total,
                          "marginal_error": 0.0, "improvement": new_total - total})
        changed = bool(reduce(torch.tensor(float((a_new != a).sum()), dtype=f64)) > 0)
        a, total = a_new, new_total
        if not changed:
            break
    return T, a.cpu().numpy().astype(np.int64), U, moved
