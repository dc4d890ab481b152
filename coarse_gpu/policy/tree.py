"""Depth-limited policy tree on the estimated profit matrix: the interpretable baseline.

EconML's ``PolicyTree`` (Athey & Wager's policy learning, greedy welfare-maximizing splits) is fitted on
the covariates X with the per-customer profit of every candidate treatment as the "welfare" matrix: each
leaf is a segment defined by at most ``depth`` threshold rules on the covariates and receives the
candidate with the largest total profit in it. A tree of depth D has at most 2**D leaves, so for a
budget of K treatments the depth is floor(log2 K) (K=2,3 -> depth 1, K=4..7 -> depth 2, K=8 -> depth 3).
Leaves that pick the same treatment share one slot, so the policy uses at most K distinct treatments.

``PolicyTree`` is the estimator (``coarse_gpu.policy.estimator``: fit(profit, candidates, X), assign(X) =
the stored tree, policy_), ``policy_tree`` the function that returns its Policy. Above ``max_fit_rows``
customers the tree is grown on a seeded uniform sample of them and every customer goes down it (the
sampling is described once, in ``coarse_gpu.policy.baselines``); the candidates offered to it and the
K = 1 choice use all customers. The profit may be a ``FactoredProfit``: only the (rows, <= max_columns)
profits the tree is grown on are formed.
"""
from __future__ import annotations

import math
import re
from typing import Optional, Sequence

import numpy as np

from coarse_gpu.policy.clustering import MAX_FIT_ROWS, sample_rows
from coarse_gpu.policy.estimator import PolicyEstimator, check_candidates
from coarse_gpu.policy.policy import Policy
from coarse_gpu.policy.profit_view import ProfitView, as_view
from coarse_gpu.policy.stored_tree import apply_tree


def tree_depth_for_k(k: int) -> int:
    """The largest depth whose 2**depth leaves fit a budget of K treatments."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(math.floor(math.log2(int(k))))


class PolicyTree(PolicyEstimator):
    """Policy tree of depth floor(log2 K) on the covariates, leaves choose among the candidates.

    k : treatment budget. min_samples_leaf : smallest segment the tree may create.
    max_columns : the tree's split search costs O(M) per candidate split, so when M is larger only the
        ``max_columns`` candidates that are some customer's best (most often first) are offered to it;
        the others are dominated for nearly everyone.
    feature_names : optional names of the p covariates, used in ``info["rules"]``.
    max_fit_rows : above it, the tree is grown on a seeded sample (module docstring).
    fit(profit (N, M), candidates (M, d), X (N, p)). The Policy "policy_tree" has K slots (unused slots,
    when the tree has fewer distinct leaf treatments than K, receive no customers); ``info["rules"]`` is
    the tree as text, ``info["tree"]`` its arrays (``apply_tree``).
    Fitted: tree_ (the arrays), depth_, columns_ (the candidates offered), rules_, treatments_, labels_,
    policy_. assign(X (n, p)) -> ``apply_tree(X, tree_)``.
    """

    policy_name = "policy_tree"
    saved_rule = "tree"
    assign_input = "X"

    def __init__(self, *, k: int = 5, seed: int = 0, min_samples_leaf: int = 50, max_columns: int = 256,
                 feature_names: Optional[Sequence[str]] = None, max_fit_rows: Optional[int] = MAX_FIT_ROWS):
        self.k = k
        self.seed = seed
        self.min_samples_leaf = min_samples_leaf
        self.max_columns = max_columns
        self.feature_names = feature_names
        self.max_fit_rows = max_fit_rows

    def fit(self, profit, candidates, X=None) -> "PolicyTree":
        view, x, c = check_tree_inputs("policy_tree", X, profit, candidates)
        depth = tree_depth_for_k(self.k)
        k = int(self.k)
        cols = _offered_columns(view, self.max_columns)
        rows = sample_rows(view.n, self.max_fit_rows, self.seed)
        if depth == 0:
            sub = view.columns(cols) if not view.factored else None
            # the best offered column over ALL customers (dense: as always, on the offered sub-matrix)
            best = int(sub.sum(0).argmax()) if sub is not None else int(view.col_sum()[cols].argmax())
            leaf_choice = np.zeros(view.n, dtype=np.int64) + best
            used, slots = _slots(leaf_choice, cols.size)
            arrays = {"feature": [-2], "threshold": [0.0], "left": [-1], "right": [-1],
                      "leaf_slot": [int(slots[leaf_choice[0]])]}
            assignment, rules = slots[leaf_choice], "(no split)"
        else:
            x_fit = x if rows is None else x[rows]
            sub = view.columns(cols) if rows is None else view.rows(rows)[:, cols]
            tree = _grow(x_fit, sub, depth, self.min_samples_leaf, self.seed)
            leaf_choice = np.asarray(tree.predict(x_fit), dtype=np.int64)
            used, slots = _slots(leaf_choice, cols.size)
            leaf_slot = np.full(tree.tree_.node_count, -1, dtype=np.int64)
            leaf_slot[np.asarray(tree.apply(x_fit), dtype=np.int64)] = slots[leaf_choice]  # every leaf holds
            arrays = _tree_arrays(tree.tree_, leaf_slot)                                   # >= min_samples_leaf
            assignment = slots[leaf_choice] if rows is None else apply_tree(x, arrays)
            rules = _rules_text(tree, depth, self.feature_names, c, cols, used)
        treatments = np.zeros((k, c.shape[1]))
        treatments[: used.size] = c[cols[used]]
        if used.size < k:  # keep K slots; spare ones repeat the first treatment and are empty
            treatments[used.size:] = c[cols[used[0]]]
        info = {"depth": depth, "n_leaf_treatments": int(used.size), "rules": rules,
                "min_samples_leaf": self.min_samples_leaf, "tree": arrays}
        if rows is not None and depth > 0:
            info["n_fit_rows"] = int(rows.size)
        self.tree_, self.depth_, self.columns_, self.rules_ = arrays, depth, cols, rules
        pol = Policy("policy_tree", treatments, assignment, info)
        self._set_policy(pol, c)
        self.candidate_index_ = np.concatenate([cols[used], np.repeat(cols[used[:1]], k - used.size)])
        return self

    def _assign(self, X) -> np.ndarray:
        return apply_tree(X, self.tree_)


def check_tree_inputs(who: str, X, profit, candidates) -> tuple[ProfitView, np.ndarray, np.ndarray]:
    """(view, X (N, p) float64, candidates (M, d)) with the shape / finiteness errors naming ``who``."""
    x = np.asarray(X, dtype=np.float64)
    view = as_view(profit, f"{who}: profit")
    c = np.asarray(candidates, dtype=np.float64)
    if c.ndim == 1:
        c = c[:, None]
    if x.ndim != 2 or x.shape[0] != view.n or c.ndim != 2 or c.shape[0] != view.m:
        raise ValueError(f"{who}: need X (N, p), profit (N, M), candidates (M, d); got shapes "
                         f"{x.shape}, {view.shape}, {c.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{who}: X and profit must be finite (no NaN or inf)")
    return view, x, check_candidates(view, c)


def _offered_columns(view: ProfitView, max_columns: int) -> np.ndarray:
    """The candidates offered to the tree: the most common per-customer optima, and the single best."""
    counts = np.bincount(view.row_argmax(), minlength=view.m).astype(np.float64)
    counts[int(view.col_sum().argmax())] = np.inf
    cols = np.argsort(-counts, kind="stable")[: min(view.m, max_columns)]
    return cols[counts[cols] > 0]


def _grow(x: np.ndarray, welfare: np.ndarray, depth: int, min_samples_leaf: int, seed: int):
    try:
        from econml.policy import PolicyTree as EconPolicyTree  # here: an optional extra ([real]), said below
    except ImportError as err:  # pragma: no cover - econml is in the [real] and [all] extras
        raise ImportError("policy_tree needs econml (pip install 'coarse_gpu[real]' or econml)") from err
    tree = EconPolicyTree(max_depth=depth, min_samples_leaf=min_samples_leaf, honest=False, random_state=seed)
    return tree.fit(x, welfare)


def _slots(leaf_choice: np.ndarray, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(distinct offered columns the leaves chose (sorted), slot of each offered column (-1: none))."""
    used = np.unique(leaf_choice)
    slots = np.full(n_cols, -1, dtype=np.int64)
    slots[used] = np.arange(used.size)
    return used, slots


