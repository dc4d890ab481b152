"""Properties of a saved policy (coarse_gpu.policy.io) on a fixture whose K treatments DIFFER.

A fixture whose K treatments are identical cannot tell "the assigned segment's profit" from "the best
of the K profits", nor one treatment column from another. Here every policy has K distinct 2-D
treatments, and the centroid / tree rules assign some customers to a segment that is not their best, so:

* predicted_profit is the model's profit at the ASSIGNED segment's treatment, row by row;
* each treatment column of the assignment table is that dimension of the assigned treatment;
* the argmax rule gives each customer its best of the K treatments;
* the result depends neither on the chunk size, nor on the order of the new customers' columns, nor
  on their index labels; and a saved-then-loaded policy assigns exactly as the one in memory.
``scripts/mutation_check.py`` plants the bugs these catch ("p10".."p13").
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from coarse_gpu.data.file import experiment_from_frame
from coarse_gpu.discretize import discretize
from coarse_gpu.models.boosting import GBTLearner
from coarse_gpu.policy import kmeans_features, kmeans_preferences
from coarse_gpu.policy.tree import policy_tree
from coarse_gpu.policy.io import deployable, load_policy, save_policy
from coarse_gpu.policy.policy import Policy

from test_data_file import FEATURES, frame, spec

FAST = settings(max_examples=8, deadline=None, derandomize=True, database=None,
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def one_openmp_thread():
    """Boosted trees on a shared machine: OpenMP's threads contend (30 s instead of 0.2 s to fit)."""
    with threadpool_limits(1):
        yield


def heterogeneous(n: int, seed: int) -> pd.DataFrame:
    """The simulator's customers and arms with a profit whose best treatment differs by customer in both
    dimensions: app customers gain from the discount, others lose; recent buyers gain from a long offer."""
    df = frame(n, seed=seed)
    rng = np.random.default_rng(seed)
    app = (df["channel"] == "app").to_numpy()
    recent = (df["recency"] > df["recency"].median()).to_numpy()
    df["profit"] = (5.0 + np.where(app, 30.0, -20.0) * df["discount"]
                    + np.where(recent, 2.0, -1.5) * df["duration_weeks"] + 0.5 * rng.standard_normal(n))
    return df


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{method: (in-memory DeployedPolicy, loaded DeployedPolicy)}, the model, new customers."""
    data = experiment_from_frame(heterogeneous(900, 3), spec())
    model = GBTLearner(max_iter=25, seed=0).fit(data.X, data.treatment, data.outcome)
    cand = data.arms
    profit = model.predict_profit(data.X, cand)
    res = discretize(profit, 3, candidates=cand, solver="exact", device="cpu")
    pols = {"ot": Policy("ot", res.treatments, res.assignment, {}),
            "kmeans_features": kmeans_features(data.X, profit, cand, 3, seed=0),
            "kmeans_preferences": kmeans_preferences(profit, cand, 3, seed=0),
            "policy_tree": policy_tree(data.X, profit, cand, 4, seed=0)}
    tmp = tmp_path_factory.mktemp("policies")
    out = {}
    for name, pol in pols.items():
        mem = deployable(pol, model, data, cand, data.X, profit)
        out[name] = (mem, load_policy(save_policy(tmp / name, mem)))
    new = frame(200, seed=11)[FEATURES]
    return out, model, new, data.X, {name: pol.assignment for name, pol in pols.items()}


def test_the_fixture_can_tell_the_assigned_segment_from_the_best_one(saved):
    pols, model, new, *_ = saved
    X = pols["ot"][0].feature_schema.transform(new)
    not_best = 0
    for name, (mem, _) in pols.items():
        assert len(np.unique(mem.treatments, axis=0)) >= 2, name  # the K treatments are not all one
        if name == "ot":  # K distinct treatments that differ in both dimensions
            assert len(np.unique(mem.treatments, axis=0)) == mem.k == 3
            assert len(np.unique(mem.treatments[:, 0])) > 1 and len(np.unique(mem.treatments[:, 1])) > 1
        seg, _ = mem.assign_matrix(X)
        p = model.predict_profit(X, mem.treatments)
        not_best += int(np.sum(p[np.arange(len(seg)), seg] < p.max(1) - 1e-9))
    assert not_best >= 5  # the centroid and tree rules put customers off their best segment


@pytest.mark.parametrize("name", ["ot", "kmeans_features", "kmeans_preferences", "policy_tree"])
def test_assignment_table_reports_the_assigned_segments_treatment_and_profit(saved, name):
    pols, model, new, *_ = saved
    mem, loaded = pols[name]
    table = loaded.assign(new)
    seg = table["segment"].to_numpy()
    X = mem.feature_schema.transform(new)
    p = model.predict_profit(X, mem.treatments)  # the reference: the fitted model in memory
    np.testing.assert_allclose(table["predicted_profit"], p[np.arange(len(seg)), seg], rtol=1e-5, atol=1e-5)
    for j, c in enumerate(loaded.treatment_names):
        np.testing.assert_array_equal(table[c].to_numpy(), mem.treatments[seg, j])
    np.testing.assert_array_equal(seg, mem.assign_matrix(X)[0])  # the loaded policy assigns as the saved one
    if loaded.rule == "argmax":
        np.testing.assert_array_equal(seg, p.argmax(1))


@pytest.mark.parametrize("name", ["kmeans_features", "kmeans_preferences", "policy_tree"])
def test_a_loaded_policy_gives_back_the_estimators_own_segments(saved, name):
    """The centroid and tree rules store the fitted estimator's state: on the customers it was built on,
    the loaded policy reproduces the estimator's assignment (nothing is refitted, nothing rescaled)."""
    pols, _, _, X_train, assignment = saved
    seg, _ = pols[name][1].assign_matrix(X_train)
    assert np.mean(seg == assignment[name]) >= 0.99, name


