"""The Python API as trustworthy as the CLI (issue 25): every argument checked and named before any work,
rows paired by position, treatment columns by name, no silent clipping, no pure-extrapolation values,
effective K, one source of model defaults, and the same step 2 as the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from coarse_gpu import CoarsePersonalizer
from coarse_gpu.data import PromotionsSimulator

pytestmark = pytest.mark.usefixtures("one_torch_thread", "one_blas_thread")

NAMES = ["discount", "duration_weeks"]
#: A small, fast TARNet (2 epochs): the properties below hold for any fitted model.
FAST = dict(model="tarnet", n_folds=2, model_params=dict(hidden=16, n_repr_layers=1, n_head_layers=1, max_epochs=2,
                                                         n_ensemble=1, batch_size=256))


@pytest.fixture(scope="module")
def one_blas_thread():
    """One OpenMP / BLAS thread (boosting's predictions): as fast here, and no contention with neighbours."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _experiment(n, seed):
    d = PromotionsSimulator(n_customers=n, seed=seed, n_noise_features=0,
                            discount_levels=(0.0, 0.2, 0.4), duration_levels=(0.0, 4.0)).sample()
    return d.features, pd.DataFrame(d.treatment, columns=NAMES), d.outcome


@pytest.fixture(scope="module")
def fitted():
    """One small 2-D fit (6 arms), shared by the tests that only use it; k a numpy integer (accepted)."""
    X, t, y = _experiment(2000, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 2 epochs: a segment may be empty (effective K below)
        cp = CoarsePersonalizer(k=np.int64(3), seed=0, **FAST).fit(X, t, y)
    return cp, _experiment(2000, 1)


@pytest.fixture
def no_training(monkeypatch):
    """Any call of step 1 fails the test: the errors below must come before any training."""
    import coarse_gpu.experiment.personalize as personalize

    def refuse(*a, **k):
        raise AssertionError("step 1 started before the bad argument was refused")

    monkeypatch.setattr(personalize, "personalize", refuse)


# -- arguments, named before any work ----------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(k=2.7), r"k must be an integer >= 1 .* got 2\.7"),
    (dict(k=True), r"k must be an integer >= 1 .* got True"),
    (dict(k=0), r"k must be an integer >= 1"),
    (dict(n_folds=1), r"n_folds must be an integer >= 2 \(cross-fitting"),
    (dict(n_folds=2.0), r"n_folds must be an integer >= 2"),
    (dict(seed=-1), r"seed must be an integer"),
    (dict(model="tarnett"), r"model='tarnett' is not one of"),
    (dict(discretizer="sinkhorm"), r"discretizer='sinkhorm' is not one of"),
    (dict(k=5, min_share=0.3), r"min_share=0.3 is infeasible with k=5"),
    (dict(k=2, max_share=0.4), r"max_share=0.4 is infeasible with k=2"),
    (dict(min_share="0.1"), r"min_share must be a number"),
    (dict(model="tarnet", model_params={"hidden": 0}), r"model_params: model.hidden=0 must be"),
    (dict(model="tarnet", model_params={"hidden": "wide"}), r"model_params: hidden='wide'"),
    (dict(model="tarnet", model_params={"alpha": 2.0}), r"model_params: model key\(s\) \['model.alpha'\] are not"),
    (dict(model="tarnet", model_params={"n_folds": 3}), r"model_params: 'n_folds' is set by the arguments"),
    (dict(discretizer_params={"n_restarts": 0}), r"discretizer_params: discretizer.n_restarts"),
    (dict(discretizer_params={"k": 3}), r"discretizer_params: 'k' is an argument"),
    (dict(categorical=["colour"]), r"categorical lists \['colour'\], which are not columns of X"),
])
def test_bad_arguments_are_named_before_any_training(no_training, kwargs, message):
    X, t, y = _experiment(300, 0)
    with pytest.raises(ValueError, match=message) as err:
        CoarsePersonalizer(**kwargs).fit(X, t, y)
    assert "eval_fraction" not in str(err.value)  # the API has no such key: never advised


