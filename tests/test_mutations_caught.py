"""Tests written against planted one-line bugs the rest of the suite missed (issue 18).

Each test checks a direction, an edge or a realistic scale, not only a magnitude: a sign flip, a
skipped candidate, dropped feature scaling, a switched-off check or a skipped update makes it fail.
``scripts/mutation_check.py`` plants these bugs (and others) and runs the suite against them.
"""
from __future__ import annotations

import numpy as np
import pytest

from coarse_gpu.data.file import DataSchemaError, check_frame, experiment_from_frame
from coarse_gpu.discretize import discretize
from coarse_gpu.discretize.exact import enumerate_optimum
from coarse_gpu.models import DragonNet, TARNet
from coarse_gpu.policy import grid_search, kmeans_features
from coarse_gpu.policy.io import deployable, load_policy, save_policy

from test_data_file import frame, spec
from test_scorer_safety import REAL_SPEC, realistic_frame, single

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- DragonNet: the targeted-regularization correction points the right way ---------------------
def test_dragonnet_epsilon_moves_predictions_so_the_aipw_equation_holds():
    """At a stationary point in epsilon_a, sum_{i: a_i = a} (y_i - mu_a(x_i) - eps_a / e_i) / e_i = 0.

    A small network cannot fit y = 3 x0^2, and the propensities depend on x0, so the plain heads leave
    a large weighted residual r_a = sum (y - mu) / e. The fitted epsilon must have r_a's sign and shrink
    the estimating equation's residual; with the correction's sign flipped in training (which is
    symmetric in epsilon) it would have the opposite sign and double the residual instead.
    """
    rng = np.random.default_rng(0)
    n = 2000
    X = rng.standard_normal((n, 2)).astype(np.float32)
    logits = np.stack([np.zeros(n), 2 * X[:, 0], -2 * X[:, 0]], axis=1)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    arm = (rng.random(n)[:, None] > np.cumsum(probs, 1)).sum(1)
    y = 3 * X[:, 0] ** 2 + arm + 0.3 * rng.standard_normal(n)
    p = probs[np.arange(n), arm]
    model = single(DragonNet, hidden=2, n_repr_layers=1, n_head_layers=1, batch_size=256, max_epochs=30, patience=100,
                      val_fraction=0.0, device="cpu", seed=0).fit(X, arm, y, propensity=p)
    assert model.used_known_propensity_
    mu = model.predict_arms(X)[np.arange(n), arm]
    e = np.maximum(p, model.propensity_clip)
    checked = 0
    for a in range(3):
        s = arm == a
        r_plain = np.sum((y[s] - mu[s]) / e[s]) / n
        r_targeted = np.sum((y[s] - mu[s] - model.epsilon_[a] / e[s]) / e[s]) / n
        eps_star = np.sum((y[s] - mu[s]) / e[s]) / np.sum(1.0 / e[s] ** 2)  # the exact minimizer in eps_a
        if abs(r_plain) < 0.3:
            continue  # the heads already satisfy the equation here: no direction to check
        checked += 1
        assert np.sign(model.epsilon_[a]) == np.sign(eps_star), (a, model.epsilon_[a], eps_star)
        assert abs(r_targeted) < abs(r_plain), (a, r_plain, r_targeted)
    assert checked >= 2
    # targeted predictions add epsilon_a / e_a(x) (same direction as the training correction)
    targeted = single(DragonNet, hidden=2, n_repr_layers=1, n_head_layers=1, batch_size=256, max_epochs=30, patience=100,
                         val_fraction=0.0, device="cpu", seed=0, targeted_predictions=True).fit(X, arm, y, propensity=p)
    np.testing.assert_allclose(targeted.epsilon_, model.epsilon_)
    shift = targeted.predict_arms(X[:50]) - model.predict_arms(X[:50])
    assert np.all(np.sign(shift) == np.sign(model.epsilon_)[None, :])


# ---- exact K-subset enumeration: every candidate is a candidate ---------------------------------
def _planted(n_per=20, m=9, best=(0, 4, 8), seed=0):
    """Three groups of customers, each with a strong favourite among ``best``; every other column is a
    compromise worth less to everybody. The unique optimal 3-subset is ``best``."""
    rng = np.random.default_rng(seed)
    rows = []
    for fav in best:
        r = 5.0 + 0.1 * rng.random((n_per, m))
        r[:, fav] = 10.0 + 0.1 * rng.random(n_per)
        rows.append(r)
    return np.vstack(rows)


