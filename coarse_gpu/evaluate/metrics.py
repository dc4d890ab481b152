"""Policy metrics: small named objects that the main job's evaluator and ``CoarsePersonalizer.evaluate`` share.

A metric reads one policy's ``PolicyEvidence`` on N scored customers -- the observed rows (realized
profit, received arm and its propensity), the model's estimates (at the policy's treatments, and its
doubly robust scores), and the true profits where a simulator knows them -- and returns a value, a
``MetricValue`` (a value and its CI) or, for the built-ins that fill several results.json keys, a
mapping of those keys. Both doors compute through ``evaluate_metrics``, so a number in results.json
and the same number from the Python API come from one function.

    from coarse_gpu.evaluate.metrics import Metric, register_metric
    register_metric(Metric("treated_share", lambda ev: float(np.mean(ev.policy.treatments[ev.policy.assignment]
                                                                         .any(1)))))

then ``coarse-gpu evaluation.metrics=[true_profit,dr,dr_share,expected,segments,treated_share]`` (with the
module imported through ``plugins``, coarse_gpu.utils.plugins) or ``cp.evaluate(..., metrics=["dr",
"treated_share"])`` adds the key ``treated_share`` to each result (docs/extending.md, "A new metric").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from coarse_gpu.evaluate.bootstrap import percentile_ci
from coarse_gpu.evaluate.dr import dr_value
from coarse_gpu.evaluate.oracle import oracle_value, share_of_full
from coarse_gpu.policy.policy import Policy

__all__ = [
    "DEFAULT_API_METRICS", "DEFAULT_JOB_METRICS", "METRICS", "NEEDS", "Metric", "MetricValue", "PolicyEvidence",
    "References", "evaluate_metrics", "metric_name_problems", "register_metric",
]

#: What a metric may need beyond the observed rows and the model's estimates (always there): the true
#: profits (simulated data only) and the reference points of the shares (the main job's; the API has none).
NEEDS = ("truth", "references")


@dataclass(frozen=True)
class References:
    """The points every share is measured against (per-customer profits, currency units); None where unknown.

    control, full : TRUE value of everyone at the control treatment / of full personalization (simulators).
    est_control, est_full : the same from the model's estimates (the paper's "expected" share).
    dr_control, dr_full : their doubly robust values (the DR share's reference points without a simulator).
    """

    control: Optional[float] = None
    full: Optional[float] = None
    est_control: Optional[float] = None
    est_full: Optional[float] = None
    dr_control: Optional[float] = None
    dr_full: Optional[float] = None


@dataclass(frozen=True)
class PolicyEvidence:
    """What a metric may read about one policy on N scored customers.

    policy : the policy (treatments (K, d), assignment (N,) segment of each customer).
    outcome : (N,) realized profit y (currency units); treatment : (N, d) the received treatment;
    arm : (N,) int index of the received experimental arm, or None on a continuously randomized dose;
    propensity : (N,) probability of the received arm (a density on a dose), or None where estimated.
    mu_policy : (N,) the model's estimated profit of each customer at her assigned treatment.
    scores : (N,) doubly robust pseudo-outcomes of the policy (their mean is its DR value).
    draws : (n_boot,) bootstrap means of ``scores`` from the run's shared resamples, or None (normal
        approximation). alpha : 1 - the CI level.
    profit_at : the model's estimates, (M, d) treatments -> (N, M) profits, or None.
    truth : the simulator's true profits (``profit(treatments, rows=None) -> (N, M)``), or None.
    references : ``References`` of the shares, or None.
    """

    policy: Policy
    outcome: np.ndarray
    treatment: Optional[np.ndarray]
    arm: Optional[np.ndarray]
    propensity: Optional[np.ndarray]
    mu_policy: np.ndarray
    scores: np.ndarray
    draws: Optional[np.ndarray] = None
    alpha: float = 0.05
    profit_at: Optional[Callable[[np.ndarray], np.ndarray]] = None
    truth: Any = None
    references: Optional[References] = None

    def has(self, need: str) -> bool:
        return (self.truth if need == "truth" else self.references) is not None


@dataclass(frozen=True)
class MetricValue:
    """A metric's value with its (lo, hi) confidence interval: results get ``<name>`` and ``<name>_ci``."""

    value: float
    ci: tuple[float, float]


