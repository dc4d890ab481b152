"""Independent fits (the folds of a cross-fitting) on a CPU: one thread each, in parallel workers.

The models here are small: a TARNet step is a handful of 512 x 128 matrix products, so a second
thread inside one fit buys little and, when another process shares the cores, costs a lot (measured
on the 2-core machine with one other busy process: 4.1 s per epoch with 2 threads against 0.89 s
with 1, 40,000 rows). Cross-fitting has n_folds fits that share nothing, so on a CPU every fit runs
with one thread (torch, BLAS and OpenMP, which HistGradientBoosting uses) and, when the fits are
large enough to pay for starting worker processes (a few seconds each), ``n_jobs`` of them run at
once in joblib's loky workers. loky (not a hand-written process pool) because its workers do not
re-run the caller's script: a plain ``.py`` file without an ``if __name__ == "__main__":`` guard
works, which is how most scripts are written; and it keeps its workers for the next call (no second
torch import). Every fit seeds itself, so the fitted models are the same whichever way they ran
(``tests/test_learners.py`` checks it bit for bit).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional, Sequence

import torch
from joblib import Parallel, delayed, parallel_config
from threadpoolctl import threadpool_limits

from coarse_gpu.utils.device import resolve_device, usable_cpus

__all__ = ["MIN_ROWS_PARALLEL", "auto_jobs", "fit_all", "one_thread"]

#: Fits on fewer rows than this run in this process: a worker's start-up (importing torch) would
#: cost more than the fit.
MIN_ROWS_PARALLEL = 10_000


@contextlib.contextmanager
def one_thread():
    """torch, BLAS and OpenMP limited to one thread inside the block (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(n)


def _on_cpu(model) -> bool:
    dev = getattr(model, "device", None)
    if dev is None:  # boosting learners: CPU only
        return True
    return resolve_device(dev).type == "cpu"


def auto_jobs(models: Sequence, n_rows: int) -> int:
    """Worker processes for these fits: up to the CPU count when every model fits on the CPU with at
    least MIN_ROWS_PARALLEL rows and no torch.distributed group is running, else 1 (in-process)."""
    if n_rows < MIN_ROWS_PARALLEL or len(models) < 2 or not all(_on_cpu(m) for m in models):
        return 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return 1
    return usable_cpus(len(models))


def _fit(model, X, T, y, propensity):
    return model.fit(X, T, y, propensity=propensity)


def _fit_one_thread(model, X, T, y, propensity):
    """A worker's fit: one thread (loky caps OpenMP / BLAS through the environment, torch needs telling)."""
    with one_thread():
        return _fit(model, X, T, y, propensity)


def fit_all(models: Sequence, data: Sequence[tuple], n_jobs: int = 1,
            progress: Optional[Callable[[], None]] = None) -> list:
    """``models[i].fit(*data[i])`` for every i, each with one thread; ``n_jobs`` > 1 runs them in that many
    joblib (loky) worker processes (the models come back fitted, in order). data[i] = (X, T, y,
    propensity or None). ``progress()`` is called once per finished fit."""
    cpu = all(_on_cpu(m) for m in models)
    if n_jobs <= 1:
        out = []
        with one_thread() if cpu else contextlib.nullcontext():
            for m, d in zip(models, data):
                out.append(_fit(m, *d))
                if progress:
                    progress()
        return out
    # max_nbytes=None: the arrays travel pickled, as writable copies (a memmap would hand the models
    # read-only arrays); return_as="generator": results in order as they finish, for the progress bar.
    out = []
    with parallel_config(backend="loky", inner_max_num_threads=1):
        run = Parallel(n_jobs=n_jobs, max_nbytes=None, return_as="generator")
        for fitted in run(delayed(_fit_one_thread)(m, *d) for m, d in zip(models, data)):
            out.append(fitted)
            if progress:
                progress()
    return out
