"""Step 1 of the main job: fit the CATE model and give every scored customer held-out profit estimates.

Every customer is used. By default (``data.eval_fraction=0``) the model is cross-fitted on all
customers (``model.n_folds`` folds): each customer's estimates come from the fold model that never
saw it (out-of-fold), and those estimates are what the discretizer, the baselines and the doubly
robust evaluation use; new customers are scored by the ensemble of all fold models. With
``data.eval_fraction > 0`` a share of the customers is held out instead: the (cross-fitted)
ensemble is fitted on the rest and scores the held-out customers.

``personalize`` returns the deployable model and a ``ProfitEstimates`` for the scored customers:
their predictions at the arms, a function giving their estimated profit at any treatments (one
(N, A) @ (A, M) product for the per-arm models), the multilinear map to the arms that the doubly
robust score needs, and a torch profit oracle for the discretizer's off-grid refinement.

``ProfitEstimates.at_candidates`` is the profit matrix the discretizer and the baselines receive. For the
per-arm models it is exactly mu_arms @ W.T (W (M, A) the arms-to-treatment weights), so above
``DENSE_PROFIT_ENTRIES`` N x M entries (2^26: 512 MiB in float64) it stays in that factored form
(``FactoredProfit``) and nothing downstream forms N x M: at 2,000,000 customers and 546 candidates the
dense matrix alone would be 8.7 GB. Below it the dense matrix is cheaper to reuse, and it is what the
default run has always used, so its numbers do not move.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from coarse_gpu.data import ExperimentData
from coarse_gpu.discretize.profit import FactoredProfit
from coarse_gpu.models import (
    ArmMeans,
    AutoCATE,
    Blend,
    CrossFitted,
    DoseLogit,
    DoseVC,
    DragonNet,
    DRLearner,
    GBSLearner,
    GBTLearner,
    TARNet,
    TwoPart,
)
from coarse_gpu.models.select import CANDIDATES, param_class, pseudo_outcomes, selection_report
from coarse_gpu.models.twopart import BASES as TWO_PART_BASES
from coarse_gpu.utils.imports import class_path, locate_class

__all__ = ["DENSE_PROFIT_ENTRIES", "MODELS", "ArmsOracle", "oracle_rows", "ProfitEstimates", "build_model", "fold_predictors", "model_class", "personalize"]

log = logging.getLogger("coarse_gpu")

MODELS = {"tarnet": TARNet, "dragonnet": DragonNet, "dose_logit": DoseLogit, "dose_vc": DoseVC,
          "gb_s": GBSLearner, "gb_t": GBTLearner, "dr": DRLearner, "auto": AutoCATE, "arm_means": ArmMeans,
          "twopart": TwoPart}
#: Largest N x M estimated-profit matrix handed on densely (module docstring).
DENSE_PROFIT_ENTRIES = 2**26
#: ModelConfig keys that are not model parameters (handled here).
_PIPELINE_KEYS = ("name", "_target_", "n_folds", "checkpoint", "candidates", "blend", "batched")


def model_class(model_cfg) -> type:
    """The estimator class of a model config: ``_target_`` (imported by Hydra), else the built-in
    class of ``name``; ValueError naming the key otherwise."""
    target = model_cfg.get("_target_")
    if target:
        cls = locate_class(target, "model._target_")
        if not callable(getattr(cls, "fit", None)):
            raise ValueError(f"model._target_={target!r} has no fit method: not a CATE model")
        return cls
    name = model_cfg.get("name")
    if name not in MODELS:
        raise ValueError(f"model.name={name!r} is not a known model; available: {sorted(MODELS)}")
    return MODELS[name]


def _model_kwargs(cls: type, cfg: dict) -> dict:
    """The config values ``cls.__init__`` accepts (None -> the class's own adaptive default)."""
    accepted = inspect.signature(cls.__init__).parameters
    out = {}
    for key, v in cfg.items():
        if key not in accepted or key in _PIPELINE_KEYS:
            continue
        if v is None and accepted[key].default is not inspect.Parameter.empty:
            continue  # the class default ("auto" / adapt to the data)
        out[key] = list(v) if isinstance(v, (list, tuple)) else v
    return out


def _unused_keys(classes: list[type], cfg: dict) -> list[str]:
    """Keys set away from the schema default that none of ``classes`` takes: a config error."""
    from coarse_gpu.experiment.config import ModelConfig

    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for f in dataclasses.fields(ModelConfig)}
    taken = set(_PIPELINE_KEYS)
    for cls in classes:
        taken |= set(inspect.signature(cls.__init__).parameters)
    return sorted(k for k, v in cfg.items() if k not in taken and k in defaults and v != defaults[k])


