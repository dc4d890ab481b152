"""Side constraints and the exact MIP: discretize against solver="mip", exact feasibility, duals, errors."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

from coarse_gpu.discretize import Constraint, FactoredProfit, assign_constrained, discretize, share_counts
from coarse_gpu.discretize import constrained as cons_mod
from coarse_gpu.discretize.constraints import check_constraints

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def instance(seed: int, n: int = 200, m: int = 15):
    """Concave profit curves over a 1-D level grid, and two customer groups whose ideal levels differ."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, m)
    ideal = rng.beta(2.0, 3.0, n)
    curv = rng.uniform(0.5, 3.0, n)
    X = rng.normal(10.0, 1.0, n)[:, None] - 5.0 * curv[:, None] * (t[None] - ideal[:, None]) ** 2 \
        + 0.3 * rng.normal(size=(n, m))
    group = (rng.random(n) < 0.4 + 0.3 * (ideal > 0.4)).astype(int)
    return X, t, group


def budget_and_parity(n, t, group, budget, delta=0.02):
    """A budget on the mean cost (cost = 2 x level) and a band on the groups' mean level gap."""
    w_par = np.where(group == 0, 1.0 / np.sum(group == 0), -1.0 / np.sum(group == 1))
    return [Constraint(np.full(n, 1.0 / n), 2.0 * t, hi=budget, name="budget"),
            Constraint(w_par, t, lo=-delta, hi=delta, name="parity")]


def assert_exactly_feasible(res, X, constraints, min_share=None, max_share=None):
    """Every constraint and share bound holds for the hard assignment (to float rounding)."""
    n = X.shape[0]
    chosen = res.candidate_index[res.assignment]
    assert res.objective == pytest.approx(X[np.arange(n), chosen].sum(), rel=1e-12)
    for c, rep in zip(constraints, res.info["constraints"]):
        value = float(np.sum(c.weights * np.asarray(c.values)[chosen]))
        scale = np.abs(c.weights).sum() * np.abs(c.values).max()
        assert rep["value"] == pytest.approx(value, abs=1e-12 * scale)
        if c.hi is not None:
            assert value <= c.hi + 1e-9 * scale, (c.name, value, c.hi)
        if c.lo is not None:
            assert value >= c.lo - 1e-9 * scale, (c.name, value, c.lo)
        assert rep["satisfied"]
    if min_share is not None:
        L, H = share_counts(n, res.k, min_share, max_share)
        counts = np.bincount(res.assignment, minlength=res.k)
        assert np.all(counts >= L) and np.all(counts <= H)


def _spend(X, t, k):
    r = discretize(X, k, device="cpu", seed=0)
    return float(np.mean(2.0 * t[r.candidate_index[r.assignment]]))


@pytest.mark.parametrize("seed,shares", [(0, True), (3, True), (5, False)])
def test_matches_the_mip_with_shares_budget_and_parity(seed, shares):
    X, t, group = instance(seed)
    n, k = X.shape[0], 4
    cons = budget_and_parity(n, t, group, budget=0.8 * _spend(X, t, k))  # binding: 80 % of the free spend
    kw = dict(min_share=0.1, max_share=0.4) if shares else {}
    ref = discretize(X, k, device="cpu", solver="mip", constraints=cons, **kw)
    assert ref.info["mip_optimal"] and ref.solver == "mip"
    assert_exactly_feasible(ref, X, cons, **kw)
    bound = ref.info["mip_dual_bound"]
    assert ref.objective <= bound * (1 + 1e-12) and ref.objective >= bound * (1 - 1e-4)
    for solver in ("sinkhorn", "lloyd"):
        res = discretize(X, k, device="cpu", seed=0, solver=solver, constraints=cons, **kw)
        assert_exactly_feasible(res, X, cons, **kw)
        assert res.objective <= bound * (1 + 1e-12)  # never above the optimum
        if solver == "sinkhorn":
            assert res.objective >= ref.objective * (1 - 5e-4), (res.objective, ref.objective)
        else:  # Lloyd's alternation alone is the weaker reference (0.1-0.5 % below on these)
            assert res.objective >= ref.objective * (1 - 1e-2)
    # the budget binds (it was set below the free spend) and prices the profit it forgoes
    # (an integral assignment sits within a few customers' cost steps 2 dt / n of the bound, as the MIP's does)
    budget, step = res.info["constraints"][0], 2.0 * (t[1] - t[0]) / n
    assert budget["binding"] == "hi" and budget["dual"] > 0 and budget["hi"] - 3 * step <= budget["value"] <= budget["hi"]


