"""The policy as a portable artifact: save it, load it without pickle, assign new customers.

On-disk format (``FORMAT = "coarse_gpu.policy/1"``): a folder, e.g. ``policies/ot_k5/``, holding

  policy.json                 everything but the network weights, human-readable JSON:
      format, method, k, treatment_names, treatments (K x d), rule (how new customers are assigned,
      below), rule parameters (centroids, standardization, candidates), feature_schema (raw
      feature columns, categorical levels, model-matrix names), id_column, model (class name,
      hyperparameters, fitted scalars, weights file name and its sha256), metrics (the run's
      DR value etc.), constraints (the discretizer's side constraints: config keys, costs used, each
      one's value, bounds and dual multiplier; {} without any), treatment_kinds (per dimension its
      name, kind and, for a categorical one, its labels: the treatments hold codes into them; absent in
      older policies = every dimension continuous), treatments_labelled (the treatments in the user's
      labels and types, for a reader), dose (a policy fitted on a continuously randomized dose: the
      trained dose range "low" / "high" (d,) and the declared "design" or null, what the kernel-DR
      evaluation of new rows needs; null or absent in arms-based and older policies), created.
  model-<sha16>.safetensors   the CATE model: network weights ("network.<name>") and fitted arrays
                              ("fitted.<name>": arms, feature means / scales, ...). safetensors holds
                              raw tensors only: loading it executes no code.

Writes are atomic: the weights file is content-addressed and written first (temp file + rename),
then policy.json (temp file + rename) points at it, then weights files no longer referenced are
removed. A process killed at any moment leaves the previous complete policy or the new one.

Assignment rules for new customers x (pi_hat = the saved model's estimated profit):
  argmax            segment = argmax_k pi_hat(x, tau_k)  (ot, grid, single_best). With share
                    bounds or side constraints in the run (recorded under "constraints"), they are not
                    re-imposed on new customers.
  feature_centroid  k-means on characteristics: nearest centroid of the standardized model matrix
                    (centroids = the fitted k-means centers, centre / scale from the customers the
                    policy was built on).
  preference_centroid  k-means on preferences: the customer's estimated ideal candidate
                    t* = argmax_m pi_hat(x, c_m), divided by ``scale``, to the nearest centroid.
  profile_centroid  k-means on estimated effects: the customer's profit vector at the candidates,
                    standardized with the stored means / scales and projected on the stored
                    principal components (if any), to the nearest centroid.
  tree              policy tree: the stored splits (feature index in the model matrix, threshold,
                    children) and each leaf's slot (``coarse_gpu.policy.tree.apply_tree``).
The rules live in ``policy/rules.py`` (``RULES``): each says which fitted arrays of the baseline's
estimator it stores (``rule_of``: the same arrays its ``assign`` uses), their shapes (checked on load) and
how it assigns new customers, so a saved policy is never refitted and gives back the estimator's own
segments, and this module holds no per-method code. A baseline's class names its rule (``saved_rule``);
one that names None (full personalization) is not saved: ``deployable`` raises NotImplementedError and
the run records ``policy_path: null``.
predicted_profit = pi_hat(x, tau_segment), in the outcome's (profit) units.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from coarse_gpu.data.file import DataSchemaError, FeatureSchema, RowTally
from coarse_gpu.data.simulator import CATEGORICAL
from coarse_gpu.data.treatments import user_value
from coarse_gpu.models.serialize import MODEL_CLASSES, ModelStateError, from_state, to_state
from coarse_gpu.policy.estimator import BASELINE_CLASSES
from coarse_gpu.policy.load_checks import (
    _NAMES_KEY,
    MAX_POLICY_JSON_BYTES,
    MAX_WEIGHTS_BYTES,
    PolicyFileError,
    _check_fitted_names,
    _check_treatment_range,
    _policy_fields,
    _read_bounded,
    _trained_names,
    _weights_path,
)
from coarse_gpu.policy.policy import Policy
from coarse_gpu.policy.rules import RULES
from coarse_gpu.utils.io import atomic_write_bytes, atomic_write_json

__all__ = ["FORMAT", "MAX_POLICY_JSON_BYTES", "MAX_WEIGHTS_BYTES", "MODEL_CLASSES", "DeployedPolicy",
           "PolicyFileError", "deployable", "feature_schema_of", "load_model", "load_policy", "model_tensors",
           "rule_of", "save_policy"]

FORMAT = "coarse_gpu.policy/1"
#: Methods whose in-sample assignment is each customer's best of the K treatments.
ARGMAX_METHODS = ("ot", "grid", "single_best")
#: Rows per block when assigning (memory ~ rows x max(A, M) float64 whatever N is).
ASSIGN_CHUNK = 65536




# ---------------------------------------------------------------------------------------------
# the model <-> tensors + JSON
# ---------------------------------------------------------------------------------------------
def model_tensors(model) -> tuple[dict[str, torch.Tensor], dict]:
    """A fitted CATE model (any registered kind: network, boosted trees, ensemble, cross-fitted folds)
    as (tensors, JSON metadata); see coarse_gpu.models.serialize."""
    return to_state(model)


def load_model(tensors: dict[str, torch.Tensor], meta: dict, device: str = "cpu"):
    """Rebuild a fitted model from ``model_tensors`` output (registered coarse_gpu.models classes only)."""
    try:
        return from_state(tensors, meta, device=device)
    except ModelStateError as err:
        raise PolicyFileError(str(err)) from err


# ---------------------------------------------------------------------------------------------
# the deployable policy
# ---------------------------------------------------------------------------------------------
@dataclass
class DeployedPolicy:
    """A policy that can assign customers it has never seen.

    method : "ot", "kmeans_features", ... ; treatments : (K, d) in treatment units, columns named
    ``treatment_names``; rule : one of RULES (module docstring); model : the fitted CATE model;
    feature_schema : raw columns -> model matrix; params : the rule's arrays (centroids (K, q),
    center / scale (q,), candidates (M, d), pref_scale (d,)); id_column : the training id column.
    """

    method: str
    treatments: np.ndarray
    treatment_names: list[str]
    rule: str
    model: Any
    feature_schema: FeatureSchema
    params: dict = field(default_factory=dict)
    id_column: Optional[str] = None
    metrics: dict = field(default_factory=dict)
    # the run's side constraints on the assignment ({"spec": config keys and costs, "rows": per constraint
    # its value, bounds and dual}); empty without any. New customers are not re-priced by them.
    constraints: dict = field(default_factory=dict)
    # per treatment dimension {"name", "kind", "labels" (categorical only)} (TreatmentSpace.describe);
    # empty: every dimension continuous (policies saved before kinds existed)
    treatment_kinds: list = field(default_factory=list)
    # a continuously randomized dose: {"low": (d,), "high": (d,) the trained dose range, "design": the
    # declared design's meta (coarse_gpu.data.dose_design) or None}; empty: an arms-based policy
    dose: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.treatments.shape[0])

    def user_values(self, j: int, values: np.ndarray) -> np.ndarray:
        """Column j of internal treatment values (N,) in the user's labels and types: the labels of a
        categorical dimension (object array), ints for a discrete one, floats otherwise."""
        v = np.asarray(values, dtype=np.float64)
        if not self.treatment_kinds or self.treatment_kinds[j]["kind"] == "continuous":
            return v
        rec = self.treatment_kinds[j]
        levels = np.unique(v)
        user = [user_value(x, rec["kind"], rec.get("labels")) for x in levels]
        if rec["kind"] == "discrete" and all(isinstance(u, int) for u in user):
            return v.astype(np.int64)
        out = np.empty(v.shape[0], dtype=object)
        idx = np.searchsorted(levels, v)
        for i, u in enumerate(user):
            out[idx == i] = u
        return out

    @property
    def treatments_labelled(self) -> list[list]:
        """The K treatments in the user's values (see ``user_values``), JSON-ready."""
        cols = [self.user_values(j, self.treatments[:, j]).tolist() for j in range(self.treatments.shape[1])]
        return [list(row) for row in zip(*cols)]

    def assign_matrix(self, X: np.ndarray, chunk_rows: int = ASSIGN_CHUNK) -> tuple[np.ndarray, np.ndarray]:
        """(segment (N,) int64 in [0, K), predicted profit (N,) float64) for a model matrix X (N, p)."""
        X = np.asarray(X)
        n = X.shape[0]
        if self.rule not in RULES:
            raise PolicyFileError(f"unknown assignment rule {self.rule!r}; known: {list(RULES)}")
        rule = RULES[self.rule]  # policy/rules.py: how this policy's baseline assigns new customers
        seg = np.empty(n, dtype=np.int64)
        prof = np.empty(n, dtype=np.float64)
        for s in range(0, n, chunk_rows):
            xb = X[s: s + chunk_rows]
            p_k = self.model.predict_profit(xb, self.treatments)  # (b, K)
            lab = rule.assign(self.model, xb, self.params, p_k)
            seg[s: s + chunk_rows] = lab
            prof[s: s + chunk_rows] = p_k[np.arange(lab.shape[0]), lab]
        return seg, prof

    def assign(self, features: pd.DataFrame, ids=None, chunk_rows: int = ASSIGN_CHUNK,
               source: str = "the data", offset: int = 0) -> pd.DataFrame:
        """Assignment table for raw feature rows: [id], segment, one column per treatment dimension,
        predicted_profit. ``offset``: the first row's number in its file (for error messages)."""
        X = self.feature_schema.transform(features, source, offset)
        seg, prof = self.assign_matrix(X, chunk_rows)
        out = {}
        if ids is not None:
            out[ids.name if hasattr(ids, "name") and ids.name else (self.id_column or "id")] = np.asarray(ids)
        out["segment"] = seg
        for j, name in enumerate(self.treatment_names):  # the user's labels and types (policy's kinds)
            out[name] = self.user_values(j, self.treatments[seg, j])
        out["predicted_profit"] = prof
        return pd.DataFrame(out)


