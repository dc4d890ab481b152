"""A fitted gradient-boosting regressor as plain arrays: predictions without pickle.

scikit-learn's ``HistGradientBoostingRegressor`` keeps its trees as ``TreePredictor`` objects whose
``nodes`` are a structured array. ``BoostedTrees.from_estimator`` copies what prediction needs into
named flat arrays (one row per node, all trees concatenated) plus the baseline, and from then on
every prediction -- in the fitting process and after a saved policy is loaded -- goes through the
same arrays, so a reloaded model predicts bit for bit what the fitted one did.

Prediction per tree uses scikit-learn's compiled ``TreePredictor`` rebuilt from the arrays (fast,
threaded); if that private class is not importable in some scikit-learn version, a vectorized
numpy traversal gives the same numbers (same float64 comparisons, same summation order).
Only numeric splits are supported: the models feed one-hot encoded features, never the
estimator's native categorical splits.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["BoostedTrees", "FIELDS"]



def _n_threads() -> int:
    """Prediction threads: OpenMP's effective count (honours OMP_NUM_THREADS and threadpoolctl limits,
    so a caller that pins one thread is not oversubscribed), at most 8. Rows are independent: any
    count gives the same numbers."""
    try:
        # here: a private scikit-learn module, guarded: a release that moves it takes the fallback below
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
        return max(1, min(8, int(_openmp_effective_n_threads())))
    except ImportError:  # pragma: no cover - scikit-learn moved its private helper
        return max(1, min(8, os.cpu_count() or 1))

#: Per-node arrays kept from scikit-learn's PREDICTOR_RECORD_DTYPE (left/right are tree-local).
FIELDS = ("value", "feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "is_leaf")


@dataclass
class BoostedTrees:
    """An additive tree ensemble: prediction = baseline + sum over trees of the reached leaf's value.

    nodes : dict field -> (n_nodes,) array over all trees concatenated (``FIELDS``).
    offsets : (n_trees + 1,) int64, tree j owns nodes[offsets[j]:offsets[j+1]].
    baseline : the constant initial prediction (float).
    n_features : number of input columns the trees were fitted on.
    """

    nodes: dict
    offsets: np.ndarray
    baseline: float
    n_features: int

    def __post_init__(self) -> None:
        self._predictors: Optional[list] = None

    @property
    def n_trees(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @classmethod
    def from_estimator(cls, est) -> "BoostedTrees":
        """Arrays of a fitted (single-output) HistGradientBoostingRegressor."""
        trees = [preds[0].nodes for preds in est._predictors]
        if any(np.any(t["is_categorical"]) for t in trees):  # pragma: no cover - never fed categoricals
            raise ValueError("BoostedTrees supports numeric splits only")
        sizes = [t.shape[0] for t in trees]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        if trees:
            nodes = {f: np.concatenate([t[f] for t in trees]) for f in FIELDS}
        else:  # max_iter reached 0 trees (early stopping at the first check): the baseline alone
            nodes = {f: np.zeros(0) for f in FIELDS}
        nodes = _cast(nodes)
        baseline = float(np.asarray(est._baseline_prediction).reshape(-1)[0])
        return cls(nodes, offsets, baseline, int(est.n_features_in_))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays (safetensors-ready) that ``from_arrays`` reads back."""
        out = {f"node_{f}": v for f, v in self.nodes.items()}
        out["offsets"] = self.offsets
        out["baseline"] = np.array([self.baseline], dtype=np.float64)
        out["n_features"] = np.array([self.n_features], dtype=np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict) -> "BoostedTrees":
        missing = [k for k in [f"node_{f}" for f in FIELDS] + ["offsets", "baseline", "n_features"] if k not in arrays]
        if missing:
            raise ValueError(f"tree arrays lack {missing}")
        nodes = _cast({f: np.asarray(arrays[f"node_{f}"]) for f in FIELDS})
        offsets = np.asarray(arrays["offsets"], dtype=np.int64)
        n = int(nodes["value"].shape[0])
        if offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 1):
            raise ValueError("tree arrays: offsets do not partition the nodes")
        sizes = np.diff(offsets)
        local = np.repeat(sizes, sizes)
        inner = nodes["is_leaf"] == 0
        for side in ("left", "right"):
            if np.any(nodes[side][inner] >= local[inner]):
                raise ValueError(f"tree arrays: a '{side}' child points outside its tree")
        nf = int(np.asarray(arrays["n_features"]).reshape(-1)[0])
        if np.any(nodes["feature_idx"][inner] >= nf) or np.any(nodes["feature_idx"][inner] < 0):
            raise ValueError("tree arrays: a split feature index is out of range")
        return cls(nodes, offsets, float(np.asarray(arrays["baseline"]).reshape(-1)[0]), nf)

    # -- prediction ----------------------------------------------------------------------------
    def _sklearn_predictors(self) -> Optional[list]:
        if self._predictors is None:
            try:
                # here: private scikit-learn modules, guarded: a release that moves them takes the fallback below
                from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
                from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
            except ImportError:  # pragma: no cover - scikit-learn moved its private classes
                self._predictors = []
                return None
            preds = []
            empty = np.zeros((0, 8), dtype=np.uint32)
            for j in range(self.n_trees):
                sl = slice(self.offsets[j], self.offsets[j + 1])
                rec = np.zeros(sl.stop - sl.start, dtype=PREDICTOR_RECORD_DTYPE)
                for f in FIELDS:
                    rec[f] = self.nodes[f][sl]
                preds.append(TreePredictor(rec, empty, empty))
            self._predictors = preds
        return self._predictors or None

    def predict(self, X: np.ndarray, use_sklearn: bool = True) -> np.ndarray:
        """(N,) float64 predictions for a finite (N, n_features) matrix."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (N, {self.n_features}), got {X.shape}")
        out = np.full(X.shape[0], self.baseline, dtype=np.float64)
        preds = self._sklearn_predictors() if use_sklearn else None
        if preds is not None:
            n_threads = _n_threads()
            known = np.zeros((0, 8), dtype=np.uint32)
            f_idx = np.zeros(self.n_features, dtype=np.uint32)
            for p in preds:
                out += p.predict(X, known, f_idx, n_threads)
            return out
        for j in range(self.n_trees):
            out += self._traverse(X, j)
        return out

    def _traverse(self, X: np.ndarray, j: int) -> np.ndarray:
        """Leaf values of tree j reached by every row (numpy; the fallback path)."""
        base = int(self.offsets[j])
        nd = {f: v[base: int(self.offsets[j + 1])] for f, v in self.nodes.items()}
        node = np.zeros(X.shape[0], dtype=np.int64)
        rows = np.arange(X.shape[0])
        active = nd["is_leaf"][node] == 0
        while np.any(active):
            r, n = rows[active], node[active]
            x = X[r, nd["feature_idx"][n]]
            left = np.where(np.isnan(x), nd["missing_go_to_left"][n] == 1, x <= nd["num_threshold"][n])
            node[r] = np.where(left, nd["left"][n], nd["right"][n])
            active = nd["is_leaf"][node] == 0
        return nd["value"][node]


def _cast(nodes: dict) -> dict:
    dtypes = {"value": np.float64, "feature_idx": np.int64, "num_threshold": np.float64,
              "missing_go_to_left": np.uint8, "left": np.int64, "right": np.int64, "is_leaf": np.uint8}
    return {f: np.ascontiguousarray(nodes[f], dtype=dtypes[f]) for f in FIELDS}
