"""The OT solves' protocol between rank 0 of a distributed main job and the other ranks: ``Link``.

Rank 0's sharded solves (coarse_gpu.experiment.followers.sharded_discretize) and the other ranks' serving
loop (followers.follow) both talk through the Link that coarse_gpu.experiment.distributed gives each Job.

One solve, on every rank in this order:

1. rank 0 broadcasts the request: K, the discretize options (seed, ``init`` = the warm start rank 0
   computed on all rows, the solver options) and, when the profit matrix is new, its shape and dtype;
2. a new matrix: rank 0 sends rank r its contiguous block of rows offsets[r] .. offsets[r + 1] - 1
   (``row_offsets``), once per matrix (the same for every K), so the problem the ranks share is
   exactly rank 0's matrix, whatever float differences their own predictions would have had;
3. every rank calls ``discretize(block, K, distributed=True, ...)`` (coarse_gpu.discretize.distributed):
   the same treatments on every rank, each rank's assignment of its own rows;
4. ranks > 0 send their assignment to rank 0, which concatenates them in rank order: rank 0's
   ``Discretization`` is then the single-process one's, with all N customers.

With the off-grid refinement (``discretizer.refine``, the default) every rank scores its own rows
with its own copy of the model's profit oracle (the same weights: training was DDP), and the pattern
search moves the treatments on sums over all ranks.

Rank 0 decides everything the solve reads besides the rows; ranks > 0 bring only their candidates
(``shard_source`` checks them against rank 0's: the same data) and their device. Why requests rather
than ranks > 0 re-running the pipeline's K loop: they then follow whatever solves rank 0 makes, in
the order it makes them, without the N x M matrix or the warm starts.

A solve refused with a ValueError is refused on every rank (its checks see the same inputs and
``shard_source`` shares one rank's refusal with all), so ranks > 0 wait for the next request and rank
0's job fails as a single-process job would; any other error on a rank > 0 ends that process (and the
launcher the job).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
import torch.distributed as dist

from coarse_gpu.discretize import FactoredProfit, discretize
from coarse_gpu.experiment.errors import JobExit, one_line
from coarse_gpu.experiment.estimates import oracle_rows

if TYPE_CHECKING:  # annotations only: distributed.py builds the Link of each Job it starts
    from coarse_gpu.experiment.distributed import Job

#: Largest piece of a block in one message: bounds the device copy under NCCL (128 MiB).
CHUNK_BYTES = 1 << 27


def row_offsets(n: int, world: int) -> np.ndarray:
    """(world + 1,) int64: rank r holds rows offsets[r] .. offsets[r + 1] - 1 of n, in contiguous blocks
    whose sizes differ by at most one (the first n % world ranks hold one more)."""
    sizes = np.full(world, n // world, dtype=np.int64)
    sizes[: n % world] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


def _wire(job: Job) -> torch.device:
    """Where point-to-point messages live: the rank's GPU under NCCL, else the CPU (gloo)."""
    return torch.device("cuda", torch.cuda.current_device()) if job.backend == "nccl" else torch.device("cpu")


