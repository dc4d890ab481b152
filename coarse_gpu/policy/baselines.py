"""Baseline coarse personalization policies (the paper's comparisons) and the two bounds, as estimators.

Every baseline reads an *estimated* (or, on simulated data, true) profit matrix

    profit : (N, M) float, profit[i, m] = pi_hat(x_i, candidates[m]) in currency units per customer:
             a dense array, or a ``FactoredProfit`` Pi = V @ W.T (V (N, A), W (M, A)) that is never formed
             (row blocks, segment sums of V, projections of V: ``coarse_gpu.policy.profit_view``),
    candidates : (M, d) float, the treatments the columns refer to (treatment-space units),

and chooses treatments among the candidates (no continuous search: that is the OT discretizer's job),
so a baseline is never handicapped by a different candidate set than the method it is compared with.

Each baseline is a scikit-learn-style estimator (``coarse_gpu.policy.estimator.PolicyEstimator``:
keyword-only parameters, ``fit(profit, candidates, X=None)`` -> self, ``assign`` for new customers,
``policy_`` the Policy of the fitted ones), and the function of the same name wraps it with the
arguments and results it always had:

    SingleBest().fit(P, C)                       single_best(P, C)
    FullPersonalization().fit(P, C)              full_personalization(P, C)
    KMeansFeatures(k=k).fit(P, C, X)             kmeans_features(X, P, C, k)
    KMeansPreferences(k=k).fit(P, C)             kmeans_preferences(P, C, k)
    KMeansProfiles(k=k).fit(P, C)                kmeans_profiles(P, C, k)
    GridSearch(k=k).fit(P_arms, arms)            grid_search(P_arms, arms, k)
    (the trees: coarse_gpu.policy.tree.PolicyTree / policy_tree, coarse_gpu.policy.ot_tree.OTTree / ot_tree)

Conventions shared by all baselines
-----------------------------------
* The policy has exactly ``k`` treatment slots (``policy.k == k``). Two segments may end up with
  the same candidate (e.g. two feature clusters that both prefer the deepest discount): the slot
  count stays ``k`` and ``info["n_unique_treatments"]`` records how many distinct treatments are used.
* Empty segments: a slot that no customer is assigned to (possible only when there are fewer
  distinct points than ``k`` to cluster) gets the single best candidate for the whole population
  as a placeholder treatment; it serves nobody and has no effect on the policy's value; its center is
  NaN, so no new customer is assigned to it either. ``info["empty_segments"]`` lists such slots.
* ``info["candidate_index"]`` (K,) holds the column of ``profit`` of each slot, so the estimated
  value of any baseline is ``estimated_value(profit, policy)`` without re-evaluating a model.

Large N: fitting on a sample
----------------------------
k-means on covariates or on profit vectors (``KMeansFeatures``, ``KMeansProfiles``) and the trees
(``PolicyTree``, ``OTTree``) fit on at most ``max_fit_rows`` customers (default
``coarse_gpu.policy.clustering.MAX_FIT_ROWS`` = 200,000). With more, they fit on a uniform random
sample of that many customers, drawn without replacement with the estimator's ``seed``
(``numpy.random.default_rng(seed)``), and then assign every customer: to its nearest k-means center, or
down the fitted tree. Everything after the fit uses all customers: each segment's treatment is its best
candidate by mean profit over all its members, the tree's leaves are relabelled on all of them, and the
estimated value is over all of them. ``info["n_fit_rows"]`` records the sample size when there was one.
At or below the threshold the fit is on every row, exactly as before the threshold existed (the
default 50,000-customer run is unchanged bit for bit).
Why: the fits cost N x K x q per k-means iteration (times n_init) and N x p x M per tree level, while the
answer -- K centers, or a few thresholds -- is pinned by far fewer rows: a 200,000-row sample puts a
k-means center within ~sd / sqrt(200,000 / K) of the full fit's and a tree's thresholds within a
fraction of a percent in quantile, and keeps a 2,000,000-customer run's baselines at seconds per K on
2 cores. ``KMeansPreferences`` never samples: it clusters the at most M distinct ideal points weighted
by their counts, which is exact and cheap for any N.

Work that does not depend on K is done once if the caller keeps it: a ``ProfitView`` (row argmax,
column means) shared across K, ``feature_embedding(X)`` and ``profile_embedding(profit)`` passed as
``embedding=`` (``coarse_gpu.experiment.methods`` does all three).
"""
from __future__ import annotations

