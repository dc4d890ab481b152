"""The main job on several processes: ``distributed=true`` under torchrun or a submitit launcher.

    torchrun --standalone --nproc_per_node=4 -m coarse_gpu.cli distributed=true hydra.run.dir=outputs/ddp
    coarse-gpu -m launcher=slurm launcher.nodes=2 launcher.tasks_per_node=4 launcher.gpus_per_node=4 \\
        distributed=true

Every rank (process) builds the same data (the simulator and the splits are seeded) and trains the
same model: ``fit`` sees the process group and trains with DistributedDataParallel, so every rank
ends with identical weights (coarse_gpu.models.distributed). The OT discretizer then runs sharded
(coarse_gpu.discretize.distributed): rank r solves on its contiguous block of the scored customers'
profit rows, every rank gets the same K treatments, and the assignments are gathered to rank 0
(coarse_gpu.experiment.followers). Rank 0 alone runs everything else (baselines, evaluation, the
report) and alone writes the run folder; ranks > 0 write nothing.

This module is the process group's side of it: where the ranks come from (``launch_env``: torchrun's
RANK / WORLD_SIZE / LOCAL_RANK, or a submitit task's job environment, SLURM or local), the config
rules of a distributed run (``config_problems``), the ``Job`` (init, the run-folder handshake,
teardown) and what results.json records (``results_record``).

Why the run folder is handed from rank 0 to the others (``Job.share_folder``): every rank reads
training checkpoints from it, so a resumed run resumes on every rank (a rank that started over would
wait in another collective than the others), and under torchrun each rank composes its own
``${now:...}`` folder name, which may differ by a second between ranks.

Why the timeout is long (``TIMEOUT_S``): ranks > 0 wait in the next collective while rank 0 works
alone (the simulator checks before training, the baselines and the evaluation between two K);
that is seconds to minutes at 10^6 customers, never a fault.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

log = logging.getLogger("coarse_gpu")

#: Collective timeout: ranks > 0 may wait this long for rank 0's single-process steps (docstring).
TIMEOUT_S = 2 * 3600.0
#: discretizer keys the sharded solve refuses, with why and the fix (config_problems).
_REFUSED = (
    ("discretizer.min_share", "share bounds couple all customers in one capacitated assignment", "null"),
    ("discretizer.max_share", "share bounds couple all customers in one capacitated assignment", "null"),
    ("discretizer.budget", "side constraints couple all customers in one LP", "null"),
    ("discretizer.group_parity.column", "side constraints couple all customers in one LP", "null"),
)

_JOB: Optional["Job"] = None  # the job this process is a rank of (current_job)


class DistributedSetupError(ValueError):
    """distributed=true without a launcher that describes the process group, or the reverse."""


def _get(tree: dict, key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def config_problems(tree: dict) -> list[str]:
    """What a distributed run cannot do (each sentence names its key and the fix), and a multi-task
    SLURM launcher without ``distributed=true``; ``tree`` is the resolved config as a plain dict."""
    tasks = (_get(tree, "launcher.nodes") or 1) * (_get(tree, "launcher.tasks_per_node") or 1)
    if not tree.get("distributed", False):
        if isinstance(tasks, int) and tasks > 1:
            return [f"launcher.nodes x launcher.tasks_per_node = {tasks} tasks run one job together only with "
                    "distributed=true; add distributed=true (or use launcher.tasks_per_node=1 launcher.nodes=1)"]
        return []
    out = []
    solver = _get(tree, "discretizer.solver")
    from coarse_gpu.discretize.spec import SOLVER_TABLE  # what each solver takes (this module stays torch-free)

    if solver in SOLVER_TABLE and not SOLVER_TABLE[solver].distributed:
        out.append(f"discretizer.solver={solver} is not supported with distributed=true (it needs the whole N x M "
                   "profit table in one process); use discretizer=lloyd or discretizer=sinkhorn")
    for key, why, fix in _REFUSED:
        if _get(tree, key) is not None:
            out.append(f"{key}={_get(tree, key)!r} is not supported with distributed=true ({why}); set {key}={fix}")
    dev = str(tree.get("device", "auto"))
    own = _JOB is not None and dev == _JOB.device  # the device Job.job_config gave this rank
    if dev.startswith("cuda:") and not own:
        out.append(f"device={dev!r} with distributed=true: every rank uses cuda:<its LOCAL_RANK>; use device=auto "
                   "(or cuda, or cpu)")
    return out


def launch_env() -> Optional[dict]:
    """This process's place in a process group, from its launcher, or None outside any.

    Returns {"rank", "world_size", "local_rank", "launcher", "env"}: ``env`` holds the variables
    ``init_process_group``'s env:// method needs that the launcher did not set (a submitit task:
    MASTER_ADDR = the job's first node, 127.0.0.1 on one node; MASTER_PORT from the job id, the same
    on every task, as submitit's own TorchDistributedEnvironment picks it; RANK, WORLD_SIZE, LOCAL_RANK).
    """
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun (also `srun torchrun ...` on SLURM)
        return {"rank": int(env["RANK"]), "world_size": int(env["WORLD_SIZE"]),
                "local_rank": int(env.get("LOCAL_RANK", 0)), "launcher": "torchrun", "env": {}}
    if not env.get("SUBMITIT_EXECUTOR"):
        return None
    import submitit  # only inside a submitit task (launcher=slurm, hydra/launcher=submitit_local)

    job = submitit.JobEnvironment()
    addr = env.get("MASTER_ADDR") or ("127.0.0.1" if job.num_nodes == 1 else job.hostnames[0])
    port = env.get("MASTER_PORT") or str(random.Random(job.job_id).randint(20000, 60000))
    out = {"MASTER_ADDR": addr, "MASTER_PORT": port, "RANK": str(job.global_rank),
           "WORLD_SIZE": str(job.num_tasks), "LOCAL_RANK": str(job.local_rank)}
    return {"rank": job.global_rank, "world_size": job.num_tasks, "local_rank": job.local_rank,
            "launcher": f"submitit-{job.cluster}", "env": out}


NO_LAUNCHER = ("distributed=true needs one process per rank, started by torchrun (`torchrun --nproc_per_node=N -m "
               "coarse_gpu.cli distributed=true ...`) or by the SLURM launcher (`coarse-gpu -m launcher=slurm "
               "launcher.tasks_per_node=N distributed=true ...`); RANK and WORLD_SIZE are not set in this process")


@dataclass
class Job:
    """One rank of a distributed main job.

    device : this rank's device ("cpu" or "cuda:<local rank>"); own_dir : the run folder this rank's
    Hydra composed; folder : rank 0's {"run_dir", "out_dir"} once shared (``share_folder``).
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: str
    launcher: str
    own_dir: Optional[Path] = None
    folder: Optional[dict] = None
    link: Any = None  # the OT solves' protocol (coarse_gpu.experiment.link.Link)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def job_config(self, cfg):
        """``cfg`` for this rank: on CUDA the device is cuda:<local rank> (DDP needs the index)."""
        if not self.device.startswith("cuda"):
            return cfg
        from omegaconf import OmegaConf  # here: the config check imports this module, and stays light

        cfg = copy.deepcopy(cfg)
        OmegaConf.update(cfg, "device", self.device)
        return cfg

    def share_folder(self, plan=None, error: Optional[str] = None) -> dict:
        """Rank 0: send where the job writes (``plan``: the RunPlan) or why it did not start; ranks > 0:
        receive it. Returns {"run_dir", "out_dir", "error"} on every rank."""
        import torch.distributed as dist  # here: torch loads only in a distributed job (this module stays torch-free)

        msg = [{"run_dir": str(plan.run_dir), "out_dir": str(plan.out_dir), "error": None} if plan is not None
               else {"run_dir": None, "out_dir": None, "error": error}] if self.is_main else [None]
        dist.broadcast_object_list(msg, src=0)
        self.folder = msg[0]
        return self.folder

    def quiet_follower(self) -> None:
        """Ranks > 0 log only warnings, to the console: the run's cli.log is rank 0's."""
        log.setLevel(logging.WARNING)
        root = logging.getLogger()
        for h in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(h)
            h.close()

    def drop_own_folder(self) -> None:
        """Remove the folder this rank's Hydra made when it is not rank 0's and holds only empty logs
        (under torchrun a rank may compose another ``${now:...}`` second than rank 0)."""
        own, main = self.own_dir, (self.folder or {}).get("run_dir")
        if own is None or main is None or not own.is_dir() or own.resolve() == Path(main).resolve():
            return
        files = list(own.iterdir())
        if all(f.is_file() and f.suffix == ".log" and f.stat().st_size == 0 for f in files):
            shutil.rmtree(own, ignore_errors=True)

    def finish(self, err: Optional[BaseException]) -> None:
        """Rank 0, at the end of its job: tell the ranks serving its OT solves to stop. After a complete
        run they are all serving (training, their last step, is done); after an error only when a solve
        was asked for and none is half done, else they may be inside another collective, and the
        launcher ends them (torchrun does; srun with SLURM_KILL_BAD_EXIT=1, which launcher=slurm sets)."""
        if not self.is_main or not self.folder or self.folder.get("error"):
            return
        if err is None or (self.link.requests and not self.link.in_solve):
            self.link.stop(err)

    def record(self) -> dict:
        return {"world_size": self.world_size, "backend": self.backend, "launcher": self.launcher}


