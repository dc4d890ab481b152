"""Parameter ranges stated once, on the class that takes the parameter (scikit-learn's
``_parameter_constraints`` style), and read by every check of them.

A class declares ``_parameter_constraints = {"dropout": FRACTION, "hidden": integer(1), ...}``; its
``fit`` calls ``check_params(self)`` (one ValueError naming the class, the parameter and its value),
and the config check (coarse_gpu.experiment.validate) reads the same declarations for the ``model.*``
keys of the class a config names (``param_problems``), so a range lives in one place and the CLI's
message and the estimator's say the same thing. scikit-learn's own ``_param_validation`` is not used:
it is private to scikit-learn (its classes and messages change between releases) and it cannot say
"or null" the way the configs need it; the rule below is the one the config check has used from the start.

Torch-free: the config check imports it before any training.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Optional

__all__ = ["FINITE", "FRACTION", "NONNEG", "POSITIVE", "Rule", "check_params", "choice", "integer", "number",
           "param_problems"]


@dataclass(frozen=True)
class Rule:
    """One parameter's allowed values: ``kind`` int | number | ints (list) | numbers (list) | choice
    (one of ``options``); ``lo`` / ``hi`` bounds (open or closed); ``null``: None allowed."""

    kind: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    null: bool = False
    options: tuple = ()  # kind "choice": the allowed values; other kinds: literals allowed besides the range

    def describe(self) -> str:
        if self.kind == "choice":
            return f"one of {list(self.options)}" + (" or null" if self.null else "")
        what = {"int": "an integer", "number": "a number", "ints": "a list of integers",
                "numbers": "a list of numbers"}[self.kind]
        each = " each" if self.kind in ("ints", "numbers") else ""
        if self.lo is not None and self.hi is not None:
            rng = f"{'(' if self.lo_open else '['}{fmt_number(self.lo)}, {fmt_number(self.hi)}{')' if self.hi_open else ']'}"
            out = f"{what}{each} in {rng}"
        elif self.lo is not None:
            out = f"{what}{each} {'>' if self.lo_open else '>='} {fmt_number(self.lo)}"
        else:
            out = f"{what}{' (finite)' if self.kind in ('number', 'numbers') else ''}"
        out += "".join(f" or {o!r}" for o in self.options)
        return out + (" or null" if self.null else "")

    def ok(self, value: Any) -> bool:
        if value is None:
            return self.null
        if isinstance(value, (str, numbers.Number)) and not isinstance(value, bool) and value in self.options:
            return True
        if self.kind == "choice":
            return False
        if self.kind in ("ints", "numbers"):
            return isinstance(value, (list, tuple)) and all(self._scalar_ok(v) for v in value)
        return self._scalar_ok(value)

    def _scalar_ok(self, v: Any) -> bool:
        if isinstance(v, bool):
            return False
        if self.kind in ("int", "ints"):
            if not isinstance(v, numbers.Integral):  # numpy integers too (an estimator's parameter)
                return False
        elif not isinstance(v, numbers.Real) or not math.isfinite(v):
            return False
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        if self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)):
            return False
        return True


def fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def integer(lo=None, hi=None, null=False, options: tuple = ()) -> Rule:
    return Rule("int", lo, hi, null=null, options=tuple(options))


def number(lo=None, hi=None, lo_open=False, hi_open=False, null=False) -> Rule:
    return Rule("number", lo, hi, lo_open, hi_open, null)


def choice(*options, null=False) -> Rule:
    return Rule("choice", null=null, options=tuple(options))


FRACTION = number(0.0, 1.0, hi_open=True)  # [0, 1)
NONNEG = number(0.0)
POSITIVE = number(0.0, lo_open=True)
FINITE = number()


def param_problems(constraints: Mapping[str, Rule], params: Mapping[str, Any], prefix: str = "") -> list[str]:
    """One sentence per parameter of ``params`` outside its rule in ``constraints`` (parameters without
    a rule are not checked here), each naming ``prefix + name``, the value and the allowed values."""
    return [f"{prefix}{name}={params[name]!r} must be {rule.describe()}"
            for name, rule in constraints.items() if name in params and not rule.ok(params[name])]


def constraints_of(cls: type) -> dict[str, Rule]:
    """Every rule ``cls`` and its bases declare (a subclass's rule overrides its base's)."""
    out: dict[str, Rule] = {}
    for klass in reversed(cls.__mro__):
        out.update(vars(klass).get("_parameter_constraints", {}))
    return out


def check_params(est: Any) -> None:
    """Raise ValueError naming the class and the first parameter of ``est`` outside its declared rule."""
    cls = type(est)
    rules = constraints_of(cls)
    problems = param_problems(rules, {name: getattr(est, name) for name in rules if hasattr(est, name)})
    if problems:
        raise ValueError(f"{cls.__name__}: {problems[0]}")
