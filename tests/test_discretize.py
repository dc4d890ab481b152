"""coarse_gpu.discretize: exactness against brute force, Sinkhorn marginals, shares, lazy paths, refinement."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from coarse_gpu.discretize import (
    FactoredProfit,
    assign_with_shares,
    certify,
    discretize,
    entropic_plan,
    enumerate_optimum,
    keops_available,
    share_counts,
)
from coarse_gpu.discretize import exact as exact_mod

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def smooth_instance(seed: int, n: int = 200, m: int = 12, noise: float = 0.05) -> np.ndarray:
    """Heterogeneous concave profit curves over a 1-D grid (ideal points, curvatures, levels) plus noise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, m)
    ideal = rng.beta(2.0, 3.0, n)
    curv = rng.uniform(0.5, 3.0, n)
    base = rng.normal(10.0, 1.0, n)
    return base[:, None] - 5.0 * curv[:, None] * (t[None, :] - ideal[:, None]) ** 2 + noise * rng.normal(size=(n, m))


def factored_instance(seed: int, n: int = 3000, m: int = 40, a: int = 6):
    """Smooth low-rank profits V @ W.T: customers' values at a basis points, candidates as tent weights."""
    rng = np.random.default_rng(seed)
    basis = np.linspace(0.0, 1.0, a)
    ideal = rng.beta(2.0, 3.0, n)
    curv = rng.uniform(0.5, 3.0, n)
    V = 10.0 - 5.0 * curv[:, None] * (basis[None, :] - ideal[:, None]) ** 2 + 0.05 * rng.normal(size=(n, a))
    t = np.linspace(0.0, 1.0, m)
    W = np.maximum(0.0, 1.0 - np.abs(t[:, None] - basis[None, :]) * (a - 1))  # linear interpolation weights
    return V, W, t[:, None]


# ---------------------------------------------------------------------------------------------------
# exactness on small instances
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver,opts", [("sinkhorn", {}), ("sinkhorn", {"greedy_seed": False}), ("lloyd", {})],
                         ids=["sinkhorn", "sinkhorn-no-greedy", "lloyd"])
def test_matches_brute_force_optimum(solver, opts):
    for seed in range(4):
        X = smooth_instance(seed)
        for k in (2, 3, 4):
            _, opt = enumerate_optimum(X, k)
            res = discretize(X, k, solver=solver, seed=seed, device="cpu", **opts)
            assert res.objective <= opt + 1e-9 * abs(opt)
            assert res.objective >= opt - 1e-3 * abs(opt), (seed, k, res.objective, opt)
            # the reported objective is the value of the returned assignment
            rows = np.arange(X.shape[0])
            assert res.objective == pytest.approx(X[rows, res.candidate_index[res.assignment]].sum(), rel=1e-12)
            assert res.treatments.shape == (k, 1) and res.assignment.dtype == np.int64
            assert set(np.unique(res.assignment)) <= set(range(k))


def test_sinkhorn_exact_on_noisy_tables_and_never_below_lloyd():
    for seed in range(3):
        X = smooth_instance(seed, noise=0.3)
        for k in (3, 4):
            _, opt = enumerate_optimum(X, k)
            s = discretize(X, k, solver="sinkhorn", seed=seed, device="cpu")
            l = discretize(X, k, solver="lloyd", seed=seed, device="cpu")
            assert s.objective >= l.objective - 1e-9 * abs(l.objective)
            assert s.objective >= opt - 1e-4 * abs(opt)
            # the large-problem default: the annealed solution in place of the greedy-seeded restart
            a = discretize(X, k, solver="sinkhorn", seed=seed, device="cpu", greedy_seed=False)
            assert len(a.info["restart_objectives"]["lloyd"]) == 7 and len(a.info["restart_objectives"]["sinkhorn"]) == 1
            # the seven k-means++ restarts are Lloyd's restarts 1..7, the same seeds
            assert a.info["restart_objectives"]["lloyd"] == pytest.approx(l.info["restart_objectives"]["lloyd"][1:], rel=1e-12)
            assert a.objective >= opt - 1e-4 * abs(opt), (seed, k, a.objective, opt)


