"""The baselines as estimators: fit / assign / clone, a factored profit gives the dense result, the
row-blocked reductions, and k-means on a sample above the row threshold."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from sklearn.base import clone

import coarse_gpu.policy.profit_view as profit_view
from coarse_gpu.discretize import FactoredProfit
from coarse_gpu.policy import (
    FullPersonalization,
    GridSearch,
    KMeansFeatures,
    KMeansPreferences,
    KMeansProfiles,
    ProfitView,
    SingleBest,
    estimated_value,
    kmeans_features,
    kmeans_profiles,
)
from coarse_gpu.policy.baselines import feature_embedding, profile_embedding


def factored_problem(n=600, m=40, a=6, p=5, seed=0):
    """Pi = V W^T with customers of a few latent types; covariates X that reveal the types noisily."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, 4, n)
    V = rng.normal(size=(4, a))[types] + 0.3 * rng.normal(size=(n, a))
    W = rng.normal(size=(m, a))
    X = np.hstack([np.eye(4)[types] + 0.5 * rng.normal(size=(n, 4)), rng.normal(size=(n, p - 4))])
    cand = np.stack([np.linspace(0.0, 0.5, m), np.linspace(4.0, 0.0, m)], axis=1)
    return X, FactoredProfit(V, W), cand


def estimators():
    """(estimator, fit kwargs) of every baseline whose fit reads (profit, candidates[, X])."""
    return [SingleBest(), FullPersonalization(), KMeansFeatures(k=3, seed=1), KMeansPreferences(k=3, seed=1),
            KMeansProfiles(k=3, seed=1), KMeansProfiles(k=4, seed=2, n_components=None)]


def _fit(est, X, profit, cand):
    return est.fit(profit, cand, X) if est.assign_input == "X" else est.fit(profit, cand)


def _assign_input(est, X, profit):
    return X if est.assign_input == "X" else profit


# ---------------------------------------------------------------------------------------------
# the estimator contract
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("est", estimators(), ids=lambda e: type(e).__name__)
def test_assign_on_the_fitted_customers_gives_back_the_policy(est):
    X, fp, cand = factored_problem()
    P = fp.dense()
    _fit(est, X, P, cand)
    pol = est.policy_
    assert pol.estimator is est and pol.name == est.policy_name
    np.testing.assert_array_equal(est.labels_, pol.assignment)
    np.testing.assert_array_equal(est.treatments_, pol.treatments)
    np.testing.assert_array_equal(cand[est.candidate_index_], pol.treatments)
    np.testing.assert_array_equal(est.assign(_assign_input(est, X, P)), pol.assignment)
    # new customers: a segment in [0, K) for each, from the same fitted state (never an empty slot)
    Xn, fpn, _ = factored_problem(n=200, seed=9)
    Pn = fpn.V @ fp.W.T  # the new customers' profit at the same candidates
    seg = est.assign(_assign_input(est, Xn, Pn))
    assert seg.shape == (200,) and seg.dtype == np.int64
    assert set(seg.tolist()) <= set(np.flatnonzero(pol.segment_sizes).tolist())


@pytest.mark.parametrize("est", estimators(), ids=lambda e: type(e).__name__)
def test_clone_gives_an_unfitted_estimator_that_refits_identically(est):
    X, fp, cand = factored_problem(seed=3)
    P = fp.dense()
    _fit(est, X, P, cand)
    twin = clone(est)
    assert twin.get_params() == est.get_params() and not hasattr(twin, "policy_")
    with pytest.raises(Exception, match="not fitted"):
        twin.assign(_assign_input(twin, X, P))
    _fit(twin, X, P, cand)
    np.testing.assert_array_equal(twin.policy_.assignment, est.policy_.assignment)
    np.testing.assert_array_equal(twin.policy_.treatments, est.policy_.treatments)


def test_params_are_keyword_only_and_settable():
    with pytest.raises(TypeError):
        KMeansFeatures(3)  # noqa - positional parameters are refused (sklearn convention)
    est = KMeansProfiles(k=3).set_params(k=5, n_components=4)
    assert est.get_params()["k"] == 5 and est.n_components == 4


def test_grid_search_estimator_assigns_each_customer_its_best_of_the_subset():
    X, fp, cand = factored_problem(m=9, seed=4)
    P = fp.dense()
    est = GridSearch(k=3).fit(P, cand)
    np.testing.assert_array_equal(est.assign(P), est.policy_.assignment)
    np.testing.assert_array_equal(est.assign(P[:50]), P[:50][:, est.subset_].argmax(1))


