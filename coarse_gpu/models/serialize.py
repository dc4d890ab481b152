"""Fitted models as plain tensors + JSON, and back: what saved policies store, without pickle.

``to_state(model)`` returns ``(tensors, meta)``: ``tensors`` maps names to CPU tensors (safetensors
can write them; loading executes no code) and ``meta`` is JSON: the class (a key of
``MODEL_CLASSES``, an explicit registry: nothing else is ever instantiated), its parameters, its
fitted scalars, and the layout of what it contains. ``from_state(tensors, meta)`` rebuilds a model
that predicts exactly what the original did. One walker serves every model kind:

* fitted numpy arrays (``arms_``, ``x_mean_``, ...)        -> ``fitted.<name>``
* fitted scalars and tuples of strings                      -> meta["fitted"]
* a torch network (``network_``)                            -> ``network.<state-dict key>``
* boosted trees (``BoostedTrees`` or a list of them)        -> ``trees.<name>[.<i>].<array>``
* sub-models: an ensemble's ``members_``, the folds x seeds of a ``CrossFitted`` (``models_``), the
  selected model of ``AutoCATE`` (``model_``)               -> the same walk under ``<name>.<i>.``

Training-time state is not stored: training features and folds (``X_``, ``fold_``, ``oof_*``),
histories, devices, checkpoint paths; ``grid_`` is rebuilt from ``arms_``.
"""
from __future__ import annotations

import inspect
import re
from typing import Any

import numpy as np
import torch

from coarse_gpu.models.interpolate import ArmGrid
from coarse_gpu.models.trees import BoostedTrees
from coarse_gpu.utils.device import resolve_device
from coarse_gpu.utils.plugins import load_plugins

__all__ = ["MODEL_CLASSES", "ModelStateError", "from_state", "register", "to_state"]


class ModelStateError(ValueError):
    """Stored model state that does not describe a model of this version (wrong class, missing or
    malformed arrays, weights that do not fit the architecture)."""


#: Class path -> class: the only classes ``from_state`` instantiates (filled by ``register``, which
#: ``coarse_gpu.models.registry.register_model`` calls for every learner).
MODEL_CLASSES: dict[str, type] = {}

#: Fitted attributes that are training-time state or rebuilt on load.
_SKIP = ("network_", "grid_", "device_", "history_", "checkpoint_path_", "X_", "fold_", "members_", "models_",
         "model_", "oof_arms_", "oof_profit_", "model_selection_")
#: Parameters that describe the machine, not the model.
_NOT_STORED_PARAMS = ("device", "verbose", "checkpoint_dir", "model_factory")
#: Sub-model attributes, walked recursively.
_CHILDREN = ("members_", "models_", "model_")


def register(*classes: type) -> None:
    """Allow ``from_state`` to build these classes (registered by their module path)."""
    for cls in classes:
        MODEL_CLASSES[f"{cls.__module__}.{cls.__qualname__}"] = cls


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _is_scalar(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str, np.integer, np.floating, np.bool_))


def _params(model) -> dict:
    out = {}
    for k, v in model.get_params(deep=False).items():  # a wrapped estimator's parameters are its own
        if k in _NOT_STORED_PARAMS:
            continue
        v = list(v) if isinstance(v, tuple) else v
        if _is_scalar(v) or (isinstance(v, list) and all(_is_scalar(x) for x in v)):
            out[k] = _jsonable(v) if not isinstance(v, list) else [_jsonable(x) for x in v]
    return out


def _put_trees(tensors: dict, key: str, trees: BoostedTrees) -> None:
    for name, arr in trees.to_arrays().items():
        tensors[f"{key}.{name}"] = torch.from_numpy(np.array(arr))


