"""The declared profit structure: the accounting, the two-part learners, arm means and auto's choice."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from coarse_gpu.data import Accounting, AccountingError, PromotionsSimulator
from coarse_gpu.data.file import DataSchemaError, FileSpec, experiment_from_frame
from coarse_gpu.data.hurdle import ACCOUNTING, HurdlePromotionsSimulator
from coarse_gpu.models import ArmMeans, AutoCATE, CrossFitted, TwoPart
from coarse_gpu.models.serialize import from_state, to_state

NAMES = ("discount", "free_ship", "bonus_items")


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# ---------------------------------------------------------------------------------------------
# accounting
# ---------------------------------------------------------------------------------------------
def test_accounting_evaluates_expressions_and_profit_row_by_row():
    acc = Accounting(margin="0.40 - discount", cost_per_response="4*free_ship + 3*bonus_items",
                     cost_per_customer="0.10*free_ship + max(bonus_items - 1, 0)", names=NAMES)
    T = np.array([[0.0, 0.0, 0.0], [0.1, 1.0, 2.0], [0.3, 0.0, 1.0]])
    parts = acc.evaluate(T)
    np.testing.assert_allclose(parts["margin"], [0.40, 0.30, 0.10])
    np.testing.assert_allclose(parts["cost_per_response"], [0.0, 10.0, 3.0])
    np.testing.assert_allclose(parts["cost_per_customer"], [0.0, 1.1, 0.0])
    r = np.array([0.0, 1.0, 2.0])
    v = np.array([np.nan, 50.0, 20.0])  # no purchase: the value is ignored, NaN allowed
    np.testing.assert_allclose(acc.profit(r, v, T), [0.0, 50 * 0.30 - 10 - 1.1, 2 * (20 * 0.10 - 3)])


@pytest.mark.parametrize("expr, token", [
    ('__import__("os")', "__import__"), ("discount.real", "discount.real"), ("open('x')", "open"),
    ("discount[0]", "discount[0]"), ("lambda: 1", "lambda"), ("price * 2", "price"),
    ("1 if discount else 2", "if"), ("'a'", "'a'"), ("discount < 1", "<"), ("min(discount)", "min"),
])
def test_accounting_refuses_code_naming_the_key_and_token(expr, token):
    with pytest.raises(AccountingError) as err:
        Accounting(margin=expr, names=NAMES)
    assert "data.margin" in str(err.value) and token in str(err.value)


def test_simulators_accounting_reproduces_their_outcome():
    for trips in (8, 1):
        d = PromotionsSimulator(n_customers=3000, n_trips=trips, seed=3, declare_structure=True).sample()
        plain = PromotionsSimulator(n_customers=3000, n_trips=trips, seed=3).sample()
        np.testing.assert_array_equal(plain.outcome, d.outcome)  # declaring the structure changes no outcome
        assert plain.response is None and not plain.structured
        np.testing.assert_allclose(d.accounting.profit(d.response, d.value, d.treatment), d.outcome, atol=1e-9)
        assert np.all(np.isnan(d.value[d.response == 0])) and d.response.max() <= trips
    h = HurdlePromotionsSimulator(n_customers=4000, seed=1).sample()
    np.testing.assert_allclose(ACCOUNTING.profit(h.response, h.value, h.treatment), h.outcome)
    assert h.n_arms == 24 and 0.5 < 1 - h.response.mean() < 0.7
    # the truth is the accounting applied to the true purchase probability and basket
    p, m = h.truth.parts(h.arms)
    np.testing.assert_allclose(h.truth.profit(h.arms), p * (m * (0.45 - h.arms[:, 0]) - 6 * h.arms[:, 1]
                                                            - 4 * h.arms[:, 2]))
    # stratified design: loyal customers get control with probability 0.2, the others 1/24
    loyal = h.features["loyal"].to_numpy() == "yes"
    np.testing.assert_allclose(h.propensity[loyal & (h.arm == 0)], 0.2)
    np.testing.assert_allclose(h.propensity[~loyal], 1 / 24)


def _frame(n=400, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"cid": [f"C{i}" for i in range(n)], "x1": rng.standard_normal(n),
                       "discount": rng.choice([0.0, 0.2], n), "free_ship": rng.choice([0.0, 1.0], n)})
    df["bought"] = (rng.random(n) < 0.4).astype(float)
    df["spend"] = np.where(df["bought"] > 0, np.round(rng.lognormal(3, 1, n), 2), np.nan)
    df["profit"] = np.where(df["bought"] > 0, df["spend"] * (0.4 - df["discount"]) - 5 * df["free_ship"], 0.0)
    return df


def _spec(**kw):
    base = dict(features=["x1"], treatment=["discount", "free_ship"], outcome="profit", id="cid", min_per_arm=5,
                response="bought", value="spend", margin="0.4 - discount", cost_per_response="5*free_ship")
    base.update(kw)
    return FileSpec(**base)


def test_file_accounting_reproduces_the_profit_column_or_names_the_rows():
    df = _frame()
    d = experiment_from_frame(df, _spec())
    np.testing.assert_allclose(d.outcome, df["profit"].to_numpy())
    assert d.structured and d.accounting.names == ("discount", "free_ship")
    bad = df.copy()
    rows = np.flatnonzero(bad["bought"] > 0)[:2]
    bad.loc[rows, "profit"] += 1.0
    with pytest.raises(DataSchemaError) as err:
        experiment_from_frame(bad, _spec())
    msg = str(err.value)
    assert "2 row(s)" in msg and f"row {rows[0]} (cid='C{rows[0]}')" in msg
    assert f"{df['profit'][rows[0]]:.6g}" in msg and f"{bad['profit'][rows[0]]:.6g}" in msg
    # a wrong accounting is named the same way
    with pytest.raises(DataSchemaError, match="does not reproduce the profit column 'profit'"):
        experiment_from_frame(df, _spec(margin="0.5 - discount"))


def test_file_without_outcome_uses_the_accounting_and_checks_keys():
    df = _frame().drop(columns="profit")
    d = experiment_from_frame(df, _spec(outcome=None))
    np.testing.assert_allclose(d.outcome, _frame()["profit"].to_numpy())
    with pytest.raises(DataSchemaError, match="data.response is set but data.value is not"):
        experiment_from_frame(df, _spec(outcome=None, value=None))
    with pytest.raises(DataSchemaError, match="data.cost_per_response: 'shipping' is not a treatment column"):
        experiment_from_frame(df, _spec(outcome=None, cost_per_response="shipping"))
    with pytest.raises(DataSchemaError, match="value column 'spend': 1 row"):
        broken = df.copy()
        broken.loc[int(np.flatnonzero(df["bought"] > 0)[0]), "spend"] = np.nan
        experiment_from_frame(broken, _spec(outcome=None))


# ---------------------------------------------------------------------------------------------
# two-part learners
# ---------------------------------------------------------------------------------------------
def _purchase_data(n=2000, seed=0):
    """logit P(buy) = -0.8 + 1.0 t + 0.6 x0 (t in {0, 1}); value lognormal with mean exp(3 + 0.3 x1)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    t = rng.integers(0, 2, n).astype(float)
    r = (rng.random(n) < _sigmoid(-0.8 + 1.0 * t + 0.6 * X[:, 0])).astype(float)
    v = np.where(r > 0, np.exp(3 + 0.3 * X[:, 1]) * rng.lognormal(-0.125, 0.5, n), np.nan)
    acc = Accounting(margin="0.4 - 0.1*d", cost_per_response=2.0, cost_per_customer="0.5*d", names=["d"])
    return X, t, r, v, acc, acc.profit(r, v, t[:, None])


