"""Baseline policies: exactness of the grid search, recovery of planted segments, bounds, errors."""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from coarse_gpu.policy import (
    Policy,
    estimated_value,
    full_personalization,
    grid_search,
    kmeans_features,
    kmeans_preferences,
    kmeans_profiles,
    single_best,
)


def brute_force(profit: np.ndarray, k: int) -> tuple[tuple[int, ...], float]:
    best, val = None, -np.inf
    for S in combinations(range(profit.shape[1]), k):
        v = profit[:, list(S)].max(axis=1).sum()
        if v > val:
            best, val = S, v
    return best, val


def random_profit(n: int, g: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # customers of a few latent types plus noise: realistic structure with near-ties
    types = rng.normal(size=(4, g))
    return types[rng.integers(0, 4, n)] + 0.5 * rng.normal(size=(n, g))


# ---------------------------------------------------------------------------------------------
# grid search
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 8])
def test_grid_search_equals_brute_force(k):
    p = random_profit(300, 9, seed=k)
    grid = np.stack([np.arange(9.0), np.arange(9.0) ** 2], axis=1)
    pol = grid_search(p, grid, k)
    S, val = brute_force(p, k)
    assert pol.info["method"] == "exact"
    assert tuple(pol.info["subset"]) == S
    np.testing.assert_allclose(pol.treatments, grid[list(S)])
    assert pol.k == k
    # each customer gets its best treatment within S, and the reported value is the objective
    np.testing.assert_array_equal(pol.assignment, p[:, list(S)].argmax(axis=1))
    assert pol.info["estimated_value"] * len(p) == pytest.approx(val, rel=1e-12)
    assert estimated_value(p, pol) == pytest.approx(val / len(p), rel=1e-12)


def test_grid_search_exact_beyond_float32_precision():
    # differences of a few float32 ulps: the float32 screening reorders some subsets, so it must
    # hand every near-tie to the float64 rescoring (without it ~10% of these instances go wrong)
    for seed in range(60):
        rng = np.random.default_rng(seed)
        p = 1.0 + 3e-7 * rng.random((8, 5))
        for k in (1, 2):
            pol = grid_search(p, np.arange(5.0)[:, None], k)
            S, val = brute_force(p, k)
            assert p[:, pol.info["subset"]].max(axis=1).sum() == val, (seed, k)


def test_grid_search_beats_greedy_where_greedy_fails():
    # half the customers love g1, half love g2, everyone likes the compromise g0 moderately:
    # greedy takes g0 first and is stuck at 0.8; the best pair {g1, g2} earns 1.0.
    p = np.array([[0.6, 1.0, 0.0]] * 50 + [[0.6, 0.0, 1.0]] * 50)
    grid = np.array([[0.0], [1.0], [2.0]])
    greedy = grid_search(p, grid, 2, method="greedy")
    exact = grid_search(p, grid, 2, method="exact")
    local = grid_search(p, grid, 2, method="local")
    assert estimated_value(p, greedy) == pytest.approx(0.8)
    assert estimated_value(p, exact) == pytest.approx(1.0)
    assert estimated_value(p, local) == pytest.approx(1.0)
    assert exact.info["subset"] == [1, 2]


def test_grid_search_local_search_on_large_instance():
    p = random_profit(400, 30, seed=3)
    grid = np.arange(30.0)[:, None]
    k = 4  # C(30, 4) = 27405 > 20000: auto switches to local search
    auto = grid_search(p, grid, k, seed=1)
    assert auto.info["method"] == "local"
    exact = grid_search(p, grid, k, method="exact")
    greedy = grid_search(p, grid, k, method="greedy")
    _, val = brute_force(p, k)
    assert exact.info["estimated_value"] * 400 == pytest.approx(val, rel=1e-12)
    assert estimated_value(p, greedy) <= estimated_value(p, auto) + 1e-12
    assert estimated_value(p, auto) <= estimated_value(p, exact) + 1e-12
    assert estimated_value(p, auto) >= estimated_value(p, exact) - 0.01 * abs(estimated_value(p, exact))


def test_grid_search_k_equal_and_above_grid_size():
    p = random_profit(50, 5, seed=0)
    grid = np.arange(5.0)[:, None]
    pol = grid_search(p, grid, 5)
    assert pol.k == 5 and estimated_value(p, pol) == pytest.approx(p.max(axis=1).mean())
    with pytest.raises(ValueError, match="k=6 exceeds"):
        grid_search(p, grid, 6)


