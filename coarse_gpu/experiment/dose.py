"""The main job on a continuously randomized dose: every customer her own dose, no arms.

Such data (``meta["continuous_dose"]``: ``data=dose``, the simulator of coarse_gpu.data.dose_simulator,
or a file whose numeric treatment column has ~every value distinct, coarse_gpu.data.file) run through
the same steps as an arms-based experiment, with four differences, all here:

* Treatment space and candidates (``dose_space``, ``dose_candidates``): the box is narrowed to the
  observed doses (a model knows nothing beyond them; a saved policy may only offer what was trained on)
  and the candidates are a regular grid over it (``data.candidate_points``, default ``DOSE_POINTS`` per
  dimension); the refinement moves treatments continuously inside it.
* Step 1 (``dose_model_names``, ``personalize_dose``): only learners that fit raw doses run --
  dose_logit, dose_vc and gb_s (as ``GBSDose``, the same trees predicting at any dose). The learners
  that need arms (tarnet / dragonnet per-arm heads, gb_t, dr, arm_means, twopart) are refused by name;
  ``model=auto`` drops them from its candidates and keeps the one dose learner with the smallest
  cross-fitted squared error of the realized profit at the received dose (in a randomized experiment
  E[(y - mu(x, t))^2] = E[(pi(x, t) - mu(x, t))^2] + noise: the criterion ranks the models by their
  error on the design's doses). Each customer's estimate at her own dose (``mu_observed``) is
  out-of-fold, as every other estimate of the job.
* Evaluation (``DoseScorer``): the kernel-smoothed doubly robust value of coarse_gpu.evaluate.kernel_dr
  with the generalized propensity score f(t | x) from the declared design (``meta["dose_design"]``),
  the density column (``data.propensity``), or estimated (coarse_gpu.evaluate.gps.BinnedDoseDensity on
  the scored customers); bandwidth by ``bandwidth_rule`` ("undersmooth", for CIs), Epanechnikov kernel
  with the boundary correction; overlap problems are warnings (the run goes on, the log says which).
  The bootstrap CIs, paired comparisons and choose-K of the job use these scores unchanged.
  ``evaluate_dose_policy`` scores a saved / fitted policy on new rows the same way (the Python API's
  ``CoarsePersonalizer.evaluate``).
* Baselines that need arms (``grid``: the best K-subset of the experiment's arms) are skipped, with a
  note in results.json; every other method works on the candidate grid.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from types import SimpleNamespace
from typing import Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig

from coarse_gpu.data import ExperimentData
from coarse_gpu.data.dose_design import UniformDoseDesign
from coarse_gpu.evaluate.gps import BinnedDoseDensity
from coarse_gpu.evaluate.kernel_dr import bandwidth_rule, kernel_dr_scores, kernel_dr_value
from coarse_gpu.experiment.composed import model_config
from coarse_gpu.experiment.errors import ConfigValueError
from coarse_gpu.experiment.estimates import ProfitEstimates, _oof_dose_oracle
from coarse_gpu.experiment.model_build import build_model
from coarse_gpu.models import AutoCATE, CrossFitted, GBSDose, GBSLearner
from coarse_gpu.models.registry import RegistryView
from coarse_gpu.policy import Policy

__all__ = ["ARMS_ONLY_MODELS", "DOSE_MODELS", "DOSE_POINTS", "DoseScorer", "check_dose_model", "dose_candidates",
           "dose_model_names", "dose_policy_scores", "dose_space", "evaluate_dose_policy", "is_continuous_dose",
           "personalize_dose"]

log = logging.getLogger("coarse_gpu")

#: The ``model=`` names that fit raw doses: the learners registered with ``dose=True``
#: (coarse_gpu.models.registry; gb_s runs as coarse_gpu.models.gb_dose.GBSDose).
DOSE_MODELS = RegistryView(lambda e: (e.name,) if e.dose else ())
#: The learners that need arms (one head / regressor / mean per arm): refused on a continuous dose.
ARMS_ONLY_MODELS = RegistryView(lambda e: (e.name,) if not e.dose and e.name != "auto" else ())
#: model=auto's learners on a continuous dose when model.candidates is the default list: the structured dose
#: network and the boosting S-learner (the list's dose_vc stays out: the continuous-dose selection was
#: measured with these two; model=dose_vc or an explicit model.candidates list runs it).
DOSE_AUTO = ("dose_logit", "gb_s")
#: Candidate grid points per dose dimension when ``data.candidate_points`` is null.
DOSE_POINTS = 41
#: Rows per block when a model without ``predict_at`` predicts each row at its own dose.
_ROW_BLOCK = 256


def is_continuous_dose(data: ExperimentData) -> bool:
    return bool(data.meta.get("continuous_dose"))


def dose_space(data: ExperimentData) -> ExperimentData:
    """``data`` with its treatment box narrowed to the observed doses (the control clipped into it)."""
    s = data.space
    t = np.asarray(data.treatment, dtype=np.float64)
    low = np.maximum(np.asarray(s.low, dtype=np.float64), t.min(0))
    high = np.minimum(np.asarray(s.high, dtype=np.float64), t.max(0))
    control = np.clip(np.asarray(s.control, dtype=np.float64), low, high)
    space = dataclasses.replace(s, low=tuple(low.tolist()), high=tuple(high.tolist()),
                                control=tuple(control.tolist()))
    return dataclasses.replace(data, space=space)


def dose_candidates(data: ExperimentData, data_cfg) -> np.ndarray:
    """(M, d) regular grid over the (narrowed) dose box: ``data.candidate_points`` per dimension, else
    ``DOSE_POINTS``; a one-line error naming the key when its length is wrong."""
    points = data_cfg.get("candidate_points") if data_cfg is not None else None
    points = [DOSE_POINTS] * data.space.dim if points is None else [int(p) for p in points]
    if len(points) != data.space.dim or min(points) < 2:
        raise ValueError(f"data.candidate_points={points} needs one count >= 2 per dose dimension "
                         f"{list(data.space.names)}")
    return data.space.grid(points)


def dose_model_names(model_cfg) -> tuple[list[str], list[str]]:
    """(the dose learners step 1 fits, the arm-only candidates of model=auto left out); a ValueError naming
    model= for an arm-only learner or an auto list without a dose learner."""
    name = model_cfg.get("name")
    if name in DOSE_MODELS:
        return [name], []
    if name != "auto" and name not in ARMS_ONLY_MODELS:
        raise ValueError(f"model={name} (model._target_={model_cfg.get('_target_')!r}) on a continuously randomized "
                         f"dose: only the built-in dose learners {list(DOSE_MODELS)} fit raw doses (and those registered with dose=True)")
    if name != "auto":
        raise ValueError(f"model={name} needs experimental arms (one head or regressor per arm), but every customer "
                         f"received her own dose (a continuously randomized dose): use model=auto or one of "
                         f"{list(DOSE_MODELS)}")
    cands = list(model_cfg.get("candidates") or AutoCATE().candidates)
    if cands == list(AutoCATE().candidates):  # the default list: its dose learners are DOSE_AUTO
        return list(DOSE_AUTO), [c for c in cands if c not in DOSE_MODELS]
    keep = [c for c in cands if c in DOSE_MODELS]
    if not keep:
        raise ValueError(f"model.candidates={cands} holds no learner that fits raw doses (a continuously randomized "
                         f"dose has no arms): include one of {list(DOSE_MODELS)}")
    return keep, [c for c in cands if c not in keep]


def check_dose_model(model_cfg, data: ExperimentData) -> None:
    """Before any training: the model can fit a continuous dose (``dose_model_names``); ConfigValueError."""
    if not is_continuous_dose(data):
        return

    try:
        dose_model_names(model_cfg)
    except ValueError as err:
        raise ConfigValueError([str(err)]) from None


def _config_of(name: str, model_cfg, auto: bool) -> DictConfig:
    """The model config of one dose learner: the run's own, or (model=auto) that learner's YAML with every
    key the run set away from the schema's default (n_folds, max_epochs, max_iter, ...), as model=auto
    hands its keys to its candidates."""
    if not auto:
        return model_cfg
    base = model_config("auto")  # what model=auto sets by itself (candidates, combine, blend) is not the user's
    cfg = model_config(name)
    for key in model_cfg:
        if key in ("name", "_target_", "candidates", "combine", "blend") or key not in cfg:
            continue
        if model_cfg.get(key) != base.get(key):
            cfg[key] = model_cfg.get(key)
    return cfg


def _fit_transforms(cfg, d: int):
    """A model=dose_logit config whose ``transforms`` list is the YAML's two-lever default ([identity,
    log1p], the promotions simulator's) on a dose with another number of dimensions: identity for each
    (logged); a list the user set to the wrong length stays (DoseLogit names it)."""
    tf = cfg.get("transforms")
    if cfg.get("name") != "dose_logit" or tf is None or isinstance(tf, str) or len(tf) == d:
        return cfg
    if list(tf) == list(model_config("dose_logit").get("transforms")):
        cfg = cfg.copy()
        cfg.transforms = ["identity"] * d
        log.info("model.transforms: the default %s is for two levers; the dose has %d dimension(s): identity", list(tf), d)
    return cfg


def _build(name: str, cfg, device, seed: int, verbose: bool, checkpoint_dir, d: int = 1):
    model = build_model(_fit_transforms(cfg, d), device, seed, verbose, checkpoint_dir=checkpoint_dir)
    if isinstance(model, GBSLearner):  # the same trees, predicting at any dose (models.gb_dose)
        model = GBSDose(**model.get_params())
    n_folds = int(cfg.get("n_folds") or 1)
    if n_folds < 2:
        raise ValueError("model.n_folds must be >= 2 on a continuous dose (cross-fitting: every customer's estimate "
                         "comes from a model that did not see her)")
    return CrossFitted(model, n_folds=n_folds, seed=seed, verbose=verbose, batched=bool(cfg.get("batched", True)))


def predict_rows(model, X: np.ndarray, T: np.ndarray) -> np.ndarray:
    """(N,) prediction of row i at its own dose T[i] (``predict_at`` when the model has one, else the
    diagonal of ``predict_profit`` on blocks of rows)."""
    if hasattr(model, "predict_at"):
        return np.asarray(model.predict_at(X, T), dtype=np.float64)
    out = np.empty(X.shape[0])
    for lo in range(0, X.shape[0], _ROW_BLOCK):
        sl = slice(lo, lo + _ROW_BLOCK)
        out[sl] = np.diag(model.predict_profit(X[sl], T[sl]))
    return out


def _observed(cf, scored: ExperimentData, same_customers: bool) -> np.ndarray:
    """(N,) estimate of each scored customer at her received dose: out-of-fold, or the ensemble's."""
    if not same_customers:
        return np.mean([predict_rows(m, scored.X, scored.treatment) for m in cf.members()], axis=0)
    out = np.empty(len(scored))
    for k, members in enumerate(cf.models_):
        rows = np.flatnonzero(cf.fold_ == k)
        out[rows] = np.mean([predict_rows(m, scored.X[rows], scored.treatment[rows]) for m in members], axis=0)
    return out