def to_state(model, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of a fitted model (module docstring); ``prefix`` namespaces a sub-model."""
    cls = type(model)
    path = f"{cls.__module__}.{cls.__qualname__}"
    if path not in MODEL_CLASSES:
        raise ModelStateError(f"{path} is not a registered model class; cannot save it")
    tensors: dict[str, torch.Tensor] = {}
    fitted: dict[str, Any] = {}
    tuples, bools, trees, children = {}, [], {}, {}
    for name, v in vars(model).items():
        if not name.endswith("_") or name.startswith("_") or name in _SKIP:
            continue
        if isinstance(v, np.ndarray) and v.dtype != object:
            if v.dtype == bool:
                bools.append(name)
            # a copy: an ensemble shares its members' arrays, and safetensors refuses shared storage
            tensors[f"{prefix}fitted.{name}"] = torch.from_numpy(np.array(v, dtype=np.uint8 if v.dtype == bool else v.dtype))
        elif _is_scalar(v):
            fitted[name] = _jsonable(v)
        elif isinstance(v, tuple) and all(isinstance(x, str) for x in v):
            tuples[name] = list(v)
        elif isinstance(v, BoostedTrees):
            trees[name] = None
            _put_trees(tensors, f"{prefix}trees.{name}", v)
        elif isinstance(v, list) and v and all(isinstance(x, BoostedTrees) for x in v):
            trees[name] = len(v)
            for i, t in enumerate(v):
                _put_trees(tensors, f"{prefix}trees.{name}.{i}", t)
    for name in _CHILDREN:
        v = getattr(model, name, None)
        if not v:
            continue
        if name == "model_":
            t, m = to_state(v, f"{prefix}{name}.")
            tensors.update(t)
            children[name] = {"single": m}
            continue
        nested = isinstance(v[0], list)
        flat = [x for row in v for x in row] if nested else list(v)
        metas = []
        for j, child in enumerate(flat):
            t, m = to_state(child, f"{prefix}{name}.{j}.")
            tensors.update(t)
            metas.append(m)
        children[name] = {"rows": [len(row) for row in v] if nested else None, "models": metas}
    net = getattr(model, "network_", None)
    if net is not None and not getattr(model, "members_", None):
        for k, w in net.state_dict().items():
            tensors[f"{prefix}network.{k}"] = w.detach().cpu().contiguous().clone()
    meta = {"class": path, "params": _params(model), "fitted": fitted, "tuples": tuples, "bool_arrays": bools,
            "trees": trees, "children": children}
    return tensors, meta


#: What a stored attribute name may look like: public fitted state ending in "_" (never a dunder,
#: a method or private state: a file must not be able to replace them through setattr).
_FITTED_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*_$")


def _check_names(names, where: str) -> None:
    bad = sorted(str(n) for n in names if not isinstance(n, str) or not _FITTED_NAME.match(n))
    if bad:
        raise ModelStateError(f"stored {where} names {bad} are not fitted-state names; refusing to set them")


def _get_trees(tensors: dict, key: str) -> BoostedTrees:
    arrays = {k[len(key) + 1:]: v.numpy() for k, v in tensors.items() if k.startswith(key + ".")}
    try:
        return BoostedTrees.from_arrays(arrays)
    except ValueError as err:
        raise ModelStateError(f"stored trees '{key}' are malformed: {err}") from err


def from_state(tensors: dict, meta: dict, device: str = "cpu", prefix: str = ""):
    """Rebuild the model ``to_state`` described (registered classes only)."""
    if not isinstance(meta, dict):
        raise ModelStateError("model metadata is not a JSON object")
    path = str(meta.get("class", ""))
    if path not in MODEL_CLASSES:
        load_plugins()  # a plugin's learner, saved by another process: its module registers it
    cls = MODEL_CLASSES.get(path)
    if cls is None:
        raise ModelStateError(f"model class {path!r} is not one this version of coarse_gpu loads "
                              f"(known: {sorted(MODEL_CLASSES)})")
    accepted = set(inspect.signature(cls.__init__).parameters)
    params = {k: v for k, v in (meta.get("params") or {}).items() if k in accepted}
    try:
        model = cls(**params, device=device) if "device" in accepted else cls(**params)
    except (TypeError, ValueError) as err:
        raise ModelStateError(f"stored parameters do not build a {cls.__name__}: {err}") from err
    _check_names(list(meta.get("fitted") or {}) + list(meta.get("tuples") or {}) + list(meta.get("trees") or {}),
                 "attribute")
    for name, v in (meta.get("fitted") or {}).items():
        setattr(model, name, v)
    for name, v in (meta.get("tuples") or {}).items():
        setattr(model, name, tuple(v))
    bools = set(meta.get("bool_arrays") or [])
    head = f"{prefix}fitted."
    for key, t in tensors.items():
        if key.startswith(head) and "." not in key[len(head):]:
            name = key[len(head):]
            _check_names([name], "array")
            a = t.numpy().copy()
            setattr(model, name, a.astype(bool) if name in bools else a)
    for name, count in (meta.get("trees") or {}).items():
        key = f"{prefix}trees.{name}"
        setattr(model, name, _get_trees(tensors, key) if count is None
                else [_get_trees(tensors, f"{key}.{i}") for i in range(int(count))])
    for name, spec in (meta.get("children") or {}).items():
        if name not in _CHILDREN:
            raise ModelStateError(f"unknown sub-model slot {name!r}")
        if "single" in spec:
            setattr(model, name, from_state(tensors, spec["single"], device, f"{prefix}{name}."))
            continue
        flat = [from_state(tensors, m, device, f"{prefix}{name}.{j}.") for j, m in enumerate(spec["models"])]
        rows = spec.get("rows")
        if rows:
            nested, s = [], 0
            for r in rows:
                nested.append(flat[s: s + r])
                s += r
            flat = nested
        setattr(model, name, flat)
    if hasattr(model, "arms_") and not isinstance(getattr(cls, "grid_", None), property):
        model.n_arms_ = int(np.asarray(model.arms_).shape[0])
        try:
            model.grid_ = ArmGrid.from_arms(model.arms_)
        except ValueError:
            model.grid_ = None
    state = {k[len(prefix) + len("network."):]: v for k, v in tensors.items() if k.startswith(f"{prefix}network.")}
    if state:
        _load_network(model, state, device)
    elif hasattr(model, "_build_network") and not getattr(model, "members_", None):
        raise ModelStateError(f"stored {cls.__name__} has no network weights")
    return model


def _load_network(model, state: dict, device: str) -> None:
    for need in ("arms_", "n_features_in_", "x_mean_", "x_scale_"):
        if not hasattr(model, need):
            raise ModelStateError(f"model weights lack the fitted attribute '{need}'")
    model.device_ = resolve_device(device)
    try:
        net = model._build_network(int(model.n_features_in_), model.n_arms_, torch.Generator().manual_seed(0))
    except AttributeError as err:  # state a model of an older version did not store (e.g. DoseVC's knots)
        raise ModelStateError(f"stored {type(model).__name__} lacks fitted state its network needs ({err}); "
                              "refit and save it with this version") from err
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelStateError(f"model weights do not fit the {type(model).__name__} architecture: {err}") from err
    model.network_ = net.to(model.device_).eval()