def test_single_best_equals_grid_search_k1():
    p = random_profit(500, 12, seed=4)
    cand = np.stack([np.linspace(0, 0.5, 12), np.linspace(0, 4, 12)], axis=1)
    one = single_best(p, cand)
    g1 = grid_search(p, cand, 1)
    np.testing.assert_array_equal(one.treatments, g1.treatments)
    assert one.k == 1 and np.all(one.assignment == 0)
    assert estimated_value(p, one) == pytest.approx(p.mean(axis=0).max())


# ---------------------------------------------------------------------------------------------
# segmentation baselines
# ---------------------------------------------------------------------------------------------
def planted_features(n=1500, seed=0):
    """3 segments well separated in 2 of 6 features; segment s wants candidate best[s]."""
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, 3, n)
    centers = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    X = np.hstack([centers[seg] + rng.normal(size=(n, 2)), 0.3 * rng.normal(size=(n, 4))])
    cand = np.stack([np.linspace(0.0, 0.5, 11), np.linspace(0.0, 4.0, 11)], axis=1)
    best = np.array([1, 5, 9])
    m = np.arange(11)
    profit = 10.0 - (m[None, :] - best[seg][:, None]) ** 2 + rng.normal(scale=0.5, size=(n, 11))
    return X, profit, cand, seg, best


def test_kmeans_features_recovers_planted_segments():
    X, profit, cand, seg, best = planted_features()
    pol = kmeans_features(X, profit, cand, 3, seed=0)
    assert pol.k == 3 and pol.name == "kmeans_features"
    assert adjusted_rand_score(seg, pol.assignment) > 0.99
    # each recovered segment gets its planted best treatment
    for s in range(3):
        members = pol.assignment == s
        planted = np.bincount(seg[members]).argmax()
        np.testing.assert_allclose(pol.treatments[s], cand[best[planted]])
    assert pol.info["empty_segments"] == []


def test_kmeans_features_ignores_feature_units():
    # standardization: multiplying a feature by 1000 must not change the segments
    X, profit, cand, seg, _ = planted_features(seed=1)
    X2 = X.copy()
    X2[:, 3] *= 1000.0
    pol = kmeans_features(X2, profit, cand, 3, seed=0)
    assert adjusted_rand_score(seg, pol.assignment) > 0.99


def test_kmeans_preferences_recovers_planted_preference_clusters():
    rng = np.random.default_rng(5)
    cand = np.array([[d, s] for d in np.linspace(0, 0.5, 11) for s in np.linspace(0, 4, 9)])
    span = np.array([0.5, 4.0])
    ideal = np.array([[0.05, 0.5], [0.25, 3.5], [0.45, 1.5]])
    n = 1200
    seg = rng.integers(0, 3, n)
    t_star = ideal[seg] + rng.normal(scale=0.02, size=(n, 2)) * span
    # quadratic profit peaked at each customer's own ideal point (scaled units)
    dist = (((cand[None, :, :] - t_star[:, None, :]) / span) ** 2).sum(axis=2)
    profit = 5.0 - 20.0 * dist
    pol = kmeans_preferences(profit, cand, 3, seed=0, scale=span)
    assert pol.k == 3
    assert adjusted_rand_score(seg, pol.assignment) > 0.99
    for s in range(3):
        planted = np.bincount(seg[pol.assignment == s]).argmax()
        # the segment's treatment is the candidate nearest to the planted ideal point
        nearest = cand[np.argmin((((cand - ideal[planted]) / span) ** 2).sum(axis=1))]
        np.testing.assert_allclose(pol.treatments[s], nearest)
        np.testing.assert_allclose(pol.info["centroids"][s], ideal[planted], atol=0.05 * span.max())


