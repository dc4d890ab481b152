"""Evaluation of the main job's policies on the scored customers: true profit and doubly robust value.

``Evaluator`` scores one K's policies together: their AIPW scores share one set of bootstrap
resamples (coarse_gpu.evaluate.bootstrap), so every interval -- of a policy's value and of the
difference between two policies -- comes from one pass. ``reference_values`` computes the points
every share is measured against (no treatment, full personalization), from true profits on
simulated data and from the estimates (the paper's "expected" share) everywhere.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from coarse_gpu.data import ExperimentData
from coarse_gpu.evaluate import (
    dr_scores,
    dr_value,
    oracle_control_value,
    oracle_full_personalization,
)
from coarse_gpu.evaluate.bootstrap import SharedBootstrap, percentile_ci
from coarse_gpu.evaluate.metrics import DEFAULT_JOB_METRICS, METRICS, PolicyEvidence, References, evaluate_metrics
from coarse_gpu.experiment.dose import DoseScorer
from coarse_gpu.experiment.estimates import ProfitEstimates
from coarse_gpu.policy import Policy

__all__ = ["Evaluator", "oracle_points"]


def oracle_points(space) -> list[int]:
    """Grid points per dimension for the oracle's full personalization (101 x 81 in 2-D)."""
    return [101, 81] if space.dim == 2 else [101] * space.dim if space.dim == 1 else [41] * space.dim


class Evaluator:
    """Scores policies on the scored customers: TRUE profit (simulated data) and doubly robust value.

    The DR value uses only what a real user has (randomized arms, realized profits, the model's
    held-out estimates): for a treatment off the experimental arms, the residual correction comes
    from the surrounding arms with multilinear interpolation weights (see coarse_gpu.evaluate.dr).
    Every policy's interval comes from the same bootstrap resamples (``SharedBootstrap``), so the
    intervals of differences between policies are paired. A policy's results.json numbers are the
    registered metrics ``metrics`` (coarse_gpu.evaluate.metrics, ``evaluation.metrics``) on its
    ``evidence``: the same functions ``CoarsePersonalizer.evaluate`` computes through.
    """

    def __init__(self, test: ExperimentData, estimates: ProfitEstimates, n_boot: int, ci_level: float, seed: int,
                 control: Optional[float] = None, full: Optional[tuple] = None,
                 metrics: Sequence[str] = DEFAULT_JOB_METRICS) -> None:
        self.test = test
        self.metric_names = tuple(metrics)
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

    def extra_metrics(self) -> dict:
        """results.json's "extra_metrics": {name: {keys, description}} of the run's metrics beyond the
        built-ins ({} on the default run, which then writes no such key)."""
        extra = {m: {"keys": list(METRICS[m].keys), "description": METRICS[m].description}
                 for m in self.metric_names if m not in DEFAULT_JOB_METRICS}
        return {"extra_metrics": extra} if extra else {}

    def references(self) -> References:
        """The shares' reference points as they stand (the pipeline sets the estimated and DR ones)."""
        return References(self.control, self.full, self.est_control, self.est_full, self.dr_control, self.dr_full)

    def evidence(self, policy: Policy, scores: np.ndarray, draws: Optional[np.ndarray] = None,
                 mu_policy: Optional[np.ndarray] = None) -> PolicyEvidence:
        """What the metrics read about ``policy``: its AIPW ``scores`` (N,), their bootstrap means ``draws``
        (n_boot,) from the shared resamples (None: the normal approximation) and its estimates."""
        test = self.test
        return PolicyEvidence(
            policy=policy, outcome=test.outcome, treatment=test.treatment,
            arm=None if self.dose is not None else test.arm, propensity=test.propensity,
            mu_policy=self.mu_policy(policy) if mu_policy is None else mu_policy, scores=np.asarray(scores),
            draws=draws, alpha=self.alpha, profit_at=self.est.profit_at,
            truth=test.truth if self.has_truth else None, references=self.references())

    def metrics(self, policy: Policy, scores: np.ndarray, draws: Optional[np.ndarray] = None,
                mu_policy: Optional[np.ndarray] = None) -> dict:
        """{results.json key: value} of the run's metrics (``evaluation.metrics``) for ``policy``."""
        return evaluate_metrics(self.evidence(policy, scores, draws, mu_policy), self.metric_names)
