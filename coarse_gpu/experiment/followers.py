"""Ranks > 0 of a distributed main job, and the sharded OT solves rank 0 asks them for.

Rank 0 runs ``run_experiment``; its OT discretizer calls (``methods._discretize``) go to
``sharded_discretize``, which asks the other ranks to solve with it. Ranks > 0 run ``follow``: the
steps of run_experiment that hold collectives (the data, then the model's training, which is DDP),
then ``Link.serve``: every solve rank 0 asks for, until it says stop.

The protocol of one solve (what rank 0 sends, what each rank solves) is coarse_gpu.experiment.link's.
"""
from __future__ import annotations

from pathlib import Path

from coarse_gpu.experiment.distributed import NO_LAUNCHER, DistributedSetupError, Job, current_job
from coarse_gpu.experiment.errors import JobExit
from coarse_gpu.experiment.link import CHUNK_BYTES, Link, row_offsets  # noqa: F401  (their old home: kept importable)
from coarse_gpu.experiment.loading import prepare_data
from coarse_gpu.experiment.personalize import personalize
from coarse_gpu.experiment.validate import validate_config
from coarse_gpu.utils import resolve_device, seed_everything


def sharded_discretize(profit, k: int, candidates=None, device="auto", **options):
    """``discretize(profit, k, ...)`` of the distributed job's rank 0, solved with all ranks (module
    docstring): profit (N, M) numpy; returns the Discretization with all N customers' assignment."""
    job = current_job()
    if job is None:
        raise DistributedSetupError("distributed=true: the OT discretizer runs sharded over the ranks of a job "
                                    "started by coarse_gpu.experiment.distributed.distributed_job; " + NO_LAUNCHER)
    if not job.is_main:
        raise RuntimeError("sharded_discretize is rank 0's: ranks > 0 solve in Link.serve")
    return job.link.solve(profit, int(k), candidates, device, options)


def follow(cfg, job: Job) -> None:
    """Ranks > 0 of the main job: rank 0's run folder, the data, the model's training (the fits' DDP
    collectives), then the OT solves rank 0 asks for. Writes nothing."""
    job.quiet_follower()
    folder = job.share_folder()
    job.drop_own_folder()
    if folder["error"]:
        raise JobExit(f"rank {job.rank}: rank 0 did not start the job: {folder['error']}")
    validate_config(cfg)
    seed = int(cfg.seed)
    seed_everything(seed)
    device = resolve_device(cfg.device)
    d_k = cfg.discretizer.k
    k_values = [int(d_k)] if d_k is not None else [int(k) for k in cfg.evaluation.k_values]
    data, train, scored, candidates = prepare_data(cfg, seed, k_values, {})
    del data
    # run_experiment's own call (pipeline.py), from the same run folder: a resumed training resumes here too
    _, est, _ = personalize(cfg.model, train, scored, train is scored, device, seed, False,
                            checkpoint_dir=Path(folder["out_dir"]) / "checkpoints")
    job.link.serve(candidates, device, est.oracle)


__all__ = ["CHUNK_BYTES", "Link", "follow", "row_offsets", "sharded_discretize"]
