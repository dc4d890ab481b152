"""Policies as artifacts: save / load without pickle, identical assignments, atomic writes under SIGKILL."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coarse_gpu.assign_cli import main as assign_main
from coarse_gpu.data.file import experiment_from_frame
from coarse_gpu.models import DragonNet, TARNet
from coarse_gpu.policy import Policy, grid_search, kmeans_features, kmeans_preferences, kmeans_profiles
from coarse_gpu.policy.ot_tree import ot_tree
from coarse_gpu.policy.tree import policy_tree
from coarse_gpu.policy.io import deployable, load_policy, rule_of, save_policy

from test_data_file import frame, spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fitted():
    df = frame(1500, seed=0)
    data = experiment_from_frame(df, spec())
    model = TARNet(hidden=16, max_epochs=3, device="cpu", seed=0).fit(data.X, data.treatment, data.outcome)
    new = frame(700, seed=5).drop(columns=["discount", "duration_weeks", "profit"])
    return data, model, new


def _policies(data, model):
    cand = data.arms
    profit = model.predict_profit(data.X, cand)
    return cand, profit, {
        "grid": grid_search(model.predict_arms(data.X), model.arms_, 3),
        "kmeans_features": kmeans_features(data.X, profit, cand, 4, seed=0),
        "kmeans_preferences": kmeans_preferences(profit, cand, 3, seed=0, scale=data.space.span),
        "kmeans_profiles": kmeans_profiles(profit, cand, 3, seed=0),
        "kmeans_profiles_pca": kmeans_profiles(profit, cand, 4, seed=0, n_components=5),
        "policy_tree": policy_tree(data.X, profit, cand, 4, seed=0, min_samples_leaf=20),
        "ot_tree": ot_tree(data.X, profit, cand, 4, seed=0, min_samples_leaf=20),
    }


def test_round_trip_assigns_new_customers_identically(fitted, tmp_path):
    data, model, new = fitted
    cand, profit, pols = _policies(data, model)
    for name, pol in pols.items():
        mem = deployable(pol, model, data, cand, data.X, profit, metrics={"dr_value": 1.5})
        folder = save_policy(tmp_path / f"{name}_k{pol.k}", mem)
        loaded = load_policy(folder)
        assert loaded.method == pol.name and loaded.rule == mem.rule and loaded.k == pol.k
        a = mem.assign(new[loaded.feature_schema.columns], ids=new.customer_id)
        b = loaded.assign(new, ids=new.customer_id)
        pd.testing.assert_frame_equal(a, b)
        assert list(b.columns) == ["customer_id", "segment", "discount", "duration_weeks", "predicted_profit"]
        assert loaded.metrics == {"dr_value": 1.5}
        # the same rule on the customers the policy was built on gives back its own assignment
        seg, _ = loaded.assign_matrix(data.X)
        agree = np.mean(seg == pol.assignment)
        assert agree >= (1.0 if name in ("grid", "policy_tree", "ot_tree") else 0.99), (name, agree)


def test_a_saved_baseline_is_its_fitted_estimators_state_without_refitting(fitted, tmp_path, monkeypatch):
    import sklearn.cluster
    import sklearn.decomposition
    import sklearn.tree

    import coarse_gpu.policy.embeddings as embeddings

    data, model, new = fitted
    cand, profit, pols = _policies(data, model)

    def refit(*args, **kwargs):
        raise AssertionError("saving a policy refitted part of it")

    # every fit a baseline runs: none may run while saving (and deployable gets neither X nor the profit)
    for owner, name in ((sklearn.cluster.KMeans, "fit"), (sklearn.decomposition.PCA, "fit"),
                        (sklearn.tree.DecisionTreeClassifier, "fit"), (embeddings, "feature_embedding"),
                        (embeddings, "profile_embedding")):
        monkeypatch.setattr(owner, name, refit)
    X_new = None
    for name, pol in pols.items():
        est = pol.estimator
        assert est is not None and est.policy_ is pol
        loaded = load_policy(save_policy(tmp_path / name, deployable(pol, model, data, cand, None, None)))
        rule, params = rule_of(est) if name != "grid" else ("argmax", {})
        assert loaded.rule == rule and sorted(loaded.params) == sorted(params)
        for key, value in params.items():  # the file holds the estimator's arrays, as they are
            np.testing.assert_array_equal(loaded.params[key], value, err_msg=f"{name}: {key}")
        # the same segments as the estimator: on the fitted customers (= its policy) and on new ones
        np.testing.assert_array_equal(loaded.assign_matrix(data.X)[0], pol.assignment, err_msg=name)
        X_new = loaded.feature_schema.transform(new) if X_new is None else X_new
        arg = X_new if est.assign_input == "X" else \
            model.predict_arms(X_new) if name == "grid" else model.predict_profit(X_new, cand)
        np.testing.assert_array_equal(loaded.assign_matrix(X_new)[0], est.assign(arg), err_msg=name)


def test_a_baseline_policy_without_its_estimator_is_refused(fitted):
    data, model, _ = fitted
    cand, profit, pols = _policies(data, model)
    pol = pols["kmeans_features"]
    bare = Policy(pol.name, pol.treatments, pol.assignment, pol.info)
    with pytest.raises(ValueError, match="carries no fitted estimator"):
        deployable(bare, model, data, cand, data.X, profit)


def test_a_method_without_a_new_customer_rule_is_not_saved(fitted):
    data, model, _ = fitted
    pol = Policy("hand_made", data.arms[:2], np.zeros(len(data), dtype=np.int64))
    with pytest.raises(NotImplementedError, match="no assignment rule for new customers is defined for method 'hand_made'"):
        deployable(pol, model, data, data.arms, data.X, model.predict_profit(data.X, data.arms))


def test_weights_are_safetensors_and_json_needs_no_pickle(fitted, tmp_path):
    from safetensors.torch import load_file

    data, model, _ = fitted
    cand, profit, pols = _policies(data, model)
    folder = save_policy(tmp_path / "p", deployable(pols["grid"], model, data, cand, data.X, profit))
    doc = json.loads((folder / "policy.json").read_text())
    assert doc["format"] == "coarse_gpu.policy/1" and doc["model"]["class"] == "coarse_gpu.models.tarnet.TARNet"
    assert doc["feature_schema"]["categorical"]["tier"] == ["bronze", "gold", "silver"]
    tensors = load_file(str(folder / doc["model"]["weights"]))
    # the default TARNet on 1,500 rows is a 5-network ensemble: one state dict per member
    assert len(model.members_) == 5 and doc["model"]["children"]["members_"]["rows"] is None
    assert all(any(k.startswith(f"members_.{j}.network.") for k in tensors) for j in range(5))
    assert "fitted.x_mean_" in tensors
    np.testing.assert_allclose(tensors["fitted.arms_"].numpy(), model.arms_)


def test_dragonnet_round_trip_predicts_identically(fitted, tmp_path):
    data, _, new = fitted
    model = DragonNet(hidden=16, max_epochs=2, device="cpu", seed=1).fit(data.X, data.treatment, data.outcome)
    cand, profit, pols = _policies(data, model)
    folder = save_policy(tmp_path / "d", deployable(pols["grid"], model, data, cand, data.X, profit))
    loaded = load_policy(folder)
    X = loaded.feature_schema.transform(new)
    np.testing.assert_allclose(loaded.model.predict_arms(X), model.predict_arms(X), rtol=0, atol=0)


def test_assign_cli_chunked_equals_in_memory(fitted, tmp_path):
    data, model, new = fitted
    cand, profit, pols = _policies(data, model)
    mem = deployable(pols["kmeans_preferences"], model, data, cand, data.X, profit)
    folder = save_policy(tmp_path / "kmeans_preferences_k3", mem)
    new.to_csv(tmp_path / "new.csv", index=False)
    rc = assign_main([f"policy={folder}", f"data.path={tmp_path / 'new.csv'}", f"out={tmp_path / 'a.csv'}",
                      "chunk_rows=100"])
    assert rc == 0
    out = pd.read_csv(tmp_path / "a.csv")
    expect = mem.assign(new, ids=new.customer_id)
    assert list(out.columns) == ["customer_id", "segment", "discount", "duration_weeks", "predicted_profit"]
    np.testing.assert_array_equal(out.segment, expect.segment)
    np.testing.assert_allclose(out.predicted_profit, expect.predicted_profit, rtol=1e-12)
    assert not list(tmp_path.glob(".a.csv.*"))  # no temp file left behind


CHILD = textwrap.dedent("""
    import sys
    from coarse_gpu.policy.io import load_policy, save_policy
    a, b, target = sys.argv[1:4]
    pols = [load_policy(a), load_policy(b)]
    i = 0
    while True:
        save_policy(target, pols[i % 2])
        i += 1
        if i == 2:
            print("ready", flush=True)
