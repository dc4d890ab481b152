"""Per-epoch checkpoints: a training process SIGKILLed mid-epoch resumes and ends with the same model."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from coarse_gpu.models import TARNet

ROOT = Path(__file__).resolve().parents[1]

PARAMS = dict(hidden=16, n_repr_layers=2, n_head_layers=2, dropout=0.1, ema=0.5, batch_size=128,
              max_epochs=12, patience=4, lr=3e-3, device="cpu", seed=7, n_ensemble=1)

# The child trains a TARNet subclass that SIGKILLs its own process on the 3rd minibatch of the epoch
# after ``kill_after`` finished epochs, i.e. between two checkpoints, like a preempted cluster job.
CHILD = textwrap.dedent("""
    import json, os, signal, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from coarse_gpu.models import TARNet
    ckpt_dir, kill_after, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    params = json.loads(sys.argv[4])

    class Preempted(TARNet):
        calls = 0
        def _batch_loss(self, o, batch):
            if kill_after > 0 and len(self.history_) >= kill_after:
                Preempted.calls += 1
                if Preempted.calls == 3:
                    os.kill(os.getpid(), signal.SIGKILL)
            return super()._batch_loss(o, batch)

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1200, 5)); t = rng.integers(0, 3, size=1200)
    y = X[:, 0] * t + X[:, 1] + 0.5 * rng.normal(size=1200)
    m = Preempted(checkpoint_dir=ckpt_dir or None, **params).fit(X, t, y)
    np.save(out, m.predict_arms(X))
    json.dump({"history": m.history_, "resumed_from": m.resumed_from_epoch_, "best_epoch": m.best_epoch_},
              open(out + ".json", "w"))
""")


def _child(tmp_path, ckpt_dir, kill_after, name):
    out = str(tmp_path / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, ckpt_dir, str(kill_after), out, json.dumps(PARAMS)],
                          env=env, capture_output=True, text=True, timeout=120)
    return proc, out


def test_sigkilled_training_resumes_to_the_same_model(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    # 1. killed by SIGKILL during epoch 5 (4 epochs checkpointed)
    proc, _ = _child(tmp_path, str(ckpt_dir), 4, "killed")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    files = list(ckpt_dir.glob("Preempted-*.pt"))
    assert len(files) == 1 and not list(ckpt_dir.glob("*.tmp"))
    state = torch.load(files[0], weights_only=True)
    assert state["epoch"] == 4 and not state["finished"]
    # 2. the same command again: resumes at epoch 5 and finishes
    proc, resumed = _child(tmp_path, str(ckpt_dir), 0, "resumed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 3. an uninterrupted run without checkpoints, same seed and data, here (1 thread like the child)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1200, 5))
    t = rng.integers(0, 3, size=1200)
    y = X[:, 0] * t + X[:, 1] + 0.5 * rng.normal(size=1200)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = TARNet(**PARAMS).fit(X, t, y)
    finally:
        torch.set_num_threads(threads)

    info_r = json.loads(Path(resumed + ".json").read_text())
    info_p = {"history": ref.history_, "best_epoch": ref.best_epoch_}
    assert info_r["resumed_from"] == 4
    assert len(info_r["history"]) == len(info_p["history"]) > 4
    assert info_r["best_epoch"] == info_p["best_epoch"]
    for a, b in zip(info_r["history"], info_p["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6, abs=1e-9)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6, abs=1e-9)
    np.testing.assert_allclose(np.load(resumed + ".npy"), ref.predict_arms(X), rtol=1e-6, atol=1e-7)
    assert torch.load(files[0], weights_only=True)["finished"]


def _data(n=600, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    t = rng.integers(0, 2, size=n)
    return X, t, X[:, 0] * t + rng.normal(size=n) * 0.3


def test_finished_checkpoint_is_restored_without_training(tmp_path):
    X, t, y = _data()
    params = {**PARAMS, "max_epochs": 4}
    a = TARNet(checkpoint_dir=str(tmp_path), **params).fit(X, t, y)
    b = TARNet(checkpoint_dir=str(tmp_path), **params).fit(X, t, y)
    assert a.resumed_from_epoch_ == 0 and b.resumed_from_epoch_ == len(a.history_)
    np.testing.assert_array_equal(a.predict_arms(X), b.predict_arms(X))
    # other hyperparameters or other data: a separate checkpoint, never a stale one
    TARNet(checkpoint_dir=str(tmp_path), **{**params, "lr": 1e-3}).fit(X, t, y)
    c = TARNet(checkpoint_dir=str(tmp_path), **params).fit(*_data(seed=2))
    assert c.resumed_from_epoch_ == 0
    assert len(list(tmp_path.glob("TARNet-*.pt"))) == 3


def test_corrupt_checkpoint_is_moved_aside_with_a_warning(tmp_path, caplog):
    X, t, y = _data()
    params = {**PARAMS, "max_epochs": 2}
    a = TARNet(checkpoint_dir=str(tmp_path), **params).fit(X, t, y)
    path = a.checkpoint_path_
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with caplog.at_level("WARNING", logger="coarse_gpu"):
        b = TARNet(checkpoint_dir=str(tmp_path), **params).fit(X, t, y)
    assert b.resumed_from_epoch_ == 0
    assert str(path) in caplog.text and "could not be read" in caplog.text
    assert path.with_name(path.name + ".corrupt").exists() and path.exists()
    np.testing.assert_allclose(a.predict_arms(X), b.predict_arms(X), rtol=1e-6, atol=1e-7)
