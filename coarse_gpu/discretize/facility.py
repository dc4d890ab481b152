"""The facility-location objective and its searches: K of M columns maximizing F(S) = sum_i max_{m in S} Pi_im.

Choosing K treatments *with each customer at her best of them* is this problem (the discretizer's
objective without shares or constraints). Every place that picks a set of candidates by it calls
this module, so they optimize the same thing the same way:

- the discretizer's greedy restart (``seeding._seeds``) and the main job's warm start across K
  (``experiment.methods.warm_start``): ``greedy``, on any ``ProfitSource``;
- the grid baseline (``policy.baselines.grid_search``): exact enumeration (``exact_best``) or
  ``greedy`` + best-improvement 1-swap ``local_search``, so it is OT's objective restricted to the
  experimental arms' columns;
- ``exact.enumerate_optimum`` without shares (``solver="exact"`` and the tests' reference): ``exact_best``.

Greedy adds, K times, the column with the largest gain sum_i (Pi_im - best_i)_+ (F is monotone
submodular: greedy keeps at least 1 - 1/e of the optimal gain over the first column). Exact
enumeration screens all C(M, K) totals in float32 (meet-in-the-middle tables of half-subset maxima
when they fit, so a subset costs one max of two rows) and rescores every subset within a
conservative float32 error bound of the best in float64: the result is the exact float64 optimum,
ties to the lexicographically first subset.

Many rows and a small grid (the grid baseline at 2,000,000 customers x 15 arms: C(15, 8) subsets x 8
maxima over 2M rows is minutes on 2 cores) are screened by subset sums instead (``subset_sums``, float64,
O(N G log G + G^2 2^G) for ALL subsets at once, ~1 s there), then rescored in float64 the same way.
"""
from __future__ import annotations

from itertools import combinations
from math import comb
from typing import Optional, Sequence

import numpy as np
import torch

from coarse_gpu.discretize.profit import DenseSource, FactoredProfit, FactoredSource, ProfitSource

__all__ = ["best_subset", "column_means", "dense_source", "exact_best", "greedy", "local_search", "subset_sums",
           "total"]

DEFAULT_BYTES = 256 * 2**20  # temporaries of one enumeration / gain chunk
#: Grids of at most this many columns can be screened by subset sums (a G x 2^G float64 table: 8 MB at 16).
SUBSET_SUMS_MAX_G = 16
#: Enumeration work (rows x subsets x K maxima) above which subset sums screen instead on CPU: ~10 s of
#: enumeration on 2 cores; below it (every K of a 50,000-customer run on 15 arms) enumeration as always.
SUBSET_SUMS_MIN_WORK = 1 << 32


def column_means(src: ProfitSource) -> torch.Tensor:
    """(M,) mean profit of each candidate over the customers (one P^T Pi product)."""
    return src.scores(torch.full((src.n_local, 1), 1.0 / src.n, device=src.device, dtype=src.dtype))[0]


def greedy(src: ProfitSource, k: int, start: Sequence[int] = ()) -> list[int]:
    """K distinct columns: ``start`` (else the best single column), then the largest-gain column each time."""
    chosen = [int(c) for c in start] or [int(column_means(src).argmax())]
    best = src.columns(torch.tensor(chosen, device=src.device)).max(dim=1).values
    while len(chosen) < k:
        gain = src.gains(best)
        gain[torch.tensor(chosen, device=src.device)] = -torch.inf
        m = int(gain.argmax())
        chosen.append(m)
        best = torch.maximum(best, src.columns(torch.tensor([m], device=src.device))[:, 0])
    return chosen


def dense_source(p, max_bytes: int = DEFAULT_BYTES) -> ProfitSource:
    """A float64 ``ProfitSource`` over an (N, M) array / tensor, on the tensor's device (CPU for numpy),
    or over a ``FactoredProfit`` (on CPU; its N x M reductions are row-blocked, never materialized)."""
    if isinstance(p, FactoredProfit):
        return FactoredSource(p, torch.device("cpu"), torch.float64, max_bytes)
    t = torch.as_tensor(p, dtype=torch.float64)
    return DenseSource(t, t.device, torch.float64, max_bytes, checked=True)


def best_subset(p: torch.Tensor, k: int, method: str, seed: int = 0, n_restarts: int = 4,
                max_bytes: int = DEFAULT_BYTES) -> tuple[list[int], float]:
    """(sorted K columns, F) of (N, M) float64 ``p`` by ``method``: "exact" (enumeration), "greedy",
    or "local" (greedy start and ``n_restarts`` random starts drawn with ``seed``, each improved by
    ``local_search``; the best is kept)."""
    G = p.shape[1]
    if method == "exact":
        subsets = np.array(list(combinations(range(G), k)), dtype=np.int64).reshape(comb(G, k), k)
        best, value = exact_best(p, subsets, max_bytes)
        return sorted(int(s) for s in subsets[best]), value
    first = greedy(dense_source(p, max_bytes), k)
    if method == "greedy":
        return sorted(first), total(p, first)
    rng = np.random.default_rng(seed)
    starts = [first] + [rng.choice(G, size=k, replace=False).tolist() for _ in range(n_restarts)]
    S: Optional[list[int]] = None
    value = -np.inf
    for s0 in starts:
        s1, v1 = local_search(p, s0, max_bytes)
        if S is None or v1 > value + 1e-12 * max(1.0, abs(value)):
            S, value = s1, v1
    assert S is not None  # starts holds at least the first start
    return sorted(int(s) for s in S), value


