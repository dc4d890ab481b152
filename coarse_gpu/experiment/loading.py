"""The data step of the main job: the experiment a config names, who trains and who is scored, the
candidate treatments, and the checks of the config against the loaded data (before any training).

``prepare_data`` is what ``run_experiment`` (pipeline.py) and the distributed job's ranks > 0
(followers.py) both call first, so that every rank holds the same data, split and candidates.
"""
from __future__ import annotations

import inspect
import logging
import math
from typing import Optional

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from coarse_gpu.data import ExperimentData
from coarse_gpu.data.treatments import product_grid
from coarse_gpu.discretize.mip import MAX_ENTRIES, size_problem
from coarse_gpu.experiment.config import SOURCE_TARGETS
from coarse_gpu.experiment.dose import check_dose_model, dose_candidates, dose_space, is_continuous_dose
from coarse_gpu.experiment.kinds import (
    allow_unseen,
    check_unseen_model,
    resolve_kinds,
    restrict_to_observed,
)
from coarse_gpu.experiment.validate import ConfigValueError, data_constraint_problems
from coarse_gpu.models.interpolate import ArmGrid
from coarse_gpu.utils.imports import class_path, locate_class

log = logging.getLogger("coarse_gpu")


DATA_SOURCES = ("promotions", "file", "thornton", "ihdp", "hurdle", "dose")
#: The simulated sources (scale= multiplies their n_customers).
SIMULATED = ("promotions", "hurdle", "dose")


def build_data(data_cfg: DictConfig, seed: int, scale: float = 1.0, group_columns=()) -> ExperimentData:
    """The experiment named by ``data.name``: the simulator, a CSV/Parquet file, or a built-in real dataset.

    ``scale`` (the top-level ``scale=`` key) multiplies the simulator's ``data.n_customers``: one switch
    to take an experiment from the 2-CPU size to a GPU size (``scale=10``) without editing its config.
    Real data has the size it has, so any other value there is an error. ``group_columns``: columns of
    a file read beside its features for the constraints (``FileSpec.group_columns``), never model inputs.
    """
    if data_cfg.name not in DATA_SOURCES:
        raise ValueError(f"data.name={data_cfg.name!r} is not a known data source; available: {list(DATA_SOURCES)}")
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale={scale!r} must be a positive number (it multiplies data.n_customers)")
    if scale != 1.0 and data_cfg.name not in SIMULATED:
        raise ValueError(f"scale={scale} only applies to simulated data (data=promotions); data={data_cfg.name} "
                         "has a fixed number of customers: leave scale=1")
    cfg = OmegaConf.to_container(data_cfg, resolve=True)
    # Every source is an object built by Hydra from its config node: ``_target_`` (a simulator, FileSource,
    # ThorntonSource, IHDPSource, or your own class with sample() -> ExperimentData) with the keys its
    # __init__ takes (all of them when it takes **kwargs); name, eval_fraction, candidate_points are the job's.
    cls = locate_class(cfg.get("_target_") or SOURCE_TARGETS[data_cfg.name], "data._target_")
    accepted = inspect.signature(cls.__init__).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    params = {k: v for k, v in cfg.items() if k not in ("_target_", "name") and (takes_all or k in accepted)}
    if "seed" in accepted:
        params["seed"] = seed
    if "group_columns" in accepted:
        params["group_columns"] = [str(c) for c in group_columns]
    if data_cfg.name in SIMULATED:
        n_customers = int(round(data_cfg.n_customers * scale))
        if n_customers < 2:
            raise ValueError(f"scale={scale} x data.n_customers={data_cfg.n_customers} leaves {n_customers} "
                             "customers; need at least 2")
        params["n_customers"] = n_customers
    source = instantiate({"_target_": class_path(cls), **params}, _convert_="all")
    return source.sample()


def discrete_dims(data: ExperimentData) -> np.ndarray:
    """(d,) bool: treatment dimensions that only take their observed values: those of a declared or
    text-given kind (``data.space.kinds``), and the undeclared ones whose observed values are all
    integers (a coded category, a count, an on/off lever), unless the data source declares its
    treatments continuous (``meta["continuous_treatments"]``, the simulator's weeks 0/2/4)."""
    return resolve_kinds(data).space.fixed_dims


