"""model=auto's stack (coarse_gpu.models.stack): the convex weights are the exact optimum, the cross-fitted
predictions never use a row's own pseudo-outcome, and the fitted AutoCATE deploys exactly that combination."""
import itertools

import numpy as np
import pytest

from coarse_gpu.models import AutoCATE
from coarse_gpu.models.select import decision_losses
from coarse_gpu.models.stack import convex_weights, cross_fitted_stack


def _noisy(truth, sd, rng):
    return truth + sd * rng.standard_normal(truth.shape)


def test_two_independent_errors_are_weighted_by_their_inverse_variances():
    # pred_c = truth + e_c, independent errors: the optimum is w_1 = s_2^2 / (s_1^2 + s_2^2)
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((40_000, 4))
    target = _noisy(truth, 2.0, rng)  # the pseudo-outcomes' own noise does not move the optimum
    w = convex_weights(target, np.stack([_noisy(truth, 1.0, rng), _noisy(truth, 0.5, rng)]))
    np.testing.assert_allclose(w, [0.2, 0.8], atol=0.02)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()


def test_the_weights_are_the_simplex_optimum_of_the_decision_loss():
    # three candidates, one of them pure noise and one biased in its arm contrasts: compare with a fine grid
    rng = np.random.default_rng(1)
    truth = rng.standard_normal((3000, 5))
    target = _noisy(truth, 1.0, rng)
    preds = np.stack([_noisy(truth, 0.7, rng), rng.standard_normal(truth.shape),
                      _noisy(truth, 0.4, rng) + np.linspace(0, 1, 5)])
    w = convex_weights(target, preds)

    def loss(v):
        return decision_losses(target, np.tensordot(v, preds, axes=1)).mean()

    grid = [np.array([a, b, 1 - a - b]) for a, b in itertools.product(np.linspace(0, 1, 101), repeat=2)
            if a + b <= 1 + 1e-12]
    best = min(grid, key=loss)
    assert loss(w) <= loss(best) + 1e-9  # no point of the grid does better
    np.testing.assert_allclose(w, best, atol=0.011)
    assert w[1] < min(w[0], w[2])  # pure noise only shrinks the others a little


def test_a_rows_stacked_prediction_does_not_use_its_own_pseudo_outcome():
    rng = np.random.default_rng(2)
    truth = rng.standard_normal((900, 3))
    preds = np.stack([_noisy(truth, 0.5, rng), _noisy(truth, 1.0, rng)])
    target = _noisy(truth, 1.0, rng)
    fold = np.arange(900) % 3
    oof, w = cross_fitted_stack(target, preds, fold)
    moved = target.copy()
    moved[fold == 1] += 50.0 * rng.standard_normal(((fold == 1).sum(), 3))  # wreck fold 1's pseudo-outcomes
    oof2, _ = cross_fitted_stack(moved, preds, fold)
    np.testing.assert_array_equal(oof2[fold == 1], oof[fold == 1])  # fold 1 never saw its own targets
    assert not np.allclose(oof2[fold != 1], oof[fold != 1])  # the other folds did
    np.testing.assert_allclose(w, convex_weights(target, preds))


def test_auto_deploys_the_stack_with_its_weights_and_reports_them():
    rng = np.random.default_rng(3)
    n = 3000
    X = rng.standard_normal((n, 4))
    t = rng.integers(0, 3, n).astype(float)
    y = X[:, 0] * t + 0.5 * np.sin(2 * X[:, 1]) * (t == 2) + rng.standard_normal(n)
    auto = AutoCATE(candidates=("gb_s", "gb_t", "arm_means"), n_folds=3, seed=0).fit(X, t[:, None], y)
    sel = auto.model_selection_
    w = sel["stack_weights"]
    assert set(w) == {"gb_s", "gb_t"} and sum(w.values()) == pytest.approx(1.0)
    assert auto.selected_.startswith("stack(") and sel["winner"] == auto.selected_
    parts = {c: AutoCATE(candidates=(c,), n_folds=3, seed=0).fit(X, t[:, None], y) for c in w}
    expect = sum(w[c] * parts[c].predict_arms(X[:50]) for c in w if w[c] > 1e-3) / sum(
        w[c] for c in w if w[c] > 1e-3)
    np.testing.assert_allclose(auto.predict_arms(X[:50]), expect, rtol=1e-9, atol=1e-9)
    # the stack's held-out loss is reported and no worse than the worse learner's
    losses = {c: r["decision_loss"] for c, r in sel["candidates"].items()}
    assert losses[auto.selected_] <= max(losses["gb_s"], losses["gb_t"])


def test_combine_is_checked_before_any_fit():
    with pytest.raises(ValueError, match="combine must be one of"):
        AutoCATE(combine="average").fit(np.zeros((10, 2)), np.zeros(10), np.zeros(10))


def test_auto_with_a_dose_winner_or_a_stack_led_by_one_runs_through_step_one(monkeypatch):
    # model=auto whose winner is a dose model scores through that ensemble's own oracle; a stack whose first
    # (heaviest) member is a dose model predicts through the arms like any blend (the default run crashed on it)
    import torch

    import coarse_gpu.models.select as select
    from coarse_gpu.data.simulator import PromotionsSimulator
    from coarse_gpu.experiment.composed import model_config
    from coarse_gpu.experiment.personalize import personalize
    from coarse_gpu.policy.estimates import is_dose_model

    d = PromotionsSimulator(n_customers=1500, seed=0).sample()
    cfg = model_config("auto")
    cfg.candidates, cfg.n_folds, cfg.max_epochs = ["dose_logit"], 2, 2
    model, est, _ = personalize(cfg, d, d, True, torch.device("cpu"), 0, False)
    assert model.selected_ == "dose_logit" and is_dose_model(model)
    np.testing.assert_allclose(est.profit_at(d.arms), est.mu_arms, rtol=1e-5, atol=1e-4)  # its oracle at the arms

    def dose_heavy(target, preds, fold):  # the stack, with the weights of a dose-led mix
        w = np.array([0.7, 0.3])
        return np.tensordot(w, preds, axes=1), w

    monkeypatch.setattr(select, "cross_fitted_stack", dose_heavy)
    cfg.candidates = ["dose_logit", "gb_s"]
    model, est, _ = personalize(cfg, d, d, True, torch.device("cpu"), 0, False)
    assert model.selected_ == "stack(dose_logit+gb_s)" and not is_dose_model(model)
    parts = model.model_.members_
    np.testing.assert_allclose(model.predict_arms(d.X[:20]),
                               0.7 * parts[0].predict_arms(d.X[:20]) + 0.3 * parts[1].predict_arms(d.X[:20]))
    np.testing.assert_allclose(est.profit_at(d.arms), est.mu_arms)
