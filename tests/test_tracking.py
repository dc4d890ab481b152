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