""")


def test_a_save_killed_at_any_moment_leaves_a_complete_policy(fitted, tmp_path):
    data, model, new = fitted
    model_b = TARNet(hidden=16, max_epochs=2, device="cpu", seed=7).fit(data.X, data.treatment, data.outcome)
    cand, profit, pols = _policies(data, model)
    a = save_policy(tmp_path / "A", deployable(pols["grid"], model, data, cand, data.X, profit))
    b = save_policy(tmp_path / "B", deployable(pols["kmeans_features"], model_b, data, cand, data.X,
                                               model_b.predict_profit(data.X, cand)))
    versions = {json.loads((f / "policy.json").read_text())["model"]["sha256"]: f for f in (a, b)}
    target = tmp_path / "target"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = np.random.default_rng(0)
    for trial in range(3):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(a), str(b), str(target)], stdout=subprocess.PIPE,
                                env=env, cwd=ROOT)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(float(rng.uniform(0.0, 0.3)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        loaded = load_policy(target)  # never half a file: parses, checksum matches
        sha = json.loads((target / "policy.json").read_text())["model"]["sha256"]
        ref = load_policy(versions[sha])
        pd.testing.assert_frame_equal(loaded.assign(new), ref.assign(new))
        assert len(list(target.glob("model-*.safetensors"))) in (1, 2)


CHILD_ASSIGN = textwrap.dedent("""
    import sys
    from coarse_gpu.assign_cli import main
    print("ready", flush=True)
    main(sys.argv[1:])
