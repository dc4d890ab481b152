"""Depth-limited policy tree on the estimated profit matrix: the interpretable baseline.

EconML's ``PolicyTree`` (Athey & Wager's policy learning, greedy welfare-maximizing splits) is fitted on
the covariates X with the per-customer profit of every candidate treatment as the "welfare" matrix: each
leaf is a segment defined by at most ``depth`` threshold rules on the covariates and receives the
candidate with the largest total profit in it. A tree of depth D has at most 2**D leaves, so for a
budget of K treatments the depth is floor(log2 K) (K=2,3 -> depth 1, K=4..7 -> depth 2, K=8 -> depth 3).
Leaves that pick the same treatment share one slot, so the policy uses at most K distinct treatments.
"""
from __future__ import annotations

import math

import numpy as np

from coarse_gpu.policy.policy import Policy


def tree_depth_for_k(k: int) -> int:
    """The largest depth whose 2**depth leaves fit a budget of K treatments."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(math.floor(math.log2(int(k))))


def policy_tree(X, profit, candidates, k: int, seed: int = 0, min_samples_leaf: int = 50,
                max_columns: int = 256, feature_names=None) -> Policy:
    """Policy tree of depth floor(log2 K) on the covariates, leaves choose among the candidates.

    X : (N, p) covariates; profit : (N, M) estimated profit of each customer at each candidate;
    candidates : (M, d). min_samples_leaf : smallest segment the tree may create.
    feature_names : optional names of the p covariates, used in ``info["rules"]``.
    max_columns : the tree's split search costs O(M) per candidate split, so when M is larger only the
        ``max_columns`` candidates that are some customer's best (most often first) are offered to it;
        the others are dominated for nearly everyone.
    Returns a Policy named "policy_tree" with K slots (unused slots, when the tree has fewer distinct
    leaf treatments than K, receive no customers); ``info["rules"]`` is the tree as text.
    """
    try:
        from econml.policy import PolicyTree
    except ImportError as err:  # pragma: no cover - econml is in the [real] and [all] extras
        raise ImportError("policy_tree needs econml (pip install 'coarse_gpu[real]' or econml)") from err
    x = np.asarray(X, dtype=np.float64)
    p = np.asarray(profit, dtype=np.float64)
    c = np.asarray(candidates, dtype=np.float64)
    if c.ndim == 1:
        c = c[:, None]
    if p.ndim != 2 or x.ndim != 2 or x.shape[0] != p.shape[0] or c.shape[0] != p.shape[1]:
        raise ValueError(f"policy_tree: need X (N, p), profit (N, M), candidates (M, d); got shapes "
                         f"{x.shape}, {p.shape}, {c.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(p))):
        raise ValueError("policy_tree: X and profit must be finite (no NaN or inf)")
    depth = tree_depth_for_k(k)
    n, m = p.shape
    # candidates offered to the tree: the most common per-customer optima (and the single best)
    counts = np.bincount(p.argmax(1), minlength=m).astype(np.float64)
    counts[int(p.sum(0).argmax())] = np.inf
    cols = np.argsort(-counts, kind="stable")[: min(m, max_columns)]
    cols = cols[counts[cols] > 0]
    sub = p[:, cols]
    if depth == 0:
        leaf_choice = np.zeros(n, dtype=np.int64) + int(sub.sum(0).argmax())
        rules = "(no split)"
    else:
        tree = PolicyTree(max_depth=depth, min_samples_leaf=min_samples_leaf, honest=False, random_state=seed)
        tree.fit(x, sub)
        leaf_choice = np.asarray(tree.predict(x), dtype=np.int64)
        try:
            from sklearn.tree import export_text  # the fitted tree is sklearn-compatible enough for text

            import re

            names = list(feature_names) if feature_names is not None else None
            rules = export_text(tree, max_depth=depth, feature_names=names)
            # leaves are labelled by column of the offered sub-matrix: write the treatment instead
            rules = re.sub(r"class: (\d+)", lambda mt: "treatment: "
                           + np.array2string(c[cols[int(mt.group(1))]], precision=3), rules)
        except Exception:
            rules = f"PolicyTree(depth={depth}) with {np.unique(leaf_choice).size} distinct leaf treatments"
    used = np.unique(leaf_choice)
    slots_of_col = np.full(sub.shape[1], -1, dtype=np.int64)
    slots_of_col[used] = np.arange(used.size)
    if depth == 0:
        tree_arrays = {"feature": [-2], "threshold": [0.0], "left": [-1], "right": [-1],
                       "leaf_slot": [int(slots_of_col[leaf_choice[0]])]}
    else:
        tr = tree.tree_
        leaf_slot = np.full(tr.node_count, -1, dtype=np.int64)
        leaves = np.asarray(tree.apply(x), dtype=np.int64)
        leaf_slot[leaves] = slots_of_col[leaf_choice]  # every leaf holds >= min_samples_leaf customers
        tree_arrays = {"feature": np.asarray(tr.feature).tolist(), "threshold": np.asarray(tr.threshold).tolist(),
                       "left": np.asarray(tr.children_left).tolist(), "right": np.asarray(tr.children_right).tolist(),
                       "leaf_slot": leaf_slot.tolist()}
    slots = slots_of_col
    treatments = np.zeros((int(k), c.shape[1]))
    treatments[: used.size] = c[cols[used]]
    if used.size < k:  # keep K slots; spare ones repeat the first treatment and are empty
        treatments[used.size:] = c[cols[used[0]]]
    return Policy("policy_tree", treatments, slots[leaf_choice],
                  {"depth": depth, "n_leaf_treatments": int(used.size), "rules": rules,
                   "min_samples_leaf": min_samples_leaf, "tree": tree_arrays})


def apply_tree(X, tree: dict) -> np.ndarray:
    """Slot of each row of X (N, p) under a stored tree (``Policy.info["tree"]``): at node j go left when
    X[:, feature[j]] <= threshold[j], until a leaf (left == -1); returns leaf_slot of that leaf, (N,) int64."""
    x = np.asarray(X, dtype=np.float64)
    feature = np.asarray(tree["feature"], dtype=np.int64)
    threshold = np.asarray(tree["threshold"], dtype=np.float64)
    left = np.asarray(tree["left"], dtype=np.int64)
    right = np.asarray(tree["right"], dtype=np.int64)
    leaf_slot = np.asarray(tree["leaf_slot"], dtype=np.int64)
    if x.ndim != 2 or (feature.max(initial=-1) >= x.shape[1]):
        raise ValueError(f"apply_tree: X must be (N, p) with p > {feature.max(initial=-1)}, got shape {x.shape}")
    node = np.zeros(x.shape[0], dtype=np.int64)
    for _ in range(len(feature)):
        inner = left[node] >= 0
        if not inner.any():
            break
        f = feature[node[inner]]
        go_left = x[np.flatnonzero(inner), f] <= threshold[node[inner]]
        node[inner] = np.where(go_left, left[node[inner]], right[node[inner]])
    return leaf_slot[node]
