"""The policy as a portable artifact: save it, load it without pickle, assign new customers.

On-disk format (``FORMAT = "coarse_gpu.policy/1"``): a folder, e.g. ``policies/ot_k5/``, holding

  policy.json                 everything but the network weights, human-readable JSON:
      format, method, k, treatment_names, treatments (K x d), rule (how new customers are assigned,
      below), rule parameters (centroids, standardization, candidates), feature_schema (raw
      feature columns, categorical levels, model-matrix names), id_column, model (class name,
      hyperparameters, fitted scalars, weights file name and its sha256), metrics (the run's
      DR value etc.), created.
  model-<sha16>.safetensors   the CATE model: network weights ("network.<name>") and fitted arrays
                              ("fitted.<name>": arms, feature means / scales, ...). safetensors holds
                              raw tensors only: loading it executes no code.

Writes are atomic: the weights file is content-addressed and written first (temp file + rename),
then policy.json (temp file + rename) points at it, then weights files no longer referenced are
removed. A process killed at any moment leaves the previous complete policy or the new one.

Assignment rules for new customers x (pi_hat = the saved model's estimated profit):
  argmax            segment = argmax_k pi_hat(x, tau_k)  (ot, grid, single_best). With share
                    constraints in the run, shares are not re-imposed on new customers.
  feature_centroid  k-means on characteristics: nearest centroid of the standardized model matrix
                    (centroid = mean of the segment's standardized rows, centre / scale from the
                    customers the policy was built on).
  preference_centroid  k-means on preferences: the customer's estimated ideal candidate
                    t* = argmax_m pi_hat(x, c_m), divided by ``scale``, to the nearest centroid.
  profile_centroid  k-means on estimated effects: the customer's profit vector at the candidates,
                    standardized with the stored means / scales and projected on the stored
                    principal components (if any), to the nearest centroid.
  tree              policy tree: the stored splits (feature index in the model matrix, threshold,
                    children) and each leaf's slot (``coarse_gpu.policy.tree.apply_tree``).
Methods with no rule here are not saved: ``deployable`` raises NotImplementedError and the run
records ``policy_path: null``.
predicted_profit = pi_hat(x, tau_segment), in the outcome's (profit) units.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pandas as pd
import torch

from coarse_gpu.data.file import DataSchemaError, FeatureSchema
from coarse_gpu.policy.policy import Policy
from coarse_gpu.utils.io import atomic_write_bytes, atomic_write_json, to_jsonable

__all__ = ["FORMAT", "DeployedPolicy", "PolicyFileError", "deployable", "feature_schema_of", "load_model",
           "load_policy", "model_tensors", "save_policy"]

FORMAT = "coarse_gpu.policy/1"
RULES = ("argmax", "feature_centroid", "preference_centroid", "profile_centroid", "tree")
#: Methods whose in-sample assignment is each customer's best of the K treatments.
ARGMAX_METHODS = ("ot", "grid", "single_best")
#: Rows per block when assigning (memory ~ rows x max(A, M) float64 whatever N is).
ASSIGN_CHUNK = 65536
#: Model attributes that are rebuilt on load rather than stored.
_REBUILT = ("network_", "grid_", "device_", "history_", "checkpoint_path_")
_NOT_STORED_PARAMS = ("device", "verbose", "checkpoint_dir")


class PolicyFileError(ValueError):
    """A policy file is missing, corrupt, truncated, of another format, or does not fit the data."""


# ---------------------------------------------------------------------------------------------
# the model <-> tensors + JSON
# ---------------------------------------------------------------------------------------------
def model_tensors(model) -> tuple[dict[str, torch.Tensor], dict]:
    """A fitted per-arm CATE model as (tensors, JSON metadata); see ``load_model``."""
    if not hasattr(model, "network_"):
        raise ValueError(f"{type(model).__name__} is not fitted: nothing to save")
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.network_.state_dict().items():
        tensors[f"network.{k}"] = v.detach().cpu().contiguous().clone()
    fitted: dict[str, Any] = {}
    for name, v in vars(model).items():
        if not name.endswith("_") or name.startswith("_") or name in _REBUILT:
            continue
        if isinstance(v, np.ndarray) and v.dtype != object:
            tensors[f"fitted.{name}"] = torch.from_numpy(np.ascontiguousarray(v.astype(np.uint8) if v.dtype == bool else v))
        elif isinstance(v, (bool, int, float, str, np.integer, np.floating, np.bool_)) or v is None:
            fitted[name] = to_jsonable(v)
    cls = type(model)
    params = {k: to_jsonable(v) for k, v in model.get_params().items() if k not in _NOT_STORED_PARAMS}
    meta = {"class": f"{cls.__module__}.{cls.__qualname__}", "params": params, "fitted": fitted}
    return tensors, meta


def load_model(tensors: dict[str, torch.Tensor], meta: dict, device: str = "cpu"):
    """Rebuild a fitted model from ``model_tensors`` output (classes of coarse_gpu.models only)."""
    from coarse_gpu.models.interpolate import ArmGrid
    from coarse_gpu.utils.device import resolve_device

    path = str(meta.get("class", ""))
    mod_name, _, cls_name = path.rpartition(".")
    if not mod_name.startswith("coarse_gpu.models"):
        raise PolicyFileError(f"model class {path!r} is not a coarse_gpu.models class; refusing to load it")
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as err:
        raise PolicyFileError(f"model class {path!r} is not available in this version of coarse_gpu") from err
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters)
    params = {k: v for k, v in meta.get("params", {}).items() if k in accepted}
    model = cls(**params, device=device) if "device" in accepted else cls(**params)
    for name, v in meta.get("fitted", {}).items():
        setattr(model, name, v)
    for key, t in tensors.items():
        if key.startswith("fitted."):
            setattr(model, key[len("fitted."):], t.numpy().copy())
    for need in ("arms_", "n_features_in_", "x_mean_", "x_scale_"):
        if not hasattr(model, need):
            raise PolicyFileError(f"model weights lack the fitted attribute '{need}'")
    model.n_arms_ = int(np.asarray(model.arms_).shape[0])
    try:
        model.grid_ = ArmGrid.from_arms(model.arms_)
    except ValueError:
        model.grid_ = None
    model.device_ = resolve_device(device)
    net = model._build_network(int(model.n_features_in_), model.n_arms_, torch.Generator().manual_seed(0))
    state = {k[len("network."):]: v for k, v in tensors.items() if k.startswith("network.")}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise PolicyFileError(f"model weights do not fit the {cls_name} architecture: {err}") from err
    model.network_ = net.to(model.device_).eval()
    return model


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

    @property
    def k(self) -> int:
        return int(self.treatments.shape[0])

    def assign_matrix(self, X: np.ndarray, chunk_rows: int = ASSIGN_CHUNK) -> tuple[np.ndarray, np.ndarray]:
        """(segment (N,) int64 in [0, K), predicted profit (N,) float64) for a model matrix X (N, p)."""
        X = np.asarray(X)
        n = X.shape[0]
        seg = np.empty(n, dtype=np.int64)
        prof = np.empty(n, dtype=np.float64)
        for s in range(0, n, chunk_rows):
            xb = X[s: s + chunk_rows]
            p_k = self.model.predict_profit(xb, self.treatments)  # (b, K)
            if self.rule == "argmax":
                lab = p_k.argmax(1)
            elif self.rule == "feature_centroid":
                z = (xb.astype(np.float64) - self.params["center"]) / self.params["scale"]
                lab = _nearest(z, self.params["centroids"])
            elif self.rule == "profile_centroid":
                z = (self.model.predict_profit(xb, self.params["candidates"]) - self.params["p_mean"]) / self.params["p_scale"]
                if "components" in self.params:
                    z = (z - self.params["pca_mean"]) @ self.params["components"].T
                lab = _nearest(z, self.params["centroids"])
            elif self.rule == "tree":
                from coarse_gpu.policy.tree import apply_tree

                lab = apply_tree(xb, {key: self.params["tree_" + key]
                                      for key in ("feature", "threshold", "left", "right", "leaf_slot")})
            elif self.rule == "preference_centroid":
                cand = self.params["candidates"]
                best = self.model.predict_profit(xb, cand).argmax(1)
                lab = _nearest(cand[best] / self.params["pref_scale"], self.params["centroids"])
            else:
                raise PolicyFileError(f"unknown assignment rule {self.rule!r}; known: {list(RULES)}")
            seg[s: s + chunk_rows] = lab
            prof[s: s + chunk_rows] = p_k[np.arange(lab.shape[0]), lab]
        return seg, prof

    def assign(self, features: pd.DataFrame, ids=None, chunk_rows: int = ASSIGN_CHUNK,
               source: str = "the data") -> pd.DataFrame:
        """Assignment table for raw feature rows: [id], segment, one column per treatment dimension,
        predicted_profit."""
        X = self.feature_schema.transform(features, source)
        seg, prof = self.assign_matrix(X, chunk_rows)
        out = {}
        if ids is not None:
            out[ids.name if hasattr(ids, "name") and ids.name else (self.id_column or "id")] = np.asarray(ids)
        out["segment"] = seg
        for j, name in enumerate(self.treatment_names):
            out[name] = self.treatments[seg, j]
        out["predicted_profit"] = prof
        return pd.DataFrame(out)


def _nearest(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest finite centroid (Euclidean) for each row of ``points``."""
    c = np.asarray(centroids, dtype=np.float64)
    ok = np.all(np.isfinite(c), axis=1)
    d2 = ((points[:, None, :] - np.where(ok[:, None], c, 0.0)[None, :, :]) ** 2).sum(-1)
    d2[:, ~ok] = np.inf
    return d2.argmin(1).astype(np.int64)


