"""The treatment space: a box in R^d with named dimensions, experimental arms and candidate grids."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class TreatmentSpace:
    """A continuous box of treatments T = [low_1, high_1] x ... x [low_d, high_d].

    Attributes
    ----------
    names : tuple of d dimension names (used as column names everywhere, e.g. ``("discount", "duration_weeks")``).
    low, high : tuple of d floats, the bounds of each dimension (same units as the treatment columns).
    control : tuple of d floats, the "no treatment" point whose profit defines V_0 (incremental profit).
    """

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    control: tuple[float, ...]

    def __post_init__(self) -> None:
        d = len(self.names)
        if not (len(self.low) == len(self.high) == len(self.control) == d):
            raise ValueError(
                f"TreatmentSpace: names, low, high and control must have the same length, got "
                f"{len(self.names)}, {len(self.low)}, {len(self.high)}, {len(self.control)}"
            )
        for name, lo, hi, c in zip(self.names, self.low, self.high, self.control):
            if not lo < hi:
                raise ValueError(f"TreatmentSpace: dimension '{name}' needs low < high, got [{lo}, {hi}]")
            if not lo <= c <= hi:
                raise ValueError(f"TreatmentSpace: control value {c} of '{name}' lies outside [{lo}, {hi}]")

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def span(self) -> np.ndarray:
        """(d,) width of each dimension; used to scale steps so that units do not matter."""
        return np.asarray(self.high, dtype=np.float64) - np.asarray(self.low, dtype=np.float64)

    def grid(self, points_per_dim: int | Sequence[int]) -> np.ndarray:
        """Regular grid over the box, shape (prod(points), d), last dimension varying fastest."""
        if isinstance(points_per_dim, int):
            points_per_dim = [points_per_dim] * self.dim
        if len(points_per_dim) != self.dim:
            raise ValueError(f"grid: need {self.dim} point counts, got {len(points_per_dim)}")
        axes = [np.linspace(lo, hi, int(n)) for lo, hi, n in zip(self.low, self.high, points_per_dim)]
        return product_grid(axes)

    def clip(self, treatments: np.ndarray) -> np.ndarray:
        """Clip an (..., d) array of treatments into the box."""
        return np.clip(treatments, np.asarray(self.low), np.asarray(self.high))

    def contains(self, treatments: np.ndarray, atol: float = 1e-9) -> np.ndarray:
        t = np.asarray(treatments, dtype=np.float64)
        return np.all((t >= np.asarray(self.low) - atol) & (t <= np.asarray(self.high) + atol), axis=-1)


def product_grid(axes: Sequence[Sequence[float]]) -> np.ndarray:
    """Cartesian product of 1-D level lists, shape (prod(len), d), last axis varying fastest.

    The same values in the same order as ``itertools.product`` (no arithmetic: meshgrid only copies),
    without a Python tuple per point: the oracle's full personalization builds ~10^5 local grids."""
    levels = [np.asarray(a, dtype=np.float64).reshape(-1) for a in axes]
    if not levels:
        return np.zeros((1, 0))
    return np.stack(np.meshgrid(*levels, indexing="ij"), axis=-1).reshape(-1, len(levels))