@dataclass(frozen=True)
class Metric:
    """A named summary of one policy on the scored customers.

    name : the name ``evaluation.metrics`` and ``evaluate(metrics=...)`` use (an identifier).
    compute : ``PolicyEvidence -> float | MetricValue | Mapping[key, value] | None``.
    needs : subset of ``NEEDS``; without one of them (e.g. no simulator) every key is None and ``compute``
        is not called.
    keys : the result keys it writes: (name,) by default, (name, name_ci) with ``ci=True``; a mapping
        returned by ``compute`` must have exactly these keys.
    ci : whether ``compute`` returns a MetricValue.
    description : one line for the docs and the report.
    """

    name: str
    compute: Callable[[PolicyEvidence], Any]
    needs: frozenset = frozenset()
    keys: tuple = ()
    ci: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Metric name must be an identifier (a results.json key), got {self.name!r}")
        if not callable(self.compute):
            raise ValueError(f"Metric {self.name!r}: compute must be callable, got {type(self.compute).__name__}")
        unknown = sorted(set(self.needs) - set(NEEDS))
        if unknown:
            raise ValueError(f"Metric {self.name!r}: needs {unknown} are not among {list(NEEDS)}")
        object.__setattr__(self, "needs", frozenset(self.needs))
        keys = tuple(self.keys) or ((self.name, f"{self.name}_ci") if self.ci else (self.name,))
        object.__setattr__(self, "keys", keys)

    def __call__(self, ev: PolicyEvidence) -> dict:
        """{key: value} of this metric on ``ev`` (None for every key when something it needs is missing)."""
        if not all(ev.has(n) for n in self.needs):
            return dict.fromkeys(self.keys)
        out = self.compute(ev)
        if isinstance(out, Mapping):
            if tuple(out) != self.keys:
                raise ValueError(f"metric {self.name!r} returned keys {list(out)}, it declares {list(self.keys)}")
            return dict(out)
        if isinstance(out, MetricValue) != self.ci:
            raise ValueError(f"metric {self.name!r} returned {type(out).__name__}; with ci={self.ci} it returns "
                             + ("a MetricValue(value, (lo, hi))" if self.ci else "a number, None or a mapping"))
        if isinstance(out, MetricValue):
            return {self.keys[0]: float(out.value), self.keys[1]: [float(out.ci[0]), float(out.ci[1])]}
        return {self.keys[0]: None if out is None else float(out)}


#: Keys a result cell (results.json) or ``evaluate``'s dict holds besides the metrics' (no metric writes them).
RESERVED_KEYS = ("treatments", "treatments_labelled", "extrapolated", "policy_path", "se", "n", "kernel_dr")
#: The registry: name -> Metric (``register_metric``), in registration order.
METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric, *, replace: bool = False) -> Metric:
    """Make ``metric`` known to the main job (``evaluation.metrics``) and to ``CoarsePersonalizer.evaluate``.

    A name already registered is an error unless ``replace=True``; so is a result key another metric writes."""
    if not isinstance(metric, Metric):
        raise ValueError(f"register_metric takes a coarse_gpu.evaluate.metrics.Metric, got {type(metric).__name__}")
    if metric.name in METRICS and not replace:
        raise ValueError(f"a metric named {metric.name!r} is registered already (pass replace=True to replace it)")
    taken = sorted(set(metric.keys) & set(RESERVED_KEYS))
    if taken:
        raise ValueError(f"metric {metric.name!r} would write key(s) {taken}, which results hold for other things")
    for other in METRICS.values():
        clash = set(other.keys) & set(metric.keys)
        if other.name != metric.name and clash:
            raise ValueError(f"metric {metric.name!r} writes key(s) {sorted(clash)} that metric {other.name!r} "
                             "writes already")
    METRICS[metric.name] = metric
    return metric