def feature_schema_of(data) -> FeatureSchema:
    """The FeatureSchema of an ExperimentData (stored in ``meta`` for file data; rebuilt otherwise)."""
    if "feature_schema" in data.meta:
        return FeatureSchema.from_dict(data.meta["feature_schema"])
    from coarse_gpu.data.simulator import CATEGORICAL

    schema = FeatureSchema.fit(data.features, levels=CATEGORICAL)
    if schema.names != list(data.feature_names):
        raise ValueError(f"cannot rebuild the feature schema: {schema.names} != {data.feature_names}")
    return schema


def deployable(policy: Policy, model, data, candidates: np.ndarray, X: np.ndarray, profit: np.ndarray,
               metrics: Optional[dict] = None) -> DeployedPolicy:
    """A DeployedPolicy from a pipeline Policy built on customers X (N, p) with profit (N, M) at candidates.

    kmeans_features gets its centroids as segment means of the standardized X (empty segments: NaN,
    never chosen); kmeans_preferences keeps the k-means centroids of the ideal points.
    """
    method = policy.name
    params: dict = {}
    if method == "kmeans_features":
        x = np.asarray(X, dtype=np.float64)
        center = x.mean(0)
        scale = x.std(0)
        scale[scale <= 1e-12] = 1.0
        z = (x - center) / scale
        cent = np.full((policy.k, x.shape[1]), np.nan)
        for s in np.flatnonzero(policy.segment_sizes):
            cent[s] = z[policy.assignment == s].mean(0)
        rule = "feature_centroid"
        params = {"center": center, "scale": scale, "centroids": cent}
    elif method == "kmeans_preferences":
        s = np.asarray(policy.info["scale"], dtype=np.float64)
        rule = "preference_centroid"
        params = {"candidates": np.asarray(candidates, dtype=np.float64), "pref_scale": s,
                  "centroids": np.asarray(policy.info["centroids"], dtype=np.float64) / s}
    elif method == "kmeans_profiles":
        p = np.asarray(profit, dtype=np.float64)
        mu, sd = p.mean(0), p.std(0)
        sd[sd <= 1e-12] = 1.0  # as coarse_gpu.policy.baselines._standardize
        z = (p - mu) / sd
        params = {"candidates": np.asarray(candidates, dtype=np.float64), "p_mean": mu, "p_scale": sd}
        n_comp = policy.info.get("n_components")
        if n_comp is not None and z.shape[1] > int(n_comp):
            from sklearn.decomposition import PCA

            pca = PCA(n_components=int(n_comp), random_state=int(policy.info.get("seed", 0))).fit(z)
            params.update(components=pca.components_, pca_mean=pca.mean_)
            z = (z - pca.mean_) @ pca.components_.T
        cent = np.full((policy.k, z.shape[1]), np.nan)
        for s in np.flatnonzero(policy.segment_sizes):
            cent[s] = z[policy.assignment == s].mean(0)
        params["centroids"] = cent
        rule = "profile_centroid"
    elif method in ("policy_tree", "ot_tree"):
        rule = "tree"
        params = {"tree_" + key: np.asarray(v, dtype=np.float64 if key == "threshold" else np.int64)
                  for key, v in policy.info["tree"].items()}
    elif method in ARGMAX_METHODS:
        rule = "argmax"
    else:
        raise NotImplementedError(f"no assignment rule for new customers is defined for method {method!r}; "
                                  f"savable methods: {list(ARGMAX_METHODS) + ['kmeans_features', 'kmeans_preferences', 'kmeans_profiles', 'policy_tree']}")
    id_col = None
    if "feature_schema" in data.meta and data.meta.get("ids") is not None:
        id_col = data.meta.get("id_column")
    return DeployedPolicy(method, np.asarray(policy.treatments, dtype=np.float64), list(data.space.names), rule,
                          model, feature_schema_of(data), params, id_col, dict(metrics or {}))


