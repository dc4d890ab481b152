"""Experiment tracking with Weights & Biases that never needs a network or a login.

``Tracker.from_config(logger_cfg, run_dir, config)`` opens a W&B run in ``offline`` mode by default:
everything is written under ``<run_dir>/wandb/offline-run-*`` and can be uploaded later with
``wandb sync``. ``logger=none`` (or ``mode: disabled``, or the environment variable
``WANDB_MODE=disabled``, which CI sets) gives a tracker whose calls do nothing.

Tracking is a convenience, never a point of failure: if wandb is not installed or its start-up
fails or times out, the run logs a warning and goes on with a disabled tracker; results.json,
config.yaml and the plots in the run directory are written either way. The wait is bounded twice:
W&B's own ``init_timeout`` setting, and a watchdog thread that gives up after
``init_timeout_s + 5`` seconds even if ``wandb.init`` hangs somewhere that setting does not cover.

What a run logs: the resolved config (``wandb.init(config=...)``), per-epoch training metrics
(``train/*``), the discretizer's convergence trace and the results table (``wandb.Table``), the
figures (``wandb.Image``), ``results.json`` and the run's policies as a ``policy`` artifact.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Mapping, Optional

from coarse_gpu.utils.io import to_jsonable

log = logging.getLogger("coarse_gpu")

MODES = ("offline", "online", "disabled")
#: Seconds the watchdog waits beyond ``init_timeout_s`` before it gives up on ``wandb.init``.
WATCHDOG_GRACE_S = 5.0


def _bounded(fn, timeout: float):
    """``fn()`` in a daemon thread; its result, its exception, or TimeoutError after ``timeout`` s.

    A call that never returns is abandoned (the daemon thread cannot block the process's exit).
    """
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            box["error"] = err

    th = threading.Thread(target=target, name="wandb-init", daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise TimeoutError(f"wandb.init did not return within {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class Tracker:
    """A thin wrapper over one ``wandb`` run (or nothing, when disabled).

    Attributes
    ----------
    run : the ``wandb.sdk.wandb_run.Run`` or None when disabled.
    run_dir : Path of the local W&B run folder (``.../wandb/offline-run-<time>-<id>``) or None.
    """

    def __init__(self, run=None) -> None:
        self.run = run
        self._step = 0

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def disabled(cls) -> "Tracker":
        return cls(None)

    @classmethod
    def from_config(cls, logger_cfg: Mapping[str, Any], run_dir: str | os.PathLike,
                    config: Optional[Mapping[str, Any]] = None, name: Optional[str] = None,
                    group: Optional[str] = None) -> "Tracker":
        """Open a tracker as ``logger_cfg`` says (keys: name, mode, project, entity, tags, init_timeout_s).

        ``WANDB_MODE`` in the environment overrides ``logger.mode`` so that CI can switch tracking
        off without touching configs.
        """
        kind = str(logger_cfg.get("name", "none"))
        if kind not in ("wandb", "none"):
            raise ValueError(f"logger.name={kind!r} is not a known logger; available: ['wandb', 'none']")
        mode = os.environ.get("WANDB_MODE") or str(logger_cfg.get("mode", "offline"))
        if mode not in MODES:
            raise ValueError(f"logger.mode={mode!r} must be one of {list(MODES)}")
        if kind == "none" or mode == "disabled":
            return cls.disabled()
        try:
            import wandb  # here: wandb is an optional extra ([wandb]); without it tracking is off
        except ImportError:
            log.warning("logger=wandb but wandb is not installed (pip install 'coarse_gpu[wandb]'); "
                        "tracking is off for this run, outputs are still written to %s", run_dir)
            return cls.disabled()
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        # Offline runs must not wait on a login prompt or a network timeout.
        os.environ.setdefault("WANDB_SILENT", "true")
        timeout = float(logger_cfg.get("init_timeout_s", 30.0))
        try:
            run = _bounded(lambda: wandb.init(
                project=str(logger_cfg.get("project", "coarse_gpu")),
                entity=logger_cfg.get("entity") or None,
                tags=list(logger_cfg.get("tags") or []),
                config=to_jsonable(dict(config or {})),
                dir=str(run_dir),
                mode=mode,
                name=name,
                group=group,
                reinit="finish_previous",
                settings=wandb.Settings(init_timeout=timeout, console="off", x_disable_stats=True),
            ), timeout + WATCHDOG_GRACE_S)
        except Exception as err:  # noqa: BLE001 - any start-up failure must not lose the run
            log.warning("W&B could not start (%s: %s); tracking is off for this run, outputs are still "
                        "written to %s", type(err).__name__, err, run_dir)
            return cls.disabled()
        return cls(run)

    # ---- state -------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self.run is not None

    @property
    def run_dir(self) -> Optional[Path]:
        if self.run is None:
            return None
        return Path(self.run.dir).parent  # run.dir is <run folder>/files

    # ---- logging -----------------------------------------------------------------------------
    def log(self, metrics: Mapping[str, Any]) -> None:
        """Log scalar metrics as one W&B history row."""
        if self.run is None:
            return
        row = {k: v for k, v in to_jsonable(dict(metrics)).items() if v is not None}
        self.run.log(row)

    def log_trace(self, name: str, trace: list[Mapping[str, Any]]) -> None:
        """Log a solver's convergence trace (list of per-iteration dicts) as a W&B table."""
        if self.run is None or not trace:
            return
        import wandb  # here: an optional extra; self.run exists only where it imported

        columns = sorted({k for row in trace for k in row})
        rows = [[to_jsonable(row.get(c)) for c in columns] for row in trace]
        self.run.log({name: wandb.Table(columns=columns, data=rows)})

    def log_image(self, name: str, path: str | os.PathLike) -> None:
        if self.run is None or not Path(path).exists():
            return
        import wandb  # here: an optional extra; self.run exists only where it imported

        self.run.log({name: wandb.Image(str(path))})

    def log_results_table(self, results: Mapping[str, Any], name: str = "results") -> None:
        """The results as a W&B table: one row per (method, K) with profits, shares and DR values."""
        if self.run is None or not results.get("methods"):
            return
        import wandb  # here: an optional extra; self.run exists only where it imported

        columns = ["method", "K", "oracle_profit", "share_of_full", "dr_value", "dr_ci_low", "dr_ci_high",
                   "dr_share_of_full", "treatments", "segment_sizes"]
        rows = []
        for method, per_k in results["methods"].items():
            for k, r in per_k.items():
                ci = list(r.get("dr_ci") or [None, None]) + [None, None]
                rows.append([method, int(k), r.get("oracle_profit"), r.get("share_of_full"), r.get("dr_value"),
                             ci[0], ci[1], r.get("dr_share_of_full"), str(r.get("treatments")),
                             str(r.get("segment_sizes"))])
        rows = [[to_jsonable(v) for v in row] for row in rows]
        self.run.log({name: wandb.Table(columns=columns, data=rows)})

    def log_artifact(self, path: str | os.PathLike, name: str, type: str = "policy",
                     metadata: Optional[Mapping[str, Any]] = None) -> bool:
        """Attach a file or a folder (e.g. the run's ``policies/``) as a W&B artifact; False if absent."""
        path = Path(path)
        if self.run is None or not path.exists() or (path.is_dir() and not any(path.iterdir())):
            return False
        import wandb  # here: an optional extra; self.run exists only where it imported

        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)  # W&B artifact names: letters, digits, - _ .
        art = wandb.Artifact(name=name, type=type, metadata=to_jsonable(dict(metadata or {})))
        if path.is_dir():
            art.add_dir(str(path))
        else:
            art.add_file(str(path))
        self.run.log_artifact(art)
        return True

    def summary(self, values: Mapping[str, Any]) -> None:
        """Set run-level summary values (final figures shown in the W&B run table)."""
        if self.run is None:
            return
        for k, v in to_jsonable(dict(values)).items():
            if v is not None:
                self.run.summary[k] = v

    def save_file(self, path: str | os.PathLike) -> None:
        """Attach a file (e.g. results.json) to the run."""
        if self.run is None or not Path(path).exists():
            return
        self.run.save(str(path), base_path=str(Path(path).parent), policy="now")

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        finally:
            self.run = None


def open_tracker(*, run_dir: str | os.PathLike, run_config: Optional[Mapping[str, Any]] = None,
                 run_name: Optional[str] = None, group: Optional[str] = None, **logger_keys) -> Tracker:
    """The ``logger`` config node's ``_target_``: ``Tracker.from_config`` of its keys (name, mode, project,
    entity, tags, init_timeout_s) for the run folder ``run_dir``, the run's config ``run_config``, W&B run name and
    group. A tracker of your own is a factory with this signature returning an object with Tracker's
    methods (log, log_image, log_trace, log_results_table, summary, save_file, log_artifact, finish)."""
    return Tracker.from_config(logger_keys, run_dir, run_config, name=run_name, group=group)
