"""The baselines as scikit-learn-style estimators: what every one of them has in common.

``PolicyEstimator`` (a sklearn ``BaseEstimator``: ``get_params`` / ``set_params`` / ``clone`` work) is
configured in ``__init__`` with keyword-only parameters only, learns in ``fit`` and keeps what it
learned in attributes ending in ``_``:

    est = KMeansFeatures(k=5, seed=0).fit(profit, candidates, X)
    est.policy_          the Policy of the fitted customers (treatments (K, d), assignment (N,), info)
    est.treatments_      (K, d); est.candidate_index_ (K,) the column of ``profit`` of each slot
    est.labels_          (N,) the fitted customers' segments (= est.policy_.assignment)
    est.assign(data)     (n,) int64 segments of (new) customers from what the method reads: covariates
                         X (n, p) for kmeans_features and the trees, their (n, M) profit at the
                         candidates for kmeans_preferences / kmeans_profiles / grid / full
                         personalization (``assign_input`` says which)

``fit(profit, candidates, X=None)``: profit is (N, M) dense, a ``FactoredProfit`` or a ``ProfitView``
(``coarse_gpu.policy.profit_view``). The Policy links back to its estimator (``policy.estimator``),
so ``coarse_gpu.policy.io.deployable`` saves the fitted state itself and never refits.

Also here: the shared rule "each segment gets its best candidate" (``policy_from_segments``) and
``estimated_value``.
"""
from __future__ import annotations

from typing import ClassVar, Optional

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from coarse_gpu.discretize.profit import FactoredProfit
from coarse_gpu.policy.policy import Policy
from coarse_gpu.policy.profit_view import ProfitView, as_view, to_numpy
from coarse_gpu.policy.rules import RULES

__all__ = ["PolicyEstimator", "check_candidates", "check_k", "estimated_value", "policy_from_segments",
           "segment_best_candidates"]


#: policy_name -> the baseline estimator class that builds that method's policies (PolicyEstimator).
BASELINE_CLASSES: dict[str, type] = {}


def _rule_names() -> list[str]:
    return list(RULES)


class PolicyEstimator(BaseEstimator):
    """Base class of the baseline estimators (module docstring). Subclasses set ``policy_name`` (the
    Policy name, the method key of the runs) and ``assign_input`` ("X" or "profit"), and implement
    ``fit`` and ``_assign``."""

    policy_name: ClassVar[str] = ""
    assign_input: ClassVar[str] = "profit"
    # The rule a saved policy of this baseline assigns new customers by (a name in policy/rules.py's RULES),
    # or None: its policies are not saved. Every class that sets a policy_name must say which.
    saved_rule: ClassVar[Optional[str]] = None

    def __init_subclass__(cls, **kwargs) -> None:
        """Registers a baseline class under its ``policy_name`` (``BASELINE_CLASSES``); TypeError when it
        sets a policy_name without declaring ``saved_rule`` (a new baseline cannot be left out of saving
        by forgetting: it says a rule or, with None, that its policies are not saved)."""
        super().__init_subclass__(**kwargs)
        if "policy_name" in cls.__dict__ and cls.policy_name:
            if "saved_rule" not in cls.__dict__:
                raise TypeError(f"{cls.__name__} sets policy_name={cls.policy_name!r} but declares no saved_rule: "
                                "name the rule its saved policies assign new customers by (coarse_gpu.policy.rules: "
                                f"{sorted(_rule_names())}) or None (its policies are not saved)")
            BASELINE_CLASSES[cls.policy_name] = cls

    def fit(self, profit, candidates, X=None) -> "PolicyEstimator":  # pragma: no cover - abstract
        raise NotImplementedError

    def assign(self, data) -> np.ndarray:
        """(n,) int64 segment in [0, K) of each (new) customer, from its covariates X (n, p) or its profit
        (n, M) at the fitted candidates (dense or factored), as ``assign_input`` says."""
        check_is_fitted(self, "policy_")
        return np.asarray(self._assign(data), dtype=np.int64)

    def _profit_of_new(self, profit) -> ProfitView:
        """A (n, M) profit of new customers at the fitted candidates, as a view (checked)."""
        view = as_view(profit)
        m = self.candidates_.shape[0]
        if view.m != m:
            raise ValueError(f"{type(self).__name__}.assign: profit has {view.m} columns, the estimator was fitted "
                             f"on {m} candidates")
        return view

    def _assign(self, data) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_policy(self, policy: Policy, candidates: np.ndarray) -> "PolicyEstimator":
        """Keep the fitted customers' Policy, the (M, d) candidates and the attributes every estimator has;
        returns self."""
        policy.estimator = self
        self.candidates_ = candidates
        self.policy_ = policy
        self.treatments_ = policy.treatments
        self.labels_ = policy.assignment
        if "candidate_index" in policy.info:
            self.candidate_index_ = np.asarray(policy.info["candidate_index"], dtype=np.int64)
        return self