def metric_name_problems(names, key: str) -> list[str]:
    """One line per problem with the metric names ``names`` given as ``key`` (unknown, repeated, not a list)."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        return [f"{key} must be a list of metric names, e.g. {list(DEFAULT_API_METRICS)}; got {names!r}"]
    out = [f"{key}: unknown metric {n!r}; known: {', '.join(METRICS)}" for n in names if n not in METRICS]
    if len(set(map(str, names))) != len(names):
        out.append(f"{key}={list(names)} repeats a metric; list each once")
    return out


def evaluate_metrics(ev: PolicyEvidence, names: Sequence[str]) -> dict:
    """{result key: value} of the metrics ``names`` (registered) on ``ev``, in that order."""
    problems = metric_name_problems(names, "metrics")
    if problems:
        raise ValueError(problems[0])
    out: dict = {}
    for name in names:
        out.update(METRICS[name](ev))
    return out


# -- the built-in metrics (results.json's keys since before metrics were objects) ---------------------------

def _true_profit(ev: PolicyEvidence) -> dict:
    """TRUE mean profit of the policy and its share of full personalization's increment over control."""
    value = oracle_value(ev.truth, ev.policy)
    ref = ev.references
    share = share_of_full(value, ref.control, ref.full) if ref.control is not None and ref.full is not None \
        else None
    return {"oracle_profit": value, "share_of_full": share}


def _dr(ev: PolicyEvidence) -> dict:
    """Mean of the doubly robust scores and its percentile CI from the shared resamples (the normal
    approximation without resamples: ``dr_value`` with n_boot = 0)."""
    s = np.asarray(ev.scores, dtype=np.float64)
    ci = percentile_ci(ev.draws, ev.alpha) if ev.draws is not None else dr_value(s, n_boot=0, alpha=ev.alpha).ci
    return {"dr_value": float(s.mean()), "dr_ci": [float(ci[0]), float(ci[1])]}


def _dr_share(ev: PolicyEvidence) -> Optional[float]:
    """DR value as a share of full personalization's increment: against the true V_0 / V_full on simulated
    data, else against the DR values of everyone-at-control and the estimated per-customer best (None
    when the latter is not larger)."""
    ref = ev.references
    control, full = (ref.control, ref.full) if ref.control is not None else (ref.dr_control, ref.dr_full)
    if control is None or full is None or not full > control:
        return None
    return share_of_full(float(np.asarray(ev.scores, dtype=np.float64).mean()), control, full)


def _expected(ev: PolicyEvidence) -> dict:
    """The paper's "expected incremental profit": the model's own estimates throughout, i.e. the mean
    estimate at the policy and (pi_hat(policy) - pi_hat(control)) / (pi_hat(best) - pi_hat(control))."""
    expected = float(np.asarray(ev.mu_policy, dtype=np.float64).mean())
    ref = ev.references
    share = None
    if ref is not None and ref.est_control is not None and ref.est_full is not None and ref.est_full > ref.est_control:
        share = share_of_full(expected, ref.est_control, ref.est_full)
    return {"expected_profit": expected, "expected_share_of_full": share}


def _segments(ev: PolicyEvidence) -> dict:
    """Customers per segment (K,) and the segments serving someone (below K when some are empty)."""
    sizes = np.asarray(ev.policy.segment_sizes).astype(int)
    return {"segment_sizes": sizes.tolist(), "effective_k": int(np.count_nonzero(sizes))}


for _m in (
    Metric("true_profit", _true_profit, needs=frozenset({"truth", "references"}),
           keys=("oracle_profit", "share_of_full"),
           description="TRUE mean profit per customer and its share of full personalization (simulators)"),
    Metric("dr", _dr, keys=("dr_value", "dr_ci"),
           description="doubly robust value per customer with its bootstrap CI"),
    Metric("dr_share", _dr_share, needs=frozenset({"references"}), keys=("dr_share_of_full",),
           description="the DR value as a share of full personalization's increment"),
    Metric("expected", _expected, keys=("expected_profit", "expected_share_of_full"),
           description="the model's estimated profit of the policy and its share (the paper's measure)"),
    Metric("segments", _segments, keys=("segment_sizes", "effective_k"),
           description="customers per segment and the number of non-empty segments"),
):
    register_metric(_m)

#: The main job's metrics (every cell of results.json; the report's tables read them all).
DEFAULT_JOB_METRICS = ("true_profit", "dr", "dr_share", "expected", "segments")
#: ``CoarsePersonalizer.evaluate``'s metrics by default (it has no simulator and no reference points).
DEFAULT_API_METRICS = ("dr", "segments")
