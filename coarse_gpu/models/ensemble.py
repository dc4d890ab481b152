"""Batched ensemble training: many fits of one network architecture trained as one module.

A cross-fitted neural model is n_folds x n_seeds (x n_ensemble) networks of the same architecture,
each on its own rows. ``fit_batched(models, data)`` trains all of them at once: the members'
parameters are stacked along a leading member axis (``torch.func.stack_module_state``), a step runs
the model's own loss through ``torch.func.functional_call`` under ``torch.func.vmap`` over that axis,
one ``autograd.grad`` gives every member its gradient (the members' losses share no parameter, so
the gradient of their sum is each member's own), and one batched AdamW step updates every member.

What each member sees is exactly what the sequential ``Trainer`` would show it:

* its own training rows only (its fold's complement minus its validation split), drawn as its own
  index batches: every epoch it draws ``randperm(n_rows, generator=its generator)`` as the
  sequential trainer does, so member m's batch at step s is the same rows, in the same order, as
  in a sequential fit. A shared batch with a per-member mask would give each member a different
  number of rows per step (a different gradient scale) and spend arithmetic on masked rows; per-member
  index batches cost nothing extra. A step where members' batches differ in length (the last batch
  of an epoch, folds a few rows apart) runs one vmap per length.
* its own validation loss (its own validation rows, the model's metrics), early stopping (a stopped
  member leaves the batch: no more arithmetic, no optimizer update, its best weights kept),
  ReduceLROnPlateau schedule (torch's scheduler, one per member), EMA of its weights and history.

The data go to the device once: each member's training tensors are stacked (zero-padded to the
largest member) into one (M, N_max, ...) tensor per column; a step gathers its rows by index.

Why torch.func and not hand-written batched layers. Both were timed on the 2-core CPU (contended by
other processes) for 5 TARNet members of the default size (p=20, H=128, conditioned head, 15 arms,
batch 512): one training step of all 5 members took 28.4 ms with vmap and 29.5 ms with a
``torch.baddbmm`` MLP on 1 thread (19.4 vs 18.6 ms on 2 threads), against 29.3 ms for the 5 networks
stepped one after another on 1 thread. At this size a step is arithmetic-bound (about 45 GFLOP/s
on one core), so how the matmuls are batched does not matter; vmap runs every network class
(TARNet, DragonNet, the dose networks) and the models' own loss functions unchanged, so it was kept.
What batching buys on a CPU is no per-call overhead, no worker start-up and no copies of the data
to workers: 1.76x for 5 folds x 3 epochs at 50,000 rows, 1.5x for 1 epoch at 1,000,000 rows (with
half the memory), parity for a full-length run at 50,000 rows, where both do the same arithmetic
on the same cores; on a GPU it fills the device with every member at once (not yet measured).
bf16 autocast and torch.compile were measured too (off by default). Numbers, commands and the
contention they were measured under: docs/models.md "Batched training".

Checkpoints: a batch writes one file per epoch, ``Batch<M>-<fingerprint of its members' own
checkpoint names>.pt`` next to where the members' files would be, holding every member's weights,
optimizer and schedule state, early-stopping state, history and generator; re-running the same fit
resumes from it (on a CPU ending with the same models as an uninterrupted run). A run killed while
training sequentially does not resume batched, nor the other way round: it starts over.

Not batched (trained one by one by the sequential ``Trainer``, as before): float16 AMP (its
GradScaler is one per optimizer), fits inside a torch.distributed process group, and any run whose
architecture or hyperparameters no other run shares. ``Trainer`` hands its runs here through ``coarse_gpu.models.trainer.training_hook``, so the
models themselves (their data preparation, splits, scaling, post-processing) are untouched: each
model's ``fit`` runs in a thread of its own, and its ``Trainer.fit`` call waits while the calling
thread trains every waiting run in one batch (``fit_batched``).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.optim import adamw

from coarse_gpu.models.base import PerArmCATEModel
from coarse_gpu.models.checkpoint import fingerprint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from coarse_gpu.models.networks import ArmHeads, no_decay_parameters
from coarse_gpu.models.parallel import one_thread
from coarse_gpu.models.trainer import EVAL_BATCH, Trainer, TrainResult, distributed, training_hook
from coarse_gpu.utils.device import resolve_device, usable_cpus

__all__ = ["BatchedTrainer", "TrainJob", "batchable", "fit_batched", "train_jobs"]

Data = dict[str, torch.Tensor]
log = logging.getLogger("coarse_gpu")

#: AdamW constants of torch.optim.AdamW's defaults, which the sequential Trainer uses.
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8
#: Model parameters that do not change what a run learns (left out of the grouping key).
_FREE_PARAMS = ("seed", "verbose", "n_ensemble")


@dataclass
class TrainJob:
    """One ``Trainer.fit`` call, recorded: the trainer's settings and the arguments of the run."""

    trainer: Trainer
    net: nn.Module
    loss: Callable
    metrics: Callable
    train: Data
    val: Data
    generator: torch.Generator
    history: list
    n_train: int = 0


