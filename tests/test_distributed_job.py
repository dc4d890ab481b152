"""The main job with distributed=true: 2 ranks on CPU (gloo) under torchrun and under the submitit
launcher; the config rules of a distributed run; the SLURM multi-node launcher config."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from coarse_gpu.cli import config_dir, explain_config_error
from coarse_gpu.experiment import distributed as dj
from coarse_gpu.experiment.config import register_configs
from coarse_gpu.experiment.validate import config_problems

ROOT = Path(__file__).resolve().parents[1]
needs_gloo = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")
#: A small job: 2,000 customers, 2 folds, K in {1, 3}, the Lloyd discretizer, refined off the grid
#: (the default discretizer.refine=true).
SMALL = ["data.n_customers=2000", "model.n_folds=2", "evaluation.k_values=[1,3]", "evaluation.n_boot=10",
         "discretizer=lloyd", "evaluation.true_ceiling=false", "logger=none", "quiet=true", "device=cpu"]
#: Gradient boosting trains the same in every process, whatever the world size: both runs then solve
#: the same profit matrix, so the sharded solve must give the single-process answer exactly. Spline
#: interpolation between the arms makes the refinement move treatments off the candidate grid.
BOOSTING = ["model=gb_t", "model.max_iter=10", "model.interpolation=spline"]
NETWORK = ["model=tarnet", "model.max_epochs=2", "model.hidden=32", "model.n_ensemble=1"]
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SUBMITIT_EXECUTOR")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}


def _run(args: list, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _compose(overrides=(), hydra_cfg=False):
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra_cfg)


@needs_gloo
def test_torchrun_job_gives_the_single_process_results(tmp_path):
    single, shard = tmp_path / "single", tmp_path / "torchrun"
    _run(["-m", "coarse_gpu.cli", *SMALL, *BOOSTING, f"hydra.run.dir={single}"], tmp_path)
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "coarse_gpu.cli",
          "distributed=true", *SMALL, *BOOSTING, f"hydra.run.dir={shard}"], tmp_path)
    a, b = (json.loads((d / "results.json").read_text()) for d in (single, shard))
    assert a["status"] == b["status"] == "complete"
    assert b["distributed"] == {"world_size": 2, "backend": "gloo", "launcher": "torchrun"} and "distributed" not in a
    for k in ("1", "3"):
        ot_a, ot_b = a["methods"]["ot"][k], b["methods"]["ot"][k]
        # the sharded Lloyd on the ranks' blocks of one matrix = Lloyd on the whole matrix, exactly
        assert ot_b["treatments"] == ot_a["treatments"] and ot_b["segment_sizes"] == ot_a["segment_sizes"]
        assert sum(ot_b["segment_sizes"]) == b["n_eval"]  # rank 0 gathered every rank's assignment
        assert ot_b["expected_profit"] == ot_a["expected_profit"] and ot_b["dr_value"] == ot_a["dr_value"]
    # the sharded refinement (every rank's oracle on its rows) moved the treatments off the grid as one process
    cand = {(round(a_, 9), round(b_, 9)) for a_ in np.linspace(0, 0.5, 26) for b_ in np.linspace(0, 4, 21)}
    assert any((round(t[0], 9), round(t[1], 9)) not in cand for t in b["methods"]["ot"]["3"]["treatments"])
    for m in a["methods"]:  # rank 0 ran the baselines and the evaluation as a single process does
        assert b["methods"][m] == a["methods"][m], m
    # rank 0 alone wrote: its folder, one copy of each log line, nothing else next to it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["single", "torchrun"]
    assert (shard / "cli.log").read_text().count("data: 2000 customers") == 1


@needs_gloo
def test_submitit_launcher_runs_one_job_on_two_tasks(tmp_path):
    """What launcher=slurm does with launcher.tasks_per_node=2 (every task runs the job through the
    hydra-submitit-launcher plugin), here with submitit's local executor: DDP training, sharded OT."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    _run(["-m", "coarse_gpu.cli", "-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2",
          "distributed=true", *SMALL, *NETWORK, f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=job"], tmp_path)
    res = json.loads((sweep / "job" / "results.json").read_text())
    assert res["status"] == "complete"
    assert res["distributed"] == {"world_size": 2, "backend": "gloo", "launcher": "submitit-local"}
    assert res["model"]["best_epoch"] is not None
    for k in ("1", "3"):
        cell = res["methods"]["ot"][k]
        assert len(cell["treatments"]) == int(k) and sum(cell["segment_sizes"]) == res["n_eval"]
    # one checkpoint per fold model, written by rank 0 alone into the job's folder (both tasks share it)
    assert len(list((sweep / "job" / "checkpoints").glob("TARNet-*.pt"))) == 2


