"""The checks of ``data=file`` before any work: every problem of a table found at once, each naming the
column, the rows and an example value (``check_frame``), and the named warnings.

Part of coarse_gpu.data.file; see that module's docstring for the list of checks.
"""
from __future__ import annotations

import logging
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from coarse_gpu.data.accounting import AccountingError
from coarse_gpu.data.file_spec import (
    ACCOUNTING_ATOL,
    ACCOUNTING_RTOL,
    MAX_ABS_VALUE,
    MAX_LEVELS,
    DataSchemaError,
    FileSpec,
)
from coarse_gpu.data.table_io import duplicate_columns
from coarse_gpu.data.treatments import KINDS

_log = logging.getLogger("coarse_gpu.data.file")

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
