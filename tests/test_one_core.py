"""Issue 28, one core: ``CoarsePersonalizer.run`` and ``coarse-gpu data=file`` run the same library object
(coarse_gpu.experiment.job.CoarsePipeline), so on the same rows, seed and options every method's cell of
results.json is the same number, the saved policies assign new customers alike, and the API's report
files are the CLI's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from coarse_gpu import CoarsePersonalizer
from coarse_gpu.discretize import budget_constraint, treatment_costs
import coarse_gpu.experiment.personalize as step_one
from tests.test_api_reliability import _example_frame

FEATURES_DROP = ("customer_id", "discount", "duration_weeks", "profit")
KINDS = {"duration_weeks": "continuous"}  # weeks 0/2/4 as a dose, as the CLI is told below


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one_core")
    df = _example_frame(2500, 0)
    df.to_csv(tmp / "promotions.csv", index=False)
    return tmp, df, [c for c in df.columns if c not in FEATURES_DROP]


def _cli(tmp, features, run_dir, *extra, pythonpath=()):
    from tests.conftest import ROOT

    cmd = [sys.executable, "-m", "coarse_gpu.cli", "data=file", f"data.path={tmp / 'promotions.csv'}",
           f"data.features=[{','.join(features)}]", "data.categorical=[channel,region,tier]",
           "data.treatment=[discount,duration_weeks]", "data.outcome=profit", "data.treatment_kinds={duration_weeks:continuous}",
           "model=gb_s", "model.n_folds=2", "evaluation.n_boot=200", "logger=none", "quiet=true", "seed=0",
           f"hydra.run.dir={run_dir}", *extra]
    out = subprocess.run(cmd, cwd=tmp, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *map(str, pythonpath)])}, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((run_dir / "results.json").read_text())


def test_run_gives_the_clis_results_cell_for_cell_and_its_policies(example):
    tmp, df, features = example
    cli = _cli(tmp, features, tmp / "cli", "evaluation.k_values=[1,2,3]",
               "evaluation.methods=[ot,kmeans_preferences,grid,single_best]", "data.eval_fraction=0.3")
    cp = CoarsePersonalizer(k=3, model="gb_s", n_folds=2, seed=0, treatment_kinds=KINDS)
    api = cp.run(df[features], df[["discount", "duration_weeks"]], df["profit"], k_values=[1, 2, 3],
                 methods=["ot", "kmeans_preferences", "grid", "single_best"], eval_fraction=0.3, n_boot=200,
                 run_dir=tmp / "api")
    assert api["status"] == cli["status"] == "complete" and api["n_eval"] == cli["n_eval"] == 750
    assert set(api["methods"]) == set(cli["methods"]) == {"ot", "kmeans_preferences", "grid", "single_best"}
    for m, per_k in cli["methods"].items():
        assert set(per_k) == set(api["methods"][m])
        for k, cell in per_k.items():
            mine = api["methods"][m][k]
            for key in ("treatments", "dr_value", "dr_ci", "expected_profit", "segment_sizes"):
                assert mine[key] == cell[key], (m, k, key)
    written = json.loads((tmp / "api" / "results.json").read_text())  # the returned dict, as JSON writes it
    assert written["methods"] == json.loads(json.dumps(api["methods"]))
    for key in ("comparisons", "choose_k", "model_selection", "full_personalization"):
        assert written[key] == cli[key], key
    for name in ("results.json", "table.txt", "share_vs_k.png", "policies/ot_k3/policy.json"):
        assert (tmp / "api" / name).is_file(), name
    # run leaves the fitted attributes of its K=k ot policy: it assigns new customers as the CLI's saved one
    theirs = CoarsePersonalizer.load(tmp / "cli" / "policies" / "ot_k3")
    new = _example_frame(800, 1)[features]
    np.testing.assert_allclose(cp.treatments_, theirs.treatments_, rtol=0, atol=0)
    np.testing.assert_array_equal(cp.assign(new), theirs.assign(new))


def test_run_with_one_k_is_fit_plus_its_evaluation(example):
    """k_values left out: K = [k], as fit (and the CLI's discretizer.k=k): the same treatments and assignment."""
    tmp, df, features = example
    X, T, y = df[features], df[["discount", "duration_weeks"]], df["profit"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an empty segment would be the same in both
        fitted = CoarsePersonalizer(k=3, model="gb_s", n_folds=2, seed=0, treatment_kinds=KINDS).fit(X, T, y)
        cp = CoarsePersonalizer(k=3, model="gb_s", n_folds=2, seed=0, treatment_kinds=KINDS)
        res = cp.run(X, T, y, methods=["ot", "single_best"], n_boot=0)
    assert res["k_values"] == [3] and list(res["methods"]["ot"]) == ["3"]
    assert res["methods"]["single_best"] == {}  # it applies at K = 1 only
    np.testing.assert_array_equal(cp.treatments_, fitted.treatments_)
    np.testing.assert_array_equal(cp.assignment_, fitted.assignment_)
    assert res["methods"]["ot"]["3"]["treatments"] == fitted.treatments_.tolist()
    # the DR value is the mean of the scored rows' AIPW scores, in (control, full) on this easy experiment
    ot = res["methods"]["ot"]["3"]
    full = res["full_personalization"]
    assert full["control_dr_value"] < ot["dr_value"] <= full["dr_value"] + 3 * (ot["dr_ci"][1] - ot["dr_ci"][0])


def test_run_takes_the_apis_constraints_and_prices_them(example):
    tmp, df, features = example
    X, T, y = df[features], df[["discount", "duration_weeks"]], df["profit"]
    budget = lambda cand: [budget_constraint(treatment_costs(cand, [1.0, 0.0]), 0.05, len(df))]  # noqa: E731
    cp = CoarsePersonalizer(k=3, model="gb_s", n_folds=2, seed=0, treatment_kinds=KINDS, constraints=budget)
    res = cp.run(X, T, y, methods=["ot"], n_boot=0)
    cell = res["methods"]["ot"]["3"]
    mean_discount = np.average(np.asarray(cell["treatments"])[:, 0], weights=cell["segment_sizes"])
    assert mean_discount <= 0.05 + 1e-6  # the budget: the mean discount over the (all, out-of-fold) scored rows
    price = cell["price_of_constraints"]
    assert price["constraints"][0]["name"] == "budget"
    assert price["cost"]["expected_profit"] >= -1e-9  # the constraint can only cost estimated profit


@pytest.mark.parametrize("kwargs, words", [
    ({"methods": ["ot", "nope"]}, "unknown method(s) ['nope']"),
    ({"k_values": [0, 2]}, "k_values"),
    ({"n_boot": -1}, "n_boot"),
    ({"eval_fraction": 1.5}, "eval_fraction"),
    ({"eval_fraction": 0.99}, "eval_fraction=0.99 leaves 25 of the 2500 customers to train on"),  # API words
    ({"methods": "ot"}, "methods must be a list, e.g. methods=['ot']"),
    ({"k_values": [2.5]}, "k_values[0]: Value '2.5'"),
    ("file", "is a file, not a folder"),
    ("earlier run", "already holds a run (results.json)"),
])
def test_runs_bad_arguments_are_one_line_naming_them_before_any_training(example, monkeypatch, kwargs, words):
    tmp, df, features = example
    if kwargs == "file":
        (tmp / "a_file").write_text("keep me")
        kwargs = {"run_dir": tmp / "a_file"}
    elif kwargs == "earlier run":
        (tmp / "earlier").mkdir(exist_ok=True)
        (tmp / "earlier" / "results.json").write_text('{"status": "complete"}')
        kwargs = {"run_dir": tmp / "earlier"}

    def no_training(*a, **kw):
        raise AssertionError("trained before the argument error")

    monkeypatch.setattr(step_one, "personalize", no_training)
    cp = CoarsePersonalizer(k=2, model="gb_s", n_folds=2, seed=0)
    with pytest.raises(ValueError) as err:
        cp.run(df[features], df[["discount", "duration_weeks"]], df["profit"], **kwargs)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert (tmp / "a_file").read_text() == "keep me" if (tmp / "a_file").exists() else True
    if (tmp / "earlier").exists():
        assert (tmp / "earlier" / "results.json").read_text() == '{"status": "complete"}'  # nothing lost


TOY_SOURCE = '''
import pandas as pd
from coarse_gpu.data.file import FileSpec, experiment_from_frame

class HalfSource:
    """The example CSV's customers of one channel only (a source that filters before the data checks)."""
    def __init__(self, path, min_per_arm=10):
        self.path, self.min_per_arm = path, min_per_arm

    def sample(self):
        df = pd.read_csv(self.path)
        df = df[df["channel"] == "web"]
        spec = FileSpec(features=["recency", "frequency", "age"], treatment=["discount", "duration_weeks"],
                        outcome="profit", min_per_arm=self.min_per_arm,
                        treatment_kinds={"duration_weeks": "continuous"})
        return experiment_from_frame(df, spec, source=self.path)
'''


TOY_TRACKER = '''
import json
from pathlib import Path

class FileTracker:
    """Every call as one JSON line in <run dir>/toy_tracker.jsonl."""
    enabled = False
    run_dir = None

    def __init__(self, run_dir, project):
        self.path, self.project = Path(run_dir) / "toy_tracker.jsonl", project

    def _write(self, what, **kw):
        with open(self.path, "a") as f:
            f.write(json.dumps({"call": what, "project": self.project, **kw}) + "\\n")

    def log(self, values): self._write("log", keys=sorted(values))
    def log_trace(self, name, trace): self._write("log_trace", name=name)
    def log_image(self, name, path): self._write("log_image", name=name)
    def log_results_table(self, results): self._write("log_results_table")
    def summary(self, values): self._write("summary", keys=sorted(values))
    def save_file(self, path): self._write("save_file")
    def log_artifact(self, path, **kw): self._write("log_artifact")
    def finish(self, exit_code=0): self._write("finish", exit_code=exit_code)

def open_file_tracker(*, run_dir, run_config, run_name, group, name, mode, project, **rest):
    assert run_config["seed"] == 0 and mode == "whatever"
    return FileTracker(run_dir, project)
'''


def test_a_data_source_and_a_tracker_of_your_own_are_built_by_instantiate_from_their_nodes(example):
    """docs/extending.md "A new data source" and docs/cluster.md's tracker factory, in one command."""
    tmp, df, features = example
    (tmp / "toy_source.py").write_text(TOY_SOURCE)
    (tmp / "toy_tracking.py").write_text(TOY_TRACKER)
    run_dir = tmp / "toy"
    res = _cli(tmp, features, run_dir, "data._target_=toy_source.HalfSource", "data.min_per_arm=5",
               "logger=wandb", "logger._target_=toy_tracking.open_file_tracker", "logger.mode=whatever",
               "logger.project=mine", "evaluation.k_values=[1,2]", "evaluation.methods=[ot]", pythonpath=[tmp])
    assert res["status"] == "complete"
    # the source: only the web channel's customers, its own feature list
    assert res["n_customers"] == int((df["channel"] == "web").sum()) < len(df)
    assert res["config"]["data"]["_target_"] == "toy_source.HalfSource"
    # the tracker: every call of the job and the command, with the logger node's own keys
    calls = [json.loads(line) for line in (run_dir / "toy_tracker.jsonl").read_text().splitlines()]
    assert {c["project"] for c in calls} == {"mine"}
    names = [c["call"] for c in calls]
    assert names.count("log_image") >= 1 and names[-1] == "finish" and calls[-1]["exit_code"] == 0
    assert any(c["call"] == "log" and "ot/share_of_full" in c["keys"] for c in calls)  # the job's own logging


TOY_METHOD = '''
import numpy as np
from coarse_gpu.experiment.methods import register_method
from coarse_gpu.policy import Policy

def top_mean(k, ctx):
    """The K candidates of highest mean estimated profit; each customer her best of them."""
    profit = np.asarray(ctx.profit)
    cols = np.sort(np.argsort(-profit.mean(0), kind="stable")[:k])
    return Policy("top_mean", ctx.candidates[cols], profit[:, cols].argmax(1)), {}

register_method("top_mean", top_mean)
'''


def test_a_registered_method_runs_through_both_doors_and_is_scored_like_the_baselines(example, monkeypatch):
    tmp, df, features = example
    (tmp / "toy_method.py").write_text(TOY_METHOD)
    cli = _cli(tmp, features, tmp / "method", "plugins=[toy_method]", "evaluation.k_values=[1,3]",
               "evaluation.methods=[ot,top_mean]", pythonpath=[tmp])
    monkeypatch.syspath_prepend(str(tmp))
    from coarse_gpu.experiment import methods, validate

    names, steps = list(validate.METHODS), dict(methods.POLICY_METHODS)
    try:
        import toy_method  # noqa: F401  (registers top_mean in this process)

        cp = CoarsePersonalizer(k=3, model="gb_s", n_folds=2, seed=0, treatment_kinds=KINDS)
        api = cp.run(df[features], df[["discount", "duration_weeks"]], df["profit"], k_values=[1, 3],
                     methods=["ot", "top_mean"], n_boot=200)
    finally:  # leave the registry as found
        validate.METHODS[:] = names
        methods.POLICY_METHODS.clear()
        methods.POLICY_METHODS.update(steps)
    for k in ("1", "3"):
        mine, theirs = api["methods"]["top_mean"][k], cli["methods"]["top_mean"][k]
        assert mine["treatments"] == theirs["treatments"] and mine["dr_value"] == theirs["dr_value"]
        assert len(mine["treatments"]) == int(k)
        assert "ot_minus_top_mean" in cli["comparisons"][k]  # paired with ot like every baseline
    # at K = 1 the top mean candidate is the best single treatment by estimated profit: ot's K=1 choice too
    assert api["methods"]["top_mean"]["1"]["expected_profit"] == pytest.approx(api["methods"]["ot"]["1"]["expected_profit"])
    assert cli["methods"]["top_mean"]["3"]["policy_path"] is None  # no saved rule: not saved, said in the log


TOY_SOLVER = '''
import torch
from coarse_gpu.discretize import Solution, SolverSpec, register_solver

def top_means(state, call):
    """The K candidates with the highest mean profit."""
    means = state.src.columns64(torch.arange(state.src.m)).mean(0)
    return Solution(torch.sort(means.topk(state.k).indices).values)

register_solver(SolverSpec("toy_top_means", top_means, "best K column means", shares=False, constraints=False,
                           support=False, distributed=False, lazy=False))
'''


def test_a_registered_solver_runs_through_both_doors(example, monkeypatch):
    """docs/extending.md "A new solver", end to end: the CLI with the plugin and the API (discretizer=) give
    the same K treatments (the solver itself is checked against its definition in test_solver_table.py)."""
    tmp, df, features = example
    (tmp / "toy_solver.py").write_text(TOY_SOLVER)
    cli = _cli(tmp, features, tmp / "solver", "plugins=[toy_solver]", "discretizer.solver=toy_top_means",
               "discretizer.refine=false", "discretizer.k=3", "evaluation.methods=[ot]", pythonpath=[tmp])
    monkeypatch.syspath_prepend(str(tmp))
    from coarse_gpu.discretize import SOLVER_TABLE

    try:
        import toy_solver  # noqa: F401  (registers the solver in this process)

        cp = CoarsePersonalizer(k=3, model="gb_s", n_folds=2, seed=0, treatment_kinds=KINDS,
                                discretizer="toy_top_means", discretizer_params={"refine": False})
        cp.fit(df[features], df[["discount", "duration_weeks"]], df["profit"])
    finally:
        SOLVER_TABLE.pop("toy_top_means", None)
    assert cli["methods"]["ot"]["3"]["treatments"] == cp.treatments_.tolist()
    on_grid = (cp.treatments_[:, None, :] == cp.candidates_[None]).all(2).any(1)
    assert on_grid.all() and len({tuple(t) for t in cp.treatments_.tolist()}) == 3  # three distinct candidates