FAST_NN = {"max_epochs": 4, "hidden": 32, "n_ensemble": 1, "n_repr_layers": 2}


@pytest.mark.parametrize("base, params", [("gb_s", None), ("gb_t", None), ("tarnet", FAST_NN),
                                          ("dragonnet", FAST_NN), ("dose_vc", FAST_NN), ("dose_logit", FAST_NN)])
def test_two_part_learner_recovers_the_purchase_effect(base, params):
    X, t, r, v, acc, y = _purchase_data()
    m = TwoPart(base=base, accounting=acc, base_params=params, device="cpu").fit(X, t, y, response=r, value=v)
    R, V = m.predict_parts(X)
    true_effect = np.mean(_sigmoid(0.2 + 0.6 * X[:, 0]) - _sigmoid(-0.8 + 0.6 * X[:, 0]))  # ~0.21
    assert abs(np.mean(R[:, 1] - R[:, 0]) - true_effect) < 0.05
    assert m.response_loss_ == "bce" and np.all((R > 0) & (R < 1))
    assert abs(np.mean(V) / np.mean(np.exp(3 + 0.3 * X[:, 1])) - 1) < 0.15
    # the accounting combines the parts exactly
    np.testing.assert_allclose(m.predict_arms(X[:50]), R[:50] * (V[:50] * [0.4, 0.3] - 2.0) - [0.0, 0.5])


