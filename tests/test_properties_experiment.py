"""Properties of the experiment layer: the run folder over any sequence of jobs, config comparison, and
the evaluator's interval level.

* run folder (coarse_gpu.experiment.rundir): whatever sequence of jobs runs in one folder (new, resume,
  rerun of the same config, replace with another), after each completed job ``checkpoints`` is a real
  folder INSIDE the run folder holding every checkpoint any earlier job wrote, ``partial/`` is gone,
  results.json is the last job's; while a rerun is staged, the earlier complete results stay untouched;
* config comparison: a key is ignored only when it IS an ignored key or lies below one (``logger`` and
  ``logger.x``, not ``logger_level``);
* evaluator: a ``ci_level`` interval is 2 z sd / sqrt(N) wide, with or without bootstrap resamples.
``scripts/mutation_check.py`` plants the bugs these catch ("r4".."r8").
"""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from coarse_gpu.experiment.rundir import IGNORED, STAGING, config_differences, prepare_run_dir

FAST = settings(max_examples=15, deadline=None, derandomize=True, database=None,
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _job(run, seed: int, job_no: int, overwrite: bool) -> str:
    """One simulated coarse-gpu job: prepare the folder, write a checkpoint and the outputs, commit."""
    plan = prepare_run_dir(run, {"seed": seed}, overwrite=overwrite)
    try:
        out = plan.out_dir
        if plan.staged:  # the earlier complete run is untouched while this one runs
            assert json.loads((run / "results.json").read_text())["job"] < job_no
            assert (out / "checkpoints").resolve() == (run / "checkpoints").resolve()
        (out / "checkpoints").mkdir(exist_ok=True)
        (out / "checkpoints" / f"ckpt-{job_no}.pt").write_text(str(job_no))
        (out / "policies" / f"ot_k{job_no}").mkdir(parents=True, exist_ok=True)
        (out / "table.txt").write_text(f"job {job_no}")
        (out / f"treatments_k{job_no}.png").write_text(str(job_no))  # a figure only this job draws
        (out / "results.json").write_text(json.dumps({"config": {"seed": seed}, "status": "complete", "job": job_no}))
        plan.commit()
        return plan.mode
    finally:
        plan.release()


@FAST
@given(seeds=st.lists(st.integers(1, 2), min_size=1, max_size=5))
def test_any_sequence_of_jobs_keeps_every_checkpoint_inside_the_run_folder(tmp_path_factory, seeds):
    run = tmp_path_factory.mktemp("run") / "run"
    modes = []
    for j, seed in enumerate(seeds):
        modes.append(_job(run, seed, j, overwrite=True))
        ck = run / "checkpoints"
        assert ck.is_dir() and not ck.is_symlink(), (modes, os.readlink(ck) if ck.is_symlink() else None)
        assert os.path.realpath(ck) == os.path.join(os.path.realpath(run), "checkpoints")
        assert sorted(p.name for p in ck.iterdir()) == sorted(f"ckpt-{i}.pt" for i in range(j + 1)), modes
        assert not (run / STAGING).exists()
        assert json.loads((run / "results.json").read_text())["job"] == j
        assert (run / "table.txt").read_text() == f"job {j}"
        assert sorted(p.name for p in run.glob("treatments_k*.png")) == [f"treatments_k{j}.png"]  # none left over
        assert sorted(p.name for p in (run / "policies").iterdir()) == [f"ot_k{j}"]
    expected = ["new"] + ["rerun" if b == a else "replace" for a, b in zip(seeds, seeds[1:])]
    assert modes == expected
    # a complete run folder can be moved (nothing in it points outside): the checkpoints move along
    moved = run.with_name("moved")
    os.replace(run, moved)
    assert len(list((moved / "checkpoints").iterdir())) == len(seeds)


def test_an_interrupted_run_resumes_in_place_and_a_complete_one_is_staged(tmp_path):
    run = tmp_path / "run"
    plan = prepare_run_dir(run, {"seed": 1})
    (run / "results.json").write_text(json.dumps({"config": {"seed": 1}, "status": "failed", "job": 0}))
    plan.release()
    plan = prepare_run_dir(run, {"seed": 1})
    assert plan.mode == "resume" and not plan.staged
    plan.release()
    (run / "results.json").write_text(json.dumps({"config": {"seed": 1}, "status": "complete", "job": 0}))
    plan = prepare_run_dir(run, {"seed": 1})
    assert plan.mode == "rerun" and plan.staged and plan.out_dir == run / STAGING
    plan.release()


keys = st.sampled_from(["seed", "model.hidden", "data.n", "logger_level", "quietness", "experiment_tag",
                        "model.checkpointing"] + [k for k in IGNORED] + [f"{k}.x" for k in IGNORED])


def _nest(flat: dict) -> dict:
    """A nested config from dotted keys; a key that clashes with an earlier one ("a" and "a.x") is skipped."""
    out: dict = {}
    for k, v in flat.items():
        *parents, leaf = k.split(".")
        node = out
        for p in parents:
            if not isinstance(node.setdefault(p, {}), dict):
                break
            node = node[p]
        else:
            if not isinstance(node.get(leaf), dict):
                node[leaf] = v
    return out


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


@FAST
@given(old=st.dictionaries(keys, st.integers(0, 2), max_size=6),
       new=st.dictionaries(keys, st.integers(0, 2), max_size=6))
def test_config_differences_ignore_exactly_the_ignored_keys_and_their_subtrees(old, new):
    a, b = _flat(_nest(old)), _flat(_nest(new))
    ignored = lambda k: any(k == p or k.startswith(p + ".") for p in IGNORED)  # noqa: E731
    want = sorted(k for k in set(a) | set(b) if not ignored(k) and a.get(k, "<unset>") != b.get(k, "<unset>"))
    got = [line.split(":")[0] for line in config_differences(_nest(old), _nest(new))]
    assert got == want


@pytest.mark.parametrize("n_boot", [0, 3000])
@pytest.mark.parametrize("ci_level", [0.8, 0.9, 0.95])
def test_evaluator_intervals_have_the_requested_level(n_boot, ci_level):
    from coarse_gpu.experiment.evaluation import Evaluator

    n = 2000
    z = np.random.default_rng(0).standard_normal(n)
    s = 1.0 + 2.0 * (z - z.mean()) / z.std(ddof=1)  # mean 1, sd 2 exactly
    test = type("Customers", (), {"truth": None, "__len__": lambda self: n})()  # all the Evaluator reads here
    ev = Evaluator(test, SimpleNamespace(mu_arms=np.zeros((n, 2))), n_boot=n_boot, ci_level=ci_level, seed=0)
    (lo, hi), = ev.intervals(s[:, None])
    half = norm.ppf(0.5 + ci_level / 2) * 2.0 / np.sqrt(n)
    assert hi - lo == pytest.approx(2 * half, rel=1e-9 if n_boot == 0 else 0.06)
    assert lo < 1.0 < hi