def candidate_treatments(data: ExperimentData, data_cfg: DictConfig, keep_integer_dims: bool = False) -> np.ndarray:
    """(M, d) candidate treatments for the discretizer and the baselines.

    ``data.candidate_points`` set: a regular grid over the treatment box with that many points per
    dimension (the model interpolates between arms, so the arms must form a full tensor grid); a
    discrete or categorical dimension (``data.space.kinds``; with ``keep_integer_dims``, the main job
    unless ``discretizer.refine_integer_dims=true``, also an undeclared integer-valued one) keeps its
    observed values instead.
    null: the tensor grid of the arms' own coordinates (= the arms when they form a full grid).
    Either way, a candidate whose discrete / categorical coordinates no customer received together is
    dropped unless ``data.allow_unseen_combinations=true`` (coarse_gpu.experiment.kinds).
    """
    if data.meta.get("continuous_dose"):  # no arms: a grid over the observed doses (experiment.dose)
        return dose_candidates(dose_space(data), data_cfg)
    data = resolve_kinds(data, refine_integer_dims=not keep_integer_dims)
    allowed = allow_unseen(data, data_cfg)
    points = data_cfg.get("candidate_points")
    try:
        grid = ArmGrid.from_arms(data.arms)
    except ValueError:
        grid = None
    if points is not None:
        points = [int(p) for p in points]
        if len(points) != data.space.dim:
            raise ValueError(f"data.candidate_points={points} needs one count per treatment dimension "
                             f"{list(data.space.names)}")
        if grid is None:
            raise ValueError(f"data.candidate_points={points}: the {data.n_arms} arms do not form a full grid, so the "
                             "model cannot interpolate between them; leave data.candidate_points=null (the arms)")
        discrete = data.space.fixed_dims
        axes = [np.unique(data.arms[:, j]) if discrete[j] else np.linspace(lo, hi, p)
                for j, (lo, hi, p) in enumerate(zip(data.space.low, data.space.high, points))]
        return restrict_to_observed(product_grid(axes), data, allowed)
    if grid is None:
        if allowed and data.space.fixed_dims.any():  # every combination of the observed values
            return product_grid([np.unique(data.arms[:, j]) for j in range(data.space.dim)])
        return np.asarray(data.arms, dtype=np.float64)
    return restrict_to_observed(product_grid(grid.levels), data, allowed)


def check_k_values(k_values: list[int], n_candidates: int, n_customers: int, key: Optional[str] = None) -> None:
    """Every K must be an integer in [1, min(M candidates, N held-out customers)]; the error names the fix:
    the CLI's config keys, or the argument ``key`` holding the one K (the Python API's ``k``)."""
    bad = [k for k in k_values if k < 1]
    if bad:
        raise ValueError(f"every K must be >= 1, got K={bad[0]} in k_values={k_values}")
    too_many = [k for k in k_values if k > n_candidates]
    if too_many and key is not None:
        raise ValueError(f"{key}={too_many[0]} exceeds the {n_candidates} distinct candidate treatments (the grid of "
                         f"the arms in the data); use {key} <= {n_candidates}")
    if too_many:
        raise ValueError(
            f"K={too_many[0]} exceeds the {n_candidates} distinct candidate treatments (k_values={k_values}); "
            f"use K <= {n_candidates}, e.g. evaluation.k_values=[{','.join(str(k) for k in range(1, min(n_candidates, 5) + 1))}], "
            "or a finer data.candidate_points")
    too_few = [k for k in k_values if k > n_customers]
    if too_few:
        raise ValueError(f"K={too_few[0]} exceeds the {n_customers} held-out customers (N < K): "
                         "use a smaller K or more data")


def source_data(cfg: DictConfig, seed: int) -> ExperimentData:
    """The experiment ``cfg.data`` names (``build_data``), with the group column the constraints read."""
    parity = (cfg.discretizer.get("group_parity") or {}).get("column")
    return build_data(cfg.data, seed, float(cfg.get("scale", 1.0)), [parity] if parity else ())


def prepare_data(cfg: DictConfig, seed: int, k_values: list[int], results_meta: dict):
    """The data step: the experiment, who trains and who is scored, the candidate treatments."""
    return prepare_experiment(cfg, source_data(cfg, seed), seed, k_values)