def test_two_part_picks_each_parts_tree_size_by_held_out_deviance():
    # an additive logit and a smooth log-basket: default-sized trees (31 leaves) fit noise, the held-out
    # deviance of each part picks smaller trees, and the chosen purchase model predicts new customers better
    from sklearn.metrics import log_loss

    X, t, r, v, acc, y = _purchase_data(4000, seed=3)
    tuned = TwoPart(base="gb_s", accounting=acc).fit(X, t, y, response=r, value=v)
    plain = TwoPart(base="gb_s", accounting=acc, complexity="default").fit(X, t, y, response=r, value=v)
    assert plain.leaf_nodes_.tolist() == [31, 31]
    assert tuned.leaf_nodes_[0] < 31 and tuned.leaf_nodes_[1] < 31
    Xn, tn, rn, *_ = _purchase_data(20000, seed=4)
    own = np.arange(len(tn)), tn.astype(int)
    p_tuned, p_plain = tuned.predict_parts(Xn)[0][own], plain.predict_parts(Xn)[0][own]
    assert log_loss(rn, p_tuned) < log_loss(rn, p_plain)
    # tree sizes given by the user are kept as given
    fixed = TwoPart(base="gb_s", accounting=acc, base_params={"max_leaf_nodes": 15}).fit(X, t, y, response=r, value=v)
    assert fixed.leaf_nodes_.tolist() == [15, 15]
    with pytest.raises(ValueError, match="complexity"):
        TwoPart(base="gb_s", complexity="small").fit(X, t, y, response=r, value=v)


def test_two_part_travels_through_crossfitting_and_saves():
    X, t, r, v, acc, y = _purchase_data(1200)
    cf = CrossFitted(TwoPart(base="gb_s", accounting=acc), n_folds=3).fit(X, t, y, response=r, value=v)
    oof = cf.predict_arms_oof()
    k0 = cf.models_[0][0]
    rows = np.flatnonzero(cf.fold_ == 0)
    np.testing.assert_allclose(oof[rows], k0.predict_arms(X[rows]))
    tensors, meta = to_state(k0)
    np.testing.assert_allclose(from_state(tensors, meta).predict_arms(X[:40]), k0.predict_arms(X[:40]))
    counts = r * 2  # a count response takes the Poisson loss
    m = TwoPart(base="gb_s", accounting=acc).fit(X, t, y, response=counts, value=v)
    assert m.response_loss_ == "poisson"
    with pytest.raises(ValueError, match="needs the behaviour"):
        TwoPart(base="gb_s").fit(X, t, y)


def test_arm_means_effects_do_not_vary_with_x():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 3))
    t = rng.integers(0, 3, 3000).astype(float)
    y = 2.0 * X[:, 0] + np.array([0.0, 1.0, -0.5])[t.astype(int)] + rng.standard_normal(3000)
    mu = ArmMeans(alpha=0.0).fit(X, t, y).predict_arms(X)
    d = mu - mu[:, :1]
    np.testing.assert_allclose(d, np.broadcast_to(d[0], d.shape))
    np.testing.assert_allclose(d[0], [0.0, 1.0, -0.5], atol=0.1)
    fitted = ArmMeans(alpha=0.0).fit(X, t, y)  # a saved policy's model reloads to the same predictions
    tensors, meta = to_state(fitted)
    np.testing.assert_array_equal(from_state(tensors, meta).predict_arms(X[:50]), fitted.predict_arms(X[:50]))


# ---------------------------------------------------------------------------------------------
# auto: nothing to personalize, or the structure
# ---------------------------------------------------------------------------------------------
def test_auto_says_nothing_to_personalize_on_a_noisy_constant_effect():
    rng = np.random.default_rng(1)
    n = 2000
    X = rng.standard_normal((n, 6))
    t = rng.integers(0, 3, n).astype(float)
    y = 1.0 + 0.5 * X[:, 0] + 0.4 * t + rng.standard_t(3, n) * 6.0  # the same effect for everyone, heavy noise
    auto = AutoCATE(candidates=("gb_s", "gb_t", "arm_means"), n_folds=3).fit(X, t, y)
    sel = auto.model_selection_
    assert auto.selected_ == "arm_means" and sel["rule"].startswith("one-standard-error")
    mu = auto.predict_arms(X[:20])
    np.testing.assert_allclose(np.ptp(mu - mu[:, :1], axis=0), 0.0, atol=1e-9)


