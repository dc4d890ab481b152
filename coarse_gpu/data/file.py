"""Bring your own randomized experiment: a CSV or Parquet file -> ``ExperimentData``.

One row per customer. Columns (names given in the config, ``configs/data/file.yaml``):

  features     covariates; numeric, or categorical (strings, or codes listed in ``categorical``),
               categorical columns are one-hot encoded over the levels seen in the file
  treatment    one column per treatment dimension (numeric: a discount depth, weeks, an amount...);
               the distinct treatment rows are the experimental arms
  outcome      realized profit per customer (currency units); or revenue/a response turned into
               profit by ``profit = outcome_scale * outcome - sum_j treatment_cost[j] * t_j``
  propensity   optional: probability of the received arm; without it, the empirical arm frequency
               (right for a completely randomized experiment: P(arm a) = n_a / N)
  id           optional: customer identifier (must be unique); copied to assignment outputs

Before anything is trained, :func:`check_frame` checks the table and raises ONE
:class:`DataSchemaError` that lists every problem it found, each naming the column, the number of
rows concerned and an example value (missing columns, duplicate column names in the header,
non-numeric values, NaN/inf, constant features, a constant outcome, a single arm, too few customers
per arm, treatments outside the declared range, a declared range or control point beyond the
treatments anyone received, duplicate ids, propensities outside (0, 1], a propensity of 1 for every
row of a multi-arm experiment, propensities whose Horvitz-Thompson totals sum_{arm a} 1/p miss N by
more than a factor PROPENSITY_FACTOR). What makes an experiment less informative without being
wrong is returned as named warnings (``WARNINGS``; ``ExperimentData.meta["warnings"]``, also
logged): an outcome that is constant within every arm, customers with identical covariates and arm
but different propensities, propensities of the arms received at one covariate pattern that sum to
more than 1 (or to less than 1 where every arm was received there), a duplicated unused column.

:class:`FeatureSchema` is the exact recipe from raw columns to the model matrix; it is saved with
every policy so that new customers are encoded the same way (coarse_gpu.policy.io).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from coarse_gpu.data.dose_design import UniformDoseDesign
from coarse_gpu.data.experiment import ExperimentData
from coarse_gpu.data.feature_schema import FAR_OUTSIDE, MAX_LISTED_ROWS, FeatureSchema, RowIssue, RowTally
from coarse_gpu.data.file_spec import (
    ACCOUNTING_ATOL,
    ACCOUNTING_RTOL,
    CSV_SUFFIXES,
    MAX_ABS_VALUE,
    MAX_LEVELS,
    PARQUET_SUFFIXES,
    STRUCTURE_KEYS,
    DataSchemaError,
    FileSpec,
)
from coarse_gpu.data.frame_checks import (
    DOSE_DISTINCT_SHARE,
    DOSE_MIN_ROWS,
    PROPENSITY_FACTOR,
    PROPENSITY_SUM_TOL,
    WARNINGS,
    _behaviour,
    _label_index,
    _profit_column,
    check_frame,
    continuous_dose,
    is_time_column,
    treatment_codes,
    treatment_kind_list,
)
from coarse_gpu.data.table_io import duplicate_columns, iter_table, raw_header, read_table
from coarse_gpu.data.treatments import TreatmentSpace

# The check, the spec, the reading and the feature recipe live in their own modules (file_spec,
# table_io, frame_checks, feature_schema); their public names stay importable from here.
__all__ = [
    "ACCOUNTING_ATOL", "ACCOUNTING_RTOL", "CSV_SUFFIXES", "DOSE_DISTINCT_SHARE", "DOSE_MIN_ROWS", "FAR_OUTSIDE",
    "MAX_ABS_VALUE", "MAX_LEVELS", "MAX_LISTED_ROWS", "PARQUET_SUFFIXES", "PROPENSITY_FACTOR",
    "PROPENSITY_SUM_TOL", "STRUCTURE_KEYS", "DataSchemaError", "FeatureSchema", "FileSpec", "RowIssue",
    "RowTally", "WARNINGS", "check_frame", "continuous_dose", "duplicate_columns", "experiment_from_frame",
    "is_time_column", "iter_table", "load_experiment", "raw_header", "read_table", "treatment_codes",
    "treatment_kind_list",
]
_log = logging.getLogger(__name__)


def experiment_from_frame(df: pd.DataFrame, spec: FileSpec, source: str = "the data",
                          levels: Optional[Mapping[str, Sequence[str]]] = None) -> ExperimentData:
    """Check ``df`` and turn it into an ExperimentData (``truth=None``: no simulator behind it).

    Treatment space: names = the treatment columns; low/high = ``treatment_low/high`` or the observed
    range; control = ``spec.control`` or each column's minimum. Arms = distinct treatment rows
    (lexicographically sorted). Propensity = the given column, else the arm's share of the rows.
    Outcome (profit, currency units) = outcome_scale * outcome - treatment_cost . t.
    ``meta`` holds the source, the id values (if any), the FeatureSchema, the propensity rule and the
    data warnings (``meta["warnings"]``, a list of ``"<name>: <message>"`` strings, see ``check_frame``).
    """
    warnings = check_frame(df, spec, source)
    df = df.reset_index(drop=True)
    feats = df[spec.features].copy()
    for c in spec.categorical:
        feats[c] = feats[c].astype(str)
    schema = FeatureSchema.fit(feats, spec.categorical, levels)
    X = schema.transform(feats, source)
    extra = [c for c in spec.group_columns if c in df.columns and c not in spec.features]
    if extra:  # read for the constraints only, after the schema: never a model input
        feats = pd.concat([feats, df[extra].astype(str)], axis=1)
    kinds = treatment_kind_list(df, spec)
    T, labels = _treatment_matrix(df, spec, kinds)
    dose = continuous_dose(df, spec)
    arms, arm, counts = np.unique(T, axis=0, return_inverse=True, return_counts=True)
    arm = arm.reshape(-1).astype(np.int64)
    n = T.shape[0]
    d = T.shape[1]
    low = [float(v) for v in spec.treatment_low] if spec.treatment_low is not None else T.min(0).tolist()
    high = [float(v) for v in spec.treatment_high] if spec.treatment_high is not None else T.max(0).tolist()
    control = list(spec.control) if spec.control is not None else T.min(0).tolist()
    for j, lab in enumerate(labels):
        if lab is not None:  # a categorical dimension lives on its codes 0..L-1; its control is a label
            low[j], high[j] = 0.0, float(len(lab) - 1)
            control[j] = float(_label_index(lab, control[j]) or 0) if spec.control is not None else 0.0
    try:
        space = TreatmentSpace(tuple(spec.treatment), tuple(low), tuple(high), tuple(float(c) for c in control),
                               kinds=tuple(kinds), labels=tuple(labels))
    except ValueError as err:
        raise DataSchemaError([f"treatment space from data.treatment_low/high/control: {err}"], source) from err
    response = value = accounting = None
    if spec.structured:
        response, value = _behaviour(df, spec)
        accounting = spec.accounting()
    if spec.outcome:
        y = _profit_column(df, spec)
    else:  # the outcome IS the accounting's profit
        y = accounting.profit(response, value, T)
    if spec.propensity:
        prop = pd.to_numeric(df[spec.propensity]).to_numpy(dtype=np.float64)
        rule = f"column '{spec.propensity}'" + (" (the density f(t|x) of the received dose)" if dose else "")
    elif dose:
        prop = np.full(n, np.nan)  # the density is the design's or estimated (coarse_gpu.experiment.dose)
        rule = ("uniform design on [data.treatment_low, data.treatment_high]" if spec.dose_design else
                "estimated conditional density f(t|x) (coarse_gpu.evaluate.gps.BinnedDoseDensity)")
    else:
        prop = (counts / n)[arm]
        rule = "empirical arm frequency n_a / N (completely randomized experiment)"
    meta = {"source": source, "feature_schema": schema.to_dict(), "propensity_rule": rule,
            "profit_formula": _profit_formula(spec), "warnings": list(warnings)}
    if dose:
        arms, arm = _dose_fields(T, spec, low, high, meta)
    if spec.treatment_cost is not None:
        # the per-customer cost of treatment t that the profit formula charges (sum_j cost_j t_j):
        # what a discretizer.budget bounds (coarse_gpu.experiment.methods.constraints_from_config)
        meta["treatment_unit_cost"] = [float(c) for c in np.asarray(spec.treatment_cost, dtype=np.float64).reshape(d)]
    # the dimensions whose kind the user gave or the data made certain (text): the pipeline's integer
    # heuristic (an undeclared whole-number column kept discrete) applies to the others only
    meta["treatment_kinds_declared"] = [c for c, k in zip(spec.treatment, kinds)
                                        if c in spec.treatment_kinds or k == "categorical"]
    meta["allow_unseen_combinations"] = bool(spec.allow_unseen_combinations)
    if spec.id:
        meta["ids"] = df[spec.id].to_numpy()
        meta["id_column"] = spec.id
    if accounting is not None:
        meta["accounting"] = accounting.to_dict()
    return ExperimentData(features=feats, X=X, feature_names=schema.names, treatment=T, arm=arm, arms=arms,
                          outcome=y, propensity=prop, space=space, truth=None, meta=meta,
                          response=response, value=value, accounting=accounting)


def _dose_fields(T: np.ndarray, spec: FileSpec, low: list, high: list, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """A continuously randomized dose has no arms (coarse_gpu.data.dose_simulator explains the choice):
    empty (0, d) arms, arm -1 for every row; ``meta`` says so and holds the declared design, if any."""
    meta.update({"continuous_dose": True, "propensity_kind": "density",
                 "density_column": bool(spec.propensity)})
    if spec.dose_design == "uniform":
        meta["dose_design"] = UniformDoseDesign(tuple(low), tuple(high)).to_meta()
    _log.info("treatment %s: %d distinct doses in %d rows, a continuously randomized dose (%s): no arms, "
              "dose-response learners, kernel-DR evaluation", spec.treatment, len(np.unique(T, axis=0)), T.shape[0],
              "declared" if spec.continuous_dose else "detected; data.continuous_dose=false refuses it")
    return np.empty((0, T.shape[1])), np.full(T.shape[0], -1, dtype=np.int64)


def _treatment_matrix(df: pd.DataFrame, spec: FileSpec, kinds: list[str]) -> tuple[np.ndarray, list]:
    """(N, d) float64 treatments (a categorical column as its codes) and per column its labels (or None)."""
    cols, labels = [], []
    for c, kind in zip(spec.treatment, kinds):
        if kind == "categorical":
            codes, lab = treatment_codes(df[c])
            cols.append(codes)
            labels.append(lab)
        else:
            cols.append(pd.to_numeric(df[c]).to_numpy(dtype=np.float64))
            labels.append(None)
    return np.stack(cols, axis=1), labels


def _profit_formula(spec: FileSpec) -> str:
    if not spec.outcome:
        acc = spec.accounting()
        return (f"{spec.response} * ({spec.value} * ({acc.margin}) - ({acc.cost_per_response})) "
                f"- ({acc.cost_per_customer})")
    s = f"{spec.outcome_scale:g} * {spec.outcome}" if spec.outcome_scale != 1 else f"{spec.outcome}"
    if spec.treatment_cost:
        s += "".join(f" - {c:g} * {t}" for c, t in zip(spec.treatment_cost, spec.treatment) if c)
    return s


def load_experiment(path: str | Path, spec: FileSpec) -> ExperimentData:
    """Read ``path`` (CSV / Parquet), check it and return the ExperimentData (see experiment_from_frame)."""
    problems = spec.config_problems()
    if problems:
        raise DataSchemaError(problems, str(path))
    df = read_table(path)
    return experiment_from_frame(df, spec, source=str(path))


# ---------------------------------------------------------------------------------------------
# the declared profit structure
# ---------------------------------------------------------------------------------------------


class FileSource:
    """``data=file`` as a data source object: ``configs/data/file.yaml``'s ``_target_``, built by
    ``hydra.utils.instantiate`` from the data config's keys (``FileDataConfig``; ``FileSpec.from_config``
    reads them), like the simulators. ``sample()`` reads the file, checks it and returns the
    ExperimentData.

    path : the CSV / Parquet file; group_columns : columns read beside the features for the constraints
    (never model inputs); spec : the other ``data.*`` keys (features, treatment, outcome, ...).
    """

    def __init__(self, path: Optional[str] = None, group_columns: Sequence[str] = (), **spec) -> None:
        self.path = path
        self.group_columns = list(group_columns)
        self.spec = spec

    def sample(self) -> ExperimentData:
        if not self.path:
            raise DataSchemaError(["data.path is not set: pass data.path=<your .csv or .parquet file>"], "data=file")
        spec = FileSpec.from_config(self.spec)
        spec.group_columns = [str(c) for c in self.group_columns]
        return load_experiment(self.path, spec)
