"""Coarse personalization policies: the ``Policy`` container, the paper's baselines and the bounds.

Baselines (all choose among candidate treatments, given a profit matrix (N, M), dense or a
``FactoredProfit``). Each is an estimator class (``fit`` / ``assign`` / ``policy_``; see
coarse_gpu.policy.estimator) and a function that returns its Policy:
  SingleBest          single_best          one treatment for everyone (K = 1 bound)
  FullPersonalization full_personalization each customer's best candidate (upper bound on the candidates)
  KMeansFeatures      kmeans_features      segment on characteristics (k-means on standardized covariates)
  KMeansPreferences   kmeans_preferences   segment on preferences (k-means on estimated ideal treatments t*_i)
  KMeansProfiles      kmeans_profiles      segment on estimated effects (k-means on standardized profit vectors)
  GridSearch          grid_search          best K-subset of a prespecified grid (e.g. the experimental arms)
  PolicyTree          policy_tree          depth-limited policy tree (coarse_gpu.policy.tree)
  OTTree              ot_tree              the OT's treatments assigned by a tree (coarse_gpu.policy.ot_tree)
"""
from coarse_gpu.policy.baselines import (
    FullPersonalization,
    GridSearch,
    KMeansFeatures,
    KMeansPreferences,
    KMeansProfiles,
    SingleBest,
    estimated_value,
    full_personalization,
    grid_search,
    kmeans_features,
    kmeans_preferences,
    kmeans_profiles,
    segment_best_candidates,
    single_best,
)
from coarse_gpu.policy.estimator import PolicyEstimator
from coarse_gpu.policy.policy import Policy
from coarse_gpu.policy.profit_view import ProfitView

__all__ = [
    "FullPersonalization", "GridSearch", "KMeansFeatures", "KMeansPreferences", "KMeansProfiles", "Policy",
    "PolicyEstimator", "ProfitView", "SingleBest", "estimated_value", "full_personalization", "grid_search",
    "kmeans_features", "kmeans_preferences", "kmeans_profiles", "segment_best_candidates", "single_best",
]