def feature_schema_of(data) -> FeatureSchema:
    """The FeatureSchema of an ExperimentData (stored in ``meta`` for file data; rebuilt otherwise)."""
    if "feature_schema" in data.meta:
        return FeatureSchema.from_dict(data.meta["feature_schema"])
    schema = FeatureSchema.fit(data.features, levels=CATEGORICAL)
    if schema.names != list(data.feature_names):
        raise ValueError(f"cannot rebuild the feature schema: {schema.names} != {data.feature_names}")
    return schema


def rule_of(estimator) -> tuple[str, dict]:
    """(rule, rule parameters) of a fitted baseline estimator: the rule its class declares
    (``saved_rule``, policy/rules.py) and the fitted arrays that rule stores, so the saved policy assigns
    new customers exactly as ``estimator.assign`` does, and nothing is refitted."""
    name = getattr(type(estimator), "saved_rule", None)
    if name is None:
        raise NotImplementedError(f"no assignment rule for new customers is defined for method "
                                  f"{estimator.policy_name!r} ({type(estimator).__name__}.saved_rule is None)")
    if name not in RULES:
        raise ValueError(f"{type(estimator).__name__}.saved_rule={name!r} is not a registered rule "
                         f"(coarse_gpu.policy.rules.register_rule); known: {list(RULES)}")
    rule = RULES[name]
    return name, (rule.state(estimator) if rule.state is not None else {})


