"""Benchmark: GeomLoss' Sinkhorn against coarse_gpu's log-domain Sinkhorn on the same entropic plans.

The discretizer's inner problem is an entropic plan between N customers (mass 1/N each) and the K
chosen treatments, with the K column masses free or boxed (``coarse_gpu.discretize.sinkhorn``).
GeomLoss solves the balanced problem only (both marginals fixed), between point clouds. To compare
the two on the same plans this script fixes the column masses b (K,) to equal shares 1/K (the
discretizer's min_share = max_share = 1/K), so both solve

    max_P sum_ik P_ik U_ik - eps sum_ik P_ik (log P_ik - 1),  rows sum to 1/N, columns to b,

GeomLoss through ``SamplesLoss("sinkhorn", p=1, blur=eps, debias=False, potentials=True)`` with the
cost C = -U given as a callable on x = the profit rows (N, K) and y = the K unit vectors (K, K),
ours through ``entropic_plan(U, eps, lo=b, hi=b)``. It prints, per N: wall time, the plan's
objective sum P U, and the marginal violations of both.

    python scripts/bench_geomloss.py                     # N = 10,000 and 100,000, K = 5, CPU
    python scripts/bench_geomloss.py --n 1000000 --device cuda

GeomLoss is not a dependency of coarse_gpu (see the README's Dependencies for the measured reason);
``pip install geomloss`` to run this script.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from coarse_gpu.discretize.sinkhorn import entropic_plan


def instance(n: int, k: int, seed: int) -> torch.Tensor:
    """(N, K) float64 profits: a customer level, K columns with their own mean and heterogeneous slopes."""
    g = torch.Generator().manual_seed(seed)
    level = torch.randn(n, 1, generator=g, dtype=torch.float64)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    slopes = torch.randn(2, k, generator=g, dtype=torch.float64)
    return 8.0 + level + x @ slopes  # every column is some customers' best: no column of zero mass


def ours(U: torch.Tensor, eps: float, b: torch.Tensor):
    P, _, _, n_iter = entropic_plan(U, eps, lo=b, hi=b, tol=1e-7, max_iter=5000)
    return P, n_iter


def ours_annealed(U: torch.Tensor, eps: float, b: torch.Tensor, scaling: float, tol: float):
    """The same eps-scaling as GeomLoss (diameter down to eps by ``scaling``), warm column potentials."""
    diameter = float(U.max() - U.min())
    levels = [diameter]
    while levels[-1] * scaling > eps:
        levels.append(levels[-1] * scaling)
    levels.append(eps)
    g, total = None, 0
    for e in levels:
        P, g, _, n_iter = entropic_plan(U, e, lo=b, hi=b, g=g, tol=tol if e == eps else max(tol, 1e-3),
                                        max_iter=5000)
        total += n_iter
    return P, total


def geomloss_plan(U: torch.Tensor, eps: float, b: torch.Tensor, scaling: float):
    from geomloss import SamplesLoss

    n, k = U.shape
    y = torch.eye(k, dtype=U.dtype, device=U.device)
    loss = SamplesLoss("sinkhorn", p=1, blur=eps, scaling=scaling, debias=False, potentials=True,
                       cost=lambda a, c: -(a @ c.transpose(-1, -2)), backend="tensorized",
                       diameter=float(U.max() - U.min()))
    a = torch.full((n,), 1.0 / n, dtype=U.dtype, device=U.device)
    F, G = loss(a, U, b, y)
    # GeomLoss' plan: pi_ik = a_i b_k exp((F_i + G_k - C_ik) / eps), C = -U
    F, G = F.reshape(-1), G.reshape(-1)
    logP = (F[:, None] + G[None, :] + U) / eps + torch.log(a)[:, None] + torch.log(b)[None, :]
    return torch.exp(logP)


def report(name: str, P: torch.Tensor, U: torch.Tensor, b: torch.Tensor, secs: float, extra: str = "") -> None:
    n = U.shape[0]
    row = float((P.sum(1) - 1.0 / n).abs().sum())
    col = float((P.sum(0) - b).abs().sum())
    obj = float((P * U).sum())
    print(f"  {name:<22} {secs:8.3f} s   objective {obj:.8f}   |row - 1/N|_1 {row:.1e}   |col - b|_1 {col:.1e}"
          f"{extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--eps", type=float, default=0.01, help="entropic temperature, profit units")
    ap.add_argument("--scaling", type=float, default=0.9, help="GeomLoss' eps-scaling ratio")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import geomloss

    print(f"torch {torch.__version__}, geomloss {geomloss.__version__}, device {args.device}, "
          f"threads {torch.get_num_threads()}, K={args.k}, eps={args.eps}")
    for n in args.n:
        U = instance(n, args.k, args.seed).to(args.device)
        # equal shares (the balanced problem GeomLoss solves; for the discretizer, min_share = max_share = 1/K):
        # far from the free plan's shares, so the column potentials have real work to do
        b = torch.full((args.k,), 1.0 / args.k, dtype=U.dtype, device=U.device)
        print(f"N={n}: fixed column masses {np.round(b.cpu().numpy(), 4).tolist()}")
        for _ in range(2):  # the second round is the timed one (first-call overheads out)
            t0 = time.perf_counter()
            P, n_iter = ours(U, args.eps, b)
            t_ours = time.perf_counter() - t0
            t0 = time.perf_counter()
            Q = geomloss_plan(U, args.eps, b, args.scaling)
            t_geo = time.perf_counter() - t0
            geo_err = float((Q.sum(0) - b).abs().sum())
            runs = []
            for tol in (1e-7, geo_err):
                t0 = time.perf_counter()
                R, it = ours_annealed(U, args.eps, b, args.scaling, tol)
                runs.append((tol, R, it, time.perf_counter() - t0))
        report("coarse_gpu, cold", P, U, b, t_ours, f"   ({n_iter} iterations)")
        for tol, R, it, secs in runs:
            report(f"coarse_gpu, annealed", R, U, b, secs, f"   ({it} iterations, tol {tol:.1e})")
        report("geomloss tensorized", Q, U, b, t_geo)
        print(f"  max |P - Q| * N = {float((P - Q).abs().max()) * n:.2e}")


if __name__ == "__main__":
    main()
