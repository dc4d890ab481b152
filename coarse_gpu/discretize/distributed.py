"""Sharded ``discretize`` over torch.distributed: every process holds some customers of one problem.

    torchrun --nproc_per_node=2 scripts/discretize_sharded.py

Under an initialized default process group (gloo on CPU, NCCL on GPU), ``discretize(local_profit, k,
distributed=True, ...)`` reads each rank's (N_r, M) profits as rows offset_r .. offset_r + N_r - 1 of
one (N, M) problem, the ranks' rows concatenated in rank order. Every rank returns the same
treatments; ``assignment`` holds the rank's own customers (its rows, in order); ``objective``,
``entropic_objective`` and ``shares`` are those of all N customers.

Design: one search, run in lockstep by every rank on its own rows
-----------------------------------------------------------------
``ShardedSource`` wraps the rank's local ``ProfitSource`` and reports the global row count ``n``; the
solver runs unchanged on it. Everything the search decides is a function of sums over customers, so
only the reductions cross processes:

* location steps: segment sums (R, K, M) (``segment_scores``), plan products P^T Pi (``scores``),
  greedy / re-seeding gains (M,), objectives and segment counts (``ProfitSource.reduce_sum``);
* sampled rows: the profit-scale sample and the swap screening sample (at most 2**22 entries by
  default) are gathered whole onto every rank (``submatrix``), so the swap screening is the
  single-process computation on the same matrix;
* k-means++ seeding: the drawn customer's ideal treatment comes from the rank holding it
  (``row_item``, a broadcast), and the regret-proportional draw (``sample_row``) finds the same global
  row as ``profit.sample_index`` on the concatenation: per-rank float64 prefix sums offset by the
  gathered totals of the ranks before, and the global index is the number of rows whose prefix sum
  is below the one uniform draw (summed over ranks).

Every random draw (subsamples, k-means++ rows, screening rows, the scale sample) is made from the
same generator and seed on every rank with the global N, exactly as the single-process solve makes
it, so the ranks stay in lockstep and draw the same customers as the single-process solve on the
concatenated rows. Sums are all-gathered and added in rank order in float64 (not a backend
all_reduce, whose order may differ by algorithm): every rank gets bitwise the same value and so takes
the same decisions. What differs from the single-process solve is only the float order of those sums
(a float32 segment sum is now the float64 sum of W float32 partial sums), so ``solver="lloyd"`` gives
the same treatments and assignment and the objective to float tolerance, except in the (measure-zero)
event that two location moves tie within float rounding; ``sinkhorn`` follows the same path.

Why not gather a search sample onto one rank instead: the search would then only be identical when
the sample is all rows (N <= 262,144), and every rank would hold the sample (65,536 x M) besides its
shard; sharding the search itself keeps every rank's memory at its own rows plus the screening sample,
works for every ``subsample`` setting (``None``: search on all N, sharded), and costs a few small
collectives per Lloyd iteration (a K x M float64 gather).

Limits (each refused with a one-line ValueError naming the option): ``min_share`` / ``max_share``,
``constraints``, ``support`` (the exact capacitated / constrained assignment couples all customers
through one network-simplex / LP solve), and ``solver="exact"`` / ``"mip"`` (they need the whole N x M
table in one process). ``refine_oracle`` works: each rank's oracle scores its own rows, and the pattern
search decides on segment sums reduced over the ranks (``refine.refine_treatments``' ``reduce``), so
every rank moves the treatments the same way. Dense, ``FactoredProfit`` and oracle local sources all
work. Every rank must hold at least one customer; a rank may hold none of a subsample. Collectives run on
CUDA under NCCL (call ``torch.cuda.set_device(local_rank)`` first, as ``scripts/discretize_sharded.py``
does) and on CPU otherwise.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Optional

import numpy as np
import torch
import torch.distributed as dist

from coarse_gpu.discretize.profit import ProfitSource
from coarse_gpu.discretize.spec import supports

# options that may differ across ranks without changing any decision (memory / progress / kernel path)
_LOCAL_OPTIONS = ("memory_limit_bytes", "verbose", "lazy")


def check_request(solver: str, min_share, max_share, constraints, opts: dict) -> None:
    """ValueError naming the first option the sharded solve does not support, then one if no process
    group is initialized; called before any work."""
    refused = [
        (not supports(solver, "distributed"), f"solver={solver!r}",
         "its solver table entry declares that it needs every customer in one process"),
        (min_share is not None, "min_share", "the capacitated assignment couples all customers in one solve"),
        (max_share is not None, "max_share", "the capacitated assignment couples all customers in one solve"),
        (constraints is not None and (not isinstance(constraints, (list, tuple)) or len(constraints) > 0),
         "constraints", "the constrained assignment couples all customers in one LP"),
        (opts.get("support") is not None, "support", "the support assignment couples all customers in one LP"),
    ]
    for bad, name, why in refused:
        if bad:
            raise ValueError(f"{name} is not supported with distributed=True ({why})")
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("distributed=True needs an initialized torch.distributed default process group "
                         "(e.g. torchrun and torch.distributed.init_process_group); none is initialized")


class _Comm:
    """The default process group's rank, size and collective device (CUDA under NCCL, else CPU)."""

    def __init__(self) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        nccl = dist.get_backend() == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")

    def gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's copy of a same-shaped tensor t, in rank order (on the collective device)."""
        x = t.detach().to(self.device).contiguous()
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x)
        return parts

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over ranks of t (float in float64, integers in int64), added in rank order: the same
        bits on every rank whatever the backend's all_reduce algorithm; back in t's device and dtype."""
        wide = torch.float64 if t.is_floating_point() else torch.int64
        parts = self.gather(t.reshape(-1).to(wide))
        out = parts[0].clone()
        for p in parts[1:]:
            out += p
        return out.reshape(t.shape).to(device=t.device, dtype=t.dtype)

    def gather_rows(self, block: torch.Tensor, counts: np.ndarray) -> torch.Tensor:
        """Concatenation in rank order of every rank's (counts[r], J) block (padded for the gather)."""
        top = int(counts.max(initial=0))
        if top == 0:
            return block[:0]
        pad = torch.zeros(top, *block.shape[1:], dtype=block.dtype, device=block.device)
        pad[:block.shape[0]] = block
        parts = self.gather(pad)
        return torch.cat([p[:int(c)] for p, c in zip(parts, counts)], 0).to(block.device)


