"""The treatment space: a box in R^d with named dimensions, experimental arms and candidate grids.

Each dimension has a kind (``KINDS``):
  continuous   a dose (discount depth, weeks): interpolated between arms, refined off the grid;
  discrete     on/off levers, counts: only the observed values can be offered, never a value between;
  categorical  labels (creatives, e-mail versions): coded 0..L-1 over the sorted labels, each code its own
               arm, never ordered or interpolated; ``labels[j]`` translates the codes back.
Internally every dimension is a float column (a categorical one holds its codes); ``to_user`` gives the
user's own values back (labels for categorical, ints for integer-valued discrete, floats otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

#: The kinds a treatment dimension can have (``data.treatment_kinds``, the API's ``treatment_kinds=``).
KINDS = ("continuous", "discrete", "categorical")


@dataclass(frozen=True)
class TreatmentSpace:
    """A continuous box of treatments T = [low_1, high_1] x ... x [low_d, high_d].

    Attributes
    ----------
    names : tuple of d dimension names (used as column names everywhere, e.g. ``("discount", "duration_weeks")``).
    low, high : tuple of d floats, the bounds of each dimension (same units as the treatment columns).
    control : tuple of d floats, the "no treatment" point whose profit defines V_0 (incremental profit).
    kinds : None (every dimension continuous) or a tuple of d entries of ``KINDS``.
    labels : None or a tuple of d entries: for a categorical dimension the sorted labels (code c is
        ``labels[j][c]``), None for the others.
    """

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    control: tuple[float, ...]
    kinds: Optional[tuple] = None
    labels: Optional[tuple] = None

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
        if self.kinds is not None:
            if len(self.kinds) != d or any(k not in KINDS for k in self.kinds):
                raise ValueError(f"TreatmentSpace: kinds must be {d} of {KINDS}, got {self.kinds}")
        if self.labels is not None:
            if len(self.labels) != d:
                raise ValueError(f"TreatmentSpace: labels needs {d} entries (None for a non-categorical one)")
            for name, kind, lab, hi in zip(self.names, self.kind_list, self.labels, self.high):
                if (kind == "categorical") != (lab is not None) or (lab is not None and len(lab) != int(hi) + 1):
                    raise ValueError(f"TreatmentSpace: dimension '{name}' ({kind}) has labels {lab!r}: a "
                                     "categorical dimension needs one label per code 0..high, the others none")

    @property
    def kind_list(self) -> list[str]:
        """The d kinds (all "continuous" when none were given)."""
        return list(self.kinds) if self.kinds is not None else ["continuous"] * len(self.names)

    @property
    def fixed_dims(self) -> np.ndarray:
        """(d,) bool: the dimensions that only take observed values (discrete and categorical)."""
        return np.array([k != "continuous" for k in self.kind_list], dtype=bool)

    def label_list(self, j: int) -> Optional[list]:
        return None if self.labels is None or self.labels[j] is None else list(self.labels[j])

    def to_user(self, treatments: np.ndarray) -> list[list[Any]]:
        """(M, d) internal treatments -> M lists of the user's values: the label of a categorical code,
        an int for a discrete dimension holding whole numbers, a float otherwise (JSON-ready)."""
        t = np.asarray(treatments, dtype=np.float64).reshape(-1, self.dim)
        return [[self.user_value(j, v) for j, v in enumerate(row)] for row in t]

    def user_value(self, j: int, v: float) -> Any:
        """The user's value of internal value ``v`` of dimension j (see ``to_user``)."""
        return user_value(v, self.kind_list[j], self.label_list(j))

    def describe(self) -> list[dict]:
        """Per dimension {name, kind, labels (categorical only)}: what results.json and policy.json record."""
        out = []
        for j, (name, kind) in enumerate(zip(self.names, self.kind_list)):
            rec: dict = {"name": name, "kind": kind}
            if self.label_list(j) is not None:
                rec["labels"] = [x.item() if isinstance(x, np.generic) else x for x in self.label_list(j)]
            out.append(rec)
        return out

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


def user_value(v: float, kind: str, labels: Optional[Sequence] = None) -> Any:
    """The user's value of the internal value ``v`` of a dimension of this kind: the label of a categorical
    code, an int for a whole-number discrete value, a float otherwise (plain Python, JSON-ready)."""
    if kind == "categorical" and labels is not None:
        x = labels[int(round(float(v)))]
        return x.item() if isinstance(x, np.generic) else x
    if kind == "discrete" and float(v) == round(float(v)):
        return int(round(float(v)))
    return float(v)
