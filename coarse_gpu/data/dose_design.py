"""A continuously randomized dose design: every customer's treatment drawn from a known density.

In an arms-based experiment customer i received arm A_i with probability e_i. In a dose experiment
customer i received a dose t_i in R^d drawn from a density f(t | x_i), the *generalized propensity
score* (Hirano & Imbens 2004). When the firm randomized by design the density is known; the common
design, and the one here, is independent uniform draws on a box: t_ij ~ U[low_j, high_j], so
f(t | x) = 1 / prod_j (high_j - low_j) on the box and 0 off it, whatever x is.

``meta["dose_design"]`` of an ``ExperimentData`` holds ``UniformDoseDesign.to_meta()`` so that the
evaluation can use the known density instead of estimating one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["UniformDoseDesign"]


@dataclass(frozen=True)
class UniformDoseDesign:
    """Independent uniform doses on the box [low_1, high_1] x ... x [low_d, high_d].

    low, high : tuples of d floats (the treatment columns' units), low_j < high_j.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.low) != len(self.high) or not self.low:
            raise ValueError(f"dose design: low and high need the same length >= 1, got {self.low}, {self.high}")
        for j, (lo, hi) in enumerate(zip(self.low, self.high)):
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(f"dose design: dimension {j} needs finite low < high, got [{lo}, {hi}]")

    @property
    def dim(self) -> int:
        return len(self.low)

    @property
    def volume(self) -> float:
        """prod_j (high_j - low_j), in treatment units^d."""
        return float(np.prod(np.subtract(self.high, self.low)))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, d) doses drawn from the design."""
        return rng.uniform(self.low, self.high, size=(int(n), self.dim))

    def density(self, treatment) -> np.ndarray:
        """(N,) f(t_i | x_i) = 1/volume inside the box, 0 outside (1 / treatment units^d).

        treatment : (N, d) or, for d = 1, (N,) doses."""
        t = np.asarray(treatment, dtype=np.float64)
        t = t[:, None] if t.ndim == 1 else t
        if t.ndim != 2 or t.shape[1] != self.dim:
            raise ValueError(f"dose design: treatment must have shape (N, {self.dim}), got {t.shape}")
        inside = np.all((t >= np.asarray(self.low)) & (t <= np.asarray(self.high)), axis=1)
        return np.where(inside, 1.0 / self.volume, 0.0)

    def to_meta(self) -> dict:
        return {"kind": "uniform", "low": [float(v) for v in self.low], "high": [float(v) for v in self.high]}

    @classmethod
    def from_meta(cls, meta: dict) -> "UniformDoseDesign":
        """The design ``to_meta`` wrote (``ExperimentData.meta["dose_design"]``)."""
        if not isinstance(meta, dict) or meta.get("kind") != "uniform":
            raise ValueError(f"dose_design: only kind 'uniform' is known, got {meta!r}")
        return cls(tuple(float(v) for v in meta["low"]), tuple(float(v) for v in meta["high"]))
