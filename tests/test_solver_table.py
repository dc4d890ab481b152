"""The solver table (coarse_gpu/discretize/spec.py): a registered solver runs through ``discretize`` and the
common finish, and every validator (discretize, the options, the config checks, the sharded solve) reads
what each solver declares instead of restating it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from coarse_gpu.discretize import SOLVER_TABLE, Constraint, Solution, SolverSpec, discretize, register_solver
from coarse_gpu.discretize.options import check_solver_options, default_options
from coarse_gpu.discretize.spec import get_solver

TOY = "toy_top_means"


def _top_means(state, call) -> Solution:
    """The K candidates with the highest mean profit: a solver in three lines."""
    means = state.src.columns64(torch.arange(state.src.m)).mean(0)
    return Solution(torch.sort(means.topk(state.k).indices).values)


@pytest.fixture
def toy():
    spec = register_solver(SolverSpec(TOY, _top_means, "best K column means", shares=False, constraints=False,
                                      support=False, distributed=False, lazy=False))
    yield spec
    del SOLVER_TABLE[TOY]


def _profits(n=400, m=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, m)) + rng.normal(size=(1, m))


def test_a_registered_solver_runs_through_discretize_and_the_common_finish(toy):
    X = _profits()
    cand = np.linspace(0.0, 1.1, X.shape[1])[:, None]
    res = discretize(X, 3, candidates=cand, solver=TOY, device="cpu")
    cols = np.sort(np.argsort(X.mean(0))[-3:])
    assert res.solver == TOY and res.candidate_index.tolist() == cols.tolist()
    np.testing.assert_array_equal(res.treatments, cand[cols])
    # the finish step is the common one: argmax assignment, its exact objective, shares that sum to 1
    np.testing.assert_array_equal(res.assignment, X[:, cols].argmax(1))
    assert res.objective == pytest.approx(X[:, cols].max(1).sum(), rel=1e-12)
    assert res.entropic_objective == res.objective  # not declared entropic
    assert res.shares.sum() == pytest.approx(1.0)


def test_discretize_refuses_what_a_solver_does_not_declare_naming_the_solvers_that_do(toy):
    X = _profits()
    with pytest.raises(ValueError, match=rf"^solver='{TOY}' \(best K column means\) does not take share bounds"):
        discretize(X, 3, solver=TOY, min_share=0.3, device="cpu")
    budget = Constraint(np.full(X.shape[0], 1 / X.shape[0]), np.linspace(0, 1, X.shape[1]), hi=0.5)
    # exact solvers first among the alternatives
    with pytest.raises(ValueError, match=r"does not take side constraints .*; use solver='mip' \(or 'sinkhorn', "
                                         r"'lloyd'\)"):
        discretize(X, 3, solver=TOY, constraints=budget, device="cpu")
    with pytest.raises(ValueError, match=r"^solver='exact' \(subset enumeration\) does not take side constraints"):
        discretize(X, 3, solver="exact", constraints=budget, device="cpu")
    # a share bound that cannot bind (0) is no request: the toy runs
    assert discretize(X, 3, solver=TOY, min_share=0.0, device="cpu").solver == TOY


def test_the_options_and_the_config_checks_read_the_table(toy):
    from coarse_gpu.experiment import distributed as exp_distributed
    from coarse_gpu.experiment import validate

    check_solver_options({**default_options(), "solver": TOY})  # registered: accepted
    with pytest.raises(ValueError, match=r"solver must be one of \('sinkhorn', 'lloyd', 'exact', 'mip', "
                                         rf"'{TOY}'\), got 'nope'"):
        check_solver_options({**default_options(), "solver": "nope"})
    assert validate.solver_option_problems({"discretizer": {"solver": TOY}}) == []
    assert validate.constraint_config_problems({"discretizer": {"solver": TOY, "budget": 1.0}}) == [
        f"discretizer.solver={TOY} (best K column means) takes no budget or group parity; use "
        "discretizer.solver=mip (exact, with constraints) or sinkhorn"]
    assert validate.constraint_config_problems({"discretizer": {"solver": "lloyd", "budget": 1.0}}) == []
    sharded = exp_distributed.config_problems({"distributed": True, "discretizer": {"solver": TOY}})
    assert any(p.startswith(f"discretizer.solver={TOY} is not supported with distributed=true") for p in sharded)
    assert not any("discretizer.solver" in p for p in
                   exp_distributed.config_problems({"distributed": True, "discretizer": {"solver": "sinkhorn"}}))


def test_the_sharded_solve_reads_the_table(toy):
    from coarse_gpu.discretize.distributed import check_request

    for name in (TOY, "exact", "mip"):
        with pytest.raises(ValueError, match=rf"^solver='{name}' is not supported with distributed=True"):
            check_request(name, None, None, None, {})
    with pytest.raises(ValueError, match="initialized torch.distributed"):  # sinkhorn passes the table's check
        check_request("sinkhorn", None, None, None, {})


def test_the_built_in_declarations():
    assert tuple(SOLVER_TABLE)[:4] == ("sinkhorn", "lloyd", "exact", "mip")
    assert [n for n, s in SOLVER_TABLE.items() if s.distributed] == ["sinkhorn", "lloyd"]
    assert [n for n, s in SOLVER_TABLE.items() if not s.constraints] == ["exact"]
    assert [n for n, s in SOLVER_TABLE.items() if s.entropic] == ["sinkhorn"]
    with pytest.raises(ValueError, match=r"solver must be one of"):
        get_solver("magic")
    with pytest.raises(TypeError, match="SolverSpec"):
        register_solver("lloyd")
    with pytest.raises(KeyError, match="unknown solver feature 'colour'"):
        SOLVER_TABLE["lloyd"].supports("colour")


def test_a_solvers_precheck_refuses_before_any_profit_is_evaluated():
    calls = []

    def oracle(T):
        calls.append(T.shape[0])
        return torch.zeros(50, T.shape[0], dtype=torch.float64)

    cand = np.linspace(0, 1, 40)[:, None]
    with pytest.raises(ValueError, match="solver='exact' needs the dense N x M profit within memory_limit_bytes"):
        discretize(oracle, 2, candidates=cand, solver="exact", device="cpu", memory_limit_bytes=1000)
    assert calls == [1]  # only the one-column probe that reads N
