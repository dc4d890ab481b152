"""The built-in solvers, registered in the solver table (``spec.py``) in the order users see them.

Each line is a solver's whole declaration: the function that runs it and what it supports; the
validators (``discretize``, the options, the sharded solve, the config checks) read it from the table.
A new solver is one module with a ``solve(state, call) -> Solution`` and one ``register_solver`` line
(here, or in the user's own code: ``docs/extending.md``).
"""
from __future__ import annotations

from coarse_gpu.discretize import exact, mip
from coarse_gpu.discretize.search import search
from coarse_gpu.discretize.spec import SolverSpec, register_solver

SINKHORN = register_solver(SolverSpec(
    "sinkhorn", search, "entropic OT search: annealed Sinkhorn restarts, Lloyd polish, swaps",
    entropic=True))
LLOYD = register_solver(SolverSpec("lloyd", search, "the paper's exact Lloyd alternation, k-means++ restarts"))
EXACT = register_solver(SolverSpec(
    "exact", exact.solve, "subset enumeration", constraints=False, support=False, distributed=False, lazy=False,
    exact=True, precheck=exact.precheck))
MIP = register_solver(SolverSpec(
    "mip", mip.solve, "the exact joint mixed-integer program", distributed=False, lazy=False, exact=True,
    precheck=mip.precheck))
