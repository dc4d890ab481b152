"""The discretizer's search options as one typed dataclass: ``SolverOptions``.

Every option ``discretize(..., **options)`` takes that is a plain value lives here, with its default,
so the same dataclass is the Python default (``inputs.DEFAULT_OPTIONS``) and the Hydra schema of the
``discretizer`` config group (``experiment/config.py``'s ``DiscretizerConfig`` extends it): each
option is reachable as ``coarse-gpu discretizer.<name>=...`` and a misspelt name is a config error.
The options that are objects (``refine_oracle``, ``bounds``, ``init``, ``support``) are keyword
arguments of ``discretize`` only; the main job builds them from the data and the model.

Measured defaults (why they are what they are):

- ``n_anneal=1``: annealing from ``eps_start = 1`` forgets its start: at that temperature every
  treatment's plan spans most customers, so all seeds flow to the same solution (8 seeds -> 1 distinct
  result on the benchmark instances). Annealing one seed and spending the rest on plain Lloyd restarts
  (cheap) and the swap search (which closes the last 0.1-0.5 %) is the faster mix.
- ``anneal_rows=16384``: 16,384 sampled customers estimate a segment's mean profit curve to ~1 % of
  its spread; the Lloyd polish on all customers follows.
- ``subsample="auto"``: above N = 262,144 the search (seeding, restarts, annealing, swaps) runs on
  65,536 sampled customers, then the winner is polished by the exact Lloyd alternation on all N. The K
  locations depend on the customers only through sums over segments, so the sample pins them down far
  below the objective's resolution and the full polish removes the rest. Under side constraints 16,384
  customers when N > 65,536 (each iteration there is an exact constrained assignment).
- ``greedy_seed="auto"``: the greedy facility-location seed costs K relu-sum passes over all N x M
  profits (0.5 s of a 1.5 s Lloyd run on a 65k x 1024 search sample) while annealing needs only plan x
  profit products, so the greedy restart runs while the search's N x M < 2**22 or under share
  constraints (no swap search there); on Gaussian-noise tables it is Lloyd's best restart every time.
- ``coarse_restarts=True``: in a large search without the greedy seed the k-means++ Lloyd restarts
  run to their fixed points on the annealing sample, and only the best ``n_swap`` distinct solutions
  are polished on all the search's customers before the swap search.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

import numpy as np

from coarse_gpu.discretize.spec import get_solver

LAZY = ("auto", "keops", "torch")


@dataclass
class SolverOptions:
    """Plain-valued options of ``discretize`` (module docstring); units in each comment."""

    solver: str = "sinkhorn"  # sinkhorn | lloyd | exact (subset enumeration) | mip (exact, N x M up to ~1e5)
    n_restarts: int = 8  # restarts of the search (restart 0 greedy / annealed, the rest k-means++)
    max_iter: int = 100  # Lloyd / polish iterations (and the cap of annealing iterations per eps)
    tol: float = 1e-4  # share violation tolerated by the entropic plan (fraction of all customers)
    dtype: str = "float32"  # float32 | float64: precision of the profit source on the device
    memory_limit_bytes: Optional[int] = None  # dense-block budget; None = a share of the device's memory
    verbose: bool = False  # a progress bar over the annealing temperatures
    lazy: str = "auto"  # factored profits: auto (KeOps on CUDA, row-blocked torch on CPU) | keops | torch
    eps_start: float = 1.0  # first annealing temperature (relative to the profit scale)
    eps_decay: float = 0.5  # geometric factor between temperatures, in (0, 1)
    iter_per_eps: int = 4  # location updates per temperature
    sinkhorn_iter: int = 200  # inner Sinkhorn iterations per plan (only with share bounds)
    refine_rounds: int = 5  # pattern-search rounds of the off-grid refinement
    # false: the refinement never moves a treatment dimension whose candidates are all integers (a coded
    # category 0/1/2, a count, an on/off lever): "creative 1.18" is no treatment; true: refine it too
    refine_integer_dims: bool = False
    n_anneal: Optional[int] = 1  # sinkhorn: how many of the restarts are annealed (None: all)
    anneal_rows: Optional[int] = 16384  # customers the annealing runs on (None: all of the search's)
    swap: bool = True  # sinkhorn: finish with the 1-swap local search on the best solutions
    n_swap: Optional[int] = 2  # how many of the best distinct solutions get the swap search (None: all)
    swap_rows: Optional[int] = None  # customers screening the swaps (None: all when N M <= 2**24, else a sample)
    subsample: Any = "auto"  # customers the search runs on: "auto" | None (all) | an int
    greedy_seed: Any = "auto"  # sinkhorn's greedy-seeded Lloyd restart: "auto" | true | false
    coarse_restarts: bool = True  # large searches on two levels (module docstring)
    mip_time_limit: Optional[float] = None  # solver="mip": seconds before HiGHS stops with its incumbent
    mip_rel_gap: float = 1e-4  # solver="mip": relative gap to the dual bound at which it stops
    # solver="mip": largest N x M (customers x candidates) it starts on; above it the call is refused
    # before any work (raise it knowingly: 1,200 x 60 already ran past 300 s)
    mip_max_entries: int = 200_000


OPTION_NAMES = tuple(f.name for f in fields(SolverOptions))


def default_options() -> dict:
    """The defaults of every plain-valued option, as a new dict."""
    return asdict(SolverOptions())


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _positive_int_or_none(name: str, v, what: str) -> None:
    if v is not None and not (_is_int(v) and int(v) >= 1):
        raise ValueError(f"{name} must be a positive integer or None ({what}), got {v!r}")


def check_solver_options(opts: dict) -> None:
    """ValueError naming the first bad plain-valued option of ``opts`` (merged with the defaults)."""
    get_solver(opts["solver"])  # the solver table's names (spec.py)
    if opts["dtype"] not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {opts['dtype']!r}")
    if opts["lazy"] not in LAZY:
        raise ValueError(f"lazy must be 'auto', 'keops' or 'torch', got {opts['lazy']!r}")
    for name in ("n_restarts", "max_iter", "iter_per_eps", "sinkhorn_iter"):
        if not (_is_int(opts[name]) and int(opts[name]) >= 1):
            raise ValueError(f"{name} must be >= 1, got {opts[name]}")
    if not (_is_int(opts["refine_rounds"]) and int(opts["refine_rounds"]) >= 0):
        raise ValueError(f"refine_rounds must be an integer >= 0, got {opts['refine_rounds']!r}")
    if opts["n_anneal"] is not None and (isinstance(opts["n_anneal"], bool) or int(opts["n_anneal"]) < 1):
        raise ValueError(f"n_anneal must be >= 1 or None (all restarts), got {opts['n_anneal']!r}")
    _positive_int_or_none("n_swap", opts["n_swap"], "None: every restart's solution")
    _positive_int_or_none("anneal_rows", opts["anneal_rows"], "None: all the search's customers")
    _positive_int_or_none("swap_rows", opts["swap_rows"], "None: automatic")
    mem = opts["memory_limit_bytes"]
    if mem is not None and (isinstance(mem, bool) or not isinstance(mem, (int, float, np.number)) or not mem > 0):
        raise ValueError(f"memory_limit_bytes must be positive, got {mem!r}")
    sub = opts["subsample"]
    if not (sub is None or sub == "auto" or (_is_int(sub) and int(sub) >= 1)):
        raise ValueError(f"subsample must be 'auto', None or a positive int, got {sub!r}")
    if opts["greedy_seed"] != "auto" and not isinstance(opts["greedy_seed"], bool):
        raise ValueError(f"greedy_seed must be 'auto', True or False, got {opts['greedy_seed']!r}")
    for name in ("swap", "coarse_restarts", "verbose", "refine_integer_dims"):
        if not isinstance(opts[name], (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {opts[name]!r}")
    if not (float(opts["tol"]) > 0):
        raise ValueError(f"tol must be a positive fraction of the customers, got {opts['tol']!r}")
    if not (float(opts["eps_start"]) > 0):
        raise ValueError(f"eps_start must be a positive temperature, got {opts['eps_start']!r}")
    if not (0.0 < float(opts["eps_decay"]) < 1.0):
        raise ValueError(f"eps_decay must lie in (0, 1), got {opts['eps_decay']}")
    if opts["mip_time_limit"] is not None and not float(opts["mip_time_limit"]) > 0:
        raise ValueError(f"mip_time_limit must be a positive number of seconds or None, got {opts['mip_time_limit']!r}")
    if not (_is_int(opts["mip_max_entries"]) and int(opts["mip_max_entries"]) >= 1):
        raise ValueError(f"mip_max_entries must be a positive integer (customers x candidates), got "
                         f"{opts['mip_max_entries']!r}")
    if not 0.0 <= float(opts["mip_rel_gap"]) < 1.0:
        raise ValueError(f"mip_rel_gap must lie in [0, 1), got {opts['mip_rel_gap']!r}")