from math import comb
from typing import Optional

import numpy as np
import torch

from coarse_gpu.discretize.facility import DEFAULT_BYTES, best_subset
from coarse_gpu.policy.clustering import MAX_FIT_ROWS, cluster_rows, kmeans, nearest_center
from coarse_gpu.policy.embeddings import (
    FeatureEmbedding,
    ProfileEmbedding,
    check_features,
    feature_embedding,
    profile_embedding,
    profile_points,
)
from coarse_gpu.policy.estimator import (
    PolicyEstimator,
    check_candidates,
    check_k,
    estimated_value,
    policy_from_segments,
    segment_best_candidates,
)
from coarse_gpu.policy.policy import Policy
from coarse_gpu.policy.profit_view import ProfitView, as_view, to_numpy

__all__ = [
    "FeatureEmbedding", "FullPersonalization", "GridSearch", "KMeansFeatures", "KMeansPreferences", "KMeansProfiles",
    "MAX_FIT_ROWS", "ProfileEmbedding", "ProfitView", "SingleBest", "estimated_value", "feature_embedding",
    "full_personalization", "grid_search", "kmeans_features", "kmeans_preferences", "kmeans_profiles",
    "profile_embedding", "segment_best_candidates", "single_best",
]


def _n_rows(data) -> int:
    """Number of customers (rows) of an array, a FactoredProfit or a ProfitView."""
    shape = data.shape if hasattr(data, "shape") else np.shape(data)
    return int(shape[0])


def _empty_centers(centers: np.ndarray, policy: Policy) -> np.ndarray:
    """The (K, q) centers with all-NaN rows for the slots no fitted customer is in (never chosen)."""
    out = np.array(centers, dtype=np.float64, copy=True)
    out[policy.segment_sizes == 0] = np.nan
    return out


# ---------------------------------------------------------------------------------------------
# bounds
# ---------------------------------------------------------------------------------------------
class SingleBest(PolicyEstimator):
    """One treatment for everyone (K = 1): the candidate with the highest mean profit.

    fit(profit (N, M), candidates (M, d)); policy_ has treatments (1, d) and an all-zero assignment;
    assign(anything with n rows) -> zeros (n,).
    """

    policy_name = "single_best"
    saved_rule = "argmax"

    def __init__(self) -> None:
        pass

    def fit(self, profit, candidates, X=None) -> "SingleBest":
        view = as_view(profit)
        c = check_candidates(view, candidates)
        mean = view.col_mean()
        j = int(np.argmax(mean))
        return self._set_policy(Policy(
            "single_best", c[[j]], np.zeros(view.n, dtype=np.int64),
            {"candidate_index": np.array([j]), "estimated_value": float(mean[j]), "empty_segments": [],
             "n_unique_treatments": 1},
        ), c)

    def _assign(self, data) -> np.ndarray:
        return np.zeros(_n_rows(data), dtype=np.int64)


class FullPersonalization(PolicyEstimator):
    """Every customer gets its own best candidate (the upper bound on the candidate set).

    policy_ has K = number of distinct chosen candidates (sorted by candidate index); assignment[i]
    indexes into those K treatments. assign(profit (n, M)) -> each new customer's best of those K.
    """

    policy_name = "full_personalization"
    saved_rule = None  # the fully personalized policy is the bound, not a policy to deploy

    def __init__(self) -> None:
        pass

    def fit(self, profit, candidates, X=None) -> "FullPersonalization":
        view = as_view(profit)
        c = check_candidates(view, candidates)
        used, assignment = view.ideal_candidates()
        return self._set_policy(Policy(
            "full_personalization", c[used], assignment.astype(np.int64),
            {"candidate_index": used.astype(np.int64), "estimated_value": float(view.row_max().mean()),
             "empty_segments": [], "n_unique_treatments": int(used.size)},
        ), c)

    def _assign(self, profit) -> np.ndarray:
        return self._profit_of_new(profit).argmax_columns(self.candidate_index_)


