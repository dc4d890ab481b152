"""Nothing lost, nothing silently wrong: the main job under shared use, faults and bad input.

One test per class of failure. Each asserts the message the user gets and what is on disk after it:
a folder is hashed before and after (``snapshot`` / ``assert_kept``), and the only change allowed is
the one the guarantee names (the log growing, a rerun's ``partial/`` folder). Most jobs run
``coarse-gpu`` in this process (``cli``: the real command line, Hydra included, without the cost of
importing torch again); the two that need a second process (a concurrent job, a SIGKILL) run it in
a subprocess. README "Reliability" names these tests.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

from coarse_gpu.experiment import methods, pipeline

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model=tarnet", "model.n_ensemble=1", "model.n_folds=2", "data.n_customers=2000", "model.max_epochs=3", "model.hidden=16", "evaluation.n_boot=50",
         "discretizer.n_restarts=2", "evaluation.k_values=[1,2,3]", "evaluation.methods=[ot,kmeans_features]",
         "logger=none", "quiet=true"]
UMASK = 0o027  # the reference run's umask: files must come out 0640


def cli(run_dir: Path, *overrides: str) -> tuple[int, str]:
    """``coarse-gpu <overrides> hydra.run.dir=<run_dir>`` in this process: (exit code, stderr)."""
    from hydra.core.global_hydra import GlobalHydra

    from coarse_gpu.cli import main

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    err, argv, code = io.StringIO(), sys.argv, 0
    sys.argv = ["coarse-gpu", *overrides, f"hydra.run.dir={run_dir}"]
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(err):
            main()
    except SystemExit as stop:
        if isinstance(stop.code, str):  # what the interpreter would print
            err.write(stop.code + "\n")
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
        for h in list(root.handlers):  # Hydra's job logging: the run's cli.log and stdout
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)
    return code, err.getvalue()


def snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, object]:
    """{relative path: sha256 | 'dir' | 'link:<target>'}; cli.log by content (it may only grow)."""
    out: dict[str, object] = {}
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(base) / name
            rel = p.relative_to(folder).as_posix()
            if any(rel == s or rel.startswith(s + "/") for s in skip):
                continue
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            elif rel == "cli.log":
                out[rel] = p.read_bytes()
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_kept(before: dict, after: dict, new_under: tuple[str, ...] = ()) -> None:
    """Every file of ``before`` is unchanged (cli.log: only appended to); new paths only under ``new_under``."""
    for rel, value in before.items():
        assert rel in after, f"{rel} was removed"
        if rel == "cli.log":
            assert after[rel].startswith(value), "cli.log was rewritten, not appended to"
        else:
            assert after[rel] == value, f"{rel} changed"
    extra = [r for r in after if r not in before and not any(r == n or r.startswith(n + "/") for n in new_under)]
    assert not extra, f"unexpected new files: {extra}"


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def same_results(a: dict, b: dict) -> None:
    """The computed content of two results.json (timings, times and resume counters aside)."""
    from coarse_gpu.experiment.rundir import config_differences

    for key in ("methods", "full_personalization", "choose_k", "simulator_checks", "k_values"):
        assert a[key] == b[key], key
    assert config_differences(a["config"], b["config"]) == []
    for key in ("best_epoch", "best_val_loss", "rmse_profit_grid"):
        assert a["model"][key] == b["model"][key], key


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("coarse-gpu: "), err
    return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One complete run of SMALL under umask 0027: the uninterrupted result the other tests compare to."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    old = os.umask(UMASK)
    try:
        code, err = cli(run_dir, *SMALL)
    finally:
        os.umask(old)
    assert code == 0, err
    assert results(run_dir)["status"] == "complete"
    return run_dir


@pytest.fixture
def finished(reference, tmp_path):
    """A private copy of the complete reference run folder."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir, symlinks=True)
    return run_dir


def stop_at_k2(monkeypatch, action):
    """Make the K loop call ``action()`` when it reaches K=2 (kmeans_features is called with k=2 only there)."""
    real = methods.kmeans_features

    def patched(X, profit, candidates, k, **kwargs):
        if k == 2:
            action()
        return real(X, profit, candidates, k, **kwargs)

    monkeypatch.setattr(methods, "kmeans_features", patched)