# ---------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------
def save_policy(folder: str | os.PathLike, policy: DeployedPolicy) -> Path:
    """Write ``policy`` into ``folder`` atomically (module docstring); returns the folder."""
    from safetensors.torch import save as st_save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, model_meta = model_tensors(policy.model)
    blob = st_save(tensors, metadata={"format": FORMAT})
    digest = hashlib.sha256(blob).hexdigest()
    weights = f"model-{digest[:16]}.safetensors"
    if not (folder / weights).is_file() or hashlib.sha256((folder / weights).read_bytes()).hexdigest() != digest:
        atomic_write_bytes(folder / weights, blob)
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
        "model": {**model_meta, "weights": weights, "sha256": digest},
        "metrics": policy.metrics,
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


def _array(v, name: str, ndim: int) -> np.ndarray:
    try:
        a = np.array([[np.nan if x is None else x for x in row] for row in v] if ndim == 2
                     else [np.nan if x is None else x for x in v], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise PolicyFileError(f"policy.json: '{name}' is not a numeric {ndim}-D array") from err
    if a.ndim != ndim:
        raise PolicyFileError(f"policy.json: '{name}' must be {ndim}-D, got shape {a.shape}")
    return a


def load_policy(folder: str | os.PathLike, device: str = "cpu") -> DeployedPolicy:
    """Load a policy saved by ``save_policy`` (no pickle: JSON + safetensors). PolicyFileError names
    what is wrong (missing file, corrupt/truncated JSON or weights, checksum mismatch, other format)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    folder = Path(folder)
    if folder.is_file() and folder.name == "policy.json":
        folder = folder.parent
    pj = folder / "policy.json"
    if not pj.is_file():
        raise PolicyFileError(f"no policy at '{folder}': expected a folder with policy.json "
                              "(a run writes them as <run dir>/policies/<method>_k<K>)")
    try:
        doc = json.loads(pj.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PolicyFileError(f"policy file '{pj}' is corrupt or truncated (not valid JSON: {err})") from err
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PolicyFileError(f"policy file '{pj}' has format {doc.get('format') if isinstance(doc, dict) else None!r}; "
                              f"this version reads {FORMAT!r}")
    try:
        m = doc["model"]
        wpath = folder / m["weights"]
        blob = wpath.read_bytes()
    except KeyError as err:
        raise PolicyFileError(f"policy file '{pj}' lacks the key {err}") from err
    except FileNotFoundError as err:
        raise PolicyFileError(f"policy weights '{wpath}' are missing") from err
    if hashlib.sha256(blob).hexdigest() != m.get("sha256"):
        raise PolicyFileError(f"policy weights '{wpath}' are corrupt or truncated (sha256 does not match policy.json)")
    try:
        tensors = st_load(blob)
    except (SafetensorError, Exception) as err:
        raise PolicyFileError(f"policy weights '{wpath}' are corrupt or truncated: {err}") from err
    model = load_model(tensors, m, device=device)
    params = {}
    for k, v in (doc.get("rule_params") or {}).items():
        params[k] = _array(v, f"rule_params.{k}", 2 if k in ("centroids", "candidates", "components") else 1)
    treatments = _array(doc["treatments"], "treatments", 2)
    return DeployedPolicy(doc["method"], treatments, list(doc["treatment_names"]), doc["rule"], model,
                          FeatureSchema.from_dict(doc["feature_schema"]), params, doc.get("id_column"),
                          doc.get("metrics") or {})


def iter_assignments(policy: DeployedPolicy, chunks: Iterator[pd.DataFrame], id_column: Optional[str],
                     source: str) -> Iterator[pd.DataFrame]:
    """Assignment tables for successive chunks of raw rows (see DeployedPolicy.assign)."""
    offset = 0
    for df in chunks:
        if id_column is not None and id_column not in df.columns:
            raise DataSchemaError([f"id column '{id_column}' is missing from the file; available columns: "
                                   f"{[str(c) for c in df.columns]}"], source)
        ids = df[id_column] if id_column is not None else pd.Series(np.arange(offset, offset + len(df)), name="row")
        yield policy.assign(df, ids=ids, source=source)
        offset += len(df)
