"""The Python API's argument coercion and checks (``CoarsePersonalizer``, coarse_gpu.api): features as
a DataFrame, a column of N values, the treatment as named columns (labels to codes, columns matched by
name), treatments inside the arms' range, the number checks of the constructor's arguments, and the
segments an evaluation cannot support. Every failure is a one-line ValueError naming the argument.
"""
from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

#: Treatment column names given to arrays (no names of their own): d = 1, d > 1.
_ONE, _MANY = "treatment", "t{}"


def _frame(X) -> pd.DataFrame:
    """X as a DataFrame with a fresh 0..N-1 index: rows pair with the other arguments by position."""
    if isinstance(X, pd.DataFrame):  # column names as strings: the data checks and the schema name them so
        return X.reset_index(drop=True).rename(columns=str)
    a = np.asarray(X)
    if a.ndim != 2:
        raise ValueError(f"X must be a DataFrame or an (N, p) array, got shape {a.shape}")
    return pd.DataFrame(a, columns=[f"x{j}" for j in range(a.shape[1])])


def _column(v, name: str, n: int) -> np.ndarray:
    """A per-row argument (y, propensity) as a 1-D array of N entries, by position (values checked later
    by the data checks, which name it)."""
    a = v.to_numpy() if isinstance(v, (pd.Series, pd.DataFrame)) else np.asarray(v)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (N,), got shape {a.shape}")
    if a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} rows but X has {n}")
    return a


def _treatment_frame(treatment, n: int, arg: str = "treatment") -> tuple[pd.DataFrame, bool]:
    """(the treatment as an (N, d) DataFrame with a fresh index, whether its columns carry names: a
    DataFrame or a named Series)."""
    if isinstance(treatment, pd.DataFrame):
        t, named = treatment.reset_index(drop=True), True
        t.columns = [str(c) for c in t.columns]
    elif isinstance(treatment, pd.Series):
        named = treatment.name is not None
        t = treatment.reset_index(drop=True).to_frame(name=str(treatment.name) if named else _ONE)
    else:
        try:
            a = np.asarray(treatment, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{arg} must be numbers (one column per treatment dimension, e.g. the discount): "
                             f"{err}") from None
        a = a[:, None] if a.ndim == 1 else a
        if a.ndim != 2:
            raise ValueError(f"{arg} must be (N,) or (N, d), got shape {a.shape}")
        t = pd.DataFrame(a, columns=[_ONE] if a.shape[1] == 1 else [_MANY.format(j) for j in range(a.shape[1])])
        named = False
    if len(t) != n:
        raise ValueError(f"{arg} has {len(t)} rows but X has {n}")
    return t, named


def _by_name(t: pd.DataFrame, named: bool, names: list[str], arg: str, kinds: Sequence[dict] = ()) -> np.ndarray:
    """(N, d) float treatments in the fitted column order ``names``: a named frame is reordered by name
    (other names are an error listing both); an unnamed one must have d columns. ``kinds`` (the policy's
    per-dimension records, policy.io): a categorical dimension's labels become its codes."""
    given = list(t.columns)
    if named and given != names:
        if sorted(given) != sorted(names):
            hint = " (the model was fitted on an array: pass an array with the columns in that order)" \
                if names == [_ONE] or names == [_MANY.format(j) for j in range(len(names))] else ""
            raise ValueError(f"{arg} columns {given} do not match the fitted treatment columns {names}{hint}")
        t = t[names]
    if t.shape[1] != len(names):
        raise ValueError(f"{arg} has {t.shape[1]} column(s) but the policy was fitted on {len(names)}: {names}")
    t = _label_codes(t, kinds, arg)
    try:
        return t.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{arg} must be numbers: {err}") from None


def _label_codes(t: pd.DataFrame, kinds: Sequence[dict], arg: str) -> pd.DataFrame:
    """``t`` (N, d) with each categorical dimension's labels replaced by their codes 0..L-1 (the model's
    treatment values); a label the experiment did not have is an error naming the column and the label."""
    t = t.copy()
    for j, rec in enumerate(kinds or ()):
        if rec.get("kind") != "categorical" or "labels" not in rec:
            continue
        code = {str(lab): i for i, lab in enumerate(rec["labels"])}
        col = t.iloc[:, j].astype(str)
        unknown = sorted(set(col) - set(code))
        if unknown:
            raise ValueError(f"{arg} column '{rec['name']}' has label(s) {unknown[:3]} that the experiment did not "
                             f"have; its labels are {list(code)}")
        t[t.columns[j]] = col.map(code).to_numpy(dtype=np.float64)
    return t


def _check_range(T: np.ndarray, arms: np.ndarray, names: list[str], what: str, hint: str = "") -> None:
    """Every treatment of T (M, d) inside the trained range (per dimension, the arms' min..max); else a
    ValueError naming the row, the dimension and the value (then ``hint``)."""
    lo, hi = arms.min(0), arms.max(0)
    bad = ~((T >= lo) & (T <= hi))  # NaN is outside too
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"{what}[{i}] has {names[j]} = {T[i, j]:g}, outside the trained range [{lo[j]:g}, {hi[j]:g}] "
                         f"of '{names[j]}' (the arms of the experiment); {int(bad.any(1).sum())} treatment(s) are "
                         f"outside it. The model has no data there{hint}")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(float(v))


def _unsupported_segments(kappa: np.ndarray, seg: np.ndarray, arm: np.ndarray, treatments: np.ndarray,
                          names: list[str]) -> None:
    """Refuse a DR value that rests on extrapolation alone: a segment whose treatment's interpolation
    weight (kappa (K, A), on the arms) falls entirely on arms that none of the rows received gets no
    residual correction, so its part of the value would be the model's guess at propensity 1."""
    received = np.bincount(arm, minlength=kappa.shape[1]) > 0
    for k in np.unique(seg):
        if not np.any(kappa[k, received] > 0):
            on = np.flatnonzero(kappa[k] > 0)
            t = ", ".join(f"{n}={v:g}" for n, v in zip(names, treatments[k]))
            raise ValueError(f"segment {k} (treatment {t}) is assigned {int(np.sum(seg == k))} of the {seg.size} "
                             f"rows, but none of the rows received the arm(s) {on.tolist()} its value rests on: "
                             "the doubly robust value would be the model's extrapolation alone. Evaluate on a "
                             "randomized sample that received those arms")


#: The CLI's keys as the API's arguments name them, in the job's messages (longest first).
_API_WORDS = (("data.eval_fraction", "eval_fraction"), ("model.n_folds", "n_folds"), ("evaluation.", ""),
              ("data.", ""))


def _api_words(message: str) -> str:
    """A message of the job's config checks in the API's words: its argument names, no "config error: "."""
    text = message[len("config error: "):] if message.startswith("config error: ") else message
    for cli, api in _API_WORDS:
        text = text.replace(cli, api)
    return text


def _run_folder(run_dir) -> Path:
    """``run``'s folder, checked (and created) before any work: a folder (not a file) that we can write in and
    that holds no earlier run's results.json, which is never overwritten."""
    folder = Path(run_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"run_dir={str(folder)!r} is a file, not a folder")
    if (folder / "results.json").exists():
        raise ValueError(f"run_dir={str(folder)!r} already holds a run (results.json); pass a new folder (nothing "
                         "in it was changed)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"run_dir={str(folder)!r} cannot be created: {err.strerror or err}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"run_dir={str(folder)!r} is not writable")
    return folder
