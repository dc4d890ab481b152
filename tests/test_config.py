"""Hydra configs compose, are validated by their dataclass schemas, and sweep."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from hydra.errors import ConfigCompositionException

from coarse_gpu.cli import config_dir
from coarse_gpu.experiment.config import register_configs

ROOT = Path(__file__).resolve().parents[1]

# The smallest run that still exercises every stage (seconds on 2 cores).
TINY = ["model.n_ensemble=1", "model.n_folds=2", "data.n_customers=1500", "model.max_epochs=3", "model.hidden=16", "evaluation.n_boot=50",
        "discretizer.n_restarts=2", "quiet=true"]


def _compose(overrides=()):
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_default_config_composes_with_every_group():
    cfg = _compose()
    assert cfg.data.name == "promotions" and cfg.data.n_customers == 50_000
    assert cfg.model.name == "auto" and list(cfg.model.candidates) == ["tarnet", "gb_s", "gb_t", "arm_means", "dose_logit", "dose_vc", "twopart_gb_s",
                                                                         "twopart_tarnet"]
    assert cfg.discretizer.solver == "sinkhorn"
    assert cfg.logger.name == "wandb" and cfg.logger.mode == "offline"
    assert list(cfg.evaluation.k_values) == [1, 2, 3, 4, 5, 8]
    assert set(cfg.evaluation.methods) == {"ot", "kmeans_features", "kmeans_preferences", "kmeans_profiles",
                                           "grid", "single_best"}


def test_group_switches_and_overrides():
    cfg = _compose(["model=dragonnet", "discretizer=lloyd", "logger=none", "discretizer.k=3"])
    assert cfg.model.name == "dragonnet" and cfg.model.alpha == 1.0
    assert cfg.discretizer.solver == "lloyd" and cfg.discretizer.k == 3
    assert cfg.logger.mode == "disabled"


def test_schema_rejects_unknown_key_naming_it():
    with pytest.raises(ConfigCompositionException, match="n_custmers"):
        _compose(["data.n_custmers=10"])


def test_schema_rejects_wrong_type_naming_the_key():
    with pytest.raises(ConfigCompositionException, match="n_customers"):
        _compose(["data.n_customers=lots"])


def _cli():
    exe = Path(sys.executable).parent / "coarse-gpu"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "coarse_gpu.cli"]


def test_console_script_is_installed():
    assert (Path(sys.executable).parent / "coarse-gpu").exists(), "pip install -e . must install `coarse-gpu`"


def test_multirun_sweeps_two_values(tmp_path):
    """`coarse-gpu -m discretizer.k=2,3` runs two jobs, each with its own run directory and results."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        _cli() + ["-m", "discretizer.k=2,3", "logger=none", f"hydra.sweep.dir={sweep}", *TINY],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = sorted(sweep.glob("*/results.json"))
    assert len(results) == 2, list(sweep.rglob("*"))
    ks = set()
    for path in results:
        res = json.loads(path.read_text())
        assert res["status"] == "complete"
        assert len(res["k_values"]) == 1
        ks.add(res["k_values"][0])
        k = str(res["k_values"][0])
        assert len(res["methods"]["ot"][k]["treatments"]) == int(k)
        assert (path.parent / "config.yaml").exists() and (path.parent / "share_vs_k.png").exists()
        cfg = OmegaConf.load(path.parent / "config.yaml")
        assert cfg.discretizer.k == res["k_values"][0]
    assert ks == {2, 3}


MODEL_FILES = sorted(p.stem for p in (ROOT / "configs" / "model").glob("*.yaml"))


@pytest.mark.parametrize("name", MODEL_FILES)
def test_every_model_config_instantiates_its_class(name):
    """configs/model/<name>.yaml names its estimator by _target_; build_model instantiates exactly it."""
    from coarse_gpu.experiment.personalize import MODELS, build_model

    cfg = _compose([f"model={name}", "logger=none"])
    assert cfg.model._target_.rsplit(".", 1)[1] == MODELS[name].__name__
    model = build_model(cfg.model, "cpu", 0, False)
    assert type(model) is MODELS[name]


@pytest.mark.parametrize("name", MODEL_FILES)
def test_a_misspelt_or_foreign_model_key_is_an_error_for_every_model(name):
    from coarse_gpu.experiment.validate import config_problems

    with pytest.raises(ConfigCompositionException, match="hiden"):
        _compose([f"model={name}", "model.hiden=8"])
    # a real key of another model, set away from its default, that this model does not take
    foreign = ("model.alpha=2.0" if name not in ("dragonnet", "auto", "arm_means")
               else "model.beta=2.0" if name == "auto" else "model.knots=quantile")
    problems = config_problems(_compose([f"model={name}", foreign, "logger=none"]))
    assert any(foreign.split("=")[0] in p and "not parameters" in p for p in problems), problems


def test_model_target_takes_your_own_class_and_names_a_bad_one():
    from coarse_gpu.experiment.personalize import build_model
    from coarse_gpu.experiment.validate import config_problems
    from coarse_gpu.models import GBSLearner

    cfg = _compose(["model=gb_s", "model.name=my_boosting", "model.max_iter=7", "logger=none"])
    model = build_model(cfg.model, "cpu", 0, False)
    assert isinstance(model, GBSLearner) and model.max_iter == 7
    problems = config_problems(_compose(["model._target_=coarse_gpu.models.NoSuchModel", "logger=none"]))
    assert problems == ["model._target_='coarse_gpu.models.NoSuchModel' is not an importable class: module "
                        "'coarse_gpu.models' has no attribute 'NoSuchModel'"]


def test_policy_tree_without_econml_is_named_before_any_work(monkeypatch):
    import importlib.util

    from coarse_gpu.experiment.validate import config_problems

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "econml" else real(name, *a))
    assert config_problems(_compose(["logger=none"])) == []  # the defaults do not need econml
    problems = config_problems(_compose(["logger=none", "evaluation.methods=[ot,policy_tree]"]))
    assert problems == ["evaluation.methods lists policy_tree, which needs econml: pip install 'coarse_gpu[real]' "
                        "(or econml), or leave policy_tree out"]