def current_job() -> Optional[Job]:
    """The distributed job this process is a rank of, or None."""
    return _JOB


def results_record(cfg) -> dict:
    """results.json's ``distributed`` block ({world_size, backend, launcher}) when ``cfg.distributed``,
    else {}. ValueError when distributed=true but this process is no rank of a started job."""
    if not cfg.get("distributed", False):
        return {}
    if _JOB is None:
        raise DistributedSetupError("distributed=true: run_experiment runs on rank 0 of a job started by "
                                    "coarse_gpu.experiment.distributed.distributed_job (`coarse-gpu` under torchrun "
                                    "does it); " + NO_LAUNCHER)
    return {"distributed": _JOB.record()}


def _start(cfg, own_dir: Optional[Path], in_process_sweep: bool) -> Optional[Job]:
    """Join the process group the launcher describes (module docstring); None when not distributed."""
    from coarse_gpu.models.distributed import (
        init_distributed,  # here: torch loads only in a distributed job (this module stays torch-free)
    )
    from coarse_gpu.utils import resolve_device  # here: coarse_gpu.utils loads torch

    where = launch_env()
    if not cfg.get("distributed", False):
        if where is not None and where["world_size"] > 1:
            raise DistributedSetupError(
                f"this process is rank {where['rank']} of {where['world_size']} ({where['launcher']}) but "
                f"distributed=false would run the whole job {where['world_size']} times into one run folder; "
                "add distributed=true")
        return None
    if where is None:
        raise DistributedSetupError(NO_LAUNCHER)
    if in_process_sweep:
        raise DistributedSetupError("distributed=true runs one job per process group: a sweep (-m) inside one "
                                    "torchrun is not supported; run one torchrun per job, or sweep with "
                                    "launcher=slurm (every job of the sweep is then its own SLURM job)")
    os.environ.update(where["env"])
    cpu = resolve_device(cfg.device).type == "cpu"
    device = init_distributed(backend="gloo" if cpu else None, timeout_s=TIMEOUT_S)
    import torch.distributed as dist  # here: torch loads only in a distributed job (this module stays torch-free)

    from coarse_gpu.experiment.link import Link  # here: the protocol loads torch, and this module stays torch-free

    job = Job(dist.get_rank(), dist.get_world_size(), where["local_rank"], dist.get_backend(), device,
              where["launcher"], own_dir=own_dir)
    job.link = Link(job)
    if job.is_main:
        log.info("distributed job: %d ranks (%s, %s backend)", job.world_size, job.launcher, job.backend)
    return job