def check_k(k, upper: Optional[int] = None, upper_what: str = "") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if upper is not None and k > upper:
        raise ValueError(f"k={k} exceeds {upper_what} ({upper})")
    return k


def check_candidates(view: ProfitView, candidates, profit_name: str = "profit",
                     cand_name: str = "candidates") -> np.ndarray:
    """(M, d) float64 candidates matching the view's M columns (a 1-D array is M one-dimensional ones)."""
    c = to_numpy(candidates, cand_name)
    if c.ndim == 1:
        c = c[:, None]
    if c.ndim != 2 or c.shape[1] == 0:
        raise ValueError(f"{cand_name} must be a 2-D (M, d) array, got shape {c.shape}")
    if view.m != c.shape[0]:
        raise ValueError(
            f"{profit_name} has {view.m} columns but {cand_name} has {c.shape[0]} rows; "
            f"column m of {profit_name} must be the profit at {cand_name}[m]"
        )
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{cand_name} contains NaN or inf")
    return c


def segment_best_candidates(profit, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best candidate of each segment by mean profit.

    profit : (N, M) profit matrix (dense, factored or a view); labels : (N,) int segment of each
    customer in [0, k). Returns (candidate index (k,) int64, segment sizes (k,) int64). Empty segments
    get index 0 (callers replace it; see the module docstring of coarse_gpu.policy.baselines).
    """
    if isinstance(profit, ProfitView) or _is_factored(profit):
        view = as_view(profit)
        n, p = view.n, view.dense
    else:
        p = to_numpy(profit, "profit")
        if p.ndim != 2:
            raise ValueError(f"profit must be 2-D (N, M), got shape {p.shape}")
        view, n = None, p.shape[0]
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}), got range [{lab.min()}, {lab.max()}]")
    if p is None:  # factored: the segments' sums of V, times W^T
        means, sizes = view.segment_means(lab, k)
        idx = means.argmax(axis=1).astype(np.int64)
        idx[sizes == 0] = 0
        return idx, sizes
    sizes = np.bincount(lab, minlength=k).astype(np.int64)
    idx = np.zeros(k, dtype=np.int64)
    for s in np.flatnonzero(sizes):
        idx[s] = int(np.argmax(p[lab == s].mean(axis=0)))
    return idx, sizes


def _is_factored(profit) -> bool:
    return isinstance(profit, FactoredProfit)


def policy_from_segments(name: str, labels: np.ndarray, view: ProfitView, candidates: np.ndarray,
                         k: int, info: dict) -> Policy:
    """Segments ``labels`` (N,) in [0, k) -> each gets its best candidate; empty slots get the single
    best candidate as a placeholder (it serves nobody); both documented in ``info``."""
    cand_idx, sizes = segment_best_candidates(view, labels, k)
    empty = np.flatnonzero(sizes == 0)
    if empty.size:
        cand_idx[empty] = int(np.argmax(view.col_mean()))
    info = dict(info)
    info.update(
        candidate_index=cand_idx,
        empty_segments=empty.tolist(),
        n_unique_treatments=int(np.unique(cand_idx[sizes > 0]).size),
        estimated_value=float(view.at(cand_idx[labels]).mean()),
    )
    return Policy(name, candidates[cand_idx], labels.astype(np.int64), info)


def estimated_value(profit, policy: Policy) -> float:
    """Mean profit per customer of a baseline ``policy`` under the profit matrix it was built on
    (dense, factored or a view).

    Uses ``policy.info["candidate_index"]`` (every baseline stores it):
    mean_i profit[i, candidate_index[assignment[i]]].
    """
    if "candidate_index" not in policy.info:
        raise ValueError(f"policy '{policy.name}' has no info['candidate_index']; it was not built on a profit matrix")
    if isinstance(profit, ProfitView) or _is_factored(profit):
        view = as_view(profit)
        n = view.n
    else:
        p = to_numpy(profit, "profit")
        if p.ndim != 2 or p.shape[0] != policy.n:
            raise ValueError(f"profit must have shape ({policy.n}, M) to match the policy, got {p.shape}")
        return float(p[np.arange(policy.n), np.asarray(policy.info["candidate_index"])[policy.assignment]].mean())
    if n != policy.n:
        raise ValueError(f"profit must have shape ({policy.n}, M) to match the policy, got {view.shape}")
    return float(view.at(np.asarray(policy.info["candidate_index"])[policy.assignment]).mean())
