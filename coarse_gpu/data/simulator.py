"""Simulated randomized promotions field experiment with a known profit surface pi_i(t).

Data-generating process (documented in the README, tested in tests/test_simulator.py)
------------------------------------------------------------------------------------
Covariates per customer i:
  numeric   recency, frequency, monetary, tenure, age ~ N(0, 1) (standardized units), plus
            ``n_noise_features`` irrelevant numeric columns ``browse_1..`` ~ N(0, 1);
  category  channel in {web, app, store}, region in {north, south, east, west}, tier in {bronze, silver, gold}.

Treatment t = (discount, duration_weeks) in [0, 0.5] x [0, 4]: the discount depth (share of the
price) and how long the offer runs. Control (no promotion) is (0, 0).

Individual parameters (sigma = logistic function, 1[.] = indicator):
  basket value  v_i     = exp(3.3 + 0.35 monetary + 0.25 1[gold] + 0.10 1[silver])
  base utility  alpha_i = -1.2 + 0.6 frequency - 0.5 recency + 0.3 1[app] + 0.4 1[gold]
  discount sens beta_i  = beta_max * sigma(k * (-0.5 + 1.3 recency - 0.9 monetary + 0.7 1[web] - 0.6 1[gold]
                                            + 0.5 age * tenure))
  duration sens gamma_i = gamma_max * sigma(k * (-0.3 + 1.2 tenure - 0.8 frequency + 0.8 1[store]
                                            + 0.5 1[north]))
  with k = type_sharpness (steep links make customers fall into loose "types", as real segments do).
Purchase probability and expected profit at any treatment t = (delta, s):
  P_i(t)  = sigma(alpha_i + beta_i * delta + gamma_i * log(1 + s))
  pi_i(t) = v_i * (margin - delta) * P_i(t) - contact_cost * s
Realized profit of the randomized arm t_i, measured per shopping trip over a window of
``n_trips`` independent trips (a field experiment observes a customer for weeks, not once):
  y_i = (1/n_trips) sum_j B_ij * v_i * L_ij * (margin - delta_i) - contact_cost * s_i,
  B_ij ~ Bernoulli(P_i(t_i)),  L_ij ~ LogNormal(-basket_sigma^2 / 2, basket_sigma)
  (so E[L_ij] = 1 and E[y_i | x_i, t_i] = pi_i(t_i); Var = [P v^2 (m-delta)^2 exp(sigma^2) - (P v (m-delta))^2] / n_trips).

Arms: the product of ``discount_levels`` x ``duration_levels``, randomized uniformly (propensity 1/A).
Cost of a treatment (what ``discretizer.budget`` bounds, ``meta["treatment_unit_cost"]``):
  cost(delta, s) = delta * R + contact_cost * s, R = the experiment's mean realized revenue per customer
  (basket value x purchases): the discount given away on an average customer's purchases plus the contact cost.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from coarse_gpu.data.accounting import Accounting
from coarse_gpu.data.experiment import ExperimentData
from coarse_gpu.data.treatments import TreatmentSpace, product_grid

NUMERIC = ["recency", "frequency", "monetary", "tenure", "age"]
CATEGORICAL = {
    "channel": ["web", "app", "store"],
    "region": ["north", "south", "east", "west"],
    "tier": ["bronze", "silver", "gold"],
}
PROMOTION_SPACE = TreatmentSpace(
    names=("discount", "duration_weeks"), low=(0.0, 0.0), high=(0.5, 4.0), control=(0.0, 0.0)
)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class PromotionsTruth:
    """Ground truth of the promotions simulator: per-customer parameters of pi_i(t).

    All arrays have shape (N,). ``profit`` evaluates pi on any treatments in float64.
    """

    basket_value: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    gamma: np.ndarray
    margin: float
    contact_cost: float

    def __len__(self) -> int:
        return int(self.alpha.shape[0])

    def subset(self, rows: np.ndarray) -> "PromotionsTruth":
        return PromotionsTruth(
            self.basket_value[rows], self.alpha[rows], self.beta[rows], self.gamma[rows],
            self.margin, self.contact_cost,
        )

    def purchase_probability(self, treatments: np.ndarray, rows: Optional[np.ndarray] = None) -> np.ndarray:
        """(N, M) purchase probability P_i(t) at M treatments (M, 2)."""
        t = np.atleast_2d(np.asarray(treatments, dtype=np.float64))
        sl = slice(None) if rows is None else rows
        u = (
            self.alpha[sl, None]
            + self.beta[sl, None] * t[None, :, 0]
            + self.gamma[sl, None] * np.log1p(t[None, :, 1])
        )
        return _sigmoid(u)

    def profit(self, treatments: np.ndarray, rows: Optional[np.ndarray] = None) -> np.ndarray:
        """(N, M) expected profit pi_i(t) in currency units at M treatments (M, 2)."""
        if isinstance(treatments, torch.Tensor):
            treatments = treatments.detach().cpu().numpy()
        t = np.atleast_2d(np.asarray(treatments, dtype=np.float64))
        if t.shape[1] != 2:
            raise ValueError(f"promotions truth: treatments must have 2 columns (discount, duration_weeks), got {t.shape}")
        sl = slice(None) if rows is None else rows
        # purchase_probability and the profit formula written with in-place operations: the same
        # floating-point operations in the same order (bit-identical), but 2 temporaries instead of 7,
        # which makes the oracle's full personalization (N x 8,181 evaluations) ~1.3x faster
        u = self.beta[sl, None] * t[None, :, 0]
        u = np.add(self.alpha[sl, None], u, out=u)
        u += self.gamma[sl, None] * np.log1p(t[None, :, 1])
        np.negative(u, out=u)
        np.exp(u, out=u)
        u += 1.0
        np.divide(1.0, u, out=u)  # = P_i(t)
        out = self.basket_value[sl, None] * (self.margin - t[None, :, 0])
        out *= u
        out -= self.contact_cost * t[None, :, 1]
        return out

    def best_on(self, candidates: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Each customer's best candidate: (index (N,), profit (N,)), computed in row chunks."""
        idx = np.empty(len(self), dtype=np.int64)
        val = np.empty(len(self))
        for s in range(0, len(self), chunk):
            rows = np.arange(s, min(s + chunk, len(self)))
            p = self.profit(candidates, rows)
            idx[rows] = p.argmax(1)
            val[rows] = p.max(1)
        return idx, val


