"""One facility-location module: greedy, 1-swap local search and exact enumeration of F(S) = sum_i max_{m in S} P_im."""
from __future__ import annotations

from itertools import combinations

import numpy as np
import torch

from coarse_gpu.discretize import discretize, enumerate_optimum
from coarse_gpu.discretize.facility import best_subset, dense_source, greedy, local_search, total
from coarse_gpu.experiment.methods import warm_start
from coarse_gpu.policy.baselines import grid_search


def _brute(P, k):
    vals = {S: P[:, list(S)].max(1).sum() for S in combinations(range(P.shape[1]), k)}
    S = max(vals, key=lambda s: (vals[s], [-x for x in s]))
    return list(S), vals[S]


def test_exact_is_the_brute_force_optimum_and_local_search_a_local_optimum():
    rng = np.random.default_rng(0)
    for trial in range(6):
        P = rng.normal(size=(200, 9)) + rng.normal(size=(1, 9))
        p = torch.as_tensor(P)
        for k in (1, 2, 4):
            S, v = best_subset(p, k, "exact")
            S_b, v_b = _brute(P, k)
            assert np.isclose(v, v_b, rtol=1e-12) and np.isclose(total(p, S), v, rtol=1e-12)
            L, vl = local_search(p, greedy(dense_source(P), k))
            assert vl <= v + 1e-9 and np.isclose(vl, total(p, L))
            for j in range(k):  # no single swap improves a local optimum
                for c in set(range(9)) - set(L):
                    assert total(p, L[:j] + [c] + L[j + 1:]) <= vl + 1e-9


def test_greedy_takes_the_largest_gain_each_time():
    rng = np.random.default_rng(1)
    P = rng.gamma(2.0, size=(300, 12))
    chosen = greedy(dense_source(P), 4)
    assert chosen[0] == int(P.mean(0).argmax())
    best = P[:, chosen[:1]].max(1)
    for m in chosen[1:]:
        gain = np.maximum(P - best[:, None], 0).sum(0)
        assert np.isclose(gain[m], gain[[c for c in range(12) if c not in chosen[:chosen.index(m)]]].max())
        best = np.maximum(best, P[:, m])
    assert warm_start(P, chosen[:2], 4) == chosen  # the warm start across K is the same greedy


def test_grid_baseline_and_exact_solver_share_the_objective_with_ot():
    rng = np.random.default_rng(2)
    P = rng.normal(size=(400, 10))
    S, total_e = enumerate_optimum(P, 3)
    pol = grid_search(P, np.arange(10.0)[:, None], 3)
    assert pol.info["subset"] == list(S) and np.isclose(pol.info["estimated_value"] * 400, total_e)
    res = discretize(P, 3, device="cpu", solver="exact")
    assert sorted(res.candidate_index.tolist()) == list(S) and np.isclose(res.objective, total_e)
    ot = discretize(P, 3, device="cpu", seed=0)
    assert ot.objective <= total_e + 1e-9 and ot.objective >= 0.999 * total_e


def test_subset_sums_screening_finds_the_same_exact_optimum(monkeypatch):
    """Many rows on a small grid: subset sums give every F(S) at once, and exact_best through them picks
    the subset (and float64 total) that the float32 enumeration does, ties included."""
    import coarse_gpu.discretize.facility as facility

    rng = np.random.default_rng(3)
    P = rng.normal(size=(3000, 11)) + rng.normal(size=(1, 11))
    P[:, 7] = P[:, 2]  # an exactly tied pair of columns: the lexicographically first subset must win
    subs = np.array(list(combinations(range(11), 3)))
    brute = np.array([P[:, list(S)].max(1).sum() for S in subs])
    np.testing.assert_allclose(facility.subset_sums(P, subs, block=700), brute, rtol=1e-13)
    p = torch.as_tensor(P)
    enumerated = {k: best_subset(p, k, "exact") for k in (1, 3, 5)}
    monkeypatch.setattr(facility, "SUBSET_SUMS_MIN_WORK", 0)
    for k, (S, v) in enumerated.items():
        assert best_subset(p, k, "exact") == (S, v)
        assert S == _brute(P, k)[0]
