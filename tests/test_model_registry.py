"""One registry of CATE learners (issue 28): a plugin module that calls ``register_model`` once is a learner of
the Python API, of the command line (``model=toy``), a candidate of ``model=auto`` and a class saved policies
load -- with no other file touched. The plugin below is the one file docs/extending.md tells a user to write."""
from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from coarse_gpu import CoarsePersonalizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The plugin a user writes: a per-arm ridge regression of profit on x (closed form), one registration line.
PLUGIN = textwrap.dedent('''
    """A toy CATE learner: one ridge regression of profit on the standardized features per arm."""
    import numpy as np
    from sklearn.base import BaseEstimator

    from coarse_gpu.models import register_model
    from coarse_gpu.models.arms import ArmModel
    from coarse_gpu.models.base import check_inputs, check_X


    class ArmRidge(ArmModel, BaseEstimator):
        """Per-arm ridge regression of profit on x: mu_a(x) = b_a0 + z(x) . b_a."""

        def __init__(self, *, ridge: float = 1.0, interpolation: str = "linear", seed: int = 0):
            self.ridge = ridge  # not a ModelConfig key: the registration adds it to model=toy's config
            self.interpolation = interpolation
            self.seed = seed  # unused (a closed form); model=auto's cross-fitting sets it

        def fit(self, X, t, y, propensity=None):
            X, T, y, _ = check_inputs(X, t, y, propensity)
            arm = self._set_arms(T)
            self.n_features_in_ = int(X.shape[1])
            self.x_mean_, sd = X.mean(0), X.std(0)
            self.x_scale_ = np.where(sd > 1e-12, sd, 1.0)
            z = np.c_[np.ones(len(X)), (X - self.x_mean_) / self.x_scale_]
            pen = float(self.ridge) * np.diag([0.0] + [1.0] * X.shape[1])  # the intercept is not penalized
            self.coef_ = np.stack([np.linalg.solve(z[arm == a].T @ z[arm == a] + pen, z[arm == a].T @ y[arm == a])
                                   for a in range(self.n_arms_)])  # (A, 1 + p)
            return self

        def _check_fitted(self):
            if not hasattr(self, "coef_"):
                raise RuntimeError("ArmRidge is not fitted")

        def predict_arms(self, X):
            self._check_fitted()
            z = (check_X(X, self.n_features_in_) - self.x_mean_) / self.x_scale_
            return np.c_[np.ones(len(z)), z] @ self.coef_.T  # (N, A)


    register_model("toy", ArmRidge)
''')


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The plugin written to a folder and imported (what $COARSE_GPU_PLUGINS does); unregistered afterwards."""
    from coarse_gpu.experiment import config
    from coarse_gpu.models import registry, serialize

    folder = tmp_path_factory.mktemp("plugin")
    (folder / "toy_learner.py").write_text(PLUGIN)
    sys.path.insert(0, str(folder))
    try:
        yield folder, importlib.import_module("toy_learner")
    finally:
        sys.path.remove(str(folder))
        entry = registry._ENTRIES.pop("toy", None)
        if entry is not None:
            serialize.MODEL_CLASSES.pop(entry.target, None)
        config._stored_models.discard("toy")
        config._SCHEMAS.pop("toy", None)
        sys.modules.pop("toy_learner", None)


def _linear_effects(n: int, seed: int, effect: float):
    """Three arms, profit = 1 + x0 + arm * effect * x1 + noise: heterogeneous effects when effect != 0."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.standard_normal((n, 3)), columns=["x0", "x1", "x2"])
    arm = rng.integers(0, 3, n)
    y = 1.0 + X.x0 + arm * effect * X.x1 + 0.5 * rng.standard_normal(n)
    return X, pd.Series(arm * 0.1, name="discount"), y