def test_auto_chooses_a_two_part_model_where_the_basket_noise_hides_the_response():
    # who responds to the offer depends on x0 (a sign flip); the basket is lognormal with sigma 1.5
    rng = np.random.default_rng(2)
    n = 6000
    X = rng.standard_normal((n, 5))
    t = rng.integers(0, 2, n).astype(float)
    r = (rng.random(n) < _sigmoid(-1.0 + 2.0 * t * X[:, 0])).astype(float)
    v = np.where(r > 0, 60.0 * rng.lognormal(-1.125, 1.5, n), np.nan)
    acc = Accounting(margin=0.5, cost_per_customer="2*d", names=["d"])
    y = acc.profit(r, v, t[:, None])
    auto = AutoCATE(candidates=("gb_s", "arm_means", "twopart_gb_s"), n_folds=3).fit(
        X, t, y, response=r, value=v, accounting=acc)
    weights = auto.model_selection_["stack_weights"]  # the default combination: the stack leans on the structure
    assert auto.selected_.startswith("stack(twopart_gb_s") and weights["twopart_gb_s"] > 0.6, weights
    picked = AutoCATE(candidates=("gb_s", "arm_means", "twopart_gb_s"), n_folds=3, combine="select", blend=False).fit(
        X, t, y, response=r, value=v, accounting=acc)
    assert picked.selected_ == "twopart_gb_s"
    # without the declared structure the two-part candidate does not take part
    auto1 = AutoCATE(candidates=("gb_s", "arm_means", "twopart_gb_s"), n_folds=3, blend=False).fit(X, t, y)
    assert "twopart_gb_s" not in auto1.model_selection_["candidates"]
    with pytest.raises(ValueError, match="every candidate is a two-part learner, but fit got no response"):
        AutoCATE(candidates=("twopart_gb_s",), n_folds=3).fit(X, t, y)


def test_auto_weighs_the_dose_head_only_for_a_numeric_treatment():
    rng = np.random.default_rng(3)
    n = 1200
    X = rng.standard_normal((n, 3))
    t = rng.integers(0, 3, n).astype(float)
    y = X[:, 0] * t + rng.standard_normal(n)
    kw = dict(candidates=("gb_s", "dose_logit"), candidate_params={"dose_logit": FAST_NN}, n_folds=2,
              combine="select", blend=False, device="cpu")
    numeric = AutoCATE(**kw).fit(X, t, y)
    assert set(numeric.model_selection_["candidates"]) == {"gb_s", "dose_logit"}
    coded = AutoCATE(**kw).fit(X, t, y, numeric_treatment=False)  # t holds codes of labels
    assert set(coded.model_selection_["candidates"]) == {"gb_s"} and coded.selected_ == "gb_s"
    with pytest.raises(ValueError, match="every candidate is a dose model"):
        AutoCATE(candidates=("dose_logit",), n_folds=2).fit(X, t, y, numeric_treatment=False)


# ---------------------------------------------------------------------------------------------
# the CLI on a CSV with a declared structure
# ---------------------------------------------------------------------------------------------
def test_cli_file_with_declared_structure_runs_end_to_end(tmp_path):
    from hydra import compose, initialize_config_dir

    from coarse_gpu.cli import config_dir
    from coarse_gpu.experiment.config import register_configs
    from coarse_gpu.experiment.pipeline import run_experiment

    h = HurdlePromotionsSimulator(n_customers=1500, seed=4).sample()
    df = h.features[["recency", "frequency", "coupon_use", "loyal"]].copy()
    for j, c in enumerate(NAMES):
        df[c] = h.treatment[:, j]
    df["bought"], df["spend"], df["p"] = h.response, h.value, h.propensity
    df.to_csv(tmp_path / "h.csv", index=False)
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "data=file", f"data.path={tmp_path / 'h.csv'}", "data.features=[recency,frequency,coupon_use,loyal]",
            "data.categorical=[loyal]", "data.treatment=[discount,free_ship,bonus_items]", "data.propensity=p",
            "data.response=bought", "data.value=spend", "data.margin=0.45 - discount",
            "data.cost_per_response=6*free_ship + 4*bonus_items", "data.min_per_arm=5",
            "model=twopart", "model.base=tarnet", "model.max_epochs=1", "model.hidden=16", "model.n_ensemble=1",
            "model.n_folds=2", "discretizer.refine=false", "evaluation.k_values=[1,2]", "evaluation.n_boot=20",
            "logger=none", "quiet=true"])
    results = run_experiment(cfg, tmp_path / "run")
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["status"] == "complete" and results["n_customers"] == 1500
    assert res["profit_structure"]["accounting"]["margin"] == "0.45 - discount"
    ot = res["methods"]["ot"]["2"]
    assert np.isfinite(ot["dr_value"]) and sum(ot["segment_sizes"]) == 1500
    # the saved two-part policy reloads and assigns as the run's own model does
    from coarse_gpu.policy.io import load_policy

    pol = load_policy(tmp_path / "run" / "policies" / "ot_k2")
    new = df.drop(columns=[*NAMES, "bought", "spend", "p"]).head(300)
    X_new = pol.feature_schema.transform(new, "new")
    seg, prof = pol.assign_matrix(X_new)
    p_k = pol.model.predict_profit(X_new, pol.treatments)
    np.testing.assert_array_equal(seg, p_k.argmax(1))
    np.testing.assert_allclose(prof, p_k[np.arange(len(seg)), seg], rtol=1e-6)
    saved = json.loads((tmp_path / "run" / "policies" / "ot_k2" / "policy.json").read_text())
    assert "TwoPart" in json.dumps(saved["model"])
    again = load_policy(tmp_path / "run" / "policies" / "ot_k2").assign_matrix(X_new)
    np.testing.assert_array_equal(again[0], seg)


