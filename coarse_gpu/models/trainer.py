"""The one training loop of every network model (TARNet, DragonNet, DoseLogit, DoseVC).

Design. How a network is *trained* does not depend on which CATE model it is, so it lives here once:
minibatch AdamW (no weight decay on biases and offsets), ReduceLROnPlateau on the validation loss,
early stopping with the best weights restored, an optional exponential moving average (EMA) of the
weights, mixed precision on CUDA, per-epoch checkpoints that a killed run resumes from (on CPU
ending bit for bit with the model of an uninterrupted run) and DistributedDataParallel inside a
torch.distributed process group. A model keeps only what is its own: it builds the network, says
what one minibatch's loss and the validation metrics are, turns its data into tensors, configures a
``Trainer`` from its hyperparameters and keeps the ``TrainResult``::

    trainer = Trainer(lr=1e-3, weight_decay=1e-4, batch_size=256, max_epochs=100, patience=10,
                      device=torch.device("cpu"))
    result = trainer.fit(net, loss, metrics, train, val, generator)
    result.net, result.history, result.best_epoch, result.best_val_loss

* ``train`` / ``val``: dicts of tensors on ``device`` that share their first dimension (the rows),
  whatever the model's loss needs (the models use x (N, p), arm (N,) or (N, d), y (N,) and extras).
  A minibatch is the same dict indexed by a set of rows.
* ``loss(net, batch) -> scalar tensor``: called on the (possibly DDP-wrapped) network under autocast;
  it runs the forward pass itself, so a model decides what its network takes.
* ``metrics(net, batch) -> {name: scalar tensor}``: per-batch means on validation rows, averaged
  over all of them weighted by rows; ``"val_loss"`` drives early stopping and the LR schedule, the
  other entries go to the history.
* ``generator``: the model's seeded CPU generator, already used for its split and its initial
  weights; here it draws every epoch's minibatch order, and a checkpoint stores it. Dropout uses
  the global torch RNG, which the caller seeds (in a forked RNG state, see ``PerArmCATEModel``).

Without validation rows (``val`` with no rows) training runs ``max_epochs`` epochs and keeps the last
weights. Under torch.distributed every rank trains on its ``DistributedSampler`` shard with
``batch_size // world_size`` rows per step (``batch_size`` stays the global batch), the validation
figure of rank 0 decides for all ranks, and only rank 0 writes the checkpoint.
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from coarse_gpu.models.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from coarse_gpu.models.networks import no_decay_parameters

__all__ = ["AMP_MODES", "EVAL_BATCH", "TrainResult", "Trainer", "distributed", "training_hook"]

AMP_MODES = ("auto", "off", "bf16", "fp16")
#: Validation rows per forward pass (memory bound only: the metrics are row-weighted means).
EVAL_BATCH = 16384

log = logging.getLogger("coarse_gpu")

Data = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Data], torch.Tensor]
MetricsFn = Callable[[nn.Module, Data], dict[str, torch.Tensor]]


#: While set (``training_hook``), ``Trainer.fit`` hands its run to this callable instead of training:
#: the batched ensemble trainer (coarse_gpu.models.ensemble) collects the runs of many fits with it
#: and trains them as one module. A context variable, so that nested fits (ensemble members) see it.
_HOOK: contextvars.ContextVar = contextvars.ContextVar("coarse_gpu_training_hook", default=None)


@contextlib.contextmanager
def training_hook(hook: Callable):
    """Inside the block, ``Trainer.fit(net, loss, metrics, train, val, generator, history)`` returns
    ``hook(trainer, net, loss, metrics, train, val, generator, history)`` (a ``TrainResult``) instead of training."""
    token = _HOOK.set(hook)
    try:
        yield
    finally:
        _HOOK.reset(token)


def distributed() -> tuple[int, int]:
    """(rank, world size) of an initialized torch.distributed process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _rows(data: Data) -> int:
    return next(iter(data.values())).shape[0]


@dataclass
class TrainResult:
    """What a model keeps of a training run.

    net : the returned network in eval mode, on the training device (the EMA copy when ema > 0),
        with the best validated weights (the last ones without validation rows).
    history : one dict per epoch: epoch, train_loss, lr, val_loss (NaN without validation rows) and
        the other validation metrics; a resumed run's list starts with the checkpoint's epochs.
    best_epoch : the epoch whose weights ``net`` holds.  best_val_loss : its val_loss (NaN without
        validation rows).  resumed_from_epoch : epochs restored from the checkpoint (0 = none).
    """

    net: nn.Module
    history: list[dict]
    best_epoch: int
    best_val_loss: float
    resumed_from_epoch: int = 0