def _plain_values(pT: torch.Tensor, subsets: torch.Tensor, max_bytes: int) -> torch.Tensor:
    """(C,) sum_i max_{g in S_c} p[i, g] for subset rows (C, k) of grid indices; pT is p transposed (G, N).

    Works on row gathers of the transposed matrix (contiguous), in chunks of subsets so that the
    two (chunk, N) temporaries stay under ``max_bytes``.
    """
    n = pT.shape[1]
    chunk = max(1, int(max_bytes // (2 * pT.element_size() * n)))
    out = torch.empty(subsets.shape[0], dtype=pT.dtype, device=pT.device)
    for s in range(0, subsets.shape[0], chunk):
        block = subsets[s: s + chunk]
        m = pT[block[:, 0]]
        for j in range(1, block.shape[1]):
            torch.maximum(m, pT[block[:, j]], out=m)
        out[s: s + chunk] = m.sum(dim=1)
    return out


def _split_values(pT: torch.Tensor, subsets: np.ndarray, max_bytes: int) -> Optional[torch.Tensor]:
    """Meet in the middle: the same values as ``_plain_values`` from tables of half-subset maxima.

    S = (first h members) + (last k - h members); the (C(G, h), N) tables of maxima over all
    h-subsets (and (k-h)-subsets) are built once, then each subset costs one max of two table rows
    instead of k - 1 maxima. Returns None when the tables would not fit in ``max_bytes`` / 2.
    """
    G, n = pT.shape
    k = subsets.shape[1]
    h = k // 2
    if h < 2:
        return None
    sizes = {h, k - h}
    table_bytes = sum(comb(G, s) for s in sizes) * n * pT.element_size()
    if table_bytes > max_bytes // 2:
        return None
    dev = pT.device
    tables, keys = {}, {}
    for s in sizes:
        combos = np.array(list(combinations(range(G), s)), dtype=np.int64)
        tables[s] = _plain_values_table(pT, torch.as_tensor(combos, device=dev))
        keys[s] = _combo_keys(combos, G)  # increasing: combinations() is lexicographic
    # row of each half-subset in its table, found through its mixed-radix key
    ia = torch.as_tensor(np.searchsorted(keys[h], _combo_keys(subsets[:, :h], G)), device=dev)
    ib = torch.as_tensor(np.searchsorted(keys[k - h], _combo_keys(subsets[:, h:], G)), device=dev)
    chunk = max(1, int((max_bytes // 2) // (2 * pT.element_size() * n)))
    out = torch.empty(subsets.shape[0], dtype=pT.dtype, device=dev)
    ta, tb = tables[h], tables[k - h]
    for s in range(0, subsets.shape[0], chunk):
        m = ta[ia[s: s + chunk]]
        torch.maximum(m, tb[ib[s: s + chunk]], out=m)
        out[s: s + chunk] = m.sum(dim=1)
    return out


def _plain_values_table(pT: torch.Tensor, combos: torch.Tensor) -> torch.Tensor:
    """(C, N) per-customer maxima over each combination row of ``combos`` (C, s)."""
    m = pT[combos[:, 0]]
    for j in range(1, combos.shape[1]):
        torch.maximum(m, pT[combos[:, j]], out=m)
    return m


def _combo_keys(combos: np.ndarray, G: int) -> np.ndarray:
    """Integer key of each row of sorted grid indices (mixed radix G)."""
    key = np.zeros(combos.shape[0], dtype=np.int64)
    for j in range(combos.shape[1]):
        key = key * G + combos[:, j]
    return key


def exact_best(p: torch.Tensor, subsets: np.ndarray, max_bytes: int = DEFAULT_BYTES) -> tuple[int, float]:
    """Index of the best subset row and its total profit, exactly (float64), screening in float32.

    All C(G, k) totals are first computed in float32 (half the memory traffic, and the
    meet-in-the-middle tables when they fit) -- or, for many rows on a small grid on CPU, by
    ``subset_sums`` in float64; every subset within a conservative error bound of the best is then
    rescored in float64 and the best of those is returned (ties: first).
    """
    n, G = p.shape
    scale = float(p.abs().max(dim=1).values.sum())
    if p.device.type == "cpu" and G <= SUBSET_SUMS_MAX_G and n * subsets.size > SUBSET_SUMS_MIN_WORK:
        vals = torch.as_tensor(subset_sums(p.numpy(), subsets))
        # float64 sums of the same n x G terms in another order: each total within ~n eps of the exact one
        tol = 4.0 * n * 2.0 ** -52 * scale + 1e-12
        near = torch.nonzero(vals >= float(vals.max()) - 2 * tol).reshape(-1)
    else:
        pT32 = p.T.contiguous().float()
        vals32 = _split_values(pT32, subsets, max_bytes)
        if vals32 is None:
            vals32 = _plain_values(pT32, torch.as_tensor(subsets, device=p.device), max_bytes)
        # rounding each entry to float32 moves a total by <= 2^-24 sum_i max_g |p_ig|; summation adds
        # O(log N) eps more: 1e-5 relative is ~100x that, so the float64 winner is always rescored.
        tol = 1e-5 * scale + 1e-12
        near = torch.nonzero(vals32.double() >= float(vals32.max()) - 2 * tol).reshape(-1)
    pT64 = p.T.contiguous()
    vals64 = _plain_values(pT64, torch.as_tensor(subsets, device=p.device)[near], max_bytes)
    j = int(torch.argmax(vals64))
    return int(near[j]), float(vals64[j])


def subset_sums(p: np.ndarray, subsets: np.ndarray, block: int = 1 << 17) -> np.ndarray:
    """(C,) float64 sum_i max_{g in S_c} p[i, g] for subset rows (C, k) of the G <= 16 columns of p (N, G).

    Customer i's best within S is her highest-ranked column that lies in S: with her columns sorted by
    profit, column a (profit v) is her best in S iff a is in S and none of the columns she ranks above
    a (the set P) is. So with w[a, P] = the sum of v over customers and ranks (one bincount per row
    block), F(S) = sum_{a in S} sum_{P within the complement of S} w[a, P]: subset sums over the G-bit
    masks P (G passes over a G x 2^G table), one lookup per member a. Ties in profit rank either way:
    the max is the same.
    """
    n, G = p.shape
    full = (1 << G) - 1
    w = np.zeros(G << G)
    for lo in range(0, n, block):
        b = p[lo:lo + block]
        order = np.argsort(-b, axis=1, kind="stable")
        above = np.zeros_like(order)  # mask of the columns ranked above each rank's column
        np.bitwise_or.accumulate(np.left_shift(1, order[:, :-1]), axis=1, out=above[:, 1:])
        w += np.bincount((order << G | above).ravel(), weights=np.take_along_axis(b, order, axis=1).ravel(),
                         minlength=G << G)
    Z = w.reshape(G, 1 << G)
    for j in range(G):  # Z[a, U] = sum over P within U of w[a, P]: add each mask without bit j to its with-j twin
        Zj = Z.reshape(G, -1, 2, 1 << j)
        Zj[:, :, 1, :] += Zj[:, :, 0, :]
    masks = np.left_shift(1, subsets).sum(1)
    return Z[subsets, (full ^ masks)[:, None]].sum(1)


def total(p: torch.Tensor, S: list[int]) -> float:
    """sum_i max_{g in S} p[i, g] in float64."""
    return float(p[:, list(S)].max(dim=1).values.sum())


def _column_gains(p: torch.Tensor, base: torch.Tensor, max_bytes: int) -> torch.Tensor:
    """(G,) sum_i max(base_i, p[i, g]) for every column g, chunked over columns."""
    n, g = p.shape
    chunk = max(1, int(max_bytes // (8 * n)))
    out = torch.empty(g, dtype=torch.float64, device=p.device)
    for s in range(0, g, chunk):
        out[s: s + chunk] = torch.maximum(base[:, None], p[:, s: s + chunk]).sum(dim=0)
    return out


def local_search(p: torch.Tensor, start: list[int], max_bytes: int = DEFAULT_BYTES,
                 max_iter: int = 200) -> tuple[list[int], float]:
    """Best-improvement 1-swap local search from ``start``; returns (subset, total profit)."""
    n, g = p.shape
    S = list(start)
    k = len(S)
    value = total(p, S)
    for _ in range(max_iter):
        sub = p[:, S]  # (N, k)
        if k > 1:
            top2 = torch.topk(sub, 2, dim=1)
            b1, b2, pos = top2.values[:, 0], top2.values[:, 1], top2.indices[:, 0]
        best_gain, best_move = 0.0, None
        for j in range(k):
            if k > 1:  # best profit within S without member j
                base = torch.where(pos == j, b2, b1)
            else:
                base = torch.full((n,), -torch.inf, dtype=torch.float64, device=p.device)
            vals = _column_gains(p, base, max_bytes)
            vals[S] = -torch.inf  # swapping in a member of S is not a move
            c = int(torch.argmax(vals))
            gain = float(vals[c]) - value
            if gain > best_gain + 1e-12 * max(1.0, abs(value)):
                best_gain, best_move = gain, (j, c)
        if best_move is None:
            break
        S[best_move[0]] = best_move[1]
        value += best_gain
    value = total(p, S)  # exact, no drift
    return S, value