def model_key_problems(model_cfg) -> list[str]:
    """Why a model config cannot build its model (an unimportable ``_target_``, unknown candidates, a key
    set that the model does not take), each naming the key; [] when it can. Run before any work
    (``validate.config_problems``) and again by ``build_model``."""
    cfg = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    try:
        cls = model_class(cfg)
    except ValueError as err:
        return [str(err)]
    if issubclass(cls, AutoCATE):
        cands = list(cfg.get("candidates") or AutoCATE().candidates)
        bad = [c for c in cands if c not in CANDIDATES]
        if bad:
            return [f"model.candidates has unknown model(s) {bad}; available: {sorted(CANDIDATES)}"]
        unused = _unused_keys([param_class(c) for c in cands] + [TwoPart], cfg)
        owner = f"any candidate {cands} of model=auto"
    elif issubclass(cls, TwoPart):
        base = cfg.get("base") or "gb_s"
        if base not in TWO_PART_BASES:
            return [f"model.base={base!r} is not a two-part family; available: {sorted(TWO_PART_BASES)}"]
        unused = _unused_keys([cls, TWO_PART_BASES[base]], cfg)
        owner = f"model={cfg.get('name')} (TwoPart of {base})"
    else:
        unused = _unused_keys([cls], cfg)
        owner = f"model={cfg.get('name')} ({cls.__name__})"
    return [f"model key(s) {['model.' + k for k in unused]} are not parameters of {owner}"] if unused else []


def build_model(model_cfg: DictConfig, device: torch.device, seed: int, verbose: bool,
                checkpoint_dir: Optional[str | Path] = None):
    """The unfitted model of ``model._target_`` (``model_class``), built by ``hydra.utils.instantiate``
    with every config key its ``__init__`` takes; a key set for a model that does not take it is an
    error (never silently dropped)."""
    problems = model_key_problems(model_cfg)
    if problems:
        raise ValueError(problems[0])
    cfg = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    cls = model_class(cfg)
    ckpt = str(checkpoint_dir) if checkpoint_dir is not None and cfg.get("checkpoint", True) else None
    if issubclass(cls, AutoCATE):
        cands = list(cfg.get("candidates") or AutoCATE().candidates)
        params = {c: {k: v for k, v in _model_kwargs(param_class(c), cfg).items() if k not in ("seed", "device")}
                  for c in cands}
        return instantiate({"_target_": class_path(cls)}, candidates=cands, n_folds=int(cfg.get("n_folds") or 5),
                           blend=bool(cfg.get("blend", True)), candidate_params=params,
                           interpolation=cfg.get("interpolation", "linear"), device=str(device),
                           checkpoint_dir=ckpt, seed=seed, verbose=verbose, batched=bool(cfg.get("batched", True)),
                           _convert_="all")
    kwargs = _model_kwargs(cls, cfg)
    if issubclass(cls, TwoPart):  # the family's own keys go to both parts' learners
        base = TWO_PART_BASES[cfg.get("base") or "gb_s"]
        kwargs["base_params"] = {k: v for k, v in _model_kwargs(base, cfg).items()
                                 if k not in ("seed", "device", "verbose", "checkpoint_dir")} or None
    accepted = inspect.signature(cls.__init__).parameters
    kwargs.update({k: v for k, v in (("device", str(device)), ("seed", seed), ("verbose", verbose),
                                     ("checkpoint_dir", ckpt)) if k in accepted and v is not None})
    return instantiate({"_target_": class_path(cls)}, **kwargs, _convert_="all")


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

    def at_candidates(self, candidates: np.ndarray, max_dense: int = DENSE_PROFIT_ENTRIES):
        """The estimated profit at the candidates (M, d): a dense (N, M) array, or ``FactoredProfit``
        (mu_arms (N, A), weights (M, A)) for a per-arm model above ``max_dense`` entries."""
        n, m = self.mu_arms.shape[0], len(candidates)
        if self.weights is None or n * m <= max_dense:
            return self.profit_at(candidates)
        return FactoredProfit(self.mu_arms, np.asarray(self.weights(candidates), dtype=np.float64))


def _first(model):
    """The first fitted network-or-trees model inside an ensemble (for histories and scalars); a two-part
    model is its own (its parts are not profit models)."""
    if isinstance(model, TwoPart):
        return model
    for attr in ("model_", "members_"):
        inner = getattr(model, attr, None)
        if inner:
            return _first(inner if attr == "model_" else inner[0])
    if isinstance(model, CrossFitted):
        return _first(model.members()[0])
    return model


def _is_dose(model) -> bool:
    return hasattr(_first(model), "profit_oracle")


def fold_predictors(model) -> list[Callable]:
    """One ``X -> (N, A)`` per-arm predictor per fold model of a cross-fitted ensemble of per-arm
    models (a blend of cross-fitted candidates: the blend of their j-th fold models); a single model
    gives itself; [] for the dose-response models (they do not predict through the arms)."""
    if _is_dose(model):
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


def _oof_dose_oracle(cf: CrossFitted, device: torch.device) -> Callable:
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