def test_enumeration_finds_an_optimum_that_needs_the_first_and_the_last_candidate():
    P = _planted()
    S, val = enumerate_optimum(P, 3)
    assert S.tolist() == [0, 4, 8]
    assert val == pytest.approx(P[:, [0, 4, 8]].max(1).sum())
    # the capacitated path enumerates on its own loop: the same optimum with non-binding shares
    S2, val2 = enumerate_optimum(P, 3, min_share=0.2, max_share=0.5)
    assert S2.tolist() == [0, 4, 8] and val2 == pytest.approx(val)
    # and the dispatcher's exact solver agrees
    res = discretize(P, 3, solver="exact", device="cpu")
    assert sorted(res.candidate_index.tolist()) == [0, 4, 8]


# ---- Lloyd: the location step moves a bad start --------------------------------------------------
def test_lloyd_moves_a_start_far_from_the_optimum():
    P = _planted(best=(0, 4, 8))
    start = [1, 2, 3]  # every segment non-empty, none of the optimal treatments
    res = discretize(P, 3, solver="lloyd", init=start, n_restarts=1, device="cpu", dtype="float64")
    assert sorted(res.candidate_index.tolist()) == [0, 4, 8]
    assert res.objective == pytest.approx(P[:, [0, 4, 8]].max(1).sum())
    assert res.objective > P[:, start].max(1).sum() + 100.0


# ---- a saved policy keeps the feature scaling (realistic units) ---------------------------------
@pytest.fixture(scope="module")
def real_units(tmp_path_factory):
    df = realistic_frame(1500, seed=0)
    data = experiment_from_frame(df, REAL_SPEC)
    assert data.X[:, data.feature_names.index("income")].mean() > 1e4  # dollars, not standardized units
    model = single(TARNet, hidden=16, max_epochs=5, device="cpu", seed=0).fit(data.X, data.treatment, data.outcome)
    return data, model, tmp_path_factory.mktemp("real")


def test_saved_policy_keeps_the_feature_scaling_in_realistic_units(real_units):
    data, model, tmp = real_units
    cand = data.arms
    profit = model.predict_profit(data.X, cand)
    new = realistic_frame(400, seed=9)
    X_new = experiment_from_frame(new, REAL_SPEC).X
    for name, pol in (("grid", grid_search(model.predict_arms(data.X), model.arms_, 2)),
                      ("kmeans_features", kmeans_features(data.X, profit, cand, 3, seed=0))):
        loaded = load_policy(save_policy(tmp / name, deployable(pol, model, data, cand, data.X, profit)))
        # the loaded model predicts exactly what the fitted one does on customers in dollars and years
        np.testing.assert_allclose(loaded.model.predict_arms(X_new), model.predict_arms(X_new), rtol=1e-6, atol=1e-6)
        # the nearest-centroid rule standardizes as k-means did: it gives back the policy's own segments
        seg, _ = loaded.assign_matrix(data.X)
        assert np.mean(seg == pol.assignment) >= 0.99, name


# ---- the categorical missing-value check names itself -------------------------------------------
def test_missing_categorical_values_are_reported_as_missing():
    """A NaN in a categorical column would otherwise become the level 'nan' (or surface later as a
    misleading 'level not seen in training'): the check names the column, the count and the row."""
    df = frame(600)
    df["tier"] = df["tier"].astype(object)
    df.loc[[3, 17], "tier"] = np.nan
    with pytest.raises(DataSchemaError) as exc:
        check_frame(df, spec())
    assert exc.value.problems == ["feature column 'tier' (categorical): 2 row(s) are missing (e.g. row 3)"]
    with pytest.raises(DataSchemaError, match=r"feature column 'tier' \(categorical\): 2 row\(s\) are missing"):
        experiment_from_frame(df, spec())


def test_data_warnings_reach_the_experiment_meta():
    df = frame(600)
    df["profit"] = 10.0 * df["discount"] + df["duration_weeks"]  # a function of the arm alone
    data = experiment_from_frame(df, spec())
    assert [w.split(":")[0] for w in data.meta["warnings"]] == ["outcome_depends_only_on_arm"]
    clean = experiment_from_frame(frame(600), spec())
    assert clean.meta["warnings"] == []


def test_splits_are_disjoint_and_cover_the_customers():
    """Evaluation is honest only if no held-out customer was also trained on."""
    data = experiment_from_frame(frame(601), spec())
    train, test = data.split((0.6, 0.4), seed=3)
    assert len(train) + len(test) == 601 and len(train) == 361
    ids = lambda part: {tuple(r) for r in np.round(part.X[:, :5], 12)}  # noqa: E731 (continuous: unique rows)
    assert len(ids(data)) == 601 and not ids(train) & ids(test) and ids(train) | ids(test) == ids(data)


