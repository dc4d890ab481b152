"""The points the k-means baselines cluster, and the maps that make them from a (new) customer's data.

Both depend on the customers and never on K: build them once per run and hand them to the baseline
at every K (``embedding=``), which then neither re-standardizes nor re-projects.

``feature_embedding(X)``   kmeans_features: the covariates standardized column-wise,
                           z = (x - center) / scale (constant columns -> 0).
``profile_embedding(P)``   kmeans_profiles: the profit columns standardized over customers and, when
                           M > n_components, projected on their first principal components,
                           z = ((p - p_mean) / p_scale - pca_mean) @ components.T.
                           Dense P: sklearn PCA, as this baseline always did. Factored P = V W^T: the
                           exact moments of all N rows from those of V (mean (A,), covariance (A, A)),
                           the components from the SVD of C^(1/2) W^T / p_scale (A x M), and the points
                           z = (V - mean(V)) @ B with B (A, q) -- nothing N x M is formed, and no sample
                           is needed: the projection is that of every row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from sklearn.decomposition import PCA

from coarse_gpu.policy.clustering import Embedding
from coarse_gpu.policy.profit_view import ProfitView, as_view, to_numpy

__all__ = ["FeatureEmbedding", "ProfileEmbedding", "check_features", "feature_embedding", "profile_embedding",
           "profile_points"]


@dataclass(frozen=True)
class FeatureEmbedding(Embedding):
    """z (N, p) standardized covariates; center, scale (p,) the standardization (scale > 0)."""

    # defaults only because dataclass fields after the base class's z must have one; always given
    center: Optional[np.ndarray] = None
    scale: Optional[np.ndarray] = None

    def transform(self, X) -> np.ndarray:
        """(n, p) points of covariates X (n, p)."""
        return (np.asarray(X, dtype=np.float64) - self.center) / self.scale


def check_features(X, n: Optional[int] = None) -> np.ndarray:
    """X (N, p) as a finite float64 array (N = n when given)."""
    x = to_numpy(X, "X")
    if x.ndim != 2 or (n is not None and x.shape[0] != n):
        raise ValueError(f"X must be a 2-D (N, p) array with N={n} rows like profit, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("X contains NaN or inf")
    return x


def feature_embedding(X) -> FeatureEmbedding:
    """Standardize the covariates X (N, p) column-wise (mean 0, sd 1; constant columns -> 0)."""
    x = check_features(X)
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd <= 1e-12] = 1.0  # constant columns carry no information; keep them at 0
    return FeatureEmbedding((x - mu) / sd, mu, sd)


@dataclass(frozen=True)
class ProfileEmbedding(Embedding):
    """The points k-means on profit vectors clusters, and the map that makes them from a profit row.

    z : (N, q) the customers' points; p_mean, p_scale : (M,) the column standardization of the profit
    matrix; components (q, M) and pca_mean (M,) the principal-component projection (None without one).
    """

    p_mean: Optional[np.ndarray] = None  # (defaults: see FeatureEmbedding; always given)
    p_scale: Optional[np.ndarray] = None
    components: Optional[np.ndarray] = None
    pca_mean: Optional[np.ndarray] = None

    def transform(self, profit) -> np.ndarray:
        """(n, q) points of the customers of an (n, M) profit matrix (dense or factored)."""
        return profile_points(profit, self.p_mean, self.p_scale, self.components, self.pca_mean)


def profile_points(profit, p_mean: np.ndarray, p_scale: np.ndarray, components: Optional[np.ndarray] = None,
                   pca_mean: Optional[np.ndarray] = None) -> np.ndarray:
    """(n, q) ((profit - p_mean) / p_scale - pca_mean) @ components.T (no projection without components)
    for an (n, M) profit matrix, dense or factored (then V @ B + b: O(n A q), never (n, M))."""
    view = as_view(profit)
    if view.m != p_mean.shape[0]:
        raise ValueError(f"profit has {view.m} columns, the embedding was built on {p_mean.shape[0]}")
    if not view.factored:
        z = (view.dense - p_mean) / p_scale
        return z if components is None else (z - pca_mean) @ components.T
    B = view.W.T / p_scale
    b = -p_mean / p_scale
    if components is not None:
        b = (b - pca_mean) @ components.T
        B = B @ components.T
    return view.V @ B + b


def profile_embedding(profit, n_components: Optional[int] = 20, seed: int = 0) -> ProfileEmbedding:
    """Standardize the (N, M) profit columns and, if M > n_components, project on their first
    ``n_components`` principal components. It depends on K not at all: compute it once per profit matrix.
    ``profit``: dense (N, M), a ``FactoredProfit`` or a ``ProfitView`` (module docstring)."""
    view = as_view(profit)
    if view.factored:
        return _factored_profile_embedding(view, n_components, seed)
    p = view.dense
    mu, sd = p.mean(axis=0), p.std(axis=0)
    sd = np.where(sd <= 1e-12, 1.0, sd)  # constant columns carry no information; keep them at 0
    z = (p - mu) / sd
    comps = pmean = None
    if n_components is not None and z.shape[1] > n_components:
        pca = PCA(n_components=int(n_components), random_state=int(seed)).fit(z)
        comps, pmean = pca.components_, pca.mean_
        z = (z - pmean) @ comps.T
    return ProfileEmbedding(z, mu, sd, comps, pmean)


def _centered_moments(V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (A,), population covariance (A, A)) of the rows of V, centered block by block (no N x A copy)."""
    mean = V.mean(0)
    cov = np.zeros((V.shape[1], V.shape[1]))
    step = 1 << 18
    for lo in range(0, V.shape[0], step):
        c = V[lo:lo + step] - mean
        cov += c.T @ c
    return mean, cov / V.shape[0]