def _rows(data: Data) -> int:
    return next(iter(data.values())).shape[0]


def _group_key(job: TrainJob) -> tuple:
    """What runs must share to be trained in one batch: model class and hyperparameters (but the seed),
    trainer settings, parameter and data shapes. A run that cannot be batched gets a key of its own."""
    t = job.trainer
    amp = t._amp_dtype()
    if amp == torch.float16 or distributed()[1] > 1:
        return ("alone", id(job))
    model = getattr(job.loss, "__self__", None)
    params = {} if model is None or not hasattr(model, "get_params") else model.get_params()
    hyper = repr(sorted((k, v) for k, v in params.items() if k not in _FREE_PARAMS))
    settings = (t.lr, t.weight_decay, t.batch_size, t.max_epochs, t.patience, t.lr_patience, t.min_delta, t.ema,
                str(amp), str(t.device), None if t.checkpoint is None else str(Path(t.checkpoint).parent))
    arch = tuple((n, tuple(p.shape), p.dtype) for n, p in job.net.named_parameters())
    # buffers (arm coordinates, spline knots) are shared by the batch, so their values are part of the key
    arch += tuple((n, b.dtype, b.detach().cpu().numpy().tobytes()) for n, b in job.net.named_buffers())
    cols = tuple((k, tuple(v.shape[1:]), v.dtype) for k, v in sorted(job.train.items()))
    func = getattr(job.loss, "__func__", job.loss)
    return (type(model), func, hyper, settings, type(job.net), arch, cols, tuple(sorted(job.val)), _rows(job.val) > 0)


class _BatchedAdamW:
    """AdamW on stacked parameters (M, ...) with a learning rate and a step count per member and an
    update of the given members only, through torch's own AdamW kernel (``torch.optim.adamw.adamw``,
    the functional form of ``torch.optim.AdamW``, fused where the device has the fused kernel). A
    ``torch.optim.AdamW`` over the stacked tensors would have one lr for all members and move stopped
    members (weight decay, momentum); here members that share (lr, step) are updated in one call,
    on the whole stacked tensors when that is every member, else on per-member views.
    Defaults of torch.optim.AdamW (betas 0.9 / 0.999, eps 1e-8), as the sequential Trainer."""

    def __init__(self, params: dict[str, torch.Tensor], weight_decay: dict[str, float]) -> None:
        self.params = params
        self.wd = weight_decay
        first = next(iter(params.values()))
        self.exp_avg = {k: torch.zeros_like(p) for k, p in params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(p) for k, p in params.items()}
        self.steps = [0] * first.shape[0]
        self.fused = first.device.type in ("cpu", "cuda") and first.dtype == torch.float32

    @torch.no_grad()
    def step(self, grads: dict[str, Optional[torch.Tensor]], members: list[int], lr: list[float]) -> None:
        """Update ``members`` with ``grads`` (M, ...) per parameter (None: not touched, as torch); lr (M,)."""
        groups: dict[tuple, list[int]] = {}
        for m in members:
            groups.setdefault((lr[m], self.steps[m]), []).append(m)
        everyone = len(members) == len(self.steps)
        for (rate, step), ms in groups.items():
            for wd in sorted(set(self.wd.values())):
                keys = [k for k, g in grads.items() if g is not None and self.wd[k] == wd]
                if not keys:
                    continue
                pick = ((lambda t: [t]) if everyone and len(groups) == 1 else (lambda t, ms=ms: [t[m] for m in ms]))
                ps = [v for k in keys for v in pick(self.params[k].detach())]
                dev = ps[0].device
                # contiguous: vmap's gradients may come in another memory layout than the parameters,
                # and the fused kernel walks parameter and gradient memory in step
                adamw.adamw(ps, [v for k in keys for v in pick(grads[k].contiguous())],
                            [v for k in keys for v in pick(self.exp_avg[k])],
                            [v for k in keys for v in pick(self.exp_avg_sq[k])], [],
                            [torch.tensor(float(step), device=dev) for _ in ps],  # incremented by adamw
                            foreach=None if self.fused else True, fused=self.fused or None, amsgrad=False,
                            beta1=_BETA1, beta2=_BETA2, lr=float(rate), weight_decay=wd, eps=_EPS, maximize=False)
        for m in members:
            self.steps[m] += 1


