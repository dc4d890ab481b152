"""``FeatureSchema``: the exact recipe from raw feature columns to the model matrix, saved with every
policy so that new customers are encoded the same way, and the row-level issues it reports.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from coarse_gpu.data.file_spec import MAX_ABS_VALUE, DataSchemaError
from coarse_gpu.data.frame_checks import _numeric, _too_large

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