def test_bad_rows_and_constraints_are_named_before_any_training(no_training):
    from coarse_gpu.discretize import Constraint

    X, t, y = _experiment(2000, 0)
    with pytest.raises(ValueError, match=r"^y must be one-dimensional \(N,\), got shape \(2000, 2\)$"):
        CoarsePersonalizer(k=2).fit(X, t, np.stack([y, y], 1))
    with pytest.raises(ValueError, match=r"^propensity has 1995 rows but X has 2000$"):
        CoarsePersonalizer(k=2).fit(X, t, y, propensity=np.full(1995, 1 / 6))
    with pytest.raises(ValueError, match=r"^treatment has 1999 rows but X has 2000$"):
        CoarsePersonalizer(k=2).fit(X, t.iloc[1:], y)
    with pytest.raises(ValueError, match=r"constraints\[0\] \('budget'\): weights must have shape \(2000,\)"):
        CoarsePersonalizer(k=2, constraints=[Constraint(np.ones(10), np.ones(6), hi=1.0, name="budget")]).fit(X, t, y)
    with pytest.raises(ValueError, match=r"constraint 'budget' is infeasible"):  # a budget below the cheapest arm
        CoarsePersonalizer(k=2, constraints=lambda cand: [Constraint(np.full(2000, 1 / 2000), cand[:, 0] + 1.0,
                                                                     hi=0.5, name="budget")]).fit(X, t, y)


def test_evaluate_names_its_own_arguments(fitted):
    cp, (Xn, tn, yn) = fitted
    with pytest.raises(ValueError, match=r"ci_level must be a number in \(0, 1\).* got 1\.5"):
        cp.evaluate(Xn, tn, yn, ci_level=1.5)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="n_boot must be an integer >= 0"):
            cp.evaluate(Xn, tn, yn, n_boot=bad)
    with pytest.raises(ValueError, match=r"^y must be one-dimensional \(N,\), got shape \(2000, 2\)$"):
        cp.evaluate(Xn, tn, np.stack([yn, yn], 1))
    with pytest.raises(ValueError, match=r"^propensity has 1995 rows but X has 2000$"):
        cp.evaluate(Xn, tn, yn, propensity=np.full(1995, 1 / 6))


# -- rows by position, columns by name -------------------------------------------------------------
def test_rows_pair_by_position_whatever_the_index_labels_say():
    X, t, y = _experiment(1500, 3)
    plain = CoarsePersonalizer(k=2, seed=0, **FAST).fit(X, t, y)
    rng = np.random.default_rng(0)
    Xs = X.set_axis(rng.permutation(len(X)))  # same rows, shuffled labels
    ts = t.set_axis(rng.permutation(len(X)) + 10_000)  # other labels again
    ys = pd.Series(y, index=rng.permutation(len(X)))
    shuffled = CoarsePersonalizer(k=2, seed=0, **FAST).fit(Xs, ts, ys)
    np.testing.assert_array_equal(shuffled.treatments_, plain.treatments_)
    np.testing.assert_array_equal(shuffled.assignment_, plain.assignment_)
    Xn, tn, yn = _experiment(1000, 4)
    a = plain.evaluate(Xn, tn, yn, n_boot=0)
    b = plain.evaluate(Xn.set_axis(rng.permutation(1000)), tn.set_axis(rng.permutation(1000)),
                       pd.Series(yn, index=rng.permutation(1000)), n_boot=0)
    assert a == b


