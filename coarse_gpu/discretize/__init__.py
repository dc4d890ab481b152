"""Step 2 of coarse personalization: choose K treatments and who gets which (optimal transport).

``discretize(profit, k, ...)`` is the entry point (``solver.py``: it validates the call and dispatches
through the solver table, ``spec.py``, whose built-in solvers ``solvers.py`` registers: the annealed
Sinkhorn search and the exact Lloyd alternation, ``search.py`` with its phases ``lloyd.py``,
``anneal.py``, ``swap.py`` and ``seeding.py``; subset enumeration, ``exact.py``; the exact joint
mixed-integer program, ``mip.py``). ``sinkhorn.py`` is the box-constrained log-domain Sinkhorn,
``exact.py`` also the exact references (K-subset enumeration, certified share-constrained
assignment), ``constraints.py`` the linear side constraints (``Constraint``) and experimental support
per segment (``Support``), ``constrained.py`` (with ``newton.py`` and ``lp.py``) the exact assignment
under them, ``builders.py`` a budget and group parity built from arrays (what the CLI's
``discretizer.budget`` / ``group_parity`` mean), ``options.py`` the typed search options
(``SolverOptions``), ``profit.py`` the dense / factored (KeOps) / oracle profit sources, ``refine.py``
the continuous off-grid refinement, ``facility.py`` the facility-location searches and
``distributed.py`` the sharded solve over torch.distributed (``distributed=True``). A new solver: ``docs/extending.md``.
"""
from coarse_gpu.discretize.builders import budget_constraint, group_codes, parity_constraints, treatment_costs
from coarse_gpu.discretize.constrained import assign_constrained
from coarse_gpu.discretize.constraints import Constraint, Prices, Support
from coarse_gpu.discretize.exact import assign_with_shares, certify, enumerate_optimum, share_counts
from coarse_gpu.discretize.options import SolverOptions
from coarse_gpu.discretize.profit import FactoredProfit, keops_available
from coarse_gpu.discretize.sinkhorn import entropic_plan
from coarse_gpu.discretize.solver import SOLVERS, Discretization, discretize
from coarse_gpu.discretize.spec import SOLVER_TABLE, Solution, SolverSpec, register_solver

__all__ = [
    "Constraint", "Discretization", "FactoredProfit", "Prices", "SOLVERS", "SOLVER_TABLE", "Solution", "SolverOptions",
    "SolverSpec", "Support", "assign_constrained", "assign_with_shares", "budget_constraint", "certify", "discretize",
    "entropic_plan", "enumerate_optimum", "group_codes", "keops_available", "parity_constraints", "register_solver",
    "share_counts", "treatment_costs",
]
