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

``ProfitEstimates`` and the oracles are estimates.py's; which model a config names and building it,
model_build.py's. Their public names stay importable from here.
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import torch
from omegaconf import DictConfig

from coarse_gpu.data import ExperimentData
from coarse_gpu.experiment.dose import personalize_dose

# public names of step 1 that moved to estimates.py / model_build.py, kept importable from here
from coarse_gpu.experiment.estimates import (  # noqa: F401
    DENSE_PROFIT_ENTRIES,
    ArmsOracle,
    ProfitEstimates,
    _first,
    _is_dose,
    _oof_dose_oracle,
    fold_predictors,
    oracle_rows,
)
from coarse_gpu.experiment.model_build import MODELS, build_model, model_class, model_key_problems  # noqa: F401
from coarse_gpu.models import (
    AutoCATE,
    CrossFitted,
    TwoPart,
)
from coarse_gpu.models.select import pseudo_outcomes, selection_report

__all__ = ["DENSE_PROFIT_ENTRIES", "MODELS", "ArmsOracle", "oracle_rows", "ProfitEstimates", "build_model", "fold_predictors", "model_class", "model_key_problems",
           "personalize"]

log = logging.getLogger("coarse_gpu")


def personalize(model_cfg: DictConfig, train: ExperimentData, scored: ExperimentData, same_customers: bool,
                device: torch.device, seed: int, verbose: bool, checkpoint_dir=None):
    """Fit step 1 (module docstring). Returns (deployable model, ProfitEstimates, model_selection dict).

    same_customers : ``scored`` is ``train`` (cross-fitting gives the scored customers out-of-fold
        estimates); else ``scored`` is held out and the fitted ensemble scores it.
    """
    if train.meta.get("continuous_dose"):  # no arms: the dose learners only (coarse_gpu.experiment.dose)
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
    inner = model.model_ if isinstance(model, AutoCATE) else model  # model=auto's dose winner: its ensemble
    lin = (lambda T: _first(model).treatment_weights(T)) if dose else (lambda T: _arm_weights(model, T))
    if same_customers:
        mu = model.predict_arms_oof()
        if dose:
            oracle = _oof_dose_oracle(inner, device)
            profit_at = lambda T: oracle(np.atleast_2d(np.asarray(T, dtype=np.float64))).cpu().numpy()  # noqa: E731
    else:
        mu = model.predict_arms(scored.X)
        if dose:
            oracles = [m.profit_oracle(scored.X, device=device) for m in
                       (inner.members() if isinstance(inner, CrossFitted) else [inner])]
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