# ---------------------------------------------------------------------------------------------
# factored profit = dense profit
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("est", estimators(), ids=lambda e: type(e).__name__)
def test_factored_profit_gives_the_dense_result(est):
    X, fp, cand = factored_problem(seed=5)
    dense = _fit(clone(est), X, fp.dense(), cand)
    fact = _fit(clone(est), X, fp, cand)
    np.testing.assert_array_equal(fact.policy_.treatments, dense.policy_.treatments)
    np.testing.assert_array_equal(fact.policy_.assignment, dense.policy_.assignment)
    assert fact.policy_.info["estimated_value"] == pytest.approx(dense.policy_.info["estimated_value"], rel=1e-10)
    assert estimated_value(fp, fact.policy_) == pytest.approx(estimated_value(fp.dense(), dense.policy_), rel=1e-10)
    # and new customers given as factors are assigned as their dense profits are
    Xn, fpn, _ = factored_problem(n=150, seed=6)
    new_f = FactoredProfit(fpn.V, fp.W)
    np.testing.assert_array_equal(fact.assign(_assign_input(est, Xn, new_f)),
                                  dense.assign(_assign_input(est, Xn, new_f.dense())))


def test_factored_grid_search_gives_the_dense_result():
    _, fp, cand = factored_problem(m=10, seed=7)
    for k in (1, 3, 5):
        a, b = GridSearch(k=k).fit(fp, cand), GridSearch(k=k).fit(fp.dense(), cand)
        assert a.policy_.info["subset"] == b.policy_.info["subset"]
        np.testing.assert_array_equal(a.policy_.assignment, b.policy_.assignment)


def test_factored_trees_give_the_dense_result():
    pytest.importorskip("econml")
    from coarse_gpu.discretize import discretize
    from coarse_gpu.policy.ot_tree import OTTree
    from coarse_gpu.policy.tree import PolicyTree

    X, fp, cand = factored_problem(n=800, seed=8)
    for k in (1, 2, 4):
        a = PolicyTree(k=k, min_samples_leaf=20).fit(fp, cand, X)
        b = PolicyTree(k=k, min_samples_leaf=20).fit(fp.dense(), cand, X)
        np.testing.assert_array_equal(a.policy_.treatments, b.policy_.treatments)
        np.testing.assert_array_equal(a.policy_.assignment, b.policy_.assignment)
        np.testing.assert_array_equal(a.assign(X), a.policy_.assignment)
    res = discretize(fp.dense(), 3, candidates=cand, seed=0, device="cpu")
    for variant in ("distill", "policy"):
        a = OTTree(k=3, variant=variant, min_samples_leaf=20).fit(fp, cand, X, discretization=res)
        b = OTTree(k=3, variant=variant, min_samples_leaf=20).fit(fp.dense(), cand, X, discretization=res)
        assert a.policy_.info["tree"] == b.policy_.info["tree"]
        np.testing.assert_array_equal(a.policy_.assignment, b.policy_.assignment)
        np.testing.assert_array_equal(a.assign(X), a.policy_.assignment)
    # without a given solution the factored profit goes to the discretizer as factors
    own = OTTree(k=3, min_samples_leaf=20).fit(fp, cand, X)
    assert own.policy_.k == 3 and own.policy_.info["tree_objective"] <= own.policy_.info["ot_objective"] + 1e-9


def test_factored_profile_embedding_is_the_dense_one_up_to_rotation():
    _, fp, _ = factored_problem(n=500, m=60, seed=10)
    dense, fact = profile_embedding(fp.dense(), n_components=20), profile_embedding(fp, n_components=20)
    np.testing.assert_allclose(fact.p_mean, dense.p_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fact.p_scale, dense.p_scale, rtol=1e-10)
    assert fact.z.shape == dense.z.shape == (500, 20) and fact.components.shape == (20, 60)
    np.testing.assert_allclose(fact.components @ fact.components.T, np.eye(20), atol=1e-10)  # orthonormal
    # the same points up to an orthogonal map: identical Gram matrices (distances, hence k-means)
    np.testing.assert_allclose(fact.z @ fact.z.T, dense.z @ dense.z.T, atol=1e-8)
    # a new customer's point from its factors is the point of its dense profit row
    np.testing.assert_allclose(fact.transform(FactoredProfit(fp.V[:7], fp.W)), fact.z[:7], atol=1e-10)
    np.testing.assert_allclose(dense.transform(fp.dense()[:7]), dense.z[:7], atol=1e-12)


def test_profit_view_reductions_match_dense_across_row_blocks(monkeypatch):
    monkeypatch.setattr(profit_view, "BLOCK_BYTES", 8 * 40 * 37)  # 37 rows per block: many ragged blocks
    _, fp, _ = factored_problem(n=501, m=40, seed=11)
    P = fp.dense()
    f, d = ProfitView(fp), ProfitView(P)
    np.testing.assert_allclose(f.col_mean(), d.col_mean(), rtol=1e-12)
    np.testing.assert_allclose(f.col_sum(), d.col_sum(), rtol=1e-12)
    np.testing.assert_array_equal(f.row_argmax(), d.row_argmax())
    np.testing.assert_allclose(f.row_max(), d.row_max(), rtol=1e-12)
    cols = np.random.default_rng(0).integers(0, 40, 501)
    np.testing.assert_allclose(f.at(cols), d.at(cols), rtol=1e-12)
    np.testing.assert_array_equal(f.argmax_columns([3, 17, 5]), d.argmax_columns([3, 17, 5]))
    lab = np.random.default_rng(1).integers(0, 4, 501)
    np.testing.assert_allclose(f.segment_means(lab, 5)[0], d.segment_means(lab, 5)[0], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="profit contains NaN"):
        ProfitView(FactoredProfit(np.full((3, 2), np.nan), np.ones((4, 2))))
    with pytest.raises(ValueError, match="sharing A"):
        ProfitView(FactoredProfit(np.ones((3, 2)), np.ones((4, 3))))