@dataclass
class _Loop:
    """Early-stopping state of one run (saved in and restored from the checkpoint)."""

    best: float = math.inf
    best_state: Optional[dict] = None
    best_epoch: int = 0
    stale: int = 0
    start_epoch: int = 1
    finished: bool = False


@dataclass
class Trainer:
    """Minibatch AdamW with plateau schedule, early stopping, EMA, AMP, checkpoints and DDP.

    lr : AdamW learning rate.  weight_decay : decoupled weight decay of the weight matrices.
    batch_size : rows per step (the global batch under DDP).  max_epochs : passes over the rows at most.
    patience : stop after this many epochs without a validation improvement.
    lr_patience : halve the learning rate after this many epochs without improvement; None ->
        max(1, patience // 3).
    min_delta : relative improvement of the validation loss that counts (1e-4 = 0.01 %).
    ema : decay of the moving average of the weights, updated every step (0 = off); the averaged
        weights are validated, early-stopped and returned.
    amp : "auto" (bfloat16 autocast on CUDA where supported, else float16 with a GradScaler; off on
        CPU, so the CPU path is exact float32), "bf16", "fp16" (CUDA only) or "off".
    device : where the network and the data live.
    seed : the DistributedSampler's shuffles and, after a resume under DDP, the dropout streams.
    checkpoint : file of the per-epoch checkpoint (None = none); a matching one is resumed from.
    verbose : tqdm progress bar over epochs.  name : label of the bar, the log lines and errors.
    """

    lr: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    patience: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    lr_patience: Optional[int] = None
    min_delta: float = 1e-4
    ema: float = 0.0
    amp: str = "auto"
    seed: int = 0
    checkpoint: Optional[Path] = None
    verbose: bool = False
    name: str = "model"

    # -- the run -------------------------------------------------------------------------------
    def fit(self, net: nn.Module, loss: LossFn, metrics: MetricsFn, train: Data, val: Data,
            generator: torch.Generator, history: Optional[list] = None) -> TrainResult:
        """Train ``net`` (already on ``device``) on ``train``, early-stopping on ``val`` (module docstring).

        history : the list the per-epoch records are appended to while training runs (so that a
            caller can watch progress; a resume first replaces its contents with the checkpoint's),
            default a new one. Returns the ``TrainResult``.
        """
        hook = _HOOK.get()
        if hook is not None:
            return hook(self, net, loss, metrics, train, val, generator, [] if history is None else history)
        rank, world = distributed()
        opt, sched, scaler, amp_dtype = self._optimizer(net)
        sampler, n_train, batch_size, n_batches = self._batch_plan(_rows(train), rank, world)
        has_val = _rows(val) > 0
        # EMA: with noisy outcomes the SGD iterates jitter around the optimum; their running average
        # is a free ensemble along the trajectory. Validation, early stopping and the result use it.
        eval_net = copy.deepcopy(net) if self.ema > 0 else net
        modules = {"net": net, "eval_net": eval_net if self.ema > 0 else None, "optimizer": opt,
                   "scheduler": sched, "scaler": scaler}
        history = [] if history is None else history
        loop = _Loop()
        resumed = 0
        if self.checkpoint is not None:
            resumed = self._resume(modules, loop, history, generator, rank, world)
        train_net = _data_parallel(net, self.device, world)
        epochs = range(loop.start_epoch, self.max_epochs + 1) if not loop.finished else range(0)
        bar = tqdm(epochs, desc=self.name, disable=not self.verbose or rank != 0, leave=False,
                   initial=loop.start_epoch - 1, total=self.max_epochs)
        for epoch in bar:
            net.train()
            if sampler is None:
                perm = torch.randperm(n_train, generator=generator).to(self.device)
            else:
                sampler.set_epoch(epoch)
                perm = torch.as_tensor(list(sampler), dtype=torch.long, device=self.device)
            batches = [perm[b * batch_size: (b + 1) * batch_size] for b in range(n_batches)]
            train_loss = self._epoch(train_net, modules, loss, train, batches, amp_dtype, world)
            rec = {"epoch": epoch, "train_loss": train_loss, "lr": opt.param_groups[0]["lr"]}
            if has_val:
                criterion = self._validate(eval_net, metrics, val, rec, world)
            else:
                criterion, rec["val_loss"] = train_loss, float("nan")
            if not math.isfinite(train_loss):
                raise FloatingPointError(f"{self.name}: training loss became {train_loss} at epoch {epoch}; lower lr")
            history.append(rec)
            if self.verbose:
                bar.set_postfix(train=f"{train_loss:.4f}", val=f"{rec['val_loss']:.4f}", lr=f"{rec['lr']:.1e}")
            stop = self._early_stopping(loop, criterion, epoch, eval_net, sched, has_val)
            if self.checkpoint is not None and rank == 0:
                self._save(modules, loop, history, epoch, stop or epoch == self.max_epochs, generator)
            if stop:
                break
        bar.close()
        return self._result(eval_net, loop, history, has_val, resumed)

    def _early_stopping(self, loop: _Loop, criterion: float, epoch: int, eval_net: nn.Module, sched,
                        has_val: bool) -> bool:
        """Record an improvement (a copy of the weights) or a stale epoch, step the LR schedule;
        whether to stop now."""
        if not math.isfinite(loop.best) or criterion < loop.best - self.min_delta * abs(loop.best):
            loop.best, loop.best_epoch, loop.stale = criterion, epoch, 0
            loop.best_state = copy.deepcopy(eval_net.state_dict())
        else:
            loop.stale += 1
        if not has_val:
            return False
        sched.step(criterion)
        return loop.stale >= int(self.patience)

    def _result(self, eval_net: nn.Module, loop: _Loop, history: list, has_val: bool, resumed: int) -> TrainResult:
        """The best validated weights (the last ones without validation rows), in eval mode."""
        best_epoch = loop.best_epoch
        if has_val and loop.best_state is not None:
            eval_net.load_state_dict(loop.best_state)
        else:
            best_epoch = len(history)
        eval_net.eval()
        return TrainResult(net=eval_net, history=history, best_epoch=int(best_epoch),
                           best_val_loss=float(loop.best) if has_val else float("nan"), resumed_from_epoch=resumed)

    # -- set-up --------------------------------------------------------------------------------
    def _amp_dtype(self) -> Optional[torch.dtype]:
        """The autocast dtype for training on ``device``, or None for plain float32."""
        if self.amp not in AMP_MODES:
            raise ValueError(f"{self.name}: amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.amp == "off":
            return None
        if self.device.type != "cuda":
            if self.amp == "auto":
                return None
            raise ValueError(f"{self.name}: amp={self.amp!r} needs a CUDA device (device is {self.device}); "
                             "use amp='auto' or 'off'")
        if self.amp == "fp16":
            return torch.float16
        if self.amp == "bf16" or torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16

    def _optimizer(self, net: nn.Module):
        """AdamW (no decay on biases and offsets), plateau schedule, AMP scaler and autocast dtype."""
        decay, no_decay = no_decay_parameters(net)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr,
        )
        sched = self._scheduler(opt)
        amp_dtype = self._amp_dtype()
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        return opt, sched, scaler, amp_dtype

    def _scheduler(self, opt: torch.optim.Optimizer):
        """ReduceLROnPlateau on the validation loss: halve ``opt``'s lr after ``lr_patience`` stale epochs."""
        lr_patience = self.lr_patience if self.lr_patience is not None else max(1, int(self.patience) // 3)
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=lr_patience)

    def _batch_plan(self, n_train: int, rank: int, world: int):
        """(sampler or None, rows per epoch on this rank, batch size on this rank, batches per epoch)."""
        batch_size = full_batch = int(self.batch_size)
        sampler = None
        if world > 1:
            # Each rank gets a disjoint shard of every epoch's permutation (padded to equal length so
            # every rank takes the same number of steps); the global batch stays ``batch_size``.
            sampler = DistributedSampler(range(n_train), num_replicas=world, rank=rank, shuffle=True,
                                         seed=int(self.seed), drop_last=False)
            n_train = sampler.num_samples
            batch_size = max(1, full_batch // world)
        # Drop a last minibatch smaller than half a batch: a handful of rows gives a noisy step.
        n_batches = max(1, math.ceil(n_train / batch_size))
        if n_batches > 1 and n_train - (n_batches - 1) * batch_size < batch_size // 2:
            n_batches -= 1
        return sampler, n_train, batch_size, n_batches

    # -- one epoch -----------------------------------------------------------------------------
    def _epoch(self, train_net: nn.Module, modules: dict, loss_fn: LossFn, train: Data, batches: list,
               amp_dtype, world: int) -> float:
        """One pass over ``batches`` (row-index tensors into ``train``); the mean training loss (all ranks)."""
        net, opt, scaler = modules["net"], modules["optimizer"], modules["scaler"]
        ema = float(self.ema)
        live_params = list(net.parameters())
        ema_params = list(modules["eval_net"].parameters()) if ema > 0 else live_params
        dev = self.device
        autocast = (contextlib.nullcontext if amp_dtype is None
                    else lambda: torch.autocast(device_type=dev.type, dtype=amp_dtype))
        total = torch.zeros((), device=dev)
        for idx in batches:
            batch = {k: v[idx] for k, v in train.items()}
            with autocast():
                loss = loss_fn(train_net, batch)
            opt.zero_grad(set_to_none=True)
            if scaler.is_enabled():
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            if ema > 0:
                with torch.no_grad():
                    torch._foreach_lerp_(ema_params, live_params, 1.0 - ema)
            total += loss.detach().float()  # summed on device: no host sync per step
        if world > 1:
            torch.distributed.all_reduce(total)
            total /= world
        return float(total) / len(batches)

    def _validate(self, eval_net: nn.Module, metrics: MetricsFn, val: Data, rec: dict, world: int) -> float:
        """Validation metrics into ``rec``; returns the early-stopping criterion ``val_loss``."""
        parts = _evaluate(eval_net, metrics, val)
        if world > 1:  # identical weights on every rank; rank 0's figure decides for all
            v = torch.tensor([parts[k] for k in sorted(parts)], dtype=torch.float64, device=self.device)
            torch.distributed.broadcast(v, src=0)
            parts = dict(zip(sorted(parts), v.tolist()))
        rec.update(parts)
        return parts["val_loss"]

    # -- checkpoints ---------------------------------------------------------------------------
    def _resume(self, modules: dict, loop: _Loop, history: list, generator, rank: int, world: int) -> int:
        """Load a matching checkpoint into the modules, the loop state and ``history``; the epochs it
        holds (0 when there is none)."""
        dev = self.device
        state = load_checkpoint(self.checkpoint, map_location=dev,
                                modules={"net": modules["net"], "eval_net": modules["eval_net"]})
        if state is None:
            return 0
        modules["net"].load_state_dict(state["net"])
        if modules["eval_net"] is not None:
            modules["eval_net"].load_state_dict(state["eval_net"])
        modules["optimizer"].load_state_dict(state["optimizer"])
        modules["scheduler"].load_state_dict(state["scheduler"])
        if "scaler" in state and modules["scaler"].is_enabled():
            modules["scaler"].load_state_dict(state["scaler"])
        history[:] = list(state["history"])
        loop.best, loop.best_epoch, loop.stale = float(state["best"]), int(state["best_epoch"]), int(state["stale"])
        loop.best_state, loop.start_epoch = state["best_state"], int(state["epoch"]) + 1
        loop.finished = bool(state["finished"])
        set_rng_state(state["rng"], generator, dev)
        if world > 1:  # dropout masks: rank-dependent, reproducible streams after a resume
            torch.manual_seed(int(self.seed) + 1000 * int(state["epoch"]) + rank)
        log.info("%s: resumed from checkpoint %s (epoch %d%s)", self.name, self.checkpoint, state["epoch"],
                 ", training had finished" if loop.finished else "")
        return int(state["epoch"])

    def _save(self, modules: dict, loop: _Loop, history: list, epoch: int, finished: bool, generator) -> None:
        scaler = modules["scaler"]
        save_checkpoint(self.checkpoint, {
            "epoch": epoch,
            "finished": finished,
            "net": modules["net"].state_dict(),
            "eval_net": modules["eval_net"].state_dict() if modules["eval_net"] is not None else None,
            "optimizer": modules["optimizer"].state_dict(),
            "scheduler": modules["scheduler"].state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "history": history,
            "best": loop.best,
            "best_epoch": loop.best_epoch,
            "stale": loop.stale,
            "best_state": loop.best_state,
            "rng": rng_state(generator, self.device),
        })


@torch.no_grad()
def _evaluate(net: nn.Module, metrics: MetricsFn, val: Data) -> dict[str, float]:
    """Row-weighted means of ``metrics`` over all of ``val``, in batches of EVAL_BATCH rows."""
    net.eval()
    sums: dict[str, float] = {}
    n = _rows(val)
    for s in range(0, n, EVAL_BATCH):
        batch = {k: v[s: s + EVAL_BATCH] for k, v in val.items()}
        rows = _rows(batch)
        for k, v in metrics(net, batch).items():
            sums[k] = sums.get(k, 0.0) + float(v) * rows
    return {k: v / n for k, v in sums.items()}


def _data_parallel(net: nn.Module, dev: torch.device, world: int) -> nn.Module:
    """The module the training steps call: ``net`` itself, or wrapped in DDP under torch.distributed."""
    if world <= 1:
        return net
    on_gpu = dev.type == "cuda" and dev.index is not None
    return DistributedDataParallel(net, device_ids=[dev.index] if on_gpu else None)