def single_best(profit, candidates) -> Policy:
    """One treatment for everyone (K = 1): ``SingleBest().fit(profit, candidates).policy_``.

    profit : (N, M) profit of each customer at each candidate (currency units per customer), dense or
    factored. candidates : (M, d). Returns a Policy with treatments (1, d) and an all-zero assignment.
    """
    return SingleBest().fit(profit, candidates).policy_


def full_personalization(profit, candidates) -> Policy:
    """Every customer gets its own best candidate: ``FullPersonalization().fit(profit, candidates).policy_``."""
    return FullPersonalization().fit(profit, candidates).policy_


# ---------------------------------------------------------------------------------------------
# segmentation baselines
# ---------------------------------------------------------------------------------------------
class KMeansFeatures(PolicyEstimator):
    """Segment on characteristics: k-means on standardized covariates, each segment's best candidate.

    k : segments (= treatment slots), <= N. seed, n_init : k-means seed and initializations (the best
    inertia is kept). max_fit_rows : above it, k-means on a seeded sample (module docstring).
    fit(profit (N, M), candidates (M, d), X (N, p), embedding=None): ``embedding`` =
    ``feature_embedding(X)`` skips re-standardizing at every K. k-means never returns empty clusters
    when there are > k distinct customers; with at most k each distinct row is a segment, the spare
    slots are empty.
    Fitted: center_, scale_ (p,) the standardization; centers_ (K, p) the k-means centers in
    standardized units (NaN rows: empty slots); candidate_index_, treatments_, labels_, policy_.
    assign(X (n, p)) -> nearest center of the standardized rows.
    """

    policy_name = "kmeans_features"
    saved_rule = "feature_centroid"
    assign_input = "X"

    def __init__(self, *, k: int = 5, seed: int = 0, n_init: int = 4, max_fit_rows: Optional[int] = MAX_FIT_ROWS):
        self.k = k
        self.seed = seed
        self.n_init = n_init
        self.max_fit_rows = max_fit_rows

    def fit(self, profit, candidates, X=None, embedding: Optional[FeatureEmbedding] = None) -> "KMeansFeatures":
        view = as_view(profit)
        c = check_candidates(view, candidates)
        if embedding is None:
            if X is None:
                raise ValueError("KMeansFeatures.fit needs the covariates X (N, p)")
            embedding = feature_embedding(check_features(X, view.n))
        elif embedding.z.shape[0] != view.n:
            raise ValueError(f"embedding has {embedding.z.shape[0]} rows but profit has {view.n}")
        k = check_k(self.k, view.n, "the number of customers N")
        labels, centers, rows = cluster_rows(embedding, k, self.seed, self.n_init, self.max_fit_rows)
        info = {"seed": self.seed, "n_init": self.n_init}
        if rows is not None:
            info["n_fit_rows"] = int(rows.size)
        pol = policy_from_segments("kmeans_features", labels, view, c, k, info)
        self.center_, self.scale_ = embedding.center, embedding.scale
        self.centers_ = _empty_centers(centers, pol)
        return self._set_policy(pol, c)

    def _assign(self, X) -> np.ndarray:
        x = check_features(X)
        if x.shape[1] != self.center_.shape[0]:
            raise ValueError(f"KMeansFeatures.assign: X has {x.shape[1]} columns, fitted on {self.center_.shape[0]}")
        return nearest_center((x - self.center_) / self.scale_, self.centers_)


def _preference_scale(scale, c: np.ndarray) -> np.ndarray:
    """(d,) positive scale of the treatment dimensions (default: the candidates' range per dimension)."""
    if scale is None:
        s = c.max(axis=0) - c.min(axis=0)
        s[s <= 0] = 1.0
        return s
    s = to_numpy(scale, "scale").reshape(-1)
    if s.shape != (c.shape[1],) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"scale must be {c.shape[1]} positive finite numbers (one per treatment dimension), got {s}")
    return s