def test_the_one_registration_reaches_every_list(toy):
    from coarse_gpu.experiment.dose import ARMS_ONLY_MODELS, DOSE_MODELS
    from coarse_gpu.experiment.model_build import MODELS, build_model
    from coarse_gpu.models.registry import model_table
    from coarse_gpu.models.select import CANDIDATES
    from coarse_gpu.models.serialize import MODEL_CLASSES

    cls = toy[1].ArmRidge
    assert MODELS["toy"] is cls and CANDIDATES["toy"] is cls and MODEL_CLASSES["toy_learner.ArmRidge"] is cls
    assert "toy" in ARMS_ONLY_MODELS and "toy" not in DOSE_MODELS
    assert "| `toy` | `ArmRidge` | Per-arm ridge regression of profit on x" in model_table()
    from coarse_gpu.experiment.composed import model_config

    cfg = model_config("toy")  # the API's config: the schema's defaults, the name, the class, its own key
    assert cfg._target_ == "toy_learner.ArmRidge" and cfg.n_folds == 5 and cfg.ridge == 1.0
    cfg.ridge = 0.25
    with pytest.raises(Exception, match="Key 'ridge_' not in 'ModelConfig_toy'"):
        cfg.ridge_ = 1.0
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # a SLURM launcher pickles the composed config
    model = build_model(cfg, "cpu", seed=3, verbose=False)
    assert type(model) is cls and model.get_params() == {"ridge": 0.25, "interpolation": "linear", "seed": 3}
    with pytest.raises(ValueError, match=r"model key\(s\) \['model.alpha'\] are not parameters of model=toy"):
        build_model(OmegaConf.merge(cfg, {"alpha": 2.0}), "cpu", seed=3, verbose=False)


def test_a_name_and_a_class_are_checked_when_registered(toy):
    from coarse_gpu.models import ArmMeans, register_model

    register_model("toy", toy[1].ArmRidge)  # the same again: a no-op
    with pytest.raises(ValueError, match="'toy' is taken by toy_learner.ArmRidge"):
        register_model("toy", ArmMeans)
    with pytest.raises(ValueError, match="twopart_gb_s.* candidates of model=twopart"):
        register_model("twopart_gb_s", ArmMeans)
    with pytest.raises(ValueError, match="name 'My-Model' must be lower-case"):
        register_model("My-Model", ArmMeans)
    with pytest.raises(TypeError, match=r"has no \['predict_arms', 'predict_profit'\]"):
        register_model("nope", type("Nope", (), {"fit": lambda self: self, "get_params": lambda self: {}}))


