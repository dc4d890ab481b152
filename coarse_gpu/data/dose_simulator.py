"""Simulated experiment with a continuously randomized discount (a dose), with known profits pi_i(t).

Data-generating process
-----------------------
Covariates per customer i: recency, frequency, monetary, tenure, age ~ N(0, 1), ``n_noise_features``
irrelevant ``browse_1..`` ~ N(0, 1), and the categorical channel in {web, app, store} and tier in
{bronze, silver, gold} (the promotions simulator's levels and shares).

Treatment: one dimension, the discount t in [0, 0.5] (share of the price). Every customer gets her own
discount drawn uniformly from the design range: t_i ~ U[dose_low, dose_high], so the generalized
propensity score is known, f(t | x) = 1 / (dose_high - dose_low).

Individual parameters (sigma = logistic function, 1[.] = indicator, k = type_sharpness):
  basket value  v_i     = exp(3.3 + 0.35 monetary + 0.25 1[gold] + 0.10 1[silver])
  base utility  alpha_i = -1.0 + 0.6 frequency - 0.5 recency + 0.3 1[app] + 0.4 1[gold]
  discount sens beta_i  = beta_max * sigma(k * (-0.3 + 1.3 recency - 0.9 monetary + 0.7 1[web]
                                            + 0.5 age * tenure))
Purchase probability and expected profit at discount t (the margin is price - discount):
  P_i(t)  = sigma(alpha_i + beta_i t),   pi_i(t) = v_i (margin - t) P_i(t).
The profit-maximizing discount solves (margin - t) beta_i (1 - P_i(t)) = 1: it is 0 for the customers
whose purchase barely responds (beta_i small) and rises towards the top of the range for the
sensitive ones, so it varies across customers, as the coarse policies need.
Realized profit over ``n_trips`` independent purchase occasions (default one, as the issue's data):
  y_i = (1/n_trips) sum_j B_ij v_i L_ij (margin - t_i),  B_ij ~ Bernoulli(P_i(t_i)),
  L_ij ~ LogNormal(-basket_sigma^2 / 2, basket_sigma), so E[y_i | x_i, t_i] = pi_i(t_i).

Representation in ``ExperimentData`` (the choice, and why)
-----------------------------------------------------------
A continuously randomized dose has no arms: 40,000 customers hold 40,000 distinct doses. The fields
are filled so that nothing arms-based can run on them by accident, and nothing else changes:
  * ``arms`` is an empty (0, 1) array and ``arm`` is -1 for every customer: code that indexes arms
    fails at once (an index error or an empty-arms check) instead of treating every dose as an arm,
    or silently evaluating on a made-up grid of "arms" whose propensities would be wrong.
  * ``propensity`` holds the generalized propensity score f(t_i | x_i) (a density in 1 / treatment
    units, here 1 / 0.5 = 2.0), not a probability: the arms-based AIPW refuses it (> 1), the
    kernel DR (coarse_gpu.evaluate.kernel_dr) uses it.
  * ``meta["continuous_dose"] = True``, ``meta["propensity_kind"] = "density"`` and
    ``meta["dose_design"]`` (``UniformDoseDesign.to_meta()``) say so to the later stages.
  * ``space`` is the design's box, with control 0 (no discount): ``space.grid(n)`` gives candidates
    that span the randomized range (a quantile grid would do as well; the box is what was randomized).
``subset`` and ``split`` work unchanged (they only slice the per-customer arrays).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from coarse_gpu.data.dose_design import UniformDoseDesign
from coarse_gpu.data.experiment import ExperimentData
from coarse_gpu.data.simulator import model_matrix
from coarse_gpu.data.treatments import TreatmentSpace

NUMERIC = ["recency", "frequency", "monetary", "tenure", "age"]
CATEGORICAL = {"channel": (["web", "app", "store"], [0.45, 0.35, 0.20]),
               "tier": (["bronze", "silver", "gold"], [0.6, 0.3, 0.1])}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class DoseTruth:
    """Ground truth of the dose simulator (the ``TrueProfit`` protocol); arrays have shape (N,)."""

    basket_value: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    margin: float

    def __len__(self) -> int:
        return int(self.alpha.shape[0])

    def subset(self, rows: np.ndarray) -> "DoseTruth":
        return DoseTruth(self.basket_value[rows], self.alpha[rows], self.beta[rows], self.margin)

    def _doses(self, treatments) -> np.ndarray:
        if hasattr(treatments, "detach"):
            treatments = treatments.detach().cpu().numpy()
        t = np.asarray(treatments, dtype=np.float64)
        t = t.reshape(-1, 1) if t.ndim <= 1 else t
        if t.shape[1] != 1:
            raise ValueError(f"dose truth: treatments must have 1 column (discount), got shape {t.shape}")
        return t[:, 0]

    def purchase_probability(self, treatments, rows: Optional[np.ndarray] = None) -> np.ndarray:
        """(N, M) purchase probability P_i(t) at M discounts (M, 1)."""
        t = self._doses(treatments)
        sl = slice(None) if rows is None else rows
        return _sigmoid(self.alpha[sl, None] + self.beta[sl, None] * t[None, :])

    def profit(self, treatments, rows: Optional[np.ndarray] = None) -> np.ndarray:
        """(N, M) expected profit pi_i(t) (currency units) at M discounts (M, 1)."""
        t = self._doses(treatments)
        sl = slice(None) if rows is None else rows
        return self.basket_value[sl, None] * (self.margin - t[None, :]) * self.purchase_probability(t, rows)

    def profit_at(self, doses) -> np.ndarray:
        """(N,) pi_i(t_i): each customer's expected profit at her own discount t_i ((N,) or (N, 1))."""
        t = np.asarray(doses, dtype=np.float64).reshape(-1)
        if t.shape[0] != len(self):
            raise ValueError(f"dose truth: need one dose per customer ({len(self)}), got {t.shape[0]}")
        return self.basket_value * (self.margin - t) * _sigmoid(self.alpha + self.beta * t)


