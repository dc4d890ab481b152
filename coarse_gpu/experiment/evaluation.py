"""Evaluation of the main job's policies on the scored customers: true profit and doubly robust value.

``Evaluator`` scores one K's policies together: their AIPW scores share one set of bootstrap
resamples (coarse_gpu.evaluate.bootstrap), so every interval -- of a policy's value and of the
difference between two policies -- comes from one pass. ``reference_values`` computes the points
every share is measured against (no treatment, full personalization), from true profits on
simulated data and from the estimates (the paper's "expected" share) everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from coarse_gpu.data import ExperimentData
from coarse_gpu.evaluate import (
    dr_scores,
    dr_value,
    oracle_control_value,
    oracle_full_personalization,
    oracle_value,
    share_of_full,
)
from coarse_gpu.evaluate.bootstrap import SharedBootstrap, percentile_ci
from coarse_gpu.experiment.dose import DoseScorer
from coarse_gpu.experiment.estimates import ProfitEstimates
from coarse_gpu.policy import Policy

__all__ = ["Evaluator", "Scored", "oracle_points"]


def oracle_points(space) -> list[int]:
    """Grid points per dimension for the oracle's full personalization (101 x 81 in 2-D)."""
    return [101, 81] if space.dim == 2 else [101] * space.dim if space.dim == 1 else [41] * space.dim


@dataclass
class Scored:
    """One policy's evaluation on the scored customers (per-customer profits, currency units)."""

    oracle_profit: Optional[float]
    share_of_full: Optional[float]
    dr_value: float
    dr_ci: tuple[float, float]
    # The paper's measure ("expected incremental profit"): the model's own estimates throughout, i.e.
    # (pi_hat(policy) - pi_hat(control)) / (pi_hat(each customer's estimated best) - pi_hat(control)).
    expected_profit: Optional[float] = None
    expected_share_of_full: Optional[float] = None


class Evaluator:
    """Scores policies on the scored customers: TRUE profit (simulated data) and doubly robust value.

    The DR value uses only what a real user has (randomized arms, realized profits, the model's
    held-out estimates): for a treatment off the experimental arms, the residual correction comes
    from the surrounding arms with multilinear interpolation weights (see coarse_gpu.evaluate.dr).
    Every policy's interval comes from the same bootstrap resamples (``SharedBootstrap``), so the
    intervals of differences between policies are paired.
    """

    def __init__(self, test: ExperimentData, estimates: ProfitEstimates, n_boot: int, ci_level: float, seed: int,
                 control: Optional[float] = None, full: Optional[tuple] = None) -> None:
        self.test = test
        self.est = estimates
        self.mu_arms = estimates.mu_arms
        self.alpha = 1.0 - ci_level
        self.boot = SharedBootstrap(len(test), int(n_boot), seed) if n_boot > 0 else None
        self.has_truth = test.truth is not None
        # Both are properties of the scored customers' true profits only; reuse them when given.
        # Without a simulator (your own data) they are None: policies get DR values only.
        if self.has_truth:
            self.control = control if control is not None else oracle_control_value(test.truth, test.space)
            self.full, self.full_treatments = full if full is not None and full[0] is not None else \
                oracle_full_personalization(test.truth, test.space, points=oracle_points(test.space))
        else:
            self.control, self.full, self.full_treatments = None, None, None
        # Estimated control / full-personalization values (the paper's "expected" share) and, without a
        # simulator, the DR values of both (the DR share's reference points); set by the pipeline.
        self.est_control: Optional[float] = None
        self.est_full: Optional[float] = None
        self.dr_control: Optional[float] = None
        self.dr_full: Optional[float] = None
        # a continuously randomized dose: the kernel-smoothed DR replaces the arms-based AIPW
        self.dose = None
        if (getattr(test, "meta", None) or {}).get("continuous_dose"):
            self.dose = DoseScorer(test, estimates.mu_observed,
                                   support=(np.asarray(test.space.low), np.asarray(test.space.high)))

    def mu_policy(self, policy: Policy) -> np.ndarray:
        rows = np.arange(len(self.test))
        return self.est.profit_at(policy.treatments)[rows, policy.assignment]

    def scores(self, policy: Policy, mu_policy: Optional[np.ndarray] = None) -> np.ndarray:
        """(N,) AIPW scores of ``policy`` (their mean is its doubly robust value); the kernel-DR scores
        (coarse_gpu.experiment.dose.DoseScorer) on a continuously randomized dose."""
        mu_policy = self.mu_policy(policy) if mu_policy is None else mu_policy
        if self.dose is not None:
            return self.dose.scores(policy, mu_policy)
        kappa = self.est.arm_weights(policy.treatments)[policy.assignment]
        return dr_scores(self.test.outcome, self.test.arm, self.test.propensity, self.mu_arms, mu_policy, kappa)

    def intervals(self, scores: np.ndarray) -> list[tuple[float, float]]:
        """Percentile CIs of the means of the columns of ``scores`` (N, P), from the shared resamples
        (the normal approximation when n_boot = 0)."""
        s = np.asarray(scores, dtype=np.float64)
        if self.boot is None:
            return [tuple(dr_value(s[:, j], n_boot=0, alpha=self.alpha).ci) for j in range(s.shape[1])]
        draws = self.boot.means(s)
        return [percentile_ci(draws[:, j], self.alpha) for j in range(s.shape[1])]

    def dr(self, policy: Policy) -> tuple[float, tuple[float, float]]:
        s = self.scores(policy)
        return float(s.mean()), self.intervals(s[:, None])[0]

    def score(self, policy: Policy, scores: np.ndarray, ci: tuple[float, float]) -> Scored:
        """The policy's Scored from its AIPW ``scores`` (N,) and their interval."""
        expected = float(self.mu_policy(policy).mean())
        expected_share = None
        if self.est_control is not None and self.est_full is not None and self.est_full > self.est_control:
            expected_share = share_of_full(expected, self.est_control, self.est_full)
        value = float(scores.mean())
        if not self.has_truth:
            return Scored(None, None, value, tuple(ci), expected, expected_share)
        oracle = oracle_value(self.test.truth, policy)
        return Scored(oracle, share_of_full(oracle, self.control, self.full), value, tuple(ci), expected,
                      expected_share)

    def dr_share(self, value: float) -> Optional[float]:
        """DR value as a share of full personalization's increment: true V_0 / V_full on simulated data,
        else the DR values of everyone-at-control and the estimated per-customer best (None if not larger)."""
        control, full = (self.control, self.full) if self.control is not None else (self.dr_control, self.dr_full)
        if control is None or full is None or not full > control:
            return None
        return share_of_full(value, control, full)
