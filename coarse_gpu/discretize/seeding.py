"""Where the search's restarts start: greedy facility-location and k-means++ seeds for the Lloyd
restarts (``_seeds``), cheap starts for the annealed ones (``_anneal_starts``), a feasible start under
side constraints (``_feasible_start``), and the size rules that decide which seeding runs
(``_greedy_seed``, ``_subsample_size``; see ``options.SolverOptions``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from coarse_gpu.discretize.facility import column_means, greedy
from coarse_gpu.discretize.profit import ProfitSource

if TYPE_CHECKING:  # annotations only
    from coarse_gpu.discretize.state import SearchState

_SMALL_SEARCH = 1 << 22  # N x M entries below which sinkhorn also runs the greedy-seeded restart ("auto")


def _seeds(src: ProfitSource, k: int, n_restarts: int, gen: torch.Generator, init, first: bool = True) -> torch.Tensor:
    """(R, K) distinct candidate indices per restart: init / greedy for restart 0, k-means++ for the rest.

    ``first=False``: only the R - 1 k-means++ seeds (the same ones, drawn from ``gen`` in the same order).
    """
    N, M = src.n, src.m
    seeds = []
    if first and init is not None:
        seeds.append([int(x) for x in init])
    elif first:
        seeds.append(greedy(src, k))  # facility-location greedy
    if n_restarts > 1:
        best_full, ideal = src.row_max()
    for _ in range(1, n_restarts):
        i = int(torch.randint(N, (1,), generator=gen))
        chosen = [int(src.row_item(ideal, i))]
        best = src.columns(torch.tensor(chosen, device=src.device))[:, 0]
        for _ in range(1, k):
            m = None
            regret = torch.relu(best_full - best)
            for _try in range(8):
                cand = int(src.row_item(ideal, src.sample_row(regret, gen))) if float(src.max_value(regret)) > 0 \
                    else -1
                if cand >= 0 and cand not in chosen:
                    m = cand
                    break
            if m is None:  # every customer already has its ideal treatment, or bad luck: a random new one
                free = np.setdiff1d(np.arange(M), chosen)
                m = int(free[int(torch.randint(free.size, (1,), generator=gen))])
            chosen.append(m)
            best = torch.maximum(best, src.columns(torch.tensor([m], device=src.device))[:, 0])
        seeds.append(chosen)
    return torch.tensor(seeds, dtype=torch.long, device=src.device).reshape(-1, k)


def _anneal_starts(src: ProfitSource, r: int, k: int, gen: torch.Generator, init) -> torch.Tensor:
    """(R, K) starts for annealing without the Lloyd seeding: ``init`` or the K best columns on average
    for start 0, random distinct candidates for the others.

    Costs one column-mean pass (O(N A) on a factored source) where the greedy / k-means++ seeding of
    ``_seeds`` needs K relu-sum passes and a row max over all N x M profits. From ``eps_start`` = 1
    the annealing forgets its start (8 random starts flowed to one solution on the benchmark).
    """
    if init is not None:
        first = torch.as_tensor(np.asarray(init, dtype=np.int64))
    else:
        first = column_means(src).topk(k).indices.cpu()
    starts = [first] + [torch.randperm(src.m, generator=gen)[:k] for _ in range(1, r)]
    return torch.stack(starts).to(src.device)


def _feasible_start(run: SearchState, k: int) -> Optional[torch.Tensor]:
    """(1, K) start whose hard assignment is feasible, for side constraints without shares or support:
    the candidate that satisfies every constraint when it serves all customers alone (a budget's
    cheapest treatment, e.g. no promotion at cost 0), the best such on average, then the greedy
    facility-location columns. None when no such candidate exists (the MIP fallback decides then)."""
    side = run.side
    if side is None or run.support is not None or run.shares or k > run.src.m:
        return None
    alone = side.W.sum(0)[None, :] * side.V  # (M, C): each constraint's value with everyone on candidate m
    ok = np.all((alone >= side.lo - side.tol) & (alone <= side.hi + side.tol), axis=1)
    if not ok.any():
        return None
    means = column_means(run.src).to(torch.float64).cpu().numpy()
    first = int(np.flatnonzero(ok)[np.argmax(means[ok])])
    return torch.tensor([greedy(run.src, k, start=[first])], dtype=torch.long, device=run.src.device)


def _greedy_seed(option, n: int, m: int, shares: bool) -> bool:
    """Whether ``sinkhorn`` runs the greedy-seeded Lloyd restart; see options.SolverOptions.greedy_seed."""
    if option == "auto":
        return shares or n * m < _SMALL_SEARCH
    if not isinstance(option, bool):
        raise ValueError(f"greedy_seed must be 'auto', True or False, got {option!r}")
    return option


def _subsample_size(option, n: int, side: bool = False) -> Optional[int]:
    """Customers the search runs on (None: all of them); see options.SolverOptions.subsample.

    Under side constraints "auto" means 16384 customers when N > 65536: every Lloyd iteration and
    verified swap then costs an exact constrained assignment of the search's customers (restricted LP
    + certificate, ~0.1 s at 20,000 customers, seconds at 1e5), and the exact polish on all N follows.
    """
    if option is None:
        return None
    if option == "auto":
        if side:
            return 16384 if n > 65536 else None
        return 65536 if n > 262144 else None
    if isinstance(option, bool) or not isinstance(option, (int, np.integer)) or int(option) < 1:
        raise ValueError(f"subsample must be 'auto', None or a positive int, got {option!r}")
    return int(option) if int(option) < n else None