def test_dominated_candidates_converge_without_cycling():
    """K above the number of distinct ideal points: a treatment nobody wants stays empty, no re-seed loop.

    Regression: a model interpolating between 3 arms puts every ideal point on an arm; at K=4 one
    treatment is empty, no candidate has a positive gain, and re-seeding it cycled to max_iter.
    """
    rng = np.random.default_rng(0)
    good = rng.normal(0.0, 1.0, (500, 3))
    X = np.concatenate([good, good - 1.0, good - 2.0], 1)  # columns 3..8 strictly dominated
    _, opt = enumerate_optimum(X, 4)
    for solver in ("lloyd", "sinkhorn"):
        res = discretize(X, 4, solver=solver, seed=0, device="cpu", n_restarts=4)
        assert res.objective == pytest.approx(opt, rel=1e-9)
        assert set(res.candidate_index[:]) >= {0, 1, 2}
        per_restart = max(sum(1 for r in res.trace if r["phase"] == "lloyd" and r["restart"] == i) for i in range(4))
        assert per_restart <= 5, per_restart  # converged, not max_iter (100) iterations


def test_exact_solver_and_enumeration():
    X = smooth_instance(7, n=60, m=9)
    best, val = enumerate_optimum(X, 3)
    naive = max(
        (X[:, list(S)].max(1).sum(), S) for S in __import__("itertools").combinations(range(9), 3)
    )
    assert val == pytest.approx(naive[0]) and tuple(best) == naive[1]
    res = discretize(X, 3, solver="exact", device="cpu")
    assert sorted(res.candidate_index.tolist()) == sorted(best.tolist())
    assert res.objective == pytest.approx(val)
    # many subsets are enumerated in chunks: C(30, 4) = 27405
    Y = smooth_instance(1, n=50, m=30)
    best, val = enumerate_optimum(Y, 4)
    assert val >= discretize(Y, 4, solver="lloyd", device="cpu").objective - 1e-9


def test_planted_types_recovered():
    rng = np.random.default_rng(0)
    m, k, per = 20, 4, 150
    planted = np.array([2, 7, 12, 17])
    types = np.repeat(np.arange(k), per)
    X = rng.normal(0.0, 0.1, size=(k * per, m))
    X[np.arange(k * per), planted[types]] += 5.0
    for solver in ("sinkhorn", "lloyd"):
        res = discretize(X, k, solver=solver, device="cpu", seed=1)
        assert sorted(res.candidate_index.tolist()) == planted.tolist()
        assert np.array_equal(res.candidate_index[res.assignment], planted[types])
        assert np.allclose(np.sort(res.shares), 0.25)


# ---------------------------------------------------------------------------------------------------
# the entropic plan
# ---------------------------------------------------------------------------------------------------
def test_entropic_plan_marginals_and_share_box():
    rng = np.random.default_rng(3)
    U = torch.as_tensor(rng.normal(size=(500, 4)) + np.array([1.0, 0.0, 0.0, -1.0]))
    N = U.shape[0]
    P, g, err, _ = entropic_plan(U, 0.2)
    assert torch.allclose(P.sum(1), torch.full((N,), 1.0 / N, dtype=P.dtype))
    assert torch.allclose(g, torch.zeros_like(g))  # free masses: no column potentials
    lo, hi = 0.2, 0.3
    P, g, err, n_iter = entropic_plan(U, 0.05, lo, hi, tol=1e-9, max_iter=5000)
    assert torch.allclose(P.sum(1), torch.full((N,), 1.0 / N, dtype=P.dtype), rtol=1e-10)
    s = P.sum(0)
    assert float(s.min()) >= lo - 1e-8 and float(s.max()) <= hi + 1e-8
    assert float(err) <= 1e-8
    # complementary slackness: g > 0 only at the lower bound, g < 0 only at the upper bound
    for k in range(4):
        if g[k] > 1e-8:
            assert float(s[k]) == pytest.approx(lo, abs=1e-7)
        if g[k] < -1e-8:
            assert float(s[k]) == pytest.approx(hi, abs=1e-7)
    # batched over restarts: the same plan for every copy
    Pb, gb, errb, _ = entropic_plan(torch.stack([U, U], 1), 0.05, lo, hi, tol=1e-9, max_iter=5000)
    assert torch.allclose(Pb[:, 1], P, atol=1e-10) and torch.allclose(gb[0], g, atol=1e-8)


