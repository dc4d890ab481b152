"""Treatment kinds in the main job: which dimensions only take observed values, and which combinations exist.

A dimension's kind (coarse_gpu.data.treatments.KINDS) is what the user declared (``data.treatment_kinds``),
categorical for a text column, and otherwise continuous, except that an undeclared dimension whose
observed values are all integers (a coded category, a count, an on/off lever) is kept discrete, with a
warning, unless ``discretizer.refine_integer_dims=true`` or the data source declares its treatments
continuous (``meta["continuous_treatments"]``, the simulator's weeks 0/2/4). A declared kind always wins.

Discrete and categorical dimensions are "fixed": their candidates are the observed values and the
refinement never moves them. Their combinations are those some customer received: a candidate whose
fixed coordinates no arm has (both e-mails, when the experiment sent one or none) is dropped, unless
``data.allow_unseen_combinations=true``; then it stays, its profit is the model's extrapolation (a
dose-response model: a per-arm model has no estimate there), its doubly robust correction is zero (no
customer received it) and results.json marks it ``extrapolated``.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import numpy as np

from coarse_gpu.data import ExperimentData
from coarse_gpu.discretize.refine import integer_dims
from coarse_gpu.experiment.errors import ConfigValueError
from coarse_gpu.experiment.model_build import model_class
from coarse_gpu.models.dose import DoseResponseModel

__all__ = ["check_unseen_model", "fixed_dims", "restrict_to_observed", "resolve_kinds", "unseen_mask",
           "unseen_record", "with_unseen_weights"]

log = logging.getLogger("coarse_gpu")


def _integer_dims(arms: np.ndarray) -> np.ndarray:
    return integer_dims(arms)


def resolve_kinds(data: ExperimentData, refine_integer_dims: bool = False) -> ExperimentData:
    """``data`` with every dimension's kind settled in ``data.space.kinds`` (module docstring); the
    dimensions the integer heuristic made discrete are listed in ``meta["treatment_kinds_inferred"]``."""
    space = data.space
    kinds = space.kind_list
    declared = set(data.meta.get("treatment_kinds_declared", []))
    inferred = []
    # a continuous dose has no arms to read integer values from: every dimension is a dose
    if not data.meta.get("continuous_treatments") and not refine_integer_dims and not data.meta.get("continuous_dose"):
        for j, whole in enumerate(_integer_dims(data.arms)):
            if whole and kinds[j] == "continuous" and space.names[j] not in declared:
                kinds[j] = "discrete"
                inferred.append(space.names[j])
    labels = space.labels if space.labels is not None else tuple(None for _ in kinds)
    meta = {**data.meta, "treatment_kinds_inferred": inferred}
    return dataclasses.replace(data, space=dataclasses.replace(space, kinds=tuple(kinds), labels=labels), meta=meta)


def fixed_dims(data: ExperimentData) -> np.ndarray:
    """(d,) bool: the discrete and categorical dimensions (only observed values can be offered)."""
    return data.space.fixed_dims


def unseen_mask(treatments: np.ndarray, arms: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """(M,) bool: treatments (M, d) whose fixed coordinates are a combination no arm (A, d) has."""
    t = np.asarray(treatments, dtype=np.float64).reshape(-1, arms.shape[1])
    if not np.any(fixed):
        return np.zeros(t.shape[0], dtype=bool)
    seen = {tuple(r) for r in np.asarray(arms, dtype=np.float64)[:, fixed].tolist()}
    return np.array([tuple(r) not in seen for r in t[:, fixed].tolist()], dtype=bool)


def restrict_to_observed(candidates: np.ndarray, data: ExperimentData, allow_unseen: bool) -> np.ndarray:
    """The candidates (M, d) whose fixed coordinates some customer received (all of them when allowed)."""
    if allow_unseen:
        return candidates
    keep = ~unseen_mask(candidates, data.arms, fixed_dims(data))
    return candidates[keep]


def allow_unseen(data: ExperimentData, data_cfg) -> bool:
    return bool(data_cfg.get("allow_unseen_combinations", False) or data.meta.get("allow_unseen_combinations"))


def _fmt(space, t: np.ndarray) -> str:
    return "(" + ", ".join(f"{n}={v!r}" for n, v in zip(space.names, space.to_user(t[None, :])[0])) + ")"


def check_unseen_model(model_cfg, data: ExperimentData, candidates: np.ndarray) -> None:
    """Unseen combinations among the candidates need a model that predicts off the arms (a dose-response
    model); with a per-arm model the run is refused before training, naming the keys."""
    unseen = unseen_mask(candidates, data.arms, fixed_dims(data))
    if not unseen.any():
        return
    try:
        dose = issubclass(model_class(model_cfg), DoseResponseModel)
    except ValueError:  # an unknown model is named by the model checks
        return
    if not dose:
        raise ConfigValueError([
            f"data.allow_unseen_combinations=true offers {int(unseen.sum())} treatment combination(s) no customer "
            f"received, e.g. {_fmt(data.space, candidates[np.flatnonzero(unseen)[0]])}, but model={model_cfg.get('name')} "
            "estimates one profit per arm and has no estimate there: use model=dose_logit or model=dose_vc, or "
            "leave data.allow_unseen_combinations=false"])
    log.warning("data.allow_unseen_combinations=true: %d candidate treatment(s) combine values no customer received "
                "together; their profits are the model's extrapolation", int(unseen.sum()))


def with_unseen_weights(est, data: ExperimentData):
    """``est`` whose doubly robust kappa is a zero row at an unseen combination (no customer received
    it, so there is no residual to correct: the score is the model's estimate alone)."""
    fixed = fixed_dims(data)
    base = est.arm_weights

    def arm_weights(T):
        t = np.atleast_2d(np.asarray(T, dtype=np.float64))
        out = np.zeros((t.shape[0], data.n_arms))
        unseen = unseen_mask(t, data.arms, fixed)
        if (~unseen).any():
            out[~unseen] = base(t[~unseen])
        return out

    return dataclasses.replace(est, arm_weights=arm_weights)


def unseen_record(data: ExperimentData, candidates: np.ndarray, allowed: bool) -> Optional[dict]:
    """results.json's "unseen_combinations": whether allowed, and the candidates that are unseen."""
    unseen = unseen_mask(candidates, data.arms, fixed_dims(data))
    if not allowed and not unseen.any():
        return {"allowed": False, "n_candidates": 0}
    return {"allowed": bool(allowed), "n_candidates": int(unseen.sum()),
            "candidates": data.space.to_user(candidates[unseen]),
            "note": "combinations of discrete / categorical values that no customer received: their profits are "
                    "extrapolated by the model, and the doubly robust value there is the model's estimate alone"}