@dataclass
class _Member:
    """Early-stopping state of one member (as the sequential Trainer's ``_Loop``)."""

    n_rows: int
    n_batches: int
    scheduler: object
    best: float = math.inf
    best_state: Optional[dict] = None
    best_epoch: int = 0
    stale: int = 0
    alive: bool = True


def _batch_checkpoint(jobs: Sequence[TrainJob]) -> Optional[Path]:
    """``<folder>/Batch<M>-<fingerprint of the members' own checkpoint names>.pt``, or None without
    checkpoints: each member's name already fingerprints its hyperparameters and training data."""
    if jobs[0].trainer.checkpoint is None:
        return None
    names = [Path(j.trainer.checkpoint).name for j in jobs]
    return Path(jobs[0].trainer.checkpoint).parent / f"Batch{len(jobs)}-{fingerprint({'members': names}, [])}.pt"


class BatchedTrainer:
    """Trains ``jobs`` (runs of one architecture and one set of hyperparameters) as one batched module.

    jobs : the recorded runs (``TrainJob``), each with its own network initialization, data, generator.
    compile : wrap the batched loss in ``torch.compile``.
    autocast : dtype of autocast during training steps (None = the trainers' AMP setting, which is
        off on CPU); validation and the returned networks are float32 as in the sequential Trainer.
    ``run()`` returns one ``TrainResult`` per job, as ``Trainer.fit`` would have.
    """

    def __init__(self, jobs: Sequence[TrainJob], *, compile: bool = False, autocast: Optional[torch.dtype] = None):
        if not jobs:
            raise ValueError("BatchedTrainer: jobs is empty")
        keys = {_group_key(j) for j in jobs}
        if len(keys) > 1 or next(iter(keys))[0] == "alone" and len(jobs) > 1:
            raise ValueError("BatchedTrainer: the jobs do not share one architecture and set of hyperparameters")
        self.jobs = list(jobs)
        self.trainer = jobs[0].trainer
        self.compile = compile
        self.autocast = autocast if autocast is not None else self.trainer._amp_dtype()
        self.checkpoint = _batch_checkpoint(self.jobs)

    # -- set-up --------------------------------------------------------------------------------
    def _functional(self):
        """A parameter-less copy of the network (on the meta device) and the vmapped per-member loss."""
        base = copy.deepcopy(self.jobs[0].net).to("meta")
        for mod in base.modules():
            if isinstance(mod, ArmHeads):
                mod.dense_observed = True
        loss_fn = self.jobs[0].loss

        def member_loss(p: dict, b: dict, batch: Data) -> torch.Tensor:
            return loss_fn(lambda *args: functional_call(base, (p, b), args), batch)

        vloss = vmap(member_loss, in_dims=(0, None, 0), randomness="different")
        return base, (torch.compile(vloss, dynamic=False) if self.compile else vloss)

    def _stack_data(self) -> Data:
        """(M, N_max, ...) per column: each member's training rows, zero-padded; the members' own
        tensors are released (the data live on the device once)."""
        n_max = max(_rows(j.train) for j in self.jobs)
        out = {}
        for k, v in self.jobs[0].train.items():
            stacked = torch.zeros((len(self.jobs), n_max) + tuple(v.shape[1:]), dtype=v.dtype, device=v.device)
            for m, j in enumerate(self.jobs):
                stacked[m, : _rows(j.train)] = j.train[k]
            out[k] = stacked
        for j in self.jobs:
            j.train = {}
        return out

    def _members(self, n_rows: list[int]) -> list[_Member]:
        t = self.trainer
        out = []
        for n in n_rows:
            _, _, batch, n_batches = t._batch_plan(n, 0, 1)
            # torch's ReduceLROnPlateau, one per member, on a stand-in optimizer holding that member's lr
            dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=t.lr)
            out.append(_Member(n_rows=n, n_batches=n_batches, scheduler=t._scheduler(dummy)))
        return out

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> list[TrainResult]:
        t, jobs = self.trainer, self.jobs
        self.base, self.vloss = self._functional()
        params, _ = stack_module_state([j.net for j in jobs])
        buffers = {k: b.detach() for k, b in jobs[0].net.named_buffers()}  # equal in every member (group key)
        _, no_decay = no_decay_parameters(jobs[0].net)
        no_decay_ids = {id(p) for p in no_decay}
        wd = {n: (0.0 if id(p) in no_decay_ids else float(t.weight_decay)) for n, p in jobs[0].net.named_parameters()}
        opt = _BatchedAdamW(params, wd)
        ema = float(t.ema)
        # EMA: validation, early stopping and the result use the averaged weights (as the Trainer)
        eval_params = {k: v.detach().clone() for k, v in params.items()} if ema > 0 else params
        has_val = _rows(jobs[0].val) > 0
        members = self._members([_rows(j.train) for j in jobs])
        data = self._stack_data()
        state = {"params": params, "eval_params": eval_params, "opt": opt, "members": members}
        start = self._resume(state) if self.checkpoint is not None else 1
        for epoch in range(start, int(t.max_epochs) + 1):
            alive = [m for m, s in enumerate(members) if s.alive]
            if not alive:
                break
            lr = [s.scheduler.optimizer.param_groups[0]["lr"] for s in members]
            losses = self._epoch(data, params, buffers, eval_params, opt, lr, members, alive, ema)
            for m in alive:
                self._end_epoch(m, members[m], epoch, float(losses[m]), float(lr[m]), eval_params, buffers, has_val)
            if self.checkpoint is not None:
                done = epoch == int(t.max_epochs) or not any(s.alive for s in members)
                self._save(state, epoch, done)
        self.steps_ = list(opt.steps)  # optimizer steps each member took (a stopped member takes none more)
        return [self._result(m, s, eval_params, buffers, has_val) for m, s in enumerate(members)]

    # -- checkpoints: one file per batch, every member's state in it -----------------------------
    def _save(self, state: dict, epoch: int, finished: bool) -> None:
        opt, members = state["opt"], state["members"]
        ema = state["eval_params"] is not state["params"]
        save_checkpoint(self.checkpoint, {
            "epoch": epoch, "finished": finished,
            "params": {k: v.detach() for k, v in state["params"].items()},
            "eval_params": {k: v.detach() for k, v in state["eval_params"].items()} if ema else None,
            "exp_avg": opt.exp_avg, "exp_avg_sq": opt.exp_avg_sq, "steps": list(opt.steps),
            "schedulers": [s.scheduler.state_dict() for s in members],
            "lrs": [s.scheduler.optimizer.param_groups[0]["lr"] for s in members],
            "members": [{"best": s.best, "best_state": s.best_state, "best_epoch": s.best_epoch, "stale": s.stale,
                         "alive": s.alive} for s in members],
            "histories": [j.history for j in self.jobs],
            "rng": [rng_state(j.generator, self.trainer.device) for j in self.jobs],
        })

    @torch.no_grad()
    def _resume(self, state: dict) -> int:
        """Load this batch's checkpoint into ``state`` and the jobs; the epoch to start at (1: none;
        past max_epochs: the batch had finished)."""
        dev = self.trainer.device
        saved = load_checkpoint(self.checkpoint, map_location=dev)
        params = state["params"]
        if saved is None:
            return 1
        if {k: tuple(v.shape) for k, v in saved["params"].items()} != {k: tuple(v.shape) for k, v in params.items()}:
            log.warning("batched checkpoint %s holds other layers; training starts from epoch 1", self.checkpoint)
            return 1
        for k, v in params.items():
            v.copy_(saved["params"][k])
            if saved["eval_params"] is not None:
                state["eval_params"][k].copy_(saved["eval_params"][k])
            state["opt"].exp_avg[k].copy_(saved["exp_avg"][k])
            state["opt"].exp_avg_sq[k].copy_(saved["exp_avg_sq"][k])
        state["opt"].steps = [int(v) for v in saved["steps"]]
        for s, sched, lr, loop in zip(state["members"], saved["schedulers"], saved["lrs"], saved["members"]):
            s.scheduler.load_state_dict(sched)
            s.scheduler.optimizer.param_groups[0]["lr"] = float(lr)
            s.best, s.best_state, s.best_epoch = float(loop["best"]), loop["best_state"], int(loop["best_epoch"])
            s.stale, s.alive = int(loop["stale"]), bool(loop["alive"])
        for j, hist, rng in zip(self.jobs, saved["histories"], saved["rng"]):
            j.history[:] = list(hist)
            set_rng_state(rng, j.generator, dev)
        log.info("%s: batched run of %d resumed from checkpoint %s (epoch %d%s)", self.trainer.name, len(self.jobs),
                 self.checkpoint, saved["epoch"], ", training had finished" if saved["finished"] else "")
        return int(self.trainer.max_epochs) + 1 if saved["finished"] else int(saved["epoch"]) + 1

    def _epoch(self, data, params, buffers, eval_params, opt, lr, members, alive, ema) -> torch.Tensor:
        """One pass over every alive member's batches; (M,) each member's mean training loss."""
        t = self.trainer
        dev, bs = t.device, int(t.batch_size)
        perms = torch.zeros((len(members), next(iter(data.values())).shape[1]), dtype=torch.long)
        for m in alive:  # each member's own permutation from its own generator, as the Trainer draws it
            perms[m, : members[m].n_rows] = torch.randperm(members[m].n_rows, generator=self.jobs[m].generator)
        perms = perms.to(dev)
        total = torch.zeros(len(members), device=dev)
        autocast = (contextlib.nullcontext() if self.autocast is None
                    else torch.autocast(device_type=dev.type, dtype=self.autocast))
        names = list(params)
        self.base.train()
        for s in range(max(members[m].n_batches for m in alive)):
            groups: dict[int, list[int]] = {}  # batch length -> members (lengths differ in an epoch's last batch)
            for m in alive:
                if s < members[m].n_batches:
                    groups.setdefault(min(bs, members[m].n_rows - s * bs), []).append(m)
            step_loss = 0.0
            for length, ms in groups.items():
                ids = torch.tensor(ms, device=dev)
                every = len(ms) == len(members)
                rows = perms[ids, s * bs: s * bs + length]
                batch = {k: v[ids[:, None], rows] for k, v in data.items()}
                p = params if every else {k: v.index_select(0, ids) for k, v in params.items()}
                with autocast:
                    member_losses = self.vloss(p, buffers, batch)
                step_loss = step_loss + member_losses.sum()
                total.index_add_(0, ids, member_losses.detach().float())
            grads = torch.autograd.grad(step_loss, [params[k] for k in names], allow_unused=True)
            active = sorted(m for ms in groups.values() for m in ms)
            opt.step(dict(zip(names, grads)), active, lr)
            ids = None if len(active) == len(members) else torch.tensor(active, device=dev)
            if ema > 0:
                with torch.no_grad():
                    for k in names:
                        if ids is None:
                            eval_params[k].lerp_(params[k].detach(), 1.0 - ema)
                        else:
                            e = eval_params[k].index_select(0, ids).lerp_(params[k].detach().index_select(0, ids), 1.0 - ema)
                            eval_params[k].index_copy_(0, ids, e)
        return (total / torch.tensor([max(1, s.n_batches) for s in members], device=dev)).cpu()

    @torch.no_grad()
    def _validate(self, m: int, eval_params: dict, buffers: dict) -> dict[str, float]:
        """Row-weighted means of the model's metrics over member m's validation rows (float32)."""
        job = self.jobs[m]
        p = {k: v[m] for k, v in eval_params.items()}
        self.base.eval()
        net = lambda *args: functional_call(self.base, (p, buffers), args)  # noqa: E731
        sums: dict[str, float] = {}
        n = _rows(job.val)
        for s in range(0, n, EVAL_BATCH):
            batch = {k: v[s: s + EVAL_BATCH] for k, v in job.val.items()}
            for k, v in job.metrics(net, batch).items():
                sums[k] = sums.get(k, 0.0) + float(v) * _rows(batch)
        self.base.train()
        return {k: v / n for k, v in sums.items()}

    def _end_epoch(self, m: int, st: _Member, epoch: int, train_loss: float, lr: float, eval_params: dict,
                   buffers: dict, has_val: bool) -> None:
        """Member m's history record, early stopping and LR schedule (the Trainer's rules)."""
        t = self.trainer
        rec = {"epoch": epoch, "train_loss": train_loss, "lr": lr}
        if has_val:
            rec.update(self._validate(m, eval_params, buffers))
            criterion = rec["val_loss"]
        else:
            criterion, rec["val_loss"] = train_loss, float("nan")
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"{t.name} (batched member {m}): training loss became {train_loss} at epoch "
                                     f"{epoch}; lower lr")
        self.jobs[m].history.append(rec)
        if not math.isfinite(st.best) or criterion < st.best - t.min_delta * abs(st.best):
            st.best, st.best_epoch, st.stale = criterion, epoch, 0
            st.best_state = self._state(m, eval_params, buffers)
        else:
            st.stale += 1
        if has_val:
            st.scheduler.step(criterion)
            st.alive = st.stale < int(t.patience)

    @staticmethod
    def _state(m: int, params: dict, buffers: dict) -> dict:
        state = {k: v[m].detach().clone() for k, v in params.items()}
        state.update({k: v.clone() for k, v in buffers.items()})
        return state

    def _result(self, m: int, st: _Member, eval_params: dict, buffers: dict, has_val: bool) -> TrainResult:
        """Member m's network with its best validated weights (the last ones without validation rows)."""
        job = self.jobs[m]
        net = job.net
        if has_val and st.best_state is not None:
            state, best_epoch = st.best_state, st.best_epoch
        else:
            state, best_epoch = self._state(m, eval_params, buffers), len(job.history)
        net.load_state_dict(state)
        net.eval()
        return TrainResult(net=net, history=job.history, best_epoch=int(best_epoch),
                           best_val_loss=float(st.best) if has_val else float("nan"))