def deployable(policy: Policy, model, data, candidates: np.ndarray, X: Optional[np.ndarray] = None,
               profit=None, metrics: Optional[dict] = None) -> DeployedPolicy:
    """A DeployedPolicy from a pipeline Policy and the model that scores new customers.

    ot, grid, single_best: the argmax rule. A baseline whose estimator class declares a rule of its own
    (``saved_rule``, policy/rules.py) saves the fitted state of the estimator that built the policy
    (``policy.estimator``, ``rule_of``): k-means centers, standardization, principal components, tree. ``candidates`` (M, d) are those the
    policy was built on; X (N, p) and profit (N, M) are not read (nothing is refitted; they stay in the
    signature for existing callers).
    """
    method = policy.name
    params: dict = {}
    baseline = BASELINE_CLASSES.get(method)  # the estimator class that builds this method's policies
    if method in ARGMAX_METHODS:
        rule = "argmax"
    elif baseline is not None and baseline.saved_rule is not None:
        est = policy.estimator
        if est is None or getattr(est, "policy_", None) is not policy:
            raise ValueError(f"policy '{method}' carries no fitted estimator (policy.estimator); build it with the "
                             f"baseline's estimator or function (coarse_gpu.policy) to save it")
        rule, params = rule_of(est)
        if "candidates" in params and params["candidates"].shape[0] != len(candidates):
            raise ValueError(f"policy '{method}' was fitted on {params['candidates'].shape[0]} candidates, "
                             f"not the {np.shape(candidates)[0]} given")
    else:
        raise NotImplementedError(f"no assignment rule for new customers is defined for method {method!r}; "
                                  f"savable: {list(ARGMAX_METHODS)} and the baselines whose estimator class "
                                  "declares a saved_rule (coarse_gpu.policy.rules)")
    id_col = None
    if "feature_schema" in data.meta and data.meta.get("ids") is not None:
        id_col = data.meta.get("id_column")
    return DeployedPolicy(method, np.asarray(policy.treatments, dtype=np.float64), list(data.space.names), rule,
                          model, feature_schema_of(data), params, id_col, dict(metrics or {}),
                          dict(policy.info.get("constraints") or {}),
                          data.space.describe() if data.space.kinds is not None else [], _dose_of(data))


