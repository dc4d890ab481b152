"""Metrics are small registered objects (coarse_gpu.evaluate.metrics) that the main job's evaluator and
``CoarsePersonalizer.evaluate`` share (issue 28): the two doors compute the same numbers through the same
functions, a toy metric registered by the user reaches results.json (through a plugin module), the report
and the API, and a wrong metric name is one line naming the key before any work."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from coarse_gpu import CoarsePersonalizer
from coarse_gpu.data import PromotionsSimulator
from coarse_gpu.evaluate.metrics import (
    DEFAULT_JOB_METRICS,
    METRICS,
    Metric,
    MetricValue,
    PolicyEvidence,
    evaluate_metrics,
    register_metric,
)
from coarse_gpu.policy import Policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAMES = ["discount", "duration_weeks"]
#: A small, fast TARNet: the properties below hold for any fitted model.
SMALL = dict(hidden=16, n_repr_layers=1, n_head_layers=1, max_epochs=2, n_ensemble=1, batch_size=256)

#: The toy metric, as a user would write it in a module of her own: the mean discount a policy gives
#: per customer (its cost driver), a number one can count by hand from the segments.
TOY = '''
import numpy as np

from coarse_gpu.evaluate.metrics import Metric, register_metric


def mean_discount(ev):
    """mean over the customers of the discount (first treatment dimension) each is assigned"""
    return float(np.asarray(ev.policy.treatments)[ev.policy.assignment, 0].mean())


register_metric(Metric("mean_discount", mean_discount, description="mean discount per customer"), replace=True)
'''


@pytest.fixture
def toy_module(tmp_path, monkeypatch):
    """The toy metric's module in tmp_path, importable here and by a subprocess; unregistered afterwards."""
    (tmp_path / "toy_metrics.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "toy_metrics"
    METRICS.pop("mean_discount", None)
    sys.modules.pop("toy_metrics", None)


def _experiment(n, seed):
    d = PromotionsSimulator(n_customers=n, seed=seed, n_noise_features=0,
                            discount_levels=(0.0, 0.2, 0.4), duration_levels=(0.0, 4.0)).sample()
    return d, pd.DataFrame(d.treatment, columns=NAMES)


@pytest.fixture(scope="module")
def fitted():
    d, t = _experiment(3000, 0)
    cp = CoarsePersonalizer(k=3, model="tarnet", n_folds=2, seed=0, model_params=SMALL).fit(d.features, t, d.outcome)
    assert cp.effective_k_ == 3  # segments that differ: the numbers below are not those of one treatment
    return cp


def _hand_mean_discount(treatments, segments) -> float:
    sizes = np.bincount(segments, minlength=len(treatments))
    return float(sizes @ np.asarray(treatments)[:, 0] / sizes.sum())


def test_the_job_evaluator_and_the_api_give_the_same_numbers_from_the_same_rows(fitted):
    """The main job's Evaluator on held-out rows, with the API's fitted model as its estimates, and
    ``cp.evaluate`` on the same rows: the same DR value, the same bootstrap CI and segments, bit for bit."""
    from coarse_gpu.evaluate import arm_weights, dr_value
    from coarse_gpu.experiment.estimates import ProfitEstimates
    from coarse_gpu.experiment.evaluation import Evaluator

    cp = fitted
    test, t = _experiment(2000, 1)
    X_m = cp._matrix(test.features)
    model, arms = cp.policy_.model, cp._arms()
    arm = np.all(test.treatment[:, None, :] == arms[None], axis=2).argmax(1)  # in the model's arm order
    test = dataclasses.replace(test, arm=arm, arms=arms)
    est = ProfitEstimates(mu_arms=model.predict_arms(X_m), profit_at=lambda T: model.predict_profit(X_m, T),
                          arm_weights=lambda T: arm_weights(T, arms), oracle=None, source="held-out")
    job = Evaluator(test, est, n_boot=300, ci_level=0.9, seed=cp.seed)
    policy = Policy("ot", cp.treatments_, cp.assign(test.features))
    s = job.scores(policy)
    cell = job.metrics(policy, s, job.boot.means(s[:, None])[:, 0])
    api = cp.evaluate(test.features, t, test.outcome, propensity=test.propensity, n_boot=300, ci_level=0.9,
                      metrics=["dr", "segments", "expected"])
    for key in ("dr_value", "dr_ci", "segment_sizes", "effective_k", "expected_profit"):
        assert api[key] == cell[key], key
    # and they are what the formulas give: the mean score, the paper's expected profit
    assert api["dr_value"] == pytest.approx(float(s.mean()), rel=0, abs=0)
    assert api["expected_profit"] == pytest.approx(
        float(cp.predict_profit(test.features, cp.treatments_)[np.arange(2000), policy.assignment].mean()), abs=1e-12)
    assert api["dr_ci"][0] < api["dr_value"] < api["dr_ci"][1]
    assert tuple(api["dr_ci"]) == dr_value(s, n_boot=300, alpha=0.1, seed=cp.seed).ci  # the library's DR interval
    # the job's cell has the true profit too (a simulator); the API's default keys are today's
    assert cell["oracle_profit"] is not None and 0 < cell["share_of_full"] <= 1
    assert set(cp.evaluate(test.features, t, test.outcome, n_boot=0)) == {"dr_value", "dr_ci", "segment_sizes",
                                                                        "effective_k", "se", "n"}


def test_a_metric_registered_by_the_user_reaches_the_api(fitted, toy_module):
    __import__(toy_module)
    test, t = _experiment(1500, 2)
    out = fitted.evaluate(test.features, t, test.outcome, n_boot=0, metrics=["dr", "mean_discount"])
    hand = _hand_mean_discount(fitted.treatments_, fitted.assign(test.features))
    assert out["mean_discount"] == pytest.approx(hand, abs=1e-12)
    assert "segment_sizes" not in out  # only the metrics asked for
    with pytest.raises(ValueError, match=r"metrics: unknown metric 'nope'; known: true_profit, dr, .*mean_discount"):
        fitted.evaluate(test.features, t, test.outcome, metrics=["dr", "nope"])


def test_metric_values_cis_missing_needs_and_registration_errors():
    pol = Policy("x", np.array([[0.0], [1.0]]), np.array([0, 1, 1, 1]))
    ev = PolicyEvidence(policy=pol, outcome=np.zeros(4), treatment=None, arm=None, propensity=None,
                        mu_policy=np.array([1.0, 2.0, 3.0, 4.0]), scores=np.array([1.0, 2.0, 3.0, 6.0]))
    with_ci = Metric("half", lambda e: MetricValue(float(e.scores.mean()) / 2, (0.0, 5.0)), ci=True)
    assert with_ci(ev) == {"half": 1.5, "half_ci": [0.0, 5.0]}
    # no simulator: the true profit is None (not computed), the others are numbers
    out = evaluate_metrics(ev, DEFAULT_JOB_METRICS)
    assert out["oracle_profit"] is None and out["share_of_full"] is None and out["dr_share_of_full"] is None
    assert out["dr_value"] == 3.0 and out["expected_profit"] == 2.5 and out["expected_share_of_full"] is None
    assert out["segment_sizes"] == [1, 3] and out["effective_k"] == 2
    lo, hi = out["dr_ci"]  # n_boot = 0: the normal interval, mean -+ 1.96 sd / sqrt(n)
    assert (hi - lo) / 2 == pytest.approx(1.959964 * np.std([1, 2, 3, 6], ddof=1) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="a metric named 'dr' is registered already"):
        register_metric(Metric("dr", lambda e: 0.0))
    with pytest.raises(ValueError, match=r"writes key\(s\) \['dr_value'\] that metric 'dr' writes already"):
        register_metric(Metric("mine", lambda e: {"dr_value": 0.0}, keys=("dr_value",)))
    with pytest.raises(ValueError, match=r"would write key\(s\) \['treatments'\], which results hold"):
        register_metric(Metric("treatments", lambda e: 0.0))
    with pytest.raises(ValueError, match=r"metric 'half' returned float; with ci=True it returns a MetricValue"):
        Metric("half", lambda e: 1.0, ci=True)(ev)
    with pytest.raises(ValueError, match="Metric name must be an identifier"):
        Metric("my metric", lambda e: 0.0)
    wrong = Metric("two", lambda e: {"a": 1.0}, keys=("a", "b"))
    with pytest.raises(ValueError, match=r"metric 'two' returned keys \['a'\], it declares \['a', 'b'\]"):
        wrong(ev)


def test_the_config_names_a_wrong_metric_before_any_work():
    from tests.test_config import _compose

    from coarse_gpu.experiment.validate import config_problems

    assert list(_compose().evaluation.metrics) == list(DEFAULT_JOB_METRICS)
    assert config_problems(_compose()) == []
    bad = config_problems(_compose(["evaluation.metrics=[true_profit,dr,dr_share,expected,segments,nope]"]))
    assert bad == ["evaluation.metrics: unknown metric 'nope'; known: true_profit, dr, dr_share, expected, segments"]
    dropped = config_problems(_compose(["evaluation.metrics=[dr,segments]"]))
    assert len(dropped) == 1 and "leaves out the built-in metric(s) ['true_profit', 'dr_share', 'expected']" in \
        dropped[0] and "evaluation.metrics=[true_profit,dr,dr_share,expected,segments]" in dropped[0]


def test_plugins_come_from_the_environment_and_the_config_and_a_missing_one_is_named(toy_module, monkeypatch):
    from coarse_gpu.utils import plugins

    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.setenv(plugins.PLUGIN_ENV, f" {toy_module} ")
    assert (toy_module, "$COARSE_GPU_PLUGINS") in plugins.plugin_modules()
    assert "mean_discount" not in METRICS
    plugins.load_plugins()
    assert "mean_discount" in METRICS
    METRICS.pop("mean_discount")
    sys.modules.pop(toy_module)
    monkeypatch.setenv(plugins.PLUGIN_ENV, "")
    plugins.load_plugins([toy_module])  # the config key's modules are imported on every call
    assert "mean_discount" in METRICS
    with pytest.raises(ImportError, match=r"plugin module 'no_such_plugin_xyz' \(listed in the config key "
                                          r"plugins\) cannot be imported"):
        plugins.load_plugins(["no_such_plugin_xyz"])


def test_a_toy_metric_runs_through_the_cli_into_results_json_and_the_table(tmp_path, toy_module):
    """``coarse-gpu plugins=[toy_metrics] evaluation.metrics=[..., mean_discount]`` on a CSV: every cell of
    results.json carries the toy metric, equal to the share counted by hand from the cell's treatments
    and segment sizes, and table.txt prints it; the API on the saved policy computes the same function."""
    from tests.conftest import ROOT

    d, t = _experiment(1500, 0)
    df = d.features.assign(discount=t.discount, duration_weeks=t.duration_weeks, profit=d.outcome)
    df.to_csv(tmp_path / "exp.csv", index=False)
    features = list(d.features.columns)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "coarse_gpu.cli", "data=file", f"data.path={tmp_path / 'exp.csv'}",
           f"data.features=[{','.join(features)}]", "data.categorical=[channel,region,tier]",
           "data.treatment=[discount,duration_weeks]", "data.outcome=profit", "model=gb_s", "model.n_folds=2",
           "evaluation.k_values=[1,3]", "evaluation.methods=[ot,kmeans_features]", "evaluation.n_boot=50", "logger=none", "quiet=true", "seed=0",
           f"plugins=[{toy_module}]",
           f"evaluation.metrics=[{','.join(DEFAULT_JOB_METRICS)},mean_discount]", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    env.pop("COARSE_GPU_PLUGINS", None)
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["extra_metrics"] == {"mean_discount": {"keys": ["mean_discount"],
                                                          "description": "mean discount per customer"}}
    for method, cells in results["methods"].items():
        for k, cell in cells.items():
            sizes = np.asarray(cell["segment_sizes"])
            discount = np.asarray(cell["treatments"])[:, 0]
            assert cell["mean_discount"] == pytest.approx(sizes @ discount / sizes.sum(), abs=1e-12), (method, k)
    table = (run_dir / "table.txt").read_text()
    assert "Metric mean_discount: mean discount per customer" in table
    # the saved policy through the API computes the same registered function on new rows
    __import__(toy_module)
    cp = CoarsePersonalizer.load(run_dir / "policies" / "ot_k3")
    new, t_new = _experiment(800, 5)
    out = cp.evaluate(new.features, t_new, new.outcome, n_boot=0, metrics=["dr", "segments", "mean_discount"])
    seg = cp.assign(new.features)
    assert out["mean_discount"] == pytest.approx(_hand_mean_discount(cp.treatments_, seg), abs=1e-12)
    # segments of different sizes and discounts: the plain mean of the segments' discounts is another number
    sizes = np.bincount(seg, minlength=len(cp.treatments_))
    assert out["mean_discount"] != pytest.approx(cp.treatments_[sizes > 0, 0].mean(), abs=1e-6)
    # without the plugin the CLI names the metric and its key before any work
    env_bad = {**env, "PYTHONPATH": str(ROOT)}
    cmd_bad = [c for c in cmd if not c.startswith(("plugins=", "hydra.run.dir="))] + [f"hydra.run.dir={tmp_path}/bad"]
    bad = subprocess.run(cmd_bad, cwd=tmp_path, env=env_bad, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "evaluation.metrics: unknown metric 'mean_discount'; known:" in bad.stderr
    assert not (tmp_path / "bad" / "results.json").exists()  # the check comes before any work