def _oracle(cf, scored: ExperimentData, same_customers: bool, device: torch.device) -> Callable:
    if same_customers:
        return _oof_dose_oracle(cf, device)
    oracles = [m.profit_oracle(scored.X, device=device) for m in cf.members()]
    return lambda T: torch.stack([o(T) for o in oracles], 0).mean(0)


def _no_arms(T) -> np.ndarray:
    raise ValueError("a continuously randomized dose has no arms: the arms-based doubly robust weights do not exist "
                     "(the kernel DR of coarse_gpu.experiment.dose.DoseScorer scores its policies)")


def personalize_dose(model_cfg, train: ExperimentData, scored: ExperimentData, same_customers: bool,
                     device: torch.device, seed: int, verbose: bool, checkpoint_dir=None):
    """Step 1 on a continuous dose (module docstring). Returns (model, ProfitEstimates, model_selection):
    the estimates' ``mu_arms`` is (N, 0) (no arms) and ``mu_observed`` (N,) the estimate at each scored
    customer's own dose."""
    names, dropped = dose_model_names(model_cfg)
    if dropped:
        log.info("model=auto on a continuous dose: candidates %s need arms and are left out; comparing %s",
                 dropped, names)
    fits = {}
    for name in names:
        cfg = _config_of(name, model_cfg, model_cfg.get("name") == "auto")
        cf = _build(name, cfg, device, seed, verbose, checkpoint_dir, train.space.dim)
        t0 = time.perf_counter()
        cf.fit(train.X, train.treatment, train.outcome)
        mu = _observed(cf, scored, same_customers)
        fits[name] = (cf, mu, (scored.outcome - mu) ** 2, time.perf_counter() - t0)
    chosen = min(fits, key=lambda n: fits[n][2].mean())
    cf, mu = fits[chosen][:2]
    oracle = _oracle(cf, scored, same_customers, device)
    profit_at = lambda T: oracle(np.atleast_2d(np.asarray(T, dtype=np.float64))).cpu().numpy()  # noqa: E731
    est = ProfitEstimates(np.empty((len(scored), 0)), profit_at, _no_arms, oracle,
                          "out-of-fold" if same_customers else "held-out", None, mu_observed=mu)
    if model_cfg.get("name") == "auto":
        cf.selected_ = chosen  # results.json's model.selected
    return cf, est, _selection(fits, chosen, dropped, est.source, int(cf.n_folds))


