"""A zero-inflated, heavy-tailed promotions experiment: 24 arms over 3 levers, stratified randomization.

What field promotion experiments look like (docs/data.md, "data=hurdle"): most customers buy nothing
in the measurement window, baskets are lognormal with a long right tail, the levers are a discount
depth, free shipping and bonus items, randomization is stratified (loyal customers were held in
control more often), and the customer table carries many columns that have nothing to do with the
response. The firm knows its accounting; it does not know how each customer responds.

Covariates (N customers, 36 columns): relevant numeric recency, frequency, monetary, tenure,
distance, coupon_use ~ N(0, 1); category device in {mobile, desktop} (60/40) and loyal in {no, yes}
(70/30); 26 irrelevant numeric columns noise_1..noise_26 ~ N(0, 1) and 2 irrelevant categories
segment in {a, b, c}, source in {ads, organic}. (28 of 36 columns irrelevant.)

Treatment t = (discount, free_ship, bonus_items): discount in {0, 0.1, 0.2, 0.3} (share of the
basket), free_ship in {0, 1}, bonus_items in {0, 1, 2}: 4 x 2 x 3 = 24 arms; control (0, 0, 0).

Individual parameters (sigma = logistic, 1[.] = indicator):
  purchase   alpha_i = -1.1 + 0.45 frequency - 0.35 recency + 0.30 1[loyal]
             beta_i  = 5 sigma(2 (coupon_use + 0.5 recency - 0.4))          (per unit of discount)
             gamma_i = 1.1 sigma(2.5 (distance - 0.3)) - 0.15 1[loyal]      (free shipping)
             delta_i = 0.15 + 0.25 sigma(2 tenure)                            (per bonus item, diminishing)
  P_i(t)   = sigma(alpha_i + beta_i discount + gamma_i free_ship + delta_i sqrt(bonus_items))
  basket   log m_i(t) = 3.5 + 0.45 monetary + 0.20 1[loyal] + 0.20 1[desktop]
                        + kappa_i discount + theta_i bonus_items
             kappa_i = 1.4 sigma(1.5 monetary)       (high spenders stock up under a discount)
             theta_i = 0.05 + 0.10 1[desktop] - 0.05 tenure (bonus items grow some baskets)
  m_i(t) = E[value | x_i, t, purchase].
Realized (one purchase occasion per customer):
  response_i ~ Bernoulli(P_i(t_i)),  value_i = m_i(t_i) * LogNormal(-sigma^2 / 2, sigma), sigma = 1
  (value is NaN where response = 0).
Accounting (the firm's, ``ACCOUNTING``):
  profit = response * (value * (0.45 - discount) - (6 free_ship + 4 bonus_items)) - 0
  so pi_i(t) = P_i(t) * (m_i(t) * (0.45 - discount) - 6 free_ship - 4 bonus_items).
Randomization, stratified on loyal: non-loyal customers uniform over the 24 arms; loyal customers get
control with probability 0.20 and each of the other 23 arms with 0.80 / 23 (the propensity column).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import torch

from coarse_gpu.data.accounting import Accounting
from coarse_gpu.data.experiment import ExperimentData
from coarse_gpu.data.simulator import model_matrix
from coarse_gpu.data.treatments import TreatmentSpace, product_grid

__all__ = ["ACCOUNTING", "HURDLE_SPACE", "HurdlePromotionsSimulator", "HurdleTruth"]

HURDLE_SPACE = TreatmentSpace(names=("discount", "free_ship", "bonus_items"), low=(0.0, 0.0, 0.0),
                              high=(0.3, 1.0, 2.0), control=(0.0, 0.0, 0.0))
ACCOUNTING = Accounting(margin="0.45 - discount", cost_per_response="6*free_ship + 4*bonus_items",
                        cost_per_customer=0.0, names=HURDLE_SPACE.names)
RELEVANT = ["recency", "frequency", "monetary", "tenure", "distance", "coupon_use"]
CATEGORIES = {"device": (["mobile", "desktop"], [0.6, 0.4]), "loyal": (["no", "yes"], [0.7, 0.3]),
              "segment": (["a", "b", "c"], [0.5, 0.3, 0.2]), "source": (["ads", "organic"], [0.45, 0.55])}


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class HurdleTruth:
    """Per-customer parameters (N,) of P_i(t) and m_i(t) (module docstring); ``profit`` is pi_i(t)."""

    alpha: np.ndarray
    beta: np.ndarray
    gamma: np.ndarray
    delta: np.ndarray
    log_basket: np.ndarray
    kappa: np.ndarray
    theta: np.ndarray

    def __len__(self) -> int:
        return int(self.alpha.shape[0])

    def subset(self, rows: np.ndarray) -> "HurdleTruth":
        return HurdleTruth(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))

    @staticmethod
    def _t(treatments) -> np.ndarray:
        if isinstance(treatments, torch.Tensor):
            treatments = treatments.detach().cpu().numpy()
        t = np.atleast_2d(np.asarray(treatments, dtype=np.float64))
        if t.shape[1] != 3:
            raise ValueError(f"hurdle truth: treatments must have 3 columns {HURDLE_SPACE.names}, got {t.shape}")
        return np.clip(t, HURDLE_SPACE.low, HURDLE_SPACE.high)

    def parts(self, treatments, rows: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """(P (N, M), m (N, M)): purchase probability and expected basket at M treatments (M, 3)."""
        t = self._t(treatments)
        sl = slice(None) if rows is None else rows
        d, s, b = t[None, :, 0], t[None, :, 1], t[None, :, 2]
        u = self.alpha[sl, None] + self.beta[sl, None] * d + self.gamma[sl, None] * s + self.delta[sl, None] * np.sqrt(b)
        m = np.exp(self.log_basket[sl, None] + self.kappa[sl, None] * d + self.theta[sl, None] * b)
        return _sigmoid(u), m

    def profit(self, treatments, rows: Optional[np.ndarray] = None) -> np.ndarray:
        """(N, M) expected profit pi_i(t) by the firm's accounting at M treatments (M, 3)."""
        t = self._t(treatments)
        p, m = self.parts(t, rows)
        return ACCOUNTING.expected_profit(p, m, t)