def _dose_of(data) -> dict:
    """DeployedPolicy.dose of the data a policy was fitted on: {} unless a continuously randomized dose."""
    meta = getattr(data, "meta", None) or {}
    if not meta.get("continuous_dose"):
        return {}
    return {"low": [float(v) for v in data.space.low], "high": [float(v) for v in data.space.high],
            "design": meta.get("dose_design")}


# ---------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------
def _same_file(path: Path, size: int, digest: str) -> bool:
    try:
        return path.is_file() and path.stat().st_size == size and hashlib.sha256(path.read_bytes()).hexdigest() == digest
    except OSError:
        return False


def _write_weights(folder: Path, weights: str, blob: bytes, digest: str) -> None:
    """The weights file, written atomically -- or hard-linked from a sibling policy folder that holds
    the same bytes: a run saves every method and K with the same model (a cross-fitted ensemble is
    MBs), and a hard link keeps each folder self-contained (copying it copies the file) at no cost."""
    target = folder / weights
    if _same_file(target, len(blob), digest):
        return
    for sibling in sorted(folder.parent.glob(f"*/{weights}")):
        if sibling.parent != folder and _same_file(sibling, len(blob), digest):
            tmp = folder / f".{weights}.{os.getpid()}.link"
            try:
                os.link(sibling, tmp)
                os.replace(tmp, target)  # atomic: the name holds the old file or the complete new one
                return
            except OSError:  # no hard links here (another filesystem, FAT): write a copy
                tmp.unlink(missing_ok=True)
                break
    atomic_write_bytes(target, blob)