def _chunks(items: list, n: int) -> list[list]:
    """``items`` in ``n`` contiguous chunks of sizes differing by at most one."""
    q, r = divmod(len(items), n)
    out, start = [], 0
    for c in range(n):
        out.append(items[start: start + q + (c < r)])
        start += q + (c < r)
    return out


def train_jobs(jobs: Sequence[TrainJob], *, compile: bool = False, autocast: Optional[torch.dtype] = None,
               n_threads: int = 1) -> list[TrainResult]:
    """Train every recorded run: runs that share a group key together (``BatchedTrainer``), a run
    alone through its own ``Trainer``. Returns the ``TrainResult``s in the order of ``jobs``.

    n_threads : on a CPU, a group's members are split into this many batched modules, each trained
        in its own thread with one intra-op thread (as one-thread worker processes, without their
        start-up): on a shared CPU, two intra-op threads in one module wait on each other whenever
        another process holds a core (module docstring). On a GPU one module holds every member.
    """
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(_group_key(job), []).append(i)
    results: list[Optional[TrainResult]] = [None] * len(jobs)
    for idx in groups.values():
        if len(idx) == 1:
            j = jobs[idx[0]]
            results[idx[0]] = j.trainer.fit(j.net, j.loss, j.metrics, j.train, j.val, j.generator, history=j.history)
            continue
        on_cpu = jobs[idx[0]].trainer.device.type == "cpu"
        chunks = _chunks(idx, max(1, min(n_threads if on_cpu else 1, len(idx))))
        def run(chunk: list[int]) -> list[TrainResult]:
            if len(chunk) == 1:  # a batch of one is the sequential Trainer's run (and its checkpoint file)
                j = jobs[chunk[0]]
                return [j.trainer.fit(j.net, j.loss, j.metrics, j.train, j.val, j.generator, history=j.history)]
            return BatchedTrainer([jobs[i] for i in chunk], compile=compile, autocast=autocast).run()

        if len(chunks) == 1:
            outs = [run(chunks[0])]
        else:
            with ThreadPoolExecutor(len(chunks)) as pool:
                outs = list(pool.map(run, chunks))
        for chunk, out in zip(chunks, outs):
            for i, r in zip(chunk, out):
                results[i] = r
    return results