def test_distributed_without_a_launcher_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "coarse_gpu.cli", "distributed=true",
                           f"hydra.run.dir={tmp_path / 'r'}"], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "torchrun --nproc_per_node=N -m coarse_gpu.cli distributed=true" in lines[0], lines
    assert not (tmp_path / "r" / "results.json").exists() and not (tmp_path / "r" / "config.yaml").exists()


def test_a_rank_of_torchrun_without_distributed_is_refused(monkeypatch):
    for k in LAUNCH_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(dj.DistributedSetupError, match="add distributed=true"):
        with dj.distributed_job(OmegaConf.create({"distributed": False})):
            pass


@pytest.mark.parametrize("override, key", [
    (["discretizer=mip"], "discretizer.solver=mip"),
    (["discretizer.solver=exact"], "discretizer.solver=exact"),
    (["discretizer.min_share=0.1"], "discretizer.min_share=0.1"),
    (["discretizer.max_share=0.5"], "discretizer.max_share=0.5"),
    (["discretizer.budget=1.0"], "discretizer.budget=1.0"),
    (["discretizer.group_parity.column=region", "discretizer.group_parity.max_gap=0.1"],
     "discretizer.group_parity.column='region'"),
    (["device=cuda:1"], "device='cuda:1'"),
])
def test_options_the_sharded_solve_refuses_are_config_errors(override, key):
    base = ["distributed=true"]
    problems = [p for p in config_problems(_compose(base + override)) if "distributed=true" in p]
    assert len(problems) == 1 and key in problems[0], problems
    assert not [p for p in config_problems(_compose(base)) if "distributed" in p]


def test_distributed_is_a_bool_key():
    with pytest.raises(ConfigCompositionException) as info:
        _compose(["distributed=maybe"])
    msg = explain_config_error(info.value)
    assert "'distributed'" in msg and "bool" in msg and "\n" not in msg
    assert _compose().distributed is False


def test_slurm_multinode_launcher_submits_nodes_x_tasks(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    job = ["launcher=slurm", "launcher.nodes=2", "launcher.tasks_per_node=4", "launcher.gpus_per_node=4",
           "distributed=true"]
    assert config_problems(_compose(job)) == []
    assert any("launcher.nodes x launcher.tasks_per_node = 8 tasks" in p and "distributed=true" in p
               for p in config_problems(_compose([o for o in job if not o.startswith("distributed")])))
    cfg = _compose(job + [f"hydra.sweep.dir={tmp_path}"], hydra_cfg=True)
    HydraConfig.instance().set_config(cfg)
    params = dict(instantiate(cfg.hydra.launcher).params)  # what `coarse-gpu -m launcher=slurm ...` submits with
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 4, 4)
    # the sbatch script, built as the plugin builds it (no `srun` here: the cluster check is bypassed)
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm import slurm

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = slurm._make_sbatch_string(command="coarse-gpu", folder=str(tmp_path), map_count=1,
                                       **executor._executor.parameters)
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "export SLURM_KILL_BAD_EXIT=1", "srun --unbuffered"):
        assert line in script, script


def test_a_slurm_task_finds_its_rank_and_the_master(monkeypatch):
    pytest.importorskip("submitit")
    for k in LAUNCH_VARS:
        monkeypatch.delenv(k, raising=False)
    slurm_env = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "8", "SLURM_JOB_NUM_NODES": "2",
                 "SLURM_NODEID": "1", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]"}
    for k, v in slurm_env.items():
        monkeypatch.setenv(k, v)
    w = dj.launch_env()
    assert (w["rank"], w["world_size"], w["local_rank"], w["launcher"]) == (5, 8, 1, "submitit-slurm")
    assert w["env"]["MASTER_ADDR"] == "gpu07" and 20000 <= int(w["env"]["MASTER_PORT"]) <= 60000
    assert (w["env"]["RANK"], w["env"]["WORLD_SIZE"], w["env"]["LOCAL_RANK"]) == ("5", "8", "1")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    assert dj.launch_env()["env"]["MASTER_PORT"] == w["env"]["MASTER_PORT"]  # every task meets at one port


