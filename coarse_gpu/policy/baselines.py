"""Baseline coarse personalization policies (the paper's comparisons) and the two bounds.

Every function takes an *estimated* (or, on simulated data, true) profit matrix

    profit : (N, M) float, profit[i, m] = pi_hat(x_i, candidates[m]) in currency units per customer,
    candidates : (M, d) float, the treatments the columns refer to (treatment-space units),

and returns a :class:`~coarse_gpu.policy.policy.Policy`. All of them choose treatments among the
candidates (no continuous search: that is the OT discretizer's job), so a baseline is never
handicapped by a different candidate set than the method it is compared with.

Conventions shared by all baselines
-----------------------------------
* The policy has exactly ``k`` treatment slots (``policy.k == k``). Two segments may end up with
  the same candidate (e.g. two feature clusters that both prefer the deepest discount): the slot
  count stays ``k`` and ``info["n_unique_treatments"]`` records how many distinct treatments are used.
* Empty segments: a slot that no customer is assigned to (possible only when there are fewer
  distinct points than ``k`` to cluster) gets the single best candidate for the whole population
  as a placeholder treatment; it serves nobody and has no effect on the policy's value.
  ``info["empty_segments"]`` lists such slots.
* ``info["candidate_index"]`` (K,) holds the column of ``profit`` of each slot, so the estimated
  value of any baseline is ``estimated_value(profit, policy)`` without re-evaluating a model.
"""
from __future__ import annotations

from math import comb
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from coarse_gpu.discretize.facility import DEFAULT_BYTES, best_subset
from coarse_gpu.policy.policy import Policy

__all__ = [
    "estimated_value",
    "full_personalization",
    "grid_search",
    "kmeans_features",
    "kmeans_preferences",
    "kmeans_profiles",
    "segment_best_candidates",
    "single_best",
]

# Default working-memory budget of the vectorized grid search (bytes of float64 temporaries).


# ---------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------
def _to_numpy(a, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array, got {type(a).__name__}") from exc


def _check_profit_candidates(profit, candidates, profit_name: str = "profit",
                             cand_name: str = "candidates") -> tuple[np.ndarray, np.ndarray]:
    """(N, M) profit and (M, d) candidates as float64 arrays, with shape and finiteness checks.

    A 1-D ``candidates`` array is read as M one-dimensional treatments (d = 1).
    """
    p = _to_numpy(profit, profit_name)
    c = _to_numpy(candidates, cand_name)
    if c.ndim == 1:
        c = c[:, None]
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"{profit_name} must be a non-empty 2-D (N, M) array, got shape {p.shape}")
    if c.ndim != 2 or c.shape[1] == 0:
        raise ValueError(f"{cand_name} must be a 2-D (M, d) array, got shape {c.shape}")
    if p.shape[1] != c.shape[0]:
        raise ValueError(
            f"{profit_name} has {p.shape[1]} columns but {cand_name} has {c.shape[0]} rows; "
            f"column m of {profit_name} must be the profit at {cand_name}[m]"
        )
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{profit_name} contains NaN or inf")
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{cand_name} contains NaN or inf")
    return p, c


def _check_k(k, upper: Optional[int] = None, upper_what: str = "") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if upper is not None and k > upper:
        raise ValueError(f"k={k} exceeds {upper_what} ({upper})")
    return k


def _policy_from_segments(name: str, labels: np.ndarray, profit: np.ndarray, candidates: np.ndarray,
                          k: int, info: dict) -> Policy:
    """Segments ``labels`` (N,) in [0, k) -> each gets its best candidate; empty slots documented."""
    cand_idx, sizes = segment_best_candidates(profit, labels, k)
    empty = np.flatnonzero(sizes == 0)
    if empty.size:
        cand_idx[empty] = int(np.argmax(profit.mean(axis=0)))
    info = dict(info)
    info.update(
        candidate_index=cand_idx,
        empty_segments=empty.tolist(),
        n_unique_treatments=int(np.unique(cand_idx[sizes > 0]).size),
        estimated_value=float(profit[np.arange(profit.shape[0]), cand_idx[labels]].mean()),
    )
    return Policy(name, candidates[cand_idx], labels.astype(np.int64), info)


