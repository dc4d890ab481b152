"""Per-epoch training checkpoints that survive a SIGKILL, and the RNG states that make resuming exact.

A checkpoint is one ``torch.save`` file written atomically (temp file in the same folder, fsync,
``os.replace``), so a run killed at any instant leaves either the previous epoch's checkpoint or the
new one, never half a file. Everything in it is a tensor, a number, a string or a list/dict of them,
so it loads with ``torch.load(weights_only=True)`` (no pickled code is executed on load).

The file name carries a fingerprint of the model's hyperparameters and of the training data
(``<ModelClass>-<fingerprint>.pt``): re-running the same command resumes; a different
configuration or different data never picks up a stale checkpoint (it starts fresh next to it), and
cross-fitting folds sharing one folder each get their own file.
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
    """Serialize ``state`` and write it atomically to ``path``."""
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Optional[dict]:
    """The checkpoint at ``path``, or None when there is none / it cannot be used.

    A file that cannot be read (truncated by a full disk, edited, written by another torch) is
    moved aside to ``<name>.corrupt`` with a warning naming it, and training starts fresh: a
    cluster job that is requeued must not fail over and over on the same file.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(state, dict) or "epoch" not in state:
            raise ValueError("not a coarse_gpu training checkpoint")
    except Exception as err:  # noqa: BLE001 - any unreadable file is handled the same way
        bad = path.with_name(path.name + ".corrupt")
        os.replace(path, bad)
        log.warning("checkpoint %s could not be read (%s: %s); moved it to %s and training starts from "
                    "epoch 1", path, type(err).__name__, err, bad)
        return None
    if state.get("format_version") != FORMAT_VERSION:
        log.warning("checkpoint %s has format %s (expected %s); training starts from epoch 1",
                    path, state.get("format_version"), FORMAT_VERSION)
        return None
    return state