def test_kmeans_preferences_scale_matters():
    # without scaling, the duration axis (range 4) would dominate the discount axis (range 0.5);
    # clusters separated only along discount are recovered only when both are put on a common scale
    rng = np.random.default_rng(2)
    cand = np.array([[d, s] for d in np.linspace(0, 0.5, 11) for s in np.linspace(0, 4, 9)])
    n = 900
    seg = rng.integers(0, 2, n)
    t_star = np.stack([np.where(seg == 0, 0.05, 0.45), rng.uniform(0, 4, n)], axis=1)
    dist = (((cand[None] - t_star[:, None]) / np.array([0.5, 4.0])) ** 2).sum(axis=2)
    profit = -dist
    scaled = kmeans_preferences(profit, cand, 2, seed=0, scale=np.array([0.5, 4.0]))
    assert adjusted_rand_score(seg, scaled.assignment) > 0.99
    unscaled = kmeans_preferences(profit, cand, 2, seed=0, scale=np.array([1.0, 1.0]))
    assert adjusted_rand_score(seg, unscaled.assignment) < 0.5


def test_segmentations_keep_k_slots_with_few_distinct_points():
    # every customer prefers one of 2 candidates: k = 4 still gives 4 slots, 2 of them empty
    cand = np.arange(6.0)[:, None]
    profit = np.zeros((100, 6))
    profit[:50, 1] = 1.0
    profit[50:, 4] = 1.0
    pol = kmeans_preferences(profit, cand, 4)
    assert pol.k == 4 and sorted(pol.info["empty_segments"]) == [2, 3]
    assert estimated_value(profit, pol) == pytest.approx(1.0)
    X = np.repeat(np.array([[0.0, 1.0], [1.0, 0.0]]), 50, axis=0)  # only 2 distinct customers
    pf = kmeans_features(X, profit, cand, 4)
    assert pf.k == 4 and len(pf.info["empty_segments"]) == 2
    assert estimated_value(profit, pf) == pytest.approx(1.0)


def test_kmeans_profiles_recovers_planted_segments():
    X, profit, cand, seg, _ = planted_features(seed=2)
    pol = kmeans_profiles(profit, cand, 3, seed=0)
    assert pol.k == 3 and adjusted_rand_score(seg, pol.assignment) > 0.95


# ---------------------------------------------------------------------------------------------
# bounds
# ---------------------------------------------------------------------------------------------
def test_full_personalization_dominates_every_k_policy():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(400, 3))
    p = random_profit(400, 10, seed=7)
    cand = np.stack([np.linspace(0, 1, 10), np.linspace(1, 2, 10)], axis=1)
    full = full_personalization(p, cand)
    v_full = estimated_value(p, full)
    assert v_full == pytest.approx(p.max(axis=1).mean())
    np.testing.assert_allclose(full.treatment_of_customers(), cand[p.argmax(axis=1)])
    assert full.k == np.unique(p.argmax(axis=1)).size
    for k in (1, 2, 3, 5):
        for pol in (grid_search(p, cand, k), kmeans_features(X, p, cand, k),
                    kmeans_preferences(p, cand, k), single_best(p, cand)):
            assert estimated_value(p, pol) <= v_full + 1e-12
            assert pol.k == (1 if pol.name == "single_best" else k)


def test_policy_rejects_bad_assignment():
    with pytest.raises(ValueError, match="assignment values"):
        Policy("x", np.zeros((2, 1)), np.array([0, 2]))


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_error_messages_name_the_bad_argument():
    p = np.zeros((10, 4))
    cand = np.zeros((4, 2))
    with pytest.raises(ValueError, match="candidates has 3 rows"):
        single_best(p, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="profit must be a non-empty 2-D"):
        full_personalization(np.zeros(4), cand)
    with pytest.raises(ValueError, match="profit contains NaN"):
        single_best(np.full((10, 4), np.nan), cand)
    with pytest.raises(ValueError, match="k must be >= 1"):
        kmeans_preferences(p, cand, 0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        kmeans_preferences(p, cand, 2.5)
    with pytest.raises(ValueError, match="exceeds the number of customers"):
        kmeans_features(np.zeros((10, 3)), p, cand, 11)
    with pytest.raises(ValueError, match="X must be a 2-D"):
        kmeans_features(np.zeros((9, 3)), p, cand, 2)
    with pytest.raises(ValueError, match="scale must be 2 positive"):
        kmeans_preferences(p, cand, 2, scale=np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="profit_at_grid has 4 columns but grid has 5 rows"):
        grid_search(p, np.zeros((5, 1)), 2)
    with pytest.raises(ValueError, match="method must be"):
        grid_search(p, cand, 2, method="magic")
