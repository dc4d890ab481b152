"""The result of ``discretize``: ``Discretization`` (the K treatments, the assignment and the report)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from coarse_gpu.discretize.profit import FactoredProfit


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
                raise ValueError("profit: a FactoredProfit over the candidates cannot score refined off-grid "
                                 "treatments")
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
