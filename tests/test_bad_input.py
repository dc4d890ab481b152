"""Bad inputs: every one answers with a specific, actionable error (or is handled), never a crash deep inside.

Each test asserts the message: the column / key / value it names.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from coarse_gpu.assign_cli import UsageError, main as assign_main, parse_args
from coarse_gpu.cli import config_dir
from coarse_gpu.data.file import DataSchemaError, FeatureSchema, FileSpec, check_frame, load_experiment, read_table
from coarse_gpu.discretize import discretize
from coarse_gpu.experiment.config import register_configs
from coarse_gpu.experiment.pipeline import build_data, check_k_values
from coarse_gpu.models import TARNet
from coarse_gpu.policy import kmeans_features, kmeans_preferences
from coarse_gpu.policy.io import PolicyFileError, deployable, load_policy, save_policy

from test_data_file import frame, spec


def problems(df, s=None) -> list[str]:
    with pytest.raises(DataSchemaError) as exc:
        check_frame(df, s or spec())
    return exc.value.problems


def has(found: list[str], text: str) -> bool:
    return any(text in p for p in found)


def one(df, s=None) -> str:
    p = problems(df, s)
    assert len(p) == 1, p
    return p[0]


@pytest.fixture(scope="module")
def df():
    return frame(600)


# ---- schema checks ----------------------------------------------------------------------------
def test_missing_feature_column(df):
    msg = one(df.drop(columns=["age"]))
    assert "feature column 'age' is missing from the file" in msg and "'recency'" in msg


def test_missing_treatment_column(df):
    assert "treatment column 'discount' is missing" in one(df.drop(columns=["discount"]))


def test_missing_outcome_column(df):
    assert "outcome column 'profit' is missing" in one(df.drop(columns=["profit"]))


def test_non_numeric_treatment(df):
    d = df.copy()
    d["discount"] = d["discount"].astype(object)
    d.loc[[3, 8], "discount"] = "ten percent"
    assert one(d) == "treatment column 'discount': 2 row(s) are not numeric (e.g. 'ten percent' in row 3)"


def test_nan_in_a_feature(df):
    d = df.copy()
    d.loc[[5, 6, 7], "age"] = np.nan
    assert one(d) == "feature column 'age': 3 row(s) are NaN/missing (e.g. row 5)"


def test_inf_in_the_outcome(df):
    d = df.copy()
    d.loc[11, "profit"] = np.inf
    assert one(d) == "outcome column 'profit': 1 row(s) are inf (e.g. inf in row 11)"


def test_nan_in_the_treatment(df):
    d = df.copy()
    d.loc[2, "duration_weeks"] = np.nan
    assert "treatment column 'duration_weeks': 1 row(s) are NaN/missing (e.g. row 2)" in problems(d)


def test_constant_numeric_feature(df):
    msg = one(df.assign(age=1.5))
    assert msg.startswith("feature column 'age' is constant (value 1.5 in all 600 rows)")


def test_constant_categorical_feature(df):
    assert one(df.assign(tier="gold")).startswith("feature column 'tier' is constant (value 'gold' in all 600 rows)")


def test_string_feature_not_declared_categorical(df):
    msg = one(df, spec(categorical=["region", "tier"]))
    assert "feature column 'channel' is not numeric" in msg and "add it to data.categorical" in msg


def test_too_few_customers_per_arm(df):
    d = df.copy()
    d.loc[:2, ["discount", "duration_weeks"]] = [0.45, 4.0]  # a 16th arm with 3 customers
    msg = one(d)
    assert "1 of the 16 treatment arms have fewer than data.min_per_arm=10 customers" in msg
    assert "arm (discount=0.45, duration_weeks=4) with 3 row(s)" in msg


def test_treatment_outside_the_declared_range(df):
    msg = one(df, spec(treatment_low=[0.0, 0.0], treatment_high=[0.3, 4.0]))
    n = int((df.discount > 0.3).sum())
    assert msg.startswith(f"treatment column 'discount': {n} row(s) outside the declared range [0.0, 0.3]")


def test_a_range_declared_on_one_side_only_is_checked_on_that_side(df):
    """treatment_low alone and treatment_high alone: each side checked on its own (a check that ran only
    when both were declared would pass every other test)."""
    n_low = int((df.duration_weeks < 2.0).sum())
    assert one(df, spec(treatment_low=[0.0, 2.0])).startswith(
        f"treatment column 'duration_weeks': {n_low} row(s) outside the declared range [2.0, None]")
    n_high = int((df.discount > 0.3).sum())
    assert one(df, spec(treatment_high=[0.3, 4.0])).startswith(
        f"treatment column 'discount': {n_high} row(s) outside the declared range [None, 0.3]")
    # declared beyond the received treatments, one side at a time
    assert one(df, spec(treatment_low=[-0.1, 0.0])).startswith("data.treatment_low[0]=-0.1 for treatment column "
                                                               "'discount' lies beyond the smallest treatment")
    assert one(df, spec(treatment_high=[0.4, 5.0])).startswith("data.treatment_high[1]=5 for treatment column "
                                                               "'duration_weeks' lies beyond the largest treatment")
    # and the treatment space takes the declared side and the observed other side
    from coarse_gpu.data.file import experiment_from_frame

    data = experiment_from_frame(df, spec(treatment_high=[0.4, 4.0]))
    assert data.space.low == (0.0, 0.0) and data.space.high == (0.4, 4.0)


def test_duplicate_ids(df):
    d = df.copy()
    d.loc[9, "customer_id"] = d.loc[4, "customer_id"]
    assert one(d) == "id column 'customer_id': 1 value(s) occur more than once (2 rows), e.g. 'c4' in rows [4, 9]"


def test_missing_ids(df):
    d = df.copy()
    d["customer_id"] = d["customer_id"].astype(object)
    d.loc[7, "customer_id"] = None
    assert one(d) == "id column 'customer_id': 1 row(s) are missing (e.g. row 7)"


def test_propensity_outside_0_1(df):
    d = df.assign(p=1.0 / 15)
    d.loc[4, "p"] = 0.0
    assert one(d, spec(propensity="p")) == "propensity column 'p': 1 row(s) outside (0, 1] (e.g. 0.0 in row 4)"


def test_one_arm_only(df):
    msg = one(df.assign(discount=0.1, duration_weeks=2.0))
    assert msg.startswith("treatment ['discount', 'duration_weeks'] has a single arm (discount=0.1, duration_weeks=2)")
    assert "need at least 2 arms" in msg


def test_every_problem_is_reported_at_once(df):
    d = df.drop(columns=["age"]).assign(tier="gold")
    d.loc[0, "profit"] = np.nan
    d.loc[9, "customer_id"] = d.loc[4, "customer_id"]
    p = problems(d)
    assert len(p) == 4
    with pytest.raises(DataSchemaError, match=r"4 problem\(s\)"):
        check_frame(d, spec())


def test_column_used_in_two_roles(df):
    assert has(problems(df, spec(features=["age", "profit"], categorical=[])),
               "column 'profit' is used more than once (as features, outcome)")


def test_categorical_not_in_features(df):
    assert has(problems(df, spec(categorical=CATS + ["segment"])),
               "data.categorical lists 'segment', which is not in data.features")


CATS = ["channel", "region", "tier"]


def test_declared_range_of_wrong_length(df):
    assert has(problems(df, spec(treatment_low=[0.0])),
               "data.treatment_low has 1 values but data.treatment has 2 column(s) ['discount', 'duration_weeks']")


def test_empty_feature_list(df):
    assert any("data.features is empty" in p for p in problems(df, spec(features=[], categorical=[])))


# ---- experiments that would give meaningless numbers (issue 18) ---------------------------------
def warnings_of(df, s=None) -> list[str]:
    return check_frame(df, s or spec())


def test_constant_outcome_is_an_error(df):
    assert one(df.assign(profit=3.0)) == (
        "outcome column 'profit' is constant (value 3.0 in all 600 rows): there is no outcome variation, so every "
        "policy would look equally good; check data.outcome")


def test_outcome_that_is_a_function_of_the_arm_alone_is_a_named_warning(df):
    w = warnings_of(df.assign(profit=10.0 * df.discount + df.duration_weeks))
    assert w == ["outcome_depends_only_on_arm: outcome column 'profit' is constant within every one of the 15 arms "
                 "(a function of the treatment alone): the data show no difference between customers, so every "
                 "personalized policy reduces to one treatment for all"]


def test_no_treatment_effect_is_neither_an_error_nor_a_warning(df):
    rng = np.random.default_rng(0)
    assert warnings_of(df.assign(profit=rng.normal(5.0, 1.0, len(df)))) == []  # arm means equal up to noise


def test_propensity_of_one_in_a_multi_arm_experiment_is_an_error(df):
    assert one(df.assign(p=1.0), spec(propensity="p")) == (
        "propensity column 'p' is 1 in all 600 rows, but the experiment has 15 arms: the column must hold the "
        "probability of the arm each customer received (e.g. 1/A under uniform randomization)")


def test_propensities_that_disagree_with_the_arm_frequencies_are_an_error(df):
    msg = one(df.assign(p=0.5), spec(propensity="p"))  # 15 arms of ~40 rows: sum(1/p) ~ 80, not N = 600
    assert msg.startswith("propensity column 'p' disagrees with the arms' frequencies: for 15 of the 15 arms "
                          "sum(1/p) over the arm's rows is off N=600 by more than a factor 2, e.g. arm (")
    assert "in a randomized experiment it estimates N for every arm" in msg
    too_small = df.assign(p=1.0 / 15)
    too_small.loc[too_small.discount == 0.4, "p"] = 0.01  # sum(1/p) ~ 3 N for those arms
    assert "for 3 of the 15 arms" in one(too_small, spec(propensity="p"))
    assert warnings_of(df.assign(p=1.0 / 12), spec(propensity="p")) == []  # off by 25 %: noise-sized, no error


def test_propensities_inconsistent_at_one_covariate_pattern_are_named_warnings(df):
    s = spec(features=CATS, categorical=CATS, propensity="p")  # 3 x 4 x 3 = 36 patterns, ~17 rows each
    assert warnings_of(df.assign(p=1.0 / 15), s) == []
    w = warnings_of(df.assign(p=np.where(np.arange(len(df)) % 2 == 0, 1.0 / 15, 1.0 / 14)), s)
    assert [x.split(":")[0] for x in w] == ["propensity_inconsistent", "propensity_sum"]
    assert "group(s) of customers with identical covariates who received the same arm have different " \
           "propensities (e.g. rows [" in w[0]
    assert "covariate pattern(s) the propensities of the different arms received sum to more than 1" in w[1]
    two = df.iloc[:300].assign(p=0.3, discount=np.where(np.arange(300) % 2 == 0, 0.0, 0.4))  # 0.3 + 0.3 < 1
    w2 = warnings_of(two, spec(features=CATS, categorical=CATS, treatment=["discount"], propensity="p", min_per_arm=5))
    assert any(x.startswith("propensity_sum: at ") and "sum to less than 1 although all 2 arms were received" in x
               for x in w2), w2


def test_declared_range_or_control_beyond_the_received_treatments_is_an_error(df):
    msg = one(df, spec(treatment_low=[0.0, 0.0], treatment_high=[0.8, 4.0]))
    assert msg == ("data.treatment_high[0]=0.8 for treatment column 'discount' lies beyond the largest treatment any "
                   "customer received (0.4): its effect cannot be estimated (the models would clip it to 0.4); set it "
                   "to 0.4 or leave it unset")
    assert one(df, spec(control=[-0.1, 0.0])) == ("data.control[0]=-0.1 for treatment column 'discount' lies outside "
                                                  "the received treatments [0, 0.4]: the control's profit cannot be "
                                                  "estimated there")


def test_duplicate_column_names_in_the_header(tmp_path):
    import hashlib

    text = frame(300).to_csv(index=False)
    path = tmp_path / "dup.csv"
    path.write_text(text.replace("customer_id,recency,frequency", "customer_id,recency,recency", 1))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DataSchemaError) as exc:
        load_experiment(path, spec(min_per_arm=5))
    assert exc.value.problems[0] == (
        "column name 'recency' occurs 2 times in the header (columns [1, 2]); pandas would read the copies as "
        "['recency', 'recency.1']: rename or drop the duplicates so that the column is unambiguous")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    # a duplicated column the spec does not use is only a warning, recorded on the experiment
    df2 = frame(300)
    df2.insert(1, "junk", 0)
    df2["junk2"] = 1
    path.write_text(df2.to_csv(index=False).replace(",junk2", ",junk", 1))
    data = load_experiment(path, spec(min_per_arm=5))
    assert [w.split(":")[0] for w in data.meta["warnings"]] == ["duplicate_unused_column"]
    assert "column name 'junk' occurs 2 times in the header" in data.meta["warnings"][0]


# ---- files -----------------------------------------------------------------------------------
def test_file_does_not_exist(tmp_path):
    with pytest.raises(DataSchemaError, match=r"file '.*nope\.csv' does not exist \(data\.path\)"):
        read_table(tmp_path / "nope.csv")


def test_unsupported_extension(tmp_path):
    (tmp_path / "e.xlsx").write_text("x")
    with pytest.raises(DataSchemaError, match="unsupported extension; use CSV"):
        read_table(tmp_path / "e.xlsx")


def test_header_only_csv(tmp_path):
    (tmp_path / "e.csv").write_text("age,discount,profit\n")
    with pytest.raises(DataSchemaError, match="has no data rows"):
        read_table(tmp_path / "e.csv")


def test_corrupt_parquet(tmp_path):
    (tmp_path / "e.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataSchemaError, match="could not be read as parquet"):
        load_experiment(tmp_path / "e.parquet", spec())


def test_data_path_not_set():
    cfg = OmegaConf.create({"name": "file", "path": None, "features": ["a"], "treatment": ["t"], "outcome": "y"})
    with pytest.raises(DataSchemaError, match="data.path is not set"):
        build_data(cfg, 0)


def test_unknown_data_source():
    with pytest.raises(ValueError, match=r"data.name='excel' is not a known data source"):
        build_data(OmegaConf.create({"name": "excel"}), 0)


def test_scale_override():
    from coarse_gpu.experiment.config import register_configs  # noqa: F401 (schemas for compose)
    from hydra import compose, initialize_config_dir

    from coarse_gpu.cli import config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = compose("config", overrides=["experiment=field_experiment", "scale=0.01"])
    assert cfg.scale == 0.01 and cfg.data.n_customers == 200_000
    assert len(build_data(cfg.data, 0, cfg.scale)) == 2_000  # 200k x 0.01
    with pytest.raises(ValueError, match=r"scale=-1.0 must be a positive number"):
        build_data(cfg.data, 0, -1.0)
    with pytest.raises(ValueError, match=r"scale=2.0 only applies to simulated data .*data=thornton"):
        build_data(OmegaConf.create({"name": "thornton"}), 0, 2.0)
    with pytest.raises(ValueError, match=r"leaves 0 customers"):
        build_data(cfg.data, 0, 1e-9)


# ---- K, arms, customers ------------------------------------------------------------------------
def test_k_zero_or_negative():
    with pytest.raises(ValueError, match=r"every K must be >= 1, got K=0 in k_values=\[0, 2\]"):
        check_k_values([0, 2], 15, 100)


def test_k_above_the_number_of_candidates():
    with pytest.raises(ValueError, match=r"K=5 exceeds the 4 distinct candidate treatments .*evaluation.k_values=\[1,2,3,4\]"):
        check_k_values([1, 5], 4, 100)


def test_fewer_customers_than_k():
    with pytest.raises(ValueError, match=r"K=8 exceeds the 6 held-out customers \(N < K\)"):
        check_k_values([2, 8], 50, 6)


def test_discretizer_rejects_k_outside_1_m():
    profit = np.random.default_rng(0).normal(size=(40, 6))
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, M=6\], got 0"):
        discretize(profit, 0, device="cpu")
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, M=6\], got 7"):
        discretize(profit, 7, device="cpu")


def test_model_with_one_arm_only():
    X = np.random.default_rng(0).normal(size=(50, 3))
    with pytest.raises(ValueError, match="single distinct value"):
        TARNet(max_epochs=1).fit(X, np.zeros(50), np.ones(50))


def test_all_identical_customers_are_handled():
    profit = np.tile(np.array([[1.0, 3.0, 2.0, 0.5]]), (30, 1))
    res = discretize(profit, 2, device="cpu", n_restarts=2)
    assert np.all(res.treatments[res.assignment].ravel() == 1.0)  # everyone gets the best candidate
    pol = kmeans_features(np.ones((30, 4)), profit, np.arange(4.0)[:, None], 3)
    assert pol.segment_sizes.tolist() == [30, 0, 0] and pol.info["empty_segments"] == [1, 2]


def test_empty_segment_after_assignment_is_handled_when_deployed(tmp_path):
    df = frame(600)
    from coarse_gpu.data.file import experiment_from_frame

    data = experiment_from_frame(df, spec())
    model = TARNet(hidden=8, max_epochs=1, device="cpu").fit(data.X, data.treatment, data.outcome)
    X = np.repeat(data.X[:2], 300, axis=0)  # two distinct customers, K = 4: two empty segments
    profit = model.predict_profit(X, data.arms)
    pol = kmeans_features(X, profit, data.arms, 4)
    assert len(pol.info["empty_segments"]) == 2
    dep = load_policy(save_policy(tmp_path / "p", deployable(pol, model, data, data.arms, X, profit)))
    seg, _ = dep.assign_matrix(data.X[:50])
    assert set(seg.tolist()) <= set(np.flatnonzero(pol.segment_sizes).tolist())  # empty slots never chosen
    pref = kmeans_preferences(profit, data.arms, 5, scale=data.space.span)
    dep2 = deployable(pref, model, data, data.arms, X, profit)
    assert np.all(np.isin(dep2.assign_matrix(data.X[:50])[0], np.flatnonzero(pref.segment_sizes)))


def test_tiny_epsilon_does_not_underflow():
    rng = np.random.default_rng(1)
    profit = rng.normal(size=(200, 12)) * 50.0
    res = discretize(profit, 3, epsilon=1e-9, device="cpu", n_restarts=2, dtype="float32")
    assert np.isfinite(res.objective) and np.all(np.isfinite(res.treatments))
    cols = res.candidate_index[res.assignment]
    # with a vanishing temperature the plan is a hard best-of-K assignment
    assert np.all(profit[np.arange(200), cols] >= profit[:, res.candidate_index].max(1) - 1e-9)


def test_zero_epsilon_is_rejected():
    with pytest.raises(ValueError, match="epsilon must be a positive number, got 0"):
        discretize(np.ones((5, 3)), 2, epsilon=0, device="cpu")


# ---- policy files ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pol")
    from coarse_gpu.data.file import experiment_from_frame
    from coarse_gpu.policy import grid_search

    data = experiment_from_frame(frame(600), spec())
    model = TARNet(hidden=8, max_epochs=1, device="cpu").fit(data.X, data.treatment, data.outcome)
    pol = grid_search(model.predict_arms(data.X), model.arms_, 2)
    folder = save_policy(tmp / "grid_k2", deployable(pol, model, data, data.arms, data.X,
                                                     model.predict_profit(data.X, data.arms)))
    return folder


def _copy(folder, tmp_path):
    import shutil

    return Path(shutil.copytree(folder, tmp_path / folder.name))


from pathlib import Path  # noqa: E402


def test_truncated_policy_json(saved, tmp_path):
    f = _copy(saved, tmp_path)
    text = (f / "policy.json").read_text()
    (f / "policy.json").write_text(text[: len(text) // 2])
    with pytest.raises(PolicyFileError, match=r"policy\.json' is corrupt or truncated \(not valid JSON"):
        load_policy(f)


def test_truncated_weights(saved, tmp_path):
    f = _copy(saved, tmp_path)
    w = next(f.glob("model-*.safetensors"))
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(PolicyFileError, match="are corrupt or truncated"):
        load_policy(f)


def test_missing_weights(saved, tmp_path):
    f = _copy(saved, tmp_path)
    next(f.glob("model-*.safetensors")).unlink()
    with pytest.raises(PolicyFileError, match="are missing"):
        load_policy(f)


def test_not_a_policy_folder(tmp_path):
    with pytest.raises(PolicyFileError, match="expected a folder with policy.json"):
        load_policy(tmp_path)


def test_other_format(saved, tmp_path):
    f = _copy(saved, tmp_path)
    doc = json.loads((f / "policy.json").read_text())
    doc["format"] = "someone-else/9"
    (f / "policy.json").write_text(json.dumps(doc))
    with pytest.raises(PolicyFileError, match=r"has format 'someone-else/9'; this version reads 'coarse_gpu.policy/1'"):
        load_policy(f)


def test_model_class_outside_the_package_is_refused(saved, tmp_path):
    f = _copy(saved, tmp_path)
    doc = json.loads((f / "policy.json").read_text())
    doc["model"]["class"] = "os.system"
    (f / "policy.json").write_text(json.dumps(doc))
    with pytest.raises(PolicyFileError, match="model class .os.system. is not one this version of coarse_gpu loads"):
        load_policy(f)


def test_policy_applied_to_a_different_feature_schema(saved, tmp_path, capsys):
    new = frame(50).drop(columns=["monetary", "tier"]).rename(columns={"age": "age_years"})
    new.to_csv(tmp_path / "new.csv", index=False)
    rc = assign_main([f"policy={saved}", f"data.path={tmp_path / 'new.csv'}", f"out={tmp_path / 'a.csv'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "feature column(s) ['monetary', 'age', 'tier'] are missing" in err
    assert not (tmp_path / "a.csv").exists()


def test_unseen_categorical_level(saved):
    dep = load_policy(saved)
    new = frame(20).drop(columns=["discount", "duration_weeks", "profit"])
    new.loc[3, "channel"] = "telephone"
    with pytest.raises(DataSchemaError, match=r"feature column 'channel': 1 row\(s\) have a level not seen in training"):
        dep.assign(new)


def test_declared_features_that_do_not_match_the_policy(saved, tmp_path, capsys):
    frame(20).to_csv(tmp_path / "new.csv", index=False)
    rc = assign_main([f"policy={saved}", f"data.path={tmp_path / 'new.csv'}", f"out={tmp_path / 'a.csv'}",
                      "data.features=[age,recency]"])
    assert rc == 2 and "the policy was trained on different features" in capsys.readouterr().err


# ---- config typos ------------------------------------------------------------------------------
def test_config_typo_in_a_file_data_key():
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        with pytest.raises(Exception, match=r"Could not override 'data.pth'"):
            compose(config_name="config", overrides=["data=file", "data.pth=x.csv"])


def test_config_wrong_type_for_a_file_data_key():
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        with pytest.raises(Exception, match=r"min_per_arm"):
            compose(config_name="config", overrides=["data=file", "data.min_per_arm=many"])


def test_assign_cli_typo_names_the_closest_key():
    with pytest.raises(UsageError, match=r"unknown key 'data.pth'; did you mean 'data.path'\?"):
        parse_args(["policy=p", "data.pth=x.csv", "out=o.csv"])


def test_assign_cli_missing_arguments():
    with pytest.raises(UsageError, match=r"missing required argument\(s\) out=\.\.\."):
        parse_args(["policy=p", "data.path=x.csv"])


def test_assign_cli_token_without_equals():
    with pytest.raises(UsageError, match="argument 'policy' is not key=value"):
        parse_args(["policy", "data.path=x.csv", "out=o.csv"])