def _tree_arrays(tr, leaf_slot: np.ndarray) -> dict:
    """A fitted tree's structure (sklearn ``tree_`` layout) in the stored-tree format (``apply_tree``)."""
    return {"feature": np.asarray(tr.feature).tolist(), "threshold": np.asarray(tr.threshold).tolist(),
            "left": np.asarray(tr.children_left).tolist(), "right": np.asarray(tr.children_right).tolist(),
            "leaf_slot": leaf_slot.tolist()}


def _rules_text(tree, depth: int, feature_names, c: np.ndarray, cols: np.ndarray, used: np.ndarray) -> str:
    try:
        from sklearn.tree import export_text  # the fitted tree is sklearn-compatible enough for text

        names = list(feature_names) if feature_names is not None else None
        rules = export_text(tree, max_depth=depth, feature_names=names)
        # leaves are labelled by column of the offered sub-matrix: write the treatment instead
        return re.sub(r"class: (\d+)", lambda mt: "treatment: "
                      + np.array2string(c[cols[int(mt.group(1))]], precision=3), rules)
    except Exception:
        return f"PolicyTree(depth={depth}) with {used.size} distinct leaf treatments"


def policy_tree(X, profit, candidates, k: int, seed: int = 0, min_samples_leaf: int = 50,
                max_columns: int = 256, feature_names=None, max_fit_rows: Optional[int] = MAX_FIT_ROWS) -> Policy:
    """Policy tree of depth floor(log2 K) on the covariates (``PolicyTree``, which documents the
    arguments): X (N, p); profit (N, M) dense or factored; candidates (M, d). Returns its Policy."""
    est = PolicyTree(k=k, seed=seed, min_samples_leaf=min_samples_leaf, max_columns=max_columns,
                     feature_names=feature_names, max_fit_rows=max_fit_rows)
    return est.fit(profit, candidates, X).policy_


