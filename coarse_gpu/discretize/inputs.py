"""Input coercion and validation of ``discretize``'s arguments, before any work: the profit source
(dense array, ``FactoredProfit`` or callable oracle), the candidates, the merged options and the
object-valued options (``init``, ``refine_oracle``, ``bounds``)."""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch

from coarse_gpu.discretize.options import check_solver_options, default_options
from coarse_gpu.discretize.profit import (
    DenseSource,
    FactoredProfit,
    FactoredSource,
    OracleSource,
    ProfitSource,
    call_oracle,
)

DEFAULT_EPSILON = 0.01  # target temperature, relative to the profit scale
# Every plain-valued option and its default is ``options.SolverOptions`` (also the Hydra schema of the
# discretizer group); these five are objects the caller builds.
DEFAULT_OPTIONS = dict(
    default_options(),
    refine_oracle=None,  # callable (T, d) float64 tensor -> (N, T) profits: continuous refinement
    bounds=None,  # (low (d,), high (d,)): the box the refinement stays in
    init=None,  # K candidate indices seeding restart 0 (e.g. the previous K's solution)
    # (d,) bools: the treatment dimensions the refinement never moves (discrete and categorical kinds,
    # coarse_gpu.data.treatments); None: the ``refine_integer_dims`` heuristic decides
    frozen_dims=None,
    # Experimental support per segment: a constraints.Support (each segment must hold >= n customers of
    # the group supporting its treatment, e.g. those randomized to the arm nearest it); None: none.
    support=None,
)


def _default_memory_limit(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.4 * free)
    return 4 << 30


def _as_candidates(candidates, m: Optional[int]) -> np.ndarray:
    if candidates is None:
        if m is None:
            raise ValueError("candidates must be given when the profit source does not fix M")
        return np.arange(m, dtype=np.float64)[:, None]
    c = candidates.detach().cpu().numpy() if isinstance(candidates, torch.Tensor) else np.asarray(candidates)
    c = c.astype(np.float64)
    if c.ndim == 1:
        c = c[:, None]
    if c.ndim != 2 or c.shape[0] == 0:
        raise ValueError(f"candidates must be an (M, d) array, got shape {np.shape(candidates)}")
    if not np.all(np.isfinite(c)):
        raise ValueError("candidates contain NaN or inf")
    if m is not None and c.shape[0] != m:
        raise ValueError(f"candidates has {c.shape[0]} rows but profit has M={m} columns (shapes mismatch)")
    return c


def _make_source(profit, candidates, device, dtype, memory_limit, lazy) -> tuple[ProfitSource, np.ndarray]:
    if isinstance(profit, FactoredProfit):
        fsrc = FactoredSource(profit, device, dtype, memory_limit, lazy)
        return fsrc, _as_candidates(candidates, fsrc.m)
    if callable(profit) and not isinstance(profit, (np.ndarray, torch.Tensor)):
        if candidates is None:
            raise ValueError("candidates must be given when profit is a callable oracle")
        cand = _as_candidates(candidates, None)
        probe = call_oracle(profit, torch.as_tensor(cand[:1], dtype=torch.float64, device=device), None, device, dtype)
        n = probe.shape[0]
        itemsize = torch.finfo(dtype).bits // 8
        if n * cand.shape[0] * itemsize <= memory_limit:
            # Small enough: evaluate the whole grid once (in column chunks) and work densely.
            src0 = OracleSource(profit, cand, n, device, dtype, memory_limit)
            X = torch.cat([blk for _, blk in src0._chunks()], 1)
            src = DenseSource(X, device, dtype, memory_limit)
            src.host = _OracleHost(profit, cand, n, device, X)
            src.path = "oracle-dense"
            return src, cand
        return OracleSource(profit, cand, n, device, dtype, memory_limit), cand
    if isinstance(profit, torch.Tensor):
        arr: Any = profit
    else:
        try:
            arr = np.asarray(profit)
        except Exception as err:  # pragma: no cover
            raise ValueError(f"profit must be an (N, M) array, a FactoredProfit or a callable, got "
                             f"{type(profit)}") from err
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"profit must be a numeric (N, M) array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"profit must be a 2-D (N, M) array, got shape {tuple(arr.shape)}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"profit must have at least one customer and one candidate, got shape {tuple(arr.shape)}")
    src = DenseSource(arr, device, dtype, memory_limit)
    return src, _as_candidates(candidates, src.m)


class _OracleHost:
    """Lets a densely evaluated oracle give float64 columns (re-evaluated in double on demand)."""

    def __init__(self, oracle, cand, n, device, X) -> None:
        self.oracle, self.cand, self.n, self.device = oracle, cand, n, device
        self.shape = X.shape

    def columns64(self, cols) -> torch.Tensor:
        T = torch.as_tensor(self.cand[np.asarray(cols)], dtype=torch.float64, device=self.device)
        return call_oracle(self.oracle, T, self.n, self.device, torch.float64)


def _check_options(options: dict, epsilon):
    """Merged options, torch dtype and target epsilon; ValueError naming a bad option before any work."""
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; known options: {sorted(DEFAULT_OPTIONS)}")
    opts = {**DEFAULT_OPTIONS, **options}
    check_solver_options(opts)
    dtype = torch.float32 if opts["dtype"] == "float32" else torch.float64
    if epsilon is not None and not (float(epsilon) > 0 and math.isfinite(float(epsilon))):
        raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
    eps_target = DEFAULT_EPSILON if epsilon is None else float(epsilon)
    return opts, dtype, eps_target


def _check_search_inputs(opts: dict, k: int, M: int, cand: np.ndarray, side):
    """(init, refine_oracle, bounds) validated; ValueError before any work. (What each solver takes is
    checked against the solver table, ``spec.SolverSpec.refusals``.)"""
    init = opts["init"]
    if init is not None:
        init = np.asarray(init).astype(np.int64).reshape(-1)
        if init.size != k or np.unique(init).size != k or init.min() < 0 or init.max() >= M:
            raise ValueError(f"init must hold {k} distinct candidate indices in [0, {M}), got {opts['init']!r}")
    refine_oracle = opts["refine_oracle"]
    if refine_oracle is not None and not callable(refine_oracle):
        raise ValueError("refine_oracle must be a callable (T, d) -> (N, T) profits")
    if side is not None and refine_oracle is not None:  # side: the constraints or the support
        raise ValueError("constraints and support cannot be combined with refine_oracle: they are given per "
                         "candidate, so treatments must stay on the grid")
    bounds = opts["bounds"]
    if bounds is not None:
        try:
            low, high = (np.asarray(b, dtype=np.float64).reshape(-1) for b in bounds)
        except Exception as err:
            raise ValueError("bounds must be a pair (low (d,), high (d,))") from err
        if low.shape != (cand.shape[1],) or high.shape != (cand.shape[1],) or np.any(low > high):
            raise ValueError(f"bounds must be (low, high) arrays of shape ({cand.shape[1]},) with low <= high")
        bounds = (low, high)
    return init, refine_oracle, bounds
