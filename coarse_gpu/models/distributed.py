"""Multi-GPU (or multi-process CPU) data-parallel training of the CATE models with torchrun.

Launch one process per GPU; every process runs the same script::

    torchrun --standalone --nproc_per_node=4 scripts/train_ddp.py --n-customers 1000000 --out runs/ddp

Inside, ``init_distributed()`` joins the process group torchrun describes in the environment
(``nccl`` with one GPU per process when CUDA is available, ``gloo`` on CPU), and a plain
``model.fit(X, t, y)`` then trains data-parallel: the models' ``Trainer`` (coarse_gpu.models.trainer)
sees the process group, wraps the network in ``DistributedDataParallel`` (gradients are all-reduced
every step), gives every rank its ``DistributedSampler`` shard of each epoch, keeps ``batch_size`` as
the global batch, and lets rank 0 alone write checkpoints. Every rank ends with identical weights; write outputs from rank
0 only (``is_main_process()``).

Every rank loads the full (tabular) training set: the experiment fits in memory many times over, and
sharding happens per epoch, which is what DDP needs. Without torchrun (``WORLD_SIZE`` unset) the
helpers are no-ops and training is the usual single-process one.
"""
from __future__ import annotations

import datetime
import os
from typing import Optional

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0


def init_distributed(backend: Optional[str] = None, timeout_s: float = 600.0) -> str:
    """Join the torchrun process group; returns this process's device ("cuda:<local rank>" or "cpu").

    ``backend``: None picks ``nccl`` when CUDA is available (one GPU per process, by LOCAL_RANK) and
    ``gloo`` otherwise. Outside torchrun (no WORLD_SIZE in the environment) nothing is initialized and
    the device is "cuda" / "cpu" as available.
    """
    use_cuda = torch.cuda.is_available() and backend != "gloo"
    if "WORLD_SIZE" not in os.environ:
        return "cuda" if use_cuda else "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                               "use --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(local_rank)
    backend = backend or ("nccl" if use_cuda else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return f"cuda:{local_rank}" if use_cuda else "cpu"


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