class DoseSimulator:
    """Experiment with a continuously randomized discount (module docstring: DGP and representation).

    n_customers : N. dose_low, dose_high : the randomized discount range (uniform draws).
    margin : gross margin as a share of the basket value (the discount comes out of it).
    beta_max : scale of the discount sensitivity (logit units per unit of discount).
    type_sharpness : steepness of the sensitivity's link (loose customer "types").
    basket_sigma : log-sd of the realized basket value. n_trips : purchase occasions averaged.
    n_noise_features : irrelevant numeric covariates. seed : RNG seed (same seed, same data).
    """

    def __init__(self, n_customers: int = 40_000, dose_low: float = 0.0, dose_high: float = 0.5,
                 margin: float = 0.5, beta_max: float = 15.0, type_sharpness: float = 3.0,
                 basket_sigma: float = 0.4, n_trips: int = 1, n_noise_features: int = 5, seed: int = 0) -> None:
        if int(n_customers) != n_customers or n_customers < 2:
            raise ValueError(f"n_customers must be an integer >= 2, got {n_customers}")
        if not 0 < margin <= 1:
            raise ValueError(f"margin must lie in (0, 1], got {margin}")
        if not 0 <= dose_low < dose_high <= margin:
            raise ValueError(f"dose_low, dose_high must satisfy 0 <= dose_low < dose_high <= margin={margin}, "
                             f"got {dose_low}, {dose_high}")
        if int(n_trips) != n_trips or n_trips < 1:
            raise ValueError(f"n_trips must be a positive integer, got {n_trips}")
        if int(n_noise_features) != n_noise_features or n_noise_features < 0:
            raise ValueError(f"n_noise_features must be an integer >= 0, got {n_noise_features}")
        self.n_customers = int(n_customers)
        self.design = UniformDoseDesign((float(dose_low),), (float(dose_high),))
        self.margin, self.beta_max, self.type_sharpness = float(margin), float(beta_max), float(type_sharpness)
        self.basket_sigma, self.n_trips = float(basket_sigma), int(n_trips)
        self.n_noise_features, self.seed = int(n_noise_features), int(seed)
        self.space = TreatmentSpace(names=("discount",), low=(float(dose_low),), high=(float(dose_high),),
                                    control=(float(dose_low),))

    def covariates(self, rng: np.random.Generator, n: Optional[int] = None) -> pd.DataFrame:
        """(n, 5 + n_noise + 2) covariate table (default n = n_customers)."""
        n = self.n_customers if n is None else int(n)
        cols: dict = {c: rng.standard_normal(n) for c in NUMERIC}
        for j in range(self.n_noise_features):
            cols[f"browse_{j + 1}"] = rng.standard_normal(n)
        for c, (levels, probs) in CATEGORICAL.items():
            cols[c] = rng.choice(np.asarray(levels, dtype=object), size=n, p=probs)
        return pd.DataFrame(cols)

    def truth_from(self, df: pd.DataFrame) -> DoseTruth:
        """The documented parameter formulas applied to a covariate table."""
        g = lambda c, v: (df[c].to_numpy() == v).astype(np.float64)  # noqa: E731 - indicator
        r, f, m, ten, age = (df[c].to_numpy(dtype=np.float64) for c in NUMERIC)
        v = np.exp(3.3 + 0.35 * m + 0.25 * g("tier", "gold") + 0.10 * g("tier", "silver"))
        alpha = -1.0 + 0.6 * f - 0.5 * r + 0.3 * g("channel", "app") + 0.4 * g("tier", "gold")
        beta = self.beta_max * _sigmoid(
            self.type_sharpness * (-0.3 + 1.3 * r - 0.9 * m + 0.7 * g("channel", "web") + 0.5 * age * ten))
        return DoseTruth(v, alpha, beta, self.margin)

    def population(self, n: int, seed: int) -> tuple[pd.DataFrame, DoseTruth]:
        """A fresh draw of n customers' covariates and truth (for population values of policies)."""
        df = self.covariates(np.random.default_rng(seed), n)
        return df, self.truth_from(df)

    def sample(self) -> ExperimentData:
        """Draw one experiment: covariates, uniformly randomized discounts, realized profits."""
        rng = np.random.default_rng(self.seed)
        df = self.covariates(rng)
        truth = self.truth_from(df)
        n, s = self.n_customers, self.basket_sigma
        t = self.design.sample(rng, n)
        p = _sigmoid(truth.alpha + truth.beta * t[:, 0])
        bought = rng.random((n, self.n_trips)) < p[:, None]
        spend = (bought * rng.lognormal(-0.5 * s * s, s, size=(n, self.n_trips))).mean(axis=1)
        y = truth.basket_value * spend * (self.margin - t[:, 0])
        X, names = model_matrix(df, {c: levels for c, (levels, _) in CATEGORICAL.items()})
        return ExperimentData(
            features=df, X=X, feature_names=names, treatment=t,
            arm=np.full(n, -1, dtype=np.int64), arms=np.empty((0, 1)),
            outcome=y.astype(np.float64), propensity=self.design.density(t),
            space=self.space, truth=truth,
            meta={"source": "dose_simulator", "seed": self.seed, "n_trips": self.n_trips,
                  "continuous_dose": True, "propensity_kind": "density",
                  "dose_design": self.design.to_meta(),
                  # the discount's cost per unit of discount: the mean realized revenue per customer
                  # (as the promotions simulator's treatment_unit_cost)
                  "treatment_unit_cost": [float(np.mean(truth.basket_value * spend))]},
        )