""")


def test_assignments_killed_mid_write_leave_the_previous_complete_file(fitted, tmp_path):
    data, model, new = fitted
    cand, profit, pols = _policies(data, model)
    folder = save_policy(tmp_path / "grid_k3", deployable(pols["grid"], model, data, cand, data.X, profit))
    big = pd.concat([new] * 30, ignore_index=True)
    big.to_csv(tmp_path / "big.csv", index=False)
    out = tmp_path / "assignments.csv"
    out.write_text("previous,complete\n1,2\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [f"policy={folder}", f"data.path={tmp_path / 'big.csv'}", f"out={out}", "chunk_rows=500"]
    proc = subprocess.Popen([sys.executable, "-c", CHILD_ASSIGN, *args], stdout=subprocess.PIPE, env=env, cwd=ROOT)
    assert proc.stdout.readline().strip() == b"ready"
    deadline = time.time() + 60
    while not list(tmp_path.glob(".assignments.csv.*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)  # wait until the temp file is being written
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    text = out.read_text()
    if text != "previous,complete\n1,2\n":  # the child finished before the kill: then it is complete
        assert len(pd.read_csv(out)) == len(big)
    # run to completion: the new complete file replaces the old one
    assert assign_main(args) == 0
    assert len(pd.read_csv(out)) == len(big)


def test_policies_of_one_run_share_their_weights_file_by_a_hard_link(fitted, tmp_path):
    data, model, new = fitted
    cand, profit, pols = _policies(data, model)
    a = save_policy(tmp_path / "policies" / "grid_k3", deployable(pols["grid"], model, data, cand, data.X, profit))
    b = save_policy(tmp_path / "policies" / "kmeans_features_k4",
                    deployable(pols["kmeans_features"], model, data, cand, data.X, profit))
    (wa,), (wb,) = a.glob("model-*.safetensors"), b.glob("model-*.safetensors")
    assert wa.name == wb.name and wa.stat().st_ino == wb.stat().st_ino and wa.stat().st_nlink == 2
    shutil.rmtree(a)  # each folder stands alone: removing one leaves the other loadable
    seg, _ = load_policy(b).assign_matrix(data.X[:50])
    assert seg.shape == (50,)
