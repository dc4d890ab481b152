"""Small shared utilities: devices, seeds, atomic file output, environment records."""
from coarse_gpu.utils.device import resolve_device, usable_cpus
from coarse_gpu.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from coarse_gpu.utils.runinfo import environment_record
from coarse_gpu.utils.seed import seed_everything

__all__ = [
    "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "environment_record",
    "resolve_device", "seed_everything", "usable_cpus",
]
