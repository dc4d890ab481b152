"""Linear side constraints on the assignment, and the exact assignment of customers under them.

A ``Constraint(weights, values, lo, hi)`` bounds  sum_i weights[i] * values[c(i)]  to [lo, hi], where
c(i) is the candidate customer i is assigned to; weights (N,), values (M,) over the candidates. This
one form covers a budget (weights = 1/N, values = the cost of each candidate, hi = the budget per
customer), group parity (weights = +1/|g| on group g and -1/|h| on group h, values = the treatment
level, lo = -delta, hi = delta) and a minimum generosity per group (weights = 1/|g| on g, lo = the floor).

Exact assignment with the K treatments fixed (``assign_constrained``)
--------------------------------------------------------------------
With the columns fixed the assignment is the linear program

    max sum_ik x_ik U_ik  s.t.  sum_k x_ik = 1,  L_k <= sum_i x_ik <= H_k,
                               lo_c <= sum_ik w_ic v_ck x_ik <= hi_c,  x >= 0,

and its dual prices are one g_k per treatment (the share bounds) and one multiplier lam_c per
constraint: every customer takes a best *priced* treatment  argmax_k U_ik + g_k - sum_c lam_c w_ic v_ck.
lam_c is the profit one more unit of the binding bound buys (dV/d hi_c >= 0 where the upper bound binds,
dV/d lo_c <= 0 where the lower one does, 0 when slack).

HiGHS solves the LP on all customers at ~0.4 s for 2,000 x 8 and ~30 s for 20,000 x 5 (measured), far
too slow for the assignment step of every Lloyd iteration, so the LP is solved *restricted*, as
``exact.assign_with_shares`` does for the share bounds alone:
  1. prices: warm ones (the previous Lloyd iteration's, a swap's parent set) when one restricted LP
     certifies them; else those of a random 1/8 subsample solved the same way (multilevel), down to
     8192 customers, where damped Newton on the entropically smoothed dual (K + C variables, eps
     decreasing to 0.3 % of the profit spread, ``_newton_prices``) gives them; warm or sampled prices
     are refined by the same Newton on (a sample of) 8192 customers;
  2. the customers whose priced margin (best minus second best) is large are fixed to their priced
     argmax; HiGHS solves the LP of the others (the smallest margins, 4096 or more) with the residual
     bounds; its duals are checked on EVERY customer (reduced costs >= 0): then the combined solution
     is optimal for the full LP. If the check fails the restricted set grows (x4, in the limit everyone);
  3. rounding to a hard assignment: a vertex of the LP splits at most as many customers as there are
     binding constraints. Every customer the LP leaves integral stays put, except those whose
     reduced-cost margin is below the rounding loss Delta = LP* - V_F; a small MILP (HiGHS) assigns the
     split customers and those. Any integral assignment loses at least the reduced costs of its moves
     against LP*, so when every fixed customer's margin is >= Delta no better integral assignment exists:
     the result is the exact integer optimum for the K treatments, and it satisfies every constraint
     and share bound exactly (to float rounding, 1e-9 of the constraint's scale sum_i |w_i| max |v|).
A set of treatments under which a constraint cannot hold (its exact range over all capacitated
assignments, ``_min_value``, misses [lo, hi]) is reported infeasible without an LP; the assignment
returned then minimizes the violation, and the prices push the search toward feasibility.

Experimental support (``Support``): segment k must hold at least n customers of the group that
supports its treatment. With the treatments fixed these are K more rows of the same form
(weights s_ik in {0, 1}, values e_k, lo = n), so the LP, the rounding and the certificates above
cover them unchanged; their multipliers follow the side constraints' in ``Prices.lam``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from coarse_gpu.discretize.profit import ProfitSource

_FEAS_RTOL = 1e-9  # constraint values within this fraction of sum_i |w_i| max |v| of a bound count as on it
_BASE = 8192  # customers below which the starting prices come from the entropic plan (no subsample)
_AMB0 = 256  # first restricted LP size (customers); it grows x4 while the certificate fails
_MILP_SECONDS = 10.0  # time limit of one rounding MILP (see _milp)
_MILP_MAX = 1024  # customers the rounding MILP may free (beyond: the assignment's gap is reported, not closed)
_PRICE_SAMPLE = 4096
_REFINE_MAX = 8192  # customers on which warm prices are refined (a sample beyond; see _refine_prices)


@dataclass
class Constraint:
    """sum_i weights[i] * values[c(i)] in [lo, hi]  (see the module docstring).

    weights : (N,) per-customer weights. values : (M,) one value per candidate treatment.
    lo, hi : bounds (None: unbounded on that side; at least one is required).
    name : used in error messages and reports (default "constraint <index>").
    """

    weights: Any
    values: Any
    lo: Optional[float] = None
    hi: Optional[float] = None
    name: Optional[str] = None


@dataclass
class Support:
    """Experimental support per segment: the segment served treatment m must hold at least ``n``
    customers i with ``customer_group[i] == candidate_group[m]``.

    With customer_group = the experimental arm each customer received and candidate_group = the arm
    nearest each candidate, every segment then holds >= n customers randomized to (near) its own
    treatment, so its doubly robust value is estimable from them. customer_group : (N,) int (-1: supports
    no candidate). candidate_group : (M,) int. n : int >= 1 (for a sample of the customers, the
    proportional count is required).
    """

    customer_group: Any
    candidate_group: Any
    n: float

    def matrix(self, cols) -> np.ndarray:
        """(N, K) 0/1: customer i supports the treatment in slot k (candidate cols[k])."""
        c = np.asarray(self.candidate_group)[np.asarray(cols, dtype=np.int64)]
        g = np.asarray(self.customer_group)
        return ((g[:, None] == c[None, :]) & (g[:, None] >= 0)).astype(np.float64)

    def counts(self) -> np.ndarray:
        """(M,) number of customers supporting each candidate."""
        g = np.asarray(self.customer_group)
        per_group = np.bincount(g[g >= 0], minlength=int(max(np.max(self.candidate_group), g.max(initial=-1))) + 1)
        return per_group[np.asarray(self.candidate_group)]

    def rows(self, idx: np.ndarray) -> "Support":
        """The requirement on the customers idx: n scaled by len(idx) / N."""
        N = len(self.customer_group)
        return Support(np.asarray(self.customer_group)[idx], self.candidate_group, self.n * len(idx) / max(1, N))

    def segment_counts(self, a: np.ndarray, cols) -> np.ndarray:
        """(K,) supporting customers in each segment of the assignment a (N,)."""
        S = self.matrix(cols)
        return np.bincount(a, weights=S[np.arange(S.shape[0]), a], minlength=S.shape[1])


def check_support(support, n: int, m: int, k: int, H: int) -> Optional[Support]:
    """Validate a ``Support`` for N customers, M candidates, K treatments, at most H customers per
    treatment; ValueError naming the problem (before any work). None passes through."""
    if support is None:
        return None
    if not isinstance(support, Support):
        raise ValueError(f"support must be a Support(customer_group, candidate_group, n), got {type(support).__name__}")
    g = np.asarray(support.customer_group)
    c = np.asarray(support.candidate_group)
    for name, a, size in (("customer_group", g, n), ("candidate_group", c, m)):
        if a.ndim != 1 or a.shape[0] != size or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"support: {name} must be an integer array of shape ({size},), got {a.dtype} {a.shape}")
    if np.any(c < 0):
        raise ValueError("support: candidate_group must be >= 0 (the group whose customers support a candidate)")
    if isinstance(support.n, bool) or not float(support.n) >= 1 or int(support.n) != support.n:
        raise ValueError(f"support: n must be a positive integer, got {support.n!r}")
    sup = Support(g.astype(np.int64), c.astype(np.int64), int(support.n))
    able = np.minimum(sup.counts(), H) >= sup.n
    if int(able.sum()) < k:
        raise ValueError(f"support: only {int(able.sum())} candidates have at least n={sup.n} supporting customers "
                         f"(within the largest segment, {H}); k={k} treatments need {k}")
    return sup


@dataclass
class Prices:
    """Dual prices of a constrained assignment: g (K,) per treatment, lam (C,) per side constraint."""

    g: np.ndarray
    lam: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: upper bound on how much the hard assignment is below the best one for these treatments (LP bound
    #: minus its value); 0 when certified optimal (module docstring, step 3)
    rounding_gap: float = 0.0
    #: the LP optimum (total profit) for these treatments: what the search compares sets by
    lp_value: Optional[float] = None


class SideConstraints:
    """Validated side constraints: W (N, C) weights, V (M, C) values, lo / hi (C,) (+-inf: none)."""

    def __init__(self, W: np.ndarray, V: np.ndarray, lo: np.ndarray, hi: np.ndarray, names: list[str]) -> None:
        self.W, self.V, self.lo, self.hi, self.names = W, V, lo, hi, names
        self.scale = np.abs(W).sum(0) * np.abs(V).max(0) + 1e-300  # (C,) largest possible |value|
        # multiplier that makes the constraint outweigh every customer's profit differences (phase 1)
        vr = V.max(0) - V.min(0)
        self.vrange = np.where(vr > 0, vr, 1.0)

    @property
    def n_constraints(self) -> int:
        return int(self.W.shape[1])

    @property
    def tol(self) -> np.ndarray:
        return _FEAS_RTOL * self.scale

    def at(self, cols) -> np.ndarray:
        """(C, K) values of the K chosen candidates."""
        return self.V[np.asarray(cols, dtype=np.int64)].T

    def values(self, a: np.ndarray, cols) -> np.ndarray:
        """(C,) constraint values of the assignment a (N,) to the columns cols (K,)."""
        vk = self.V[np.asarray(cols, dtype=np.int64)[a]]  # (N, C)
        return np.einsum("nc,nc->c", self.W, vk)

    def satisfied(self, vals: np.ndarray) -> np.ndarray:
        return (vals >= self.lo - self.tol) & (vals <= self.hi + self.tol)

    def rows(self, idx: np.ndarray) -> "SideConstraints":
        """The constraints on the customers idx, weights scaled by N / len(idx) (a sample's estimate)."""
        f = self.W.shape[0] / max(1, len(idx))
        return SideConstraints(self.W[idx] * f, self.V, self.lo, self.hi, self.names)

    def report(self, vals: np.ndarray, lam: np.ndarray) -> list[dict]:
        """info["constraints"]: per constraint its value, bounds, dual multiplier and which bound binds."""
        out = []
        for c, name in enumerate(self.names):
            lo = None if not np.isfinite(self.lo[c]) else float(self.lo[c])
            hi = None if not np.isfinite(self.hi[c]) else float(self.hi[c])
            lam_c = float(lam[c]) if c < len(lam) else 0.0
            binding = "hi" if lam_c > 0 else ("lo" if lam_c < 0 else None)
            out.append({"name": name, "value": float(vals[c]), "lo": lo, "hi": hi, "dual": lam_c,
                        "binding": binding, "satisfied": bool(self.satisfied(vals)[c])})
        return out


# ----------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------
def _vector(x, n: int, what: str, label: str, per: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
    try:
        a = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{label}: {what} must be numeric, got {type(x).__name__}") from err
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{label}: {what} must have shape ({n},) (one per {per}), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{label}: {what} contains NaN or inf")
    return a


def check_constraints(constraints, n: int, m: int, k: int) -> Optional[SideConstraints]:
    """Validate ``constraints`` (a Constraint or a list of them) for N customers, M candidates, K treatments.

    Raises ValueError naming the constraint: bad shapes, non-finite entries, missing or crossed bounds,
    bounds that no assignment of the customers to the candidates can meet (each constraint alone, and
    all together when the customers fall into few weight classes). Returns None for no constraints.
    """
    if constraints is None:
        return None
    if isinstance(constraints, Constraint):
        constraints = [constraints]
    try:
        constraints = list(constraints)
    except TypeError as err:
        raise ValueError(f"constraints must be a Constraint or a list of them, got {type(constraints).__name__}") from err
    if not constraints:
        return None
    W, V, lo, hi, names = [], [], [], [], []
    for j, c in enumerate(constraints):
        if not isinstance(c, Constraint):
            raise ValueError(f"constraints[{j}] must be a Constraint(weights, values, lo, hi), got {type(c).__name__}")
        name = str(c.name) if c.name is not None else f"constraint {j}"
        label = f"constraints[{j}] ({name!r})"
        if name in names:
            raise ValueError(f"{label}: the name {name!r} is used twice")
        W.append(_vector(c.weights, n, "weights", label, "customer"))
        V.append(_vector(c.values, m, "values", label, "candidate"))
        b = []
        for side, val in (("lo", c.lo), ("hi", c.hi)):
            if val is None:
                b.append(-math.inf if side == "lo" else math.inf)
                continue
            try:
                f = float(val)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{label}: {side} must be a number or None, got {val!r}") from err
            if math.isnan(f) or math.isinf(f):
                raise ValueError(f"{label}: {side} must be finite or None, got {val!r}")
            b.append(f)
        if not (np.isfinite(b[0]) or np.isfinite(b[1])):
            raise ValueError(f"{label}: give lo, hi or both")
        if b[0] > b[1]:
            raise ValueError(f"{label}: lo={b[0]} exceeds hi={b[1]}")
        lo.append(b[0])
        hi.append(b[1])
        names.append(name)
    side = SideConstraints(np.stack(W, 1), np.stack(V, 1), np.asarray(lo), np.asarray(hi), names)
    _check_ranges(side, k)
    _check_jointly(side)
    return side


def _check_ranges(side: SideConstraints, k: int) -> None:
    """Each constraint alone: some assignment to the candidates (K >= 2) or one candidate (K = 1) meets it."""
    for c, name in enumerate(side.names):
        w, v, lo, hi, tol = side.W[:, c], side.V[:, c], side.lo[c], side.hi[c], side.tol[c]
        if k == 1:  # everybody gets the same candidate: value (sum_i w_i) v_m
            vals = w.sum() * v
            if not np.any((vals >= lo - tol) & (vals <= hi + tol)):
                raise ValueError(f"constraint {name!r} is infeasible with k=1: the values of single treatments "
                                 f"span [{vals.min():.6g}, {vals.max():.6g}], outside [{lo:.6g}, {hi:.6g}]")
            continue
        low = float(np.minimum(w * v.min(), w * v.max()).sum())
        high = float(np.maximum(w * v.min(), w * v.max()).sum())
        if low > hi + tol or high < lo - tol:
            raise ValueError(f"constraint {name!r} is infeasible: its value over all assignments spans "
                             f"[{low:.6g}, {high:.6g}], which misses [lo={lo:.6g}, hi={hi:.6g}]")


def _check_jointly(side: SideConstraints, max_classes: int = 2000) -> None:
    """All constraints together (no K, no shares): an LP over classes of customers with equal weight rows."""
    from scipy.optimize import linprog

    if side.n_constraints < 2:
        return
    classes, inv = np.unique(side.W, axis=0, return_inverse=True)
    if classes.shape[0] > max_classes:
        return  # continuous weights: the per-constraint checks are all we can afford before the search
    size = np.bincount(inv.reshape(-1), minlength=classes.shape[0]).astype(np.float64)
    Q, M, C = classes.shape[0], side.V.shape[0], side.n_constraints
    # z_qm >= 0 customers of class q on candidate m; sum_m z_qm = |q|; lo <= sum_qm w_qc v_mc z_qm <= hi
    A_eq = np.kron(np.eye(Q), np.ones((1, M)))
    coef = np.einsum("qc,mc->cqm", classes, side.V).reshape(C, Q * M)
    fin_hi, fin_lo = np.isfinite(side.hi), np.isfinite(side.lo)
    A_ub = np.concatenate([coef[fin_hi], -coef[fin_lo]])
    b_ub = np.concatenate([side.hi[fin_hi] + side.tol[fin_hi], -side.lo[fin_lo] + side.tol[fin_lo]])
    res = linprog(np.zeros(Q * M), A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=size, bounds=(0, None), method="highs")
    if res.status == 2:
        raise ValueError("constraints " + ", ".join(repr(n) for n in side.names) + " are jointly infeasible: no "
                         "assignment of the customers to the candidates satisfies them all")


# ----------------------------------------------------------------------------------------------------
# the exact constrained assignment
# ----------------------------------------------------------------------------------------------------
@dataclass
class _Problem:
    """One assignment problem: U (N, K), count bounds L, H (K,), side rows Wc (N, C) x Vk (C, K) in [lo, hi]."""

    U: np.ndarray
    L: np.ndarray
    H: np.ndarray
    Wc: np.ndarray
    Vk: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    tol: np.ndarray
    vrange: np.ndarray

    @property
    def shape(self):
        return self.U.shape

    def priced(self, p: Prices) -> np.ndarray:
        out = self.U + p.g[None, :]
        if self.Wc.shape[1]:
            out = out - (self.Wc * p.lam[None, :]) @ self.Vk
        return out

    def values(self, a: np.ndarray) -> np.ndarray:
        return np.einsum("nc,cn->c", self.Wc, self.Vk[:, a]) if self.Wc.shape[1] else np.zeros(0)

    def sub(self, rows: np.ndarray, scale_to_full: bool) -> "_Problem":
        f = self.U.shape[0] / max(1, rows.size) if scale_to_full else 1.0
        return _Problem(self.U[rows], self.L, self.H, self.Wc[rows] * f, self.Vk, self.lo, self.hi, self.tol,
                        self.vrange)


def assign_constrained(U, L, H, side: Optional[SideConstraints], cols, prices: Optional[Prices] = None,
                       integral: bool = True, support: Optional[Support] = None):
    """Exact assignment of N customers to K fixed treatments under shares, side constraints and support.

    U : (N, K) float64 profits of the chosen treatments. L, H : (K,) integer count bounds.
    side : the validated constraints (over the same N customers) or None; cols : (K,) candidate index
    of each treatment (to read the constraint values). prices : optional warm start.
    integral : False skips the rounding (step 3): a is then the LP solution's largest entry per row
        (a few split customers may break a constraint) and ``Prices.lp_value`` is the LP optimum, which
        is what the search compares treatment sets by (the rounding costs a HiGHS MILP, ~0.3 s, and
        changes the value by less than one customer's margin).
    Returns (a (N,) int64, Prices, feasible: bool). When infeasible, a minimizes the violation (shares
    kept) and the prices carry a large multiplier on each violated constraint (module docstring).
    support : each segment's minimum of supporting customers: K more rows of the same form,
        sum_i s_ik x_ik >= n (weights s_ik = 1 where customer i supports slot k's candidate), whose
        multipliers follow the side constraints' in ``Prices.lam`` (C + K entries).
    """
    from coarse_gpu.discretize.exact import _assign_with_counts

    U = np.asarray(U, dtype=np.float64)
    N, K = U.shape
    if (side is None or side.n_constraints == 0) and support is None:
        a, g = _assign_with_counts(U, L, H, None if prices is None else prices.g)
        return a, Prices(np.asarray(g, dtype=np.float64), np.zeros(0)), True
    prob = _problem(U, L, H, side, cols, support)
    n_rows = prob.Wc.shape[1]
    bad = _infeasible_range(prob) if support is None else _support_collision(prob, support, cols)
    bad = bad if bad is not None or support is None else _infeasible_range(prob)
    if bad is not None:
        return bad
    res = None
    if prices is not None and prices.lam.shape[0] == n_rows:
        # warm prices (the previous Lloyd iteration's, a swap's parent set): one restricted LP, if they
        # are close enough that its certificate holds (the common case near a fixed point) ...
        res = _certified_lp(prob, prices, patience=1)
        if res is None:
            # ... else refined by Newton on the smoothed dual at small eps: the restricted LP then needs
            # only the customers within a few eps of a tie (unrefined, it grew to 14,000 of 20,000
            # customers at 0.5 s per LP with a binding budget, measured)
            prices = _refine_prices(prob, prices)
    else:
        prices = _start_prices(prob)
    if res is None:
        res = _certified_lp(prob, prices)
    if res == "infeasible":
        res = None
    if res is None:  # the LP itself is infeasible (constraints jointly, with these treatments)
        return (*_phase_one(prob, _violated(prob)), False)
    x, prices = res
    prices.lp_value = float((prob.U * x).sum())
    if not integral:
        return x.argmax(1), prices, True
    a, ok, gap = _round(prob, x, prices)
    if not ok:  # the LP is feasible but no integral assignment is (e.g. a very narrow parity band)
        return (*_phase_one(prob, _violated(prob)), False)
    prices.rounding_gap = gap
    return a, prices, True


def _problem(U, L, H, side: Optional[SideConstraints], cols, support: Optional[Support]) -> _Problem:
    """The assignment problem of the K treatments cols: side rows, then one support row per slot."""
    N, K = U.shape
    Wc, Vk = [np.zeros((N, 0))], [np.zeros((0, K))]
    lo, hi, tol, vr = [np.zeros(0)], [np.zeros(0)], [np.zeros(0)], [np.zeros(0)]
    if side is not None:
        Wc.append(side.W)
        Vk.append(side.at(cols))
        lo.append(side.lo), hi.append(side.hi), tol.append(side.tol), vr.append(side.vrange)
    if support is not None:
        Wc.append(support.matrix(cols))
        Vk.append(np.eye(K))
        lo.append(np.full(K, float(support.n))), hi.append(np.full(K, np.inf))
        tol.append(np.full(K, 1e-9)), vr.append(np.ones(K))
    return _Problem(U, np.asarray(L), np.asarray(H), np.concatenate(Wc, 1), np.concatenate(Vk, 0),
                    *(np.concatenate(x) for x in (lo, hi, tol, vr)))


def _violated(prob: _Problem) -> np.ndarray:
    """(C,) phase-one multipliers when the rows are jointly infeasible: +-rho on the rows the plain
    capacitated assignment violates (so the search moves toward feasibility), 0 on the others."""
    from coarse_gpu.discretize.exact import _assign_with_counts

    a, _ = _assign_with_counts(prob.U, prob.L, prob.H)
    v = prob.values(a)
    rho = _rho(prob)
    return np.where(v > prob.hi + prob.tol, rho, np.where(v < prob.lo - prob.tol, -rho, 0.0))


def _support_collision(prob: _Problem, support: Support, cols):
    """Slots whose candidates share a supporting group need n supporters each from it: infeasible
    (phase one, multipliers on those slots' rows) when the group has fewer than that; else None."""
    groups = np.asarray(support.candidate_group)[np.asarray(cols, dtype=np.int64)]
    size = np.bincount(np.asarray(support.customer_group)[np.asarray(support.customer_group) >= 0],
                       minlength=int(groups.max()) + 1)
    C = prob.Wc.shape[1]
    K = groups.shape[0]
    lam = np.zeros(C)
    rho = _rho(prob)
    for grp in np.unique(groups):
        slots = np.flatnonzero(groups == grp)
        if slots.size * support.n > size[grp] if grp < size.shape[0] else True:
            lam[C - K + slots] = -rho[C - K + slots]
    if not np.any(lam):
        return None
    a, p = _phase_one(prob, lam)
    return a, p, False


def _rho(prob: _Problem) -> np.ndarray:
    """(C,) multipliers at which a constraint outweighs every customer's profit differences."""
    spread = float(np.mean(prob.U.max(1) - prob.U.min(1))) + 1e-12
    wbar = np.abs(prob.Wc).mean(0) + 1e-300
    return 4.0 * spread / (wbar * prob.vrange)


def _phase_one(prob: _Problem, lam: np.ndarray):
    """(a, Prices) minimizing the violation: the capacitated assignment priced by large multipliers."""
    from coarse_gpu.discretize.exact import _assign_with_counts

    p = Prices(np.zeros(prob.U.shape[1]), lam)
    a, g = _assign_with_counts(prob.priced(p), prob.L, prob.H)
    return a, Prices(np.asarray(g, dtype=np.float64), lam)


def _infeasible_range(prob: _Problem):
    """Each constraint alone over the capacitated assignments to these treatments; None if all can hold,
    else the phase-one (a, Prices, False)."""
    C = prob.Wc.shape[1]
    lam = np.zeros(C)
    rho = _rho(prob)
    for c in range(C):
        low = _min_value(prob.Wc[:, c], prob.Vk[c], prob.L, prob.H)
        high = -_min_value(prob.Wc[:, c], -prob.Vk[c], prob.L, prob.H)
        if low > prob.hi[c] + prob.tol[c]:
            lam[c] = rho[c]
        elif high < prob.lo[c] - prob.tol[c]:
            lam[c] = -rho[c]
    if not np.any(lam):
        return None
    a, p = _phase_one(prob, lam)
    return a, p, False


def _min_value(w: np.ndarray, v: np.ndarray, L: np.ndarray, H: np.ndarray) -> float:
    """min sum_i w_i v_k(i) over assignments with counts L_k <= n_k <= H_k (exact; +inf if none).

    The cost w_i v_k is a Monge array once customers are sorted by w descending and columns by v
    ascending, so for given counts the monotone (north-west corner) assignment is optimal; the counts
    come from a DP over the breakpoints b (customers given to the first j columns):
    f_j(b) = v_j W(b) + min_{b - H_j <= b' <= b - L_j} (f_{j-1}(b') - v_j W(b')), W = prefix sums of
    the sorted w; the window minimum is a sliding-window filter, so the DP costs O(K N).
    """
    from scipy.ndimage import minimum_filter1d

    N = w.shape[0]
    Wp = np.concatenate([[0.0], np.cumsum(np.sort(w)[::-1])])
    f = np.full(N + 1, np.inf)
    f[0] = 0.0
    for k in np.argsort(v, kind="stable"):
        lo, hi = int(max(L[k], 0)), int(min(H[k], N))
        if lo > hi:
            return np.inf
        g = f - v[k] * Wp
        g[~np.isfinite(f)] = np.inf
        size = hi - lo + 1
        # m[b] = min g[b - hi .. b - lo]: a forward window of `size` over g padded by hi infinities
        h = np.concatenate([np.full(hi, np.inf), g])
        m = minimum_filter1d(h, size, mode="constant", cval=np.inf, origin=-(size // 2))[: N + 1 + hi - lo]
        m = m[:N + 1] if m.shape[0] >= N + 1 else np.concatenate([m, np.full(N + 1 - m.shape[0], np.inf)])
        f = m + v[k] * Wp
        f[~np.isfinite(m)] = np.inf
    return float(f[N])


def _start_prices(prob: _Problem) -> Prices:
    """Starting prices: the entropic plan's duals (small N) or a random subsample's exact LP duals."""
    N, K = prob.U.shape
    C = prob.Wc.shape[1]
    if N <= _BASE:
        return _newton_prices(prob)
    n = min(N // 2, max(_PRICE_SAMPLE, N // 8))
    rows = np.sort(np.random.default_rng(N).choice(N, n, replace=False))
    sub = prob.sub(rows, scale_to_full=True)
    sub.L = np.floor(prob.L * n / N).astype(np.int64)
    sub.H = np.minimum(np.ceil(prob.H * n / N).astype(np.int64), n)
    if _infeasible_range(sub) is not None:
        return Prices(np.zeros(K), np.zeros(C))
    p = _start_prices(sub)
    res = _certified_lp(sub, p)
    if res == "infeasible":
        return p
    p = res[1]
    # the sample's constraint rows carry weights x N / n: per customer its multipliers are N / n larger
    return _refine_prices(prob, Prices(p.g, p.lam * (N / n)))


def _refine_prices(prob: _Problem, prices: Prices) -> Prices:
    """``prices`` refined by ``_newton_prices`` at eps 1 % and 0.3 %, on all customers up to
    _REFINE_MAX, else on a random sample of that size (its multipliers scaled to all customers): a
    Newton step costs ~20 ms per 1e5 entries, and a sample's prices are within ~1 / sqrt(n) of the
    full ones, which the restricted LP absorbs."""
    N = prob.U.shape[0]
    if N <= _REFINE_MAX:
        return _newton_prices(prob, prices, (0.01, 0.003))
    rows = np.sort(np.random.default_rng(N + 1).choice(N, _REFINE_MAX, replace=False))
    sub = prob.sub(rows, scale_to_full=True)
    sub.L = np.floor(prob.L * _REFINE_MAX / N).astype(np.int64)
    sub.H = np.minimum(np.ceil(prob.H * _REFINE_MAX / N).astype(np.int64), _REFINE_MAX)
    f = N / _REFINE_MAX
    p = _newton_prices(sub, Prices(prices.g, prices.lam / f), (0.01, 0.003))
    return Prices(p.g, p.lam * f)


def _entropic_prices(prob: _Problem, warm: Optional[Prices] = None,
                     schedule=(0.3, 0.1, 0.03, 0.01, 0.003)) -> Prices:
    """Duals of the entropic plan with one multiplier per constraint, eps decreasing through
    ``schedule`` (relative to the mean row std of U), from ``warm`` prices if given."""
    from coarse_gpu.discretize.sinkhorn import entropic_plan

    N, K = prob.U.shape
    U = torch.as_tensor(prob.U)
    spread = float(U.std(1).mean()) or 1.0
    lo = torch.as_tensor(prob.L / N)
    hi = torch.as_tensor(prob.H / N)
    side = (torch.as_tensor(prob.Wc), torch.as_tensor(prob.Vk), torch.as_tensor(prob.lo), torch.as_tensor(prob.hi))
    g = lam = None
    if warm is not None:
        g, lam = torch.as_tensor(warm.g, dtype=U.dtype), torch.as_tensor(warm.lam, dtype=U.dtype)
    for rel in schedule:
        _, g, _, _, lam = entropic_plan(U, rel * spread, lo, hi, g=g, tol=1e-6, max_iter=40, side=side, lam=lam)
    return Prices(g.numpy().astype(np.float64), lam.numpy().astype(np.float64))


def _newton_prices(prob: _Problem, warm: Optional[Prices] = None,
                   schedule=(0.1, 0.03, 0.01, 0.003), max_iter: int = 40) -> Prices:
    """Near-optimal LP duals by damped Newton on the smoothed dual, eps decreasing through ``schedule``
    (relative to the mean row std of U), from ``warm`` prices if given.

    The LP dual is min over (g, lam) of D = sum_i max_k (U_ik + g_k - sum_c lam_c a_cik)
    + sum_k max(-g_k L_k, -g_k H_k) + sum_c max(lam_c hi_c, lam_c lo_c), a convex function of only
    K + C variables. Smoothing the max over k by eps * logsumexp(. / eps) and each box kink by a
    softplus of width eps makes it smooth and strictly convex (up to the uniform shift of g), so Newton
    with a backtracking line search converges in a handful of steps per temperature; each step costs
    O(N K (K + C)^2). (The Sinkhorn-style block updates of ``entropic_plan`` zig-zag here: the share
    potentials and the multipliers move the same customers, and at N = 20,000 with a binding budget
    they left lam 7 % off after 80 iterations, which made the restricted LP grow to 12,000 customers.)
    The multipliers are optimized as mu_c = lam_c s_c, s_c = mean_i |w_ic| max_k |v_ck|, so every
    coordinate is in profit units.
    """
    U, Wc, Vk = prob.U, prob.Wc, prob.Vk
    N, K = U.shape
    C = Wc.shape[1]
    spread = float(U.std(1).mean()) or 1.0
    sc = np.abs(Wc).mean(0) * np.abs(Vk).max(1) + 1e-300  # (C,)
    B = Wc / sc  # (N, C)
    big = 2.0 * np.abs(Wc).sum(0) * np.abs(Vk).max(1) + 1.0  # beyond any achievable |value|
    lo = np.where(np.isfinite(prob.lo), prob.lo, -big - np.abs(np.where(np.isfinite(prob.hi), prob.hi, 0.0)))
    hi = np.where(np.isfinite(prob.hi), prob.hi, big + np.abs(np.where(np.isfinite(prob.lo), prob.lo, 0.0)))
    L, H = prob.L.astype(np.float64), prob.H.astype(np.float64)
    BV = B[:, :, None] * Vk[None, :, :]  # (N, C, K): a_cik / s_c
    theta = np.zeros(K + C)
    if warm is not None:
        theta[:K], theta[K:] = warm.g, warm.lam * sc

    def parts(th, eps):
        g, mu = th[:K], th[K:]
        Z = (U + g - (B * mu) @ Vk) / eps
        zmax = Z.max(1, keepdims=True)
        E = np.exp(Z - zmax)
        tot = E.sum(1, keepdims=True)
        val = eps * float((np.log(tot) + zmax).sum())
        tau = eps
        val += float(np.sum(-g * L + (H - L) * tau * np.logaddexp(0.0, -g / tau)))
        val += float(np.sum((mu * lo + (hi - lo) * tau * np.logaddexp(0.0, mu / tau)) / sc))
        return val, E / tot

    levels = list(schedule)
    restarted = False
    while levels:
        rel = levels.pop(0)
        eps = rel * spread
        f, Pm = parts(theta, eps)
        stuck = False
        for _ in range(max_iter):
            g, mu = theta[:K], theta[K:]
            sg, sm = _sigmoid(-g / eps), _sigmoid(mu / eps)
            mean_a = np.einsum("nk,nck->nc", Pm, BV)
            grad = np.concatenate([Pm.sum(0) - L - (H - L) * sg,
                                   -mean_a.sum(0) + (lo + (hi - lo) * sm) / sc])
            # Hessian of the smoothed max: (1/eps) sum_i J_i (diag p_i - p_i p_i^T) J_i^T, J_i = [I; -a_i / s]
            Hgg = np.diag(Pm.sum(0)) - Pm.T @ Pm
            PA = Pm[:, None, :] * BV  # (N, C, K)
            Hgm = -(PA.sum(0).T - Pm.T @ mean_a)  # (K, C)
            Hmm = np.einsum("nck,ndk->cd", PA, BV) - mean_a.T @ mean_a
            Hs = np.block([[Hgg, Hgm], [Hgm.T, Hmm]]) / eps
            Hs[np.arange(K), np.arange(K)] += (H - L) * sg * (1 - sg) / eps
            Hs[np.arange(K, K + C), np.arange(K, K + C)] += (hi - lo) * sm * (1 - sm) / (eps * sc)
            Hs += np.eye(K + C) * (1e-9 * np.trace(Hs) / (K + C) + 1e-300)
            step = np.linalg.solve(Hs, grad)
            dec = float(grad @ step)  # ~ twice the distance to the minimum, in total profit
            if not dec > 1e-3 * eps:
                break
            t = 1.0
            while t > 1e-8:
                f2, P2 = parts(theta - t * step, eps)
                if f2 <= f - 0.25 * t * dec:
                    break
                t *= 0.5
            if t <= 1e-8:
                stuck = True
                break
            theta, f, Pm = theta - t * step, f2, P2
        if stuck and warm is not None and not restarted:
            # warm prices far from these treatments' (e.g. a phase-one start): the plan is one-hot there,
            # the Hessian vanishes and no Newton step descends; start cold, from a high temperature
            theta, restarted = np.zeros(K + C), True
            levels = [x for x in (0.1, 0.03) if x > rel] + [rel] + levels
    return Prices(theta[:K].copy(), theta[K:] / sc)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _margins(P: np.ndarray):
    """(argmax (N,), best minus second best (N,)) of priced profits P (N, K)."""
    a = P.argmax(1)
    if P.shape[1] == 1:
        return a, np.full(P.shape[0], np.inf)
    top2 = np.partition(P, P.shape[1] - 2, axis=1)[:, -2:]
    return a, top2[:, 1] - top2[:, 0]


def _certified_lp(prob: _Problem, prices: Prices, patience: Optional[int] = None):
    """Optimal LP solution x (N, K) and its dual Prices, by restricted LPs certified on all customers;
    "infeasible" when the LP is. ``patience``: give up (None) after that many restricted LPs, or when the
    prices put so many customers on over-full columns that the first restricted LP would be large.

    The free set is chosen by the margins under the STARTING prices, plus every customer a failed
    certificate found mispriced: a restricted LP on few customers can have duals far from the full
    problem's (its constraint binds at another breakpoint), and choosing the next free set by them
    made the set grow to half of the customers (measured at N = 20,000 with a binding budget).
    """
    N, K = prob.U.shape
    span = float(prob.U.max() - prob.U.min()) + 1e-300
    tol = 1e-7 * span
    n_free = min(N, max(_AMB0, 16 * (K + prob.Wc.shape[1])))
    a0, margin = _margins(prob.priced(prices))
    order = np.argsort(margin, kind="stable")
    extra = np.zeros(N, dtype=bool)
    rounds = 0
    while True:
        free = extra.copy()
        free[order[:n_free]] = True
        _make_room(free, a0, order, prob.L, prob.H)
        F = np.flatnonzero(free)
        if patience is not None and (rounds >= patience or F.size > 4 * n_free):
            return None
        rounds += 1
        fixed = ~free
        used = np.bincount(a0[fixed], minlength=K)
        vfix = _values_rows(prob, a0, fixed)
        sol = _lp(prob, F, np.maximum(prob.L - used, 0), prob.H - used, vfix)
        if sol is None:
            if F.size == N:
                return "infeasible"
            n_free = min(N, 4 * n_free)
            continue
        xF, lp_prices = sol
        x = np.zeros((N, K))
        x[np.flatnonzero(fixed), a0[fixed]] = 1.0
        x[F] = xF
        if F.size == N:
            return x, lp_prices
        P = prob.priced(lp_prices)
        rc = P.max(1) - P[np.arange(N), a0]
        bad = fixed & (rc > tol)
        if not bad.any():
            return x, lp_prices
        extra |= bad
        n_free = min(N, 2 * n_free)


def _values_rows(prob: _Problem, a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(mask)
    if prob.Wc.shape[1] == 0:
        return np.zeros(0)
    return np.einsum("nc,cn->c", prob.Wc[idx], prob.Vk[:, a[idx]])


def _make_room(free: np.ndarray, a0: np.ndarray, order: np.ndarray, L: np.ndarray, H: np.ndarray) -> None:
    """Free the least committed customers of over-full columns (and of columns above L when the free
    customers cannot fill the columns below L), so that the restricted share bounds can hold."""
    K = L.shape[0]
    for _ in range(2 * K + 2):
        used = np.bincount(a0[~free], minlength=K)
        over = used - H
        short = int(np.maximum(L - used, 0).sum()) - int(free.sum())
        if over.max() <= 0 and short <= 0:
            return
        for k in range(K):
            need = int(over[k]) if over[k] > 0 else 0
            if short > 0 and used[k] > L[k]:
                need = max(need, min(short, int(used[k] - L[k])))
                short -= need
            if need > 0:
                cand = order[(a0[order] == k) & ~free[order]][:need]
                free[cand] = True


def _rows(prob: _Problem, F: np.ndarray, L: np.ndarray, H: np.ndarray, vfix: np.ndarray):
    """Sparse rows of the restricted problem on customers F: (A_eq, A_ub, b_ub, kinds), x_ik i-major;
    side rows are divided by their largest coefficient (HiGHS' tolerances are absolute)."""
    from scipy import sparse

    n, K = F.size, prob.U.shape[1]
    nv = n * K
    ix = np.arange(nv)
    A_eq = sparse.csr_matrix((np.ones(nv), (ix // K, ix)), shape=(n, nv))
    blocks, b, kinds = [], [], []
    col = sparse.csr_matrix((np.ones(nv), (ix % K, ix)), shape=(K, nv))
    up = np.flatnonzero(H < n)
    if up.size:
        blocks.append(col[up])
        b.append(H[up].astype(np.float64))
        kinds += [("H", k, 1.0) for k in up]
    low = np.flatnonzero(L > 0)
    if low.size:
        blocks.append(-col[low])
        b.append(-L[low].astype(np.float64))
        kinds += [("L", k, 1.0) for k in low]
    for c in range(prob.Wc.shape[1]):
        coef = (prob.Wc[F, c][:, None] * prob.Vk[c][None, :]).ravel()
        s = float(np.abs(coef).max())
        if s == 0.0:  # no free customer can change this row (HiGHS' IPM fails on empty rows): check it here
            if vfix[c] > prob.hi[c] + prob.tol[c] or vfix[c] < prob.lo[c] - prob.tol[c]:
                kinds.append(("infeasible", c, 1.0))
            continue
        row = sparse.csr_matrix(coef[None, :] / s)
        if np.isfinite(prob.hi[c]):
            blocks.append(row)
            b.append(np.array([(prob.hi[c] - vfix[c]) / s]))
            kinds.append(("hi", c, s))
        if np.isfinite(prob.lo[c]):
            blocks.append(-row)
            b.append(np.array([-(prob.lo[c] - vfix[c]) / s]))
            kinds.append(("lo", c, s))
    A_ub = sparse.vstack(blocks).tocsr() if blocks else None
    return A_eq, A_ub, (np.concatenate(b) if b else None), kinds


def _lp(prob: _Problem, F: np.ndarray, L: np.ndarray, H: np.ndarray, vfix: np.ndarray):
    """LP on the customers F with residual bounds: (x (|F|, K), Prices) or None when infeasible."""
    from scipy.optimize import linprog

    n, K = F.size, prob.U.shape[1]
    if np.any(L > H) or L.sum() > n or H.sum() < n:
        return None
    A_eq, A_ub, b_ub, kinds = _rows(prob, F, L, H, vfix)
    if any(kind == "infeasible" for kind, _, _ in kinds):
        return None
    u = float(np.abs(prob.U[F]).max()) or 1.0  # objective in units of u: duals scale back by u
    # interior point + crossover: a vertex (few split customers) at 5x the speed of dual simplex on
    # these LPs (0.2 s against 1.0 s for 4096 x 5 with two dense side rows, measured)
    for method in ("highs-ipm", "highs-ds"):  # dual simplex when the interior point method fails numerically
        res = linprog(-prob.U[F].ravel() / u, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=np.ones(n), bounds=(0, None),
                      method=method, options={"dual_feasibility_tolerance": 1e-9, "primal_feasibility_tolerance": 1e-9})
        if res.status in (0, 2):
            break
    if res.status == 2:
        return None
    if res.status != 0:
        raise RuntimeError(f"constrained assignment: HiGHS failed on the restricted LP ({res.message})")
    g = np.zeros(K)
    lam = np.zeros(prob.Wc.shape[1])
    marg = res.ineqlin.marginals * u if A_ub is not None else np.zeros(0)
    for (kind, j, s), mrg in zip(kinds, marg):
        # marginal = d(min -U x)/d(rhs) <= 0; see the module docstring for the sign of each price
        if kind == "H":
            g[j] += mrg
        elif kind == "L":
            g[j] -= mrg
        elif kind == "hi":
            lam[j] -= mrg / s
        else:
            lam[j] += mrg / s
    return res.x.reshape(n, K), Prices(g, lam)


def _round(prob: _Problem, x: np.ndarray, prices: Prices):
    """Exact integral assignment from the optimal LP x (module docstring, step 3): (a, ok, gap), gap =
    LP bound minus the value (0 if certified optimal, else an upper bound on the loss)."""
    N, K = x.shape
    a = x.argmax(1)
    frac = x.max(1) < 1.0 - 1e-9
    if not frac.any() and _feasible(prob, a):
        return a, True, 0.0
    P = prob.priced(prices)
    rows = np.arange(N)
    rc = P.max(1)[:, None] - P
    rc[rows, a] = np.inf
    margin = rc.min(1)  # cheapest move away from the LP's choice
    margin[frac] = -np.inf
    order = np.argsort(margin, kind="stable")
    lp_value = float((prob.U * x).sum())
    span = float(prob.U.max() - prob.U.min()) + 1e-300
    n_f = min(N, int(frac.sum()) + max(64, 4 * (K + prob.Wc.shape[1])))
    best = None
    while True:
        free = np.zeros(N, dtype=bool)
        free[order[:n_f]] = True
        aF, solved = _milp(prob, np.flatnonzero(free), a)
        if aF is not None:
            cand = a.copy()
            cand[free] = aF
            delta = max(0.0, lp_value - float(prob.U[rows, cand].sum()))
            if best is None or delta < best[1]:
                best = (cand, delta)
            # no customer left fixed could move at a loss below delta: certified optimal (only when the
            # MILP of the free ones was solved to optimality, not stopped at its time limit)
            if solved and (n_f == N or not np.any(margin[~free] < delta - 1e-9 * span)):
                return cand, True, 0.0
            if not solved:  # a larger MILP would not finish either: keep the feasible incumbent, gap reported
                return best[0], True, best[1]
        if n_f == N or 4 * n_f > max(_MILP_MAX, int(frac.sum()) + 64):
            if best is not None:
                return best[0], True, best[1]
            if n_f == N:
                return a, False, 0.0
        n_f = min(N, 4 * n_f)


def _feasible(prob: _Problem, a: np.ndarray) -> bool:
    counts = np.bincount(a, minlength=prob.U.shape[1])
    if np.any(counts < prob.L) or np.any(counts > prob.H):
        return False
    v = prob.values(a)
    return bool(np.all(v >= prob.lo - prob.tol) and np.all(v <= prob.hi + prob.tol))


def _milp(prob: _Problem, F: np.ndarray, a: np.ndarray):
    """Integral assignment of the customers F (others fixed at a) by HiGHS, exactly feasible, and whether
    HiGHS proved it optimal; (None, False) when it found none. A budget with few free customers is a
    knapsack that HiGHS can branch on for minutes (measured: > 2 min on 1,500 x 99 at K = 4), hence the
    time limit: past it the incumbent is returned and the rounding gap says what it may lose."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    N, K = prob.U.shape
    fixed = np.ones(N, dtype=bool)
    fixed[F] = False
    used = np.bincount(a[fixed], minlength=K)
    L, H = np.maximum(prob.L - used, 0), prob.H - used
    n = F.size
    if np.any(L > H) or L.sum() > n or H.sum() < n:
        return None, False
    vfix = _values_rows(prob, a, fixed)
    shrink = np.zeros(prob.Wc.shape[1])
    for _ in range(4):
        A_eq, A_ub, b_ub, kinds = _rows(prob, F, L, H, vfix)
        if any(kind == "infeasible" for kind, _, _ in kinds):
            return None, False
        cons = [LinearConstraint(A_eq, 1.0, 1.0)]
        if A_ub is not None:
            tight = np.array([shrink[j] / s if kind in ("hi", "lo") else 0.0 for kind, j, s in kinds])
            cons.append(LinearConstraint(A_ub, -np.inf, b_ub - tight))
        u = float(np.abs(prob.U[F]).max()) or 1.0
        res = milp(-prob.U[F].ravel() / u, constraints=cons, integrality=np.ones(n * K, dtype=np.uint8),
                   bounds=Bounds(0, 1), options={"mip_rel_gap": 0.0, "time_limit": _MILP_SECONDS})
        if res.x is None:
            return None, False
        aF = res.x.reshape(n, K).argmax(1)
        full = a.copy()
        full[F] = aF
        v = prob.values(full)
        over = np.maximum(v - prob.hi, prob.lo - v)
        if np.all(over <= prob.tol):
            return aF, bool(res.status == 0)
        # HiGHS' feasibility tolerance let a row slip by more than float rounding: tighten it and retry
        shrink = np.where(over > prob.tol, shrink + 2.0 * over, shrink)
    return None, False


# ----------------------------------------------------------------------------------------------------
# the priced profit table (seeding under side constraints)
# ----------------------------------------------------------------------------------------------------
class PricedSource(ProfitSource):
    """Pi_im - sum_c lam_c W_ic V_mc over a ProfitSource, never formed: the profit table under fixed
    multipliers, on which the greedy / k-means++ seeds are drawn (so that they respect the constraints
    as the Lagrangian does). Implements the ProfitSource operations the seeding uses (the row
    reductions are ProfitSource's single-process ones: constraints are refused when sharded); the rank-C
    correction is added to ``columns`` / ``scores`` / ``submatrix``, and the N x M reductions
    (``row_max``, ``gains``) run over column chunks of ``columns``."""

    def __init__(self, base, W: np.ndarray, V: np.ndarray, lam: np.ndarray, chunk_bytes: int = 1 << 26) -> None:
        self.base, self.n, self.m = base, base.n, base.m
        self.device, self.dtype, self.lazy, self.path = base.device, base.dtype, True, base.path
        self.Wl = torch.as_tensor(W * lam[None, :], device=self.device, dtype=self.dtype)
        self.Vt = torch.as_tensor(V, device=self.device, dtype=self.dtype)
        self.W, self.V, self.lam = W, V, lam
        itemsize = torch.finfo(self.dtype).bits // 8
        self.chunk = max(1, int(chunk_bytes // max(1, self.n * itemsize)))
        self._rowmax = None

    def columns(self, idx):
        return self.base.columns(idx) - self.Wl @ self.Vt[idx.to(self.device)].T

    def scores(self, P):
        return self.base.scores(P) - (P.T @ self.Wl) @ self.Vt.T

    def submatrix(self, rows, cols=None):
        V = self.Vt if cols is None else self.Vt[cols.to(self.device)]
        return self.base.submatrix(rows, cols) - self.Wl[rows.to(self.device)] @ V.T

    def _blocks(self):
        for lo in range(0, self.m, self.chunk):
            yield lo, self.columns(torch.arange(lo, min(self.m, lo + self.chunk), device=self.device))

    def row_max(self):
        if self._rowmax is None:
            best = torch.full((self.n,), -math.inf, device=self.device, dtype=self.dtype)
            arg = torch.zeros(self.n, dtype=torch.long, device=self.device)
            for lo, blk in self._blocks():
                v, a = blk.max(1)
                better = v > best
                best, arg = torch.where(better, v, best), torch.where(better, a + lo, arg)
            self._rowmax = (best, arg)
        return self._rowmax

    def gains(self, best):
        from coarse_gpu.discretize.profit import relu_colsum

        out = torch.empty(self.m, device=self.device, dtype=self.dtype)
        for lo, blk in self._blocks():
            out[lo:lo + blk.shape[1]] = relu_colsum(blk, best)
        return out

    def rows(self, idx):
        sub = self.base.rows(idx)
        return None if sub is None else PricedSource(sub, self.W[idx], self.V, self.lam)