def test_shares_alone_reach_the_mip_optimum():
    """The swap search under share bounds (issue 17: 0.23 % below the MIP before it)."""
    for seed in (1,):
        X, _, _ = instance(seed, n=300, m=20)
        for k, lo, hi in ((4, 0.1, 0.4), (6, 0.1, 0.2)):
            ref = discretize(X, k, device="cpu", solver="mip", min_share=lo, max_share=hi)
            res = discretize(X, k, device="cpu", seed=0, min_share=lo, max_share=hi)
            assert res.objective <= ref.info["mip_dual_bound"] * (1 + 1e-12)
            assert res.objective >= ref.objective * (1 - 5e-4), (seed, k, res.objective, ref.objective)
            assert res.info["share_assignment_certified_optimal"]


def test_dual_multiplier_is_the_slope_of_the_optimum_in_the_budget():
    X, t, group = instance(11)
    n, k, B = X.shape[0], 4, 0.55
    res = discretize(X, k, device="cpu", seed=0, min_share=0.1, max_share=0.4,
                     constraints=budget_and_parity(n, t, group, B))
    lam = res.info["constraints"][0]["dual"]
    assert lam > 0
    # with the treatments fixed the LP optimum is piecewise linear in the budget, of slope lam
    cols = res.candidate_index
    L, H = share_counts(n, k, 0.1, 0.4)

    def lp_value(b):
        side = check_constraints(budget_and_parity(n, t, group, b), n, X.shape[1], k)
        return assign_constrained(X[:, cols], L, H, side, cols, integral=False)[1].lp_value

    d = 1e-4
    assert (lp_value(B + d) - lp_value(B)) / d == pytest.approx(lam, rel=1e-6)
    # and the joint optimum (the MIP, treatments free to move) has about the same slope
    v = [discretize(X, k, device="cpu", solver="mip", min_share=0.1, max_share=0.4,
                    constraints=budget_and_parity(n, t, group, b)).objective for b in (B - 0.02, B + 0.02)]
    assert (v[1] - v[0]) / 0.04 == pytest.approx(lam, rel=0.1)
    # a lower bound that binds has a negative price (profit lost per unit the floor rises); a slack one 0
    res2 = discretize(X, k, device="cpu", seed=0, constraints=[
        Constraint(np.full(n, 1.0 / n), t, lo=0.6, name="generosity"),
        Constraint(np.full(n, 1.0 / n), 2.0 * t, hi=5.0, name="loose budget")])
    gen, loose = res2.info["constraints"]
    assert gen["binding"] == "lo" and gen["dual"] < 0 and loose["dual"] == 0.0 and loose["binding"] is None
    assert gen["value"] >= 0.6 - 1e-12


