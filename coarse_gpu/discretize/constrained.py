"""The exact assignment of customers to K fixed treatments under shares, side constraints and support.

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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from coarse_gpu.discretize.constraints import Prices, SideConstraints, Support
from coarse_gpu.discretize.exact import _assign_with_counts
from coarse_gpu.discretize.lp import _lp, _make_room, _round, _values_rows
from coarse_gpu.discretize.newton import _newton_prices

_BASE = 8192  # customers below which the starting prices come from the entropic plan (no subsample)
_AMB0 = 256  # first restricted LP size (customers); it grows x4 while the certificate fails
_PRICE_SAMPLE = 4096
_REFINE_MAX = 8192  # customers on which warm prices are refined (a sample beyond; see _refine_prices)


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
        lo.append(side.lo)
        hi.append(side.hi)
        tol.append(side.tol)
        vr.append(side.vrange)
    if support is not None:
        Wc.append(support.matrix(cols))
        Vk.append(np.eye(K))
        lo.append(np.full(K, float(support.n)))
        hi.append(np.full(K, np.inf))
        tol.append(np.full(K, 1e-9))
        vr.append(np.ones(K))
    return _Problem(U, np.asarray(L), np.asarray(H), np.concatenate(Wc, 1), np.concatenate(Vk, 0),
                    *(np.concatenate(x) for x in (lo, hi, tol, vr)))


def _violated(prob: _Problem) -> np.ndarray:
    """(C,) phase-one multipliers when the rows are jointly infeasible: +-rho on the rows the plain
    capacitated assignment violates (so the search moves toward feasibility), 0 on the others."""

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
    # here: scipy.ndimage (~50 ms) loads only for this solve; `import coarse_gpu.discretize` does not load it
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
