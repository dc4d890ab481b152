"""Sharded discretize (distributed=True) on 2 gloo processes against the single-process solve.

One pair of worker processes (this file run as a script, ``_worker``) solves every case in CASES on
its rows of the instance (uneven splits) and pickles its results; the tests compare them with
``discretize`` on the concatenated rows in this process: lloyd must give the same treatments and
assignment and the objective to float tolerance, sinkhorn the objective within 0.01 %, every rank the
same treatments and the global objective / shares.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from coarse_gpu.discretize import FactoredProfit, discretize

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
# name: (kind, N, M, K, rows of rank 0, options). Rank 1 holds the rest. N = 300,000 is above the
# 262,144 customers from which the search runs on a 65,536-customer subsample (then the sharded
# polish on all N); "tiny-rank" gives rank 0 three customers, so it holds none of the subsample.
CASES = {
    "lloyd-dense": ("dense", 4000, 60, 5, 1700, dict(solver="lloyd")),
    "lloyd-factored": ("factored", 4000, 80, 5, 2300, dict(solver="lloyd")),
    "lloyd-oracle": ("oracle", 3000, 50, 4, 1000, dict(solver="lloyd")),
    "lloyd-large": ("factored", 300_000, 100, 5, 140_000, dict(solver="lloyd")),
    "lloyd-tiny-rank": ("dense", 4000, 40, 4, 3, dict(solver="lloyd", subsample=300)),
    "sinkhorn-dense": ("dense", 4000, 60, 5, 1700, {}),
    "sinkhorn-factored": ("factored", 4000, 200, 5, 2000, {}),
    "sinkhorn-large": ("factored", 300_000, 100, 5, 160_000, {}),
    "sinkhorn-tiny-rank": ("dense", 4000, 40, 4, 3, dict(subsample=300, anneal_rows=100)),
    # off-grid refinement: each rank's oracle scores its own rows of a smooth profit in t
    "lloyd-refine": ("quadratic", 3000, 30, 4, 1200, dict(solver="lloyd")),
    "sinkhorn-refine": ("quadratic", 3000, 30, 4, 1900, {}),
}
REFUSED = {"min_share": dict(min_share=0.1), "max_share": dict(max_share=0.5), "solver='mip'": dict(solver="mip")}


def _instance(kind: str, n: int, m: int, seed: int):
    """The whole problem: (N, M) float32 profits, or FactoredProfit numpy factors; low rank plus noise."""
    rng = np.random.default_rng(seed)
    if kind == "factored":
        return FactoredProfit(rng.normal(size=(n, 8)).astype(np.float32), rng.normal(size=(m, 8)).astype(np.float32))
    if kind == "quadratic":  # pi_i(t) = b_i - (t - c_i)^2 / 10: customer i's best treatment c_i, off the grid
        return np.stack([rng.uniform(0, m - 1, n), rng.normal(size=n)], 1)
    return (rng.normal(size=(n, 6)) @ rng.normal(size=(6, m)) + 0.5 * rng.normal(size=(n, m))).astype(np.float32)


def _rows(kind: str, full, sl: slice):
    """The same problem restricted to the customers ``sl`` (oracle: a callable on the candidate values)."""
    if kind == "factored":
        return FactoredProfit(full.V[sl], full.W)
    if kind == "oracle":
        X = torch.as_tensor(full[sl])
        return lambda T: X[:, T[:, 0].round().long()]
    return full[sl]


def _quadratic(cb: np.ndarray):
    """The oracle (T, 1) -> (n, T) float64 of the customers' rows ``cb`` (n, 2) of a quadratic instance."""
    c, b = (torch.as_tensor(cb[:, j]) for j in range(2))
    return lambda T: b[:, None] - (torch.as_tensor(T, dtype=torch.float64)[:, 0][None, :] - c[:, None]) ** 2 / 10


def _solve(name: str, sl: slice, **extra):
    kind, n, m, k, _, opts = CASES[name]
    full = _instance(kind, n, m, seed=len(name))
    cand = np.arange(m, dtype=np.float64)[:, None]
    if kind == "quadratic":
        # a continuous dose whose candidate grid happens to be the integers: refined by the user's say-so
        extra = dict(extra, refine_oracle=_quadratic(full[sl]), bounds=(np.zeros(1), np.full(1, m - 1.0)),
                     refine_integer_dims=True)
        profit = _quadratic(full[sl])(torch.as_tensor(cand)).numpy().astype(np.float32)
    else:
        profit = _rows(kind, full, sl)
    return discretize(profit, k, candidates=cand, device="cpu", seed=3, **opts, **extra)


def _path(res) -> list:
    """The search's path: (phase, restart, iteration, objective, entropic objective) of every trace record."""
    return [(t["phase"], t["restart"], t["iter"], t["objective"], t.get("entropic_objective", 0.0)) for t in res.trace]


def _same_path(got: list, want: list) -> None:
    """Every phase, restart and iteration of the single-process search, at the same objectives (float
    rounding of the sums aside): the sharded solve took the same steps, not just the same end point."""
    assert [t[:3] for t in got] == [t[:3] for t in want]
    np.testing.assert_allclose(np.array([t[3:] for t in got]), np.array([t[3:] for t in want]), rtol=1e-6, atol=1e-6)


