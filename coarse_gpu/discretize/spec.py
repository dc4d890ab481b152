"""The solver table: every solver ``discretize`` dispatches to, with what it supports.

A solver is a ``SolverSpec``: its name (``discretize(..., solver=name)``, ``discretizer.solver=name``),
the function that runs it and the features it takes. ``register_solver(spec)`` adds one; the built-in
ones are registered by ``solvers.py``. Every check of a solver's limits reads this table:
``discretize`` (``refusals`` before any work), ``options.check_solver_options`` (the names), the
sharded solve (``distributed.check_request``) and the config validator (``experiment/validate.py``,
``experiment/distributed.py``), so a limit is stated once, here, on the solver's own entry.

``run(state, call) -> Solution`` receives the search state (``state.SearchState``: the profit source,
K, the share counts and side constraints, the options) and the call's context (``state.Call``: seed,
generator, target temperature, the report being written) and returns the chosen candidate columns;
the hard assignment, the refinement and the report are ``finish.py``'s, the same for every solver.
This module imports nothing of the package: the options' validation reads it without a cycle.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

# The features a solver may take, as the caller names them (the wording of the refusals).
FEATURES = {
    "shares": "share bounds (min_share / max_share)",
    "constraints": "side constraints (budgets, group parity)",
    "support": "a support requirement (support=)",
    "distributed": "distributed=True (rows sharded over processes)",
}


@dataclass(frozen=True)
class Solution:
    """What a solver returns: the K chosen candidate columns and, where it has them, the prices of their
    assignment (warm start of the final exact assignment), the relative target temperature it reached
    (0 for exact alternations) and an integral assignment the final step must keep (the MIP's)."""

    columns: Any  # (K,) int64 torch tensor of candidate indices
    prices: Any = None  # constraints.Prices or None
    epsilon: float = 0.0
    assignment: Any = None  # (N,) int64 numpy array or None


@dataclass(frozen=True)
class SolverSpec:
    """One solver of the table and what it supports (module docstring).

    lazy : True when it works from a lazy profit source (factored, oracle) at any size; False when it
        reads the dense N x M table, whose size ``precheck(n, m, opts, memory_bytes)`` bounds (a
        ValueError naming the limit, raised before any profit is evaluated).
    exact : it proves its treatments optimal (suggested first when another solver refuses a feature).
    entropic : its result reports the entropic plan's value at the target temperature.
    """

    name: str
    run: Callable[..., Solution]
    summary: str
    shares: bool = True
    constraints: bool = True
    support: bool = True
    distributed: bool = True
    lazy: bool = True
    exact: bool = False
    entropic: bool = False
    precheck: Optional[Callable[[int, int, dict, int], None]] = None

    def supports(self, feature: str) -> bool:
        if feature not in FEATURES:
            raise KeyError(f"unknown solver feature {feature!r}; one of {sorted(FEATURES)}")
        return bool(getattr(self, feature))

    def refusals(self, **wanted: bool) -> list[str]:
        """One line per requested feature (keyword True) this solver does not take, naming the solvers
        that do (exact ones first)."""
        out = []
        for feature, on in wanted.items():
            if on and not self.supports(feature):
                alts = [s.name for s in sorted(SOLVER_TABLE.values(), key=lambda s: not s.exact)
                        if s.supports(feature)]
                fix = f"; use solver={alts[0]!r}" + (f" (or {', '.join(map(repr, alts[1:]))})" if alts[1:] else "") \
                    if alts else ""
                out.append(f"solver={self.name!r} ({self.summary}) does not take {FEATURES[feature]}{fix}")
        return out


SOLVER_TABLE: dict[str, SolverSpec] = {}


def register_solver(spec: SolverSpec) -> SolverSpec:
    """Add ``spec`` to the table (a name already there is replaced); returns it."""
    if not isinstance(spec, SolverSpec):
        raise TypeError(f"register_solver takes a SolverSpec, got {type(spec).__name__}")
    if not spec.name or not spec.name.isidentifier():
        raise ValueError(f"a solver's name must be an identifier, got {spec.name!r}")
    SOLVER_TABLE[spec.name] = spec
    return spec


def get_solver(name: str) -> SolverSpec:
    """The table's entry for ``name``; ValueError naming the known solvers otherwise."""
    if not isinstance(name, str) or name not in SOLVER_TABLE:
        raise ValueError(f"solver must be one of {tuple(SOLVER_TABLE)}, got {name!r}")
    return SOLVER_TABLE[name]


def supports(name: str, feature: str) -> bool:
    """Whether the registered solver ``name`` takes ``feature`` (a key of ``FEATURES``); False for an
    unknown name (its own check reports it)."""
    spec = SOLVER_TABLE.get(name)
    return spec is not None and spec.supports(feature)
