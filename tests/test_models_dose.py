"""Continuous dose-response models (coarse_gpu.models.dose): recovery of a known smooth dose response,
better than arm interpolation off the arms, the predict API on any treatments, input validation.

Small (3,000 rows, tiny nets, one thread): each test runs in a few seconds on a shared 2-core CPU.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from coarse_gpu.models import ArmGrid, DoseLogit, DoseVC, TARNet
from coarse_gpu.models.dose import SplineBasis1D, TensorSplineBasis

FAST = dict(hidden=32, n_repr_layers=2, n_head_layers=1, batch_size=128, max_epochs=80, patience=10,
            lr=3e-3, device="cpu", seed=0, n_ensemble=1)
LEVELS = np.array([0.0, 0.1, 0.2, 0.3, 0.4])  # the randomized discount depths
GRID = np.linspace(0.025, 0.5, 20)  # evaluation grid up to 0.5, as the promotions treatment space
OFF = GRID[~np.isclose(GRID[:, None], LEVELS[None, :]).any(1)]  # 16 points: between and beyond the arms


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def truth(X, T):
    """(N, M) promotions-like profit at discounts T: basket value x margin left x purchase probability,
    pi(x, t) = v(x) (0.5 - t) sigmoid(a(x) + b(x) t), with individual v, a and discount sensitivity b."""
    a = -1.0 + 0.6 * X[:, 0]
    b = 15.0 * _sigmoid(3.0 * X[:, 1])
    v = 20.0 * np.exp(0.3 * X[:, 2])
    t = np.asarray(T, dtype=np.float64).reshape(-1)
    return v[:, None] * (0.5 - t[None, :]) * _sigmoid(a[:, None] + b[:, None] * t[None, :])


@pytest.fixture(scope="module")
def dose_data():
    """Discounts randomized over 5 levels 0..0.4; outcome noise sd 1 (truth sd ~2)."""
    rng = np.random.default_rng(0)
    n = 3000
    X = rng.standard_normal((n, 3)).astype(np.float32)
    t = LEVELS[rng.integers(0, len(LEVELS), n)]
    mu = truth(X, LEVELS)[np.arange(n), np.searchsorted(LEVELS, t)]
    y = mu + 1.0 * rng.standard_normal(n)
    Xt = rng.standard_normal((1000, 3)).astype(np.float32)
    return X, t, y, Xt


@pytest.fixture(scope="module")
def fitted(dose_data):
    X, t, y, _ = dose_data
    logit = DoseLogit(**FAST).fit(X, t, y)
    vc = DoseVC(**FAST).fit(X, t, y)
    return logit, vc


def _rmse(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


def test_recovers_known_dose_response_and_beats_arm_interpolation_off_the_arms(dose_data, fitted):
    """Off the arms (between them and beyond the largest arm, up to 0.5) both continuous heads beat
    TARNet + linear interpolation across arms fitted on the same data, and even the linear
    interpolation of the TRUE arm values; at the arms they are as accurate as TARNet."""
    X, t, y, Xt = dose_data
    true_off, true_arms = truth(Xt, OFF), truth(Xt, LEVELS)
    sd = float(true_off.std())
    tarnet = TARNet(**dict(FAST, n_head_layers=2)).fit(X, t, y)
    rmse_tarnet = _rmse(tarnet.predict_profit(Xt, OFF), true_off)
    W = ArmGrid.from_arms(LEVELS).weights(OFF, "linear")
    rmse_interp_truth = _rmse(true_arms @ W.T, true_off)
    logit, vc = fitted
    rmse_logit = _rmse(logit.predict_profit(Xt, OFF), true_off)
    rmse_vc = _rmse(vc.predict_profit(Xt, OFF), true_off)
    # measured: TARNet 0.71, interpolated truth 0.60, DoseLogit 0.26, DoseVC 0.30 (truth sd 2.0)
    assert rmse_logit < 0.6 * rmse_tarnet and rmse_vc < 0.6 * rmse_tarnet, (rmse_logit, rmse_vc, rmse_tarnet)
    assert max(rmse_logit, rmse_vc) < 0.75 * rmse_interp_truth, (rmse_logit, rmse_vc, rmse_interp_truth)
    assert max(rmse_logit, rmse_vc) < 0.2 * sd, (rmse_logit, rmse_vc, sd)
    rmse_tarnet_arms = _rmse(tarnet.predict_arms(Xt), true_arms)
    for m in fitted:  # measured 0.23 / 0.27 vs TARNet 0.30
        assert _rmse(m.predict_arms(Xt), true_arms) < 1.2 * rmse_tarnet_arms, type(m).__name__


def test_effects_are_personalized(dose_data, fitted):
    """Estimated individual effects pi(x, 0.25) - pi(x, 0) track the true ones (not just an ATE)."""
    _, _, _, Xt = dose_data
    true_eff = truth(Xt, [0.25])[:, 0] - truth(Xt, [0.0])[:, 0]
    for m in fitted:
        p = m.predict_profit(Xt, [0.0, 0.25])
        est = p[:, 1] - p[:, 0]
        assert np.corrcoef(est, true_eff)[0, 1] > 0.9, type(m).__name__
        assert _rmse(est, true_eff) < 0.5 * true_eff.std(), type(m).__name__


def test_predict_api_any_treatments_batched(dose_data, fitted):
    X, t, y, Xt = dose_data
    for m in fitted:
        assert np.array_equal(m.arms_, LEVELS[:, None])
        assert m.grid_ is not None and m.n_treatment_dims_ == 1
        P = m.predict_profit(Xt, OFF)
        assert P.shape == (len(Xt), len(OFF)) and P.dtype == np.float64
        # the device oracle gives the same numbers, any T form (array, tensor, list)
        orc = m.profit_oracle(Xt)
        Q = orc(torch.as_tensor(OFF[:, None]))
        assert isinstance(Q, torch.Tensor) and Q.shape == P.shape
        np.testing.assert_allclose(Q.numpy(), P, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(m.predict_arms(Xt), m.predict_profit(Xt, list(LEVELS)), atol=1e-5)
        # one scalar dose, and an extrapolated one (finite, no clipping error)
        assert m.predict_profit(Xt[:5], 0.3).shape == (5, 1)
        assert np.all(np.isfinite(m.predict_profit(Xt[:5], [1.5, -0.2])))
        assert m.history_ and m.best_epoch_ >= 1


def test_two_dimensional_doses_and_transforms():
    """2-D treatment with a log1p transform on the second lever: fits, and the basis is a tensor product."""
    rng = np.random.default_rng(1)
    n = 1500
    X = rng.standard_normal((n, 2)).astype(np.float32)
    arms = np.array([[d, s] for d in (0.0, 0.2, 0.4) for s in (0.0, 2.0, 4.0)])
    T = arms[rng.integers(0, len(arms), n)]
    y = (2 + X[:, 0]) * (0.5 - T[:, 0]) * _sigmoid(-1 + 6 * T[:, 0] + np.log1p(T[:, 1])) - 0.1 * T[:, 1]
    y = y + 0.1 * rng.standard_normal(n)
    kw = dict(FAST, max_epochs=15)
    m = DoseLogit(transforms=["identity", "log1p"], **kw).fit(X, T, y)
    assert m.transforms_ == ("identity", "log1p")
    assert m.predict_profit(X[:7], [[0.1, 1.0], [0.5, 3.0]]).shape == (7, 2)
    vc = DoseVC(n_basis=[3, 3], smoothness=1e-3, **kw).fit(X, T, y)
    assert vc.n_basis_ == (3, 3) and vc.network_.basis.n_basis == 9
    assert vc.predict_profit(X[:7], np.array([[0.1, 1.0]])).shape == (7, 1)


def test_spline_basis_partition_of_unity_and_linear_extrapolation():
    b = SplineBasis1D(np.array([0.3, 0.6]), 0.0, 1.0, 3)
    u = torch.linspace(0, 1, 21, dtype=torch.float64)
    B = b(u)
    assert B.shape == (21, 6)
    np.testing.assert_allclose(B.sum(1).numpy(), 1.0, atol=1e-12)
    assert float(B.min()) >= -1e-12
    # outside [0, 1] each basis function continues on a straight line
    out = b(torch.tensor([1.0, 1.5, 2.0], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(out[2] - out[1], out[1] - out[0], atol=1e-6)
    tb = TensorSplineBasis([b, SplineBasis1D(np.empty(0), 0.0, 4.0, 2)])
    assert tb(torch.tensor([[0.5, 1.0]], dtype=torch.float64)).shape == (1, 18)


def test_input_validation(dose_data):
    X, t, y, _ = dose_data
    with pytest.raises(RuntimeError, match="not fitted"):
        DoseVC(**FAST).predict_profit(X, [0.5])
    with pytest.raises(ValueError, match="single distinct value"):
        DoseVC(**FAST).fit(X, np.zeros(len(X)), y)
    with pytest.raises(ValueError, match="rows but X has"):
        DoseLogit(**FAST).fit(X, t[:-1], y)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN in column 1"):
        DoseVC(**FAST).fit(bad, t, y)
    with pytest.raises(ValueError, match="transforms has 2 entries"):
        DoseLogit(transforms=["identity", "log1p"], **FAST).fit(X, t, y)
    with pytest.raises(ValueError, match="is not one of"):
        DoseLogit(transforms="cube", **FAST).fit(X, t, y)
    with pytest.raises(ValueError, match="n_basis"):
        DoseVC(n_basis=1, **FAST).fit(X, t, y)
    with pytest.raises(ValueError, match="knots"):
        DoseVC(knots="random", **FAST).fit(X, t, y)
    with pytest.raises(ValueError, match="empty range"):
        DoseVC(t_low=[2.0], t_high=[1.0], **FAST).fit(X, t, y)
    with pytest.raises(ValueError, match="t must be"):
        DoseVC(**FAST).fit(X, np.zeros((len(X), 2, 2)), y)


def test_predict_rejects_bad_treatments(fitted, dose_data):
    _, _, _, Xt = dose_data
    m = fitted[1]
    with pytest.raises(ValueError, match=r"T must be an \(M, 1\)"):
        m.predict_profit(Xt, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN or inf"):
        m.predict_profit(Xt, [np.nan])
    with pytest.raises(ValueError, match="columns but the model was fitted with 3"):
        m.predict_profit(Xt[:, :2], [0.5])


def test_pipeline_builds_dose_models():
    """model=dose_logit | dose_vc: the composed Hydra config builds the classes with their options."""
    from hydra import compose, initialize_config_dir

    from coarse_gpu.cli import config_dir
    from coarse_gpu.experiment.config import register_configs
    from coarse_gpu.experiment.personalize import build_model

    register_configs()
    for name, cls in (("dose_logit", DoseLogit), ("dose_vc", DoseVC)):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"model={name}", "logger=none"])
        m = build_model(cfg.model, torch.device("cpu"), 0, False)
        assert isinstance(m, cls)
    assert m.degree == 3 and m.knots == "uniform"
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["model=dose_logit", "logger=none"])
    assert build_model(cfg.model, torch.device("cpu"), 0, False).transforms == ["identity", "log1p"]


def test_training_curves_png(fitted, tmp_path):
    from coarse_gpu.models.history import plot_history

    m = fitted[0]
    out = plot_history(m.history_, tmp_path / "curves.png", best_epoch=m.best_epoch_)
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="empty history"):
        plot_history([], tmp_path / "x.png")


def test_main_job_with_dose_vc(tmp_path):
    """model=dose_vc end to end on a tiny experiment: results.json has the RMSE on and off the arms,
    and the OT discretizer's refinement queries the model's device oracle off the arms."""
    import json

    from hydra import compose, initialize_config_dir

    from coarse_gpu.cli import config_dir
    from coarse_gpu.experiment.config import register_configs
    from coarse_gpu.experiment.pipeline import run_experiment

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "model=dose_vc", "model.n_ensemble=1", "model.n_folds=2", "data.n_customers=1500", "model.max_epochs=3", "model.hidden=16", "evaluation.n_boot=20",
            "discretizer.n_restarts=1", "evaluation.k_values=[2]", "logger=none", "quiet=true", "device=cpu",
            "evaluation.methods=[ot,grid]"])
    run_experiment(cfg, tmp_path)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "complete" and res["model"]["name"] == "dose_vc"
    for key in ("rmse_profit_grid", "rmse_profit_arms", "rmse_profit_off_arms"):
        assert np.isfinite(res["model"][key]), key
    assert (tmp_path / "training_curves.png").exists()
    assert len(res["methods"]["ot"]["2"]["treatments"]) == 2
