"""Step 2 of coarse personalization: choose K treatments and who gets which (optimal transport).

``discretize(profit, k, ...)`` is the entry point; see ``solver.py`` for the algorithms (exact Lloyd
alternation, entropic semi-relaxed OT with eps-annealing, brute-force enumeration), ``sinkhorn.py``
for the box-constrained log-domain Sinkhorn, ``exact.py`` for the exact references (K-subset
enumeration, certified share-constrained assignment), ``constraints.py`` for linear side constraints
(``Constraint``), experimental support per segment (``Support``) and the exact assignment under
them, ``options.py`` for the typed search options (``SolverOptions``), ``mip.py`` for the exact joint mixed-integer program (``solver="mip"``), ``profit.py`` for
dense / factored (KeOps) / oracle profit sources, ``refine.py`` for the continuous off-grid refinement, ``facility.py`` for the facility-location searches
and ``distributed.py`` for the sharded solve over torch.distributed (``distributed=True``).
"""
from coarse_gpu.discretize.constraints import Constraint, Prices, Support, assign_constrained
from coarse_gpu.discretize.exact import assign_with_shares, certify, enumerate_optimum, share_counts
from coarse_gpu.discretize.options import SolverOptions
from coarse_gpu.discretize.profit import FactoredProfit, keops_available
from coarse_gpu.discretize.sinkhorn import entropic_plan
from coarse_gpu.discretize.solver import SOLVERS, Discretization, discretize

__all__ = [
    "Constraint", "Discretization", "FactoredProfit", "Prices", "SOLVERS", "SolverOptions", "Support", "assign_constrained",
    "assign_with_shares", "certify", "discretize", "entropic_plan", "enumerate_optimum", "keops_available",
    "share_counts",
]