class KMeansPreferences(PolicyEstimator):
    """Segment on preferences: k-means on each customer's estimated ideal treatment t*_i.

    t*_i = candidates[argmax_m profit[i, m]] is divided by ``scale`` ((d,) positive, e.g. the span of
    the treatment space; default: the candidates' range per dimension) so that the units of the
    treatment dimensions do not decide the clustering, then clustered with k-means (the distinct
    t* points are clustered with their counts as weights, which is the same k-means objective and
    much faster, since t* takes at most M values: no sampling is ever needed).

    Treatment of each segment: the candidate that maximizes the segment's *mean estimated profit*,
    not the k-means centroid. The centroid of ideal points can be a treatment nobody in the segment
    likes (profit surfaces are asymmetric: a too-deep discount loses margin on every purchase, a
    too-shallow one loses only some purchases), and the segment's best candidate is never worse
    under the estimated profits; it is also the rule the other baselines use ("give each cluster
    its best tau"), so the baselines differ only in how they segment. The centroids (back in
    treatment units) are kept in ``info["centroids"]``.
    With at most k distinct ideal points each gets its own segment (this is full personalization
    on the candidates) and the remaining slots are empty.
    Fitted: scale_ (d,); centers_ (K, d) the centroids in scaled units (NaN rows: empty slots);
    candidates_ (M, d); candidate_index_, treatments_, labels_, policy_.
    assign(profit (n, M)) -> the nearest centroid of each new customer's scaled ideal candidate.
    """

    policy_name = "kmeans_preferences"
    saved_rule = "preference_centroid"

    def __init__(self, *, k: int = 5, seed: int = 0, scale=None, n_init: int = 4):
        self.k = k
        self.seed = seed
        self.scale = scale
        self.n_init = n_init

    def fit(self, profit, candidates, X=None) -> "KMeansPreferences":
        view = as_view(profit)
        c = check_candidates(view, candidates)
        k = check_k(self.k, view.n, "the number of customers N")
        s = _preference_scale(self.scale, c)
        used, inverse = view.ideal_candidates()
        pts = c[used] / s
        if used.size <= k:
            point_label = np.arange(used.size, dtype=np.int64)
            centers = pts.copy()
        else:
            point_label, centers = kmeans(pts, k, self.seed, self.n_init,
                                          sample_weight=np.bincount(inverse).astype(np.float64))
        labels = point_label[inverse]
        pol = policy_from_segments("kmeans_preferences", labels, view, c, k,
                                   {"seed": self.seed, "n_init": self.n_init, "scale": s})
        cent = np.full((k, c.shape[1]), np.nan)
        cent[: centers.shape[0]] = centers
        pol.info["centroids"] = cent * s
        self.scale_ = s
        self.centers_ = _empty_centers(cent, pol)
        return self._set_policy(pol, c)

    def _assign(self, profit) -> np.ndarray:
        best = self._profit_of_new(profit).row_argmax()
        return nearest_center(self.candidates_[best] / self.scale_, self.centers_)


