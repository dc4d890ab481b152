"""The policy-tree baseline recovers a planted rule-based segmentation and respects the K budget."""
from __future__ import annotations

import re

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


# ---------------------------------------------------------------------------------------------------
# ot_tree: the OT's treatments assigned by a tree on the covariates
# ---------------------------------------------------------------------------------------------------
def test_ot_tree_recovers_the_planted_rules_in_both_variants():
    from coarse_gpu.policy.ot_tree import ot_tree

    X, P, cand, ideal = _planted()
    rows = np.arange(len(X))
    for variant in ("distill", "policy"):
        pol = ot_tree(X, P, cand, 3, variant=variant, feature_names=["x0", "x1", "x2"])
        assert pol.name == "ot_tree" and pol.k == 3
        assert sorted(pol.treatments[:, 0].round(6).tolist()) == [0.2, 0.5, 0.8]  # the OT's three treatments
        got = pol.treatment_of_customers()[:, 0]
        assert np.mean(np.isclose(got, ideal)) > 0.97, variant
        # the tree keeps (almost) all of the OT assignment's profit, never more
        info = pol.info
        assert info["tree_objective"] <= info["ot_objective"] + 1e-9
        assert info["tree_objective"] >= info["ot_objective"] - 0.02 * abs(info["ot_objective"])
        assert info["tree_objective"] == pytest.approx(P[rows, np.asarray(info["candidate_index"])[pol.assignment]].sum())
        assert re.search(r"if x1 <= 0\.(3|29)", info["rules"]) and "-> segment" in info["rules"]
        assert "[0.8]" in info["rules"] and "[0.2]" in info["rules"]


def test_ot_tree_stored_arrays_assign_new_rows_and_print():
    from coarse_gpu.policy.ot_tree import default_depth, ot_tree, tree_rules
    from coarse_gpu.policy.tree import apply_tree

    X, P, cand, _ = _planted(seed=4)
    pol = ot_tree(X, P, cand, 4, seed=0)
    np.testing.assert_array_equal(apply_tree(X, pol.info["tree"]), pol.assignment)
    Xn, _, _, ideal_n = _planted(n=500, seed=5)
    assert np.mean(np.isclose(pol.treatments[apply_tree(Xn, pol.info["tree"]), 0], ideal_n)) > 0.95
    assert pol.info["depth"] == default_depth(4) == 3
    # one line per reachable leaf, an if / else pair per reachable split; no split leads to one treatment
    tree = pol.info["tree"]
    left, right, slot = (np.asarray(tree[key]) for key in ("left", "right", "leaf_slot"))
    reach, stack = [], [0]
    while stack:
        node = stack.pop()
        reach.append(node)
        if left[node] >= 0:
            stack += [left[node], right[node]]
            assert not (left[left[node]] < 0 and left[right[node]] < 0 and slot[left[node]] == slot[right[node]])
    reach = np.asarray(reach)
    text = tree_rules(tree, pol.treatments, ["a", "b", "c"], ["dose"])
    assert text.count("->") == int(np.sum(left[reach] < 0)) and text.count("if ") == int(np.sum(left[reach] >= 0))
    assert "dose=" in text and "if b <=" in text


def test_ot_tree_bad_input_is_named():
    from coarse_gpu.policy.ot_tree import ot_tree

    X, P, cand, _ = _planted(n=200)
    with pytest.raises(ValueError, match="variant must be one of"):
        ot_tree(X, P, cand, 3, variant="forest")
    with pytest.raises(ValueError, match="ot_tree: need X"):
        ot_tree(X[:10], P, cand, 3)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        ot_tree(X, P, cand, 3, depth=0)