def test_treatment_columns_are_matched_by_name(fitted):
    cp, (Xn, tn, yn) = fitted
    right = cp.evaluate(Xn, tn[NAMES], yn, n_boot=100)
    swapped = cp.evaluate(Xn, tn[NAMES[::-1]], yn, n_boot=100)
    assert swapped == right
    with pytest.raises(ValueError, match=r"treatment columns \['sms', 'duration_weeks'\] do not match the fitted "
                                         r"treatment columns \['discount', 'duration_weeks'\]"):
        cp.evaluate(Xn, tn.rename(columns={"discount": "sms"}), yn)
    T = pd.DataFrame([[0.4, 0.0], [0.2, 4.0]], columns=NAMES)
    np.testing.assert_array_equal(cp.predict_profit(Xn, T[NAMES[::-1]]), cp.predict_profit(Xn, T.to_numpy()))


def test_swapped_columns_by_position_would_change_the_value(fitted):
    """The property above is not vacuous: the same swap passed as an unnamed array is another experiment."""
    cp, (Xn, tn, yn) = fitted
    swapped = tn[NAMES[::-1]].to_numpy()
    with pytest.raises(ValueError, match="is not one of the experiment's arms"):  # (4, 0.2) is no arm
        cp.evaluate(Xn, swapped, yn)


# -- never clip silently, never extrapolate silently -----------------------------------------------
def test_predict_profit_refuses_treatments_outside_the_arms_unless_asked(fitted):
    cp, (Xn, _, _) = fitted
    with pytest.raises(ValueError, match=r"T\[1\] has duration_weeks = 100, outside the trained range \[0, 4\].*"
                                         r"extrapolate=True"):
        cp.predict_profit(Xn, [[0.2, 4.0], [0.2, 100.0]])
    with pytest.raises(ValueError, match=r"T\[0\] has discount = -0.1"):
        cp.predict_profit(Xn, [[-0.1, 0.0]])
    far = cp.predict_profit(Xn, [[0.2, 100.0]], extrapolate=True)
    # documented: a per-arm model's continuation is the profit at the nearest edge of the range
    np.testing.assert_array_equal(far, cp.predict_profit(Xn, [[0.2, 4.0]]))


