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
rows concerned and an example value (missing columns, non-numeric values, NaN/inf, constant
features, a single arm, too few customers per arm, treatments outside the declared range,
duplicate ids, propensities outside (0, 1]).

:class:`FeatureSchema` is the exact recipe from raw columns to the model matrix; it is saved with
every policy so that new customers are encoded the same way (coarse_gpu.policy.io).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from coarse_gpu.data.experiment import ExperimentData
from coarse_gpu.data.treatments import TreatmentSpace

__all__ = [
    "DataSchemaError", "FeatureSchema", "FileSpec", "check_frame", "experiment_from_frame", "iter_table",
    "load_experiment", "read_table",
]

CSV_SUFFIXES = (".csv", ".csv.gz", ".txt", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
MAX_LEVELS = 1000  # a categorical column with more levels is almost surely an id or a typo


class DataSchemaError(ValueError):
    """The input table does not fit the declared columns. ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[str], source: str = "the data") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"data check failed for {source}: {len(self.problems)} problem(s)\n{lines}")


# ---------------------------------------------------------------------------------------------
# the column spec
# ---------------------------------------------------------------------------------------------
@dataclass
class FileSpec:
    """Which column plays which role (mirrors ``FileDataConfig`` in coarse_gpu.experiment.config).

    features, treatment : lists of column names; outcome : one column name.
    propensity, id : optional column names. categorical : feature columns to one-hot encode even
        if they hold numbers (string columns must be listed too: nothing is guessed).
    treatment_low, treatment_high : optional declared range of each treatment column (d floats);
        rows outside it are an error. Default: the observed range.
    control : optional "no treatment" point (d floats); default: each treatment column's minimum.
    min_per_arm : fewest customers an arm may have (per-arm models need several rows per arm).
    outcome_scale, treatment_cost : profit = outcome_scale * outcome - treatment_cost . t.
    """

    features: list[str]
    treatment: list[str]
    outcome: str
    propensity: Optional[str] = None
    id: Optional[str] = None
    categorical: list[str] = field(default_factory=list)
    treatment_low: Optional[list[float]] = None
    treatment_high: Optional[list[float]] = None
    control: Optional[list[float]] = None
    min_per_arm: int = 10
    outcome_scale: float = 1.0
    treatment_cost: Optional[list[float]] = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "FileSpec":
        """From a ``data`` config node (DictConfig or dict); unknown keys are ignored here."""
        def lst(v):
            return None if v is None else [x for x in v]

        return cls(
            features=[str(c) for c in (cfg.get("features") or [])],
            treatment=[str(c) for c in (cfg.get("treatment") or [])],
            outcome=cfg.get("outcome"),
            propensity=cfg.get("propensity"),
            id=cfg.get("id"),
            categorical=[str(c) for c in (cfg.get("categorical") or [])],
            treatment_low=lst(cfg.get("treatment_low")),
            treatment_high=lst(cfg.get("treatment_high")),
            control=lst(cfg.get("control")),
            min_per_arm=int(cfg.get("min_per_arm", 10)),
            outcome_scale=float(cfg.get("outcome_scale", 1.0)),
            treatment_cost=lst(cfg.get("treatment_cost")),
        )

    def config_problems(self) -> list[str]:
        """Problems with the spec itself (before looking at any data)."""
        out = []
        if not self.features:
            out.append("data.features is empty: list the covariate columns, e.g. data.features=[age,income]")
        if not self.treatment:
            out.append("data.treatment is empty: list the treatment column(s), e.g. data.treatment=[discount]")
        if not self.outcome:
            out.append("data.outcome is not set: name the realized-profit column, e.g. data.outcome=profit")
        d = len(self.treatment)
        for key in ("treatment_low", "treatment_high", "control", "treatment_cost"):
            v = getattr(self, key)
            if v is not None and len(v) != d:
                out.append(f"data.{key} has {len(v)} values but data.treatment has {d} column(s) {self.treatment}")
        for c in self.categorical:
            if c not in self.features:
                out.append(f"data.categorical lists '{c}', which is not in data.features {self.features}")
        roles: dict[str, list[str]] = {}
        for role, cols in (("features", self.features), ("treatment", self.treatment), ("outcome", [self.outcome]),
                           ("propensity", [self.propensity]), ("id", [self.id])):
            for c in cols:
                if c:
                    roles.setdefault(c, []).append(role)
        for c, rs in roles.items():
            if len(rs) > 1:
                out.append(f"column '{c}' is used more than once (as {', '.join(rs)}); each column has one role")
        if self.min_per_arm < 1:
            out.append(f"data.min_per_arm must be >= 1, got {self.min_per_arm}")
        if not np.isfinite(self.outcome_scale) or self.outcome_scale == 0:
            out.append(f"data.outcome_scale must be a finite nonzero number, got {self.outcome_scale}")
        return out

    def columns(self) -> list[str]:
        cols = list(self.features) + list(self.treatment) + [self.outcome]
        return cols + [c for c in (self.propensity, self.id) if c]


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise DataSchemaError(
        [f"file '{path}' has an unsupported extension; use CSV ({', '.join(CSV_SUFFIXES)}) or Parquet "
         f"({', '.join(PARQUET_SUFFIXES)})"], str(path))


def read_table(path: str | Path, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Read a whole CSV / Parquet file into a DataFrame (only ``columns`` when given and present).

    Raises DataSchemaError (naming the file) when it does not exist, is empty or cannot be parsed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataSchemaError([f"file '{path}' does not exist (data.path)"], str(path))
    kind = _kind(path)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            have = pq.read_schema(path).names
            cols = [c for c in columns if c in have] if columns is not None else None
            df = pd.read_parquet(path, columns=cols)
        else:
            sep = "\t" if path.name.lower().endswith(".tsv") else ","
            cols = set(columns) if columns is not None else None
            df = pd.read_csv(path, sep=sep, usecols=(lambda c: c in cols) if cols is not None else None)
    except DataSchemaError:
        raise
    except Exception as err:  # pandas/pyarrow parse errors: report them as data problems
        raise DataSchemaError([f"file '{path}' could not be read as {kind}: {type(err).__name__}: {err}"],
                              str(path)) from err
    if df.shape[0] == 0:
        raise DataSchemaError([f"file '{path}' has no data rows"], str(path))
    return df


def iter_table(path: str | Path, columns: Optional[Sequence[str]] = None,
               chunk_rows: int = 1_000_000) -> Iterator[pd.DataFrame]:
    """Yield the file in DataFrames of at most ``chunk_rows`` rows (memory stays O(chunk_rows))."""
    path = Path(path)
    if not path.is_file():
        raise DataSchemaError([f"file '{path}' does not exist (data.path)"], str(path))
    kind = _kind(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        cols = [c for c in columns if c in pf.schema_arrow.names] if columns is not None else None
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=cols):
            yield batch.to_pandas()
    else:
        sep = "\t" if path.name.lower().endswith(".tsv") else ","
        cols = set(columns) if columns is not None else None
        try:
            reader = pd.read_csv(path, sep=sep, chunksize=chunk_rows,
                                 usecols=(lambda c: c in cols) if cols is not None else None)
            yield from reader
        except pd.errors.EmptyDataError as err:
            raise DataSchemaError([f"file '{path}' has no data rows"], str(path)) from err


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
def _example(s: pd.Series, mask: np.ndarray) -> str:
    i = int(np.flatnonzero(mask)[0])
    v = s.iloc[i]
    return f"e.g. {(v.item() if isinstance(v, np.generic) else v)!r} in row {i}"


def _numeric(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, mask of entries that are present but not numbers)."""
    v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
    return v, np.isnan(v) & s.notna().to_numpy()


def _check_numeric(s: pd.Series, col: str, role: str, problems: list[str]) -> Optional[np.ndarray]:
    """Numeric, finite values or problems appended; returns the values if the column is usable."""
    v, bad = _numeric(s)
    ok = True
    if bad.any():
        problems.append(f"{role} column '{col}': {int(bad.sum())} row(s) are not numeric ({_example(s, bad)})")
        ok = False
    miss = s.isna().to_numpy()
    if miss.any():
        problems.append(f"{role} column '{col}': {int(miss.sum())} row(s) are NaN/missing (e.g. row "
                        f"{int(np.flatnonzero(miss)[0])})")
        ok = False
    inf = np.isinf(v)
    if inf.any():
        problems.append(f"{role} column '{col}': {int(inf.sum())} row(s) are inf ({_example(s, inf)})")
        ok = False
    return v if ok else None


def check_frame(df: pd.DataFrame, spec: FileSpec, source: str = "the data") -> None:
    """Check ``df`` against ``spec``; raise one DataSchemaError listing every problem (None if clean)."""
    problems = spec.config_problems()
    n = int(df.shape[0])
    if n == 0:
        problems.append("the table has no rows")
    available = [str(c) for c in df.columns]
    for role, cols in (("feature", spec.features), ("treatment", spec.treatment), ("outcome", [spec.outcome]),
                       ("propensity", [spec.propensity]), ("id", [spec.id])):
        for c in cols:
            if c and c not in df.columns:
                problems.append(f"{role} column '{c}' is missing from the file; available columns: {available}")
    if n == 0:
        raise DataSchemaError(problems, source)

    # features
    for c in spec.features:
        if c not in df.columns:
            continue
        s = df[c]
        if c in spec.categorical:
            miss = s.isna().to_numpy()
            if miss.any():
                problems.append(f"feature column '{c}' (categorical): {int(miss.sum())} row(s) are missing "
                                f"(e.g. row {int(np.flatnonzero(miss)[0])})")
            n_levels = int(s.dropna().astype(str).nunique())
            if n_levels > MAX_LEVELS:
                problems.append(f"feature column '{c}' (categorical) has {n_levels} levels (> {MAX_LEVELS}); "
                                "is it an id? drop it or group its levels")
            elif n_levels == 1 and n > 1:
                problems.append(f"feature column '{c}' is constant (value {str(s.dropna().iloc[0])!r} in all {n} rows); "
                                "it carries no information, drop it")
            continue
        v, bad = _numeric(s)
        if bad.any() and bad.sum() == s.notna().sum():
            problems.append(f"feature column '{c}' is not numeric ({_example(s, bad)}); if it is categorical, "
                            f"add it to data.categorical")
            continue
        v = _check_numeric(s, c, "feature", problems)
        if v is not None and n > 1 and np.all(v == v[0]):
            problems.append(f"feature column '{c}' is constant (value {float(v[0])!r} in all {n} rows); it carries no "
                            "information, drop it")

    # outcome, propensity
    if spec.outcome and spec.outcome in df.columns:
        _check_numeric(df[spec.outcome], spec.outcome, "outcome", problems)
    if spec.propensity and spec.propensity in df.columns:
        p = _check_numeric(df[spec.propensity], spec.propensity, "propensity", problems)
        if p is not None:
            out = (p <= 0) | (p > 1)
            if out.any():
                problems.append(f"propensity column '{spec.propensity}': {int(out.sum())} row(s) outside (0, 1] "
                                f"({_example(df[spec.propensity], out)})")

    # id
    if spec.id and spec.id in df.columns:
        ids = df[spec.id]
        miss = ids.isna().to_numpy()
        if miss.any():
            problems.append(f"id column '{spec.id}': {int(miss.sum())} row(s) are missing "
                            f"(e.g. row {int(np.flatnonzero(miss)[0])})")
        dup = ids.duplicated(keep=False).to_numpy() & ~miss
        if dup.any():
            first = ids[dup].iloc[0]
            rows = np.flatnonzero((ids == first).to_numpy())[:2].tolist()
            problems.append(f"id column '{spec.id}': {int(ids[dup].nunique())} value(s) occur more than once "
                            f"({int(dup.sum())} rows), e.g. {first!r} in rows {rows}")

    # treatment
    tcols = [c for c in spec.treatment if c in df.columns]
    tvals = {}
    for j, c in enumerate(spec.treatment):
        if c not in df.columns:
            continue
        v = _check_numeric(df[c], c, "treatment", problems)
        if v is None:
            continue
        tvals[c] = v
        lo = spec.treatment_low[j] if spec.treatment_low is not None and j < len(spec.treatment_low) else None
        hi = spec.treatment_high[j] if spec.treatment_high is not None and j < len(spec.treatment_high) else None
        if lo is not None or hi is not None:
            out = np.zeros(n, dtype=bool)
            if lo is not None:
                out |= v < float(lo)
            if hi is not None:
                out |= v > float(hi)
            if out.any():
                problems.append(f"treatment column '{c}': {int(out.sum())} row(s) outside the declared range "
                                f"[{lo}, {hi}] (data.treatment_low/high) ({_example(df[c], out)})")
    if tcols and len(tvals) == len(tcols) == len(spec.treatment):
        T = np.stack([tvals[c] for c in spec.treatment], axis=1)
        arms, counts = np.unique(T, axis=0, return_counts=True)
        if arms.shape[0] < 2:
            problems.append(f"treatment {spec.treatment} has a single arm {_fmt_arm(spec.treatment, arms[0])} in all "
                            f"{n} rows: need at least 2 arms (a control and a treatment) to estimate effects")
        else:
            for j, c in enumerate(spec.treatment):
                if np.unique(arms[:, j]).size < 2:
                    problems.append(f"treatment column '{c}' is constant (value {float(arms[0, j])!r} in all {n} rows); "
                                    "drop it from data.treatment")
            few = np.flatnonzero(counts < spec.min_per_arm)
            if few.size:
                i = few[np.argmin(counts[few])]
                problems.append(
                    f"{few.size} of the {arms.shape[0]} treatment arms have fewer than data.min_per_arm="
                    f"{spec.min_per_arm} customers, e.g. arm {_fmt_arm(spec.treatment, arms[i])} with "
                    f"{int(counts[i])} row(s); merge arms (round the treatment) or collect more data")
    if problems:
        raise DataSchemaError(problems, source)


def _fmt_arm(names: Sequence[str], values: np.ndarray) -> str:
    return "(" + ", ".join(f"{c}={float(v):g}" for c, v in zip(names, values)) + ")"


# ---------------------------------------------------------------------------------------------
# features -> model matrix
# ---------------------------------------------------------------------------------------------
@dataclass
class FeatureSchema:
    """Raw feature columns -> the model matrix X, exactly and reproducibly.

    columns : raw feature column names, in order.
    categorical : {column: [levels]} one-hot encoded over these levels (strings), in this order;
        every other column is numeric.
    Model-matrix column names (``names``): a numeric column keeps its name, a categorical column c
    becomes ``c=level`` for each level. Standardization is not done here: the CATE model
    standardizes on its training rows and stores its own means / scales.
    """

    columns: list[str]
    categorical: dict[str, list[str]]

    @classmethod
    def fit(cls, features: pd.DataFrame, categorical: Sequence[str] = (),
            levels: Optional[Mapping[str, Sequence[str]]] = None) -> "FeatureSchema":
        """Schema of ``features``: listed (and string-typed) columns categorical, levels sorted
        (or ``levels[col]`` when given)."""
        cats: dict[str, list[str]] = {}
        for c in features.columns:
            s = features[c]
            is_str = s.dtype == object or isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(s.dtype)
            if c in categorical or is_str:
                lv = (levels or {}).get(c)
                cats[str(c)] = [str(x) for x in lv] if lv else sorted(map(str, s.dropna().astype(str).unique()))
        return cls([str(c) for c in features.columns], cats)

    @property
    def names(self) -> list[str]:
        out = []
        for c in self.columns:
            out += [f"{c}={lv}" for lv in self.categorical[c]] if c in self.categorical else [c]
        return out

    def transform(self, df: pd.DataFrame, source: str = "the data") -> np.ndarray:
        """(N, p) float32 model matrix of ``df``; DataSchemaError for missing columns, unseen levels,
        non-numeric / NaN / inf values (all problems at once)."""
        problems = []
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            problems.append(f"feature column(s) {missing} are missing (the policy was trained on features "
                            f"{self.columns}); available columns: {[str(c) for c in df.columns]}")
            raise DataSchemaError(problems, source)
        blocks = []
        for c in self.columns:
            s = df[c]
            if c in self.categorical:
                vals = s.astype(str).to_numpy()
                known = self.categorical[c]
                unseen = ~np.isin(vals, known) | s.isna().to_numpy()
                if unseen.any():
                    problems.append(f"feature column '{c}': {int(unseen.sum())} row(s) have a level not seen in "
                                    f"training ({_example(s, unseen)}); known levels: {known}")
                    continue
                blocks += [(vals == lv).astype(np.float32) for lv in known]
            else:
                v = _check_numeric(s, c, "feature", problems)
                if v is not None:
                    blocks.append(v.astype(np.float32))
        if problems:
            raise DataSchemaError(problems, source)
        if not blocks:
            return np.zeros((df.shape[0], 0), dtype=np.float32)
        return np.stack(blocks, axis=1)

    def to_dict(self) -> dict:
        return {"columns": list(self.columns), "categorical": {k: list(v) for k, v in self.categorical.items()},
                "names": self.names}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FeatureSchema":
        try:
            return cls([str(c) for c in d["columns"]], {str(k): [str(x) for x in v] for k, v in d["categorical"].items()})
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"feature schema is malformed (needs 'columns' and 'categorical'): {err}") from err