def save_policy(folder: str | os.PathLike, policy: DeployedPolicy) -> Path:
    """Write ``policy`` into ``folder`` atomically (module docstring); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, model_meta = model_tensors(policy.model)
    # The model-matrix names go into the checksummed weights (as UTF-8 JSON bytes: safetensors' string
    # metadata is a hash map whose order, hence the file's hash, would vary between processes): a
    # policy.json whose feature schema was reordered or edited afterwards is detected on load instead
    # of shifting every input.
    tensors[_NAMES_KEY] = torch.tensor(list(json.dumps(policy.feature_schema.names).encode("utf-8")), dtype=torch.uint8)
    blob = st_save(tensors, metadata={"format": FORMAT})
    digest = hashlib.sha256(blob).hexdigest()
    weights = f"model-{digest[:16]}.safetensors"
    _write_weights(folder, weights, blob, digest)
    doc = {
        "format": FORMAT,
        "method": policy.method,
        "k": policy.k,
        "treatment_names": list(policy.treatment_names),
        "treatments": policy.treatments,
        "rule": policy.rule,
        "rule_params": {k: np.asarray(v) for k, v in policy.params.items()},
        "feature_schema": policy.feature_schema.to_dict(),
        "id_column": policy.id_column,
        "model": {**model_meta, "weights": weights, "sha256": digest, "size": len(blob)},
        "metrics": policy.metrics,
        "constraints": policy.constraints,
        "treatment_kinds": policy.treatment_kinds,
        "dose": policy.dose or None,
        "treatments_labelled": policy.treatments_labelled,  # for a reader; the loader reads "treatments"
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # NaN centroids (empty segments) must survive JSON: store them as null, read back as NaN.
    atomic_write_json(folder / "policy.json", doc)
    for old in folder.glob("model-*.safetensors"):
        if old.name != weights:
            try:
                old.unlink()
            except FileNotFoundError:
                pass
    return folder


def load_policy(folder: str | os.PathLike, device: str = "cpu") -> DeployedPolicy:
    """Load a policy saved by ``save_policy`` (no pickle: JSON + safetensors), treating the folder as
    untrusted input: PolicyFileError names what is wrong (missing file, not a regular file, over the
    size limits, corrupt/truncated JSON or weights, checksum mismatch, a weights name outside the
    folder, other format, malformed fields, a model class outside ``MODEL_CLASSES``, a feature schema
    that does not match the model's inputs)."""
    folder = Path(folder)
    if folder.is_file() and folder.name == "policy.json":
        folder = folder.parent
    pj = folder / "policy.json"
    if not pj.exists():
        raise PolicyFileError(f"no policy at '{folder}': expected a folder with policy.json "
                              "(a run writes them as <run dir>/policies/<method>_k<K>)")
    try:
        doc = json.loads(_read_bounded(pj, MAX_POLICY_JSON_BYTES, None, "policy file").decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PolicyFileError(f"policy file '{pj}' is corrupt or truncated (not valid JSON: {err})") from err
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PolicyFileError(f"policy file '{pj}' has format {doc.get('format') if isinstance(doc, dict) else None!r}; "
                              f"this version reads {FORMAT!r}")
    f = _policy_fields(doc, pj)
    m = doc["model"]
    size = m.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise PolicyFileError(f"policy file '{pj}': model.size must be a byte count, got {size!r}")
    wpath = _weights_path(folder, m.get("weights"), pj)
    blob = _read_bounded(wpath, MAX_WEIGHTS_BYTES, size, "policy weights")
    if hashlib.sha256(blob).hexdigest() != m.get("sha256"):
        raise PolicyFileError(f"policy weights '{wpath}' are corrupt or truncated (sha256 does not match policy.json)")
    try:
        tensors = st_load(blob)
    except (SafetensorError, Exception) as err:
        raise PolicyFileError(f"policy weights '{wpath}' are corrupt or truncated: {err}") from err
    schema = f["feature_schema"]
    trained = _trained_names(tensors.pop(_NAMES_KEY, None), wpath)
    if trained is not None and trained != schema.names:
        raise PolicyFileError(f"policy file '{pj}': feature_schema gives the model inputs {schema.names}, but the "
                              f"weights were trained on {trained} (edited or mixed files); refusing to assign "
                              "with shifted inputs")
    _check_fitted_names(m, tensors, pj)
    model = load_model(tensors, m, device=device)
    if int(model.n_features_in_) != len(schema.names):
        raise PolicyFileError(f"policy file '{pj}': the model takes {int(model.n_features_in_)} inputs but the feature "
                              f"schema produces {len(schema.names)} ({schema.names})")
    arms = np.asarray(model.arms_)
    if arms.ndim != 2 or arms.shape[1] != f["treatments"].shape[1]:
        raise PolicyFileError(f"policy file '{pj}': the model's arms have shape {arms.shape}, but there are "
                              f"{f['treatments'].shape[1]} treatment dimensions {f['treatment_names']}")
    _check_treatment_range(f["treatments"], f["treatment_names"], arms, pj)
    return DeployedPolicy(f["method"], f["treatments"], f["treatment_names"], f["rule"], model, schema,
                          f["params"], f["id_column"], f["metrics"], f["constraints"], f["treatment_kinds"],
                          f["dose"])


def iter_assignments(policy: DeployedPolicy, chunks: Iterator[pd.DataFrame], id_column: Optional[str],
                     source: str, far: Optional[RowTally] = None) -> Iterator[pd.DataFrame]:
    """Assignment tables for successive chunks of raw rows (see DeployedPolicy.assign).

    Every block is checked, and every row that cannot be encoded (unseen level, not numeric, NaN, inf)
    is counted over the WHOLE stream with its absolute row number; they are raised together as one
    DataSchemaError after the last block. No table is yielded from the first bad block on, so a
    caller that writes the tables must discard what it wrote (the CLI writes to a temp file).
    ``far``: receives the rows whose numeric features lie far outside the training range.
    """
    schema = policy.feature_schema
    bad = RowTally()
    offset = 0
    for df in chunks:
        if id_column is not None and id_column not in df.columns:
            raise DataSchemaError([f"id column '{id_column}' is missing from the file; available columns: "
                                   f"{[str(c) for c in df.columns]}"], source)
        if any(c not in df.columns for c in schema.columns):
            schema.transform(df.iloc[:0], source)  # raises: the missing columns, named
        bad.add(schema.row_issues(df, offset))
        if far is not None:
            far.add(schema.range_issues(df, offset))
        if not bad:
            ids = df[id_column] if id_column is not None else pd.Series(np.arange(offset, offset + len(df)), name="row")
            yield policy.assign(df, ids=ids, source=source, offset=offset)
        offset += len(df)
    if bad:
        raise DataSchemaError(bad.messages(), source)