def _worker(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    results = {}
    for name, (_, n, _, _, n0, _) in CASES.items():
        res = _solve(name, slice(0, n0) if rank == 0 else slice(n0, n), distributed=True)
        results[name] = dict(cols=res.candidate_index, treatments=res.treatments, assignment=res.assignment, objective=res.objective,
                             entropic=res.entropic_objective, shares=res.shares, info_n=res.info["n_customers"],
                             n_local=res.info["distributed"]["n_local"], trace=_path(res))
    for label, kw in REFUSED.items():
        try:
            discretize(np.ones((10, 4), np.float32), 2, device="cpu", distributed=True, **kw)
            results["refused " + label] = None
        except ValueError as err:
            results["refused " + label] = str(err)
    # a rank whose input is bad refuses on every rank (no rank is left waiting in a collective)
    bad = np.ones((10, 4), np.float32)
    if rank == 1:
        bad[3, 2] = np.nan
    try:
        discretize(bad, 2, device="cpu", distributed=True)
        results["bad rank"] = None
    except ValueError as err:
        results["bad rank"] = str(err)
    with open(os.path.join(out, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(results, f)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharded")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, __file__, str(r), str(tmp / "init"), str(tmp)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(WORLD)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    return [pickle.loads((tmp / f"rank{r}.pkl").read_bytes()) for r in range(WORLD)]


pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


@pytest.mark.parametrize("name", [c for c in CASES if c.startswith("lloyd") and not c.endswith("refine")])
def test_sharded_lloyd_equals_lloyd_on_the_concatenated_rows(sharded, name):
    ref = _solve(name, slice(None))
    r0, r1 = sharded[0][name], sharded[1][name]
    assert np.array_equal(r0["cols"], ref.candidate_index) and np.array_equal(r1["cols"], ref.candidate_index)
    assert np.array_equal(np.concatenate([r0["assignment"], r1["assignment"]]), ref.assignment)
    assert r0["n_local"] == CASES[name][4] and r0["n_local"] + r1["n_local"] == ref.info["n_customers"]
    for r in (r0, r1):
        assert r["objective"] == pytest.approx(ref.objective, rel=1e-9)
        assert r["info_n"] == ref.info["n_customers"]
        np.testing.assert_allclose(r["shares"], ref.shares, rtol=0, atol=1e-12)
        _same_path(r["trace"], _path(ref))


@pytest.mark.parametrize("name", [c for c in CASES if c.startswith("sinkhorn") and not c.endswith("refine")])
def test_sharded_sinkhorn_within_a_hundredth_of_a_percent(sharded, name):
    ref = _solve(name, slice(None))
    r0, r1 = sharded[0][name], sharded[1][name]
    assert np.array_equal(r0["cols"], r1["cols"])  # every rank the same treatments
    assert r0["objective"] == r1["objective"] and r0["entropic"] == r1["entropic"]
    assert abs(r0["objective"] - ref.objective) <= 1e-4 * abs(ref.objective)
    # on these instances it also took the single-process search's every step (annealing, restarts, swaps)
    _same_path(r0["trace"], _path(ref))
    assert r0["entropic"] == pytest.approx(ref.entropic_objective, rel=1e-9)
    # the global objective is the total of the ranks' own assignments at the chosen treatments
    kind, n, m, _, n0, _ = CASES[name]
    full = _instance(kind, n, m, seed=len(name))
    X = full.dense() if kind == "factored" else full.astype(np.float64)
    a = np.concatenate([r0["assignment"], r1["assignment"]])
    assert len(r0["assignment"]) == n0
    assert r0["objective"] == pytest.approx(float(X[np.arange(n), r0["cols"][a]].sum()), rel=1e-9)


@pytest.mark.parametrize("name", [c for c in CASES if c.endswith("refine")])
def test_sharded_refinement_moves_the_treatments_as_one_process_does(sharded, name):
    """Each rank's oracle scores only its rows; the pattern search decides on sums over both ranks, so
    the treatments leave the grid exactly as in the single-process solve."""
    ref = _solve(name, slice(None))
    assert (ref.candidate_index < 0).any()  # the instance makes the refinement move something
    r0, r1 = sharded[0][name], sharded[1][name]
    for r in (r0, r1):
        np.testing.assert_array_equal(r["treatments"], ref.treatments)
        np.testing.assert_array_equal(r["cols"], ref.candidate_index)
        assert r["objective"] == pytest.approx(ref.objective, rel=1e-9)
    a = np.concatenate([r0["assignment"], r1["assignment"]])
    np.testing.assert_array_equal(a, ref.assignment)
    kind, n, m, _, _, _ = CASES[name]
    U = _quadratic(_instance(kind, n, m, seed=len(name)))(torch.as_tensor(ref.treatments)).numpy()
    assert r0["objective"] == pytest.approx(float(U[np.arange(n), a].sum()), rel=1e-9)


def test_unsupported_options_are_refused_by_name(sharded):
    for r in sharded:
        for label in REFUSED:
            assert r["refused " + label] is not None and r["refused " + label].startswith(label), r["refused " + label]
        assert r["bad rank"] is not None and "NaN" in r["bad rank"]


def test_distributed_without_a_process_group_is_a_clear_error():
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="initialized torch.distributed"):
        discretize(np.ones((10, 4), np.float32), 2, device="cpu", distributed=True)
    with pytest.raises(ValueError, match="^min_share is not supported with distributed=True"):
        discretize(np.ones((10, 4), np.float32), 2, device="cpu", distributed=True, min_share=0.1)
    with pytest.raises(ValueError, match="distributed must be True or False"):
        discretize(np.ones((10, 4), np.float32), 2, device="cpu", distributed="yes")


if __name__ == "__main__":
    _worker(int(sys.argv[1]), sys.argv[2], sys.argv[3])
