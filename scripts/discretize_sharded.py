"""Sharded discretize with torchrun: every rank holds its own customers of one problem.

    torchrun --standalone --nproc_per_node=2 scripts/discretize_sharded.py
    torchrun --standalone --nproc_per_node=2 scripts/discretize_sharded.py --n-customers 1000000 \
        --n-candidates 256 --check
    torchrun --standalone --nproc_per_node=4 scripts/discretize_sharded.py --n-customers 100000000 \
        --n-candidates 1024   # 4 GPUs

One process per GPU (NCCL) when CUDA is available, CPU processes with gloo otherwise (``--device cpu``
forces gloo). Each rank builds only its rows of the benchmark instance (``bench_discretize.make_instance``
structure: profits at 36 arms per customer, candidates an M-point grid, Pi = V W^T as a FactoredProfit;
rank r draws its customers (types and all) from seed (seed, r); the whole problem is their concatenation in rank
order) and calls ``discretize(..., distributed=True)``. Rank 0 prints the global objective, the
treatments and the wall time of the solve. ``--check`` also gathers all rows onto rank 0 and solves
them in one process, printing the relative gap (lloyd: the same treatments and assignment; sinkhorn:
within 0.01 %).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_discretize import make_instance  # noqa: E402

from coarse_gpu.discretize import FactoredProfit, discretize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-customers", type=int, default=200_000, help="customers in all (split evenly over the ranks)")
    ap.add_argument("--n-candidates", type=int, default=256, 
                    help="candidates M (a perfect square: a sqrt(M) x sqrt(M) grid)")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--solver", choices=["sinkhorn", "lloyd"], default="sinkhorn")
    ap.add_argument("--device", choices=["auto", "cpu"], default="auto", help="cpu forces gloo on CPU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (0 = torch default)")
    ap.add_argument("--check", action="store_true", help="also solve all rows in one process on rank 0")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    use_cuda = torch.cuda.is_available() and args.device != "cpu"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))  # collectives run on this GPU
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=600))
    rank, world = dist.get_rank(), dist.get_world_size()
    device = f"cuda:{torch.cuda.current_device()}" if use_cuda else "cpu"

    n_local = args.n_customers // world + (1 if rank < args.n_customers % world else 0)
    V, W, cand, _ = make_instance(n_local, args.n_candidates, seed=[args.seed, rank] if world > 1 else args.seed)
    dist.barrier()
    t0 = time.perf_counter()
    res = discretize(FactoredProfit(V, W), args.k, candidates=cand, device=device, seed=args.seed,
                     solver=args.solver, distributed=True)
    wall = time.perf_counter() - t0
    walls = [None] * world
    dist.all_gather_object(walls, wall)
    report = {"world_size": world, "backend": dist.get_backend(), "device": device, "n": res.info["n_customers"],
              "m": args.n_candidates, "k": args.k, "solver": args.solver, "objective": res.objective,
              "treatments": res.treatments.tolist(), "shares": res.shares.round(4).tolist(),
              "wall_s_max_over_ranks": max(walls), "phase_s_rank0": res.info.get("phase_s")}
    if args.check:
        parts = [None] * world
        dist.gather_object((V, res.assignment), parts if rank == 0 else None, dst=0)
        if rank == 0:
            V_all = np.concatenate([p[0] for p in parts])
            t1 = time.perf_counter()
            ref = discretize(FactoredProfit(V_all, W), args.k, candidates=cand, device=device, seed=args.seed,
                             solver=args.solver)
            report.update(single_objective=ref.objective, single_wall_s=time.perf_counter() - t1,
                          rel_gap=(ref.objective - res.objective) / abs(ref.objective),
                          same_treatments=bool(np.array_equal(ref.candidate_index, res.candidate_index)),
                          same_assignment=bool(np.array_equal(ref.assignment,
                                                              np.concatenate([p[1] for p in parts]))))
    if rank == 0:
        print(json.dumps(report, indent=2), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
