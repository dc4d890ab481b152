"""Coarse personalization policies: the ``Policy`` container, the paper's baselines and the bounds.

Baselines (all choose among candidate treatments, given a profit matrix (N, M)):
  single_best          one treatment for everyone (K = 1 bound)
  full_personalization each customer's best candidate (upper bound on the candidates)
  kmeans_features      segment on characteristics (k-means on standardized covariates)
  kmeans_preferences   segment on preferences (k-means on estimated ideal treatments t*_i)
  kmeans_profiles      segment on estimated effects (k-means on standardized profit vectors)
  grid_search          best K-subset of a prespecified grid (e.g. the experimental arms)
"""
from coarse_gpu.policy.baselines import (
    estimated_value,
    full_personalization,
    grid_search,
    kmeans_features,
    kmeans_preferences,
    kmeans_profiles,
    segment_best_candidates,
    single_best,
)
from coarse_gpu.policy.policy import Policy

__all__ = [
    "Policy", "estimated_value", "full_personalization", "grid_search", "kmeans_features",
    "kmeans_preferences", "kmeans_profiles", "segment_best_candidates", "single_best",
]
