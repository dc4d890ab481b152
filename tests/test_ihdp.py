"""IHDP (Hill 2011, response surface B, shipped with econml): TARNet and DragonNet estimate individual
effects out of sample far better than a constant-effect model.

A short version of experiments/ihdp/run.py (which runs 10 replications with the full architecture;
its figures are in the README): two replications with strongly heterogeneous effects (true CATE sd
6.6 and 6.1), small networks, at most 60 epochs. Bounds: sqrt(PEHE) at most 0.4 x the constant-effect
model's (which scores ~6 here) and at most 2.0 in absolute terms; ATE error at most 0.6.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("econml", reason="econml is not installed (pip install econml, or the [real] extra): "
                    "it ships the IHDP data")

import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "ihdp_run", Path(__file__).resolve().parents[1] / "experiments" / "ihdp" / "run.py")
ihdp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ihdp)

REPS = (0, 6)  # heterogeneous surfaces: the constant-effect model fails them


def test_tarnet_and_dragonnet_beat_constant_effect_on_ihdp(monkeypatch):
    monkeypatch.setattr(ihdp, "PARAMS", dict(ihdp.PARAMS, hidden=64, head_hidden=32, n_repr_layers=2, patience=10))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reps = [ihdp.replicate(r, max_epochs=60) for r in REPS]
    finally:
        torch.set_num_threads(n)
    s = ihdp.summarize(reps)
    const = s["constant"]["sqrt_pehe_mean"]
    assert const > 4.0, s  # these surfaces are heterogeneous
    for name in ("tarnet", "dragonnet"):
        assert s[name]["sqrt_pehe_mean"] < min(2.0, 0.4 * const), (name, s)
        assert s[name]["ate_error_mean"] < 0.6, (name, s)
