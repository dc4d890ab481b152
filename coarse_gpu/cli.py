"""``coarse-gpu``: the command line, a Hydra app over ``configs/``.

    coarse-gpu                                  # the built-in simulated promotions experiment
    coarse-gpu model=dragonnet discretizer=lloyd data.n_customers=100000
    coarse-gpu -m discretizer.k=2,3             # a sweep: one run directory per value
    coarse-gpu --cfg job                        # print the composed config and exit
    coarse-gpu -m hparams_search=optuna         # tune the CATE model on validation loss (Optuna)
    coarse-gpu -m launcher=slurm discretizer.k=2,3,5   # the sweep as a SLURM job array (submitit)
    coarse-gpu hydra.run.dir=outputs/<that run>        # re-run in a run directory: training resumes

Every run writes into its Hydra run directory: results.json, config.yaml, run.json (seed,
versions, device, command), table.txt, share_vs_k.png, treatments_k<K>.png, the log,
checkpoints/ (per-epoch training checkpoints) and (with ``logger=wandb``, offline by default) a
``wandb/offline-run-*`` folder.

Under the Optuna sweeper (``hparams_search=optuna``) the job returns the CATE model's best
validation loss, the value the sweeper minimizes; otherwise it returns the results dict.
A config error (unknown key, wrong type, unknown option, a value out of range) stops the command
before anything runs, naming the key and listing the allowed keys or values.

Reliability (README "Reliability"): the run folder is locked and a rerun resumes, is refused or (with
``overwrite=true``) replaces the earlier run only once complete (coarse_gpu.experiment.rundir);
SIGTERM / SIGINT end the run as "interrupted" (coarse_gpu.experiment.interrupt); every error is one
line on stderr, its traceback in cli.log (coarse_gpu.experiment.errors).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from coarse_gpu.experiment.composed import config_dir as folder
from coarse_gpu.experiment.config import register_configs
from coarse_gpu.experiment.distributed import DistributedSetupError, distributed_job
from coarse_gpu.experiment.errors import JobExit, JobFailed, debug_requested, exit_code, log_traceback, one_line
from coarse_gpu.experiment.interrupt import stop_on_signals
from coarse_gpu.experiment.report import write_report
from coarse_gpu.experiment.rundir import RunFolderBusy, prepare_run_dir
from coarse_gpu.experiment.tracking import MODES, open_tracker
from coarse_gpu.experiment.validate import ConfigValueError, config_problems
from coarse_gpu.models.base import AMP_MODES, ARM_HEADS
from coarse_gpu.models.interpolate import METHODS
from coarse_gpu.models.scaling import TRANSFORMS
from coarse_gpu.utils import atomic_write_json, atomic_write_text, environment_record, resolve_device
from coarse_gpu.utils.imports import class_path
from coarse_gpu.utils.plugins import load_plugins

log = logging.getLogger("coarse_gpu")


def config_dir() -> Path:
    """The Hydra config folder: $COARSE_GPU_CONFIG_DIR, else ``configs/`` of this source checkout
    (coarse_gpu.experiment.composed, which the Python API reads too)."""
    try:
        return folder()
    except FileNotFoundError as err:
        raise SystemExit(f"coarse-gpu: {err}") from None


def explain_config_error(err: BaseException) -> str:
    """A one-paragraph message for a config that does not compose: the key and what is allowed."""
    cause: Optional[BaseException] = err
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    if cause is None:  # e.g. an unknown group option: Hydra's own message lists the options
        text = str(err).split("\nConfig search path")[0].strip()
        return "\n".join(line for line in text.splitlines() if not line.strip().endswith("_schema"))
    full_key = getattr(cause, "full_key", None) or getattr(cause, "key", None)
    schema = getattr(cause, "object_type", None)
    first = str(cause).splitlines()[0]
    if isinstance(schema, type) and dataclasses.is_dataclass(schema):
        fields = {f.name: f for f in dataclasses.fields(schema) if f.name != "defaults"}
        parent = full_key.rpartition(".")[0] if full_key else ""
        where = f"'{parent}'" if parent else "the top level"
        if isinstance(cause, ValidationError) and full_key and full_key.rpartition(".")[2] in fields:
            f = fields[full_key.rpartition(".")[2]]
            tname = getattr(f.type, "__name__", None) or str(f.type)
            return f"config error at '{full_key}': {first}; {full_key} must be of type {tname}"
        if isinstance(cause, (ConfigKeyError, AttributeError)) or "not in" in first:
            return (f"config error: unknown key '{full_key}' ({first}). Allowed keys in {where} "
                    f"({schema.__name__}): {', '.join(fields)}")
    return f"config error at '{full_key}': {first}"


def choice_errors(cfg: DictConfig) -> list[str]:
    """Values outside their allowed set for the string options the schemas type only as ``str`` (the
    discretizer's options are checked by the solver's own rules: validate.solver_option_problems)."""
    # here: personalize.py and the job's other modules (~0.1-0.3 s of imports) load only once a job runs, so
    # `coarse-gpu --help`, `--cfg job` and a config that does not compose answer without them
    from coarse_gpu.experiment.personalize import MODELS

    allowed = {
        "model.name": sorted(MODELS), "model.arm_heads": ARM_HEADS + ("auto",),
        "model.x_transform": TRANSFORMS, "model.interpolation": METHODS,
        "model.amp": AMP_MODES, "logger.name": ("wandb", "none"),
        "logger.mode": MODES,
    }
    errors = []
    if OmegaConf.select(cfg, "model._target_", default=None):
        del allowed["model.name"]  # your own estimator class: its name is only a label
    if (OmegaConf.select(cfg, "logger._target_", default=None) or class_path(open_tracker)) != class_path(open_tracker):
        del allowed["logger.name"], allowed["logger.mode"]  # your own tracker: its keys are its own
    for key, values in allowed.items():
        v = OmegaConf.select(cfg, key, default=None)
        if v is not None and v not in values:
            errors.append(f"{key}={v!r} is not allowed; allowed values: {', '.join(map(str, values))}")
    dev = str(cfg.get("device", "auto"))
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        errors.append(f"device={dev!r} is not allowed; allowed values: auto, cpu, cuda, cuda:N")
    return errors


def _is_optuna_sweep(hc) -> bool:
    target = OmegaConf.select(hc, "sweeper._target_", default="") or ""
    return "optuna" in str(target).lower()


def _job_record(hc) -> dict:
    return {
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "overrides": list(hc.overrides.task),
        "pid": os.getpid(),
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _write_hydra_files(cfg: DictConfig, hc, out_dir: Path) -> None:
    """What Hydra writes to ``.hydra/`` (configs/config.yaml turns that off), once the folder is ours."""
    hydra_dir = out_dir / ".hydra"
    atomic_write_text(hydra_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(hydra_dir / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hc})))
    atomic_write_text(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(hc.overrides.task))))


def _job(cfg: DictConfig, hc, plan) -> Any:
    """The job in the folder ``plan`` chose: record, track, run the experiment, report, swap in."""
    from coarse_gpu.experiment.pipeline import run_experiment  # here: the job's modules, as in choice_errors

    run_dir, out_dir = plan.run_dir, plan.out_dir
    container = OmegaConf.to_container(cfg, resolve=True)
    _write_hydra_files(cfg, hc, out_dir)
    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    device = resolve_device(cfg.device)
    record = {**_job_record(hc), "seed": int(cfg.seed), "run_folder_mode": plan.mode, **environment_record(device)}
    atomic_write_json(out_dir / "run.json", record)

    is_sweep = hc.mode == RunMode.MULTIRUN
    # the logger node's factory (coarse_gpu.experiment.tracking.open_tracker unless logger._target_ names yours)
    tracker = instantiate(
        {"_target_": OmegaConf.select(cfg, "logger._target_", default=None) or class_path(open_tracker),
         **{k: v for k, v in container["logger"].items() if k != "_target_"}},
        run_dir=run_dir, run_config=container, _convert_="all", _recursive_=False,
        run_name=run_dir.name if not is_sweep else f"{Path(hc.sweep.dir).name}-{hc.job.num}",
        group=Path(hc.sweep.dir).name if is_sweep else None,
    )
    try:
        results = run_experiment(cfg, out_dir, tracker)
        share_png, treat_png, k_plot = write_report(results, out_dir)
        plan.commit()  # a staged rerun replaces the earlier outputs only now, complete
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    share_png, treat_png = run_dir / share_png.name, (run_dir / treat_png.name) if treat_png is not None else None
    tracker.log_image("share_vs_k", share_png)
    if treat_png is not None:
        tracker.log_image(f"treatments_k{k_plot}", treat_png)
    summary = {f"{m}/share_of_full_k{k}": r["share_of_full"] for m, per_k in results["methods"].items()
               for k, r in per_k.items()}
    summary.update({f"timings_s/{k}": v for k, v in results["timings_s"].items()})
    tracker.log_results_table(results)
    tracker.summary(summary)
    tracker.save_file(run_dir / "results.json")
    tracker.log_artifact(run_dir / "policies", name=f"policy-{run_dir.name}", type="policy",
                         metadata={"k_values": results.get("k_values"), "seed": int(cfg.seed)})
    if tracker.enabled:
        log.info("W&B offline run: %s (upload later with `wandb sync %s`)", tracker.run_dir, tracker.run_dir)
    tracker.finish()
    log.info("outputs in %s: results.json, table.txt, share_vs_k.png, config.yaml, run.json", run_dir)
    if _is_optuna_sweep(hc):
        # The Optuna sweeper minimizes the job's return value: the model's held-out decision loss (the
        # error of its out-of-fold profit differences between arms; coarse_gpu.models.select).
        sel = results.get("model_selection") or {}
        loss = ((sel.get("candidates") or {}).get(sel.get("winner")) or {}).get("decision_loss")
        return float(loss) if loss is not None else float("inf")
    return results


def _failure(err: BaseException, plan) -> str:
    """The one line ``coarse-gpu`` prints for ``err``, saying what the run folder still holds."""
    line = one_line(err)
    if plan is not None and isinstance(err, KeyboardInterrupt):
        res = plan.out_dir / "results.json"
        try:
            where = f"{res} has status {json.loads(res.read_text(encoding='utf-8')).get('status')!r}"
        except (OSError, ValueError):
            where = "no results were written yet"
        line += (f": {where}; the last training checkpoint is in {plan.run_dir / 'checkpoints'}; run the same "
                 "command again to resume")
        if plan.staged:
            line += f" (the earlier complete results in {plan.run_dir} are unchanged)"
    elif plan is not None and plan.kept():
        line += "; " + plan.kept()
    return line


def _in_process_sweep(hc) -> bool:
    """A sweep whose jobs run one after another in this process (Hydra's basic launcher)."""
    target = str(OmegaConf.select(hc, "launcher._target_", default="") or "")
    return hc.mode == RunMode.MULTIRUN and target.endswith("BasicLauncher")


def _take_run_dir(cfg: DictConfig, hc, run_dir: Path, rank):
    """The run folder's plan (coarse_gpu.experiment.rundir); in a distributed job rank 0 then tells the
    other ranks where it writes, or why it did not start."""
    try:
        plan = prepare_run_dir(run_dir, OmegaConf.to_container(cfg, resolve=True),
                               overwrite=bool(cfg.get("overwrite", False)), job=_job_record(hc))
    except BaseException as err:
        if rank is not None:
            rank.share_folder(error=one_line(err))
        raise
    if rank is not None:
        rank.share_folder(plan)
    return plan


#: Set by main() before it sets HYDRA_FULL_ERROR itself: whether the *user* asked for tracebacks.
_DEBUG: Optional[bool] = None


def _user_debug() -> bool:
    return _DEBUG if _DEBUG is not None else debug_requested(argv=sys.argv[1:])


def _plugin_errors(cfg: DictConfig) -> list[str]:
    """Import the plugins ($COARSE_GPU_PLUGINS, entry points, the config's ``plugins``: coarse_gpu.utils.plugins);
    a module that cannot be imported is a config problem."""
    try:
        load_plugins(cfg.get("plugins") or ())
    except ImportError as err:
        return [str(err)]
    return []


def run(cfg: DictConfig) -> Any:
    """One job inside Hydra: validate, take the run folder, run the job; errors become one line."""
    from coarse_gpu.experiment.followers import follow  # here: the job's modules, as in choice_errors

    hc = HydraConfig.get()
    plan = None
    try:
        with stop_on_signals():
            # Every config problem at once, before the run folder is touched. A config error stops a
            # sweep (its other jobs would fail the same way); any other error fails only its job.
            problems = _plugin_errors(cfg)  # the user's registrations first: the checks below know them
            problems += choice_errors(cfg) + config_problems(cfg)
            if problems:
                raise ConfigValueError(problems)
            run_dir = Path(hc.runtime.output_dir)
            # distributed=true: this process is one rank (coarse_gpu.experiment.distributed); rank 0 runs
            # the job below, the others only train and solve with it
            with distributed_job(cfg, run_dir, in_process_sweep=_in_process_sweep(hc)) as rank:
                if rank is not None:
                    cfg = rank.job_config(cfg)
                    if not rank.is_main:
                        return follow(cfg, rank)
                plan = _take_run_dir(cfg, hc, run_dir, rank)
                try:
                    return _job(cfg, hc, plan)
                finally:
                    plan.release()
    except BaseException as err:
        if isinstance(err, SystemExit):
            raise
        if not isinstance(err, RunFolderBusy):  # a busy folder is another job's: its log is not ours
            log_traceback(err)
        if _user_debug() or bool(cfg.get("debug", False)):
            raise
        line, code = _failure(err, plan), exit_code(err)
        if hc.mode == RunMode.MULTIRUN and not isinstance(err, (ConfigValueError, DistributedSetupError,
                                                                KeyboardInterrupt)):
            raise JobFailed(line, code) from err  # this job failed; the sweep runs the others
        raise JobExit(line, code) from err


def main() -> None:
    """``coarse-gpu``: Hydra's command line; every error ends as one line on stderr (errors module)."""
    global _DEBUG
    try:
        register_configs()  # imports the plugins ($COARSE_GPU_PLUGINS): a broken one is one line
    except ImportError as err:
        raise SystemExit(f"coarse-gpu: {err}") from None
    debug = _DEBUG = debug_requested(argv=sys.argv[1:])
    # Let errors reach this function instead of Hydra's own multi-line report; restored afterwards so
    # that a process calling main() does not pass it on to its children as if the user had set it.
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")(run)()
    except (ConfigCompositionException, MissingConfigException) as err:
        if debug:
            raise
        raise SystemExit(f"coarse-gpu: {_flat_config_error(err)}") from None
    except (JobExit, JobFailed) as err:
        print(f"coarse-gpu: {err.line}", file=sys.stderr, flush=True)
        raise SystemExit(err.exit_code) from None
    except (Exception, KeyboardInterrupt) as err:  # Hydra's own errors (override syntax, ...), Ctrl-C there
        if debug:
            raise
        print(f"coarse-gpu: {_run_dir_error(err) or one_line(err)}", file=sys.stderr, flush=True)
        raise SystemExit(exit_code(err)) from None
    finally:
        _DEBUG = None
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved


def _run_dir_error(err: BaseException) -> Optional[str]:
    """The run folder named when Hydra could not create it or open its log file in it (before ``run``:
    a read-only or misspelt ``hydra.run.dir``); Hydra's own words are "Unable to configure handler
    'file'". None for any other error."""
    cause: Optional[BaseException] = err
    while cause is not None and not (isinstance(cause, OSError) and cause.filename is not None):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    path = Path(str(cause.filename))
    folder = path.parent if path.name == "cli.log" else path
    what = cause.strerror or type(cause).__name__
    detail = f"cannot open its log file '{path}' ({what})" if path.name == "cli.log" else f"{what}: '{path}'"
    return (f"the run directory '{folder}' cannot be created or written ({detail}); nothing was run: set "
            "hydra.run.dir (hydra.sweep.dir with -m) to a writable folder")


def _flat_config_error(err: BaseException) -> str:
    return " ".join(explain_config_error(err).split())  # one line: newlines and tabs of the option list


if __name__ == "__main__":
    main()
