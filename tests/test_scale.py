"""The main job at millions of customers, shown small: every memory-saving path gives the answer of the
path it replaces (the factored profit, the checks' sample, the blocked errors), and the stage timer
measures each stage's own memory peak."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from coarse_gpu.cli import config_dir
from coarse_gpu.data import PromotionsSimulator
from coarse_gpu.discretize.profit import FactoredProfit, profit_columns, profit_row_blocks
from coarse_gpu.experiment import pipeline, steps
from coarse_gpu.experiment.config import register_configs
from coarse_gpu.experiment.personalize import ProfitEstimates
from coarse_gpu.experiment.stages import stage
from coarse_gpu.policy import estimates as estimates_mod  # DENSE_PROFIT_ENTRIES is read there

# a fast per-arm model (trees): the paths under test are downstream of step 1
SMALL = ["model=gb_t", "model.n_folds=2", "data.n_customers=3000", "evaluation.n_boot=50", "discretizer.n_restarts=2",
         "evaluation.k_values=[1,3]", "logger=none", "quiet=true",
         "evaluation.methods=[ot,ot_tree,kmeans_features,kmeans_preferences,kmeans_profiles,grid,single_best]"]


def _cfg(extra=()):
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=SMALL + list(extra))


def _estimates(n=500, m=40, a=6, seed=0):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n, a))
    W = rng.random((m, a))
    W /= W.sum(1, keepdims=True)
    weights = lambda T: W[np.asarray(T, dtype=np.int64)[:, 0]]  # noqa: E731  candidate m = row m of W
    est = ProfitEstimates(mu, lambda T: mu @ weights(T).T, weights, None, "held-out", weights)
    return est, np.arange(m, dtype=np.float64)[:, None], mu @ W.T


def test_profit_stays_factored_above_the_dense_limit_and_equals_the_dense_matrix():
    est, cand, dense = _estimates()
    assert isinstance(est.at_candidates(cand), np.ndarray)  # 500 x 40 is far below 2^26
    fp = est.at_candidates(cand, max_dense=1000)
    assert isinstance(fp, FactoredProfit) and fp.shape == dense.shape
    np.testing.assert_allclose(fp.dense(), dense, rtol=1e-12)
    cols = [3, 0, 39]
    np.testing.assert_allclose(profit_columns(fp, cols), dense[:, cols], rtol=1e-12)
    np.testing.assert_array_equal(profit_columns(dense, cols), dense[:, cols])
    blocks = list(profit_row_blocks(fp, max_elements=40 * 64))
    assert [b[0] for b in blocks] == list(range(0, 500, 64))
    np.testing.assert_allclose(np.vstack([b[2] for b in blocks]), dense, rtol=1e-12)


def test_blocked_squared_errors_equal_the_dense_ones():
    data = PromotionsSimulator(n_customers=700, seed=1).sample()
    rng = np.random.default_rng(2)
    A = data.n_arms
    mu = rng.normal(5, 1, size=(len(data), A))
    points = data.space.grid([5, 4])
    W = rng.random((len(points), A))
    est = ProfitEstimates(mu, lambda T: mu @ W.T, None, None, "held-out", lambda T: W)
    dense = ((mu @ W.T - data.truth.profit(points)) ** 2).mean(0)
    np.testing.assert_allclose(pipeline._squared_errors(est, data.truth, points, block=128), dense, rtol=1e-12)


def test_stage_records_time_and_its_own_memory_peak():
    timings: dict = {}
    with stage(timings, "big"):
        x = np.ones(40_000_000)  # 305 MiB, touched
        del x
    with stage(timings, "small"):
        np.ones(1000)
    with stage(timings, "big"):  # a stage entered twice keeps the sum of its seconds
        pass
    assert timings["big"] > 0 and timings["small"] >= 0
    peaks = timings["peak_host_mb"]
    if not Path("/proc/self/clear_refs").exists():  # pragma: no cover - not Linux
        pytest.skip("per-stage peaks need Linux's /proc/self/clear_refs")
    assert peaks["big"] - peaks["small"] > 250, peaks  # the small stage does not inherit the big one's peak


def _cells(res):
    return {(m, k): c for m, per_k in res["methods"].items() for k, c in per_k.items()}


@pytest.fixture(scope="module")
def dense_and_factored(tmp_path_factory):
    dense = pipeline.run_experiment(_cfg(), tmp_path_factory.mktemp("dense"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(estimates_mod, "DENSE_PROFIT_ENTRIES", 1000)  # every run above it: factored
        seen = []
        orig = ProfitEstimates.at_candidates
        mp.setattr(ProfitEstimates, "at_candidates", lambda self, c, max_dense=None: seen.append(
            orig(self, c, max_dense)) or seen[-1])
        factored = pipeline.run_experiment(_cfg(), tmp_path_factory.mktemp("factored"))
    assert seen and isinstance(seen[0], FactoredProfit)
    return dense, factored


def test_the_factored_pipeline_gives_the_dense_pipelines_policies(dense_and_factored):
    dense, factored = dense_and_factored
    a, b = _cells(dense), _cells(factored)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(b[key]["treatments"], a[key]["treatments"], rtol=0, atol=1e-12, err_msg=str(key))
        assert b[key]["segment_sizes"] == a[key]["segment_sizes"], key
        for m in ("oracle_profit", "dr_value", "expected_profit"):
            assert b[key][m] == pytest.approx(a[key][m], rel=1e-9), (key, m)
    assert factored["model"]["rmse_profit_grid"] == pytest.approx(dense["model"]["rmse_profit_grid"], rel=1e-9)


def test_checks_and_ceiling_run_on_one_sample_above_check_rows(tmp_path, monkeypatch):
    cfg = _cfg(["evaluation.methods=[ot]", "evaluation.k_values=[1,3]"])
    full = pipeline.run_experiment(cfg, tmp_path / "all")
    monkeypatch.setattr(steps, "CHECK_ROWS", 1500)
    sampled = pipeline.run_experiment(cfg, tmp_path / "sample")
    assert full["simulator_checks"]["n_customers"] == 3000 and full["true_profit_ceiling"]["n_customers"] == 3000
    assert sampled["simulator_checks"]["n_customers"] == 1500 == sampled["true_profit_ceiling"]["n_customers"]
    # the share denominators stay those of all customers: the policies' shares do not move
    assert sampled["methods"]["ot"]["3"]["share_of_full"] == full["methods"]["ot"]["3"]["share_of_full"]
    for k in ("1", "3"):  # a sample of half the customers: the same ceiling within sampling error
        assert sampled["true_profit_ceiling"]["share_of_full"][k] == pytest.approx(
            full["true_profit_ceiling"]["share_of_full"][k], abs=0.03)
    for key in ("single_best_share_true_profits", "kmeans_features_k5_share_true_profits"):
        assert sampled["simulator_checks"][key] == pytest.approx(full["simulator_checks"][key], abs=0.05)


def test_the_samples_full_personalization_is_its_rows_share_of_everyones():
    """_simulator_checks takes the checks' sample's full-personalization value from the all-customers
    search (a customer's best treatment depends on its row alone): it must equal a search on the sample."""
    from coarse_gpu.evaluate.oracle import oracle_best_treatments, oracle_full_personalization

    data = PromotionsSimulator(n_customers=4000, seed=1).sample()
    rows = np.sort(np.random.default_rng(0).choice(4000, 1500, replace=False))
    value, best_t = oracle_best_treatments(data.truth, data.space, points=(41, 31))
    sub = data.subset(rows)
    sub_value, sub_t = oracle_full_personalization(sub.truth, sub.space, points=(41, 31))
    assert float(value[rows].mean()) == sub_value and np.array_equal(best_t[rows], sub_t)
    # and each customer's value is the truth at its treatment, at least its best grid point's
    own = np.array([data.truth.profit(best_t[i:i + 1], np.array([i]))[0, 0] for i in rows[:50]])
    np.testing.assert_array_equal(own, value[rows[:50]])
    assert np.all(value >= data.truth.profit(data.space.grid([41, 31])).max(1) - 1e-12)