class PromotionsSimulator:
    """Simulated randomized promotions field experiment (see the module docstring for the DGP).

    Parameters
    ----------
    n_customers : number of customers N.
    discount_levels, duration_levels : the randomized arms are their Cartesian product.
    margin : gross margin as a share of the basket value (the discount comes out of it).
    contact_cost : cost per customer per week the offer runs (currency units).
    beta_max, gamma_max : scale of the discount and duration sensitivities (logit units).
    basket_sigma : log-sd of the realized basket value around its mean.
    n_trips : shopping trips per customer in the measurement window; the outcome is the mean profit
        per trip, so its noise variance falls as 1/n_trips while pi_i(t) is unchanged. With a single
        trip the purchase coin-flip (sd ~ 6 against treatment contrasts of sd ~ 3) swamps what 30k
        training customers can reveal about individual responses.
    n_noise_features : irrelevant numeric covariates (customer data always has them).
    seed : RNG seed; the same seed gives the same data.
    declare_structure : also hand step 1 the behaviour behind the outcome (purchases in the window,
        spend per purchase) and the accounting that turns it into y (``accounting()``), so that
        model=auto weighs two-part learners. The outcomes are the same either way. Off by default: the
        default run's published numbers were measured without it.
    """

    def __init__(
        self,
        n_customers: int = 50_000,
        discount_levels: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4),
        duration_levels: Sequence[float] = (0.0, 2.0, 4.0),
        margin: float = 0.5,
        contact_cost: float = 0.35,
        beta_max: float = 15.0,
        gamma_max: float = 2.0,
        basket_sigma: float = 0.4,
        n_noise_features: int = 5,
        type_sharpness: float = 4.0,
        n_trips: int = 8,
        seed: int = 0,
        declare_structure: bool = False,
    ) -> None:
        if n_customers < 2:
            raise ValueError(f"n_customers must be at least 2, got {n_customers}")
        if int(n_trips) != n_trips or n_trips < 1:
            raise ValueError(f"n_trips must be a positive integer, got {n_trips}")
        if not 0 < margin <= 1:
            raise ValueError(f"margin must lie in (0, 1], got {margin}")
        for name, levels, lo, hi in (
            ("discount_levels", discount_levels, 0.0, 0.5),
            ("duration_levels", duration_levels, 0.0, 4.0),
        ):
            if len(levels) < 2 or any(not lo <= v <= hi for v in levels) or len(set(levels)) != len(levels):
                raise ValueError(f"{name} must hold >= 2 distinct values in [{lo}, {hi}], got {list(levels)}")
        self.n_customers = int(n_customers)
        self.discount_levels = tuple(sorted(float(v) for v in discount_levels))
        self.duration_levels = tuple(sorted(float(v) for v in duration_levels))
        self.margin = float(margin)
        self.contact_cost = float(contact_cost)
        self.beta_max = float(beta_max)
        self.gamma_max = float(gamma_max)
        self.basket_sigma = float(basket_sigma)
        self.n_noise_features = int(n_noise_features)
        self.type_sharpness = float(type_sharpness)
        self.n_trips = int(n_trips)
        self.seed = int(seed)
        self.declare_structure = bool(declare_structure)
        self.space = PROMOTION_SPACE

    def accounting(self):
        """The simulator's profit structure: y = purchases x (spend per purchase x (margin - discount) / n_trips)
        - contact_cost x weeks (profit per trip over the window; ``coarse_gpu.data.Accounting``)."""
        return Accounting(margin=f"({self.margin!r} - discount) / {self.n_trips}", cost_per_response=0.0,
                          cost_per_customer=f"{self.contact_cost!r} * duration_weeks", names=self.space.names)

    @property
    def arms(self) -> np.ndarray:
        """(A, 2) experimental arms, discount-major order."""
        return product_grid([self.discount_levels, self.duration_levels])

    def covariates(self, rng: np.random.Generator) -> pd.DataFrame:
        n = self.n_customers
        cols: dict[str, np.ndarray] = {c: rng.standard_normal(n) for c in NUMERIC}
        for j in range(self.n_noise_features):
            cols[f"browse_{j + 1}"] = rng.standard_normal(n)
        probs = {"channel": [0.45, 0.35, 0.20], "region": [0.25] * 4, "tier": [0.6, 0.3, 0.1]}
        for c, levels in CATEGORICAL.items():
            cols[c] = rng.choice(np.asarray(levels, dtype=object), size=n, p=probs[c])
        return pd.DataFrame(cols)

    def truth_from(self, df: pd.DataFrame) -> PromotionsTruth:
        """The documented parameter formulas applied to a covariate table."""
        g = lambda c, v: (df[c].to_numpy() == v).astype(np.float64)  # noqa: E731 - indicator
        r, f, m, ten, age = (df[c].to_numpy(dtype=np.float64) for c in NUMERIC)
        v = np.exp(3.3 + 0.35 * m + 0.25 * g("tier", "gold") + 0.10 * g("tier", "silver"))
        alpha = -1.2 + 0.6 * f - 0.5 * r + 0.3 * g("channel", "app") + 0.4 * g("tier", "gold")
        k = self.type_sharpness
        beta = self.beta_max * _sigmoid(
            k * (-0.5 + 1.3 * r - 0.9 * m + 0.7 * g("channel", "web") - 0.6 * g("tier", "gold") + 0.5 * age * ten)
        )
        gamma = self.gamma_max * _sigmoid(
            k * (-0.3 + 1.2 * ten - 0.8 * f + 0.8 * g("channel", "store") + 0.5 * g("region", "north"))
        )
        return PromotionsTruth(v, alpha, beta, gamma, self.margin, self.contact_cost)

    def sample(self) -> ExperimentData:
        """Draw one experiment: covariates, uniformly randomized arms, realized profits."""
        rng = np.random.default_rng(self.seed)
        df = self.covariates(rng)
        truth = self.truth_from(df)
        arms = self.arms
        n, a = self.n_customers, arms.shape[0]
        arm = rng.integers(0, a, size=n)
        t = arms[arm]
        p = truth.purchase_probability(arms)[np.arange(n), arm]
        s, trips = self.basket_sigma, self.n_trips
        bought = rng.random((n, trips)) < p[:, None]
        basket = bought * rng.lognormal(-0.5 * s * s, s, size=(n, trips))
        spend = basket.mean(axis=1)
        y = truth.basket_value * spend * (self.margin - t[:, 0]) - self.contact_cost * t[:, 1]
        # The behaviour behind y (the same draws; y is unchanged): purchases in the window and the spend
        # per purchase, with the accounting that turns them into the per-trip profit y.
        count = bought.sum(axis=1).astype(np.float64)
        value = np.where(count > 0, truth.basket_value * basket.sum(axis=1) / np.maximum(count, 1.0), np.nan)
        X, names = model_matrix(df)
        return ExperimentData(
            features=df,
            X=X,
            feature_names=names,
            treatment=t,
            arm=arm.astype(np.int64),
            arms=arms,
            outcome=y.astype(np.float64),
            propensity=np.full(n, 1.0 / a),
            space=self.space,
            truth=truth,
            response=count if self.declare_structure else None,
            value=value if self.declare_structure else None,
            accounting=self.accounting() if self.declare_structure else None,
            meta={"source": "promotions_simulator", "seed": self.seed, "n_trips": self.n_trips,
                  "continuous_treatments": True,  # weeks 0/2/4 are doses: refined and gridded between arms
                  # cost of a promotion (discount, weeks) per customer, linear in t (what a budget bounds):
                  # the discount on the experiment's mean revenue per customer plus the contact cost.
                  # The two cost lines of pi_i(t); the discount's exact cost v_i delta P_i(t) depends on the
                  # customer and on t, so the mean realized revenue stands in for v_i P_i(t).
                  "treatment_unit_cost": [float(np.mean(truth.basket_value * spend)), self.contact_cost]},
        )


def model_matrix(df: pd.DataFrame, categories: Optional[dict[str, list[str]]] = None) -> tuple[np.ndarray, list[str]]:
    """Numeric columns as they are, categorical (object/category) columns one-hot encoded.

    ``categories`` fixes the levels (so that new customers get the same columns); default: the
    simulator's levels for its own columns, else the sorted observed levels.
    Returns the (N, p) float32 matrix and its column names.
    """
    blocks, names = [], []
    for col in df.columns:
        s = df[col]
        if s.dtype == object or isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(s.dtype):
            levels = (categories or {}).get(col) or CATEGORICAL.get(col) or sorted(map(str, s.unique()))
            vals = s.astype(str).to_numpy()
            for lv in levels:
                blocks.append((vals == lv).astype(np.float32))
                names.append(f"{col}={lv}")
        else:
            blocks.append(s.to_numpy(dtype=np.float32))
            names.append(col)
    return np.stack(blocks, axis=1), names
