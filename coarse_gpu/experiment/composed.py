"""The CLI's config groups for the Python API: one source of defaults for both.

``coarse-gpu model=dose_logit`` composes ``configs/model/dose_logit.yaml`` over its schema
(``ModelConfig``); the Python API must build the same model from the same file, not from the
schema's defaults alone (which differ: the YAML sets n_head_layers 2 and the treatment transforms).
``group_config`` does what Hydra's composition does for one group file -- the schema named in its
defaults list, then the file's values -- with OmegaConf alone, so it needs no global Hydra state and
works inside a running Hydra app too. ``tests/test_api_reliability.py`` checks every model file against
Hydra's own composition.
"""
from __future__ import annotations

from typing import Optional

from omegaconf import DictConfig, OmegaConf, open_dict

from coarse_gpu.experiment.config import GROUP_SCHEMAS, DiscretizerConfig, RunConfig, config_dir, model_node

__all__ = ["config_dir", "discretizer_config", "group_config", "job_config", "model_config"]


def group_config(group: str, name: str) -> Optional[DictConfig]:
    """``configs/<group>/<name>.yaml`` merged over its schema, as Hydra composes it; None when there is
    no such file. A file whose defaults list names another schema than the group's is refused."""
    path = config_dir() / group / f"{name}.yaml"
    if not path.is_file():
        return None
    raw = OmegaConf.load(path)
    schemas = dict(GROUP_SCHEMAS[group])
    listed = [d for d in (raw.pop("defaults", None) or []) if d != "_self_"]
    if len(listed) != 1 or listed[0] not in schemas:
        raise ValueError(f"{path}: its defaults list must name one schema of {sorted(schemas)} then _self_, "
                         f"got {listed}")
    return OmegaConf.merge(OmegaConf.structured(schemas[listed[0]]), raw)


def model_config(name: str) -> DictConfig:
    """The CLI's ``model=<name>`` group: configs/model/<name>.yaml over ``ModelConfig``; a model name
    without a file gets the node the CLI composes for it (``config.model_node``: the schema's defaults,
    the name and, for a registered learner, its class as ``_target_``)."""
    cfg = group_config("model", name)
    return model_node(name) if cfg is None else cfg


def discretizer_config(solver: str) -> DictConfig:
    """The CLI's ``discretizer=<solver>`` group (configs/discretizer/<solver>.yaml over
    ``DiscretizerConfig``); a solver without a file (``exact``) gets the default file's values with
    that solver, as ``coarse-gpu discretizer.solver=exact`` would."""
    cfg = group_config("discretizer", solver)
    if cfg is None:
        cfg = group_config("discretizer", "sinkhorn")
        cfg = OmegaConf.structured(DiscretizerConfig) if cfg is None else cfg
        cfg.solver = solver
    return cfg


def job_config(model: DictConfig, discretizer: DictConfig, *, data: Optional[dict] = None,
               evaluation: Optional[dict] = None, **top) -> DictConfig:
    """The whole job config the CLI composes for ``data=file model=... discretizer=... logger=none``: the
    run schema (``RunConfig``) with the given ``model`` and ``discretizer`` nodes (``model_config``,
    ``discretizer_config``), configs/data/file.yaml and configs/evaluation/default.yaml updated with
    ``data`` / ``evaluation`` (their keys, e.g. {"eval_fraction": 0.3} / {"k_values": [1, 5]}), and
    top-level keys (seed, device, quiet, ...). An unknown key is an error naming it (the schemas are
    structured), as on the command line. What ``CoarsePersonalizer.run`` hands the pipeline."""
    cfg = OmegaConf.structured(RunConfig)
    with open_dict(cfg):
        del cfg["defaults"]  # Hydra's defaults list: composition's, not the job's
    cfg.data, cfg.model, cfg.discretizer = group_config("data", "file"), model, discretizer
    cfg.evaluation, cfg.logger = group_config("evaluation", "default"), group_config("logger", "none")
    for node, values in (("data", data), ("evaluation", evaluation)):
        for key, v in (values or {}).items():
            cfg[node][key] = v
    for key, v in top.items():
        cfg[key] = v
    return cfg