def prepare_experiment(cfg: DictConfig, data: ExperimentData, seed: int, k_values: list[int],
                       k_key: Optional[str] = None):
    """The data step on an experiment already loaded (from ``cfg.data``'s source, or the Python API's
    arrays): every check of the config against it, before any training (``k_key``: the argument that
    holds the one K, named in its error, e.g. the API's ``k``). Returns (data with its kinds settled, the
    training rows, the scored rows, (M, d) candidate treatments)."""
    # every dimension's kind settled once: the split halves, the methods and the saved policies share it
    data = resolve_kinds(data, refine_integer_dims=bool(cfg.discretizer.get("refine_integer_dims", False)))
    dose = is_continuous_dose(data)
    if dose:  # the box of the observed doses, the dose learners only (coarse_gpu.experiment.dose)
        data = dose_space(data)
        check_dose_model(cfg.model, data)
    frac = float(cfg.data.eval_fraction)
    train, scored = (data, data) if frac == 0 else data.split((1.0 - frac, frac), seed=seed)
    if frac > 0 and not dose:
        _check_training_share(data, train, frac, int(cfg.model.get("n_folds") or 1))
    keep = not bool(cfg.discretizer.get("refine_integer_dims", False))
    candidates = candidate_treatments(data, cfg.data, keep_integer_dims=keep)
    _warn_discrete_dims(data)
    check_unseen_model(cfg.model, data, candidates)
    check_k_values(k_values, len(candidates), len(scored), key=k_key)
    _check_constraint_keys(cfg, data, candidates)
    _check_mip_size(cfg, len(scored), len(candidates))
    log.info("data: %d customers (%s), %s, %d candidate treatments", len(data),
             "all cross-fitted and scored out-of-fold" if frac == 0 else f"{len(train)} train, {len(scored)} held out",
             "a continuously randomized dose (no arms)" if dose else f"{data.n_arms} arms", len(candidates))
    return data, train, scored, candidates


def _check_training_share(data: ExperimentData, train: ExperimentData, frac: float, n_folds: int) -> None:
    """The share left to train on keeps every arm trainable: 2 customers per arm in every fold's training
    set (folds are stratified by arm: ceil(2 n_folds / (n_folds - 1)) per arm). Else ConfigValueError
    naming data.eval_fraction, before training (the model's own error would blame the arms)."""
    need = 2 if n_folds < 2 else int(np.ceil(2 * n_folds / (n_folds - 1)))
    counts = np.bincount(train.arm, minlength=data.n_arms)
    few = np.flatnonzero(counts < need)
    if few.size:
        i = int(few[np.argmin(counts[few])])
        arm = ", ".join(f"{n}={v:g}" for n, v in zip(data.space.names, data.arms[i]))
        raise ConfigValueError([
            f"data.eval_fraction={frac:g} leaves {len(train)} of the {len(data)} customers to train on, and "
            f"{few.size} of the {data.n_arms} arms have fewer than {need} of them (model.n_folds={n_folds}: 2 per "
            f"arm in every fold), e.g. arm ({arm}) with {int(counts[i])}: lower data.eval_fraction"])


def _warn_discrete_dims(data: ExperimentData) -> None:
    """One line naming the undeclared dimensions kept on their observed integer values (the heuristic of
    coarse_gpu.experiment.kinds); a declared kind needs no warning."""
    names = data.meta.get("treatment_kinds_inferred") or []
    if names:
        log.warning("treatment dimension(s) %s hold only integer values (a coded category, a count or an on/off "
                    "lever): their candidates are the observed values and the refinement never moves them; set "
                    "discretizer.refine_integer_dims=true if they are continuous doses, or declare each one's kind "
                    "in data.treatment_kinds", names)


def _check_mip_size(cfg: DictConfig, n_scored: int, n_candidates: int) -> None:
    """discretizer=mip on a problem beyond discretizer.mip_max_entries: refused before training (the
    MIP itself would refuse it only after the model is fitted)."""
    if cfg.discretizer.get("solver") != "mip":
        return
    limit = int(cfg.discretizer.get("mip_max_entries") or MAX_ENTRIES)
    problem = size_problem(n_scored, n_candidates, limit, key="discretizer.mip_max_entries")
    if problem:
        raise ConfigValueError([f"discretizer.solver=mip: {n_scored} scored customers x {n_candidates} candidate "
                                f"treatments: " + problem.split(": ", 1)[1].replace("the sinkhorn solver",
                                                                                  "discretizer=sinkhorn")])


def _check_constraint_keys(cfg: DictConfig, data: ExperimentData, candidates: np.ndarray) -> None:
    """discretizer.budget / group_parity against the loaded data (column, costs), before training."""
    col = (cfg.discretizer.get("group_parity") or {}).get("column")
    dim = (cfg.discretizer.get("group_parity") or {}).get("treatment") or (data.space.names[0] if col else None)
    if dim in data.space.names and data.space.kind_list[list(data.space.names).index(dim)] == "categorical":
        raise ConfigValueError([f"discretizer.group_parity.treatment={dim!r} is a categorical treatment (labels): a "
                                "group's mean label is no quantity to bound; name a continuous or discrete dimension"])
    groups = {col: int(data.features[col].astype(str).nunique())} if col in data.features.columns else None
    problems = data_constraint_problems(cfg, list(data.features.columns), list(data.space.names),
                                        data.meta.get("treatment_unit_cost"), candidates, groups)
    if problems:
        raise ConfigValueError(problems)


__all__ = ["DATA_SOURCES", "SIMULATED", "build_data", "candidate_treatments", "check_k_values", "discrete_dims",
           "prepare_data", "prepare_experiment", "source_data"]
