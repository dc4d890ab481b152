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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from coarse_gpu.data.experiment import ExperimentData
from coarse_gpu.data.treatments import KINDS, TreatmentSpace

__all__ = [
    "DataSchemaError", "FeatureSchema", "FileSpec", "RowIssue", "RowTally", "WARNINGS", "check_frame",
    "duplicate_columns", "experiment_from_frame", "iter_table", "load_experiment", "raw_header", "read_table",
]

CSV_SUFFIXES = (".csv", ".csv.gz", ".txt", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
MAX_LEVELS = 1000  # a categorical column with more levels is almost surely an id or a typo
#: Largest |value| a numeric column may hold: the model matrix and the networks are float32, where a
#: larger finite value (1e300) becomes inf.
MAX_ABS_VALUE = float(np.finfo(np.float32).max)
_log = logging.getLogger(__name__)


class DataSchemaError(ValueError):
    """The input table does not fit the declared columns. ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[str], source: str = "the data") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"data check failed for {source}: {len(self.problems)} problem(s)\n{lines}")


#: The keys of a declared profit structure (FileDataConfig, docs/data.md).
STRUCTURE_KEYS = ("response", "value", "margin", "cost_per_response", "cost_per_customer")
#: Tolerance of the accounting against a realized profit column: a cent (rounded files) or 1e-6 relative.
ACCOUNTING_ATOL = 0.01
ACCOUNTING_RTOL = 1e-6


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
    group_columns : raw columns read beside the features but never model inputs (a protected attribute
        that ``discretizer.group_parity`` bounds, which the model must not use); kept in
        ``ExperimentData.features`` as strings, absent from ``X`` and the feature schema. Only those
        present in the file are read (the constraint's check names a missing one).
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
    group_columns: list[str] = field(default_factory=list)
    #: {treatment column: kind} (coarse_gpu.data.treatments.KINDS); a column not named is continuous if
    #: numeric, categorical if it holds text. A categorical column's labels are coded 0..L-1 in sorted order.
    treatment_kinds: dict = field(default_factory=dict)
    #: false: a combination of the discrete / categorical dimensions that no customer received is never
    #: offered; true: it may be (its profit is then an extrapolation of the model, and the outputs say so)
    allow_unseen_combinations: bool = False
    # the declared profit structure (coarse_gpu.data.accounting): behaviour columns and the accounting
    response: Optional[str] = None
    value: Optional[str] = None
    margin: Optional[str] = None
    cost_per_response: Optional[str] = None
    cost_per_customer: Optional[str] = None
    #: a continuously randomized dose (every customer her own dose, no arms): None = detect it (every
    #: treatment dimension continuous and at least DOSE_DISTINCT_SHARE of the rows distinct), True /
    #: False = declared. A dose experiment skips the per-arm checks (min_per_arm) and is evaluated by
    #: the kernel-smoothed DR (coarse_gpu.evaluate.kernel_dr); ``propensity`` is then the density f(t|x).
    continuous_dose: Optional[bool] = None
    #: "uniform": the doses were drawn uniformly on [treatment_low, treatment_high] (the observed range
    #: when not given), a known generalized propensity score; None: estimated (coarse_gpu.evaluate.gps)
    dose_design: Optional[str] = None

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
            treatment_kinds={str(k): v for k, v in (cfg.get("treatment_kinds") or {}).items()},
            allow_unseen_combinations=bool(cfg.get("allow_unseen_combinations", False)),
            continuous_dose=cfg.get("continuous_dose"),
            dose_design=cfg.get("dose_design"),
            **{k: (None if cfg.get(k) is None else str(cfg.get(k))) for k in STRUCTURE_KEYS},
        )

    def config_problems(self) -> list[str]:
        """Problems with the spec itself (before looking at any data)."""
        out = []
        if not self.features:
            out.append("data.features is empty: list the covariate columns, e.g. data.features=[age,income]")
        if not self.treatment:
            out.append("data.treatment is empty: list the treatment column(s), e.g. data.treatment=[discount]")
        if not self.outcome and not self.response:
            out.append("data.outcome is not set: name the realized-profit column, e.g. data.outcome=profit "
                       "(or declare the profit's structure: data.response, data.value, data.margin, ...)")
        out += self.structure_problems()
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
                           ("propensity", [self.propensity]), ("id", [self.id]), ("response", [self.response]),
                           ("value", [self.value])):
            for c in cols:
                if c:
                    roles.setdefault(c, []).append(role)
        for c, rs in roles.items():
            if len(rs) > 1:
                out.append(f"column '{c}' is used more than once (as {', '.join(rs)}); each column has one role")
        out += self.kind_problems()
        if self.min_per_arm < 1:
            out.append(f"data.min_per_arm must be >= 1, got {self.min_per_arm}")
        if self.continuous_dose not in (None, True, False):
            out.append(f"data.continuous_dose must be true, false or null (detect), got {self.continuous_dose!r}")
        if self.dose_design not in (None, "uniform"):
            out.append(f"data.dose_design must be 'uniform' (doses drawn uniformly on [data.treatment_low, "
                       f"data.treatment_high]) or null (density estimated), got {self.dose_design!r}")
        elif self.dose_design is not None and self.continuous_dose is False:
            out.append("data.dose_design is set but data.continuous_dose=false: a dose design describes a "
                       "continuously randomized dose; drop one of them")
        if not np.isfinite(self.outcome_scale) or self.outcome_scale == 0:
            out.append(f"data.outcome_scale must be a finite nonzero number, got {self.outcome_scale}")
        return out

    def kind_problems(self) -> list[str]:
        """data.treatment_kinds: every key a treatment column, every value a kind; no cost on a label."""
        out = []
        if not isinstance(self.treatment_kinds, Mapping):
            return [f"data.treatment_kinds must be a mapping {{column: kind}}, got {self.treatment_kinds!r}"]
        for col, kind in self.treatment_kinds.items():
            if col not in self.treatment:
                out.append(f"data.treatment_kinds.{col}: '{col}' is not a treatment column (data.treatment = "
                           f"{self.treatment})")
            elif kind not in KINDS:
                out.append(f"data.treatment_kinds.{col}={kind!r} is not a kind; use one of {list(KINDS)}")
            elif kind == "categorical" and self.treatment_cost is not None and \
                    len(self.treatment_cost) == len(self.treatment) and self.treatment_cost[self.treatment.index(col)]:
                out.append(f"data.treatment_cost[{self.treatment.index(col)}] charges a cost per unit of the "
                           f"categorical treatment column '{col}', whose values are labels: set it to 0")
        return out

    def columns(self) -> list[str]:
        cols = list(self.features) + list(self.treatment) + ([self.outcome] if self.outcome else [])
        return cols + [c for c in (self.propensity, self.id, self.response, self.value) if c]

    @property
    def structured(self) -> bool:
        """Whether a profit structure is declared (data.response and data.value)."""
        return bool(self.response and self.value)

    def accounting(self):
        """The declared ``Accounting`` bound to the treatment columns (AccountingError if it does not parse)."""
        from coarse_gpu.data.accounting import Accounting

        parts = {k: getattr(self, k) for k in ("margin", "cost_per_response", "cost_per_customer")}
        defaults = {"margin": 1.0, "cost_per_response": 0.0, "cost_per_customer": 0.0}
        return Accounting(**{k: (defaults[k] if v is None else v) for k, v in parts.items()}, names=self.treatment)

    def structure_problems(self) -> list[str]:
        """The declared structure's own problems: keys that need each other, expressions that do not parse."""
        from coarse_gpu.data.accounting import AccountingError

        out = []
        acc_keys = [k for k in ("margin", "cost_per_response", "cost_per_customer") if getattr(self, k) is not None]
        if bool(self.response) != bool(self.value):
            have, miss = ("response", "value") if self.response else ("value", "response")
            out.append(f"data.{have} is set but data.{miss} is not: a declared profit structure needs both "
                       "(the response column, e.g. bought, and the value per response, e.g. spend)")
        elif acc_keys and not self.response:
            out.append(f"{['data.' + k for k in acc_keys]} set without data.response and data.value: the accounting "
                       "turns a response and its value into profit, so name those columns")
        if self.structured:
            try:
                self.accounting()
            except AccountingError as err:
                out.append(str(err))
        return out


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


def _existing_file(path: Path) -> str:
    """The file's kind ("csv" | "parquet"); DataSchemaError if it is missing, a folder or not a regular file."""
    if path.is_dir():
        raise DataSchemaError([f"file '{path}' is a folder, not a file (data.path)"], str(path))
    if not path.exists():
        raise DataSchemaError([f"file '{path}' does not exist (data.path)"], str(path))
    if not path.is_file():  # a FIFO or a device would block or never end
        raise DataSchemaError([f"file '{path}' is not a regular file (data.path)"], str(path))
    return _kind(path)


def _sep(path: Path) -> str:
    return "\t" if path.name.lower().endswith(".tsv") else ","


def _unreadable(path: Path, kind: str, err: Exception) -> DataSchemaError:
    return DataSchemaError([f"file '{path}' could not be read as {kind}: {type(err).__name__}: {err}"], str(path))


def raw_header(path: str | Path) -> list[str]:
    """The column names exactly as the file's header has them, duplicates included (pandas would
    rename a second ``age`` to ``age.1`` without a word)."""
    path = Path(path)
    kind = _existing_file(path)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            return [str(c) for c in pq.read_schema(path).names]
        head = pd.read_csv(path, sep=_sep(path), header=None, nrows=1, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return []
    except Exception as err:  # pandas/pyarrow parse errors: report them as data problems
        raise _unreadable(path, kind, err) from err
    return [str(v) for v in head.iloc[0]] if len(head) else []


def duplicate_columns(header: Sequence[str]) -> dict[str, list[int]]:
    """{name: [0-based positions]} of the names that occur more than once in ``header``."""
    pos: dict[str, list[int]] = {}
    for i, c in enumerate(header):
        pos.setdefault(str(c), []).append(i)
    return {c: p for c, p in pos.items() if len(p) > 1}


def read_table(path: str | Path, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Read a whole CSV / Parquet file into a DataFrame (only ``columns`` when given and present).

    Raises DataSchemaError (naming the file) when it does not exist, is empty or cannot be parsed.
    ``df.attrs["header"]`` keeps the raw header (duplicates included) for :func:`check_frame`.
    """
    path = Path(path)
    kind = _existing_file(path)
    header = raw_header(path)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            have = pq.read_schema(path).names
            cols = [c for c in columns if c in have] if columns is not None else None
            df = pd.read_parquet(path, columns=cols)
        else:
            cols = set(columns) if columns is not None else None
            df = pd.read_csv(path, sep=_sep(path), usecols=(lambda c: c in cols) if cols is not None else None)
    except DataSchemaError:
        raise
    except Exception as err:  # pandas/pyarrow parse errors: report them as data problems
        raise _unreadable(path, kind, err) from err
    if df.shape[0] == 0:
        raise DataSchemaError([f"file '{path}' has no data rows"], str(path))
    df.attrs["header"] = header
    return df


def iter_table(path: str | Path, columns: Optional[Sequence[str]] = None,
               chunk_rows: int = 1_000_000) -> Iterator[pd.DataFrame]:
    """Yield the file in DataFrames of at most ``chunk_rows`` rows (memory stays O(chunk_rows)).

    Read errors at any point of the file (a corrupt gzip stream, a broken Parquet page) are raised as
    DataSchemaError naming the file."""
    path = Path(path)
    kind = _existing_file(path)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            cols = [c for c in columns if c in pf.schema_arrow.names] if columns is not None else None
            for batch in pf.iter_batches(batch_size=chunk_rows, columns=cols):
                yield batch.to_pandas()
        else:
            cols = set(columns) if columns is not None else None
            yield from pd.read_csv(path, sep=_sep(path), chunksize=chunk_rows,
                                   usecols=(lambda c: c in cols) if cols is not None else None)
    except pd.errors.EmptyDataError as err:
        raise DataSchemaError([f"file '{path}' has no data rows"], str(path)) from err
    except Exception as err:  # pandas/pyarrow/gzip errors anywhere in the file
        raise _unreadable(path, kind, err) from err


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
    huge = _too_large(v)
    if huge.any():
        problems.append(f"{role} column '{col}': {int(huge.sum())} row(s) hold a finite value too large to be used "
                        f"(|value| > {MAX_ABS_VALUE:.3g}, the float32 range the models compute in) "
                        f"({_example(s, huge)}); rescale the column (e.g. to thousands) or drop the rows")
        ok = False
    return v if ok else None


def _too_large(v: np.ndarray) -> np.ndarray:
    """Finite values beyond ``MAX_ABS_VALUE`` (they would become inf in the float32 model matrix)."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(v) & (np.abs(v) > MAX_ABS_VALUE)


def check_frame(df: pd.DataFrame, spec: FileSpec, source: str = "the data") -> list[str]:
    """Check ``df`` against ``spec``; raise one DataSchemaError listing every problem.

    Returns the warnings (strings ``"<name>: <message>"``, see WARNINGS): things that make the
    experiment less informative than it looks but need not be wrong.
    """
    problems = spec.config_problems()
    warnings: list[str] = []
    n = int(df.shape[0])
    if n == 0:
        problems.append("the table has no rows")
    dup = _check_header(df, spec, problems, warnings)
    available = [str(c) for c in df.columns]
    for role, cols in (("feature", spec.features), ("treatment", spec.treatment), ("outcome", [spec.outcome]),
                       ("propensity", [spec.propensity]), ("id", [spec.id]), ("response", [spec.response]),
                       ("value", [spec.value])):
        for c in cols:
            if c and c not in df.columns:
                problems.append(f"{role} column '{c}' is missing from the file; available columns: {available}")
    if n == 0:
        raise DataSchemaError(problems, source)

    def usable(c: Optional[str]) -> bool:
        return bool(c) and c in df.columns and c not in dup

    _check_features(df, spec, usable, problems)
    y = _check_numeric(df[spec.outcome], spec.outcome, "outcome", problems) if usable(spec.outcome) else None
    if spec.structured and usable(spec.response) and usable(spec.value):
        y = _check_structure(df, spec, y, problems)
    if y is not None and n > 1 and np.all(y == y[0]):
        problems.append(f"outcome column '{spec.outcome}' is constant (value {float(y[0])!r} in all {n} rows): "
                        "there is no outcome variation, so every policy would look equally good; check data.outcome")
        y = None
    p = None
    dose = continuous_dose(df, spec, usable, problems)
    if usable(spec.propensity):
        p = _check_numeric(df[spec.propensity], spec.propensity, "propensity", problems)
        if p is not None:
            # a dose's propensity is the density f(t | x) (1 / treatment units): any positive number
            out = (p <= 0) | (p > 1) if not dose else ~(p > 0)
            if out.any():
                problems.append(f"propensity column '{spec.propensity}': {int(out.sum())} row(s) outside "
                                f"{'(0, 1]' if not dose else '(0, inf) (a density f(t|x) for a continuous dose)'} "
                                f"({_example(df[spec.propensity], out)})")
                p = None
    if usable(spec.id):
        _check_ids(df[spec.id], spec.id, problems)
    arms = _check_treatments(df, spec, usable, problems, dose)
    if arms is not None and not dose:
        arm_values, arm = arms
        if y is not None and spec.outcome:
            _check_outcome_by_arm(y, arm, spec, warnings)
        if p is not None:
            feats = [c for c in spec.features if usable(c)]
            _check_propensity(p, arm, arm_values, df[feats], spec, problems, warnings)
    if problems:
        raise DataSchemaError(problems, source)
    for w in warnings:
        _log.warning("%s: %s", source, w)
    return warnings


#: Named warnings ``check_frame`` may return (the name is the prefix of the warning's text).
WARNINGS = {
    "duplicate_unused_column": "a column name not used by the spec occurs more than once in the header",
    "outcome_depends_only_on_arm": "the outcome is constant within every arm: no customer differs from another",
    "propensity_inconsistent": "customers with identical covariates and arm have different propensities",
    "propensity_sum": "the propensities of the arms received at one covariate pattern do not sum to <= 1 (or to 1)",
}


def _check_header(df: pd.DataFrame, spec: FileSpec, problems: list[str], warnings: list[str]) -> set[str]:
    """Duplicate column names (raw header in ``df.attrs["header"]``, or the frame's own columns): an
    error for a column the spec uses, a warning otherwise. Returns the duplicated names."""
    header = df.attrs.get("header") or [str(c) for c in df.columns]
    dups = duplicate_columns(header)
    dups.update({str(c): list(np.flatnonzero(df.columns == c)) for c in df.columns[df.columns.duplicated()]})
    used = set(c for c in spec.columns() if c)
    for c, pos in dups.items():
        msg = (f"column name '{c}' occurs {len(pos)} times in the header (columns {[int(i) for i in pos]}); "
               f"pandas would read the copies as {[c] + [f'{c}.{j}' for j in range(1, len(pos))]}")
        if c in used:
            problems.append(msg + ": rename or drop the duplicates so that the column is unambiguous")
        else:
            warnings.append(f"duplicate_unused_column: {msg} (not used by data.*)")
    return set(dups)


def is_time_column(s: pd.Series) -> bool:
    """Dates or durations: neither a number nor a category to the models (the checks refuse them)."""
    return pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_timedelta64_dtype(s)


def _check_features(df: pd.DataFrame, spec: FileSpec, usable, problems: list[str]) -> None:
    n = int(df.shape[0])
    for c in spec.features:
        if not usable(c):
            continue
        s = df[c]
        if is_time_column(s):
            problems.append(f"feature column '{c}' holds dates or durations ({s.dtype}): convert it to a number "
                            "(e.g. days since a reference date) or drop it")
            continue
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


def _check_ids(ids: pd.Series, col: str, problems: list[str]) -> None:
    miss = ids.isna().to_numpy()
    if miss.any():
        problems.append(f"id column '{col}': {int(miss.sum())} row(s) are missing "
                        f"(e.g. row {int(np.flatnonzero(miss)[0])})")
    dup = ids.duplicated(keep=False).to_numpy() & ~miss
    if dup.any():
        first = ids[dup].iloc[0]
        rows = np.flatnonzero((ids == first).to_numpy())[:2].tolist()
        problems.append(f"id column '{col}': {int(ids[dup].nunique())} value(s) occur more than once "
                        f"({int(dup.sum())} rows), e.g. {first!r} in rows {rows}")


def _is_text(s: pd.Series) -> bool:
    """A column of labels: text dtype and not one present entry reads as a number (a numeric column with
    a stray word stays numeric, and its bad rows are named)."""
    if not (s.dtype == object or isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(s.dtype)):
        return False
    v, bad = _numeric(s)
    present = s.notna().to_numpy()
    return bool(present.any()) and bool(np.all(bad[present]))


def treatment_kind_list(df: pd.DataFrame, spec: FileSpec) -> list[str]:
    """The kind of every treatment column: declared in ``spec.treatment_kinds``, else categorical when it
    holds text, else continuous (the pipeline may still keep an undeclared integer column discrete)."""
    out = []
    for c in spec.treatment:
        kind = spec.treatment_kinds.get(c) if isinstance(spec.treatment_kinds, Mapping) else None
        if kind not in KINDS:  # undeclared (a wrong kind is named by FileSpec.kind_problems)
            kind = "categorical" if c in df.columns and _is_text(df[c]) else "continuous"
        out.append(kind)
    return out


def treatment_codes(s: pd.Series) -> tuple[np.ndarray, list]:
    """A categorical treatment column -> (codes (N,) float64 over the sorted labels, labels). Text is sorted
    as text, numbers as numbers (kept as int where whole, so outputs give the user's values back)."""
    if _is_text(s):
        vals = s.astype(str).to_numpy()
        labels: list = sorted(set(vals.tolist()))
        return np.searchsorted(np.asarray(labels, dtype=object), vals).astype(np.float64), labels
    v = pd.to_numeric(s).to_numpy(dtype=np.float64)
    uniq = np.unique(v)
    labels = [int(x) if float(x).is_integer() else float(x) for x in uniq]
    return np.searchsorted(uniq, v).astype(np.float64), labels


def _label_index(labels: list, value) -> Optional[int]:
    """Position of ``value`` among ``labels`` (as text, or as a number), None when absent."""
    for i, lab in enumerate(labels):
        if str(lab) == str(value):
            return i
        try:
            if float(lab) == float(value):
                return i
        except (TypeError, ValueError):
            pass
    return None


def _check_categorical_treatment(s: pd.Series, j: int, c: str, spec: FileSpec,
                                 problems: list[str]) -> Optional[np.ndarray]:
    """A categorical treatment column: no missing rows, a bounded number of labels, a control among them.
    Returns its codes when usable."""
    miss = s.isna().to_numpy()
    if miss.any():
        problems.append(f"treatment column '{c}' (categorical): {int(miss.sum())} row(s) are missing "
                        f"(e.g. row {int(np.flatnonzero(miss)[0])})")
        return None
    codes, labels = treatment_codes(s)
    if len(labels) > MAX_LEVELS:
        problems.append(f"treatment column '{c}' (categorical) has {len(labels)} labels (> {MAX_LEVELS}): is it an "
                        "id or a continuous dose? declare it in data.treatment_kinds")
        return None
    if spec.control is not None and j < len(spec.control) and _label_index(labels, spec.control[j]) is None:
        problems.append(f"data.control[{j}]={spec.control[j]!r} for the categorical treatment column '{c}' is not "
                        f"one of its labels {labels}")
    return codes


def _check_treatments(df: pd.DataFrame, spec: FileSpec, usable, problems: list[str],
                      dose: bool = False) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Treatment values, declared range and arms; returns (arms (A, d), arm index (N,)) when usable.
    ``dose``: a continuously randomized dose, which has no arms: data.min_per_arm is not checked."""
    n = int(df.shape[0])
    tvals = {}
    kinds = treatment_kind_list(df, spec)
    labels = {}
    for j, c in enumerate(spec.treatment):
        if not usable(c):
            continue
        if kinds[j] == "categorical":
            codes = _check_categorical_treatment(df[c], j, c, spec, problems)
            if codes is not None:
                tvals[c], labels[c] = codes, treatment_codes(df[c])[1]
            continue
        v = _check_numeric(df[c], c, "treatment", problems)
        if v is None and _is_text(df[c]):
            problems[-1] += (f"; data.treatment_kinds declares '{c}' {kinds[j]}: remove that entry (or declare it "
                             "categorical) if its values are labels")
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
        if not (dose and spec.dose_design):  # a design's support may reach a little beyond the draws
            _check_declared_beyond_arms(v, j, c, spec, problems)
    if not spec.treatment or len(tvals) != len(spec.treatment):
        return None
    T = np.stack([tvals[c] for c in spec.treatment], axis=1)
    arms, arm, counts = np.unique(T, axis=0, return_inverse=True, return_counts=True)
    if arms.shape[0] < 2:
        problems.append(f"treatment {spec.treatment} has a single arm {_fmt_arm(spec.treatment, arms[0], labels)} in all "
                        f"{n} rows: need at least 2 arms (a control and a treatment) to estimate effects")
        return None
    for j, c in enumerate(spec.treatment):
        if np.unique(arms[:, j]).size < 2:
            problems.append(f"treatment column '{c}' is constant (value {float(arms[0, j])!r} in all {n} rows); "
                            "drop it from data.treatment")
    few = np.flatnonzero(counts < spec.min_per_arm) if not dose else np.empty(0, dtype=np.int64)
    if few.size:
        i = few[np.argmin(counts[few])]
        hint = "" if any(k != "continuous" for k in kinds) else \
            ("; or, if every customer got her own randomly drawn dose, declare data.continuous_dose=true (no arms: "
             "dose-response learners and the kernel DR value)")
        problems.append(
            f"{few.size} of the {arms.shape[0]} treatment arms have fewer than data.min_per_arm="
            f"{spec.min_per_arm} customers, e.g. arm {_fmt_arm(spec.treatment, arms[i], labels)} with "
            f"{int(counts[i])} row(s); merge arms (round the treatment) or collect more data{hint}")
    return arms, arm.reshape(-1).astype(np.int64)


#: Share of the rows whose treatment rows must be distinct for a numeric treatment to be detected as a
#: continuously randomized dose (``FileSpec.continuous_dose=None``): an arms-based experiment repeats
#: each arm many times (10 arms over 1,000 rows: 1 %), a dose drawn from a density almost never repeats.
DOSE_DISTINCT_SHARE = 0.5
#: Fewest rows for the detection (a handful of rows are all distinct whatever the design).
DOSE_MIN_ROWS = 40


def continuous_dose(df: pd.DataFrame, spec: FileSpec, usable=None, problems: Optional[list] = None) -> bool:
    """Whether the treatment is a continuously randomized dose: declared (``spec.continuous_dose``), or
    detected when it is null: every treatment dimension continuous (not declared discrete or categorical,
    not text) and at least ``DOSE_DISTINCT_SHARE`` of the rows (and DOSE_MIN_ROWS of them) distinct.
    A declared dose with a discrete or categorical dimension is a problem (appended to ``problems``)."""
    usable = usable or (lambda c: bool(c) and c in df.columns)
    if spec.continuous_dose is False or not spec.treatment or not all(usable(c) for c in spec.treatment):
        return False
    kinds = treatment_kind_list(df, spec)
    fixed = [c for c, k in zip(spec.treatment, kinds) if k != "continuous"]
    if spec.continuous_dose:
        if fixed and problems is not None:
            problems.append(f"data.continuous_dose=true, but treatment column(s) {fixed} are discrete or categorical "
                            "(data.treatment_kinds, or text): a continuously randomized dose is numeric in every "
                            "dimension")
        return not fixed
    if fixed or df.shape[0] < DOSE_MIN_ROWS:
        return False
    T = df[spec.treatment].apply(pd.to_numeric, errors="coerce")
    if T.isna().any().any():
        return False  # the numeric checks name the bad rows
    return len(T.drop_duplicates()) >= DOSE_DISTINCT_SHARE * df.shape[0]


def _check_declared_beyond_arms(v: np.ndarray, j: int, c: str, spec: FileSpec, problems: list[str]) -> None:
    """A declared bound (or control point) beyond the received treatments: nobody was treated there, so
    its profit is not estimable; the models would clip such treatments to the arms' hull, silently."""
    lo_obs, hi_obs = float(v.min()), float(v.max())
    tol = 1e-9 * max(1.0, abs(lo_obs), abs(hi_obs))
    for key, bound, beyond, side in (("treatment_low", spec.treatment_low, lambda b: b < lo_obs - tol, "smallest"),
                                     ("treatment_high", spec.treatment_high, lambda b: b > hi_obs + tol, "largest")):
        if bound is not None and j < len(bound) and beyond(float(bound[j])):
            obs = lo_obs if side == "smallest" else hi_obs
            problems.append(f"data.{key}[{j}]={float(bound[j]):g} for treatment column '{c}' lies beyond the {side} "
                            f"treatment any customer received ({obs:g}): its effect cannot be estimated (the models "
                            f"would clip it to {obs:g}); set it to {obs:g} or leave it unset")
    if spec.control is not None and j < len(spec.control):
        try:
            ctl = float(spec.control[j])
        except (TypeError, ValueError):
            problems.append(f"data.control[{j}]={spec.control[j]!r} for treatment column '{c}' is not a number (a "
                            "label is a control only for a categorical column, see data.treatment_kinds)")
            return
        if not lo_obs - tol <= ctl <= hi_obs + tol:
            problems.append(f"data.control[{j}]={ctl:g} for treatment column '{c}' lies outside the received "
                            f"treatments [{lo_obs:g}, {hi_obs:g}]: the control's profit cannot be estimated there")


def _check_outcome_by_arm(y: np.ndarray, arm: np.ndarray, spec: FileSpec, warnings: list[str]) -> None:
    """Warn when the outcome is exactly a function of the arm (constant within every arm)."""
    A = int(arm.max()) + 1
    lo = np.full(A, np.inf)
    hi = np.full(A, -np.inf)
    np.minimum.at(lo, arm, y)
    np.maximum.at(hi, arm, y)
    if np.all(hi - lo <= 1e-12 * max(1.0, float(np.abs(y).max()))):
        warnings.append(f"outcome_depends_only_on_arm: outcome column '{spec.outcome}' is constant within every "
                        f"one of the {A} arms (a function of the treatment alone): the data show no difference "
                        "between customers, so every personalized policy reduces to one treatment for all")


#: Horvitz-Thompson: in a randomized experiment sum_{i in arm a} 1/p_i estimates N for every arm; a
#: ratio beyond this factor is not sampling noise (the relative sd is ~1/sqrt(n_a), <= 0.32 at 10 rows).
PROPENSITY_FACTOR = 2.0
#: Tolerance on the sum of propensities over the arms at one covariate pattern (rounded inputs).
PROPENSITY_SUM_TOL = 0.02


def _check_propensity(p: np.ndarray, arm: np.ndarray, arms: np.ndarray, X: pd.DataFrame, spec: FileSpec,
                      problems: list[str], warnings: list[str]) -> None:
    """Degenerate or inconsistent propensities (see PROPENSITY_FACTOR, PROPENSITY_SUM_TOL)."""
    n, A, col = p.shape[0], arms.shape[0], spec.propensity
    if np.all(p >= 1.0 - 1e-12):
        problems.append(f"propensity column '{col}' is 1 in all {n} rows, but the experiment has {A} arms: the "
                        "column must hold the probability of the arm each customer received (e.g. 1/A under "
                        "uniform randomization)")
        return
    ht = np.bincount(arm, weights=1.0 / p, minlength=A) / n  # (A,) ~ 1 for every arm
    off = np.flatnonzero((ht < 1.0 / PROPENSITY_FACTOR) | (ht > PROPENSITY_FACTOR))
    if off.size:
        w = off[np.argmax(np.abs(np.log(ht[off])))]
        problems.append(
            f"propensity column '{col}' disagrees with the arms' frequencies: for {off.size} of the {A} arms "
            f"sum(1/{col}) over the arm's rows is off N={n} by more than a factor {PROPENSITY_FACTOR:g}, e.g. arm "
            f"{_fmt_arm(spec.treatment, arms[w])}: {int(np.sum(arm == w))} rows, sum(1/{col}) = {ht[w] * n:.4g} "
            f"(in a randomized experiment it estimates N for every arm); is it the probability of the received arm?")
    if X.shape[1] == 0:
        return
    pattern = pd.util.hash_pandas_object(X, index=False).to_numpy()
    g = pd.DataFrame({"x": pattern, "a": arm, "p": p, "row": np.arange(n)})
    by = g.groupby(["x", "a"], sort=False)
    cell = by["p"].agg(["min", "max", "mean"])
    spread = cell["max"] - cell["min"]
    bad = spread > 1e-6 * np.maximum(1.0, cell["max"])
    if bad.any():
        x0, a0 = bad[bad].index[0]
        rows = g.loc[(g.x == x0) & (g.a == a0), "row"].to_numpy()[:2].tolist()
        warnings.append(f"propensity_inconsistent: {int(bad.sum())} group(s) of customers with identical covariates "
                        f"who received the same arm have different propensities (e.g. rows {rows}: "
                        f"{cell.loc[(x0, a0), 'min']:g} and {cell.loc[(x0, a0), 'max']:g}); a propensity is a "
                        "function of the covariates the assignment used")
    per = cell["mean"].groupby(level="x").agg(["sum", "count"])
    over = per["sum"] > 1.0 + PROPENSITY_SUM_TOL
    under = (per["count"] == A) & (per["sum"] < 1.0 - PROPENSITY_SUM_TOL)
    for mask, how in ((over, "more than 1"), (under, f"less than 1 although all {A} arms were received")):
        if mask.any():
            x0 = per["sum"][mask].idxmax() if how == "more than 1" else per["sum"][mask].idxmin()
            rows = g.loc[g.x == x0, "row"].to_numpy()[:4].tolist()
            warnings.append(f"propensity_sum: at {int(mask.sum())} covariate pattern(s) the propensities of the "
                            f"different arms received sum to {how} (e.g. {per.loc[x0, 'sum']:.4g} over rows {rows}); "
                            f"if assignment used only data.features, column '{col}' is not P(received arm | x)")


def _fmt_arm(names: Sequence[str], values: np.ndarray, labels: Optional[Mapping[str, list]] = None) -> str:
    """``(name=value, ...)``; a categorical column (in ``labels``) shows its label, not its code."""
    labels = labels or {}
    return "(" + ", ".join(f"{c}={labels[c][int(v)]!r}" if c in labels else f"{c}={float(v):g}"
                           for c, v in zip(names, values)) + ")"


# ---------------------------------------------------------------------------------------------
# features -> model matrix
# ---------------------------------------------------------------------------------------------
#: Rows listed by name in a row-level message (the count always covers every row).
MAX_LISTED_ROWS = 20
#: A new customer's numeric feature is "far outside the training range" beyond this many training
#: spans (max - min) below the minimum or above the maximum: the model extrapolates there.
FAR_OUTSIDE = 0.5


@dataclass
class RowIssue:
    """One kind of problem of one column, over some rows: ``rows`` absolute 0-based row numbers (every
    failing row of the block), ``values`` the raw value at each of the first MAX_LISTED_ROWS rows."""

    column: str
    what: str
    rows: np.ndarray
    values: list
    hint: str = ""


class RowTally:
    """Row issues summed over the blocks of a file: every failing row is counted, the first
    MAX_LISTED_ROWS of each (column, kind) are listed with their absolute row numbers and values."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], list] = {}

    def add(self, issues: Sequence[RowIssue]) -> None:
        for it in issues:
            cur = self._items.setdefault((it.column, it.what), [0, [], it.hint])
            cur[0] += int(it.rows.shape[0])
            room = MAX_LISTED_ROWS - len(cur[1])
            cur[1] += list(zip(it.rows[:room].tolist(), it.values[:room]))

    def __bool__(self) -> bool:
        return bool(self._items)

    def messages(self, role: str = "feature") -> list[str]:
        out = []
        for (col, what), (count, listed, hint) in self._items.items():
            shown = ", ".join(f"row {r}" + ("" if _is_missing(v) else f" = {_plain(v)!r}") for r, v in listed)
            more = f", and {count - len(listed)} more" if count > len(listed) else ""
            out.append(f"{role} column '{col}': {count} row(s) {what}: {shown}{more}" + (f"; {hint}" if hint else ""))
        return out


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _is_missing(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _issue(col: str, what: str, s: pd.Series, mask: np.ndarray, offset: int, hint: str = "") -> RowIssue:
    idx = np.flatnonzero(mask)
    return RowIssue(col, what, idx + offset, [s.iloc[i] for i in idx[:MAX_LISTED_ROWS]], hint)


@dataclass
class FeatureSchema:
    """Raw feature columns -> the model matrix X, exactly and reproducibly.

    columns : raw feature column names, in order.
    categorical : {column: [levels]} one-hot encoded over these levels (strings), in this order;
        every other column is numeric.
    ranges : {numeric column: [min, max]} over the customers the schema was fitted on (optional:
        policies saved before it was recorded have none, and new customers are then not range-checked).
    Model-matrix column names (``names``): a numeric column keeps its name, a categorical column c
    becomes ``c=level`` for each level. Standardization is not done here: the CATE model
    standardizes on its training rows and stores its own means / scales.
    """

    columns: list[str]
    categorical: dict[str, list[str]]
    ranges: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def fit(cls, features: pd.DataFrame, categorical: Sequence[str] = (),
            levels: Optional[Mapping[str, Sequence[str]]] = None) -> "FeatureSchema":
        """Schema of ``features``: listed (and string-typed) columns categorical, levels sorted
        (or ``levels[col]`` when given); numeric columns' observed [min, max]."""
        cats: dict[str, list[str]] = {}
        ranges: dict[str, list[float]] = {}
        for c in features.columns:
            s = features[c]
            is_str = s.dtype == object or isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(s.dtype)
            if c in categorical or is_str:
                lv = (levels or {}).get(c)
                cats[str(c)] = [str(x) for x in lv] if lv else sorted(map(str, s.dropna().astype(str).unique()))
            else:
                v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
                v = v[np.isfinite(v)]
                if v.size:
                    ranges[str(c)] = [float(v.min()), float(v.max())]
        return cls([str(c) for c in features.columns], cats, ranges)

    @property
    def names(self) -> list[str]:
        out = []
        for c in self.columns:
            out += [f"{c}={lv}" for lv in self.categorical[c]] if c in self.categorical else [c]
        return out

    def row_issues(self, df: pd.DataFrame, offset: int = 0) -> list[RowIssue]:
        """Every row of ``df`` that cannot be encoded (unseen level, not numeric, NaN, inf), by column;
        row numbers are ``offset`` + the 0-based position in ``df``. Missing columns are not checked here."""
        issues = []
        for c in self.columns:
            if c not in df.columns:
                continue
            s = df[c]
            if c in self.categorical:
                known = self.categorical[c]
                unseen = ~np.isin(s.astype(str).to_numpy(), known) | s.isna().to_numpy()
                if unseen.any():
                    issues.append(_issue(c, "have a level not seen in training", s, unseen, offset,
                                         f"known levels: {known}"))
                continue
            v, bad = _numeric(s)
            for what, mask in (("are not numeric", bad), ("are NaN/missing", s.isna().to_numpy()),
                               ("are inf", np.isinf(v)),
                               (f"hold a finite value too large to be used (|value| > {MAX_ABS_VALUE:.3g})",
                                _too_large(v))):
                if mask.any():
                    issues.append(_issue(c, what, s, mask, offset))
        return issues

    def range_issues(self, df: pd.DataFrame, offset: int = 0) -> list[RowIssue]:
        """Rows whose numeric feature lies far outside the training range (see FAR_OUTSIDE); empty when
        the schema has no ranges (older policies)."""
        issues = []
        for c, (lo, hi) in self.ranges.items():
            if c not in df.columns or c in self.categorical:
                continue
            v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
            span = (hi - lo) if hi > lo else max(1.0, abs(lo))
            with np.errstate(invalid="ignore"):
                far = (v < lo - FAR_OUTSIDE * span) | (v > hi + FAR_OUTSIDE * span)
            if far.any():
                issues.append(_issue(c, f"lie far outside the training range [{lo:g}, {hi:g}]", df[c], far, offset,
                                     "predictions there are extrapolations"))
        return issues

    def transform(self, df: pd.DataFrame, source: str = "the data", offset: int = 0) -> np.ndarray:
        """(N, p) float32 model matrix of ``df``; DataSchemaError for missing columns, unseen levels,
        non-numeric / NaN / inf values (all problems at once, rows numbered from ``offset``)."""
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise DataSchemaError([f"feature column(s) {missing} are missing (the policy was trained on features "
                                   f"{self.columns}); available columns: {[str(c) for c in df.columns]}"], source)
        issues = self.row_issues(df, offset)
        if issues:
            tally = RowTally()
            tally.add(issues)
            raise DataSchemaError(tally.messages(), source)
        blocks = []
        for c in self.columns:
            s = df[c]
            if c in self.categorical:
                vals = s.astype(str).to_numpy()
                blocks += [(vals == lv).astype(np.float32) for lv in self.categorical[c]]
            else:
                blocks.append(pd.to_numeric(s).to_numpy(dtype=np.float64).astype(np.float32))
        if not blocks:
            return np.zeros((df.shape[0], 0), dtype=np.float32)
        return np.stack(blocks, axis=1)

    def to_dict(self) -> dict:
        d = {"columns": list(self.columns), "categorical": {k: list(v) for k, v in self.categorical.items()},
             "names": self.names}
        if self.ranges:
            d["ranges"] = {k: [float(a), float(b)] for k, (a, b) in self.ranges.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FeatureSchema":
        """From ``to_dict`` output; ValueError naming what is malformed (see ``problems``)."""
        try:
            schema = cls([str(c) for c in d["columns"]], {str(k): [str(x) for x in v] for k, v in d["categorical"].items()},
                         {str(k): [float(a), float(b)] for k, (a, b) in (d.get("ranges") or {}).items()})
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise ValueError(f"feature schema is malformed (needs 'columns', 'categorical' and optional 'ranges' "
                             f"{{column: [min, max]}}): {type(err).__name__}: {err}") from err
        bad = schema.problems(d.get("names"))
        if bad:
            raise ValueError("feature schema is inconsistent: " + "; ".join(bad))
        return schema

    def problems(self, names: Optional[Sequence[str]] = None) -> list[str]:
        """Internal consistency: unique columns, categorical keys among the columns with unique levels,
        finite ranges of numeric columns, and (when given) the stored model-matrix ``names`` equal to
        the ones the columns produce (a reordered column list would shift every model input)."""
        out = []
        dup = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if dup:
            out.append(f"columns {dup} occur more than once")
        for c, lv in self.categorical.items():
            if c not in self.columns:
                out.append(f"categorical column '{c}' is not among the columns {self.columns}")
            if not lv or len(set(lv)) != len(lv):
                out.append(f"categorical column '{c}' needs distinct levels, got {lv}")
        for c, (lo, hi) in self.ranges.items():
            if c not in self.columns or c in self.categorical or not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                out.append(f"ranges['{c}'] = [{lo}, {hi}] is not a finite [min, max] of a numeric column")
        if names is not None and [str(x) for x in names] != self.names:
            out.append(f"the model-matrix names {list(names)} do not match the columns {self.columns} (which give "
                       f"{self.names}): the columns were reordered or edited")
        return out


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
    from coarse_gpu.data.dose_design import UniformDoseDesign

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
def _profit_column(df: pd.DataFrame, spec: FileSpec) -> np.ndarray:
    """(N,) the realized profit from the outcome column: outcome_scale * outcome - treatment_cost . t."""
    y = pd.to_numeric(df[spec.outcome]).to_numpy(dtype=np.float64) * float(spec.outcome_scale)
    if spec.treatment_cost is not None:
        T = df[spec.treatment].apply(pd.to_numeric).to_numpy(dtype=np.float64)
        y = y - T @ np.asarray(spec.treatment_cost, dtype=np.float64).reshape(len(spec.treatment))
    return y


def _behaviour(df: pd.DataFrame, spec: FileSpec) -> tuple[np.ndarray, np.ndarray]:
    """(response (N,), value (N,) with NaN where response == 0) from checked columns."""
    r = pd.to_numeric(df[spec.response]).to_numpy(dtype=np.float64)
    v = pd.to_numeric(df[spec.value], errors="coerce").to_numpy(dtype=np.float64)
    return r, np.where(r > 0, v, np.nan)


def _row_name(df: pd.DataFrame, spec: FileSpec, i: int) -> str:
    return f"row {i} ({spec.id}={df[spec.id].iloc[i]!r})" if spec.id and spec.id in df.columns else f"row {i}"


def _check_structure(df: pd.DataFrame, spec: FileSpec, y: Optional[np.ndarray], problems: list[str]):
    """Check the response and value columns and the accounting; returns the profit the job will use
    (the outcome column's when given and reproduced, the accounting's when no outcome is given) or None.

    With an outcome column, the accounting must reproduce it row by row (ACCOUNTING_ATOL / RTOL): else
    one problem names the first rows that disagree with both values."""
    from coarse_gpu.data.accounting import AccountingError

    r = _check_numeric(df[spec.response], spec.response, "response", problems)
    if r is not None and np.any(r < 0):
        problems.append(f"response column '{spec.response}': {int((r < 0).sum())} row(s) are negative "
                        f"({_example(df[spec.response], r < 0)}); a response is a 0/1 purchase or a count")
        r = None
    if r is None:
        return y
    v, bad = _numeric(df[spec.value])
    buyers = r > 0
    wrong = buyers & ~(np.isfinite(v) & (v > 0))
    if (bad & buyers).any() or wrong.any():
        mask = wrong | (bad & buyers)
        problems.append(f"value column '{spec.value}': {int(mask.sum())} row(s) with a response have no positive "
                        f"value ({_example(df[spec.value], mask)}); it may be empty only where response = 0")
        return y
    T = df[spec.treatment].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(T)):
        return y  # the treatment checks report it
    try:
        pi = spec.accounting().profit(r, np.where(buyers, v, np.nan), T)
    except AccountingError as err:
        problems.append(str(err))
        return y
    if not spec.outcome:
        return pi
    if y is None:
        return None
    y = _profit_column(df, spec)
    off = np.flatnonzero(~np.isclose(pi, y, rtol=ACCOUNTING_RTOL, atol=ACCOUNTING_ATOL))
    if off.size:
        shown = "; ".join(f"{_row_name(df, spec, int(i))}: accounting {pi[i]:.6g}, '{spec.outcome}' {y[i]:.6g}"
                          for i in off[:3])
        problems.append(f"the accounting does not reproduce the profit column '{spec.outcome}' in {off.size} row(s) "
                        f"(first: {shown}); check data.margin, data.cost_per_response, data.cost_per_customer "
                        f"(profit = {spec.response} * ({spec.value} * margin - cost_per_response) - cost_per_customer)")
    return y
