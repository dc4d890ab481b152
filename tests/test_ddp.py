"""Data-parallel training: a 2-process torchrun job on CPU with the gloo backend."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_process_gloo_ddp_training(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "scripts" / "train_ddp.py"), "--device", "cpu", "--n-customers", "3000", "--hidden", "32",
           "--max-epochs", "6", "--threads", "1", "--out", str(out), "--checkpoint-dir", str(tmp_path / "ckpt")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["backend"] == "gloo" and m["device"] == "cpu"
    assert m["weights_identical_across_ranks"] and len(m["weight_checksums"]) == 2
    assert m["epochs"] == 6
    # it learned: validation MSE (standardized outcome, 1.0 = a constant model) well below 1, and the
    # estimated profits at the arms beat the best constant per arm against the simulator's truth
    assert m["best_val_loss"] < 0.8
    assert m["rmse_profit_at_arms"] < m["rmse_constant_per_arm"]
    assert (out / "model.pt").exists()
    ckpts = list((tmp_path / "ckpt").glob("TARNet-*.pt"))  # only rank 0 wrote, once per epoch
    assert len(ckpts) == 1 and torch.load(ckpts[0], weights_only=True)["epoch"] == 6