def personalize(model_cfg: DictConfig, train: ExperimentData, scored: ExperimentData, same_customers: bool,
                device: torch.device, seed: int, verbose: bool, checkpoint_dir=None):
    """Fit step 1 (module docstring). Returns (deployable model, ProfitEstimates, model_selection dict).

    same_customers : ``scored`` is ``train`` (cross-fitting gives the scored customers out-of-fold
        estimates); else ``scored`` is held out and the fitted ensemble scores it.
    """
    if train.meta.get("continuous_dose"):  # no arms: the dose learners only (coarse_gpu.experiment.dose)
        from coarse_gpu.experiment.dose import personalize_dose

        return personalize_dose(model_cfg, train, scored, same_customers, device, seed, verbose, checkpoint_dir)
    model = build_model(model_cfg, device, seed, verbose, checkpoint_dir=checkpoint_dir)
    n_folds = int(model_cfg.get("n_folds") or 1)
    if not isinstance(model, AutoCATE) and n_folds >= 2:
        model = CrossFitted(model, n_folds=n_folds, seed=seed, verbose=verbose,
                            batched=bool(model_cfg.get("batched", True)))
    if same_customers and not isinstance(model, (AutoCATE, CrossFitted)):
        raise ValueError("model.n_folds=1 fits one model on every customer, so no customer would have a held-out "
                         "estimate: use model.n_folds >= 2 (cross-fitting) or data.eval_fraction > 0 (a held-out share)")
    _fit(model, train)
    dose = _is_dose(model)
    lin = (lambda T: _first(model).treatment_weights(T)) if dose else (lambda T: _arm_weights(model, T))
    if same_customers:
        mu = model.predict_arms_oof()
        if dose:
            oracle = _oof_dose_oracle(model, device)
            profit_at = lambda T: oracle(np.atleast_2d(np.asarray(T, dtype=np.float64))).cpu().numpy()  # noqa: E731
    else:
        mu = model.predict_arms(scored.X)
        if dose:
            oracles = [m.profit_oracle(scored.X, device=device) for m in
                       (model.members() if isinstance(model, CrossFitted) else [model])]
            oracle = lambda T: torch.stack([o(T) for o in oracles], 0).mean(0)  # noqa: E731
            profit_at = lambda T: oracle(np.atleast_2d(np.asarray(T, dtype=np.float64))).cpu().numpy()  # noqa: E731
    weights = None
    if not dose:
        weights = lambda T: model.treatment_weights(T)  # noqa: E731
        profit_at = lambda T: mu @ weights(T).T  # noqa: E731
        oracle = ArmsOracle(mu, weights, device) if model.grid_ is not None else None
    estimates = ProfitEstimates(np.asarray(mu, dtype=np.float64), profit_at, lin, oracle,
                                "out-of-fold" if same_customers else "held-out", weights)
    return model, estimates, _selection(model, model_cfg.name, scored, estimates)


def _two_part(model) -> Optional[TwoPart]:
    """The (unfitted) TwoPart of a model=twopart run (itself, or the factory of its cross-fitting)."""
    inner = model.model_factory if isinstance(model, CrossFitted) else model
    return inner if isinstance(inner, TwoPart) else None


def _fit(model, train: ExperimentData) -> None:
    """Fit step 1 on ``train``: with a declared profit structure (response, value, accounting) model=auto
    lets its two-part candidates take part and model=twopart gets its behaviour and the accounting."""
    args = (train.X, train.treatment, train.outcome)
    if isinstance(model, AutoCATE):
        model.fit(*args, propensity=train.propensity, numeric_treatment="categorical" not in (train.space.kinds or ()),
                  **train.structure_kwargs())
        return
    two = _two_part(model)
    if two is None:
        model.fit(*args, propensity=train.propensity)
        return
    if not train.structured:
        raise ValueError("model=twopart needs a declared profit structure: data.response, data.value and the "
                         "accounting (data.margin, data.cost_per_response, data.cost_per_customer); this data has none")
    two.set_params(accounting=train.accounting, treatment_names=list(train.space.names))
    model.fit(*args, propensity=train.propensity, response=train.response, value=train.value)


def _arm_weights(model, T) -> np.ndarray:
    grid = getattr(model, "grid_", None)
    return grid.weights(np.atleast_2d(T), "linear") if grid is not None else model.treatment_weights(np.atleast_2d(T))


def _selection(model, name: str, scored: ExperimentData, est: ProfitEstimates) -> dict:
    """results.json's model_selection block: AutoCATE's own, else the one model's held-out scores."""
    if isinstance(model, AutoCATE):
        return model.model_selection_
    gamma = pseudo_outcomes(scored.outcome, scored.arm, scored.propensity, est.mu_arms)
    return selection_report(gamma, {name: est.mu_arms}, {name: [name]}, {}, name,
                            int(getattr(model, "n_folds", 1)), "given")