class ShardedSource(ProfitSource):
    """This rank's rows of an (n, m) problem whose rows are split over the process group.

    ``offsets`` (world + 1,): rank r holds global rows offsets[r] .. offsets[r + 1] - 1. Per-row results
    (``columns``, ``row_max``) are this rank's rows (``n_local`` of them); reductions over rows
    (``scores``, ``segment_scores``, ``gains``, ``reduce_sum``, ``max_value``) cover all ranks;
    ``submatrix`` and ``rows`` take global row indices. A rank may hold no row (of a subsample).
    """

    def __init__(self, local: ProfitSource, offsets: np.ndarray, comm: _Comm) -> None:
        self.local, self.offsets, self.comm = local, np.asarray(offsets, dtype=np.int64), comm
        self.n, self.m = int(self.offsets[-1]), local.m
        self.lo = int(self.offsets[comm.rank])
        self.device, self.dtype, self.lazy, self.path = local.device, local.dtype, local.lazy, local.path

    @property
    def n_local(self) -> int:
        return int(self.offsets[self.comm.rank + 1] - self.lo)

    def _counts(self, rows: np.ndarray) -> np.ndarray:
        """(world,) how many of the sorted global rows each rank holds."""
        return np.diff(np.searchsorted(rows, self.offsets))

    def _mine(self, rows: np.ndarray) -> np.ndarray:
        """Local positions of the sorted global rows this rank holds."""
        r = self.comm.rank
        a, b = np.searchsorted(rows, self.offsets[r:r + 2])
        return rows[a:b] - self.lo

    # per-row (this rank's customers) ------------------------------------------------------------
    def columns(self, idx):
        if self.n_local == 0:
            return torch.empty(0, idx.numel(), device=self.device, dtype=self.dtype)
        return self.local.columns(idx)

    def columns64(self, idx):
        return self.local.columns64(idx)  # only on the full shards, which are never empty

    def row_max(self):
        if self.n_local == 0:
            return (torch.empty(0, device=self.device, dtype=self.dtype),
                    torch.empty(0, device=self.device, dtype=torch.long))
        return self.local.row_max()

    # reductions over all ranks' customers ------------------------------------------------------
    def scores(self, P):
        out = self.local.scores(P) if self.n_local else \
            torch.zeros(P.shape[1], self.m, device=self.device, dtype=self.dtype)
        return self.comm.sum(out)

    def segment_scores(self, A, k):
        out = self.local.segment_scores(A, k) if self.n_local else \
            torch.zeros(A.shape[1], k, self.m, device=self.device, dtype=self.dtype)
        return self.comm.sum(out)

    def gains(self, best):
        out = self.local.gains(best) if self.n_local else torch.zeros(self.m, device=self.device, dtype=self.dtype)
        return self.comm.sum(out)

    def reduce_sum(self, x):
        if isinstance(x, torch.Tensor):
            return self.comm.sum(x)
        if isinstance(x, np.ndarray):
            return self.comm.sum(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        return float(self.comm.sum(torch.tensor(float(x), dtype=torch.float64)))

    def max_value(self, t):
        mx = t.max() if t.numel() else torch.tensor(-float("inf"), device=t.device, dtype=t.dtype)
        return torch.stack(self.comm.gather(mx.reshape(1))).max().to(t.device)

    def row_item(self, t, i):
        owner = int(np.searchsorted(self.offsets, int(i), side="right")) - 1
        val = t[int(i) - self.lo].reshape(1) if owner == self.comm.rank else torch.zeros(1, dtype=t.dtype)
        val = val.to(self.comm.device)
        dist.broadcast(val, src=owner)
        return val[0].to(t.device)

    def sample_row(self, weights, gen):
        # Same draws as profit.sample_index on the concatenation: one uniform u on the global total,
        # and the index of the first row whose (global, float64) prefix sum reaches u, i.e. the number
        # of rows below u, counted on every rank against its prefix sums offset by the ranks before.
        c = torch.cumsum(weights.to(torch.float64), 0)
        mine = c[-1:] if c.numel() else torch.zeros(1, dtype=torch.float64, device=c.device)
        totals = [float(x) for x in self.comm.gather(mine)]
        prefix, total = 0.0, 0.0
        for r, t in enumerate(totals):
            if r == self.comm.rank:
                prefix = total
            total += t
        if not total > 0:
            return int(torch.randint(self.n, (1,), generator=gen))
        u = float(torch.rand(1, generator=gen, dtype=torch.float64)) * total
        below = torch.searchsorted(c + prefix, torch.tensor([u], dtype=torch.float64, device=c.device))
        return int(min(self.n - 1, int(self.comm.sum(below.to(torch.long)))))

    # global row indices -------------------------------------------------------------------------
    def submatrix(self, rows, cols=None):
        r = rows.cpu().numpy().astype(np.int64)
        order = np.argsort(r, kind="stable")
        rs = r[order]
        mine = self._mine(rs)
        ncol = self.m if cols is None else int(cols.numel())
        if mine.size:
            block = self.local.submatrix(torch.as_tensor(mine, device=self.device), cols)
        else:
            block = torch.empty(0, ncol, device=self.device, dtype=self.dtype)
        out = self.comm.gather_rows(block, self._counts(rs))
        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
        return out if np.array_equal(order, np.arange(order.size)) else out[torch.as_tensor(inv, device=out.device)]

    def rows(self, idx):
        idx = np.asarray(idx, dtype=np.int64)
        sub = self.local.rows(self._mine(idx))
        # every rank must agree (a rank's local source type may differ: a small oracle is evaluated densely)
        if int(self.comm.sum(torch.tensor(0 if sub is not None else 1))) > 0:
            return None
        return ShardedSource(sub, np.concatenate([[0], np.cumsum(self._counts(idx))]), self.comm)

    def same_on_all_ranks(self, C: torch.Tensor) -> None:
        """RuntimeError unless every rank chose the same treatments C (K,) (lockstep check)."""
        parts = self.comm.gather(C.to(torch.long))
        if any(not torch.equal(parts[0], p) for p in parts[1:]):
            raise RuntimeError("distributed discretize: the ranks chose different treatments "
                               f"{[p.tolist() for p in parts]}; they fell out of lockstep")


def _digest(*parts) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(repr(p.shape).encode() + p.tobytes() if isinstance(p, np.ndarray) else repr(p).encode())
    return h.hexdigest()


def shard_source(make_local: Callable[[], tuple], args: dict) -> tuple[ShardedSource, np.ndarray]:
    """(ShardedSource over the process group, candidates (M, d)) from this rank's ``make_local()``.

    ``make_local`` builds and checks the local source; its ValueError, or a disagreement between ranks
    (M, candidates, ``args``: k, seed, epsilon and the options that steer the search), raises the same
    ValueError on every rank, instead of leaving the others waiting in a collective.
    """
    comm = _Comm()
    err: Optional[Exception] = None
    src, cand = None, None
    try:
        src, cand = make_local()
    except Exception as e:  # noqa: BLE001 (re-raised below, after telling the other ranks)
        err = e
    steer = {k: v for k, v in args.items() if k not in _LOCAL_OPTIONS}
    # each rank's oracle is its own function (of its own rows): only whether there is one must agree
    steer["refine_oracle"] = steer.get("refine_oracle") is not None
    mine = (None if err is None else str(err), src.n if src is not None else 0, src.m if src is not None else 0,
            _digest(cand) if cand is not None else "", _digest(sorted(steer.items(), key=lambda kv: kv[0])))
    every: list = [None] * comm.world
    dist.all_gather_object(every, mine)
    if err is not None:
        raise err
    bad = [r for r, e in enumerate(every) if e[0] is not None]
    if bad:
        raise ValueError(f"rank {bad[0]}'s local input was refused: {every[bad[0]][0]}")
    for j, name in ((2, "the number of candidates M (profit columns)"), (3, "candidates"),
                    (4, "k, seed, epsilon and the search options")):
        if len({e[j] for e in every}) > 1:
            raise ValueError(f"distributed=True: {name} must be the same on every rank"
                             + (f", got {[e[j] for e in every]}" if j == 2 else ""))
    n_local = np.array([e[1] for e in every], dtype=np.int64)
    assert src is not None and cand is not None  # no rank refused (above)
    return ShardedSource(src, np.concatenate([[0], np.cumsum(n_local)]), comm), cand