def test_entropic_objective_converges_to_exact_as_eps_to_zero():
    X = smooth_instance(2)
    gaps = []
    for eps in (0.3, 0.03, 0.003):
        res = discretize(X, 3, epsilon=eps, seed=0, device="cpu", dtype="float64")
        assert res.entropic_objective <= res.objective + 1e-9 * abs(res.objective)  # soft <= hard (no shares)
        gaps.append(abs(res.objective - res.entropic_objective) / abs(res.objective))
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-4
    # with shares the entropic value converges to the exact capacitated value
    gaps = []
    for eps in (0.3, 0.03, 0.003):
        res = discretize(X, 3, epsilon=eps, min_share=0.3, seed=0, device="cpu", dtype="float64")
        gaps.append(abs(res.objective - res.entropic_objective) / abs(res.objective))
    assert gaps[2] < gaps[0] and gaps[2] < 1e-4


# ---------------------------------------------------------------------------------------------------
# share constraints
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["sinkhorn", "lloyd"])
def test_share_constraints_exact(solver):
    for seed, (k, lo, hi) in enumerate([(2, 0.4, 0.55), (3, 0.2, 0.4), (4, 0.2, 0.3)]):
        X = smooth_instance(seed)
        N = X.shape[0]
        res = discretize(X, k, min_share=lo, max_share=hi, solver=solver, seed=seed, device="cpu")
        counts = np.bincount(res.assignment, minlength=k)
        assert counts.min() >= math.ceil(lo * N) and counts.max() <= math.floor(hi * N)
        assert np.allclose(res.shares, counts / N)
        assert res.info["share_assignment_certified_optimal"]
        _, opt = enumerate_optimum(X, k, min_share=lo, max_share=hi)
        assert opt - 1e-3 * abs(opt) <= res.objective <= opt + 1e-9 * abs(opt)
        if solver == "sinkhorn":  # the final plan (warm-started from the LP prices) honours the box
            assert res.info["final_marginal_error"] <= 1e-6
            cold, _, err, _ = entropic_plan(torch.as_tensor(X[:, res.candidate_index]),
                                            res.info["epsilon_abs"], lo, hi, tol=1e-9, max_iter=20000)
            assert float(err) <= 1e-8
            assert res.entropic_objective == pytest.approx(
                float((cold * torch.as_tensor(X[:, res.candidate_index])).sum()) * N, rel=1e-5)
        # binding: the unconstrained optimum would violate the box for at least one instance type
        assert res.trace and all("objective" in t for t in res.trace)


def _linprog_value(U, L, H):
    import scipy.sparse as sp
    from scipy.optimize import linprog

    N, K = U.shape
    cols = np.arange(N * K)
    A_eq = sp.csr_matrix((np.ones(N * K), (np.repeat(np.arange(N), K), cols)), shape=(N, N * K))
    A_col = sp.csr_matrix((np.ones(N * K), (np.tile(np.arange(K), N), cols)), shape=(K, N * K))
    res = linprog(-U.ravel(), A_ub=sp.vstack([A_col, -A_col]), b_ub=np.r_[H, -L], A_eq=A_eq, b_eq=np.ones(N),
                  bounds=(0, None), method="highs")
    return -res.fun


def test_assign_with_shares_matches_linprog_and_restricted_path(monkeypatch):
    rng = np.random.default_rng(5)
    U = rng.normal(size=(300, 4)) + np.array([0.8, 0.0, 0.0, -0.8])
    L, H = share_counts(300, 4, 0.2, 0.3)
    a, g = assign_with_shares(U, 0.2, 0.3, return_prices=True)
    counts = np.bincount(a, minlength=4)
    assert counts.min() >= 60 and counts.max() <= 90
    val = U[np.arange(300), a].sum()
    assert val == pytest.approx(_linprog_value(U, L, H), rel=1e-9)
    # the prices certify it: every customer takes a best priced column
    assert np.all(U[np.arange(300), a] + g[a] >= (U + g).max(1) - 1e-9)
    # restricted problem (ambiguous customers only) + certificate, forced on a small instance
    monkeypatch.setattr(exact_mod, "_EMD_FULL_MAX", 50)
    monkeypatch.setattr(exact_mod, "_AMBIGUOUS0", 20)
    a2 = assign_with_shares(U, 0.2, 0.3)
    assert U[np.arange(300), a2].sum() == pytest.approx(val, rel=1e-12)
    assert certify(U, a2, L, H)[0]
    # a non-optimal assignment fails the certificate
    bad = a2.copy()
    i, j = np.flatnonzero(bad == 0)[0], np.flatnonzero(bad == 1)[0]
    bad[i], bad[j] = 1, 0
    if U[i, 1] + U[j, 0] < U[i, 0] + U[j, 1] - 1e-9:
        assert not certify(U, bad, L, H)[0]


