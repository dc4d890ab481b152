"""Step 1's output for the scored customers: ``ProfitEstimates`` (their held-out profit estimates, at
the arms and at any treatments) and the profit oracles the discretizer's off-grid refinement calls
(``ArmsOracle`` for the per-arm models, an out-of-fold one for the dose-response models).

It is the contract between step 1 (coarse_gpu.models) and step 2 (coarse_gpu.discretize, the baselines
here in policy/), so it lives in the lowest layer that sees both: the main job (coarse_gpu.experiment,
which re-exports these names from ``coarse_gpu.experiment.estimates``) and the Python API use it alike.

``ProfitEstimates.at_candidates`` is the profit matrix the discretizer and the baselines receive. For the
per-arm models it is exactly mu_arms @ W.T (W (M, A) the arms-to-treatment weights), so above
``DENSE_PROFIT_ENTRIES`` N x M entries (2^26: 512 MiB in float64) it stays in that factored form
(``FactoredProfit``) and nothing downstream forms N x M: at 2,000,000 customers and 546 candidates the
dense matrix alone would be 8.7 GB. Below it the dense matrix is cheaper to reuse, and it is what the
default run has always used, so its numbers do not move.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from coarse_gpu.discretize.profit import FactoredProfit
from coarse_gpu.models import (
    AutoCATE,
    Blend,
    CrossFitted,
    TwoPart,
)

#: Largest N x M estimated-profit matrix handed on densely (module docstring).
DENSE_PROFIT_ENTRIES = 2**26

@dataclass
class ProfitEstimates:
    """Step 1's output for the scored customers (N of them, A arms; module docstring).

    mu_arms : (N, A) estimated profit at every arm (held-out / out-of-fold).
    profit_at : treatments (M, d) -> (N, M) estimated profit there.
    weights : treatments (M, d) -> (M, A), the model's map from arms to treatments (per-arm models:
        profit_at(T) = mu_arms @ weights(T).T); None for the dose-response models.
    arm_weights : treatments (M, d) -> (M, A) multilinear weights on the arms (the DR score's kappa).
    oracle : torch treatments (M, d) -> (N, M) tensor on the device, for the off-grid refinement;
        None when the model cannot leave the arms (arms that are not a grid).
    source : "out-of-fold" (cross-fitted on the same customers) or "held-out".
    """

    mu_arms: np.ndarray
    profit_at: Callable[[np.ndarray], np.ndarray]
    arm_weights: Callable[[np.ndarray], np.ndarray]
    oracle: Optional[Callable]
    source: str
    weights: Optional[Callable[[np.ndarray], np.ndarray]] = None
    # a continuously randomized dose (coarse_gpu.experiment.dose): (N,) the estimate at each customer's
    # own dose, what the kernel DR corrects; mu_arms is then (N, 0) (no arms)
    mu_observed: Optional[np.ndarray] = None

    def at_candidates(self, candidates: np.ndarray, max_dense: Optional[int] = None):
        """The estimated profit at the candidates (M, d): a dense (N, M) array, or ``FactoredProfit``
        (mu_arms (N, A), weights (M, A)) for a per-arm model above ``max_dense`` entries (None: the
        module's ``DENSE_PROFIT_ENTRIES``, read at the call so that a patched limit takes effect: patch it
        here, ``coarse_gpu.policy.estimates``, not the re-export in coarse_gpu.experiment.estimates)."""
        max_dense = DENSE_PROFIT_ENTRIES if max_dense is None else max_dense
        n, m = self.mu_arms.shape[0], len(candidates)
        if self.weights is None or n * m <= max_dense:
            return self.profit_at(candidates)
        return FactoredProfit(self.mu_arms, np.asarray(self.weights(candidates), dtype=np.float64))


def first_model(model):
    """The first fitted network-or-trees model inside an ensemble (for histories and scalars); a two-part
    model is its own (its parts are not profit models)."""
    if isinstance(model, TwoPart):
        return model
    for attr in ("model_", "members_"):
        inner = getattr(model, attr, None)
        if inner:
            return first_model(inner if attr == "model_" else inner[0])
    if isinstance(model, CrossFitted):
        return first_model(model.members()[0])
    return model


def is_dose_model(model) -> bool:
    """True for the dose-response models (they score any treatment through their own oracle, not the arms).
    A blend (model=auto's stack or average) predicts through its members' weighted per-arm predictions,
    whatever its first member is."""
    if isinstance(getattr(model, "model_", model), Blend):
        return False
    return hasattr(first_model(model), "profit_oracle")


def fold_predictors(model) -> list[Callable]:
    """One ``X -> (N, A)`` per-arm predictor per fold model of a cross-fitted ensemble of per-arm
    models (a blend of cross-fitted candidates: the blend of their j-th fold models); a single model
    gives itself; [] for the dose-response models (they do not predict through the arms)."""
    if is_dose_model(model):
        return []
    if isinstance(model, AutoCATE):
        return fold_predictors(model.model_)
    if isinstance(model, Blend):
        parts = [fold_predictors(m) for m in model.members_]
        n = min(len(p) for p in parts)
        return [(lambda X, j=j: sum(w * p[j](X) for w, p in zip(model.weights_, parts))) for j in range(n)]
    if isinstance(model, CrossFitted):
        return [m.predict_arms for m in model.members()]
    return [model.predict_arms]


def oof_dose_oracle(cf: CrossFitted, device: torch.device) -> Callable:
    """Out-of-fold torch oracle of a cross-fitted dose model: fold k's model scores fold k's rows."""
    parts = []
    for k, members in enumerate(cf.models_):
        rows = np.flatnonzero(cf.fold_ == k)
        parts.append((torch.as_tensor(rows, device=device),
                      [m.profit_oracle(cf.X_[rows], device=device) for m in members]))

    def oracle(T) -> torch.Tensor:
        out = None
        for rows, oracles in parts:
            block = torch.stack([o(T) for o in oracles], 0).mean(0)
            if out is None:
                out = torch.empty((cf.n_train_, block.shape[1]), dtype=block.dtype, device=device)
            out[rows] = block
        return out

    return oracle


class ArmsOracle:
    """pi_hat at any treatments as one (N, A) @ (A, M) product on the device (per-arm models).

    ``rows(lo, hi)`` is the same oracle for customers lo..hi-1 only (a rank's shard of a distributed
    job's off-grid refinement)."""

    def __init__(self, mu_arms: np.ndarray, weights: Callable, device: torch.device) -> None:
        self.mu_arms, self.weights, self.device = mu_arms, weights, device
        self._mu = torch.as_tensor(mu_arms, device=device)

    def __call__(self, treatments) -> torch.Tensor:
        t = treatments.detach().cpu().numpy() if isinstance(treatments, torch.Tensor) else np.asarray(treatments)
        return self._mu @ torch.as_tensor(self.weights(t), device=self.device, dtype=self._mu.dtype).T

    def rows(self, lo: int, hi: int) -> "ArmsOracle":
        return ArmsOracle(self.mu_arms[lo:hi], self.weights, self.device)


def oracle_rows(oracle: Callable, lo: int, hi: int) -> Callable:
    """``oracle`` restricted to customers lo..hi-1: its own ``rows`` when it has one, else its output
    sliced (the dose-response models' oracles score every customer's network output)."""
    if hasattr(oracle, "rows"):
        return oracle.rows(lo, hi)
    return lambda T: oracle(T)[lo:hi]


__all__ = ["DENSE_PROFIT_ENTRIES", "ArmsOracle", "ProfitEstimates", "first_model", "fold_predictors", "is_dose_model",
           "oof_dose_oracle", "oracle_rows"]