def _factored_profile_embedding(view: ProfitView, n_components: Optional[int], seed: int) -> ProfileEmbedding:
    V, W = view.V, view.W
    v_mean, C = _centered_moments(V)
    mu = W @ v_mean
    sd = np.sqrt(np.maximum(np.einsum("ma,ab,mb->m", W, C, W), 0.0))
    sd = np.where(sd <= 1e-12, 1.0, sd)
    G = W.T / sd  # (A, M): standardized profit rows are (v_i - v_mean) @ G
    comps = pmean = None
    B = G
    if n_components is not None and view.m > n_components:
        comps = _components(G, C, int(n_components), seed)
        pmean = np.zeros(view.m)  # the standardized columns have mean 0 exactly
        B = G @ comps.T
    z = np.empty((view.n, B.shape[1]))
    step = 1 << 18
    for lo in range(0, view.n, step):
        z[lo:lo + step] = (V[lo:lo + step] - v_mean) @ B
    return ProfileEmbedding(z, mu, sd, comps, pmean)


def _components(G: np.ndarray, C: np.ndarray, q: int, seed: int) -> np.ndarray:
    """(q, M) leading principal components of the standardized profits, whose covariance is G^T C G.

    With C = S S (S = C^(1/2), symmetric) the covariance is H^T H for H = S G (A, M): its eigenvectors
    are H's right singular vectors (at most A of them with nonzero variance). When q exceeds that, the
    rest is an orthonormal completion (directions of zero variance: every customer's coordinate on them
    is 0), so the embedding has q columns as the dense PCA's does. Signs as sklearn's PCA: each
    component's largest entry in absolute value is positive.
    """
    evals, Q = np.linalg.eigh(C)
    S = (Q * np.sqrt(np.maximum(evals, 0.0))) @ Q.T
    _, _, Vt = np.linalg.svd(S @ G, full_matrices=False)
    comps = Vt[:q]
    if comps.shape[0] < q:
        extra = np.random.default_rng(seed).normal(size=(G.shape[1], q - comps.shape[0]))
        Qc, _ = np.linalg.qr(np.hstack([comps.T, extra]))
        comps = np.vstack([comps, Qc[:, comps.shape[0]:q].T])
    big = np.argmax(np.abs(comps), axis=1)
    return comps * np.sign(comps[np.arange(comps.shape[0]), big])[:, None]