@FAST
@given(chunk=st.integers(3, 41), name=st.sampled_from(["ot", "kmeans_features", "policy_tree"]))
def test_assignment_does_not_depend_on_the_chunk_size(saved, chunk, name):
    pols, _, new, *_ = saved
    pol = pols[name][1]
    X = pol.feature_schema.transform(new.iloc[:40])
    seg, prof = pol.assign_matrix(X)
    seg_c, prof_c = pol.assign_matrix(X, chunk_rows=chunk)
    np.testing.assert_array_equal(seg_c, seg)
    np.testing.assert_allclose(prof_c, prof, rtol=1e-6, atol=1e-6)


@FAST
@given(order=st.permutations(list(range(len(FEATURES)))), seed=st.integers(0, 2 ** 16),
       name=st.sampled_from(["ot", "kmeans_features"]))
def test_new_customers_columns_order_and_index_labels_change_nothing(saved, order, seed, name):
    pols, _, new, *_ = saved
    pol = pols[name][1]
    ref = pol.assign(new)
    moved = new[[FEATURES[i] for i in order]].set_axis(
        pd.Index(np.random.default_rng(seed).permutation(len(new)) + 7), axis=0)
    got = pol.assign(moved)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), ref.reset_index(drop=True))


# ---- baselines: the treatment a segment gets is the best MEAN profit over its members ----------
@st.composite
def skewed_profits(draw):
    """(N, M) profits where the most customers' favourite is NOT the best on average: column 0 is
    everybody's slight favourite, one other column is worth a lot to a few customers."""
    n, m = draw(st.integers(20, 120)), draw(st.integers(3, 8))
    seed = draw(st.integers(0, 2 ** 20))
    rng = np.random.default_rng(seed)
    p = rng.normal(0.0, 0.01, (n, m))
    p[:, 0] += 0.1
    j = draw(st.integers(1, m - 1))
    fans = rng.choice(n, size=max(2, n // 10), replace=False)
    p[fans, j] += 50.0
    return p, j


@FAST
@given(prob=skewed_profits())
def test_single_best_is_the_best_mean_not_the_most_popular_favourite(prob):
    from coarse_gpu.policy import single_best

    p, j = prob
    cand = np.c_[np.arange(p.shape[1]) * 0.1, np.arange(p.shape[1]) % 3]
    pol = single_best(p, cand)
    assert int(np.bincount(p.argmax(1)).argmax()) == 0 != j  # the fixture can tell the two apart
    np.testing.assert_array_equal(pol.treatments, cand[[j]])
    assert pol.k == 1 and np.all(pol.assignment == 0)


@FAST
@given(prob=skewed_profits(), k=st.integers(2, 4), seed=st.integers(0, 100))
def test_every_segment_gets_its_members_best_mean_treatment(prob, k, seed):
    p, _ = prob
    cand = np.c_[np.arange(p.shape[1]) * 0.1, np.arange(p.shape[1]) % 3]
    X = np.random.default_rng(seed).normal(size=(p.shape[0], 3))
    for pol in (kmeans_features(X, p, cand, k, seed=seed), kmeans_preferences(p, cand, k, seed=seed)):
        for s in np.unique(pol.assignment):
            best = int(np.argmax(p[pol.assignment == s].mean(axis=0)))
            np.testing.assert_array_equal(pol.treatments[s], cand[best], err_msg=f"{pol.name} segment {s}")


@FAST
@given(prob=skewed_profits(), k=st.integers(2, 4), units=st.sampled_from([1e-3, 1e3, 1e5]), seed=st.integers(0, 100))
def test_segmenting_on_characteristics_does_not_depend_on_the_features_units(prob, k, units, seed):
    """k-means runs on standardized covariates: income in dollars or in thousands gives the same segments."""
    p, _ = prob
    cand = np.c_[np.arange(p.shape[1]) * 0.1, np.arange(p.shape[1]) % 3]
    rng = np.random.default_rng(seed)
    X = np.c_[rng.normal(size=p.shape[0]), rng.normal(size=p.shape[0]), rng.integers(0, 2, p.shape[0])]
    X2 = X.copy()
    X2[:, 0] *= units
    a = kmeans_features(X, p, cand, k, seed=seed)
    b = kmeans_features(X2, p, cand, k, seed=seed)
    np.testing.assert_array_equal(a.assignment, b.assignment)
    np.testing.assert_array_equal(a.treatments, b.treatments)
