"""Experiment tracking with Weights & Biases that never needs a network or a login.

``Tracker.from_config(logger_cfg, run_dir, config)`` opens a W&B run in ``offline`` mode by default:
everything is written under ``<run_dir>/wandb/offline-run-*`` and can be uploaded later with
``wandb sync``. ``logger=none`` (or ``mode: disabled``, or the environment variable
``WANDB_MODE=disabled``, which CI sets) gives a tracker whose calls do nothing.

Tracking is a convenience, never a point of failure: if wandb is not installed or its start-up
fails or times out, the run logs a warning and goes on with a disabled tracker; results.json,
config.yaml and the plots in the run directory are written either way.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional

from coarse_gpu.utils.io import to_jsonable

log = logging.getLogger("coarse_gpu")

MODES = ("offline", "online", "disabled")


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
            import wandb
        except ImportError:
            log.warning("logger=wandb but wandb is not installed (pip install 'coarse_gpu[wandb]'); "
                        "tracking is off for this run, outputs are still written to %s", run_dir)
            return cls.disabled()
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        # Offline runs must not wait on a login prompt or a network timeout.
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            run = wandb.init(
                project=str(logger_cfg.get("project", "coarse_gpu")),
                entity=logger_cfg.get("entity") or None,
                tags=list(logger_cfg.get("tags") or []),
                config=to_jsonable(dict(config or {})),
                dir=str(run_dir),
                mode=mode,
                name=name,
                group=group,
                reinit="finish_previous",
                settings=wandb.Settings(init_timeout=float(logger_cfg.get("init_timeout_s", 30.0)),
                                        console="off", x_disable_stats=True),
            )
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
        import wandb

        columns = sorted({k for row in trace for k in row})
        rows = [[to_jsonable(row.get(c)) for c in columns] for row in trace]
        self.run.log({name: wandb.Table(columns=columns, data=rows)})

    def log_image(self, name: str, path: str | os.PathLike) -> None:
        if self.run is None or not Path(path).exists():
            return
        import wandb

        self.run.log({name: wandb.Image(str(path))})

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