def test_the_device_a_job_gives_its_rank_passes_the_config_rules(monkeypatch):
    """On CUDA each rank's config says cuda:<its LOCAL_RANK> (Job.job_config); run_experiment validates it
    again, so that device is allowed for that rank while a device=cuda:N the user gives is not."""
    cfg = _compose(["distributed=true", "device=cuda:1"])
    assert any("device='cuda:1'" in p for p in config_problems(cfg))
    monkeypatch.setattr(dj, "_JOB", dj.Job(1, 2, 1, "nccl", "cuda:1", "torchrun"))
    assert not [p for p in config_problems(cfg) if "device" in p]


def test_row_blocks_are_contiguous_and_balanced():
    from coarse_gpu.experiment.followers import row_offsets

    assert row_offsets(10, 3).tolist() == [0, 4, 7, 10]
    assert row_offsets(4, 4).tolist() == [0, 1, 2, 3, 4]


def test_a_rank_removes_only_its_own_empty_folder(tmp_path):
    """Under torchrun a rank may compose another ${now:...} folder than rank 0: it removes it when it
    holds nothing but an empty log, never rank 0's folder or one with anything in it."""
    main, own = tmp_path / "main", tmp_path / "own"
    for d in (main, own):
        d.mkdir()
        (d / "cli.log").write_text("")
    job = dj.Job(1, 2, 1, "gloo", "cpu", "torchrun", own_dir=own, folder={"run_dir": str(main)})
    job.drop_own_folder()
    assert not own.exists() and main.exists()
    own.mkdir()
    (own / "cli.log").write_text("a line\n")
    job.drop_own_folder()
    assert own.exists()
    dj.Job(1, 2, 1, "gloo", "cpu", "torchrun", own_dir=main, folder={"run_dir": str(main)}).drop_own_folder()
    assert main.exists()


@needs_gloo
def test_torchrun_job_shards_a_factored_profit_like_the_dense_one(tmp_path):
    """Above policy.estimates.DENSE_PROFIT_ENTRIES the profit stays factored (V, W): rank 0 then sends the ranks
    their rows of V and W, and the sharded solve must give what the dense single-process job gives."""
    driver = tmp_path / "factored_job.py"
    kinds = tmp_path / "profit_kinds"
    driver.write_text(
        "import json, os, sys\nfrom coarse_gpu.policy import estimates\n"
        "estimates.DENSE_PROFIT_ENTRIES = 1000  # every profit matrix of this job: factored\n"
        "seen, orig = [], estimates.ProfitEstimates.at_candidates\n"
        "def spy(self, *a, **k):\n    out = orig(self, *a, **k)\n    seen.append(type(out).__name__)\n    return out\n"
        "estimates.ProfitEstimates.at_candidates = spy\n"
        "from coarse_gpu.cli import main\nsys.argv[0] = 'coarse-gpu'\ntry:\n    main()\nfinally:\n"
        f"    open('{kinds}.' + os.environ['RANK'], 'w').write(json.dumps(seen))\n")
    single, shard = tmp_path / "single", tmp_path / "factored"
    _run(["-m", "coarse_gpu.cli", *SMALL, *BOOSTING, f"hydra.run.dir={single}"], tmp_path)
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(driver), "distributed=true",
          *SMALL, *BOOSTING, f"hydra.run.dir={shard}"], tmp_path)
    assert "FactoredProfit" in json.loads(Path(f"{kinds}.0").read_text())  # the limit took effect
    a, b = (json.loads((d / "results.json").read_text()) for d in (single, shard))
    for k in ("1", "3"):
        ot_a, ot_b = a["methods"]["ot"][k], b["methods"]["ot"][k]
        # the same segments, possibly numbered in another order: a factored profit's solve numbers its
        # segments otherwise than the dense one (a single-process factored run does the same)
        seg_a, seg_b = (sorted(zip(map(tuple, o["treatments"]), o["segment_sizes"])) for o in (ot_a, ot_b))
        assert seg_b == seg_a
        assert ot_b["expected_profit"] == pytest.approx(ot_a["expected_profit"], rel=1e-12)
