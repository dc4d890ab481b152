"""Every plain-valued option of ``discretize`` is a ``discretizer.<name>`` config key that reaches it."""
from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import coarse_gpu.experiment.methods as methods
from coarse_gpu.cli import config_dir
from coarse_gpu.discretize.options import OPTION_NAMES, SolverOptions, default_options
from coarse_gpu.discretize.solver import DEFAULT_OPTIONS
from coarse_gpu.experiment.config import register_configs
from coarse_gpu.experiment.validate import config_problems

# A valid value away from the default for every option (the test fails when an option is added
# without one here, so a new option cannot skip the config).
NON_DEFAULT = {
    "solver": "lloyd", "n_restarts": 3, "max_iter": 7, "tol": 0.002, "dtype": "float64",
    "memory_limit_bytes": 123456789, "verbose": True, "lazy": "torch", "eps_start": 0.5, "eps_decay": 0.7,
    "iter_per_eps": 2, "sinkhorn_iter": 50, "refine_rounds": 0, "n_anneal": None, "anneal_rows": 4096,
    "swap": False, "n_swap": 3, "swap_rows": 2048, "subsample": 10000, "greedy_seed": False,
    "coarse_restarts": False, "mip_time_limit": 30.0, "mip_rel_gap": 0.01, "mip_max_entries": 50_000,
    "refine_integer_dims": True,
}


def _compose(overrides=()):
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _override(name, value) -> str:
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return f"discretizer.{name}={text}"


def test_the_options_dataclass_is_the_solver_default():
    objects = {"refine_oracle", "bounds", "init", "support", "frozen_dims"}
    assert set(DEFAULT_OPTIONS) == set(OPTION_NAMES) | objects
    assert {k: DEFAULT_OPTIONS[k] for k in OPTION_NAMES} == default_options()
    assert set(NON_DEFAULT) == set(OPTION_NAMES)
    assert all(NON_DEFAULT[k] != v for k, v in default_options().items())


def test_config_defaults_mirror_the_solver_defaults():
    d = _compose().discretizer
    assert {k: d[k] for k in OPTION_NAMES} == default_options()


SEEN: dict = {}


def record(profit, k, **kw):
    """A step-2 entry point that records what it is called with (``discretizer._target_``)."""
    SEEN.clear()
    SEEN.update(kw)


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_every_option_reaches_discretize_from_the_command_line(name):
    """The discretizer node is built by instantiate: its _target_ (here a recorder) gets every option."""
    cfg = _compose([_override(name, NON_DEFAULT[name]), "logger=none",
                    f"discretizer._target_={__name__}.record"])
    assert not config_problems(cfg)
    methods._discretize(np.zeros((4, 3)), np.arange(3.0)[:, None], 2, cfg, None, None, "cpu", 0, None, None)
    seen = dict(SEEN)
    assert seen[name] == NON_DEFAULT[name]
    others = {k: v for k, v in seen.items() if k in OPTION_NAMES and k != name}
    assert others == {k: v for k, v in default_options().items() if k != name}


def test_options_change_the_solve():
    """Two options through the config change what the solver does (not just what it is passed)."""
    rng = np.random.default_rng(0)
    profit = rng.normal(size=(300, 12))
    cand = np.arange(12.0)[:, None]
    outs = {}
    for over in ([], ["discretizer.solver=lloyd", "discretizer.max_iter=1", "discretizer.n_restarts=1"]):
        cfg = _compose(over + ["logger=none"])
        outs[len(over)] = methods._discretize(profit, cand, 3, cfg, None, None, "cpu", 0, None, None)
    assert outs[0].solver == "sinkhorn" and outs[3].solver == "lloyd"
    assert outs[3].objective <= outs[0].objective + 1e-9


@pytest.mark.parametrize("override, key", [
    ("discretizer.n_swap=0", "discretizer.n_swap"), ("discretizer.lazy=gpu", "discretizer.lazy"),
    ("discretizer.subsample=lots", "discretizer.subsample"), ("discretizer.eps_decay=1.5", "discretizer.eps_decay"),
    ("discretizer.solver=simplex", "discretizer.solver"), ("discretizer.greedy_seed=maybe", "discretizer.greedy_seed"),
    ("discretizer.mip_rel_gap=2", "discretizer.mip_rel_gap"), ("discretizer.dtype=float16", "discretizer.dtype"),
])
def test_a_bad_option_is_named_before_any_work(override, key):
    problems = config_problems(_compose([override, "logger=none"]))
    assert len(problems) == 1 and problems[0].startswith(key + " must"), problems


def test_misspelt_option_is_a_config_error():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="n_swpa"):
        _compose(["discretizer.n_swpa=2"])


def test_solver_options_is_a_plain_dataclass():
    assert SolverOptions(n_swap=5).n_swap == 5 and SolverOptions().solver == "sinkhorn"