# ---------------------------------------------------------------------------------------------------
# profit sources: chunked dense, factored (torch / KeOps), oracle
# ---------------------------------------------------------------------------------------------------
def test_chunked_dense_path_equals_resident():
    X = smooth_instance(4, n=2000, m=30)
    dense = discretize(X, 4, seed=0, device="cpu")
    small = discretize(X, 4, seed=0, device="cpu", memory_limit_bytes=50_000)
    assert dense.info["path"] == "dense" and small.info["path"] == "dense-chunked"
    assert np.array_equal(dense.candidate_index, small.candidate_index)
    assert small.objective == pytest.approx(dense.objective, rel=1e-9)


def test_subsample_search_then_full_polish_matches_full_search():
    """Large-N path: search on a sample, exact Lloyd polish on everyone; same optimum as the full search."""
    V, W, cand = factored_instance(3, n=12000, m=16)
    X = V @ W.T
    for k in (3, 5):
        _, opt = enumerate_optimum(X, k)
        full = discretize(FactoredProfit(V, W), k, candidates=cand, seed=0, device="cpu", subsample=None)
        sub = discretize(FactoredProfit(V, W), k, candidates=cand, seed=0, device="cpu", subsample=1500)
        dense_sub = discretize(X, k, candidates=cand, seed=0, device="cpu", subsample=1500)
        assert "subsample" not in full.info and sub.info["subsample"] == 1500 == dense_sub.info["subsample"]
        for res in (full, sub, dense_sub):
            assert opt * (1 - 1e-3) <= res.objective <= opt * (1 + 1e-9), (k, res.objective, opt)
        # the polish ran on all customers: the returned assignment is every customer's best chosen column
        assert sub.objective == pytest.approx(X[:, sub.candidate_index].max(1).sum(), rel=1e-9)
        assert sub.info["objective_after_full_polish"] == pytest.approx(sub.objective, rel=1e-5)
    with pytest.raises(ValueError, match="subsample must be"):
        discretize(X, 3, candidates=cand, device="cpu", subsample=0)


def test_large_search_skips_greedy_seed_and_still_matches_lloyd():
    """N x M >= 2**22: sinkhorn anneals (on a 16k sample) instead of the greedy seed, draws its k-means++
    seeds on that sample, and still reaches at least Lloyd's objective with its full seeding."""
    V, W, cand = factored_instance(5, n=70000, m=64)
    fp = FactoredProfit(V, W)
    for k in (3, 5):
        s = discretize(fp, k, candidates=cand, seed=0, device="cpu")
        l = discretize(fp, k, candidates=cand, seed=0, device="cpu", solver="lloyd")
        g = discretize(fp, k, candidates=cand, seed=0, device="cpu", greedy_seed=True)
        assert len(s.info["restart_objectives"]["lloyd"]) == 7 and len(s.info["restart_objectives"]["sinkhorn"]) == 1
        assert len(g.info["restart_objectives"]["lloyd"]) == 8  # forced: the small-search behaviour
        assert s.objective >= l.objective * (1 - 1e-9), (k, s.objective, l.objective)
        assert g.objective >= l.objective * (1 - 1e-9)
        anneal_rows = {r["rows"] for r in s.trace if r["phase"] == "anneal"}
        assert anneal_rows == {16384}  # the whole annealing ran on the sample
    with pytest.raises(ValueError, match="greedy_seed must be"):
        discretize(V[:100] @ W.T, 2, device="cpu", greedy_seed="yes")


