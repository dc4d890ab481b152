"""Launchers, sweepers and experiment configs compose (no cluster here): SLURM through submitit, Optuna."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from coarse_gpu.cli import config_dir, explain_config_error
from coarse_gpu.experiment.config import register_configs

ROOT = Path(__file__).resolve().parents[1]


def _compose(overrides=(), hydra_cfg=False):
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra_cfg)


def test_local_launcher_is_the_default():
    cfg = _compose(hydra_cfg=True)
    assert cfg.launcher.name == "local"
    assert cfg.hydra.launcher._target_ == "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert cfg.experiment.name == "default"
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")


def test_slurm_launcher_config_gives_the_submitit_parameters(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _compose(["launcher=slurm", "launcher.partition=a100", "launcher.gpus_per_node=2",
                    "launcher.timeout_min=240", "launcher.array_parallelism=4", f"hydra.sweep.dir={tmp_path}"],
                   hydra_cfg=True)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    HydraConfig.instance().set_config(cfg)
    launcher = instantiate(cfg.hydra.launcher)  # what Hydra builds for `coarse-gpu -m launcher=slurm ...`
    p = launcher.params
    assert (p["partition"], p["gpus_per_node"], p["timeout_min"], p["array_parallelism"]) == ("a100", 2, 240, 4)
    assert (p["cpus_per_task"], p["mem_gb"], p["nodes"], p["tasks_per_node"]) == (8, 32, 1, 1)
    assert p["submitit_folder"] == f"{tmp_path}/.submitit/%j" and p["max_num_timeout"] == 3

    # The sbatch script submitit would submit for a 3-job sweep, built as the plugin builds it
    # (no `srun` here, so the executor's cluster check is bypassed).
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm import slurm

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    params = dict(p)
    executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = slurm._make_sbatch_string(command="coarse-gpu", folder=str(tmp_path), map_count=3,
                                       **executor._executor.parameters)
    for line in ("#SBATCH --partition=a100", "#SBATCH --gpus-per-node=2", "#SBATCH --time=240",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB", "#SBATCH --array=0-2%3"):
        assert line in script, script


def test_optuna_search_space_composes():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = _compose(["hparams_search=optuna"], hydra_cfg=True)
    sw = cfg.hydra.sweeper
    assert sw._target_.endswith("OptunaSweeper") and sw.direction == "minimize"
    assert sw.sampler._target_.endswith("TPESampler") and sw.sampler.seed == 0
    assert {"model.lr", "model.hidden", "model.weight_decay"} <= set(sw.params)
    assert str(cfg.hydra.mode).endswith("MULTIRUN")
    assert list(cfg.evaluation.k_values) == [5] and list(cfg.evaluation.methods) == ["ot"]


def test_experiment_group_patches_the_config():
    cfg = _compose(["experiment=quick"])
    assert cfg.experiment.name == "quick" and cfg.data.n_customers == 5000
    assert cfg.model.name == "auto" and cfg.model.max_epochs == 20 and cfg.model.n_folds == 3


@pytest.mark.parametrize("override, expected", [
    (["launcher.partiton=gpu"], ["launcher.partiton", "partition", "gpus_per_node", "array_parallelism"]),
    (["launcher.gpus_per_node=many"], ["launcher.gpus_per_node", "int"]),
    (["experiment.nmae=x"], ["experiment.nmae", "name", "description"]),
    (["evaluation.n_bot=5"], ["evaluation.n_bot", "n_boot", "k_values"]),
    (["model.hiden=5"], ["model.hiden", "hidden", "lr"]),
])
def test_schema_errors_name_the_key_and_the_allowed_keys(override, expected):
    with pytest.raises(ConfigCompositionException) as info:
        _compose(override)
    msg = explain_config_error(info.value)
    for word in expected:
        assert word in msg, msg


def test_unknown_group_option_lists_the_options():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as info:
        _compose(["launcher=kubernetes"])
    msg = explain_config_error(info.value)
    assert "launcher/kubernetes" in msg and "slurm" in msg and "local" in msg and "_schema" not in msg


def test_cli_reports_config_errors_and_bad_choices(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    exe = [str(Path(sys.executable).parent / "coarse-gpu")]
    proc = subprocess.run(exe + ["data.n_custmers=10"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "unknown key 'data.n_custmers'" in proc.stderr and "n_customers" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(exe + ["logger.mode=sometimes", "model.amp=fp8", f"hydra.run.dir={tmp_path / 'r'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "logger.mode='sometimes' is not allowed; allowed values: offline, online, disabled" in proc.stderr
    assert "model.amp='fp8'" in proc.stderr and "bf16" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r" / "results.json").exists()


def test_sweep_progress_counts_jobs(caplog, monkeypatch):
    from types import SimpleNamespace

    from coarse_gpu.experiment.callbacks import SweepProgress, sweep_size

    monkeypatch.delenv("CI", raising=False)
    basic = OmegaConf.create({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
        "overrides": {"task": ["discretizer.k=1,2,3", "model=tarnet,dragonnet", "seed=0"]}}})
    assert sweep_size(basic) == 6
    optuna = OmegaConf.create({"hydra": {"sweeper": {"_target_": "x.OptunaSweeper", "n_trials": 20},
                                         "overrides": {"task": []}}})
    assert sweep_size(optuna) == 20
    cb = SweepProgress()
    cb.on_multirun_start(basic)
    job = OmegaConf.create({"hydra": {"overrides": {"task": ["discretizer.k=1"]}}})
    with caplog.at_level("INFO", logger="coarse_gpu"):
        cb.on_job_end(job, SimpleNamespace(status=SimpleNamespace(name="COMPLETED")))
    assert "sweep: 1/6 jobs done (17%)" in caplog.text and "discretizer.k=1 -> COMPLETED" in caplog.text
    quiet = SweepProgress(quiet=True)
    quiet.on_multirun_start(basic)
    caplog.clear()
    quiet.on_job_end(job, None)
    assert "sweep:" not in caplog.text
