"""A stored decision tree applied to customers: ``apply_tree`` (its arrays' format is what policy.json
keeps for the ``tree`` rule, coarse_gpu.policy.rules). Alone in a module below the tree estimators
(tree.py, ot_tree.py) and the saved-policy rules, so that rules.py needs no estimator module and no
module of policy/ imports another in a circle.
"""
from __future__ import annotations

import numpy as np

__all__ = ["apply_tree"]


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
