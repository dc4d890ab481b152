"""The main job end to end on a tiny simulated experiment: every stage, the results.json contract."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from coarse_gpu.cli import config_dir
from coarse_gpu.experiment import methods
from coarse_gpu.experiment.config import register_configs
from coarse_gpu.experiment.pipeline import run_experiment

TINY = ["model.n_ensemble=1", "model.n_folds=2", "data.n_customers=2000", "model.max_epochs=4", "model.hidden=32", "evaluation.n_boot=50",
        "discretizer.n_restarts=2", "evaluation.k_values=[1,2,3]", "logger=none", "quiet=true"]


def _cfg(extra=()):
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=TINY + list(extra))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    # every method of the paper, the policy tree (not a default: econml is an extra) included
    results = run_experiment(_cfg(["evaluation.methods=[ot,kmeans_features,kmeans_preferences,kmeans_profiles,"
                                   "policy_tree,grid,single_best]"]), run_dir)
    return run_dir, results


def test_results_json_follows_the_contract(tiny_run):
    run_dir, _ = tiny_run
    res = json.loads((run_dir / "results.json").read_text())
    for key in ("config", "n_customers", "k_values", "full_personalization", "methods", "timings_s", "device",
                "versions"):
        assert key in res, key
    assert res["status"] == "complete"
    assert res["n_customers"] == 2000 and res["k_values"] == [1, 2, 3]
    assert isinstance(res["full_personalization"]["oracle_profit"], float)
    assert {"train", "discretize"} <= set(res["timings_s"])
    assert set(res["methods"]) == {"ot", "kmeans_features", "kmeans_preferences", "kmeans_profiles", "policy_tree",
                                   "grid", "single_best"}
    assert set(res["methods"]["single_best"]) == {"1"}
    n_eval = res["n_eval"]
    for method, per_k in res["methods"].items():
        for k, r in per_k.items():
            assert set(r) >= {"treatments", "oracle_profit", "share_of_full", "dr_value", "dr_ci", "segment_sizes"}
            assert len(r["treatments"]) == int(k) and all(len(t) == 2 for t in r["treatments"])
            assert sum(r["segment_sizes"]) == n_eval
            lo, hi = r["dr_ci"]
            assert lo <= r["dr_value"] <= hi
            # No coarse policy can beat each customer's own best treatment under the true profits.
            assert r["oracle_profit"] <= res["full_personalization"]["oracle_profit"] + 1e-9, (method, k)
    assert res["config"]["data"]["n_customers"] == 2000
    assert res["versions"]["torch"]
    # choosing K with no fixed cost: the K of the largest value of the ot policy
    ck = res["choose_k"]["by_oracle_profit"]
    best_k = max(res["methods"]["ot"], key=lambda k: (res["methods"]["ot"][k]["oracle_profit"], -int(k)))
    assert ck["k"] == int(best_k) and res["choose_k"]["fixed_cost_per_treatment"] == 0.0


def test_ot_is_at_least_as_good_as_single_best_and_grows_with_k(tiny_run):
    _, res = tiny_run
    ot = res["methods"]["ot"]
    # The estimated objective is monotone in K; the true share should not fall by much either.
    assert ot["3"]["share_of_full"] >= ot["1"]["share_of_full"] - 0.02
    assert ot["1"]["share_of_full"] >= res["methods"]["single_best"]["1"]["share_of_full"] - 0.02


def test_expected_share_is_the_papers_measure_and_ot_maximizes_it(tiny_run):
    """The paper's 'expected' share uses the model's estimates throughout. ot maximizes exactly the
    estimated profit over K treatments, so no baseline (same K, same estimates) may beat it there."""
    _, res = tiny_run
    for k in ("1", "2", "3"):
        ot = res["methods"]["ot"][k]["expected_share_of_full"]
        assert ot is not None and 0.0 < ot <= 1.01
        for method, per_k in res["methods"].items():
            if k in per_k:
                assert per_k[k]["expected_share_of_full"] <= ot + 1e-3, (method, k)
    # the estimated profit of a policy is what its expected share is made of: same ordering
    ot = res["methods"]["ot"]
    assert (ot["3"]["expected_profit"] >= ot["1"]["expected_profit"]) == (
        ot["3"]["expected_share_of_full"] >= ot["1"]["expected_share_of_full"])


def test_simulator_difficulty_figures_are_reported(tiny_run):
    _, res = tiny_run
    checks = res["simulator_checks"]
    assert 0.0 < checks["single_best_share_true_profits"] < 1.0
    assert 0.0 < checks["kmeans_features_k5_share_true_profits"] < 1.0


def test_a_failing_run_keeps_finished_k_and_says_why(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = methods.kmeans_preferences

    def fail_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash at K=2")
        return real(*args, **kwargs)

    monkeypatch.setattr(methods, "kmeans_preferences", fail_second)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_experiment(_cfg(["model.max_epochs=1"]), tmp_path)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "failed" and "simulated crash" in res["error"]
    assert "1" in res["methods"]["ot"] and "1" in res["methods"]["kmeans_preferences"]
    assert "2" not in res["methods"]["kmeans_preferences"]


def test_unknown_method_is_named(tmp_path):
    with pytest.raises(ValueError, match="evaluation.methods.*magic"):
        run_experiment(_cfg(["evaluation.methods=[ot,magic]"]), tmp_path)


def test_warm_start_extends_the_previous_solution_greedily():
    from coarse_gpu.experiment.methods import warm_start

    rng = np.random.default_rng(0)
    P = rng.normal(size=(300, 12))
    prev = [3, 7]
    init = warm_start(P, prev, 4)
    assert init[:2] == prev and len(set(init)) == 4
    # the third treatment is the one with the largest gain over the first two
    base = P[:, prev].max(1)
    gains = np.maximum(P - base[:, None], 0).sum(0)
    gains[prev] = -np.inf
    assert init[2] == int(gains.argmax())
    assert warm_start(P, None, 3) is None and warm_start(P, [1, 2, 3], 3) is None
