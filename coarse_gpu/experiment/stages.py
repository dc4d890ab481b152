"""Time and peak memory of the main job's stages, for results.json's ``timings_s``.

``timings_s[<stage>]`` accumulates seconds; ``timings_s["peak_host_mb"][<stage>]`` is the largest resident
set size (MiB) the process reached while that stage ran, and on CUDA ``timings_s["peak_gpu_mb"][<stage>]``
the largest GPU memory torch allocated during it.

Why per stage and not one figure: a scale problem shows up as the one stage whose memory grows with
N x M. On Linux the kernel's peak-RSS counter (VmHWM in /proc/self/status) can be reset by writing "5" to
/proc/self/clear_refs, so each stage's own peak is measured, not the run's peak so far. Where that is not
available (other systems, restricted /proc) the figure is the process peak up to the end of the stage
(``resource.getrusage``), which is still an upper bound.
"""
from __future__ import annotations

import contextlib
import resource
import sys
import time
from pathlib import Path

import torch

__all__ = ["peak_host_mb", "stage"]

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _reset_host_peak() -> bool:
    """Reset the kernel's peak-RSS counter of this process; False where that is not possible."""
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def peak_host_mb() -> float:
    """Peak resident set size in MiB: since the last reset (Linux VmHWM), else of the whole process."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 1024.0)


@contextlib.contextmanager
def stage(timings: dict, name: str, device=None):
    """Add the block's seconds to ``timings[name]`` and record its peak host (and CUDA) memory.

    A stage entered several times (once per K) keeps the sum of its seconds and the max of its peaks.
    """
    cuda = device is not None and getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available()
    _reset_host_peak()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        host = timings.setdefault("peak_host_mb", {})
        host[name] = round(max(host.get(name, 0.0), peak_host_mb()), 1)
        if cuda:
            gpu = timings.setdefault("peak_gpu_mb", {})
            gpu[name] = round(max(gpu.get(name, 0.0), torch.cuda.max_memory_allocated(device) / 2**20), 1)
