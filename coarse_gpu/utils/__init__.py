"""Small shared utilities: devices, seeds, atomic file output, environment records, parameter rules.

The names below load on first use (PEP 562): ``coarse_gpu.utils.params`` serves the torch-free config check
(coarse_gpu.experiment.validate), and importing this package must not load torch for it (``device`` and
``seed`` do).
"""
from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "resolve_device": "device", "usable_cpus": "device",
    "atomic_write_bytes": "io", "atomic_write_json": "io", "atomic_write_text": "io",
    "environment_record": "runinfo", "seed_everything": "seed",
}

__all__ = [
    "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "environment_record",
    "resolve_device", "seed_everything", "usable_cpus",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'coarse_gpu.utils' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"coarse_gpu.utils.{_HOME[name]}"), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