def test_factored_baselines_never_form_the_n_by_m_matrix(monkeypatch):
    monkeypatch.setattr(profit_view, "BLOCK_BYTES", 4 << 20)
    n, m = 60_000, 400  # the dense matrix would be 192 MB
    X, fp, cand = factored_problem(n=n, m=m, a=8, seed=12)
    view = ProfitView(fp)
    tracemalloc.start()
    for est in (SingleBest(), FullPersonalization(), KMeansPreferences(k=4),
                KMeansFeatures(k=4, max_fit_rows=10_000), KMeansProfiles(k=4, max_fit_rows=10_000)):
        _fit(est, X, view, cand)
        assert est.policy_.n == n
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.25 * n * m * 8, f"peak {peak / 2**20:.0f} MB"


# ---------------------------------------------------------------------------------------------
# k-means on a sample above the row threshold
# ---------------------------------------------------------------------------------------------
def _inertia(z, labels):
    return sum(((z[labels == s] - z[labels == s].mean(0)) ** 2).sum() for s in np.unique(labels))


def test_sampled_kmeans_is_within_a_few_percent_of_the_full_fit_and_assigns_every_row():
    X, fp, cand = factored_problem(n=30_000, m=60, seed=13)
    view = ProfitView(fp)
    v_one = SingleBest().fit(view, cand).policy_.info["estimated_value"]
    v_all = FullPersonalization().fit(view, cand).policy_.info["estimated_value"]
    feats, profs = feature_embedding(X), profile_embedding(view)
    for k in (3, 5):
        for fit, emb in ((kmeans_features, feats), (kmeans_profiles, profs)):
            args = (X, view, cand, k) if fit is kmeans_features else (view, cand, k)
            full = fit(*args, embedding=emb, max_fit_rows=None)
            samp = fit(*args, embedding=emb, max_fit_rows=3_000)
            assert "n_fit_rows" not in full.info and samp.info["n_fit_rows"] == 3_000
            assert samp.assignment.shape == (30_000,) and samp.segment_sizes.sum() == 30_000
            assert samp.info["empty_segments"] == [] and samp.segment_sizes.min() > 0
            # the k-means objective on all rows and the share of the gain over one treatment
            assert _inertia(emb.z, samp.assignment) <= 1.03 * _inertia(emb.z, full.assignment)
            share = lambda p: (p.info["estimated_value"] - v_one) / (v_all - v_one)  # noqa: E731
            assert share(samp) >= share(full) - 0.03, (fit.__name__, k, share(samp), share(full))
            # the fitted rows' segments are the nearest sampled centers: assign() gives them back
            est = samp.estimator
            np.testing.assert_array_equal(est.assign(X if fit is kmeans_features else view), samp.assignment)
            if k == 3:  # seeded: reproducible
                again = fit(*args, embedding=emb, max_fit_rows=3_000)
                np.testing.assert_array_equal(again.assignment, samp.assignment)


def test_at_or_below_the_threshold_the_fit_is_on_every_row():
    X, fp, cand = factored_problem(n=2_000, seed=14)
    P = fp.dense()
    for max_rows in (2_000, 10**9):
        a = kmeans_features(X, P, cand, 4, max_fit_rows=max_rows)
        b = kmeans_features(X, P, cand, 4, max_fit_rows=None)
        np.testing.assert_array_equal(a.assignment, b.assignment)
        assert "n_fit_rows" not in a.info


def test_sampled_policy_tree_assigns_every_row_down_the_tree():
    pytest.importorskip("econml")
    from coarse_gpu.policy.tree import PolicyTree, apply_tree

    X, fp, cand = factored_problem(n=20_000, m=30, seed=15)
    full = PolicyTree(k=4, max_fit_rows=None).fit(fp, cand, X)
    samp = PolicyTree(k=4, max_fit_rows=4_000).fit(fp, cand, X)
    assert samp.policy_.info["n_fit_rows"] == 4_000 and samp.policy_.n == 20_000
    np.testing.assert_array_equal(apply_tree(X, samp.tree_), samp.policy_.assignment)
    v = lambda e: fp.dense()[np.arange(20_000), e.candidate_index_[e.policy_.assignment]].mean()  # noqa: E731
    v_one = SingleBest().fit(fp, cand).policy_.info["estimated_value"]
    assert v(samp) - v_one >= 0.9 * (v(full) - v_one)
