"""W&B tracking: offline writes a local run folder without network or login; disabled does nothing."""
from __future__ import annotations

import pytest

from coarse_gpu.experiment.tracking import Tracker

wandb = pytest.importorskip("wandb")


def test_offline_run_writes_a_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    tracker = Tracker.from_config({"name": "wandb", "mode": "offline", "project": "coarse_gpu_test"},
                                  tmp_path, {"seed": 3, "model": {"name": "tarnet"}})
    assert tracker.enabled
    tracker.log({"ot/share_of_full": 0.98, "K": 5})
    tracker.log_trace("trace", [{"iter": 0, "objective": 1.0}, {"iter": 1, "objective": 1.5}])
    tracker.summary({"final": 0.98})
    (tmp_path / "results.json").write_text("{}")
    tracker.save_file(tmp_path / "results.json")
    run_dir = tracker.run_dir
    tracker.finish()
    import wandb

    wandb.teardown()  # stop the W&B service: its writer has flushed the offline record (else racy under load)
    assert run_dir is not None and run_dir.parent == tmp_path / "wandb"
    assert run_dir.name.startswith("offline-run-")
    data_files = list(run_dir.glob("run-*.wandb"))
    assert data_files and data_files[0].stat().st_size > 0
    assert (run_dir / "files" / "results.json").exists()
    assert list((run_dir / "files" / "media" / "table").glob("trace_*.table.json"))
    assert b"tarnet" in data_files[0].read_bytes()  # the run's config is in the offline record


def test_environment_disables_tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracker = Tracker.from_config({"name": "wandb", "mode": "offline"}, tmp_path, {})
    assert not tracker.enabled
    tracker.log({"x": 1.0})  # no-ops, no files
    tracker.finish()
    assert not (tmp_path / "wandb").exists()


def test_logger_none_and_bad_values(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert not Tracker.from_config({"name": "none", "mode": "offline"}, tmp_path).enabled
    with pytest.raises(ValueError, match="logger.name"):
        Tracker.from_config({"name": "tensorboard"}, tmp_path)
    with pytest.raises(ValueError, match="logger.mode"):
        Tracker.from_config({"name": "wandb", "mode": "sometimes"}, tmp_path)


def test_failed_start_falls_back_to_disabled(tmp_path, monkeypatch):
    """A broken W&B start-up must not lose the run: the tracker turns itself off."""
    monkeypatch.delenv("WANDB_MODE", raising=False)

    def broken_init(*args, **kwargs):
        raise RuntimeError("simulated start-up failure")

    monkeypatch.setattr(wandb, "init", broken_init)
    tracker = Tracker.from_config({"name": "wandb", "mode": "offline"}, tmp_path, {})
    assert not tracker.enabled


def test_offline_run_logs_results_table_figures_and_policy_artifact(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    tracker = Tracker.from_config({"name": "wandb", "mode": "offline"}, tmp_path, {"seed": 0})
    assert tracker.enabled
    results = {"methods": {"ot": {"2": {"oracle_profit": 8.5, "share_of_full": 0.9, "dr_value": 8.4,
                                        "dr_ci": [8.2, 8.6], "treatments": [[0.1, 0.0], [0.3, 2.0]],
                                        "segment_sizes": [10, 20]}},
                           "single_best": {"1": {"oracle_profit": 7.0, "share_of_full": 0.7, "dr_value": 7.1,
                                                 "dr_ci": [6.9, 7.3], "treatments": [[0.2, 0.0]],
                                                 "segment_sizes": [30]}}}}
    tracker.log_results_table(results)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fig.savefig(tmp_path / "share_vs_k.png")
    plt.close(fig)
    tracker.log_image("share_vs_k", tmp_path / "share_vs_k.png")
    (tmp_path / "policies" / "ot_k2").mkdir(parents=True)
    (tmp_path / "policies" / "ot_k2" / "policy.json").write_text('{"treatments": [[0.1, 0.0]]}')
    assert tracker.log_artifact(tmp_path / "policies", name="policy-0_discretizer.k=2")
    assert not tracker.log_artifact(tmp_path / "missing", name="nothing")
    run_dir = tracker.run_dir
    tracker.finish()
    media = run_dir / "files" / "media"
    assert list((media / "table").glob("results_*.table.json"))
    assert list((media / "images").glob("share_vs_k_*.png"))
    # W&B's service may still be flushing the run file for a moment after finish() returns.
    import time

    record = next(run_dir.glob("run-*.wandb"))
    for _ in range(100):
        if b"policy-0_discretizer.k_2" in record.read_bytes():
            break
        time.sleep(0.1)
    assert b"policy-0_discretizer.k_2" in record.read_bytes()  # the policy artifact is in the record


def test_hanging_start_is_abandoned_after_the_timeout(tmp_path, monkeypatch, caplog):
    """No network: wandb.init may hang; the tracker gives up after a bounded wait and warns."""
    import time

    import coarse_gpu.experiment.tracking as tracking

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(tracking, "WATCHDOG_GRACE_S", 0.5)
    monkeypatch.setattr(wandb, "init", lambda *a, **k: time.sleep(60))
    t0 = time.perf_counter()
    with caplog.at_level("WARNING", logger="coarse_gpu"):
        tracker = Tracker.from_config({"name": "wandb", "mode": "online", "init_timeout_s": 0.5}, tmp_path, {})
    assert time.perf_counter() - t0 < 5
    assert not tracker.enabled and "W&B could not start" in caplog.text and "TimeoutError" in caplog.text


# A failing W&B start must not lose the run; the same command in the same run directory then resumes
# training from the per-epoch checkpoint and logs offline.
BROKEN_WANDB = """
import sys, wandb
def broken(*args, **kwargs):
    raise RuntimeError("simulated W&B outage")
wandb.init = broken
from coarse_gpu.cli import main
sys.argv = ["coarse-gpu", *sys.argv[1:]]
main()
"""

# grid search instead of the OT discretizer: the quickest full pipeline (the discretizer has its own tests)
FAST = ["model=tarnet", "model.n_ensemble=1", "model.n_folds=2", "data.n_customers=1500", "model.max_epochs=3", "model.hidden=16", "evaluation.n_boot=20",
        "evaluation.k_values=[2]", "evaluation.methods=[grid]", "quiet=true"]


def test_cli_run_survives_wandb_failure_then_reruns_offline_and_resumes(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    args = ["logger=wandb", "logger.mode=offline", f"hydra.run.dir={run_dir}", *FAST]
    proc = subprocess.run([sys.executable, "-c", BROKEN_WANDB, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "W&B could not start (RuntimeError: simulated W&B outage)" in proc.stderr + proc.stdout
    first = json.loads((run_dir / "results.json").read_text())
    assert first["status"] == "complete" and first["model"]["resumed_from_epoch"] == 0
    for name in ("config.yaml", "run.json", "cli.log", "table.txt", "share_vs_k.png"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "checkpoints").glob("TARNet-*.pt"))
    assert not (run_dir / "wandb").exists()

    exe = Path(sys.executable).parent / "coarse-gpu"
    proc = subprocess.run([str(exe), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    second = json.loads((run_dir / "results.json").read_text())
    assert second["model"]["resumed_from_epoch"] == 3  # training was restored, not repeated
    assert second["methods"]["grid"]["2"] == first["methods"]["grid"]["2"]
    assert second["model"]["best_val_loss"] == first["model"]["best_val_loss"]
    (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")
    media = wandb_run / "files" / "media"
    assert list((media / "table").glob("results_*.table.json"))
    assert list((media / "images").glob("share_vs_k_*.png"))
    assert (wandb_run / "files" / "results.json").exists()