def test_an_edited_policy_with_treatments_outside_the_arms_does_not_assign(fitted, tmp_path):
    cp, (Xn, _, _) = fitted
    folder = cp.save(tmp_path / "k3")
    doc = json.loads((folder / "policy.json").read_text())
    doc["treatments"][0][0] = 40.0  # a discount of 40 where the arms span 0-0.4
    (folder / "policy.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"discount = 40|40"):
        CoarsePersonalizer.load(folder).assign(Xn)
    cp2 = CoarsePersonalizer.load(cp.save(tmp_path / "ok"))
    cp2.treatments_ = cp2.treatments_.copy()
    cp2.treatments_[1, 1] = 9.0
    with pytest.raises(ValueError, match=r"the policy's treatment\[1\] has duration_weeks = 9, outside the trained "
                                         r"range \[0, 4\]"):
        cp2.assign(Xn)


def test_evaluate_refuses_held_out_rows_without_the_policys_arms(fitted):
    from coarse_gpu.evaluate import arm_weights

    cp, (Xn, tn, yn) = fitted
    one_arm = (tn["discount"] == 0.0) & (tn["duration_weeks"] == 0.0)
    with pytest.raises(ValueError, match="has a single arm"):  # the CLI's data check, as for a data file
        cp.evaluate(Xn[one_arm], tn[one_arm], yn[one_arm.to_numpy()])
    # drop every row that received an arm the biggest segment's treatment rests on
    seg = cp.assign(Xn)
    s = int(np.bincount(seg).argmax())
    arms = np.asarray(cp.model_.arms_)
    on = arms[arm_weights(cp.treatments_, arms)[s] > 0]
    keep = ~np.any(np.all(tn.to_numpy()[:, None, :] == on[None], axis=2), axis=1)
    n_seg = int(np.sum(seg[keep] == s))
    assert n_seg > 0 and np.unique(tn[keep], axis=0).shape[0] >= 2
    with pytest.raises(ValueError, match=rf"segment {s} \(treatment discount=.*\) is assigned {n_seg} of the "
                                         rf"{int(keep.sum())} rows, but none of the rows received"):
        cp.evaluate(Xn[keep], tn[keep], yn[keep])


# -- effective K --------------------------------------------------------------------------------------
def _one_best_arm_data(n: int, heterogeneous: bool):
    """1-D, arms 0/1/2: arm 1 is everyone's best by a mile, or (heterogeneous) arm 1 for a > 0 and arm 2
    for the others."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    t = rng.choice([0.0, 1.0, 2.0], size=n)
    best = np.where(X["a"] > 0, 1.0, 2.0) if heterogeneous else 1.0
    return X, t, 10.0 * (t == best) + 0.01 * rng.normal(size=n)


def test_effective_k_counts_non_empty_segments_and_warns_when_below_k():
    X, t, y = _one_best_arm_data(1200, heterogeneous=False)
    with pytest.warns(UserWarning, match=r"only 1 of the k=2 treatments are given to any training row"):
        cp = CoarsePersonalizer(k=2, model="gb_t", n_folds=2, seed=0).fit(X, t, y)
    assert cp.effective_k_ == 1 and np.unique(cp.assignment_).size == 1
    ev = cp.evaluate(X, t, y, n_boot=0)
    assert ev["effective_k"] == 1 and sorted(ev["segment_sizes"]) == [0, 1200]
    X, t, y = _one_best_arm_data(1200, heterogeneous=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # k segments in use: no warning
        cp = CoarsePersonalizer(k=2, model="gb_t", n_folds=2, seed=0).fit(X, t, y)
    assert cp.effective_k_ == 2 and sorted(cp.treatments_[:, 0].tolist()) == [1.0, 2.0]
    assert cp.evaluate(X, t, y, n_boot=0)["effective_k"] == 2


# -- one source of model defaults ----------------------------------------------------------------------
def _cli_config(overrides):
    from hydra import compose, initialize_config_dir

    from coarse_gpu.experiment.composed import config_dir
    from coarse_gpu.experiment.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _model_files():
    from coarse_gpu.experiment.composed import config_dir

    return sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))


@pytest.mark.parametrize("name", _model_files())
def test_the_api_builds_the_model_the_cli_builds(name):
    import torch

    from coarse_gpu.experiment.personalize import build_model

    cli = build_model(_cli_config([f"model={name}"]).model, torch.device("cpu"), 0, False)
    api = build_model(CoarsePersonalizer(model=name)._model_cfg(), torch.device("cpu"), 0, False)
    assert type(api) is type(cli) and api.get_params() == cli.get_params()


def test_dose_models_take_the_yaml_settings_not_the_schema_defaults():
    cfg = CoarsePersonalizer(model="dose_logit")._model_cfg()
    assert cfg.n_head_layers == 2 and list(cfg.transforms) == ["identity", "log1p"]
    assert CoarsePersonalizer(model="dose_logit", model_params={"n_head_layers": 4})._model_cfg().n_head_layers == 4


# -- a plain script, and the same answer as the CLI -------------------------------------------------
def _example_frame(n: int, seed: int) -> pd.DataFrame:
    """scripts/make_example_csv.py's frame: the example CSV a user would bring."""
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("make_example_csv", ROOT / "scripts" / "make_example_csv.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.experiment_frame(n, seed)


def _readme_snippet() -> str:
    from tests.conftest import ROOT

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return section[section.index("```python\n") + len("```python\n"):section.index("```\n", section.index("```python"))]


def test_the_readme_snippet_runs_as_a_script_without_a_main_guard(tmp_path):
    from coarse_gpu.models import TARNet
    from coarse_gpu.models.parallel import MIN_ROWS_PARALLEL, auto_jobs
    from coarse_gpu.utils.device import usable_cpus
    from tests.conftest import ROOT

    n = 12_000
    assert n >= MIN_ROWS_PARALLEL
    if usable_cpus() >= 2:  # the folds of this fit really go to worker processes
        assert auto_jobs([TARNet(device="cpu"), TARNet(device="cpu")], n) >= 2
    _example_frame(n, 0).to_csv(tmp_path / "promotions.csv", index=False)
    src = _readme_snippet()
    assert "__main__" not in src
    fast = ('CoarsePersonalizer(k=5, model="tarnet", seed=0, n_folds=2, model_params=dict(hidden=16, '
            'n_repr_layers=1, n_head_layers=1, max_epochs=1, n_ensemble=1, batch_size=512))')
    for old, new in (('"outputs/example/promotions.csv"', repr(str(tmp_path / "promotions.csv"))),
                     ('CoarsePersonalizer(k=5, model="tarnet", seed=0)', fast)):
        assert src.count(old) == 1, old
        src = src.replace(old, new)
    script = tmp_path / "snippet.py"
    script.write_text(src)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    treat = [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith("treatments ")]
    segs = [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith("segments ")]
    assert len(treat) == 1 and len(segs) == 1  # printed once: no worker re-ran the script
    assert np.asarray(treat[0]).shape == (5, 2) and len(segs[0]) == 10 and set(segs[0]) <= set(range(5))


@pytest.mark.parametrize("model", ["dose_logit", "tarnet", "auto"])
def test_the_api_and_the_cli_give_the_same_policy(tmp_path, model):
    """Issue 28's two doors: on the example CSV, ``CoarsePersonalizer(k=5, model=..., seed=0).fit`` and
    ``coarse-gpu data=file ... model=... seed=0`` give the same K=5 treatments and assign new customers
    alike. dose_logit: its YAML differs from the schema's defaults (transforms), and its smooth profit
    surface makes the CLI's refinement move a treatment off the grid of arms; tarnet: the per-arm
    network with the interpolated profit oracle; auto: the model selection (candidates, folds, blend)."""
    from tests.conftest import ROOT

    df = _example_frame(3000, 0)
    df.to_csv(tmp_path / "promotions.csv", index=False)
    features = [c for c in df.columns if c not in ("customer_id", "discount", "duration_weeks", "profit")]
    params = dict(hidden=16, n_repr_layers=1, n_head_layers=1, max_epochs=2, n_ensemble=1, batch_size=256)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "coarse_gpu.cli", "data=file", f"data.path={tmp_path / 'promotions.csv'}",
           f"data.features=[{','.join(features)}]", "data.categorical=[channel,region,tier]",
           "data.treatment=[discount,duration_weeks]", "data.outcome=profit", "data.id=customer_id",
           "data.treatment_kinds={duration_weeks:continuous}",  # weeks 0/2/4 as a dose (else kept on its values)
           f"model={model}", "model.n_folds=2", *[f"model.{k}={v}" for k, v in params.items()], "discretizer.k=5",
           "evaluation.methods=[ot]", "evaluation.n_boot=0", "logger=none", "quiet=true", "seed=0",
           f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-3000:]
    cp = CoarsePersonalizer(k=5, model=model, n_folds=2, seed=0, model_params=params,
                            treatment_kinds={"duration_weeks": "continuous"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an empty segment is the same in both, and checked below
        cp.fit(df[features], df[["discount", "duration_weeks"]], df["profit"])
    theirs = CoarsePersonalizer.load(run_dir / "policies" / "ot_k5")
    np.testing.assert_allclose(cp.treatments_, theirs.treatments_, rtol=0, atol=1e-6)
    new = _example_frame(1000, 1)[features]
    np.testing.assert_array_equal(cp.assign(new), theirs.assign(new))
    assert cp.effective_k_ >= 3  # a policy with several segments in use
    if model == "dose_logit":
        on_grid = np.all(cp.treatments_[:, None, :] == cp.candidates_[None], axis=2).any(1)
        assert not on_grid.all()  # the refinement ran (the API's old step 2 stayed on the grid)


def test_fit_all_in_loky_workers_reports_each_fit_and_returns_the_in_process_models_in_order():
    from coarse_gpu.models import TARNet
    from coarse_gpu.models.parallel import fit_all

    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 3))
    t = rng.integers(0, 2, 400).astype(float)
    y = X[:, 0] + t * (1 + X[:, 1]) + rng.standard_normal(400)
    kw = dict(hidden=8, n_repr_layers=1, n_head_layers=1, max_epochs=2, n_ensemble=1, device="cpu")
    data = [(X[i::3], t[i::3], y[i::3], None) for i in range(3)]  # three different fits
    ticks = []
    par = fit_all([TARNet(seed=s, **kw) for s in range(3)], data, n_jobs=2, progress=lambda: ticks.append(1))
    seq = fit_all([TARNet(seed=s, **kw) for s in range(3)], data, n_jobs=1)
    assert len(ticks) == 3
    for a, b in zip(par, seq):  # the same models, bit for bit, in the order given
        np.testing.assert_array_equal(a.predict_arms(X), b.predict_arms(X))
    assert not np.array_equal(par[0].predict_arms(X), par[1].predict_arms(X))


def test_the_api_takes_treatment_labels_and_never_offers_an_unseen_combination(tmp_path):
    """Hillstrom-style: a text treatment column through the API (labels in, labels out, saved and
    reloaded), and the same experiment as two 0/1 columns never offers both e-mails."""
    rng = np.random.default_rng(0)
    n = 3000
    X = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n)})
    seg = rng.choice(["Mens E-Mail", "Womens E-Mail", "No E-Mail"], size=n)
    lift = np.where(seg == "Mens E-Mail", X.x1 > 0, np.where(seg == "Womens E-Mail", X.x1 <= 0, False))
    y = 3.0 * lift + rng.normal(size=n)
    cp = CoarsePersonalizer(k=2, model="gb_s", n_folds=2, seed=0).fit(X, pd.DataFrame({"segment": seg}), y)
    assert sorted(map(tuple, cp.treatments_labelled_)) == [("Mens E-Mail",), ("Womens E-Mail",)]
    mens = int(np.flatnonzero([t == ["Mens E-Mail"] for t in cp.treatments_labelled_])[0])
    assert np.mean(cp.assign(X)[X.x1.to_numpy() > 0.5] == mens) > 0.9
    # labels in predict_profit / evaluate are matched to the model's codes; an unknown label is named
    p = cp.predict_profit(X.head(200), pd.DataFrame({"segment": ["No E-Mail", "Mens E-Mail"]}))
    assert np.mean(p[X.x1.head(200).to_numpy() > 0.5, 1] - p[X.x1.head(200).to_numpy() > 0.5, 0]) > 2.0
    with pytest.raises(ValueError, match=r"column 'segment' has label\(s\) \['SMS'\]"):
        cp.predict_profit(X.head(3), pd.DataFrame({"segment": ["SMS"]}))
    assert cp.evaluate(X, pd.DataFrame({"segment": seg}), y, n_boot=20)["dr_value"] > 2.5
    cp.save(tmp_path / "pol")
    back = CoarsePersonalizer.load(tmp_path / "pol")
    assert back.treatments_labelled_ == cp.treatments_labelled_
    np.testing.assert_array_equal(back.assign(X), cp.assign(X))
    # two 0/1 levers, (1, 1) never randomized: never a candidate, never offered
    T = pd.DataFrame({"mens": (seg == "Mens E-Mail").astype(int), "womens": (seg == "Womens E-Mail").astype(int)})
    two = CoarsePersonalizer(k=3, model="gb_s", n_folds=2, seed=0).fit(X, T, y)
    assert [1.0, 1.0] not in two.candidates_.tolist() and [1, 1] not in two.treatments_labelled_
    with pytest.raises(ValueError, match=r"treatment_kinds\.foo"):
        CoarsePersonalizer(k=2, model="gb_s", treatment_kinds={"foo": "discrete"}).fit(X, T, y)