# A job in its own process that stops at K=2: blocks (holding the run folder) until a file exists,
# or SIGKILLs itself.
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    import torch
    torch.set_num_threads(1)
    from coarse_gpu.experiment import methods
    action, real = os.environ["RELIABILITY_ACTION"], methods.kmeans_features
    def patched(X, profit, candidates, k, **kw):
        if k == 2:
            if action == "kill9":
                os.kill(os.getpid(), signal.SIGKILL)
            go = action.split(":", 1)[1]
            open(go + ".waiting", "w").close()
            while not os.path.exists(go):
                time.sleep(0.05)
        return real(X, profit, candidates, k, **kw)
    methods.kmeans_features = patched
    from coarse_gpu.cli import main
    sys.argv = ["coarse-gpu", *sys.argv[1:]]
    main()
""")


def child(run_dir: Path, action: str, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled",
           "RELIABILITY_ACTION": action}
    return subprocess.Popen([sys.executable, "-c", CHILD, *overrides, f"hydra.run.dir={run_dir}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


# ---- shared use: two jobs, one run folder -------------------------------------------------------------
def test_second_job_on_a_busy_run_folder_fails_fast_naming_the_first(tmp_path):
    run_dir, go = tmp_path / "run", tmp_path / "go"
    first = child(run_dir, f"block:{go}", *SMALL)
    try:
        deadline = time.time() + 180
        while not Path(str(go) + ".waiting").exists():  # the first job is in its K loop, holding the folder
            assert first.poll() is None and time.time() < deadline, first.stderr.read() if first.poll() else "timeout"
            time.sleep(0.1)
        before = snapshot(run_dir)
        t0 = time.perf_counter()
        code, err = cli(run_dir, *SMALL)  # the very same command
        elapsed = time.perf_counter() - t0
        line = one_line(err)
        assert code == 1
        assert f"run folder {run_dir} is in use by another coarse-gpu job (pid {first.pid} on host " \
               f"{platform.node()}, started " in line
        assert "hydra.run.dir=" in line and "evaluation.k_values=[1,2,3]" in line  # its command
        assert elapsed < 15, f"not fast: {elapsed:.1f}s"
        assert snapshot(run_dir) == before  # not even the log: the folder is the first job's
    finally:
        go.touch()
        _, first_err = first.communicate(timeout=180)
    assert first.returncode == 0, first_err[-3000:]
    # the first job's outputs are all its own and consistent with each other
    res = results(run_dir)
    assert res["status"] == "complete" and res["config"]["model"]["hidden"] == 16
    saved = sorted(p.name for p in (run_dir / "policies").iterdir())
    assert saved == sorted(f"{m}_k{k}" for m in ("ot", "kmeans_features") for k in (1, 2, 3))
    for method, per_k in res["methods"].items():
        for k, cell in per_k.items():
            doc = json.loads((run_dir / cell["policy_path"] / "policy.json").read_text())
            assert doc["metrics"]["dr_value"] == cell["dr_value"] and doc["treatments"] == cell["treatments"]
    assert (run_dir / ".coarse_gpu.lock").read_text() == ""  # released


# ---- faults: SIGTERM, SIGKILL, a failing rerun, a full disk ---------------------------------------------
def test_sigterm_in_the_k_loop_then_the_same_command_resumes_to_the_uninterrupted_result(reference, tmp_path,
                                                                                          monkeypatch):
    run_dir = tmp_path / "run"
    handler = signal.getsignal(signal.SIGTERM)
    stop_at_k2(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGTERM))
    code, err = cli(run_dir, *SMALL)
    line = one_line(err)
    assert code == 128 + signal.SIGTERM
    assert line == (f"coarse-gpu: interrupted by SIGTERM: {run_dir / 'results.json'} has status 'interrupted'; "
                    f"the last training checkpoint is in {run_dir / 'checkpoints'}; run the same command again "
                    "to resume")
    res = results(run_dir)
    assert res["status"] == "interrupted" and res["error"] == "Terminated: received SIGTERM"
    # a K is recorded whole (every method scored together, one bootstrap): K=2 was under way, K=1 is kept
    assert set(res["methods"]["ot"]) == {"1"} and set(res["methods"]["kmeans_features"]) == {"1"}
    ckpts = sorted((run_dir / "checkpoints").glob("TARNet-*.pt"))
    assert len(ckpts) == 2  # one per cross-fitting fold (model.n_folds=2), both trained to the end
    assert all(torch.load(c, weights_only=True)["finished"] for c in ckpts)
    assert signal.getsignal(signal.SIGTERM) == handler  # the job's handler is gone again

    monkeypatch.undo()
    code, err = cli(run_dir, *SMALL)
    assert code == 0, err
    resumed = results(run_dir)
    assert resumed["status"] == "complete" and resumed["model"]["resumed_from_epoch"] == 3
    same_results(resumed, results(reference))


def test_kill_9_during_a_rerun_leaves_the_complete_run_intact(finished):
    before = snapshot(finished, skip=(".coarse_gpu.lock",))
    proc = child(finished, "kill9", *SMALL)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    assert_kept(before, snapshot(finished, skip=(".coarse_gpu.lock",)), new_under=("partial",))
    partial = json.loads((finished / "partial" / "results.json").read_text())
    assert partial["status"] == "running" and "2" not in partial["methods"]["kmeans_features"]
    assert results(finished)["status"] == "complete" and set(results(finished)["methods"]["ot"]) == {"1", "2", "3"}
    assert f'"pid": {proc.pid}' in (finished / ".coarse_gpu.lock").read_text()  # it died holding it
    code, err = cli(finished, *SMALL)  # the kernel released its lock: the next job runs and completes
    assert code == 0, err
    assert not (finished / "partial").exists() and results(finished)["status"] == "complete"


def test_failed_rerun_keeps_the_complete_results_and_every_policy(finished, monkeypatch):
    before = snapshot(finished)

    def crash():
        raise RuntimeError("simulated crash at K=2")

    stop_at_k2(monkeypatch, crash)
    code, err = cli(finished, *SMALL)
    line = one_line(err)
    assert code == 1
    assert line.startswith("coarse-gpu: RuntimeError: simulated crash at K=2 (at coarse_gpu/experiment/methods.py:")
    assert line.endswith(f"the earlier run's outputs in {finished} are unchanged (this run's partial outputs are "
                         f"in {finished / 'partial'})")
    assert_kept(before, snapshot(finished), new_under=("partial",))
    assert json.loads((finished / "partial" / "results.json").read_text())["status"] == "failed"
    log_text = (finished / "cli.log").read_text()
    assert "Traceback (most recent call last)" in log_text and "simulated crash at K=2" in log_text


def test_disk_full_during_a_rerun_says_what_was_not_written_and_keeps_the_outputs(finished, monkeypatch):
    before = snapshot(finished)
    real_fsync = os.fsync

    def fsync(fd):  # the disk fills up when results.json is written
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".results.json."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code, err = cli(finished, *SMALL)
    monkeypatch.undo()
    line = one_line(err)
    assert code == 1
    assert line.startswith(f"coarse-gpu: disk full (No space left on device): {finished / 'partial' / 'results.json'} "
                           f"was not written; the earlier run's outputs in {finished} are unchanged")
    assert_kept(before, snapshot(finished), new_under=("partial",))
    assert not list(finished.rglob(".results.json.*.tmp"))  # no temp file left behind


def test_outputs_are_created_with_the_process_umask(reference, tmp_path):
    files = [reference / n for n in ("results.json", "table.txt", "config.yaml", "run.json", "share_vs_k.png",
                                     "cli.log", ".hydra/config.yaml")]
    files += list((reference / "policies").rglob("*.*")) + list((reference / "checkpoints").glob("*.pt"))
    assert len(files) > 15
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o666 & ~UMASK, f
    from coarse_gpu.utils.io import atomic_write_text

    for mask in (0o022, 0o077, 0o002):
        old = os.umask(mask)
        try:
            path = atomic_write_text(tmp_path / f"f{mask:o}.txt", "x")
        finally:
            os.umask(old)
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_checkpoint_of_another_architecture_is_set_aside_not_a_crash(tmp_path, caplog):
    from coarse_gpu.models import TARNet
    from coarse_gpu.models.checkpoint import load_checkpoint, save_checkpoint

    rng = np.random.default_rng(0)
    X, t = rng.normal(size=(400, 3)), rng.integers(0, 2, size=400)
    y = X[:, 0] * t + 0.3 * rng.normal(size=400)
    params = dict(hidden=8, n_repr_layers=1, n_head_layers=1, max_epochs=2, batch_size=128, device="cpu", seed=3,
                  n_ensemble=1)
    wide = TARNet(checkpoint_dir=str(tmp_path), **{**params, "hidden": 16}).fit(X, t, y)
    ref = TARNet(**params).fit(X, t, y)
    narrow = TARNet(checkpoint_dir=str(tmp_path), **params).fit(X, t, y)
    target = narrow.checkpoint_path_
    shutil.copy(wide.checkpoint_path_, target)  # another architecture's readable checkpoint, same name
    with caplog.at_level("WARNING", logger="coarse_gpu"):
        again = TARNet(checkpoint_dir=str(tmp_path), **params).fit(X, t, y)
    assert again.resumed_from_epoch_ == 0
    assert f"checkpoint {target} was written as {wide.checkpoint_path_.name}, another model's checkpoint" in caplog.text
    assert target.with_name(target.name + ".mismatch").is_file() and target.is_file()
    np.testing.assert_allclose(again.predict_arms(X), ref.predict_arms(X), rtol=1e-6, atol=1e-7)
    # Same recorded name, other layers (code changed between runs): the caller's modules decide.
    state = torch.load(target, weights_only=True)
    save_checkpoint(target, {k: v for k, v in state.items() if k not in ("format_version", "file_name")})
    caplog.clear()
    with caplog.at_level("WARNING", logger="coarse_gpu"):
        assert load_checkpoint(target, modules={"net": wide.network_}) is None
    assert "belongs to another architecture: its 'net' has repr.net.0.weight of shape (8, 3)" in caplog.text
    assert not target.exists()


# ---- reruns: resume or refuse; overwrite=true replaces cleanly ----------------------------------------
def test_rerun_with_another_config_is_refused_then_overwrite_replaces_cleanly(finished):
    before = snapshot(finished)
    code, err = cli(finished, *SMALL, "evaluation.k_values=[1,2]", "model.hidden=8")
    line = one_line(err)
    assert code == 1
    assert line == (f"coarse-gpu: run folder {finished} holds a complete run with another config "
                    "(evaluation.k_values: [1, 2, 3] -> [1, 2]; model.hidden: 16 -> 8); rerun with that config to "
                    "resume it, use another hydra.run.dir, or pass overwrite=true to replace it (its outputs stay "
                    "until the new run completes)")
    assert_kept(before, snapshot(finished))

    code, err = cli(finished, *SMALL, "evaluation.k_values=[1,2]", "model.hidden=8", "overwrite=true")
    assert code == 0, err
    res = results(finished)
    assert res["status"] == "complete" and res["k_values"] == [1, 2] and res["config"]["model"]["hidden"] == 8
    assert sorted(p.name for p in (finished / "policies").iterdir()) == [
        "kmeans_features_k1", "kmeans_features_k2", "ot_k1", "ot_k2"]
    for cell in (c for per_k in res["methods"].values() for c in per_k.values()):
        doc = json.loads((finished / cell["policy_path"] / "policy.json").read_text())
        assert doc["metrics"]["dr_value"] == cell["dr_value"]
    assert (finished / "treatments_k2.png").exists() and not (finished / "treatments_k3.png").exists()
    assert "hidden: 8" in (finished / "config.yaml").read_text()
    assert "hidden=8" in (finished / ".hydra" / "overrides.yaml").read_text()
    assert not (finished / "partial").exists() and not (finished / ".replaced").exists()
    # the same config again needs no overwrite=true: it and the logger, quiet, ... do not change results
    from coarse_gpu.experiment.rundir import config_differences

    again = {**res["config"], "overwrite": False, "quiet": False, "logger": {"name": "wandb"}}
    assert config_differences(res["config"], again) == []


# ---- bad config values: before any work, with the key named, one line -------------------------------------
@pytest.mark.parametrize("overrides, expected", [
    (["discretizer.min_share=0.5", "evaluation.k_values=[1,5]"],
     "discretizer.min_share=0.5 with K=5: K * min_share = 2.5 > 1"),
    (["discretizer.max_share=0.2", "evaluation.k_values=[1,5]"],
     "discretizer.max_share=0.2 with K=1: K * max_share = 0.2 < 1"),
    (["discretizer.min_share=0.3", "discretizer.max_share=0.2"], "discretizer.min_share=0.3 exceeds discretizer.max_share=0.2"),
    (["evaluation.k_values=[]"], "evaluation.k_values=[] is empty"),
    (["evaluation.k_values=[2,0]"], "evaluation.k_values=[2, 0] must be a list of integers each >= 1"),
    (["evaluation.k_values=[2,2]"], "evaluation.k_values=[2, 2] repeats a K"),
    (["evaluation.ci_level=1.5"], "evaluation.ci_level=1.5 must be a number in (0, 1)"),
    (["evaluation.n_boot=-1"], "evaluation.n_boot=-1 must be an integer >= 0"),
    (["discretizer.epsilon=0"], "discretizer.epsilon=0.0 must be a number > 0 or null"),
    (["data.eval_fraction=1.0"], "data.eval_fraction=1.0 must be a number in [0, 1)"),
    (["data.n_customers=1"], "data.n_customers=1 must be an integer >= 2"),
    (["data.discount_levels=[0.1]"], "data.discount_levels=[0.1] must be a list of >= 2 distinct numbers in [0, 0.5]"),
    (["model.lr=0"], "model.lr=0.0 must be a number > 0"),
    (["model.lr=nan"], "model.lr=nan must be a number > 0"),
    (["model.dropout=1.0"], "model.dropout=1.0 must be a number in [0, 1)"),
    (["model.batch_size=0"], "model.batch_size=0 must be an integer >= 1"),
    (["model.patience=0"], "model.patience=0 must be an integer >= 1"),
    (["seed=-1"], "seed=-1 must be an integer in [0, 4294967295]"),
])
def test_bad_config_value_is_named_before_any_work(overrides, expected, tmp_path):
    from hydra import compose, initialize_config_dir

    from coarse_gpu.cli import config_dir
    from coarse_gpu.experiment.config import register_configs
    from coarse_gpu.experiment.validate import ConfigValueError

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=SMALL + overrides)
    with pytest.raises(ConfigValueError) as info:
        pipeline.run_experiment(cfg, tmp_path / "run")
    assert any(expected in p for p in info.value.problems), info.value.problems
    assert len(info.value.problems) == 1 or "exceeds" in expected, info.value.problems  # no spurious ones
    assert not (tmp_path / "run").exists()  # nothing written, no data loaded, no epoch trained


def test_bad_config_on_a_finished_run_is_one_line_and_changes_nothing(finished, monkeypatch):
    before = snapshot(finished)
    exe = Path(sys.executable).parent / "coarse-gpu"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    for name in ("COARSE_GPU_DEBUG", "HYDRA_FULL_ERROR"):
        env.pop(name, None)
    bad = ["discretizer.min_share=0.5", "evaluation.k_values=[1,5]", "evaluation.ci_level=1.5"]
    proc = subprocess.run([str(exe), *SMALL, *bad, f"hydra.run.dir={finished}"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert line.startswith("coarse-gpu: config error: ")
    assert "evaluation.ci_level=1.5 must be a number in (0, 1)" in line and "discretizer.min_share=0.5 with K=5" in line
    assert_kept(before, snapshot(finished))
    assert results(finished)["status"] == "complete"
    assert "Traceback" in (finished / "cli.log").read_text()  # the full story is in the log
    # with the debug switch the traceback is printed (here: the error itself reaches the caller)
    from coarse_gpu.experiment.validate import ConfigValueError

    monkeypatch.setenv("COARSE_GPU_DEBUG", "1")
    with pytest.raises(ConfigValueError, match="evaluation.ci_level=1.5"):
        cli(finished, *SMALL, *bad)


def test_error_lines_flatten_multi_problem_messages_and_locate_unexpected_errors():
    from coarse_gpu.data.file import DataSchemaError
    from coarse_gpu.experiment.errors import debug_requested, one_line as line_of

    assert line_of(DataSchemaError(["column 'age': 3 missing values (rows 2, 5, 9)", "column 'x' is constant"],
                                   "c.csv")) == ("data check failed for c.csv: 2 problem(s): column 'age': 3 missing "
                                                 "values (rows 2, 5, 9); column 'x' is constant")
    assert line_of(OSError(errno.ENOSPC, "No space left on device", "/r/results.json")) == \
        "disk full (No space left on device): /r/results.json was not written"
    assert line_of(FileNotFoundError(errno.ENOENT, "No such file or directory", "x.csv")) == \
        "No such file or directory: x.csv"
    try:
        pipeline.check_k_values(None, 3, 3)  # a TypeError from inside the package: a bug, located
    except TypeError as err:
        text = line_of(err)
    assert text.startswith("TypeError: ") and "(at coarse_gpu/experiment/loading.py:" in text
    assert "in check_k_values)" in text
    assert debug_requested({"COARSE_GPU_DEBUG": "1"}) and debug_requested({}, ["debug=true"])
    assert not debug_requested({}, ["model.debug_x=1"]) and not debug_requested({"HYDRA_FULL_ERROR": "0"})


def test_a_swap_stopped_halfway_is_finished_by_the_next_job(tmp_path, caplog):
    """A job killed among the final renames: the next job on the folder completes the swap first."""
    from coarse_gpu.experiment.rundir import COMMIT_LIST, STAGING, prepare_run_dir

    run = tmp_path / "run"
    (run / "policies" / "ot_k3").mkdir(parents=True)  # the earlier run (K up to 3)
    (run / "policies" / "ot_k3" / "policy.json").write_text("old")
    (run / "treatments_k3.png").write_text("old")
    (run / "results.json").write_text(json.dumps({"config": {"seed": 1}, "status": "complete", "v": "old"}))
    (run / "checkpoints").mkdir()
    staging = run / STAGING
    (staging / "policies" / "ot_k2").mkdir(parents=True)  # the rerun (K up to 2), complete
    (staging / "policies" / "ot_k2" / "policy.json").write_text("new")
    (staging / "treatments_k2.png").write_text("new")
    (staging / "results.json").write_text(json.dumps({"config": {"seed": 2}, "status": "complete", "v": "new"}))
    (staging / COMMIT_LIST).write_text(json.dumps({"items": ["policies", "treatments_k2.png", "results.json"]}))
    # killed after the first rename: the new policies are in, everything else is still the old run's
    os.replace(run / "policies", run / ".replaced_policies")
    (run / ".replaced").mkdir()
    os.replace(run / ".replaced_policies", run / ".replaced" / "policies")
    os.replace(staging / "policies", run / "policies")

    with caplog.at_level("INFO", logger="coarse_gpu"):
        plan = prepare_run_dir(run, {"seed": 2})  # the next job: the rerun's config, now complete
    plan.release()
    assert "finished swapping in the outputs of a completed rerun" in caplog.text
    assert plan.mode == "rerun" and plan.staged  # it found the swapped-in complete run of its config
    assert json.loads((run / "results.json").read_text())["v"] == "new"
    assert (run / "policies" / "ot_k2" / "policy.json").read_text() == "new"
    assert not (run / "policies" / "ot_k3").exists() and not (run / "treatments_k3.png").exists()
    assert (run / "treatments_k2.png").read_text() == "new" and not (run / ".replaced").exists()


def test_signals_end_the_job_as_interrupted_and_a_folder_without_locks_is_said(tmp_path, monkeypatch, caplog):
    from coarse_gpu.experiment import rundir
    from coarse_gpu.experiment.errors import exit_code, one_line as line_of
    from coarse_gpu.experiment.interrupt import Terminated, stop_on_signals

    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        with pytest.raises(Terminated) as info:
            with stop_on_signals():
                os.kill(os.getpid(), sig)
                time.sleep(1)  # the handler raises at the next bytecode
        assert exit_code(info.value) == code and line_of(info.value) == f"interrupted by {sig.name}"

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(rundir.fcntl, "flock", no_locks)
    with caplog.at_level("WARNING", logger="coarse_gpu"):
        plan = rundir.prepare_run_dir(tmp_path / "run", {"seed": 0})
    plan.release()
    assert f"run folder {tmp_path / 'run'} cannot be locked (No locks available): a second job on it would " \
           "not be detected" in caplog.text