def batchable(models: Sequence) -> bool:
    """Whether ``fit_batched`` can train these unfitted models together: network models
    (``PerArmCATEModel``) of one class, outside torch.distributed, at least two networks in all
    (several models, or one ensemble)."""
    if not models or distributed()[1] > 1:
        return False
    if not all(isinstance(m, PerArmCATEModel) and type(m) is type(models[0]) for m in models):
        return False
    return len(models) > 1 or models[0].n_ensemble not in (1, "auto")


class _Rendezvous:
    """Model fits running in threads hand their training runs (``Trainer.fit`` calls) to the driver and
    wait; the driver trains every waiting run in one round as soon as no fit is still preparing."""

    def __init__(self, n_fits: int) -> None:
        self.cv = threading.Condition()
        self.pending: list[tuple[int, TrainJob, dict]] = []
        self.preparing = n_fits  # fits neither waiting for a round nor finished
        self.index: dict[int, int] = {}  # thread id -> the fit's position in ``models``

    def hook(self, trainer, net, loss, metrics, train, val, generator, history) -> TrainResult:
        """The training hook of a fit's thread: queue the run, wait for its result."""
        box: dict = {}
        with self.cv:
            self.pending.append((self.index.get(threading.get_ident(), len(self.index)),
                                 TrainJob(trainer, net, loss, metrics, train, val, generator, history, _rows(train)),
                                 box))
            self.preparing -= 1
            self.cv.notify_all()
            self.cv.wait_for(lambda: "result" in box)
        if isinstance(box["result"], BaseException):
            raise RuntimeError("the batched training run failed (see the error above)") from box["result"]
        return box["result"]

    def finished(self) -> None:
        with self.cv:
            self.preparing -= 1
            self.cv.notify_all()

    def rounds(self):
        """Yield the queued runs each time every live fit waits on one; stop when all fits finished."""
        while True:
            with self.cv:
                self.cv.wait_for(lambda: self.preparing == 0)
                if not self.pending:
                    return
                # in the models' order, not the threads' arrival order: the batch's members, its
                # checkpoint's name and what it restores must not depend on which thread came first
                batch = [(job, box) for _, job, box in sorted(self.pending, key=lambda e: e[0])]
                self.pending = []
                self.preparing += len(batch)  # they resume once their results are delivered
            yield batch

    def deliver(self, batch: list, results: list) -> None:
        with self.cv:
            for (_, box), res in zip(batch, results):
                box["result"] = res
            self.cv.notify_all()


