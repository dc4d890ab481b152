"""The state the phases of one ``discretize`` call share (``SearchState``), the call's own context
(``Call``: seed, generator, target temperature, the report) and the pool of restart results (``Pool``).

One small object travels through the phases instead of long argument lists: a phase reads the profit
source, K, the bounds and the options from the state, and writes its trace there; the search adds its
restarts' results to the pool and its timings and restart objectives to ``Call.info``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from coarse_gpu.discretize import anneal as anneal_mod
from coarse_gpu.discretize import lloyd as lloyd_mod
from coarse_gpu.discretize import swap as swap_mod
from coarse_gpu.discretize.constrained import assign_constrained
from coarse_gpu.discretize.constraints import Prices
from coarse_gpu.discretize.exact import _assign_with_counts
from coarse_gpu.discretize.profit import ProfitSource


class SearchState:
    """State shared by the phases of one ``discretize`` call (or of its search on a sample of customers):
    the profit source, K, the share counts L, H (K,), the options, the profit scale and the trace.

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

    def objective(self, C: torch.Tensor) -> float:
        """Total profit of the argmax assignment to columns C (K,) (no shares)."""
        return float(self.src.reduce_sum(self.src.columns(C).max(1).values.to(torch.float64).sum()))

    def raise_infeasible(self, proven: bool = False):
        """ValueError: the constraints and support (and share bounds) admit no K treatments; ``proven`` by
        the exact MIP, else no restart found any."""
        parts = []
        if self.side is not None:
            parts.append("constraints " + ", ".join(repr(n) for n in self.side.names))
        if self.support is not None:
            parts.append(f"the support of {self.support.n:g} customers per segment")
        extra = f" with the share bounds (counts in [{int(self.L[0])}, {int(self.H[0])}])" if self.shares else ""
        if proven:
            raise ValueError(f"{' and '.join(parts)} could not be satisfied{extra}: no K treatments have a feasible "
                             "assignment (proven by the exact MIP); loosen them")
        raise ValueError(f"{' and '.join(parts)} could not be satisfied{extra}: no restart found K treatments with a "
                         "feasible assignment; loosen them, or check with solver='mip' whether any exist")

    # The phases, each in its own module; called through the state so that a phase can be replaced on
    # the class (the tests stub ``lloyd`` to force the MIP fallback).
    def lloyd(self, C0: torch.Tensor, phase: str, restart_ids, prices=None):
        """``lloyd.lloyd``: exact alternation from (R, K) starts -> (C, objective (R,), prices)."""
        return lloyd_mod.lloyd(self, C0, phase, restart_ids, prices)

    def anneal(self, C0: torch.Tensor, eps_list, restart_ids, pbar=None, coarse: Optional[ProfitSource] = None,
               coarse_side=None):
        """``anneal.anneal``: entropic annealing from (R, K) starts -> (C, potentials g, multipliers)."""
        return anneal_mod.anneal(self, C0, eps_list, restart_ids, pbar, coarse, coarse_side)

    def swap(self, C: torch.Tensor, obj: float, gen: torch.Generator, restart_id: int):
        """``swap.swap``: the 1-swap search without share bounds -> (C (K,), objective)."""
        return swap_mod.swap(self, C, obj, gen, restart_id)

    def swap_constrained(self, C: torch.Tensor, obj: float, prices, gen: torch.Generator, restart_id: int):
        """``swap.swap_constrained``: the 1-swap search under shares and constraints -> (C, objective, prices)."""
        return swap_mod.swap_constrained(self, C, obj, prices, gen, restart_id)


@dataclass
class Call:
    """What one ``discretize`` call's phases share beyond the search state: K, the seed and the seeded
    generator (every random draw of the search comes from it, in a fixed order), the relative target
    temperature, ``init`` (K candidate indices or None), the share bounds as given, and the report
    (``info``) with its wall time per phase (``phase_s``)."""

    k: int
    seed: int
    gen: torch.Generator
    eps_target: float
    init: Optional[np.ndarray]
    min_share: Optional[float]
    max_share: Optional[float]
    info: dict
    phase_s: dict = field(default_factory=dict)


@dataclass
class Pool:
    """The search's restart results: (C (R, K), objective (R,)) per phase, and per restart its id and
    its assignment's prices (None without shares or constraints)."""

    results: list = field(default_factory=list)
    ids: list = field(default_factory=list)
    prices: list = field(default_factory=list)

    def add(self, C: torch.Tensor, obj: torch.Tensor, ids, prices=None) -> None:
        ids = [int(i) for i in ids]
        self.results.append((C, obj))
        self.ids.extend(ids)
        self.prices.extend(prices if prices is not None else [None] * len(ids))

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(C (R, K), objective (R,)) of every restart, in the order added."""
        return torch.cat([c for c, _ in self.results], 0), torch.cat([o for _, o in self.results], 0)


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
