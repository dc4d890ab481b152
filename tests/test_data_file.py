"""data=file: a CSV / Parquet experiment becomes an ExperimentData, and the pipeline runs on it end to end."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from coarse_gpu.cli import config_dir
from coarse_gpu.data import PromotionsSimulator
from coarse_gpu.data.file import FeatureSchema, FileSpec, experiment_from_frame, iter_table, load_experiment, read_table
from coarse_gpu.experiment.config import register_configs
from coarse_gpu.experiment.pipeline import candidate_treatments, run_experiment

FEATURES = ["recency", "frequency", "monetary", "tenure", "age", "channel", "region", "tier"]
CATS = ["channel", "region", "tier"]


def frame(n=1500, seed=0) -> pd.DataFrame:
    data = PromotionsSimulator(n_customers=n, seed=seed, n_noise_features=0).sample()
    df = data.features.copy()
    df.insert(0, "customer_id", [f"c{i}" for i in range(n)])
    df["discount"] = data.treatment[:, 0]
    df["duration_weeks"] = data.treatment[:, 1]
    df["profit"] = data.outcome
    return df


def spec(**kw) -> FileSpec:
    base = dict(features=FEATURES, treatment=["discount", "duration_weeks"], outcome="profit", id="customer_id",
                categorical=CATS)
    base.update(kw)
    return FileSpec(**base)


def test_frame_becomes_experiment_with_arms_space_and_empirical_propensity():
    df = frame()
    data = experiment_from_frame(df, spec())
    assert data.truth is None and len(data) == len(df)
    assert data.n_arms == 15 and data.arms.shape == (15, 2)
    assert data.space.names == ("discount", "duration_weeks")
    assert data.space.low == (0.0, 0.0) and data.space.high == (0.4, 4.0) and data.space.control == (0.0, 0.0)
    np.testing.assert_allclose(data.treatment, df[["discount", "duration_weeks"]].to_numpy())
    np.testing.assert_allclose(data.arms[data.arm], data.treatment)
    counts = np.bincount(data.arm)
    np.testing.assert_allclose(data.propensity, counts[data.arm] / len(df))
    # one-hot columns over the sorted levels, numeric columns as they are
    assert data.feature_names[:5] == FEATURES[:5]
    assert "channel=web" in data.feature_names and data.X.shape == (len(df), 5 + 3 + 4 + 3)
    np.testing.assert_allclose(data.X[:, data.feature_names.index("channel=web")], (df.channel == "web").astype(float))
    assert data.meta["id_column"] == "customer_id"


def test_profit_formula_and_given_propensity_are_used():
    df = frame(600)
    df["p"] = 1.0 / 15
    data = experiment_from_frame(df, spec(outcome_scale=2.0, treatment_cost=[10.0, 0.5], propensity="p",
                                          min_per_arm=5))
    expected = 2.0 * df.profit - 10.0 * df.discount - 0.5 * df.duration_weeks
    np.testing.assert_allclose(data.outcome, expected)
    np.testing.assert_allclose(data.propensity, 1.0 / 15)
    assert data.meta["profit_formula"] == "2 * profit - 10 * discount - 0.5 * duration_weeks"


def test_csv_and_parquet_give_the_same_experiment(tmp_path):
    df = frame(800)
    df.to_csv(tmp_path / "e.csv", index=False)
    df.to_parquet(tmp_path / "e.parquet", index=False)
    a = load_experiment(tmp_path / "e.csv", spec(min_per_arm=5))
    b = load_experiment(tmp_path / "e.parquet", spec(min_per_arm=5))
    np.testing.assert_allclose(a.X, b.X)
    np.testing.assert_allclose(a.outcome, b.outcome)
    np.testing.assert_array_equal(a.arm, b.arm)


def test_iter_table_chunks_cover_the_file_once(tmp_path):
    df = frame(1000)
    df.to_csv(tmp_path / "e.csv", index=False)
    df.to_parquet(tmp_path / "e.parquet", index=False)
    for name in ("e.csv", "e.parquet"):
        chunks = list(iter_table(tmp_path / name, ["customer_id", "age"], chunk_rows=300))
        assert [len(c) for c in chunks] == [300, 300, 300, 100]
        assert list(pd.concat(chunks).customer_id) == list(df.customer_id)
        assert list(chunks[0].columns) == ["customer_id", "age"]


def test_feature_schema_round_trip_and_numeric_categorical_codes():
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "g": [3, 1, 3]})
    schema = FeatureSchema.fit(df.assign(g=df.g.astype(str)), categorical=["g"])
    assert schema.names == ["a", "g=1", "g=3"]
    again = FeatureSchema.from_dict(json.loads(json.dumps(schema.to_dict())))
    np.testing.assert_array_equal(again.transform(df.assign(g=df.g.astype(str))), [[1, 0, 1], [2, 1, 0], [3, 0, 1]])


def test_candidates_are_the_arm_grid_or_a_configured_grid():
    data = experiment_from_frame(frame(), spec())
    from omegaconf import OmegaConf

    c = candidate_treatments(data, OmegaConf.create({"candidate_points": None}))
    np.testing.assert_allclose(c, data.arms)  # 5 x 3 arms form a full grid: candidates = arms
    c2 = candidate_treatments(data, OmegaConf.create({"candidate_points": [5, 5]}))
    assert c2.shape == (25, 2) and c2.max(0).tolist() == [0.4, 4.0]
    # arms that are not a full grid: the arms themselves (no interpolation possible)
    df = frame()
    keep = ~((df.discount == 0.4) & (df.duration_weeks == 4.0))
    d2 = experiment_from_frame(df[keep], spec())
    c3 = candidate_treatments(d2, OmegaConf.create({"candidate_points": None}))
    np.testing.assert_allclose(c3, d2.arms)
    with pytest.raises(ValueError, match="do not form a full grid"):
        candidate_treatments(d2, OmegaConf.create({"candidate_points": [5, 5]}))


TINY = ["model.n_ensemble=1", "model.n_folds=2", "model.max_epochs=3", "model.hidden=32", "evaluation.n_boot=30", "discretizer.n_restarts=2",
        "evaluation.k_values=[1,2,3]", "logger=none", "quiet=true"]


@pytest.fixture(scope="module")
def file_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("filerun")
    df = frame(2000)
    df.to_csv(tmp / "experiment.csv", index=False)
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=TINY + [
            "data=file", f"data.path={tmp / 'experiment.csv'}", f"data.features=[{','.join(FEATURES)}]",
            f"data.categorical=[{','.join(CATS)}]", "data.treatment=[discount,duration_weeks]", "data.outcome=profit",
            "data.id=customer_id", "data.eval_fraction=0.4"])  # a held-out share: the saved ensemble scores it
    results = run_experiment(cfg, tmp / "run")
    return tmp, results


def test_pipeline_on_a_csv_reports_dr_values_and_null_oracle_fields(file_run):
    tmp, _ = file_run
    res = json.loads((tmp / "run" / "results.json").read_text())
    assert res["status"] == "complete" and res["n_customers"] == 2000
    assert "simulator_checks" not in res
    fp = res["full_personalization"]
    assert fp["oracle_profit"] is None and fp["control_oracle_profit"] is None
    assert fp["control_dr_value"] < fp["dr_value"]
    for method, per_k in res["methods"].items():
        for k, r in per_k.items():
            assert r["oracle_profit"] is None and r["share_of_full"] is None
            lo, hi = r["dr_ci"]
            assert lo <= r["dr_value"] <= hi
            assert sum(r["segment_sizes"]) == res["n_eval"]
            assert r["policy_path"] == f"policies/{method}_k{k}"
            assert (tmp / "run" / r["policy_path"] / "policy.json").is_file()


def test_table_shows_dr_values_without_a_simulator(file_run):
    from coarse_gpu.experiment.report import format_table

    _, results = file_run
    table = format_table(results)
    assert "no true profits without a simulator" in table
    assert "Doubly robust value" in table


def test_thornton_loads_through_causaldata():
    pytest.importorskip("causaldata")
    from coarse_gpu.data.real import load_thornton

    data = load_thornton({"incentive_step": 0.5, "value_of_result": 2.0})
    assert len(data) == 2829 and data.space.names == ("incentive",)
    assert data.arms.ravel().tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert data.feature_names == ["distvct", "age", "hiv2004"] and data.truth is None
    # profit = 2 * got - incentive: with got in {0, 1} the outcome takes two values per arm
    for a, t in enumerate(data.arms[:, 0]):
        assert set(np.round(data.outcome[data.arm == a], 9)) <= {round(-t, 9), round(2.0 - t, 9)}


def test_ihdp_loads_through_econml_with_its_true_response_surface():
    pytest.importorskip("econml")
    from econml.data.dgps import ihdp_surface_B

    from coarse_gpu.data.real import load_ihdp

    data = load_ihdp({"treatment_cost": 0.0}, seed=3)
    Y, T, X, te = ihdp_surface_B(random_state=3)
    assert len(data) == 747 and data.arms.ravel().tolist() == [0.0, 1.0]
    np.testing.assert_allclose(data.outcome, Y)
    truth = data.truth.profit(np.array([[0.0], [1.0]]))
    np.testing.assert_allclose(truth[:, 1] - truth[:, 0], te)
    # the realized outcome is the true surface at the received arm plus N(0, 1) noise
    resid = Y - truth[np.arange(747), T.astype(int)]
    assert abs(resid.mean()) < 0.15 and 0.85 < resid.std() < 1.15


def test_saved_policies_reproduce_the_runs_segments_on_the_held_out_customers(file_run):
    from coarse_gpu.policy.io import load_policy

    tmp, res = file_run
    data = load_experiment(tmp / "experiment.csv", spec())
    _, test = data.split((0.6, 0.4), seed=0)
    assert len(test) == res["n_eval"] and res["estimates"] == "held-out"
    for method in ("grid", "kmeans_features", "kmeans_preferences", "ot"):
        for k in ("2", "3"):
            r = res["methods"][method][k]
            pol = load_policy(tmp / "run" / r["policy_path"])
            np.testing.assert_allclose(pol.treatments, r["treatments"])
            seg, _ = pol.assign_matrix(test.X)
            sizes = np.bincount(seg, minlength=int(k))
            # the argmax / nearest-centroid rules give back the run's own segments (OT: up to ties)
            assert np.abs(sizes - np.asarray(r["segment_sizes"])).sum() <= (0 if method == "grid" else 0.01 * len(test)), \
                (method, k, sizes.tolist(), r["segment_sizes"])
