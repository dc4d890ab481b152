"""A coarse personalization policy: K distinct treatments and which customer gets which."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


@dataclass
class Policy:
    """K treatments and an assignment of N customers to them.

    Attributes
    ----------
    name : label used in reports (e.g. ``"kmeans_features"``).
    treatments : (K, d) float64 treatments (same units as the treatment space columns).
    assignment : (N,) int64, customer i receives ``treatments[assignment[i]]``; values in [0, K).
    info : free-form details of how the policy was built (solver, objective, fitted scaler, ...).
    estimator : the fitted estimator that built it (a baseline's ``PolicyEstimator``; None for the OT
        discretizer's policies): its state is what a saved policy assigns new customers with.
    """

    name: str
    treatments: np.ndarray
    assignment: np.ndarray
    info: dict = field(default_factory=dict)
    estimator: Optional[Any] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        t = np.asarray(self.treatments, dtype=np.float64)
        if t.ndim == 1:
            raise ValueError(
                f"Policy '{self.name}': treatments must be 2-D (K, d), got shape {t.shape}; "
                "use treatments.reshape(-1, d)"
            )
        if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
            raise ValueError(f"Policy '{self.name}': treatments must be a non-empty (K, d) array, got shape {t.shape}")
        if not np.all(np.isfinite(t)):
            raise ValueError(f"Policy '{self.name}': treatments contain NaN or inf")
        a = np.asarray(self.assignment)
        if a.ndim != 1:
            raise ValueError(f"Policy '{self.name}': assignment must be 1-D (N,), got shape {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            if not np.all(np.equal(np.mod(a, 1), 0)):
                raise ValueError(f"Policy '{self.name}': assignment must hold integer segment indices")
        a = a.astype(np.int64)
        if a.size and (a.min() < 0 or a.max() >= t.shape[0]):
            raise ValueError(
                f"Policy '{self.name}': assignment values must lie in [0, K={t.shape[0]}), "
                f"got range [{a.min()}, {a.max()}]"
            )
        self.treatments = t
        self.assignment = a

    @property
    def k(self) -> int:
        """Number of distinct treatment slots K (including slots no customer receives)."""
        return int(self.treatments.shape[0])

    @property
    def n(self) -> int:
        """Number of customers N."""
        return int(self.assignment.shape[0])

    @property
    def dim(self) -> int:
        """Treatment dimension d."""
        return int(self.treatments.shape[1])

    @property
    def segment_sizes(self) -> np.ndarray:
        """(K,) int64 number of customers assigned to each treatment (0 for empty segments)."""
        return np.bincount(self.assignment, minlength=self.k).astype(np.int64)

    def treatment_of_customers(self) -> np.ndarray:
        """(N, d) float64 treatment each customer receives."""
        return self.treatments[self.assignment]

    def __repr__(self) -> str:  # short: arrays can be long
        return f"Policy(name={self.name!r}, k={self.k}, n={self.n}, d={self.dim})"