# ---- habits: units, small gaps, the number a reader sees ----------------------------------------
def test_models_do_not_depend_on_the_features_units():
    """Inputs are standardized, so income in dollars or in thousands of dollars trains the same network
    (up to float rounding); a model that only centred its inputs would see dollars 1000x larger."""
    data = experiment_from_frame(realistic_frame(1000, seed=4), REAL_SPEC)
    j = data.feature_names.index("income")
    X_k = data.X.copy()
    X_k[:, j] /= 1000.0
    kw = dict(hidden=16, max_epochs=4, device="cpu", seed=0)
    a = single(TARNet, **kw).fit(data.X, data.treatment, data.outcome).predict_arms(data.X)
    b = single(TARNet, **kw).fit(X_k, data.treatment, data.outcome).predict_arms(X_k)
    assert np.max(np.abs(a - b)) < 1e-3 * np.std(a)


def test_certificate_rejects_an_assignment_a_hair_from_optimal():
    """A customer left 1e-4 of the profit range below its best column is not optimal: the certificate's
    tolerance is rounding-sized (1e-9 of the range), not a fraction of a percent."""
    from coarse_gpu.discretize.exact import certify

    U = np.array([[0.0, 0.01], [0.0, 0.0], [100.0, 100.0]])
    L, H = np.zeros(2, dtype=np.int64), np.full(2, 3, dtype=np.int64)
    ok, _ = certify(U, np.array([0, 1, 0]), L, H)
    assert not ok
    ok, g = certify(U, np.array([1, 1, 0]), L, H)
    assert ok and g is not None


def test_table_prints_shares_as_percentages():
    from coarse_gpu.experiment.report import format_table

    res = {"k_values": [2], "methods": {"ot": {"2": {"share_of_full": 0.4321, "dr_value": 1.0, "dr_ci": [0.5, 1.5]}}},
           "full_personalization": {}}
    row = next(x for x in format_table(res).splitlines() if x.startswith("OT discretizer"))
    assert row.split()[-1] == "43.21%"


# ---- the mutation list itself stays live (issue 25) -------------------------------------------------
def _mutation_check():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "mutation_check.py"
    spec_ = importlib.util.spec_from_file_location("mutation_check", path)
    mod = importlib.util.module_from_spec(spec_)
    sys.modules["mutation_check"] = mod  # dataclasses look their module up there
    spec_.loader.exec_module(mod)
    return mod, path.parents[1]


def test_every_planted_mutation_still_matches_the_code_once_and_names_existing_tests():
    """A mutation whose text no longer occurs (the code moved or was rewritten) is silently not counted:
    six of the first fifty had gone stale that way. Refresh a stale mutation's ``old`` text (and keep
    its meaning) in scripts/mutation_check.py when this fails."""
    mc, root = _mutation_check()
    ids = [m.id for m in mc.MUTATIONS]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    for m in mc.MUTATIONS:
        assert m.old != m.new and m.tests and m.what, m.id
        assert all((root / t).is_file() for t in m.tests), (m.id, m.tests)
        assert m.layer in mc.LAYERS, (m.id, m.file)
    assert mc.check_sources(mc.MUTATIONS) == {}
    per_layer = {layer: sum(m.layer == layer for m in mc.MUTATIONS) for layer in mc.LAYERS}
    assert min(per_layer.values()) >= 4, per_layer  # every layer is probed


def test_mutation_score_is_reported_per_layer_with_its_survivors():
    mc, _ = _mutation_check()
    live = [m for m in mc.MUTATIONS if m.layer in ("data", "evaluate")]
    missed = {next(m.id for m in live if m.layer == "evaluate")}
    rows = {line.split()[0]: line for line in mc.layer_table(live, missed, {}).splitlines()[1:]}
    n_data = sum(m.layer == "data" for m in live)
    n_eval = sum(m.layer == "evaluate" for m in live)
    assert rows["data"].split()[1:4] == [str(n_data), "/", str(n_data)] and rows["data"].endswith("-")
    assert rows["evaluate"].split()[1:4] == [str(n_eval - 1), "/", str(n_eval)] and rows["evaluate"].endswith(min(missed))
    assert rows["models"].split()[1:4] == ["0", "/", "0"]  # a layer without mutations is shown, not dropped
