"""Step-1 learners beyond the networks: boosted trees as arrays, the S/T/DR learners, adaptive
defaults, input scaling, ensembles and the cross-validated model choice (``AutoCATE``).

Every effect below is known in closed form, so each test checks an estimate against the truth.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingRegressor

from coarse_gpu.models import AutoCATE, DRLearner, GBSLearner, GBTLearner, TARNet
from coarse_gpu.models.defaults import resolve
from coarse_gpu.models.scaling import apply_scaling, fit_scaling
from coarse_gpu.models.select import decision_losses, pseudo_outcomes
from coarse_gpu.models.serialize import from_state, to_state
from coarse_gpu.models.trees import BoostedTrees

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NET = dict(hidden=16, n_repr_layers=2, n_head_layers=1, max_epochs=15, patience=4, device="cpu", n_ensemble=1)


def binary(n=3000, seed=0):
    """Randomized binary treatment, tau(x) = 2 + 2 * 1[x1 > 0] - x2 (a step and a slope)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    t = rng.integers(0, 2, n).astype(float)
    tau = 2.0 + 2.0 * (X[:, 1] > 0) - X[:, 2]
    y = np.sin(2 * X[:, 0]) + X[:, 3] + t * tau + rng.standard_normal(n)
    return X, t, y, tau