def _selection(fits: dict, chosen: str, dropped: list, source: str, n_folds: int) -> dict:
    """results.json's model_selection on a continuous dose: per learner the mean squared error of the
    realized profit at the received dose (its "decision_loss" slot, lower is better) with its se and the
    paired se of its difference to the chosen one."""
    n = len(fits[chosen][2])
    se = lambda v: float(np.std(v, ddof=1) / np.sqrt(n)) if n > 1 else 0.0  # noqa: E731
    cands = {name: {"decision_loss": float(sq.mean()), "se": se(sq), "se_diff_vs_winner": se(sq - fits[chosen][2]),
                    "policy_value": None, "policy_value_se": None, "members": [name], "fit_s": float(secs)}
             for name, (_, _, sq, secs) in fits.items()}
    return {"criterion": "mse_at_received_dose", "n_folds": n_folds, "propensity": "not used (outcome models)",
            "candidates": cands, "winner": chosen, "left_out_need_arms": list(dropped),
            "criterion_text": f"squared error of the realized profit at the received dose, {source} estimates, "
                              "{n} folds; lower is better (a continuous dose has no arms for decision losses)"}


class DoseScorer:
    """Kernel-DR pseudo-outcomes of policies on the scored customers of a continuous dose.

    test : the scored customers; mu_observed : (N,) their estimate at the received dose;
    support : (low (d,), high (d,)) the randomized range (the design's box, else the observed doses').
    """

    def __init__(self, test: ExperimentData, mu_observed: np.ndarray, support: Optional[tuple] = None) -> None:
        self.test, self.mu_observed = test, np.asarray(mu_observed, dtype=np.float64)
        design = test.meta.get("dose_design")
        t = np.asarray(test.treatment, dtype=np.float64)
        if design is not None:
            known = UniformDoseDesign.from_meta(design)
            self.density: Optional[Callable] = lambda X, T: known.density(T)  # noqa: E731
            self.support = (np.asarray(known.low), np.asarray(known.high))
            self.source = "declared uniform design"
        elif test.meta.get("density_column"):
            self.density, self.support = None, support or (t.min(0), t.max(0))
            self.source = "density column"
        else:
            self.density = BinnedDoseDensity().fit(test.X, t).predict_density
            self.support = support or (t.min(0), t.max(0))
            self.source = "estimated (BinnedDoseDensity)"
        self.f_observed = np.asarray(test.propensity if self.density is None else self.density(test.X, t),
                                     dtype=np.float64)
        self.bandwidth = bandwidth_rule(t)

    def record(self) -> dict:
        """What results.json says about the estimator."""
        return {"estimator": "kernel-smoothed doubly robust (Kallus & Zhou 2018; Colangelo & Lee 2020)",
                "kernel": "epanechnikov", "boundary": "linear", "bandwidth_rule": "undersmooth",
                "bandwidth": self.bandwidth.tolist(), "density": self.source,
                "support": [np.asarray(s).tolist() for s in self.support]}

    def scores(self, policy, mu_policy: np.ndarray) -> np.ndarray:
        """(N,) kernel-DR scores of ``policy`` (their mean is its value); overlap problems are warnings."""
        tau = np.asarray(policy.treatments, dtype=np.float64)[policy.assignment]
        tau = np.clip(tau, self.support[0], self.support[1])  # refinement's float round-off at the edges
        pol_f = None if self.density is None else self.density(self.test.X, tau)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s = kernel_dr_scores(self.test.outcome, self.test.treatment, tau, self.mu_observed, mu_policy,
                                 self.f_observed, self.bandwidth, support=self.support, policy_density=pol_f,
                                 overlap="warn")
        for w in caught:
            log.warning("policy %s: %s", policy.name, w.message)
        return s


