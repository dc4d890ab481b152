"""The checks a policy folder passes on load, before any of it is used: bounded reads, the weights
file's path and names, each saved rule's arrays and their shapes, the fitted names a file may set,
the dose record and the treatment kinds. Every failure is a ``PolicyFileError`` naming the file and
the field (coarse_gpu.policy.io loads through these).
"""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from coarse_gpu.data.dose_design import UniformDoseDesign
from coarse_gpu.data.file import FeatureSchema
from coarse_gpu.data.treatments import KINDS
from coarse_gpu.policy.rules import RULES


class PolicyFileError(ValueError):
    """A policy file is missing, corrupt, truncated, of another format, or does not fit the data."""


#: Upper bounds checked before a byte is read (a policy's model is a few MB; the default TARNet 0.35 MB).
MAX_WEIGHTS_BYTES = 2 << 30
MAX_POLICY_JSON_BYTES = 64 << 20
#: Fitted attribute names a file may set on a model: public, ending in "_" (sklearn's fitted state);
#: never a dunder or a method name (``__class__``, ``_build_network``, ``predict``).
_FITTED_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*_$")
#: Key of the model-matrix names in the weights file (see save_policy).
_NAMES_KEY = "schema.feature_names"


def _array(v, name: str, ndim: int) -> np.ndarray:
    try:
        a = np.array([[np.nan if x is None else x for x in row] for row in v] if ndim == 2
                     else [np.nan if x is None else x for x in v], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise PolicyFileError(f"policy.json: '{name}' is not a numeric {ndim}-D array") from err
    if a.ndim != ndim:
        raise PolicyFileError(f"policy.json: '{name}' must be {ndim}-D, got shape {a.shape}")
    return a


def _read_bounded(path: Path, limit: int, expected: Optional[int], what: str) -> bytes:
    """The bytes of a regular file, its size checked against ``expected`` (if recorded) and ``limit``
    BEFORE reading. A FIFO, a device or a folder is refused without blocking (O_NONBLOCK; the type is
    checked on the opened descriptor, so it cannot change between the check and the read)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as err:
        raise PolicyFileError(f"{what} '{path}' are missing" if what.endswith("weights") else
                              f"{what} '{path}' is missing") from err
    except OSError as err:
        raise PolicyFileError(f"{what} '{path}' cannot be opened: {err.strerror or err}") from err
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise PolicyFileError(f"{what} '{path}' is not a regular file (a FIFO, device or folder); refusing to read it")
    with os.fdopen(fd, "rb") as fh:
        if expected is not None and st.st_size != expected:
            raise PolicyFileError(f"{what} '{path}' are corrupt or truncated: {st.st_size} bytes, policy.json "
                                  f"records {expected}")
        if st.st_size > limit:
            raise PolicyFileError(f"{what} '{path}' has {st.st_size} bytes, more than the {limit}-byte limit; "
                                  "refusing to read it")
        blob = fh.read(st.st_size + 1)
    if len(blob) != st.st_size:
        raise PolicyFileError(f"{what} '{path}' changed size while it was read; retry when it is complete")
    return blob


def _weights_path(folder: Path, name: Any, pj: Path) -> Path:
    """``model.weights``: a plain file name whose real path lies in the policy folder."""
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\x00" in name
            or os.path.isabs(name)):
        raise PolicyFileError(f"policy file '{pj}': model.weights must be a plain file name inside the policy folder, "
                              f"got {name!r}; refusing to read it")
    wpath = folder / name
    real = wpath.resolve()
    if real.parent != folder.resolve():
        raise PolicyFileError(f"policy weights '{wpath}' are a link to '{real}', outside the policy folder; "
                              "refusing to read it")
    return wpath


def _trained_names(t: Optional[torch.Tensor], wpath: Path) -> Optional[list[str]]:
    """The model-matrix names stored with the weights (None for policies saved before they were)."""
    if t is None:
        return None
    try:
        names = json.loads(bytes(t.numpy().astype(np.uint8).tolist()).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise PolicyFileError(f"policy weights '{wpath}': the stored feature names are corrupt") from err
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        raise PolicyFileError(f"policy weights '{wpath}': the stored feature names are not a list of names")
    return names


#: The arrays each rule needs, with their shapes: K treatments, d treatment dimensions, p model-matrix
#: columns; M (candidates), q (profile dimensions) and n (tree nodes) are bound by the first array that
#: has them. "+" marks arrays that must be positive, "?" optional ones; centroid rows may be all NaN
#: (empty segments) but not partly.
def _rule_params(rule: str, raw: Any, K: int, d: int, p: int, where: str) -> dict[str, np.ndarray]:
    """Parse and shape-check the rule's arrays (``AssignRule.params``); PolicyFileError naming the first bad one."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PolicyFileError(f"{where}: 'rule_params' must be an object, got {type(raw).__name__}")
    dims = {"K": K, "d": d, "p": p}
    out: dict[str, np.ndarray] = {}
    for spec, shape in RULES[rule].params.items():
        name = spec.rstrip("+?")
        if name not in raw:
            if spec.endswith("?") and not (name == "components" and "pca_mean" in raw):
                continue
            raise PolicyFileError(f"{where}: rule '{rule}' needs rule_params.{name}")
        a = _array(raw[name], f"rule_params.{name}", len(shape))
        if name == "centroids" and rule == "profile_centroid" and "q" not in dims:
            dims["q"] = dims["M"]  # no principal components: the profile is the M candidates' profits
        want = tuple(dims.setdefault(s, a.shape[i]) for i, s in enumerate(shape))
        if a.shape != want:
            raise PolicyFileError(f"{where}: rule_params.{name} has shape {a.shape}, expected {want} "
                                  f"({' x '.join(shape)}; K={K}, d={d}, p={p})")
        if name == "centroids":
            part = np.isnan(a).any(1) & ~np.isnan(a).all(1)
            if part.any() or np.isinf(a).any() or np.isnan(a).all():
                raise PolicyFileError(f"{where}: rule_params.centroids must be finite rows (all-NaN rows = empty "
                                      "segments, not every row)")
        elif not np.all(np.isfinite(a)) or (spec.endswith("+") and not np.all(a > 0)):
            raise PolicyFileError(f"{where}: rule_params.{name} must be finite{' and positive' if spec.endswith('+') else ''}")
        out[name] = a
    problem = RULES[rule].check(out, K, p) if RULES[rule].check is not None else None
    if problem is not None:
        raise PolicyFileError(f"{where}: {problem}")
    return out


def _check_fitted_names(meta: dict, tensors: dict[str, torch.Tensor], pj: Path) -> None:
    """Every attribute the model metadata would set (``fitted`` / ``tuples`` entries at any depth, the
    ``fitted.<name>`` tensors) must look like fitted state (_FITTED_NAME): a file cannot replace a
    model's class, methods or private state through setattr."""
    names: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, v in node.items():
                if key in ("fitted", "tuples") and isinstance(v, dict):
                    names.extend(str(x) for x in v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(meta)
    names += [k.rsplit("fitted.", 1)[1] for k in tensors if k.startswith("fitted.") or ".fitted." in k]
    odd = sorted({x for x in names if not _FITTED_NAME.match(x)})
    if odd:
        raise PolicyFileError(f"policy file '{pj}': the model metadata sets attributes {odd} that are not fitted "
                              "state; refusing to load it")


def _policy_fields(doc: dict, pj: Path) -> dict:
    """Validate policy.json's fields (not the model): types, the (K, d) treatments, the rule and its
    arrays, the feature schema. Returns them parsed."""
    where = f"policy file '{pj}'"
    for key in ("method", "treatment_names", "treatments", "rule", "feature_schema", "model"):
        if key not in doc:
            raise PolicyFileError(f"{where} lacks the key '{key}'")
    names = doc["treatment_names"]
    if (not isinstance(names, list) or not names or not all(isinstance(x, str) for x in names)
            or len(set(names)) != len(names)):
        raise PolicyFileError(f"{where}: 'treatment_names' must be a non-empty list of distinct names, got {names!r}")
    treatments = _array(doc["treatments"], "treatments", 2)
    K, d = treatments.shape
    if K < 1 or d != len(names) or not np.all(np.isfinite(treatments)):
        raise PolicyFileError(f"{where}: 'treatments' must be a finite K x d array with d = len(treatment_names) = "
                              f"{len(names)}, got shape {treatments.shape}" + ("" if K < 1 or d != len(names) else
                                                                               " with non-finite entries"))
    if "k" in doc and doc["k"] != K:
        raise PolicyFileError(f"{where}: 'k' = {doc['k']!r} but 'treatments' has {K} rows")
    if doc["rule"] not in RULES:
        raise PolicyFileError(f"{where}: unknown assignment rule {doc['rule']!r}; known: {list(RULES)}")
    if not isinstance(doc["method"], str) or not isinstance(doc["model"], dict):
        raise PolicyFileError(f"{where}: 'method' must be a string and 'model' an object")
    if doc.get("id_column") is not None and not isinstance(doc["id_column"], str):
        raise PolicyFileError(f"{where}: 'id_column' must be a column name or null")
    if not isinstance(doc["feature_schema"], dict):
        raise PolicyFileError(f"{where}: 'feature_schema' must be an object")
    try:
        schema = FeatureSchema.from_dict(doc["feature_schema"])
    except ValueError as err:
        raise PolicyFileError(f"{where}: {err}") from err
    params = _rule_params(doc["rule"], doc.get("rule_params"), K, d, len(schema.names), where)
    metrics = doc.get("metrics") or {}
    constraints = doc.get("constraints") or {}
    if not isinstance(constraints, dict):
        raise PolicyFileError(f"{where}: 'constraints' must be an object or null")
    return {"method": doc["method"], "treatments": treatments, "treatment_names": list(names), "rule": doc["rule"],
            "feature_schema": schema, "params": params, "id_column": doc.get("id_column"),
            "metrics": metrics if isinstance(metrics, dict) else {}, "constraints": constraints,
            "treatment_kinds": _treatment_kinds(doc.get("treatment_kinds"), names, treatments, where),
            "dose": _dose_record(doc.get("dose"), len(names), where)}


def _dose_record(raw: Any, d: int, where: str) -> dict:
    """policy.json's "dose": absent or null (arms-based and older policies) = {}; else the trained dose
    range low <= high, d finite numbers each, and the declared design (an object) or null."""
    if not raw:
        return {}
    try:
        low, high = (np.asarray(raw[key], dtype=np.float64) for key in ("low", "high"))
    except (KeyError, TypeError, ValueError):
        raise PolicyFileError(f"{where}: 'dose' must be {{\"low\": [{d} numbers], \"high\": [{d} numbers], "
                              f"\"design\": object or null}}, got {raw!r}") from None
    if low.shape != (d,) or high.shape != (d,) or not np.all(np.isfinite(low) & np.isfinite(high) & (low <= high)):
        raise PolicyFileError(f"{where}: 'dose' needs finite low <= high with {d} entries each, got {raw!r}")
    design = raw.get("design")
    if design is not None:
        try:
            UniformDoseDesign.from_meta(design)
        except (ValueError, KeyError, TypeError) as err:
            raise PolicyFileError(f"{where}: 'dose'.'design' is not a dose design: {err}") from None
    return {"low": low.tolist(), "high": high.tolist(), "design": design}


def _treatment_kinds(raw: Any, names: list[str], treatments: np.ndarray, where: str) -> list:
    """policy.json's "treatment_kinds": absent or empty (older policies) = all continuous; else one
    {name, kind, labels} per treatment dimension, in order; a categorical dimension's treatments must be
    codes of its labels (the range check against the model's arms covers the other kinds)."""
    if not raw:
        return []
    if not isinstance(raw, list) or len(raw) != len(names):
        raise PolicyFileError(f"{where}: 'treatment_kinds' must list one entry per treatment dimension {names}")
    out = []
    for j, (rec, name) in enumerate(zip(raw, names)):
        if not isinstance(rec, dict) or rec.get("name") != name or rec.get("kind") not in KINDS:
            raise PolicyFileError(f"{where}: 'treatment_kinds'[{j}] must be {{\"name\": {name!r}, \"kind\": one of "
                                  f"{list(KINDS)}}}, got {rec!r}")
        if rec["kind"] == "categorical":
            labels = rec.get("labels")
            codes = treatments[:, j]
            if not isinstance(labels, list) or len(labels) < 2 or len(set(map(str, labels))) != len(labels):
                raise PolicyFileError(f"{where}: categorical treatment '{name}' needs its distinct 'labels', got "
                                      f"{labels!r}")
            if np.any(codes != np.round(codes)) or codes.min() < 0 or codes.max() > len(labels) - 1:
                raise PolicyFileError(f"{where}: categorical treatment '{name}' holds {codes.tolist()}, which are not "
                                      f"codes 0..{len(labels) - 1} of its labels {labels}")
        out.append(dict(rec))
    return out


def _check_treatment_range(treatments: np.ndarray, names: list[str], arms: np.ndarray, pj: Path) -> None:
    """Every treatment (K, d) lies in the range of the arms the model was trained on (A, d), checked on
    each side of each dimension separately: an edited treatment outside it would be predicted as if
    clipped to the range while the scorer wrote the edited value."""
    lo, hi = arms.min(0), arms.max(0)
    tol = 1e-9 * np.maximum(1.0, np.maximum(np.abs(lo), np.abs(hi)))
    for side, bad in (("below", treatments < lo - tol), ("above", treatments > hi + tol)):
        if bad.any():
            k, j = (int(i) for i in np.argwhere(bad)[0])
            raise PolicyFileError(
                f"policy file '{pj}': treatment '{names[j]}' of segment {k} is {treatments[k, j]:g}, {side} the "
                f"range [{lo[j]:g}, {hi[j]:g}] of the arms the model was trained on ({int(bad.sum())} value(s) "
                "outside it); the model cannot predict there: refusing to assign an edited policy")