def test_two_level_search_runs_restarts_on_the_sample_and_polishes_the_best_on_all():
    """Large search: every restart runs on the 16k annealing sample, only the n_swap best distinct
    ones are polished on all the search's customers; the result is still a fixed point there and at
    least Lloyd's objective on this instance (as with the restarts on all customers)."""
    V, W, cand = factored_instance(5, n=70000, m=64)
    fp = FactoredProfit(V, W)
    X = V @ W.T
    for k in (3, 5):
        s = discretize(fp, k, candidates=cand, seed=0, device="cpu")
        one = discretize(fp, k, candidates=cand, seed=0, device="cpu", coarse_restarts=False)
        l = discretize(fp, k, candidates=cand, seed=0, device="cpu", solver="lloyd")
        phases = {}
        for r in s.trace:
            phases.setdefault(r["phase"], set()).add(r["restart"])
        assert phases["lloyd-coarse"] == set(range(1, 8)) and phases["polish-coarse"] == {0}
        assert phases["anneal"] == {0} and 1 <= len(phases["polish"]) <= 2  # n_swap = 2 kept
        assert "lloyd" not in phases  # no k-means++ restart iterated on all 70k customers
        # N M < 2**24: Lloyd's greedy restart (its K passes are cheap here) also runs on all customers,
        # as restart 8, so the result is at least Lloyd's restart 0
        assert phases["greedy"] == {8}
        assert s.info["restart_objectives"]["greedy"][0] == pytest.approx(l.info["restart_objectives"]["lloyd"][0], rel=1e-7)
        assert s.objective >= l.info["restart_objectives"]["lloyd"][0] * (1 - 1e-7)  # float32 restart sums
        assert "greedy" not in {r["phase"] for r in discretize(fp, k, candidates=cand, seed=0, device="cpu",
                                                                 greedy_seed=False).trace}
        assert "lloyd" in {r["phase"] for r in one.trace}  # coarse_restarts=False: the one-level search
        assert s.objective >= l.objective * (1 - 1e-9), (k, s.objective, l.objective)
        # a Lloyd fixed point on all customers: every customer on its best chosen column, and no other
        # set of K distinct candidates serves the same segments better (the location step's assignment)
        from scipy.optimize import linear_sum_assignment

        U = X[:, s.candidate_index]
        assert np.array_equal(s.assignment, U.argmax(1))
        S = np.stack([X[s.assignment == c].sum(0) for c in range(k)])  # (K, M) segment profit at each candidate
        rows, cols = linear_sum_assignment(S, maximize=True)
        assert S[np.arange(k), s.candidate_index].sum() >= S[rows, cols].sum() * (1 - 1e-6)


