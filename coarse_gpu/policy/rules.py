"""How a saved policy assigns new customers: one ``AssignRule`` per rule, registered by name in ``RULES``.

A baseline estimator names its rule in its class body (``saved_rule = "feature_centroid"``, or ``None``
when its policies are not saved: ``PolicyEstimator`` refuses a baseline class that names neither, so a
new baseline cannot be left out of saving by forgetting). A rule says which fitted arrays of the
estimator the policy file stores (``state``), their shapes (``params``, checked when a file is loaded)
and how new customers are assigned from them and the saved CATE model (``assign``). ``policy/io.py``
reads this table and holds no per-method code; a new rule is one ``register_rule`` call next to its
baseline (``docs/extending.md``). The built-in rules (module docstring of ``policy/io.py``): argmax,
feature_centroid, preference_centroid, profile_centroid, tree.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from coarse_gpu.policy.clustering import nearest_center
from coarse_gpu.policy.stored_tree import apply_tree

__all__ = ["RULES", "AssignRule", "register_rule"]


@dataclass(frozen=True)
class AssignRule:
    """One assignment rule for saved policies.

    params : {name: shape} of the stored arrays, shapes in the letters K (treatments), d (treatment
        dimensions), p (model-matrix columns), M (candidates) or any other letter (read from the file,
        then the same everywhere); a name ending in "+" must be positive, in "?" is optional.
    state : fitted estimator -> {name: array} (None: the rule stores nothing).
    assign : (model, xb (b, p) model matrix, params, p_k (b, K) the model's profits at the K
        treatments) -> (b,) int segments in [0, K).
    check : optional extra check of the loaded arrays (params, K, p) -> the problem as a sentence, or
        None (the loader raises it as a ``PolicyFileError``).
    """

    name: str
    assign: Callable[..., np.ndarray]
    params: dict = field(default_factory=dict)
    state: Optional[Callable[[Any], dict]] = None
    check: Optional[Callable[..., Optional[str]]] = None


RULES: dict[str, AssignRule] = {}


def register_rule(rule: AssignRule) -> AssignRule:
    """Add ``rule`` to ``RULES`` (a name already there is replaced); returns it."""
    if not isinstance(rule, AssignRule):
        raise TypeError(f"register_rule takes an AssignRule, got {type(rule).__name__}")
    RULES[rule.name] = rule
    return rule


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _profile_state(est) -> dict:
    params = {"candidates": _f64(est.candidates_), "p_mean": _f64(est.p_mean_), "p_scale": _f64(est.p_scale_),
              "centroids": _f64(est.centers_)}
    if est.components_ is not None:
        params.update(components=_f64(est.components_), pca_mean=_f64(est.pca_mean_))
    return params


def _profile_assign(model, xb, params, p_k) -> np.ndarray:
    z = (model.predict_profit(xb, params["candidates"]) - params["p_mean"]) / params["p_scale"]
    if "components" in params:
        z = (z - params["pca_mean"]) @ params["components"].T
    return nearest_center(z, params["centroids"])


def _preference_assign(model, xb, params, p_k) -> np.ndarray:
    cand = params["candidates"]
    best = model.predict_profit(xb, cand).argmax(1)
    return nearest_center(cand[best] / params["pref_scale"], params["centroids"])


_TREE_KEYS = ("feature", "threshold", "left", "right", "leaf_slot")


def _tree_assign(model, xb, params, p_k) -> np.ndarray:
    return apply_tree(xb, {key: params["tree_" + key] for key in _TREE_KEYS})


def _tree_state(est) -> dict:
    return {"tree_" + key: np.asarray(v, dtype=np.float64 if key == "threshold" else np.int64)
            for key, v in est.tree_.items()}


def _check_tree(t: dict, K: int, p: int) -> Optional[str]:
    """Integral node arrays: inner nodes split a model-matrix column in [0, p) and point at nodes; leaves
    (left == right == -1) name a slot in [0, K). The problem as a sentence, None when there is none."""
    n = t["tree_feature"].shape[0]
    ints = {k: v for k, v in t.items() if k != "tree_threshold"}
    if n == 0 or any(np.any(v != np.round(v)) for v in ints.values()):
        return "the tree's node arrays must be non-empty and integral"
    left, right, feat, slot = (t[k].astype(np.int64) for k in ("tree_left", "tree_right", "tree_feature",
                                                                "tree_leaf_slot"))
    leaf = left < 0
    if (np.any(leaf != (right < 0)) or np.any(left >= n) or np.any(right >= n) or np.any((left < -1) | (right < -1))
            or np.any((feat[~leaf] < 0) | (feat[~leaf] >= p)) or np.any((slot[leaf] < 0) | (slot[leaf] >= K))):
        return f"the tree is malformed (children in [-1, {n}), split features in [0, {p}), leaf slots in [0, {K}))"
    return None


register_rule(AssignRule("argmax", lambda model, xb, params, p_k: p_k.argmax(1)))
register_rule(AssignRule(
    "feature_centroid",
    lambda model, xb, params, p_k: nearest_center((xb.astype(np.float64) - params["center"]) / params["scale"],
                                                  params["centroids"]),
    {"center": ("p",), "scale+": ("p",), "centroids": ("K", "p")},
    lambda est: {"center": _f64(est.center_), "scale": _f64(est.scale_), "centroids": _f64(est.centers_)}))
register_rule(AssignRule(
    "preference_centroid", _preference_assign,
    {"candidates": ("M", "d"), "pref_scale+": ("d",), "centroids": ("K", "d")},
    lambda est: {"candidates": _f64(est.candidates_), "pref_scale": _f64(est.scale_),
                 "centroids": _f64(est.centers_)}))
register_rule(AssignRule(
    "profile_centroid", _profile_assign,
    {"candidates": ("M", "d"), "p_mean": ("M",), "p_scale+": ("M",), "components?": ("q", "M"), "pca_mean?": ("M",),
     "centroids": ("K", "q")},
    _profile_state))
register_rule(AssignRule(
    "tree", _tree_assign, {"tree_" + key: ("n",) for key in _TREE_KEYS}, _tree_state, _check_tree))