def test_the_api_fits_saves_and_loads_a_registered_learner(toy, tmp_path):
    X, t, y = _linear_effects(1200, 0, effect=2.0)
    cp = CoarsePersonalizer(k=2, model="toy", n_folds=2, seed=0, model_params={"ridge": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cp.fit(X, t, y)
    members = cp.model_.members()
    assert {type(m) for m in members} == {toy[1].ArmRidge} and {m.ridge for m in members} == {0.5}
    new, _, _ = _linear_effects(500, 1, effect=2.0)
    seg = cp.assign(new)
    # the effect of the discount has the sign of x1: the two segments split on it (the toy's fit decides)
    hi = int(np.argmax(cp.treatments_[:, 0]))
    assert np.mean((seg == hi) == (new.x1.to_numpy() > 0)) > 0.9
    back = CoarsePersonalizer.load(cp.save(tmp_path / "policy"))
    np.testing.assert_array_equal(back.assign(new), seg)
    np.testing.assert_array_equal(back.model_.predict_arms(new.to_numpy()), cp.model_.predict_arms(new.to_numpy()))


def test_the_cli_runs_the_plugin_and_gives_the_apis_policy(toy, tmp_path):
    from tests.conftest import ROOT

    X, t, y = _linear_effects(1200, 0, effect=2.0)
    pd.concat([X, t, y.rename("profit")], axis=1).to_csv(tmp_path / "data.csv", index=False)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "coarse_gpu.cli", "data=file", f"data.path={tmp_path / 'data.csv'}",
           "data.features=[x0,x1,x2]", "data.treatment=[discount]", "data.outcome=profit", "model=toy",
           "model.n_folds=2", "model.ridge=0.5", "discretizer.k=2", "evaluation.methods=[ot]", "evaluation.n_boot=0",
           "logger=none", "quiet=true", "seed=0", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(toy[0])]), "COARSE_GPU_PLUGINS": "toy_learner"}
    cli = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-3000:]
    cp = CoarsePersonalizer(k=2, model="toy", n_folds=2, seed=0, model_params={"ridge": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cp.fit(X, t, y)
    theirs = CoarsePersonalizer.load(run_dir / "policies" / "ot_k2")
    assert {(type(m), m.ridge) for m in theirs.model_.members()} == {(toy[1].ArmRidge, 0.5)}
    np.testing.assert_allclose(cp.treatments_, theirs.treatments_, rtol=0, atol=1e-6)
    new, _, _ = _linear_effects(500, 1, effect=2.0)
    np.testing.assert_array_equal(cp.assign(new), theirs.assign(new))
    # a fresh process loads the CLI's saved policy: the plugin variable registers the class before it is built
    new.to_csv(tmp_path / "new.csv", index=False)
    load = ("import sys, pandas as pd; from coarse_gpu import CoarsePersonalizer; "
            "print(CoarsePersonalizer.load(sys.argv[1]).assign(pd.read_csv(sys.argv[2])).tolist())")
    out = subprocess.run([sys.executable, "-c", load, str(run_dir / "policies" / "ot_k2"), str(tmp_path / "new.csv")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [int(v) for v in out.stdout.strip()[1:-1].split(",")] == cp.assign(new).tolist()
    # without the plugin the name is unknown: one line naming it and the registered models
    bad = subprocess.run(cmd[:-1] + [f"hydra.run.dir={tmp_path / 'run2'}"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert bad.returncode != 0 and "toy" in bad.stderr and "tarnet" in bad.stderr


@pytest.mark.parametrize("effect, winner", [(2.0, "toy"), (0.0, "arm_means")])
def test_auto_chooses_between_the_plugin_and_arm_means(toy, effect, winner):
    X, t, y = _linear_effects(1500, 2, effect=effect)
    cp = CoarsePersonalizer(k=2, model="auto", n_folds=3, seed=0, model_params={"candidates": ["toy", "arm_means"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cp.fit(X, t, y)
    sel = cp.model_selection_
    assert set(sel["candidates"]) == {"toy", "arm_means"}  # no blend: arm_means is never averaged in
    assert sel["winner"] == winner


def test_docs_models_table_names_every_builtin_learner():
    from coarse_gpu.models.registry import model_entries
    from tests.conftest import ROOT

    text = (ROOT / "docs" / "models.md").read_text()
    table = text[text.index("| `model=` | class |"):]
    table = table[:table.index("\n\n")]
    builtin = [e for e in model_entries() if e.cls.__module__.startswith("coarse_gpu.")]
    missing = [e.name for e in builtin if f"| `{e.name}`" not in table or f"`{e.cls.__name__}`" not in table]
    assert not missing, f"docs/models.md's table of model= names lacks {missing}"


def test_an_installed_packages_entry_point_is_imported(tmp_path, monkeypatch):
    """What ``pip install`` of a package with ``[project.entry-points."coarse_gpu.plugins"]`` leaves on the path."""
    from coarse_gpu.utils import plugins

    (tmp_path / "ep_plugin.py").write_text("LOADED = True\n")
    info = tmp_path / "ep_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[coarse_gpu.plugins]\nmine = ep_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.delitem(sys.modules, "ep_plugin", raising=False)
    monkeypatch.setenv(plugins.PLUGIN_ENV, "")
    assert ("ep_plugin", "entry point 'mine' of group 'coarse_gpu.plugins'") in plugins.plugin_modules()
    plugins.load_plugins()
    assert sys.modules["ep_plugin"].LOADED
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.setenv(plugins.PLUGIN_ENV, "ep_plugin, no_such_plugin")
    with pytest.raises(ImportError, match=r"plugin module 'no_such_plugin' \(listed in \$COARSE_GPU_PLUGINS\)"):
        plugins.load_plugins()
