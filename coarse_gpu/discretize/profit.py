"""Where the N x M profit matrix comes from, and the few reductions the discretizer needs over it.

The discretizer never needs the N x M matrix as such. Everything it does reduces to these operations:

* ``columns(idx)``      Pi[:, idx]                         (N, J)  the K chosen treatments (all restarts)
* ``scores(P)``         P^T Pi                             (J, M)  the location update (J = restarts x K)
* ``row_max()``         max_m Pi[i, m] and its argmax      (N,)    full personalization, ideal treatments
* ``gains(best)``       sum_i relu(Pi[i, m] - best_i)      (M,)    greedy seeding / re-seeding empty slots
* ``submatrix(r, c)``   Pi[r][:, c] (c None: all columns)  small   the profit scale (for epsilon), the
                                                                   swap screening sample
* ``segment_scores(A)`` P^T Pi for one-hot plans P         (J, M)  the Lloyd location update (a default
                                                                   through ``scores``; sources may do better)
* ``rows(idx)``         the source restricted to rows idx          the search / annealing samples

Three sources implement them:

``DenseSource``     an (N, M) array. On the device when it fits ``memory_limit_bytes``; otherwise it stays
                    in host memory and is streamed to the device in row blocks (chunked path).
``FactoredSource``  Pi = V @ W.T with V (N, A), W (M, A). ``columns`` and ``scores`` never touch N x M:
                    P^T (V W^T) = (P^T V) W^T costs O(N J A). Only ``row_max`` and ``gains`` reduce over
                    all N x M entries, and they do it lazily: with KeOps LazyTensors (one fused kernel,
                    nothing materialized) or with row-blocked torch matmuls.
``OracleSource``    a callable T (J, d) -> (N, J) profits evaluated on the candidate grid in column
                    chunks, for when even the dense evaluation does not fit (a small grid is simply
                    evaluated once into a ``DenseSource``).

Why KeOps only for the factored reductions, and only by default on CUDA: the entropic plan lives on the
N x K chosen columns (K ~ 5), so its log-sum-exp is a tiny dense tensor op; the only N x M work is the
max/argmax and relu-sum over the M candidates, which KeOps fuses on the GPU without ever storing N x M.
On CPU, KeOps' generated loops are slower than blocked BLAS (measured ~50x on 2 cores for A = 6), so the
default there is the row-blocked torch matmul; ``lazy="keops"`` forces KeOps anywhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch

_KEOPS = None


def keops_available() -> bool:
    """True when pykeops imports and can build kernels (checked once, lazily)."""
    global _KEOPS
    if _KEOPS is None:
        try:
            # here: pykeops is an optional extra ([keops]); this is the check that it imports
            import pykeops  # noqa: F401
            from pykeops.torch import LazyTensor  # noqa: F401

            _KEOPS = True
        except Exception:  # ImportError, missing compiler, ...
            _KEOPS = False
    return _KEOPS


@dataclass
class FactoredProfit:
    """A low-rank profit matrix Pi = V @ W.T, never formed explicitly.

    V : (N, A) per-customer predictions at A basis points (e.g. a CATE model's per-arm outputs).
    W : (M, A) weights of the M candidate treatments on that basis (e.g. ``ArmGrid.weights``).
    """

    V: Any  # numpy array or torch tensor
    W: Any

    @property
    def shape(self) -> tuple[int, int]:
        return int(np.shape(self.V)[0]), int(np.shape(self.W)[0])

    def dense(self) -> np.ndarray:
        """The (N, M) matrix as float64 numpy (only for small problems and tests)."""
        return _to_numpy(self.V) @ _to_numpy(self.W).T

    def columns(self, idx) -> np.ndarray:
        """(N, J) float64 numpy: the columns ``idx`` (J,) of Pi, at O(N J A) cost."""
        return _to_numpy(self.V) @ _to_numpy(self.W)[np.asarray(idx, dtype=np.int64)].T

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """(hi - lo, M) float64 numpy: the rows lo:hi of Pi."""
        return _to_numpy(self.V[lo:hi]) @ _to_numpy(self.W).T


def profit_columns(profit, idx) -> np.ndarray:
    """(N, J) float64 columns ``idx`` of a dense (N, M) profit matrix or a ``FactoredProfit``."""
    if isinstance(profit, FactoredProfit):
        return profit.columns(idx)
    return np.asarray(profit, dtype=np.float64)[:, np.asarray(idx, dtype=np.int64)]


def profit_row_blocks(profit, max_elements: int = 1 << 24):
    """Yield (lo, hi, (hi - lo, M) float64 block) over the rows of a dense profit matrix or a
    ``FactoredProfit``; a factored block is formed only for its rows (``max_elements`` entries at most)."""
    n, m = profit.shape
    step = max(1, max_elements // max(1, m))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        yield lo, hi, (profit.rows(lo, hi) if isinstance(profit, FactoredProfit)
                       else np.asarray(profit[lo:hi], dtype=np.float64))


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy().astype(np.float64, copy=False)
    return np.asarray(x, dtype=np.float64)


def _as_tensor(x, device, dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), device=device).to(dtype)


# CPU temporaries of 2^19 elements (2 MB in float32) stay in cache; one pass over a whole N x M
# temporary is ~10x slower on CPU (measured on 1e4 x 1024: 86 ms against 8 ms), mostly page faults.
_CACHE_ELEMENTS = 1 << 19


def _row_step(t: torch.Tensor, m: int) -> int:
    """Rows per block for an elementwise pass over (rows, m): cache-sized on CPU, everything on GPU."""
    return t.shape[0] if t.device.type == "cuda" else max(64, _CACHE_ELEMENTS // max(1, m))


def _check_finite(t: torch.Tensor, name: str) -> None:
    # One sum first: NaN or inf anywhere makes it non-finite, and a reduction reads the data once with
    # no temporary (0.05 s against 0.6 s for isfinite on 1e6 x 256). Only a non-finite sum (bad
    # entries, or a float overflow of a huge finite table) pays for the exact elementwise check.
    if t.numel() == 0 or bool(torch.isfinite(t.sum())):
        return
    t2 = t.reshape(t.shape[0], -1) if t.ndim > 1 else t.reshape(-1, 1)
    step = _row_step(t2, t2.shape[1])
    for lo in range(0, t2.shape[0], step):
        if not bool(torch.isfinite(t2[lo:lo + step]).all()):
            raise ValueError(f"{name} contains NaN or inf")


def relu_colsum(X: torch.Tensor, best: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(M,) sum over rows i of (X_im - best_i)_+ for X (N, M), best (N,); row blocks on CPU (see above).

    ``out`` (M,), if given, is added to in place and returned.
    """
    n, m = X.shape
    out = torch.zeros(m, device=X.device, dtype=X.dtype) if out is None else out
    step = _row_step(X, m)
    for lo in range(0, n, step):
        out += (X[lo:lo + step] - best[lo:lo + step, None]).clamp_min_(0).sum(0)
    return out


def swap_values(X: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """(K, M) float64: G[k, m] = sum_i max(r_ik, X_im), the total profit after swapping treatment k for m.

    X (N, M) profits at the candidates, U (N, K) at the current treatments; r_ik = customer i's best
    profit without treatment k: its best t1_i, or its second best t2_i when k is its best (a_i = k).
    Two passes over X for all K slots instead of one per slot:
        max(r_ik, x) = max(t1_i, x) + [a_i = k] (min(max(x, t2_i), t1_i) - t1_i)
    so G = sum_i max(t1_i, X_i.) (a relu sum) - onehot(a)^T relu(t1 - max(X, t2)) (a (K, N) @ (N, M) product).
    """
    n, m = X.shape
    k = U.shape[1]
    if k == 1:
        return X.sum(0).to(torch.float64)[None]
    top = U.topk(2, dim=1)
    t1, t2, a = top.values[:, 0], top.values[:, 1], top.indices[:, 0]
    over = torch.zeros(m, device=X.device, dtype=X.dtype)  # sum_i (X_im - t1_i)_+
    loss = torch.zeros(k, m, device=X.device, dtype=X.dtype)  # sum_{i: a_i = k} (t1_i - max(X_im, t2_i))_+
    step = _row_step(X, m)
    for lo in range(0, n, step):
        x, h1, h2 = X[lo:lo + step], t1[lo:lo + step, None], t2[lo:lo + step, None]
        over += (x - h1).clamp_min_(0).sum(0)
        onehot = torch.nn.functional.one_hot(a[lo:lo + step], k).to(X.dtype)
        loss += onehot.T @ (h1 - torch.maximum(x, h2)).clamp_min_(0)
    return t1.to(torch.float64).sum() + over.to(torch.float64)[None, :] - loss.to(torch.float64)


class ProfitSource:
    """Common interface; see the module docstring. All results are tensors on ``device`` in ``dtype``."""

    n: int
    m: int
    device: torch.device
    dtype: torch.dtype
    lazy: bool = False
    path: str = "dense"

    def columns(self, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def columns64(self, idx: torch.Tensor) -> torch.Tensor:
        """Pi[:, idx] in float64 (final objective and final assignment are computed in double)."""
        raise NotImplementedError

    def scores(self, P: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def segment_scores(self, A: torch.Tensor, k: int) -> torch.Tensor:
        """(R, K, M): S[r, c, m] = sum of Pi_im over the customers i with A[i, r] = c (A (N, R) int64).

        The location step of R hard assignments: the plan of each is a one-hot matrix, so this is
        ``scores`` of the (N, R K) one-hot plan unless a source has a cheaper segment sum.
        """
        R = A.shape[1]
        onehot = torch.nn.functional.one_hot(A, k).to(self.dtype).reshape(self.n, R * k)
        return self.scores(onehot).view(R, k, self.m)

    def row_max(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def gains(self, best: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def submatrix(self, rows: torch.Tensor, cols: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Pi[rows][:, cols] (cols None: every candidate)."""
        raise NotImplementedError

    def rows(self, idx: np.ndarray) -> Optional["ProfitSource"]:
        """The same source restricted to customers ``idx`` (sorted int64), or None if not supported."""
        return None

    # Reductions over customers that a sharded problem (``distributed.ShardedSource``: this process
    # holds ``n_local`` of the ``n`` rows) completes across processes. A plain source holds every row,
    # so they are identities here and the single-process numbers are untouched.
    @property
    def n_local(self) -> int:
        """Rows held by this process: the first dimension of ``columns``, ``row_max``, plans P."""
        return self.n

    def reduce_sum(self, x):
        """Sum over all shards of a per-shard partial sum ``x`` (tensor, ndarray or float; same type back)."""
        return x

    def max_value(self, t: torch.Tensor) -> torch.Tensor:
        """Largest entry of a per-row tensor t (n_local,) over all shards."""
        return t.max()

    def row_item(self, t: torch.Tensor, i: int) -> torch.Tensor:
        """t[i] for a per-row tensor t (n_local,) and a row index i in [0, n) of the whole problem."""
        return t[i]

    def sample_row(self, weights: torch.Tensor, gen: torch.Generator) -> int:
        """A row in [0, n) drawn with probability proportional to per-row weights (n_local,) >= 0."""
        return sample_index(weights, gen)


def sample_index(weights: torch.Tensor, gen: torch.Generator) -> int:
    """One index drawn with probability proportional to nonnegative weights (any length)."""
    c = torch.cumsum(weights.to(torch.float64), 0)
    total = float(c[-1])
    if not total > 0:
        return int(torch.randint(weights.shape[0], (1,), generator=gen))
    u = float(torch.rand(1, generator=gen, dtype=torch.float64)) * total
    return int(min(weights.shape[0] - 1, int(torch.searchsorted(c, torch.tensor([u], dtype=c.dtype, device=c.device)))))


def _rows_per_block(m: int, itemsize: int, memory_limit: int, floor: int = 256) -> int:
    """Rows of an (rows, m) temporary that fit a quarter of the memory budget (at least ``floor``)."""
    budget = max(memory_limit // 4, 1 << 20)
    return max(floor, int(budget // max(1, m * itemsize * 2)))


def _take_rows(t: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """t[idx] for sorted row indices; on CPU through numpy, whose row gather is 4x faster than torch's
    advanced indexing (0.08 s against 0.32 s for 65k rows of a 1e6 x 1024 float32 matrix)."""
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(t.numpy()[idx])
    return t[torch.as_tensor(idx, device=t.device)]


class DenseSource(ProfitSource):
    """An explicit (N, M) matrix; resident on the device or streamed from host memory in row blocks."""

    def __init__(self, profit, device: torch.device, dtype: torch.dtype, memory_limit: int,
                 checked: bool = False) -> None:
        """``checked``: the values are already known finite (rows of a checked source)."""
        self.device, self.dtype = device, dtype
        self.memory_limit = memory_limit
        self.host = profit  # original array (numpy or torch), kept for float64 results
        self.n, self.m = int(profit.shape[0]), int(profit.shape[1])
        itemsize = torch.finfo(dtype).bits // 8
        self.block = _rows_per_block(self.m, itemsize, memory_limit)
        self.resident = self.n * self.m * itemsize <= memory_limit
        self.lazy = not self.resident
        self.path = "dense" if self.resident else "dense-chunked"
        if self.resident:
            self.X: Optional[torch.Tensor] = _as_tensor(profit, device, dtype)
            if not checked:
                _check_finite(self.X, "profit")
        else:
            self.X = None
            for blk in self._blocks() if not checked else ():
                _check_finite(blk, "profit")
        self._rowmax = None

    def _block(self, lo: int, hi: int, dtype=None) -> torch.Tensor:
        if self.X is not None and dtype is None:  # resident (X is set exactly when it is)
            return self.X[lo:hi]
        return _as_tensor(self.host[lo:hi], self.device, dtype or self.dtype)

    def _blocks(self, dtype=None):
        for lo in range(0, self.n, self.block):
            yield self._block(lo, min(self.n, lo + self.block), dtype)

    def columns(self, idx):
        if self.resident:
            return self.X.index_select(1, idx)
        return torch.cat([b.index_select(1, idx) for b in self._blocks()], 0)

    def columns64(self, idx):
        host = self.host
        cols = idx.cpu().numpy()
        if hasattr(host, "columns64"):  # a densely evaluated oracle: re-evaluate those columns in double
            return host.columns64(cols)
        if isinstance(host, torch.Tensor):
            out = host.detach()[:, torch.as_tensor(cols, device=host.device)].to(torch.float64)
        else:
            out = torch.as_tensor(np.asarray(host)[:, cols].astype(np.float64, copy=False))
        return out.to(self.device)

    def scores(self, P):
        if self.resident:
            if self.device.type == "cpu" and self.m > 256 and P.shape[1] <= 8:
                # Column panels of 256: MKL runs the skinny (K, N) @ (N, M) product at a third of memory
                # speed when M is large (rows 4 KB apart at M = 1024); panels measured 1.4-1.7x faster
                # for one restart's plan (10 ms against 17 ms at 16k x 1024, K = 5), but slower for
                # batched restarts (89 ms against 64 ms at 65k x 1024 with 40 plan columns).
                return torch.cat([P.T @ self.X[:, j:j + 256] for j in range(0, self.m, 256)], 1)
            return P.T @ self.X
        out = torch.zeros(P.shape[1], self.m, device=self.device, dtype=self.dtype)
        lo = 0
        for b in self._blocks():
            out += P[lo:lo + b.shape[0]].T @ b
            lo += b.shape[0]
        return out

    def segment_scores(self, A, k):
        # On CPU, for one or two assignments and many candidates, adding each customer's row into its
        # segment (index_add_, one read of Pi at memory speed) beats the one-hot product, which MKL runs
        # at a third of memory bandwidth for a (K, N) @ (N, M) with K = 5: measured 0.37 s against
        # 1.0 s at N = 1e6, M = 1024 (0.03 s against 0.12 s at 65k x 1024), and 0.27 s against 0.52 s
        # at 1e6 x 512; at M <= 256, or more assignments at once, the product is as fast or faster.
        R = A.shape[1]
        if self.resident and self.device.type == "cpu" and ((R == 1 and self.m >= 512) or (R == 2 and self.m >= 1024)):
            out = torch.zeros(R, k, self.m, device=self.device, dtype=self.dtype)
            for r in range(R):
                out[r].index_add_(0, A[:, r].contiguous(), self.X)
            return out
        return super().segment_scores(A, k)

    def row_max(self):
        if self._rowmax is None:
            vals, args = [], []
            for lo in range(0, self.n, self.block):
                v, a = self._block(lo, min(self.n, lo + self.block)).max(1)
                vals.append(v)
                args.append(a)
            self._rowmax = (torch.cat(vals), torch.cat(args))
        return self._rowmax

    def gains(self, best):
        out = torch.zeros(self.m, device=self.device, dtype=self.dtype)
        for lo in range(0, self.n, self.block):
            hi = min(self.n, lo + self.block)
            relu_colsum(self._block(lo, hi), best[lo:hi], out)
        return out

    def rows(self, idx):
        host = self.host
        if hasattr(host, "columns64"):  # densely evaluated oracle: its float32 values are what we have
            sub = _take_rows(self.X, idx)
        elif isinstance(host, torch.Tensor):
            sub = _take_rows(host.detach(), idx)
        else:
            sub = np.asarray(host)[idx]
        return DenseSource(sub, self.device, self.dtype, self.memory_limit, checked=True)

    def submatrix(self, rows, cols=None):
        if self.resident:
            sub = _take_rows(self.X, rows.cpu().numpy())
        else:
            host = self.host
            r = rows.cpu().numpy()
            sub = _as_tensor(host[r] if not isinstance(host, torch.Tensor) else host.detach().cpu()[r],
                             self.device, self.dtype)
        return sub if cols is None else sub[:, cols.to(sub.device)]


class FactoredSource(ProfitSource):
    """Pi = V @ W.T; lazy N x M reductions by KeOps or row-blocked torch matmuls."""

    def __init__(self, fp: FactoredProfit, device, dtype, memory_limit: int, lazy: str = "auto") -> None:
        self.device, self.dtype = device, dtype
        V, W = fp.V, fp.W
        if np.ndim(V) != 2 or np.ndim(W) != 2:
            raise ValueError(
                f"profit: FactoredProfit needs V (N, A) and W (M, A) 2-D arrays, got shapes {np.shape(V)} and "
                f"{np.shape(W)}"
            )
        if np.shape(V)[1] != np.shape(W)[1]:
            raise ValueError(
                f"profit: FactoredProfit shapes mismatch: V is {tuple(np.shape(V))}, W is {tuple(np.shape(W))} "
                "(V (N, A) and W (M, A) must share A)"
            )
        self.V = _as_tensor(V, device, dtype).contiguous()
        self.W = _as_tensor(W, device, dtype).contiguous()
        _check_finite(self.V, "profit (FactoredProfit.V)")
        _check_finite(self.W, "profit (FactoredProfit.W)")
        self.V64_host, self.W64_host = V, W
        self.n, self.m = self.V.shape[0], self.W.shape[0]
        itemsize = torch.finfo(dtype).bits // 8
        self.block = _rows_per_block(self.m, itemsize, memory_limit)
        if lazy not in ("auto", "keops", "torch"):
            raise ValueError(f"lazy must be 'auto', 'keops' or 'torch', got {lazy!r}")
        if lazy == "keops" and not keops_available():
            raise ValueError("lazy='keops' was requested but pykeops is not importable")
        self.use_keops = lazy == "keops" or (lazy == "auto" and device.type == "cuda" and keops_available())
        self.lazy = True
        self.path = "factored-keops" if self.use_keops else "factored-torch"
        self._rowmax = None

    def columns(self, idx):
        return self.V @ self.W.index_select(0, idx).T

    def columns64(self, idx):
        Wt = _as_tensor(self.W64_host, self.device, torch.float64).index_select(0, idx.to(self.device)).T
        host = self.V64_host
        out = torch.empty(self.n, Wt.shape[1], dtype=torch.float64, device=self.device)
        # V is converted to float64 block by block: a whole float64 copy of V (N x A) costs more in
        # allocation than the (N, J) product itself (0.1 s at N = 1e6, A = 36 on CPU).
        step = self.n if self.device.type == "cuda" else _row_step(self.V, 8 * self.V.shape[1])
        for lo in range(0, self.n, step):
            out[lo:lo + step] = _as_tensor(host[lo:lo + step], self.device, torch.float64) @ Wt
        return out

    def scores(self, P):
        # P^T (V W^T) = (P^T V) W^T: O(N J A) and no N x M intermediate.
        return (P.T @ self.V) @ self.W.T

    def _product_rows(self) -> int:
        """Rows per (rows, M) block of V W^T in the torch reductions: cache-sized on CPU, within budget."""
        return min(self.block, _row_step(self.V, self.m))

    def _lazy_pair(self):
        from pykeops.torch import LazyTensor  # here: an optional extra, used only when use_keops

        return LazyTensor(self.V[:, None, :]), LazyTensor(self.W[None, :, :])

    def row_max(self):
        if self._rowmax is None:
            if self.use_keops:
                Vi, Wj = self._lazy_pair()
                v, a = (Vi | Wj).max_argmax(dim=1)
                self._rowmax = (v.reshape(-1), a.reshape(-1).long())
            else:
                vals, args = [], []
                step = self._product_rows()
                for lo in range(0, self.n, step):
                    v, a = (self.V[lo:lo + step] @ self.W.T).max(1)
                    vals.append(v)
                    args.append(a)
                self._rowmax = (torch.cat(vals), torch.cat(args))
        return self._rowmax

    def gains(self, best):
        if self.use_keops:
            from pykeops.torch import LazyTensor  # here: an optional extra, used only when use_keops

            Vi, Wj = self._lazy_pair()
            bi = LazyTensor(best.to(self.dtype).reshape(-1, 1, 1).contiguous())
            return ((Vi | Wj) - bi).relu().sum(dim=0).reshape(-1)
        out = torch.zeros(self.m, device=self.device, dtype=self.dtype)
        step = self._product_rows()
        for lo in range(0, self.n, step):
            relu_colsum(self.V[lo:lo + step] @ self.W.T, best[lo:lo + step], out)
        return out

    def submatrix(self, rows, cols=None):
        return self.V[rows] @ (self.W if cols is None else self.W[cols]).T

    def rows(self, idx):
        sub = object.__new__(FactoredSource)
        sub.__dict__.update(self.__dict__)
        t = torch.as_tensor(idx, device=self.device)
        sub.V = self.V.index_select(0, t).contiguous()
        host = self.V64_host
        sub.V64_host = host.detach()[torch.as_tensor(idx, device=host.device)] if isinstance(host, torch.Tensor) \
            else np.asarray(host)[idx]
        sub.n = int(sub.V.shape[0])
        sub._rowmax = None
        return sub


class OracleSource(ProfitSource):
    """A profit oracle evaluated on the candidate grid in column chunks (nothing N x M is kept)."""

    def __init__(self, oracle: Callable, candidates: np.ndarray, n: int, device, dtype, memory_limit: int) -> None:
        self.oracle, self.device, self.dtype = oracle, device, dtype
        self.cand = torch.as_tensor(candidates, dtype=torch.float64, device=device)
        self.n, self.m = int(n), int(candidates.shape[0])
        itemsize = torch.finfo(dtype).bits // 8
        self.chunk = max(1, int(max(memory_limit // 4, 1 << 20) // max(1, self.n * itemsize * 2)))
        self.lazy = True
        self.path = "oracle-chunked"
        self._rowmax = None

    def _eval(self, idx: torch.Tensor, dtype) -> torch.Tensor:
        out = call_oracle(self.oracle, self.cand[idx], self.n, self.device, dtype)
        return out

    def columns(self, idx):
        return self._eval(idx.to(self.device), self.dtype)

    def columns64(self, idx):
        return self._eval(idx.to(self.device), torch.float64)

    def _chunks(self):
        for lo in range(0, self.m, self.chunk):
            idx = torch.arange(lo, min(self.m, lo + self.chunk), device=self.device)
            yield lo, self._eval(idx, self.dtype)

    def scores(self, P):
        out = torch.empty(P.shape[1], self.m, device=self.device, dtype=self.dtype)
        for lo, blk in self._chunks():
            out[:, lo:lo + blk.shape[1]] = P.T @ blk
        return out

    def row_max(self):
        if self._rowmax is None:
            best = torch.full((self.n,), -math.inf, device=self.device, dtype=self.dtype)
            arg = torch.zeros(self.n, dtype=torch.long, device=self.device)
            for lo, blk in self._chunks():
                v, a = blk.max(1)
                better = v > best
                best = torch.where(better, v, best)
                arg = torch.where(better, a + lo, arg)
            self._rowmax = (best, arg)
        return self._rowmax

    def gains(self, best):
        out = torch.empty(self.m, device=self.device, dtype=self.dtype)
        for lo, blk in self._chunks():
            out[lo:lo + blk.shape[1]] = relu_colsum(blk, best)
        return out

    def submatrix(self, rows, cols=None):
        return self.columns(torch.arange(self.m, device=self.device) if cols is None else cols)[rows]


def call_oracle(oracle: Callable, T: torch.Tensor, n: Optional[int], device, dtype) -> torch.Tensor:
    """Evaluate a profit oracle on treatments T (J, d) and check that it returned an (N, J) finite array."""
    out = oracle(T)
    out = _as_tensor(out, device, dtype)
    if out.ndim != 2 or out.shape[1] != T.shape[0] or (n is not None and out.shape[0] != n):
        want = f"({n if n is not None else 'N'}, {T.shape[0]})"
        raise ValueError(f"profit oracle returned shape {tuple(out.shape)} for {T.shape[0]} treatments; "
                         f"expected {want}")
    _check_finite(out, "profit oracle output")
    return out
