"""What every run records next to its results: versions, device, host."""
from __future__ import annotations

import importlib.metadata as md
import platform
import subprocess
from pathlib import Path

import torch

PACKAGES = ("coarse_gpu", "torch", "numpy", "scipy", "scikit-learn", "pandas", "pykeops",
            "pot", "hydra-core", "omegaconf", "wandb")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The commit of the source tree this package was imported from, if it is a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        res = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment_record(device: torch.device) -> dict:
    return {
        "versions": package_versions(),
        "device": device_description(device),
        "host": platform.node(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
    }
