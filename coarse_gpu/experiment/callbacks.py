"""Hydra callbacks: sweep progress (``coarse-gpu -m ...``), registered in configs/config.yaml.

Each finished job of a sweep logs one line ``sweep: 3/6 jobs done (50%), 1m12s elapsed, ~1m12s left;
last: discretizer.k=3 -> COMPLETED``. The total is known for the basic sweeper (the product of the
comma lists in the overrides) and the Optuna sweeper (``n_trials``). Jobs that run in other processes
(SLURM via submitit) are counted only where they run, so there the line is left out; submitit and
SLURM have their own job views. Quiet with ``quiet=true`` or the CI environment variable.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra-core < 1.1
    Callback = object  # type: ignore[misc,assignment]

log = logging.getLogger("coarse_gpu")


def _fmt(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def sweep_size(config: DictConfig) -> Optional[int]:
    """Number of jobs the sweep will run, when it can be known in advance."""
    sweeper = OmegaConf.select(config, "hydra.sweeper", default=None)
    if sweeper is None:
        return None
    target = str(sweeper.get("_target_", ""))
    if "optuna" in target.lower():
        n = sweeper.get("n_trials")
        return int(n) if n is not None else None
    try:
        overrides = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
        params = sweeper.get("params") or {}
        overrides += [f"{k}={v}" for k, v in params.items()]
        total = 1
        for ov in OverridesParser.create().parse_overrides(overrides):
            if ov.is_sweep_override():
                total *= len(list(ov.sweep_iterator()))
        return total
    except Exception:  # noqa: BLE001 - progress is cosmetic
        return None


class SweepProgress(Callback):
    """Logs the progress of a multirun after each job (see the module docstring)."""

    def __init__(self, quiet: bool = False) -> None:
        self.enabled = not quiet and not os.environ.get("CI")
        self.total: Optional[int] = None
        self.done = 0
        self.t0: Optional[float] = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.t0 = time.perf_counter()
        self.done = 0
        self.total = sweep_size(config)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not self.enabled or self.t0 is None:  # not a sweep, or a job in another process
            return
        self.done += 1
        elapsed = time.perf_counter() - self.t0
        overrides = " ".join(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
        status = getattr(getattr(job_return, "status", None), "name", "?")
        if self.total:
            left = elapsed / self.done * max(0, self.total - self.done)
            head = (f"sweep: {self.done}/{self.total} jobs done ({100 * self.done / self.total:.0f}%), "
                    f"{_fmt(elapsed)} elapsed, ~{_fmt(left)} left")
        else:
            head = f"sweep: {self.done} jobs done, {_fmt(elapsed)} elapsed"
        log.info("%s; last: %s -> %s", head, overrides or "(no overrides)", status)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.enabled and self.t0 is not None and self.done:
            log.info("sweep finished: %d jobs in %s", self.done, _fmt(time.perf_counter() - self.t0))


__all__ = ["SweepProgress", "sweep_size"]
