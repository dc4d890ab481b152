"""The container every stage passes around: one randomized experiment (x_i, t_i, y_i)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Protocol

import numpy as np
import pandas as pd

from coarse_gpu.data.treatments import TreatmentSpace


class TrueProfit(Protocol):
    """The simulator's ground truth pi_i(t), known only on simulated data."""

    def profit(self, treatments: np.ndarray, rows: Optional[np.ndarray] = None) -> np.ndarray:
        """(N, M) expected profit of customers ``rows`` (default: all) at M treatments (M, d)."""
        ...

    def subset(self, rows: np.ndarray) -> "TrueProfit": ...


@dataclass
class ExperimentData:
    """One randomized experiment.

    Shapes: N customers, p model features, d treatment dimensions, A experimental arms.

    features   : DataFrame (N rows) of raw covariates, numeric and categorical (strings), as a user has them.
    X          : (N, p) float32 model matrix (numeric columns + one-hot categoricals), column names in
                 ``feature_names``. Not standardized: models standardize on their own training rows.
    treatment  : (N, d) float64 treatment each customer received, columns named ``space.names``.
    arm        : (N,) int64 index of the received arm in ``arms``.
    arms       : (A, d) float64 distinct treatments the experiment randomized over.
    outcome    : (N,) float64 realized profit (currency units per customer).
    propensity : (N,) float64 probability of the received arm (known by design in an experiment).
    truth      : ground-truth profit model (simulated data only), else None.
    response   : (N,) float64 behaviour of a declared profit structure (0/1 purchase or a count), or None.
    value      : (N,) float64 value per response (spend per purchase; NaN where response == 0), or None.
    accounting : the firm's ``coarse_gpu.data.Accounting`` (bound to ``space.names``), or None. With all
                 three, outcome == accounting.profit(response, value, treatment) row by row, and the
                 two-part learners can model purchase and basket apart (coarse_gpu.models.twopart).
    """

    features: pd.DataFrame
    X: np.ndarray
    feature_names: list[str]
    treatment: np.ndarray
    arm: np.ndarray
    arms: np.ndarray
    outcome: np.ndarray
    propensity: np.ndarray
    space: TreatmentSpace
    truth: Optional[TrueProfit] = None
    meta: dict = field(default_factory=dict)
    response: Optional[np.ndarray] = None
    value: Optional[np.ndarray] = None
    accounting: Optional[object] = None

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def structured(self) -> bool:
        """Whether the data declare a profit structure (response, value and accounting)."""
        return self.response is not None and self.value is not None and self.accounting is not None

    def structure_kwargs(self) -> dict:
        """``{"response", "value", "accounting"}`` for a model's fit when declared, else {}."""
        if not self.structured:
            return {}
        return {"response": self.response, "value": self.value, "accounting": self.accounting}

    @property
    def n_arms(self) -> int:
        return int(self.arms.shape[0])

    def subset(self, rows: np.ndarray) -> "ExperimentData":
        """The same experiment restricted to ``rows`` (indices or boolean mask)."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return replace(
            self,
            features=self.features.iloc[rows].reset_index(drop=True),
            X=self.X[rows],
            treatment=self.treatment[rows],
            arm=self.arm[rows],
            outcome=self.outcome[rows],
            propensity=self.propensity[rows],
            truth=None if self.truth is None else self.truth.subset(rows),
            response=None if self.response is None else self.response[rows],
            value=None if self.value is None else self.value[rows],
        )

    def split(self, fractions: tuple[float, ...], seed: int = 0) -> list["ExperimentData"]:
        """Random disjoint splits with the given fractions (they must sum to <= 1)."""
        if any(f <= 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
            raise ValueError(f"split fractions must be positive and sum to at most 1, got {fractions}")
        perm = np.random.default_rng(seed).permutation(len(self))
        out, start = [], 0
        for f in fractions:
            stop = start + int(round(f * len(self)))
            out.append(self.subset(np.sort(perm[start:stop])))
            start = stop
        return out