def _milp_reference(U, L, H, side, cols, shrink=0.0):
    """The integer optimum of the fixed-treatment assignment, by HiGHS on all customers, with the side
    bounds moved inward by ``shrink`` x their scale (HiGHS lets rows slip by its 1e-6 tolerance)."""
    N, K = U.shape
    ix = np.arange(N * K)
    cons = [LinearConstraint(sp.csr_matrix((np.ones(N * K), (ix // K, ix))), 1, 1),
            LinearConstraint(sp.csr_matrix((np.ones(N * K), (ix % K, ix))), L, H)]
    Vk = side.at(cols)
    for c in range(side.n_constraints):
        cons.append(LinearConstraint((side.W[:, c][:, None] * Vk[c][None]).ravel()[None],
                                     side.lo[c] + shrink * side.scale[c], side.hi[c] - shrink * side.scale[c]))
    res = milp(-U.ravel(), constraints=cons, integrality=np.ones(N * K), bounds=Bounds(0, 1),
               options={"mip_rel_gap": 0.0})
    return -res.fun


@pytest.mark.parametrize("restricted", [False, True], ids=["small", "multilevel"])
def test_constrained_assignment_is_the_integer_optimum(monkeypatch, restricted):
    if restricted:  # exercise the large-N path: subsample prices, restricted LPs that must grow
        monkeypatch.setattr(cons_mod, "_BASE", 300)
        monkeypatch.setattr(cons_mod, "_PRICE_SAMPLE", 200)
        monkeypatch.setattr(cons_mod, "_AMB0", 32)
    rng = np.random.default_rng(4)
    n, m, k = 700, 12, 5
    X = rng.normal(size=(n, m)) + np.linspace(0.0, 2.0, m)
    t = np.linspace(0.0, 1.0, m)
    group = rng.integers(2, size=n)
    side = check_constraints(budget_and_parity(n, t, group, budget=1.0, delta=0.01), n, m, k)
    L, H = share_counts(n, k, 0.1, 0.4)
    for cols in (np.array([1, 2, 5, 8, 11]), np.array([0, 3, 4, 9, 10])):
        a, prices, ok = assign_constrained(X[:, cols], L, H, side, cols)
        assert ok and prices.rounding_gap == 0.0
        vals = side.values(a, cols)
        assert np.all(vals <= side.hi + side.tol) and np.all(vals >= side.lo - side.tol)
        counts = np.bincount(a, minlength=k)
        assert np.all(counts >= L) and np.all(counts <= H)
        value = X[np.arange(n), cols[a]].sum()
        # between HiGHS' optimum with the bounds tightened by 1e-5 and with its own tolerance
        assert _milp_reference(X[:, cols], L, H, side, cols, shrink=1e-5) - 1e-9 <= value
        assert value <= _milp_reference(X[:, cols], L, H, side, cols) + 1e-9
        assert prices.lp_value >= value - 1e-9  # the LP bound
    # treatments under which the budget cannot hold: reported infeasible, not an error
    expensive = np.array([7, 8, 9, 10, 11])
    _, _, ok = assign_constrained(X[:, expensive], L, H, side, expensive)
    assert not ok


def test_factored_source_and_lloyd_honour_the_constraints():
    X, t, group = instance(2)
    n, k = X.shape[0], 3
    cons = budget_and_parity(n, t, group, budget=0.8 * _spend(X, t, k))
    # a rank-(m) factorization of the same table: identical profits through the lazy path
    V, W = X, np.eye(X.shape[1])
    dense = discretize(X, k, device="cpu", seed=0, constraints=cons, min_share=0.2)
    lazy = discretize(FactoredProfit(V, W), k, device="cpu", seed=0, constraints=cons, min_share=0.2)
    assert lazy.info["path"].startswith("factored")
    assert lazy.objective == pytest.approx(dense.objective, rel=1e-6)
    assert_exactly_feasible(lazy, X, cons, min_share=0.2)


def test_infeasible_constraints_are_named_before_the_search():
    X, t, group = instance(0, n=100, m=10)
    n, m = X.shape
    cheap = 2.0 * t  # the cheapest candidate costs 0
    with pytest.raises(ValueError, match="constraint 'budget' is infeasible"):
        discretize(X, 3, device="cpu", constraints=[Constraint(np.full(n, 1 / n), cheap + 1.0, hi=0.5, name="budget")])
    with pytest.raises(ValueError, match="'budget', 'floor' are jointly infeasible"):
        discretize(X, 3, device="cpu", constraints=[Constraint(np.full(n, 1 / n), cheap, hi=0.5, name="budget"),
                                                    Constraint(np.full(n, 1 / n), cheap, lo=1.0, name="floor")])
    with pytest.raises(ValueError, match="infeasible with k=1"):
        discretize(X, 1, device="cpu", constraints=[Constraint(np.full(n, 1 / n), cheap, lo=0.05, hi=0.1)])
    # feasible alone, infeasible with the share bounds: every treatment must serve >= 30 %, so the mean
    # cost of any 3 treatments is at least 0.3 x (0 + 0.22 + 0.44); named after the search
    with pytest.raises(ValueError, match="constraints 'budget' could not be satisfied with the share bounds"):
        discretize(X, 3, device="cpu", min_share=0.3, n_restarts=2,
                   constraints=[Constraint(np.full(n, 1 / n), cheap, hi=0.1, name="budget")])
    with pytest.raises(ValueError, match="solver='mip': the problem is infeasible.*'budget'"):
        discretize(X, 3, device="cpu", min_share=0.3, solver="mip",
                   constraints=[Constraint(np.full(n, 1 / n), cheap, hi=0.1, name="budget")])


def test_bad_constraints_and_options_are_named():
    X, t, _ = instance(0, n=50, m=8)
    n = X.shape[0]
    cases = [
        (Constraint(np.ones(n - 1), t, hi=1.0), r"constraints\[0\] \('constraint 0'\): weights must have shape \(50,\)"),
        (Constraint(np.ones(n), t[:-1], hi=1.0, name="cost"), r"'cost'\): values must have shape \(8,\)"),
        (Constraint(np.ones(n), t), "give lo, hi or both"),
        (Constraint(np.ones(n), t, lo=2.0, hi=1.0), "lo=2.0 exceeds hi=1.0"),
        (Constraint(np.full(n, np.nan), t, hi=1.0), "weights contains NaN"),
        ([Constraint(np.ones(n), t, hi=9.0, name="a"), Constraint(np.ones(n), t, hi=9.0, name="a")], "used twice"),
        ("budget", r"constraints\[0\] must be a Constraint"),
    ]
    for bad, msg in cases:
        with pytest.raises(ValueError, match=msg):
            discretize(X, 2, device="cpu", constraints=bad)
    ok = Constraint(np.full(n, 1 / n), t, hi=0.5)
    with pytest.raises(ValueError, match="refine_oracle"):
        discretize(X, 2, device="cpu", constraints=ok, refine_oracle=lambda T: np.zeros((n, len(T))))
    with pytest.raises(ValueError, match="use solver='mip'"):
        discretize(X, 2, device="cpu", constraints=ok, solver="exact")
    with pytest.raises(ValueError, match="mip_time_limit"):
        discretize(X, 2, device="cpu", solver="mip", mip_time_limit=0)
    with pytest.raises(ValueError, match=r"solver='mip': N x M = 2001 x 1000 = 2,001,000 profit entries is beyond "
                                         r"the 200,000 .* use the sinkhorn solver, which takes the same share bounds "
                                         r"and constraints, or raise mip_max_entries"):
        discretize(np.zeros((2001, 1000), dtype=np.float32), 2, device="cpu", solver="mip")


def test_mip_without_constraints_equals_enumeration():
    from coarse_gpu.discretize import enumerate_optimum

    X, _, _ = instance(6, n=120, m=10)
    for k in (2, 3):
        _, opt = enumerate_optimum(X, k)
        res = discretize(X, k, device="cpu", solver="mip")
        assert res.objective == pytest.approx(opt, rel=1e-4) and res.objective <= opt + 1e-9
        _, opt_s = enumerate_optimum(X, k, min_share=0.25, max_share=0.5)
        res = discretize(X, k, device="cpu", solver="mip", min_share=0.25, max_share=0.5)
        assert res.objective == pytest.approx(opt_s, rel=1e-4) and res.objective <= opt_s + 1e-9


def _support(t, seed, n_min=40, n=300):
    """Five randomized arms; a candidate is supported by the customers randomized to its nearest arm."""
    from coarse_gpu.discretize import Support

    arms = np.array([0, 5, 10, 15, 19])
    received = np.random.default_rng(seed).integers(len(arms), size=n)
    nearest = np.abs(t[:, None] - t[arms][None]).argmin(1)
    return Support(received, nearest, n_min), received, nearest


def test_support_per_segment_matches_the_mip():
    X, t, _ = instance(0, n=300, m=20)
    sup, received, nearest = _support(t, 0)
    free = discretize(X, 4, device="cpu", seed=0)
    ref = discretize(X, 4, device="cpu", solver="mip", support=sup, min_share=0.1)
    res = discretize(X, 4, device="cpu", seed=0, support=sup, min_share=0.1)
    for r in (ref, res):
        held = [int(np.sum(received[r.assignment == s] == nearest[r.candidate_index[s]])) for s in range(4)]
        assert min(held) >= 40 and r.info["support"]["segment_counts"] == held
        assert np.bincount(r.assignment, minlength=4).min() >= 30
    assert min(np.sum(received[free.assignment == s] == nearest[free.candidate_index[s]]) for s in range(4)) < 40
    assert res.objective <= ref.info["mip_dual_bound"] * (1 + 1e-12)
    assert res.objective >= ref.objective * (1 - 5e-4)
    assert all(d <= 0 for d in res.info["support"]["dual"])  # a floor can only cost profit


def test_bad_support_is_named():
    from coarse_gpu.discretize import Support

    X, t, _ = instance(0, n=100, m=20)
    sup, received, nearest = _support(t, 0, n=100)
    with pytest.raises(ValueError, match=r"support: customer_group must be an integer array of shape \(100,\)"):
        discretize(X, 3, device="cpu", support=Support(received[:50], nearest, 5))
    with pytest.raises(ValueError, match="support: n must be a positive integer"):
        discretize(X, 3, device="cpu", support=Support(received, nearest, 0))
    with pytest.raises(ValueError, match="only 0 candidates have at least n=60"):
        discretize(X, 3, device="cpu", support=Support(received, nearest, 60))