def _send(arr: np.ndarray, dst: int, job: Job) -> None:
    flat = torch.from_numpy(np.ascontiguousarray(arr)).reshape(-1)
    step = max(1, CHUNK_BYTES // flat.element_size())
    for a in range(0, flat.numel(), step):
        dist.send(flat[a:a + step].to(_wire(job)), dst=dst)


def _recv(shape: tuple, dtype: np.dtype, src: int, job: Job) -> np.ndarray:
    out = np.empty(shape, dtype=dtype)
    flat = torch.from_numpy(out).reshape(-1)
    step = max(1, CHUNK_BYTES // flat.element_size())
    for a in range(0, flat.numel(), step):
        piece = torch.empty(min(step, flat.numel() - a), dtype=flat.dtype, device=_wire(job))
        dist.recv(piece, src=src)
        flat[a:a + piece.numel()] = piece.cpu()
    return out


class Link:
    """The OT solves between rank 0 and the other ranks (module docstring).

    requests : solves rank 0 has asked for; in_solve : rank 0 is inside one (an error there may leave
    the other ranks in the solve's collectives, so rank 0 then does not send them a stop).
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        self.requests = 0
        self.in_solve = False
        self._sent: Any = None  # rank 0: the matrix whose blocks the other ranks hold (kept, not copied)
        self._block: Optional[np.ndarray] = None  # ranks > 0: their block of it
        self._rows = (0, 0)  # ranks > 0: the rows of the scored customers their block holds

    def _broadcast(self, obj: Any) -> Any:
        msg = [obj]
        dist.broadcast_object_list(msg, src=0)
        return msg[0]

    def solve(self, profit, k: int, candidates, device, options: dict):
        """Rank 0: the sharded solve of ``profit`` ((N, M) numpy or a FactoredProfit) with all ranks; its
        Discretization with the assignment of all N customers."""
        # a factored profit (V (N, A), W (M, A)) is sent as its rows of V and all of W: N x A, not N x M
        W = np.asarray(profit.W, dtype=np.float64) if isinstance(profit, FactoredProfit) else None
        P = np.asarray(profit.V, dtype=np.float64) if W is not None else profit
        if not isinstance(P, np.ndarray) or P.ndim != 2:
            raise TypeError("distributed=true: the OT discretizer's profit must be an (N, M) numpy array or a "
                            "FactoredProfit")
        job, new = self.job, self._sent is not profit
        offsets = row_offsets(P.shape[0], job.world_size)
        # the refinement's oracle is a function of rank 0's model: every rank builds its own for its rows
        oracle = options.get("refine_oracle")
        sent = {key: v for key, v in options.items() if key != "refine_oracle"}
        self.in_solve = True
        self._broadcast({"kind": "solve", "k": k, "options": sent, "refine": oracle is not None,
                         "shape": P.shape if new else None, "dtype": P.dtype.str, "W": W if new else None})
        self.requests += 1
        if new:
            for r in range(1, job.world_size):
                _send(P[offsets[r]:offsets[r + 1]], r, job)
            self._sent = profit
        own = P[offsets[0]:offsets[1]]
        if oracle is not None:
            sent["refine_oracle"] = oracle_rows(oracle, int(offsets[0]), int(offsets[1]))
        try:
            res = discretize(own if W is None else FactoredProfit(own, W), k, candidates=candidates, device=device,
                             distributed=True, **sent)
        except ValueError:
            self.in_solve = False  # refused on every rank: the others wait for the next request
            raise
        parts = [np.asarray(res.assignment, dtype=np.int64)]
        parts += [_recv((int(offsets[r + 1] - offsets[r]),), np.dtype(np.int64), r, job)
                  for r in range(1, job.world_size)]
        self.in_solve = False
        info = {**res.info, "distributed": {**res.info.get("distributed", {}), "assignment": "all ranks' rows"}}
        return dataclasses.replace(res, assignment=np.concatenate(parts), info=info)

    def stop(self, err: Optional[BaseException]) -> None:
        """Rank 0: no more solves; ``err`` (rank 0's error, or None) is what the other ranks report."""
        self._broadcast({"kind": "stop", "error": None if err is None else one_line(err)})

    def serve(self, candidates: np.ndarray, device, oracle=None) -> None:
        """Ranks > 0: solve what rank 0 asks for until it says stop (JobExit when it stopped on an error).

        oracle : this rank's copy of the model's profit oracle over all scored customers (its rows'
            part refines the treatments when rank 0 asks for it), or None."""
        job = self.job
        while True:
            req = self._broadcast(None)
            if req["kind"] == "stop":
                if req["error"]:
                    raise JobExit(f"rank {job.rank}: stopped with rank 0, which failed: {req['error']}")
                return
            if req["shape"] is not None:
                n, m = req["shape"]
                offsets = row_offsets(int(n), job.world_size)
                rows = int(offsets[job.rank + 1] - offsets[job.rank])
                self._rows = (int(offsets[job.rank]), int(offsets[job.rank + 1]))
                block = _recv((rows, int(m)), np.dtype(req["dtype"]), 0, job)
                self._block = block if req["W"] is None else FactoredProfit(block, req["W"])
            opts = dict(req["options"])
            if req.get("refine") and oracle is not None:  # none here: the ranks disagree, refused on all
                opts["refine_oracle"] = oracle_rows(oracle, *self._rows)
            try:
                res = discretize(self._block, req["k"], candidates=candidates, device=str(device), distributed=True,
                                 **opts)
            except ValueError:
                continue  # refused on every rank: rank 0's job fails with it and sends a stop
            _send(np.asarray(res.assignment, dtype=np.int64), 0, job)


__all__ = ["CHUNK_BYTES", "Link", "row_offsets"]