class KMeansProfiles(PolicyEstimator):
    """Segment on estimated effects: k-means on the standardized profit vectors (rows of ``profit``).

    Each column of ``profit`` is standardized over customers, then (if M > n_components) projected
    on its first ``n_components`` principal components (which keeps k-means fast for large
    candidate grids; None = no projection), clustered with k-means; each segment gets its best
    candidate by mean profit. fit(..., embedding=``profile_embedding(profit, n_components, seed)``)
    skips recomputing the projection at every K. max_fit_rows : above it, k-means on a seeded sample
    (module docstring). The projection is also kept in ``info`` (p_mean, p_scale, components, pca_mean).
    Fitted: p_mean_, p_scale_ (M,), components_ (q, M) and pca_mean_ (M,) (None without projection),
    centers_ (K, q) (NaN rows: empty slots), candidates_; candidate_index_, treatments_, labels_, policy_.
    assign(profit (n, M)) -> nearest center of each new customer's projected profit vector.
    """

    policy_name = "kmeans_profiles"
    saved_rule = "profile_centroid"

    def __init__(self, *, k: int = 5, seed: int = 0, n_components: Optional[int] = 20, n_init: int = 4,
                 max_fit_rows: Optional[int] = MAX_FIT_ROWS):
        self.k = k
        self.seed = seed
        self.n_components = n_components
        self.n_init = n_init
        self.max_fit_rows = max_fit_rows

    def fit(self, profit, candidates, X=None, embedding: Optional[ProfileEmbedding] = None) -> "KMeansProfiles":
        view = as_view(profit)
        c = check_candidates(view, candidates)
        k = check_k(self.k, view.n, "the number of customers N")
        emb = embedding if embedding is not None else profile_embedding(view, self.n_components, self.seed)
        if emb.z.shape[0] != view.n:
            raise ValueError(f"embedding has {emb.z.shape[0]} rows but profit has {view.n}")
        labels, centers, rows = cluster_rows(emb, k, self.seed, self.n_init, self.max_fit_rows)
        info = {"seed": self.seed, "n_init": self.n_init, "n_components": self.n_components, "p_mean": emb.p_mean,
                "p_scale": emb.p_scale}
        if emb.components is not None:
            info.update(components=emb.components, pca_mean=emb.pca_mean)
        if rows is not None:
            info["n_fit_rows"] = int(rows.size)
        pol = policy_from_segments("kmeans_profiles", labels, view, c, k, info)
        self.p_mean_, self.p_scale_ = emb.p_mean, emb.p_scale
        self.components_, self.pca_mean_ = emb.components, emb.pca_mean
        self.centers_ = _empty_centers(centers, pol)
        return self._set_policy(pol, c)

    def _assign(self, profit) -> np.ndarray:
        z = profile_points(self._profit_of_new(profit), self.p_mean_, self.p_scale_, self.components_, self.pca_mean_)
        return nearest_center(z, self.centers_)


def kmeans_features(X, profit, candidates, k: int, seed: int = 0, n_init: int = 4,
                    embedding: Optional[FeatureEmbedding] = None, max_fit_rows: Optional[int] = MAX_FIT_ROWS) -> Policy:
    """Segment on characteristics (``KMeansFeatures``): k-means on standardized covariates X (N, p),
    each segment's best candidate. profit (N, M) dense or factored; candidates (M, d); k <= N."""
    est = KMeansFeatures(k=k, seed=seed, n_init=n_init, max_fit_rows=max_fit_rows)
    return est.fit(profit, candidates, X, embedding=embedding).policy_


def kmeans_preferences(profit, candidates, k: int, seed: int = 0, scale=None, n_init: int = 4) -> Policy:
    """Segment on preferences (``KMeansPreferences``): k-means on the estimated ideal treatments t*_i / scale."""
    return KMeansPreferences(k=k, seed=seed, scale=scale, n_init=n_init).fit(profit, candidates).policy_


def kmeans_profiles(profit, candidates, k: int, seed: int = 0, n_components: Optional[int] = 20,
                    n_init: int = 4, embedding: Optional[ProfileEmbedding] = None,
                    max_fit_rows: Optional[int] = MAX_FIT_ROWS) -> Policy:
    """Segment on estimated effects (``KMeansProfiles``): k-means on the standardized (and projected)
    profit vectors; ``embedding`` = ``profile_embedding(profit, n_components, seed)`` computed once."""
    est = KMeansProfiles(k=k, seed=seed, n_components=n_components, n_init=n_init, max_fit_rows=max_fit_rows)
    return est.fit(profit, candidates, embedding=embedding).policy_


