"""Properties of step 2 (coarse_gpu.discretize) on small random profit matrices, against exact references.

* the exact solver's value is the brute-force optimum over all K-subsets (itertools);
* every solver's result is self-consistent: treatments are the chosen candidates, each customer is on
  its best chosen treatment (no shares), the objective is the assignment's profit, the shares its counts;
  no heuristic beats the exact optimum;
* with share bounds, counts lie in [ceil(min_share N), floor(max_share N)] and the capacitated
  assignment's value equals the transportation LP's (scipy's HiGHS: a totally unimodular LP, so its
  optimum is integral and exact);
* relabelling the customers (a row permutation) permutes the assignment and changes nothing else.
``scripts/mutation_check.py`` plants the bugs these catch ("x9".."x12").
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from coarse_gpu.discretize import discretize
from coarse_gpu.discretize.exact import assign_with_shares

FAST = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def problems(draw, max_n=16, max_m=6):
    n = draw(st.integers(3, max_n))
    m = draw(st.integers(2, max_m))
    k = draw(st.integers(1, m))
    seed = draw(st.integers(0, 2 ** 20))
    P = np.random.default_rng(seed).normal(size=(n, m)).round(3) * 10
    return P, k


def brute_force(P: np.ndarray, k: int) -> float:
    return max(P[:, list(S)].max(1).sum() for S in itertools.combinations(range(P.shape[1]), k))


def _consistent(res, P: np.ndarray, cand: np.ndarray, shares: bool = False) -> None:
    n = P.shape[0]
    ci = np.asarray(res.candidate_index)
    k = len(ci)
    assert len(set(ci.tolist())) == k and res.treatments.shape == (k, cand.shape[1])
    np.testing.assert_array_equal(res.treatments, cand[ci])
    a = np.asarray(res.assignment)
    assert a.shape == (n,) and a.min() >= 0 and a.max() < k
    got = P[np.arange(n), ci[a]]
    assert res.objective == pytest.approx(got.sum(), abs=1e-9)
    np.testing.assert_allclose(res.shares, np.bincount(a, minlength=k) / n)
    if not shares:
        np.testing.assert_allclose(got, P[:, ci].max(1))  # each customer on its best chosen treatment


@FAST
@given(prob=problems())
def test_exact_solver_finds_the_brute_force_optimum(prob):
    P, k = prob
    cand = np.linspace(0.0, 1.0, P.shape[1])[:, None]
    res = discretize(P, k, candidates=cand, solver="exact", device="cpu")
    _consistent(res, P, cand)
    assert res.objective == pytest.approx(brute_force(P, k), abs=1e-9)


@FAST
@given(prob=problems(), solver=st.sampled_from(["lloyd", "sinkhorn"]))
def test_heuristic_solvers_are_consistent_and_never_beat_the_optimum(prob, solver):
    P, k = prob
    cand = np.c_[np.arange(P.shape[1]) * 0.1, np.arange(P.shape[1]) % 2]  # a 2-D treatment
    res = discretize(P, k, candidates=cand, solver=solver, device="cpu", dtype="float64")
    _consistent(res, P, cand)
    assert res.objective <= brute_force(P, k) + 1e-9


def lp_value(U: np.ndarray, L: int, H: int) -> float:
    """max sum_ik x_ik U_ik s.t. sum_k x_ik = 1, L <= sum_i x_ik <= H, 0 <= x <= 1 (HiGHS)."""
    n, k = U.shape
    eq = np.kron(np.eye(n), np.ones(k))  # rows: customers
    col = np.kron(np.ones(n), np.eye(k))  # rows: treatments
    res = linprog(-U.ravel(), A_ub=np.r_[col, -col], b_ub=np.r_[np.full(k, H), np.full(k, -L)],
                  A_eq=eq, b_eq=np.ones(n), bounds=(0, 1), method="highs")
    assert res.status == 0
    return -res.fun


@FAST
@given(n=st.integers(4, 30), k=st.integers(2, 4), lo=st.floats(0.0, 0.3), hi=st.floats(0.3, 1.0),
       seed=st.integers(0, 2 ** 20))
def test_capacitated_assignment_is_the_lp_optimum_within_the_integer_capacities(n, k, lo, hi, seed):
    L, H = math.ceil(lo * n - 1e-9), math.floor(hi * n + 1e-9)
    if k * L > n or k * H < n or k * lo > 1 or k * hi < 1:
        return  # infeasible bounds are refused (tested elsewhere)
    U = np.random.default_rng(seed).normal(size=(n, k)).round(3)
    a = assign_with_shares(U, min_share=lo, max_share=hi)
    c = np.bincount(a, minlength=k)
    assert np.all(c >= L) and np.all(c <= H), (c, L, H)
    assert U[np.arange(n), a].sum() == pytest.approx(lp_value(U, L, H), abs=1e-7)


@FAST
@given(prob=problems(max_n=14, max_m=5), solver=st.sampled_from(["exact", "lloyd", "sinkhorn"]),
       lo=st.sampled_from([0.1, 0.2, 0.25]))
def test_solvers_honour_share_bounds_exactly(prob, solver, lo):
    P, k = prob
    k = max(2, min(k, 3))
    if k > P.shape[1]:
        return
    n = P.shape[0]
    hi = 0.7
    if k * math.ceil(lo * n - 1e-9) > n or k * math.floor(hi * n + 1e-9) < n:
        return
    cand = np.arange(P.shape[1], dtype=float)[:, None]
    res = discretize(P, k, candidates=cand, solver=solver, device="cpu", dtype="float64", min_share=lo, max_share=hi)
    _consistent(res, P, cand, shares=True)
    counts = np.bincount(res.assignment, minlength=k)
    assert counts.min() >= math.ceil(lo * n - 1e-9) and counts.max() <= math.floor(hi * n + 1e-9), counts
    # given its K treatments, the assignment is the capacitated optimum
    U = P[:, res.candidate_index]
    assert res.objective == pytest.approx(lp_value(U, math.ceil(lo * n - 1e-9), math.floor(hi * n + 1e-9)), abs=1e-7)


@FAST
@given(prob=problems(), seed=st.integers(0, 2 ** 20))
def test_relabelling_the_customers_permutes_the_assignment_only(prob, seed):
    P, k = prob
    perm = np.random.default_rng(seed).permutation(P.shape[0])
    a = discretize(P, k, solver="exact", device="cpu")
    b = discretize(P[perm], k, solver="exact", device="cpu")
    assert b.objective == pytest.approx(a.objective, abs=1e-9)
    if len({tuple(sorted(S)) for S in itertools.combinations(range(P.shape[1]), k)
            if P[:, list(S)].max(1).sum() >= a.objective - 1e-9}) == 1:  # a unique optimum
        assert sorted(b.candidate_index.tolist()) == sorted(a.candidate_index.tolist())
        ta = a.treatments[a.assignment]
        np.testing.assert_array_equal(b.treatments[b.assignment], ta[perm])