# ---------------------------------------------------------------------------------------------
# frame -> ExperimentData
# ---------------------------------------------------------------------------------------------
def experiment_from_frame(df: pd.DataFrame, spec: FileSpec, source: str = "the data",
                          levels: Optional[Mapping[str, Sequence[str]]] = None) -> ExperimentData:
    """Check ``df`` and turn it into an ExperimentData (``truth=None``: no simulator behind it).

    Treatment space: names = the treatment columns; low/high = ``treatment_low/high`` or the observed
    range; control = ``spec.control`` or each column's minimum. Arms = distinct treatment rows
    (lexicographically sorted). Propensity = the given column, else the arm's share of the rows.
    Outcome (profit, currency units) = outcome_scale * outcome - treatment_cost . t.
    ``meta`` holds the source, the id values (if any), the FeatureSchema and the propensity rule.
    """
    check_frame(df, spec, source)
    df = df.reset_index(drop=True)
    feats = df[spec.features].copy()
    for c in spec.categorical:
        feats[c] = feats[c].astype(str)
    schema = FeatureSchema.fit(feats, spec.categorical, levels)
    X = schema.transform(feats, source)
    T = df[spec.treatment].apply(pd.to_numeric).to_numpy(dtype=np.float64)
    arms, arm, counts = np.unique(T, axis=0, return_inverse=True, return_counts=True)
    arm = arm.reshape(-1).astype(np.int64)
    n = T.shape[0]
    d = T.shape[1]
    low = [float(v) for v in spec.treatment_low] if spec.treatment_low is not None else arms.min(0).tolist()
    high = [float(v) for v in spec.treatment_high] if spec.treatment_high is not None else arms.max(0).tolist()
    control = [float(v) for v in spec.control] if spec.control is not None else T.min(0).tolist()
    try:
        space = TreatmentSpace(tuple(spec.treatment), tuple(low), tuple(high), tuple(control))
    except ValueError as err:
        raise DataSchemaError([f"treatment space from data.treatment_low/high/control: {err}"], source) from err
    y = pd.to_numeric(df[spec.outcome]).to_numpy(dtype=np.float64) * float(spec.outcome_scale)
    if spec.treatment_cost is not None:
        y = y - T @ np.asarray(spec.treatment_cost, dtype=np.float64).reshape(d)
    if spec.propensity:
        prop = pd.to_numeric(df[spec.propensity]).to_numpy(dtype=np.float64)
        rule = f"column '{spec.propensity}'"
    else:
        prop = (counts / n)[arm]
        rule = "empirical arm frequency n_a / N (completely randomized experiment)"
    meta = {"source": source, "feature_schema": schema.to_dict(), "propensity_rule": rule,
            "profit_formula": _profit_formula(spec)}
    if spec.id:
        meta["ids"] = df[spec.id].to_numpy()
        meta["id_column"] = spec.id
    return ExperimentData(features=feats, X=X, feature_names=schema.names, treatment=T, arm=arm, arms=arms,
                          outcome=y, propensity=prop, space=space, truth=None, meta=meta)


def _profit_formula(spec: FileSpec) -> str:
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