def test_dense_segment_sums_rows_and_panels_equal_the_plain_products():
    """The CPU shortcuts of DenseSource (index_add_ segment sums, numpy row gathers, column panels) give
    the same numbers as the one-hot product / torch indexing they replace."""
    from coarse_gpu.discretize.profit import DenseSource, ProfitSource

    gen = torch.Generator().manual_seed(0)
    for n, m, r in [(3000, 512, 1), (2000, 1024, 2), (2000, 300, 1), (1000, 64, 3)]:
        X = torch.randn(n, m, generator=gen, dtype=torch.float64)
        src = DenseSource(X, torch.device("cpu"), torch.float64, 1 << 30)
        A = torch.randint(0, 4, (n, r), generator=gen)
        onehot = torch.nn.functional.one_hot(A, 4).to(torch.float64)  # (n, r, 4)
        want = torch.einsum("nrk,nm->rkm", onehot, X)
        torch.testing.assert_close(src.segment_scores(A, 4), want, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(ProfitSource.segment_scores(src, A, 4), want, rtol=1e-12, atol=1e-9)
        P = torch.rand(n, 7, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(src.scores(P), P.T @ X, rtol=1e-12, atol=1e-9)
        idx = np.sort(np.random.default_rng(0).choice(n, 100, replace=False))
        assert torch.equal(src.rows(idx).X, X[torch.as_tensor(idx)])
        rows, cols = torch.as_tensor(idx), torch.tensor([5, 1, 3])
        assert torch.equal(src.submatrix(rows, cols), X[rows][:, cols])
        assert torch.equal(src.submatrix(rows, torch.arange(m)), X[rows])


def test_swap_values_equal_brute_force():
    """G[k, m] = total profit after replacing treatment k by candidate m, for every (k, m) pair."""
    from coarse_gpu.discretize.profit import swap_values

    gen = torch.Generator().manual_seed(0)
    for n, m, k in [(3000, 30, 4), (700, 9, 1), (2000, 12, 2)]:
        X = torch.randn(n, m, generator=gen, dtype=torch.float64)
        C = torch.randperm(m, generator=gen)[:k].tolist()
        G = swap_values(X, X[:, C])
        assert G.shape == (k, m)
        for j in range(k):
            for c in range(m):
                cols = C[:j] + C[j + 1:] + [c]
                assert float(G[j, c]) == pytest.approx(float(X[:, cols].max(1).values.sum()), rel=1e-12, abs=1e-9)


def test_factored_equals_dense_and_lazy_reductions():
    V, W, cand = factored_instance(0)
    X = V @ W.T
    dense = discretize(X, 4, candidates=cand, seed=0, device="cpu", dtype="float64")
    fac = discretize(FactoredProfit(V, W), 4, candidates=cand, seed=0, device="cpu", dtype="float64",
                     memory_limit_bytes=100_000)
    assert fac.info["path"] == "factored-torch"
    assert np.array_equal(dense.candidate_index, fac.candidate_index)
    assert np.array_equal(dense.assignment, fac.assignment)
    assert fac.objective == pytest.approx(dense.objective, rel=1e-12)
    np.testing.assert_allclose(fac.treatments, dense.treatments)
    # new customers: assign() accepts (N', K), (N', M) and FactoredProfit
    assert np.array_equal(fac.assign(X[:50]), fac.assignment[:50])
    assert np.array_equal(fac.assign(X[:50, fac.candidate_index]), fac.assignment[:50])
    assert np.array_equal(fac.assign(FactoredProfit(V[:50], W)), fac.assignment[:50])


@pytest.mark.skipif(not keops_available(), reason="pykeops not installed")
def test_factored_keops_path_equals_dense():
    V, W, cand = factored_instance(1, n=2000, m=32)
    ref = discretize(V @ W.T, 3, candidates=cand, seed=0, device="cpu", dtype="float64", n_restarts=3)
    fac = discretize(FactoredProfit(V, W), 3, candidates=cand, seed=0, device="cpu", dtype="float64",
                     n_restarts=3, lazy="keops")
    assert fac.info["path"] == "factored-keops"
    assert np.array_equal(ref.candidate_index, fac.candidate_index)
    assert fac.objective == pytest.approx(ref.objective, rel=1e-10)


def test_oracle_equals_dense_both_paths():
    V, W, cand = factored_instance(2, n=1500, m=25)
    X = V @ W.T
    t = torch.as_tensor(cand[:, 0])
    Vt = torch.as_tensor(V)
    calls = []

    def oracle(T):  # tent interpolation at arbitrary treatments, (N, T)
        calls.append(T.shape[0])
        basis = torch.linspace(0.0, 1.0, V.shape[1], dtype=torch.float64)
        w = torch.clamp(1.0 - (T[:, :1] - basis[None, :]).abs() * (V.shape[1] - 1), min=0.0)
        return Vt @ w.T

    np.testing.assert_allclose(oracle(torch.as_tensor(cand)).numpy(), X, rtol=1e-12)
    dense = discretize(X, 3, candidates=cand, seed=0, device="cpu", dtype="float64")
    orc = discretize(oracle, 3, candidates=cand, seed=0, device="cpu", dtype="float64")
    lazy = discretize(oracle, 3, candidates=cand, seed=0, device="cpu", dtype="float64", memory_limit_bytes=60_000)
    assert orc.info["path"] == "oracle-dense" and lazy.info["path"] == "oracle-chunked"
    for r in (orc, lazy):
        assert np.array_equal(r.candidate_index, dense.candidate_index)
        assert r.objective == pytest.approx(dense.objective, rel=1e-12)
    assert max(calls) <= 25 and t.numel() == 25


# ---------------------------------------------------------------------------------------------------
# continuous refinement
# ---------------------------------------------------------------------------------------------------
def test_refine_moves_treatments_off_grid_on_a_smooth_2d_profit():
    rng = np.random.default_rng(0)
    centers = np.array([[0.37, 0.61], [0.81, 0.16], [0.12, 0.88]])
    types = rng.integers(0, 3, 600)
    ideal = centers[types] + 0.03 * rng.normal(size=(600, 2))
    curv = rng.uniform(1.0, 2.0, 600)
    ideal_t = torch.as_tensor(ideal)
    curv_t = torch.as_tensor(curv)

    def oracle(T):
        T = torch.as_tensor(T, dtype=torch.float64)
        d2 = ((ideal_t[:, None, :] - T[None, :, :]) ** 2).sum(-1)
        return 10.0 - curv_t[:, None] * d2

    g = np.linspace(0.0, 1.0, 5)
    cand = np.array([(x, y) for x in g for y in g])
    X = oracle(torch.as_tensor(cand)).numpy()
    grid = discretize(X, 3, candidates=cand, seed=0, device="cpu")
    ref = discretize(X, 3, candidates=cand, seed=0, device="cpu", refine_oracle=oracle,
                     bounds=(np.zeros(2), np.ones(2)))
    assert ref.objective > grid.objective + 1.0
    assert np.all(ref.candidate_index == -1)
    assert any(t["phase"] == "refine" for t in ref.trace)
    # each treatment lands on its segment's curvature-weighted mean ideal point (the continuous optimum)
    for k in range(3):
        seg = ref.assignment == k
        target = (curv[seg, None] * ideal[seg]).sum(0) / curv[seg].sum()
        assert np.abs(ref.treatments[k] - target).max() < 2e-3
    U = oracle(torch.as_tensor(ref.treatments)).numpy()
    assert ref.objective == pytest.approx(U[np.arange(600), ref.assignment].sum(), rel=1e-12)
    with pytest.raises(ValueError, match="on the grid"):
        ref.assign(X)  # off-grid treatments cannot be scored by the candidate matrix


# ---------------------------------------------------------------------------------------------------
# input errors
# ---------------------------------------------------------------------------------------------------
def test_input_errors():
    X = smooth_instance(0, n=50, m=6)
    with pytest.raises(ValueError, match="n_anneal"):
        discretize(X, 2, device="cpu", n_anneal=0)
    # the finite check sums first: a huge but finite table (its float32 sum overflows) is accepted,
    # a single NaN among huge values is still caught
    big = np.full((400, 6), 5e35, dtype=np.float32)
    big[np.arange(400), np.arange(400) % 6] = 5.1e35
    assert discretize(big, 2, device="cpu", n_restarts=1).k == 2
    big[17, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        discretize(big, 2, device="cpu", n_restarts=1)
    with pytest.raises(ValueError, match="k must"):
        discretize(X, 0, device="cpu")
    with pytest.raises(ValueError, match="k must"):
        discretize(X, 7, device="cpu")
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        discretize(bad, 2, device="cpu")
    with pytest.raises(ValueError, match="candidates"):
        discretize(X, 2, candidates=np.zeros((5, 1)), device="cpu")
    with pytest.raises(ValueError, match="min_share"):
        discretize(X, 3, min_share=0.4, device="cpu")
    with pytest.raises(ValueError, match="max_share"):
        discretize(X, 3, max_share=0.3, device="cpu")
    with pytest.raises(ValueError, match="solver"):
        discretize(X, 2, solver="magic", device="cpu")
    with pytest.raises(ValueError, match="unknown option"):
        discretize(X, 2, device="cpu", n_restart=3)
    with pytest.raises(ValueError, match="dtype"):
        discretize(X, 2, device="cpu", dtype="float16")
    with pytest.raises(ValueError, match="epsilon"):
        discretize(X, 2, device="cpu", epsilon=-1.0)
    with pytest.raises(ValueError, match="candidates must be given"):
        discretize(lambda T: X[:, : T.shape[0]], 2, device="cpu")
    with pytest.raises(ValueError, match="shapes mismatch"):
        discretize(FactoredProfit(np.ones((10, 3)), np.ones((5, 4))), 2, device="cpu")
    with pytest.raises(ValueError, match="profit"):
        discretize(np.ones(10), 2, device="cpu")
    with pytest.raises(ValueError, match="init"):
        discretize(X, 2, device="cpu", init=[1, 1])
    with pytest.raises(ValueError, match="columns"):
        discretize(X, 2, device="cpu").assign(np.ones((4, 3)))
    with pytest.raises(ValueError, match="min_share"):
        assign_with_shares(X[:, :3], min_share=0.5)


# ---------------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@cuda
def test_cuda_matches_cpu():
    V, W, cand = factored_instance(3, n=20000, m=64)
    cpu = discretize(FactoredProfit(V, W), 4, candidates=cand, device="cpu", dtype="float64")
    gpu = discretize(FactoredProfit(V, W), 4, candidates=cand, device="cuda", dtype="float64")
    dense = discretize(V @ W.T, 4, candidates=cand, device="cuda", dtype="float64")
    assert np.array_equal(cpu.candidate_index, gpu.candidate_index)
    assert gpu.objective == pytest.approx(cpu.objective, rel=1e-10)
    assert dense.objective == pytest.approx(cpu.objective, rel=1e-10)
    shares = discretize(FactoredProfit(V, W), 4, candidates=cand, device="cuda", min_share=0.2, max_share=0.3)
    counts = np.bincount(shares.assignment, minlength=4)
    assert counts.min() >= 4000 and counts.max() <= 6000
