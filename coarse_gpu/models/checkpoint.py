"""Per-epoch training checkpoints that survive a SIGKILL, and the RNG states that make resuming exact.

A checkpoint is one ``torch.save`` file written atomically (temp file in the same folder, fsync,
``os.replace``), so a run killed at any instant leaves either the previous epoch's checkpoint or the
new one, never half a file. Everything in it is a tensor, a number, a string or a list/dict of them,
so it loads with ``torch.load(weights_only=True)`` (no pickled code is executed on load).

The file name carries a fingerprint of the model's hyperparameters and of the training data
(``<ModelClass>-<fingerprint>.pt``): re-running the same command resumes; a different
configuration or different data never picks up a stale checkpoint (it starts fresh next to it), and
cross-fitting folds sharing one folder each get their own file.

A file that is readable but not this model's (copied or renamed from another model's checkpoint, or
written by code whose network has other layers; detected by the file name recorded inside it and,
where the caller passes its modules, by their parameter names and shapes) is moved aside to
``<name>.mismatch`` with a warning and training starts over: resuming must never crash a job, and
the file is kept for whoever wants to look at it. Unreadable files go to ``<name>.corrupt``.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch

from coarse_gpu.utils.io import atomic_write_bytes

log = logging.getLogger("coarse_gpu")

#: Bumped when the checkpoint layout changes; older files are ignored (training starts fresh).
FORMAT_VERSION = 1


def fingerprint(params: dict, arrays: Iterable[np.ndarray | torch.Tensor]) -> str:
    """A 16-hex-digit digest of hyperparameters (JSON) and data arrays (bytes, shape and dtype)."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for a in arrays:
        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().numpy()
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


# ---- RNG states as tensors / plain lists (weights_only-loadable) ------------------------------
def rng_state(generator: Optional[torch.Generator] = None, device: Optional[torch.device] = None) -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]),
                   "gauss_next": py_state[2]},
    }
    if generator is not None:
        out["generator"] = generator.get_state()
    if device is not None and device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(state: dict, generator: Optional[torch.Generator] = None,
                  device: Optional[torch.device] = None) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"].cpu())
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


# ---- files -------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Serialize ``state`` and write it atomically to ``path`` (its file name recorded inside)."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, "file_name": path.name, **state}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def _set_aside(path: Path, suffix: str, why: str) -> None:
    bad = path.with_name(path.name + suffix)
    os.replace(path, bad)
    log.warning("checkpoint %s %s; moved it to %s and training starts from epoch 1", path, why, bad)


def state_mismatch(saved: Any, module: Any) -> Optional[str]:
    """Why ``saved`` (a state dict) cannot be loaded into ``module`` (an nn.Module), or None if it can.

    Compares parameter/buffer names and tensor shapes, the two things ``load_state_dict`` checks.
    """
    want = module.state_dict()
    if not isinstance(saved, dict):
        return f"holds {type(saved).__name__} instead of a state dict"
    missing, extra = sorted(set(want) - set(saved)), sorted(set(saved) - set(want))
    if missing or extra:
        return (f"has other layers ({len(missing)} missing, e.g. {missing[:2]}; {len(extra)} unexpected, "
                f"e.g. {extra[:2]})")
    for name, tensor in want.items():
        got = saved[name]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(tensor.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return f"has {name} of shape {shape}, this model needs {tuple(tensor.shape)}"
    return None


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu",
                    modules: Optional[dict[str, Any]] = None) -> Optional[dict]:
    """The checkpoint at ``path``, or None when there is none / it cannot be used.

    path : ``<checkpoint_dir>/<Class>-<fingerprint>.pt``.
    modules : optional {state key: nn.Module}, e.g. ``{"net": net}``: the saved state dicts under
        these keys must fit these modules (names and shapes), else the file is set aside.

    A file that cannot be read (truncated by a full disk, edited, written by another torch) is
    moved aside to ``<name>.corrupt``; one that is readable but another model's (its recorded file
    name differs, its layers do not fit ``modules``, or another format version) to
    ``<name>.mismatch``; each with a warning naming it, and training starts fresh: a cluster job
    that is requeued must not fail over and over on the same file.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(state, dict) or "epoch" not in state:
            raise ValueError("not a coarse_gpu training checkpoint")
    except Exception as err:  # noqa: BLE001 - any unreadable file is handled the same way
        _set_aside(path, ".corrupt", f"could not be read ({type(err).__name__}: {err})")
        return None
    if state.get("format_version") != FORMAT_VERSION:
        _set_aside(path, ".mismatch", f"has format {state.get('format_version')} (expected {FORMAT_VERSION})")
        return None
    # Files written before the name was recorded have none: only a recorded, different name is a mismatch.
    recorded = state.get("file_name")
    if recorded is not None and recorded != path.name:
        _set_aside(path, ".mismatch", f"was written as {recorded}, another model's checkpoint")
        return None
    for key, module in (modules or {}).items():
        if module is None:
            continue
        why = state_mismatch(state.get(key), module)
        if why is not None:
            _set_aside(path, ".mismatch", f"belongs to another architecture: its {key!r} {why}")
            return None
    return state
