"""The policy-tree baseline recovers a planted rule-based segmentation and respects the K budget."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("econml")

from coarse_gpu.policy import full_personalization, single_best  # noqa: E402
from coarse_gpu.policy.tree import policy_tree, tree_depth_for_k  # noqa: E402


def _planted(n=2000, seed=0):
    """Ideal dose 0.8 if x1 > 0.3; else 0.5 if x2 > 0, else 0.2 (a depth-2 rule); quadratic profits."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    cand = np.linspace(0.0, 1.0, 11)[:, None]
    ideal = np.where(X[:, 1] > 0.3, 0.8, np.where(X[:, 2] > 0.0, 0.5, 0.2))
    P = -10.0 * (cand[None, :, 0] - ideal[:, None]) ** 2 + rng.normal(scale=0.1, size=(n, 11))
    return X, P, cand, ideal


def test_depth_for_k():
    assert [tree_depth_for_k(k) for k in (1, 2, 3, 4, 7, 8, 9)] == [0, 1, 1, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="positive integer"):
        tree_depth_for_k(0)


def test_depth_two_tree_recovers_the_planted_rules():
    X, P, cand, ideal = _planted()
    pol = policy_tree(X, P, cand, 4, feature_names=["x0", "x1", "x2"])
    got = pol.treatment_of_customers()[:, 0]
    assert np.mean(np.isclose(got, ideal)) > 0.97  # thresholds are learned from a sample
    assert "x1 <= 0.3" in pol.info["rules"] and "treatment: [0.8]" in pol.info["rules"]
    # with the planted rule recovered the tree reaches (nearly) full personalization's value
    rows = np.arange(len(X))
    full = full_personalization(P, cand)
    v_tree = P[rows, np.searchsorted(cand[:, 0], got)].mean()
    v_full = P[rows, np.searchsorted(cand[:, 0], full.treatment_of_customers()[:, 0])].mean()
    assert v_tree >= v_full - 0.05


def test_budget_and_k1_equals_single_best():
    X, P, cand, _ = _planted(seed=1)
    for k in (2, 3, 5):
        pol = policy_tree(X, P, cand, k)
        assert pol.k == k and np.unique(pol.assignment).size <= 2 ** tree_depth_for_k(k) <= k
    one = policy_tree(X, P, cand, 1)
    np.testing.assert_allclose(one.treatments, single_best(P, cand).treatments)


def test_bad_shapes_are_named():
    X, P, cand, _ = _planted(n=100)
    with pytest.raises(ValueError, match="policy_tree: need X"):
        policy_tree(X[:50], P, cand, 2)


def test_stored_tree_reproduces_the_assignment_on_new_rows():
    from coarse_gpu.policy.tree import apply_tree

    X, P, cand, ideal = _planted(seed=2)
    pol = policy_tree(X, P, cand, 4)
    np.testing.assert_array_equal(apply_tree(X, pol.info["tree"]), pol.assignment)
    Xn, _, _, ideal_n = _planted(n=500, seed=3)
    got = pol.treatments[apply_tree(Xn, pol.info["tree"]), 0]
    assert np.mean(np.isclose(got, ideal_n)) > 0.95
    one = policy_tree(X, P, cand, 1)
    assert np.all(apply_tree(Xn, one.info["tree"]) == 0)
