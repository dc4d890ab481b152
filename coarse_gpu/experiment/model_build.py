"""Which CATE model a ``model`` config names, and building it unfitted: ``model_class`` (the class),
``model_key_problems`` (the config's keys against that class, run by the config check before any
work) and ``build_model`` (the instance, through ``hydra.utils.instantiate``).

personalize.py fits what ``build_model`` returns; dose.py builds its dose learners with it too.
"""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Optional

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from coarse_gpu.experiment.config import ModelConfig
from coarse_gpu.models import AutoCATE, TwoPart
from coarse_gpu.models.registry import RegistryView
from coarse_gpu.models.select import CANDIDATES, param_class
from coarse_gpu.models.twopart import BASES as TWO_PART_BASES
from coarse_gpu.utils.imports import class_path, locate_class
from coarse_gpu.utils.params import constraints_of, param_problems

#: ``model=<name>`` -> class: a live view of the model registry (coarse_gpu.models.registry), so a
#: learner registered by a plugin is a CLI model too.
MODELS = RegistryView(lambda e: (e.name,))
#: ModelConfig keys that are not model parameters (handled here).
_PIPELINE_KEYS = ("name", "_target_", "n_folds", "checkpoint", "candidates", "combine", "blend", "batched")


def model_class(model_cfg) -> type:
    """The estimator class of a model config: ``_target_`` (imported by Hydra), else the registered
    class of ``name``; ValueError naming the key otherwise."""
    target = model_cfg.get("_target_")
    if target:
        cls = locate_class(target, "model._target_")
        if not callable(getattr(cls, "fit", None)):
            raise ValueError(f"model._target_={target!r} has no fit method: not a CATE model")
        return cls
    name = model_cfg.get("name")
    if name not in MODELS:
        raise ValueError(f"model.name={name!r} is not a known model; available: {sorted(MODELS)}")
    return MODELS[name]


def _model_kwargs(cls: type, cfg: dict) -> dict:
    """The config values ``cls.__init__`` accepts (None -> the class's own adaptive default)."""
    accepted = inspect.signature(cls.__init__).parameters
    out = {}
    for key, v in cfg.items():
        if key not in accepted or key in _PIPELINE_KEYS:
            continue
        if v is None and accepted[key].default is not inspect.Parameter.empty:
            continue  # the class default ("auto" / adapt to the data)
        out[key] = list(v) if isinstance(v, (list, tuple)) else v
    return out


def _unused_keys(classes: list[type], cfg: dict) -> list[str]:
    """Keys set away from the schema default that none of ``classes`` takes: a config error."""
    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for f in dataclasses.fields(ModelConfig)}
    taken = set(_PIPELINE_KEYS)
    for cls in classes:
        taken |= set(inspect.signature(cls.__init__).parameters)
    return sorted(k for k, v in cfg.items() if k not in taken and k in defaults and v != defaults[k])


def _config_classes(cfg: dict) -> tuple[list[type], str]:
    """(the classes whose parameters a model config sets, how to name them in a message): the model's
    class; for model=auto its candidates' (and TwoPart's); for a two-part model TwoPart and its family's.
    ValueError naming the key when the config names no such class."""
    cls = model_class(cfg)
    if issubclass(cls, AutoCATE):
        cands = list(cfg.get("candidates") or AutoCATE().candidates)
        bad = [c for c in cands if c not in CANDIDATES]
        if bad:
            raise ValueError(f"model.candidates has unknown model(s) {bad}; available: {sorted(CANDIDATES)}")
        return [param_class(c) for c in cands] + [TwoPart], f"any candidate {cands} of model=auto"
    if issubclass(cls, TwoPart):
        base = cfg.get("base") or "gb_s"
        bad = param_problems(constraints_of(TwoPart), {"base": base}, prefix="model.")  # TwoPart's families
        if bad:
            raise ValueError(bad[0])
        return [cls, TWO_PART_BASES[base]], f"model={cfg.get('name')} (TwoPart of {base})"
    return [cls], f"model={cfg.get('name')} ({cls.__name__})"


def _range_problems(classes: list[type], cfg: dict) -> list[str]:
    """Values outside the range their class declares (``_parameter_constraints``, coarse_gpu.utils.params),
    each naming ``model.<key>``; null is the class's own default (``_model_kwargs`` skips it)."""
    out = []
    for key, v in cfg.items():
        rule = next((r for c in classes if (r := constraints_of(c).get(key)) is not None), None)
        if v is not None and rule is not None:
            out += param_problems({key: rule}, {key: v}, prefix="model.")
    return out


def model_key_problems(model_cfg) -> list[str]:
    """Why a model config cannot build its model (an unimportable ``_target_``, unknown candidates, a key
    set that the model does not take, a value outside the range its class declares), each naming the
    key; [] when it can. Run before any work (``validate.config_problems``) and again by ``build_model``."""
    cfg = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    try:
        classes, owner = _config_classes(cfg)
    except ValueError as err:
        return [str(err)]
    unused = _unused_keys(classes, cfg)
    if unused:
        return [f"model key(s) {['model.' + k for k in unused]} are not parameters of {owner}"]
    return _range_problems(classes, cfg)


def build_model(model_cfg: DictConfig, device: torch.device, seed: int, verbose: bool,
                checkpoint_dir: Optional[str | Path] = None):
    """The unfitted model of ``model._target_`` (``model_class``), built by ``hydra.utils.instantiate``
    with every config key its ``__init__`` takes; a key set for a model that does not take it is an
    error (never silently dropped)."""
    problems = model_key_problems(model_cfg)
    if problems:
        raise ValueError(problems[0])
    cfg = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    cls = model_class(cfg)
    ckpt = str(checkpoint_dir) if checkpoint_dir is not None and cfg.get("checkpoint", True) else None
    if issubclass(cls, AutoCATE):
        cands = list(cfg.get("candidates") or AutoCATE().candidates)
        params = {c: {k: v for k, v in _model_kwargs(param_class(c), cfg).items() if k not in ("seed", "device")}
                  for c in cands}
        return instantiate({"_target_": class_path(cls)}, candidates=cands, n_folds=int(cfg.get("n_folds") or 5),
                           combine=str(cfg.get("combine", "stack")), blend=bool(cfg.get("blend", True)),
                           candidate_params=params,
                           interpolation=cfg.get("interpolation", "linear"), device=str(device),
                           checkpoint_dir=ckpt, seed=seed, verbose=verbose, batched=bool(cfg.get("batched", True)),
                           _convert_="all")
    kwargs = _model_kwargs(cls, cfg)
    if issubclass(cls, TwoPart):  # the family's own keys go to both parts' learners
        base = TWO_PART_BASES[cfg.get("base") or "gb_s"]
        kwargs["base_params"] = {k: v for k, v in _model_kwargs(base, cfg).items()
                                 if k not in ("seed", "device", "verbose", "checkpoint_dir")} or None
    accepted = inspect.signature(cls.__init__).parameters
    kwargs.update({k: v for k, v in (("device", str(device)), ("seed", seed), ("verbose", verbose),
                                     ("checkpoint_dir", ckpt)) if k in accepted and v is not None})
    return instantiate({"_target_": class_path(cls)}, **kwargs, _convert_="all")


__all__ = ["MODELS", "build_model", "model_class", "model_key_problems"]