def evaluate_dose_policy(policy, X: np.ndarray, treatment: np.ndarray, outcome: np.ndarray,
                         density: Optional[np.ndarray] = None, n_boot: int = 1000, alpha: float = 0.05,
                         seed: int = 0):
    """(DRResult of ``kernel_dr_value``, segment (N,) int64, the DoseScorer) of a deployed dose policy on
    rows new to its model: ``dose_policy_scores`` averaged, with the shared-bootstrap CI."""
    scores, seg, _, scorer = dose_policy_scores(policy, X, treatment, outcome, density)
    return kernel_dr_value(scores, n_boot=n_boot, alpha=alpha, seed=seed), seg, scorer


def dose_policy_scores(policy, X: np.ndarray, treatment: np.ndarray, outcome: np.ndarray,
                       density: Optional[np.ndarray] = None):
    """The kernel-DR scores of a deployed dose policy (``coarse_gpu.policy.io.DeployedPolicy`` with its
    ``dose`` record) on rows new to its model, as the main job scores held-out customers.

    X : (N, p) model matrix; treatment : (N, d) received doses; outcome : (N,) realized profit (currency
    units); density : optional (N,) f(t_i | x_i) (1 / treatment units^d), a density column. The GPS, as
    in the job: the declared design (``policy.dose["design"]``), else ``density``, else estimated on these
    rows (``DoseScorer``). Each row's estimate at her own dose is the ensemble's (no member saw her, as the job's held-out scoring); the
    support is the trained dose range widened to these rows' doses (the policy's doses lie in the former,
    the kernel windows may reach the latter). Returns (scores (N,), segment (N,) int64, the estimated
    profit at the assigned dose (N,), the DoseScorer).
    """
    rec = policy.dose
    T = np.asarray(treatment, dtype=np.float64)
    meta = {"continuous_dose": True, "density_column": density is not None}
    if rec.get("design") is not None:  # the declared design first, as the job's DoseScorer
        meta["dose_design"] = rec["design"]
    # DoseScorer reads only these fields of the scored ExperimentData
    rows = SimpleNamespace(X=X, treatment=T, outcome=np.asarray(outcome, dtype=np.float64), meta=meta,
                           propensity=None if density is None else np.asarray(density, dtype=np.float64))
    support = (np.minimum(np.asarray(rec["low"]), T.min(0)), np.maximum(np.asarray(rec["high"]), T.max(0)))
    members = policy.model.members() if hasattr(policy.model, "members") else [policy.model]
    mu_observed = np.mean([predict_rows(m, X, T) for m in members], axis=0)
    seg, mu_policy = policy.assign_matrix(X)
    scorer = DoseScorer(rows, mu_observed, support=support)
    scores = scorer.scores(Policy(policy.method, np.asarray(policy.treatments), seg), mu_policy)
    return scores, seg, mu_policy, scorer


def results_note(methods: list[str]) -> Optional[str]:
    """results.json's note on the methods a continuous dose skips."""
    if "grid" in methods:
        return ("grid skipped: a continuously randomized dose has no experimental arms to search over (every "
                "other method chooses among the candidate grid of doses)")
    return None