def test_api_takes_the_declared_structure():
    from coarse_gpu import CoarsePersonalizer

    X, t, r, v, acc, y = _purchase_data(800, seed=5)
    t = pd.DataFrame({"d": t})  # the accounting's expressions name the treatment columns
    cp = CoarsePersonalizer(k=2, model="twopart", n_folds=2, seed=0).fit(X, t, y, response=r, value=v,
                                                                         accounting=acc)
    assert cp.treatments_.shape == (2, 1) and isinstance(cp.model_.members()[0], TwoPart)
    y_bad = y.copy()
    y_bad[3] += 5.0
    with pytest.raises(ValueError, match="row 3: accounting"):
        CoarsePersonalizer(k=2, model="twopart", n_folds=2).fit(X, t, y_bad, response=r, value=v, accounting=acc)


@pytest.mark.parametrize("base", ["dose_logit", "dose_vc"])
def test_saved_two_part_dose_policy_reloads_and_scores_new_customers(tmp_path, base):
    # a TwoPart whose parts are dose heads: both networks travel in the saved policy, and
    # coarse-gpu-assign scores new customers exactly as the fitted model does
    from coarse_gpu import CoarsePersonalizer
    from coarse_gpu.assign_cli import run_assign

    rng = np.random.default_rng(6)
    n = 1500
    X = rng.standard_normal((n, 4))
    t = rng.integers(0, 2, n).astype(float)
    r = (rng.random(n) < _sigmoid(-0.5 + 2.0 * t * X[:, 0])).astype(float)  # the offer helps half, hurts half
    v = np.where(r > 0, 30.0 * rng.lognormal(-0.125, 0.5, n), np.nan)
    acc = Accounting(margin=0.5, cost_per_customer="1*d", names=["d"])
    cols = [f"x{j}" for j in range(4)]
    params = {"base": base, "max_epochs": 3, "hidden": 16, "n_ensemble": 1, "n_repr_layers": 1}
    cp = CoarsePersonalizer(k=2, model="twopart", model_params=params, n_folds=2, seed=0, device="cpu").fit(
        pd.DataFrame(X, columns=cols), pd.DataFrame({"d": t}), acc.profit(r, v, t[:, None]), response=r, value=v,
        accounting=acc)
    members = cp.model_.members()
    assert all(isinstance(m, TwoPart) and type(m.members_[0]).__name__ == {"dose_logit": "DoseLogit",
                                                                           "dose_vc": "DoseVC"}[base]
               for m in members)
    folder = cp.save(tmp_path / "pol")
    new = pd.DataFrame(np.random.default_rng(7).standard_normal((300, 4)), columns=cols)
    new.to_csv(tmp_path / "new.csv", index=False)
    got = pd.read_csv(run_assign({"policy": str(folder), "data.path": str(tmp_path / "new.csv"),
                                  "out": str(tmp_path / "a.csv")}))
    p = cp.predict_profit(new, cp.treatments_)  # (300, 2) the fitted model's profits at the K treatments
    np.testing.assert_array_equal(got["segment"].to_numpy(), cp.assign(new))
    np.testing.assert_allclose(got["predicted_profit"].to_numpy(), p.max(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(CoarsePersonalizer.load(folder).predict_profit(new, cp.treatments_), p,
                               rtol=1e-5, atol=1e-6)