class HurdlePromotionsSimulator:
    """The zero-inflated promotions experiment of the module docstring.

    Parameters: n_customers, basket_sigma (log-sd of the realized basket, 1.0), control_share_loyal
    (probability that a loyal customer is held in control, 0.20), seed.
    """

    def __init__(self, n_customers: int = 40_000, basket_sigma: float = 1.0, control_share_loyal: float = 0.2,
                 seed: int = 0) -> None:
        if n_customers < 2:
            raise ValueError(f"n_customers must be at least 2, got {n_customers}")
        if not basket_sigma > 0:
            raise ValueError(f"basket_sigma must be > 0, got {basket_sigma}")
        if not 0 < control_share_loyal < 1:
            raise ValueError(f"control_share_loyal must lie in (0, 1), got {control_share_loyal}")
        self.n_customers = int(n_customers)
        self.basket_sigma = float(basket_sigma)
        self.control_share_loyal = float(control_share_loyal)
        self.seed = int(seed)
        self.space = HURDLE_SPACE

    @property
    def arms(self) -> np.ndarray:
        """(24, 3) arms, discount-major order; arm 0 is control."""
        return product_grid([[0.0, 0.1, 0.2, 0.3], [0.0, 1.0], [0.0, 1.0, 2.0]])

    def covariates(self, rng: np.random.Generator) -> pd.DataFrame:
        n = self.n_customers
        cols = {c: rng.standard_normal(n) for c in RELEVANT}
        for j in range(26):
            cols[f"noise_{j + 1}"] = rng.standard_normal(n)
        for c, (levels, p) in CATEGORIES.items():
            cols[c] = rng.choice(np.asarray(levels, dtype=object), size=n, p=p)
        return pd.DataFrame(cols)

    @staticmethod
    def truth_from(df: pd.DataFrame) -> HurdleTruth:
        g = {c: df[c].to_numpy(dtype=np.float64) for c in RELEVANT}
        loyal = (df["loyal"].to_numpy() == "yes").astype(np.float64)
        desktop = (df["device"].to_numpy() == "desktop").astype(np.float64)
        alpha = -1.1 + 0.45 * g["frequency"] - 0.35 * g["recency"] + 0.30 * loyal
        beta = 5.0 * _sigmoid(2.0 * (g["coupon_use"] + 0.5 * g["recency"] - 0.4))
        gamma = 1.1 * _sigmoid(2.5 * (g["distance"] - 0.3)) - 0.15 * loyal
        delta = 0.15 + 0.25 * _sigmoid(2.0 * g["tenure"])
        log_basket = 3.5 + 0.45 * g["monetary"] + 0.20 * loyal + 0.20 * desktop
        kappa = 1.4 * _sigmoid(1.5 * g["monetary"])
        theta = 0.05 + 0.10 * desktop - 0.05 * g["tenure"]
        return HurdleTruth(alpha, beta, gamma, delta, log_basket, kappa, theta)

    def propensities(self, loyal: np.ndarray) -> np.ndarray:
        """(N, 24) assignment probabilities by stratum (module docstring)."""
        a = self.arms.shape[0]
        probs = np.full((loyal.shape[0], a), 1.0 / a)
        c = self.control_share_loyal
        probs[loyal] = (1.0 - c) / (a - 1)
        probs[loyal, 0] = c
        return probs

    def sample(self) -> ExperimentData:
        """One experiment: covariates, stratified arms, purchase, basket, realized profit."""
        rng = np.random.default_rng(self.seed)
        df = self.covariates(rng)
        truth = self.truth_from(df)
        arms, n = self.arms, self.n_customers
        probs = self.propensities(df["loyal"].to_numpy() == "yes")
        arm = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(1).clip(max=arms.shape[0] - 1)
        t = arms[arm]
        p, m = truth.parts(arms)
        rows = np.arange(n)
        response = (rng.random(n) < p[rows, arm]).astype(np.float64)
        s = self.basket_sigma
        value = np.where(response > 0, m[rows, arm] * rng.lognormal(-0.5 * s * s, s, size=n), np.nan)
        y = ACCOUNTING.profit(response, value, t)
        X, names = model_matrix(df, {c: lv for c, (lv, _) in CATEGORIES.items()})
        return ExperimentData(
            features=df, X=X, feature_names=names, treatment=t, arm=arm.astype(np.int64), arms=arms,
            outcome=y, propensity=probs[rows, arm], space=self.space, truth=truth,
            response=response, value=value, accounting=ACCOUNTING,
            meta={"source": "hurdle_simulator", "seed": self.seed, "response_rate": float(response.mean())},
        )
