"""The main job: data -> personalize (CATE model) -> discretize (OT + baselines) -> evaluate -> report.

``run_experiment(cfg, run_dir)`` is what ``coarse-gpu`` calls; it is plain Python on an OmegaConf
config, so tests and notebooks can call it without Hydra's command line. It checks the config and
runs the one library object that is the pipeline (coarse_gpu.experiment.job.CoarsePipeline), which
the Python API (``CoarsePersonalizer.run``) runs too; its steps are coarse_gpu.experiment.steps.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from coarse_gpu.experiment.job import CoarsePipeline

# the data step moved to loading.py, the steps to steps.py: their public names stay importable from here
from coarse_gpu.experiment.loading import (  # noqa: F401
    DATA_SOURCES,
    SIMULATED,
    _check_mip_size,
    build_data,
    candidate_treatments,
    check_k_values,
    discrete_dims,
    prepare_data,
)
from coarse_gpu.experiment.steps import (  # noqa: F401
    CHECK_ROWS,
    _squared_errors,
    ideal_treatment_histogram,
)
from coarse_gpu.experiment.tracking import Tracker
from coarse_gpu.experiment.validate import validate_config
from coarse_gpu.utils.plugins import load_plugins

log = logging.getLogger("coarse_gpu")



def progress_enabled(cfg: DictConfig) -> bool:
    return not (cfg.get("quiet", False) or os.environ.get("CI"))


def run_experiment(cfg: DictConfig, run_dir: str | Path, tracker: Optional[Tracker] = None) -> dict:
    """Run the whole job and write its outputs into ``run_dir``. Returns the results dict."""
    load_plugins(cfg.get("plugins") or ())  # the user's registrations (a metric): the checks below know them
    validate_config(cfg)  # every value and cross-field rule, naming the key, before anything is written
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return CoarsePipeline(cfg, verbose=progress_enabled(cfg)).run(run_dir=run_dir, tracker=tracker)