def dose_arms(n=4000, n_arms=8, seed=0):
    """Eight dose levels sharing one structure: mu(x, t) = x0 + 3 x1 t (500 rows per arm)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    levels = np.linspace(0.0, 0.7, n_arms)
    t = levels[rng.integers(0, n_arms, n)]
    mu = X[:, [0]] + 3.0 * X[:, [1]] * levels[None, :]
    y = X[:, 0] + 3.0 * X[:, 1] * t + rng.standard_normal(n)
    return X, t, y, mu, levels


def test_boosted_tree_arrays_predict_bit_for_bit_like_the_estimator():
    X, _, y, _ = binary(4000)
    est = HistGradientBoostingRegressor(random_state=0).fit(X, y)
    trees = BoostedTrees.from_estimator(est)
    np.testing.assert_array_equal(trees.predict(X), est.predict(X))
    np.testing.assert_array_equal(trees.predict(X, use_sklearn=False), est.predict(X))  # the numpy fallback
    again = BoostedTrees.from_arrays(trees.to_arrays())
    np.testing.assert_array_equal(again.predict(X), est.predict(X))
    bad = trees.to_arrays()
    bad["node_left"] = bad["node_left"] + 10_000
    with pytest.raises(ValueError, match="points outside its tree"):
        BoostedTrees.from_arrays(bad)


@pytest.mark.parametrize("cls", [GBSLearner, GBTLearner, DRLearner])
def test_each_boosting_learner_recovers_a_known_effect(cls):
    X, t, y, tau = binary(6000, seed=1)
    Xn, _, _, tau_n = binary(2000, seed=2)
    model = cls(seed=0).fit(X, t, y)
    p = model.predict_profit(Xn, [0, 1])
    tau_hat = p[:, 1] - p[:, 0]
    rmse = float(np.sqrt(np.mean((tau_hat - tau_n) ** 2)))
    constant = float(np.sqrt(np.mean((tau_n - tau_n.mean()) ** 2)))  # ~1.4: the best constant effect
    assert rmse < 0.45 * constant, (cls.__name__, rmse, constant)
    # the step in x1 is found in the right direction, not only in size
    assert tau_hat[Xn[:, 1] > 0.5].mean() - tau_hat[Xn[:, 1] < -0.5].mean() > 1.2
    np.testing.assert_allclose(model.predict_arms(Xn), p)  # the arms are 0 and 1


def test_pseudo_outcomes_are_unbiased_and_the_decision_loss_ranks_by_true_error():
    """E[Gamma_ia | x] = pi_i(a) in a randomized experiment whatever mu is (here mu = 0); and the
    decision loss of the truth is smaller than that of a wrong model by their true squared error."""
    rng = np.random.default_rng(0)
    n, A = 200_000, 3
    pi = np.array([0.0, 1.0, 3.0])[None, :] + rng.standard_normal((n, 1))
    arm = rng.integers(0, A, n)
    y = pi[np.arange(n), arm] + rng.standard_normal(n)
    gamma = pseudo_outcomes(y, arm, np.full(n, 1.0 / A), np.zeros((n, A)))
    np.testing.assert_allclose(gamma.mean(0), pi.mean(0), atol=0.05)
    wrong = pi + np.array([0.0, 0.5, -0.5])[None, :]  # right level, wrong differences between arms
    gain = decision_losses(gamma, wrong).mean() - decision_losses(gamma, pi).mean()
    centred = (wrong - wrong.mean(1, keepdims=True)) - (pi - pi.mean(1, keepdims=True))
    assert gain == pytest.approx(float((centred ** 2).mean(1).mean()), rel=0.1)


def test_auto_picks_the_pooled_learner_where_the_arms_share_one_structure():
    """Eight arms with one shared dose response: the S-learner pools them, the T-learner sees 1/8 of
    the rows per arm. The decision loss must say so, and the true errors agree."""
    X, t, y, mu, levels = dose_arms()
    auto = AutoCATE(candidates=("gb_t", "gb_s"), combine="select", blend=False, n_folds=3, seed=0).fit(X, t, y)
    sel = auto.model_selection_
    assert auto.selected_ == "gb_s" and sel["winner"] == "gb_s" and sel["propensity"] == "estimated"
    gap = sel["candidates"]["gb_t"]["decision_loss"] - sel["candidates"]["gb_s"]["decision_loss"]
    assert gap > 3 * sel["candidates"]["gb_t"]["se_diff_vs_winner"]
    true_err = {c: float(np.mean(((auto_oof - auto_oof.mean(1, keepdims=True)) - (mu - mu.mean(1, keepdims=True))) ** 2))
                for c, auto_oof in (("chosen", auto.oof_arms_),)}
    gbt = GBTLearner(seed=0).fit(X, t, y).predict_arms(X)  # in-sample, so only an upper bound on its quality
    assert true_err["chosen"] < float(np.mean(((gbt - gbt.mean(1, keepdims=True)) - (mu - mu.mean(1, keepdims=True))) ** 2))
    np.testing.assert_array_equal(auto.arms_[:, 0], levels)
    from coarse_gpu.experiment.steps import n_fold_models as _n_fold_models

    assert _n_fold_models(auto) == 3  # results.json model.n_fold_models: the winner's cross-fitted folds
    assert _n_fold_models(GBTLearner(seed=0)) is None


def test_auto_drops_a_crippled_candidate_and_blends_only_when_it_scores_better():
    X, t, y, tau = binary(3000, seed=3)
    crippled = {"gb_s": {"max_iter": 1, "learning_rate": 0.01}}  # a near-constant model
    auto = AutoCATE(candidates=("gb_t", "gb_s"), candidate_params=crippled, n_folds=3, seed=0,
                    combine="select").fit(X, t, y)
    losses = {c: r["decision_loss"] for c, r in auto.model_selection_["candidates"].items()}
    assert set(losses) == {"gb_t", "gb_s", "blend(gb_t+gb_s)"}
    assert auto.selected_ == min(losses, key=losses.get) == "gb_t"


def test_saved_auto_model_reloads_and_predicts_identically():
    X, t, y, tau = binary(1500, seed=4)
    auto = AutoCATE(candidates=("tarnet", "gb_t"), candidate_params={"tarnet": NET}, n_folds=2, device="cpu",
                    seed=0).fit(X, t, y)
    tensors, meta = to_state(auto)
    again = from_state(tensors, meta)
    np.testing.assert_array_equal(again.predict_arms(X), auto.predict_arms(X))
    assert again.selected_ == auto.selected_
    assert not any("oof" in k for k in tensors)  # training-time estimates are not part of the model


def test_adaptive_defaults_count_steps_and_keep_explicit_values():
    small = resolve({"batch_size": None, "max_epochs": None, "patience": None, "arm_heads": "auto",
                     "n_ensemble": "auto", "weight_decay": None, "val_fraction": 0.2}, 672, 2)
    assert small == {"batch_size": 64, "max_epochs": 300, "patience": 30, "arm_heads": "separate", "n_ensemble": 5,
                     "weight_decay": 1e-3}
    big = resolve({"batch_size": None, "max_epochs": None, "patience": None, "arm_heads": "auto",
                   "n_ensemble": "auto", "weight_decay": None, "val_fraction": 0.2}, 400_000, 15)
    assert big["batch_size"] == 512 and big["n_ensemble"] == 1 and big["arm_heads"] == "conditioned"
    assert big["patience"] == 8 and big["max_epochs"] == 48  # 625 steps per epoch, 30k steps
    mid = resolve({"batch_size": None, "max_epochs": None, "patience": None, "val_fraction": 0.2}, 40_000, 15)
    assert mid == {"batch_size": 512, "max_epochs": 300, "patience": 10}  # 63 steps per epoch
    assert resolve({"batch_size": 100, "n_ensemble": 2, "val_fraction": 0.0}, 672, 2) == {"batch_size": 100,
                                                                                        "n_ensemble": 2}


def test_heavy_tailed_columns_are_squashed_and_the_rest_only_standardized():
    rng = np.random.default_rng(0)
    n = 5000
    X = np.column_stack([rng.standard_normal(n), np.exp(2 * rng.standard_normal(n)), rng.integers(0, 2, n),
                         rng.poisson(0.1, n) * 100.0 + 50_000])  # skew 3.2
    st = fit_scaling(X, "auto")
    assert st["x_log_"].tolist() == [False, True, False, True]
    z = apply_scaling(X, st["x_mean_"], st["x_scale_"], st["x_log_"], st["x_center_"], st["x_spread_"])
    raw = np.abs((X[:, 1] - X[:, 1].mean()) / X[:, 1].std()).max()  # ~50 sd: one customer would dominate
    assert np.all(np.abs(z) <= 8.0) and np.abs(z[:, 1]).max() < 0.2 * raw  # the lognormal column is tamed
    assert np.all(np.diff(z[np.argsort(X[:, 1]), 1]) >= 0)  # monotone: the order of customers is kept
    np.testing.assert_allclose(z[:, 0], (X[:, 0] - X[:, 0].mean()) / X[:, 0].std(), rtol=1e-5, atol=1e-6)
    plain = fit_scaling(X, "standard")
    assert not plain["x_log_"].any()


def test_an_ensemble_averages_its_members_and_member_zero_is_the_single_model():
    X, t, y, tau = binary(800, seed=5)
    ens = TARNet(**dict(NET, n_ensemble=3), seed=11).fit(X, t, y)
    single = TARNet(**NET, seed=11).fit(X, t, y)
    assert len(ens.members_) == 3 and [m.seed for m in ens.members_] == [11, 12, 13]
    np.testing.assert_array_equal(ens.members_[0].predict_arms(X), single.predict_arms(X))
    np.testing.assert_allclose(ens.predict_arms(X), np.mean([m.predict_arms(X) for m in ens.members_], 0),
                               rtol=1e-12, atol=1e-12)
    again = from_state(*to_state(ens))
    np.testing.assert_array_equal(again.predict_arms(X), ens.predict_arms(X))
    assert TARNet(**dict(NET, n_ensemble="auto")).fit(X, t, y).n_ensemble_ == 5  # 800 rows: five networks
    torch.manual_seed(0)


def test_cross_fitting_in_worker_processes_gives_the_same_models_as_in_process():
    from coarse_gpu.models import CrossFitted

    X, t, y, _ = binary(12_000, seed=6)
    kw = dict(NET, max_epochs=3)
    seq = CrossFitted(TARNet(**kw), n_folds=2, n_jobs=1).fit(X, t, y)
    par = CrossFitted(TARNet(**kw), n_folds=2, n_jobs=2).fit(X, t, y)
    np.testing.assert_array_equal(seq.predict_arms_oof(), par.predict_arms_oof())
    np.testing.assert_array_equal(seq.predict_arms(X[:100]), par.predict_arms(X[:100]))