def _meet_before_teardown(timeout_s: float = 60.0) -> None:
    """After a clean run, every rank waits for the others before the group is destroyed.

    Why: rank 0 used to destroy its group right after its last send (the stop message) while a rank
    > 0 could still be reading it; gloo then tore its pairs down under a transfer in flight, and rank 0
    died at exit with SIGABRT ("terminate called without an active exception") after complete results
    (1 run in ~8 of tests/test_distributed_job.py). Bounded, because a rank that failed alone never
    arrives: the others then warn and tear down anyway."""
    import torch.distributed as dist  # here: torch loads only in a distributed job (this module stays torch-free)

    try:
        dist.barrier(async_op=True).wait(timeout=datetime.timedelta(seconds=timeout_s))
    except RuntimeError as err:
        log.warning("distributed job: the ranks did not all reach the end within %.0f s (%s); tearing down",
                    timeout_s, (str(err).strip().splitlines() or [type(err).__name__])[0])


@contextlib.contextmanager
def distributed_job(cfg, own_dir: Optional[Path] = None, in_process_sweep: bool = False) -> Iterator[Optional[Job]]:
    """The job's process group around the block: yields None when ``cfg.distributed`` is false, else
    this rank's ``Job``. At the end rank 0 tells the ranks serving its solves to stop (with its error,
    where they can still hear it) and every rank destroys the process group, also on error."""
    global _JOB
    job = _start(cfg, own_dir, in_process_sweep)
    if job is None:
        yield None
        return
    import torch.distributed as dist  # here: torch loads only in a distributed job (this module stays torch-free)

    _JOB = job
    try:
        try:
            yield job
        except Exception as err:  # not KeyboardInterrupt: the launcher signals every rank itself
            job.finish(err)
            raise
        job.finish(None)
        _meet_before_teardown()
    finally:
        _JOB = None
        if dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["DistributedSetupError", "Job", "NO_LAUNCHER", "TIMEOUT_S", "config_problems", "current_job",
           "distributed_job", "launch_env", "results_record"]