# ---------------------------------------------------------------------------------------------
# grid search: best K-subset of a prespecified grid
# ---------------------------------------------------------------------------------------------
class GridSearch(PolicyEstimator):
    """Best K-subset of a prespecified grid of treatments (e.g. the experimental arms).

    Maximizes sum_i max_{g in S} profit_at_grid[i, g] over subsets S of size k; each customer then
    gets its best treatment within S (``assignment`` = argmax within S).

    fit(profit_at_grid (N, G), grid (G, d)): profit of each customer at each grid point (e.g. a model's
        per-arm predictions), currency units per customer. A FactoredProfit is formed as the (N, G)
        matrix: a prespecified grid is small (15 arms in the built-in experiment), and the search needs
        every column. k : subset size, 1 <= k <= G (k > G is a ValueError).
    method : "auto" (exact enumeration if C(G, k) <= max_exact, else "local"), "exact" (enumerate
        all C(G, k) subsets, vectorized in torch, chunked so that temporaries stay under
        ``max_bytes``), "local" (greedy start and ``n_restarts`` random starts drawn with ``seed``,
        each improved by best-improvement 1-swap local search; the best is kept) or "greedy"
        (forward selection only; kept for comparisons).
    Exact enumeration screens all totals in float32 (with tables of half-subset maxima, so each
    subset costs one max of two rows) and rescores every subset within a conservative float32 error
    bound of the best in float64, so the result is the exact float64 optimum.
    device : torch device for the search ("auto": CUDA when available, else CPU). On CPU the
        pipeline's case (N = 20k, G = 15 arms, K <= 8) takes about a second per K.
    The policy's ``info`` has the chosen grid indices ("subset"), the method used and the estimated
    value (mean per customer). Ties go to the lexicographically first subset (exact).
    Fitted: subset_ (K,) grid indices, candidate_index_, treatments_, labels_, policy_.
    assign(profit_at_grid (n, G)) -> each new customer's best of the K.
    """

    policy_name = "grid"
    saved_rule = "argmax"

    def __init__(self, *, k: int = 5, seed: int = 0, method: str = "auto", max_exact: int = 20_000,
                 n_restarts: int = 4, max_bytes: int = DEFAULT_BYTES, device: str | torch.device = "auto"):
        self.k = k
        self.seed = seed
        self.method = method
        self.max_exact = max_exact
        self.n_restarts = n_restarts
        self.max_bytes = max_bytes
        self.device = device

    def fit(self, profit, candidates, X=None) -> "GridSearch":
        view = as_view(profit, "profit_at_grid")
        g_np = check_candidates(view, candidates, "profit_at_grid", "grid")
        p_np = view.dense if not view.factored else view.columns(np.arange(view.m))
        n, G = p_np.shape
        k = check_k(self.k, G, "the number of grid points G")
        if self.method not in ("auto", "exact", "local", "greedy"):
            raise ValueError(f"method must be 'auto', 'exact', 'local' or 'greedy', got {self.method!r}")
        if self.n_restarts < 0:
            raise ValueError(f"n_restarts must be >= 0, got {self.n_restarts}")
        n_subsets = comb(G, k)
        used = self.method if self.method != "auto" else ("exact" if n_subsets <= self.max_exact else "local")
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        p = torch.as_tensor(p_np, dtype=torch.float64, device=torch.device(device))
        if used == "exact" and n_subsets > 50_000_000:
            raise ValueError(f"method='exact': C({G}, {k}) = {n_subsets} subsets is too many to enumerate; use 'local'")
        S, total = best_subset(p, k, used, seed=self.seed, n_restarts=self.n_restarts, max_bytes=self.max_bytes)
        assignment = p_np[:, S].argmax(axis=1).astype(np.int64)
        self.subset_ = np.asarray(S, dtype=np.int64)
        return self._set_policy(Policy(
            "grid", g_np[S], assignment,
            {"subset": S, "candidate_index": np.asarray(S, dtype=np.int64), "method": used,
             "n_subsets": n_subsets, "estimated_value": total / n, "seed": self.seed, "empty_segments":
             np.flatnonzero(np.bincount(assignment, minlength=k) == 0).tolist(), "n_unique_treatments": k},
        ), g_np)

    def _assign(self, profit) -> np.ndarray:
        return self._profit_of_new(profit).argmax_columns(self.subset_)


def grid_search(profit_at_grid, grid, k: int, seed: int = 0, method: str = "auto", max_exact: int = 20_000,
                n_restarts: int = 4, max_bytes: int = DEFAULT_BYTES, device: str | torch.device = "auto") -> Policy:
    """Best K-subset of a prespecified grid (``GridSearch``, which documents the arguments)."""
    est = GridSearch(k=k, seed=seed, method=method, max_exact=max_exact, n_restarts=n_restarts, max_bytes=max_bytes,
                     device=device)
    return est.fit(profit_at_grid, grid).policy_