def fit_batched(models: Sequence, data: Sequence[tuple], *, compile: bool = False,
                autocast: Optional[torch.dtype] = None) -> list:
    """Fit ``models[i]`` on ``data[i] = (X, T, y, propensity or None)`` with the network training runs
    of all of them in batches (module docstring); returns the fitted models.

    Each model's own ``fit`` runs in a thread of its own (data preparation, splits, scaling and the
    post-processing are the model's, untouched); its ``Trainer.fit`` call waits while this thread
    trains every waiting run together. A model that is itself an ensemble trains its members one after
    another, so its k-th members are batched with the other models' k-th members (one round each).
    The models come out as if each had been fitted alone, up to float rounding of the batched
    arithmetic (with dropout > 0 the dropout masks differ). ``fit_time_s_`` includes the wait.
    """
    cpu = all(resolve_device(getattr(m, "device", "cpu")).type == "cpu" for m in models)
    rv = _Rendezvous(len(models))
    out: list = [None] * len(models)
    errors: list = []

    def fit(i: int) -> None:
        X, T, y, p = data[i]
        rv.index[threading.get_ident()] = i
        try:
            with training_hook(rv.hook):  # set in the thread: a new thread starts with an empty context
                out[i] = models[i].fit(X, T, y, propensity=p)
        except BaseException as err:  # noqa: BLE001 -- re-raised by the driver below
            errors.append(err)
        finally:
            rv.finished()

    # fork_rng: the fits' own forked RNG states interleave across threads; the caller's is restored
    with torch.random.fork_rng(devices=[]), (one_thread() if cpu else contextlib.nullcontext()):
        torch.manual_seed(int(getattr(models[0], "seed", 0)))  # dropout masks of the batched runs
        # daemon: a fit left waiting when the driver is interrupted (Ctrl-C) must not keep the process alive
        threads = [threading.Thread(target=fit, args=(i,), name=f"fit_batched-{i}", daemon=True)
                   for i in range(len(models))]
        for t in threads:
            t.start()
        for batch in rv.rounds():
            try:
                results = train_jobs([job for job, _ in batch], compile=compile, autocast=autocast,
                                     n_threads=usable_cpus() if cpu else 1)
            except BaseException as err:  # noqa: BLE001 -- every waiting fit fails with it, then it is raised
                errors.append(err)
                results = [err] * len(batch)
            rv.deliver(batch, results)
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return out