def segment_best_candidates(profit: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best candidate of each segment by mean profit.

    profit : (N, M) profit matrix; labels : (N,) int segment of each customer in [0, k).
    Returns (candidate index (k,) int64, segment sizes (k,) int64). Empty segments get index 0
    (callers replace it; see the module docstring).
    """
    p = _to_numpy(profit, "profit")
    lab = np.asarray(labels)
    if p.ndim != 2:
        raise ValueError(f"profit must be 2-D (N, M), got shape {p.shape}")
    if lab.shape != (p.shape[0],):
        raise ValueError(f"labels must have shape ({p.shape[0]},), got {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}), got range [{lab.min()}, {lab.max()}]")
    sizes = np.bincount(lab, minlength=k).astype(np.int64)
    idx = np.zeros(k, dtype=np.int64)
    for s in np.flatnonzero(sizes):
        idx[s] = int(np.argmax(p[lab == s].mean(axis=0)))
    return idx, sizes


def estimated_value(profit, policy: Policy) -> float:
    """Mean profit per customer of a baseline ``policy`` under the profit matrix it was built on.

    Uses ``policy.info["candidate_index"]`` (every baseline in this module stores it):
    mean_i profit[i, candidate_index[assignment[i]]].
    """
    p = _to_numpy(profit, "profit")
    if "candidate_index" not in policy.info:
        raise ValueError(f"policy '{policy.name}' has no info['candidate_index']; it was not built on a profit matrix")
    if p.ndim != 2 or p.shape[0] != policy.n:
        raise ValueError(f"profit must have shape ({policy.n}, M) to match the policy, got {p.shape}")
    cols = np.asarray(policy.info["candidate_index"])[policy.assignment]
    return float(p[np.arange(policy.n), cols].mean())


# ---------------------------------------------------------------------------------------------
# bounds
# ---------------------------------------------------------------------------------------------
def single_best(profit, candidates) -> Policy:
    """One treatment for everyone (K = 1): the candidate with the highest mean profit.

    profit : (N, M) profit of each customer at each candidate (currency units per customer).
    candidates : (M, d) candidate treatments.
    Returns a Policy with treatments (1, d) and an all-zero assignment.
    """
    p, c = _check_profit_candidates(profit, candidates)
    mean = p.mean(axis=0)
    j = int(np.argmax(mean))
    return Policy(
        "single_best", c[[j]], np.zeros(p.shape[0], dtype=np.int64),
        {"candidate_index": np.array([j]), "estimated_value": float(mean[j]), "empty_segments": [],
         "n_unique_treatments": 1},
    )


def full_personalization(profit, candidates) -> Policy:
    """Every customer gets its own best candidate (the upper bound on the candidate set).

    Returns a Policy whose K = number of distinct chosen candidates (sorted by candidate index);
    ``assignment[i]`` indexes into those K treatments.
    """
    p, c = _check_profit_candidates(profit, candidates)
    best = p.argmax(axis=1)
    used, assignment = np.unique(best, return_inverse=True)
    return Policy(
        "full_personalization", c[used], assignment.reshape(-1).astype(np.int64),
        {"candidate_index": used.astype(np.int64), "estimated_value": float(p.max(axis=1).mean()),
         "empty_segments": [], "n_unique_treatments": int(used.size)},
    )


# ---------------------------------------------------------------------------------------------
# segmentation baselines
# ---------------------------------------------------------------------------------------------
def _standardize(X: np.ndarray) -> np.ndarray:
    mu = X.mean(axis=0)
    sd = X.std(axis=0)
    sd[sd <= 1e-12] = 1.0  # constant columns carry no information; keep them at 0
    return (X - mu) / sd


def _kmeans(points: np.ndarray, k: int, seed: int, n_init: int,
            sample_weight: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """sklearn k-means -> (labels (n,), centers (k, q)). Needs at least k distinct points."""
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    km = KMeans(n_clusters=k, n_init=n_init, random_state=int(seed))
    km.fit(points, sample_weight=sample_weight)
    return km.labels_.astype(np.int64), km.cluster_centers_


def kmeans_features(X, profit, candidates, k: int, seed: int = 0, n_init: int = 4) -> Policy:
    """Segment on characteristics: k-means on standardized covariates, each segment's best candidate.

    X : (N, p) covariates (model matrix); standardized column-wise here (constant columns -> 0).
    profit : (N, M) profit of each customer at each candidate; candidates : (M, d).
    k : number of segments (= treatment slots); must be <= N.
    seed, n_init : k-means seed and number of initializations (the best inertia is kept).

    Each segment gets the candidate that maximizes its mean profit. k-means never returns empty
    clusters when there are >= k distinct customers; with fewer distinct rows the spare slots are
    empty (see the module docstring).
    """
    p, c = _check_profit_candidates(profit, candidates)
    x = _to_numpy(X, "X")
    if x.ndim != 2 or x.shape[0] != p.shape[0]:
        raise ValueError(f"X must be a 2-D (N, p) array with N={p.shape[0]} rows like profit, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("X contains NaN or inf")
    k = _check_k(k, p.shape[0], "the number of customers N")
    z = _standardize(x)
    uniq, inverse = np.unique(z, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    if uniq.shape[0] <= k:  # fewer distinct customers than segments: one segment each
        labels = inverse
    else:
        labels, _ = _kmeans(z, k, seed, n_init)
    return _policy_from_segments("kmeans_features", labels, p, c, k, {"seed": seed, "n_init": n_init})


def kmeans_preferences(profit, candidates, k: int, seed: int = 0, scale=None, n_init: int = 4) -> Policy:
    """Segment on preferences: k-means on each customer's estimated ideal treatment t*_i.

    profit : (N, M) profit at the candidates; candidates : (M, d).
    t*_i = candidates[argmax_m profit[i, m]] is divided by ``scale`` ((d,) positive, e.g. the span of
    the treatment space; default: the candidates' range per dimension) so that the units of the
    treatment dimensions do not decide the clustering, then clustered with k-means (the distinct
    t* points are clustered with their counts as weights, which is the same k-means objective and
    much faster, since t* takes at most M values).

    Treatment of each segment: the candidate that maximizes the segment's *mean estimated profit*,
    not the k-means centroid. The centroid of ideal points can be a treatment nobody in the segment
    likes (profit surfaces are asymmetric: a too-deep discount loses margin on every purchase, a
    too-shallow one loses only some purchases), and the segment's best candidate is never worse
    under the estimated profits; it is also the rule the other baselines use ("give each cluster
    its best tau"), so the baselines differ only in how they segment. The centroids (back in
    treatment units) are kept in ``info["centroids"]``.
    With at most k distinct ideal points each gets its own segment (this is full personalization
    on the candidates) and the remaining slots are empty.
    """
    p, c = _check_profit_candidates(profit, candidates)
    k = _check_k(k, p.shape[0], "the number of customers N")
    if scale is None:
        s = c.max(axis=0) - c.min(axis=0)
        s[s <= 0] = 1.0
    else:
        s = _to_numpy(scale, "scale").reshape(-1)
        if s.shape != (c.shape[1],) or not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError(
                f"scale must be {c.shape[1]} positive finite numbers (one per treatment dimension), got {s}"
            )
    best = p.argmax(axis=1)
    used, inverse = np.unique(best, return_inverse=True)
    inverse = inverse.reshape(-1)
    pts = c[used] / s
    if used.size <= k:
        point_label = np.arange(used.size, dtype=np.int64)
        centers = pts.copy()
    else:
        point_label, centers = _kmeans(pts, k, seed, n_init, sample_weight=np.bincount(inverse).astype(np.float64))
    labels = point_label[inverse]
    pol = _policy_from_segments("kmeans_preferences", labels, p, c, k,
                                {"seed": seed, "n_init": n_init, "scale": s})
    cent = np.full((k, c.shape[1]), np.nan)
    cent[: centers.shape[0]] = centers * s
    pol.info["centroids"] = cent
    return pol


@dataclass(frozen=True)
class ProfileEmbedding:
    """The points k-means on profit vectors clusters, and the map that makes them from a profit row.

    z : (N, q) the customers' points; p_mean, p_scale : (M,) the column standardization of the profit
    matrix; components (q, M) and pca_mean (M,) the principal-component projection (None without
    one); n_distinct : number of distinct rows of z. A new customer's point is
    ((profit_row - p_mean) / p_scale - pca_mean) @ components.T.
    """

    z: np.ndarray
    p_mean: np.ndarray
    p_scale: np.ndarray
    components: Optional[np.ndarray]
    pca_mean: Optional[np.ndarray]
    n_distinct: int


def profile_embedding(profit, n_components: Optional[int] = 20, seed: int = 0) -> ProfileEmbedding:
    """Standardize the (N, M) profit columns and, if M > n_components, project on their first
    ``n_components`` principal components. It depends on K not at all: compute it once per profit matrix."""
    p = _to_numpy(profit, "profit").astype(np.float64, copy=False)
    mu, sd = p.mean(axis=0), p.std(axis=0)
    sd = np.where(sd <= 1e-12, 1.0, sd)  # constant columns carry no information; keep them at 0
    z = (p - mu) / sd
    comps = pmean = None
    if n_components is not None and z.shape[1] > n_components:
        pca = PCA(n_components=int(n_components), random_state=int(seed)).fit(z)
        comps, pmean = pca.components_, pca.mean_
        z = (z - pmean) @ comps.T
    return ProfileEmbedding(z, mu, sd, comps, pmean, int(np.unique(z, axis=0).shape[0]))


def kmeans_profiles(profit, candidates, k: int, seed: int = 0, n_components: Optional[int] = 20,
                    n_init: int = 4, embedding: Optional[ProfileEmbedding] = None) -> Policy:
    """Segment on estimated effects: k-means on the standardized profit vectors (rows of ``profit``).

    Each column of ``profit`` is standardized over customers, then (if M > n_components) projected
    on its first ``n_components`` principal components (which keeps k-means fast for large
    candidate grids; None = no projection), clustered with k-means; each segment gets its best
    candidate by mean profit. ``embedding`` (``profile_embedding(profit, n_components, seed)``)
    skips recomputing the projection at every K. The projection is kept in ``info`` (p_mean,
    p_scale, components, pca_mean) so that new customers are mapped the same way.
    """
    p, c = _check_profit_candidates(profit, candidates)
    k = _check_k(k, p.shape[0], "the number of customers N")
    emb = embedding if embedding is not None else profile_embedding(p, n_components, seed)
    if emb.z.shape[0] != p.shape[0]:
        raise ValueError(f"embedding has {emb.z.shape[0]} rows but profit has {p.shape[0]}")
    if emb.n_distinct <= k:
        labels = np.unique(emb.z, axis=0, return_inverse=True)[1].reshape(-1)
    else:
        labels, _ = _kmeans(emb.z, k, seed, n_init)
    info = {"seed": seed, "n_init": n_init, "n_components": n_components, "p_mean": emb.p_mean,
            "p_scale": emb.p_scale}
    if emb.components is not None:
        info.update(components=emb.components, pca_mean=emb.pca_mean)
    return _policy_from_segments("kmeans_profiles", labels, p, c, k, info)


# ---------------------------------------------------------------------------------------------
# grid search: best K-subset of a prespecified grid
# ---------------------------------------------------------------------------------------------
def grid_search(profit_at_grid, grid, k: int, seed: int = 0, method: str = "auto", max_exact: int = 20_000,
                n_restarts: int = 4, max_bytes: int = DEFAULT_BYTES, device: str | torch.device = "auto") -> Policy:
    """Best K-subset of a prespecified grid of treatments (e.g. the experimental arms).

    Maximizes sum_i max_{g in S} profit_at_grid[i, g] over subsets S of size k; each customer then
    gets its best treatment within S (``assignment`` = argmax within S).

    profit_at_grid : (N, G) profit of each customer at each grid point (e.g. a model's per-arm
        predictions), currency units per customer.
    grid : (G, d) the grid treatments. k : subset size, 1 <= k <= G (k > G is a ValueError).
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
    The result's ``info`` has the chosen grid indices ("subset"), the method used and the
    estimated value (mean per customer). Ties go to the lexicographically first subset (exact).
    """
    p_np, g_np = _check_profit_candidates(profit_at_grid, grid, "profit_at_grid", "grid")
    n, G = p_np.shape
    k = _check_k(k, G, "the number of grid points G")
    if method not in ("auto", "exact", "local", "greedy"):
        raise ValueError(f"method must be 'auto', 'exact', 'local' or 'greedy', got {method!r}")
    if n_restarts < 0:
        raise ValueError(f"n_restarts must be >= 0, got {n_restarts}")
    n_subsets = comb(G, k)
    used = method if method != "auto" else ("exact" if n_subsets <= max_exact else "local")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    p = torch.as_tensor(p_np, dtype=torch.float64, device=torch.device(device))
    if used == "exact" and n_subsets > 50_000_000:
        raise ValueError(f"method='exact': C({G}, {k}) = {n_subsets} subsets is too many to enumerate; use 'local'")
    S, total = best_subset(p, k, used, seed=seed, n_restarts=n_restarts, max_bytes=max_bytes)
    assignment = p_np[:, S].argmax(axis=1).astype(np.int64)
    return Policy(
        "grid", g_np[S], assignment,
        {"subset": S, "candidate_index": np.asarray(S, dtype=np.int64), "method": used,
         "n_subsets": n_subsets, "estimated_value": total / n, "seed": seed, "empty_segments":
         np.flatnonzero(np.bincount(assignment, minlength=k) == 0).tolist(), "n_unique_treatments": k},
    )
