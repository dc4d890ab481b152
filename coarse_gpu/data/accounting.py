"""The firm's accounting: profit from behaviour (response, value) and known functions of the treatment.

A firm records behaviour -- did the customer buy (or how many purchases), how much was spent per
purchase -- and knows its own accounting as functions of the treatment t (d columns, by name):

    profit = response * (value * margin(t) - cost_per_response(t)) - cost_per_customer(t)

``Accounting(margin, cost_per_response, cost_per_customer)`` holds the three functions. Each is a
number or an arithmetic expression in the treatment column names, e.g. ``margin="0.40 - discount"``,
``cost_per_response="4*free_ship + 3*bonus_items"``, ``cost_per_customer="0.10*emailed"``. The
expressions are parsed with ``ast`` and evaluated by walking the tree (never ``eval``): only numbers,
treatment names, ``+ - * / **``, unary ``+ -``, parentheses and the functions ``min``, ``max``,
``abs``, ``exp``, ``log``, ``sqrt`` are accepted; anything else (attribute access, subscripts, other
calls, names that are not treatment columns, ...) is refused with a one-line error naming the key
and the offending token.

For a 0/1 response (a purchase) the expected profit factors exactly (a hurdle / two-part model):

    E[profit | x, t] = P(response | x, t) * (E[value | x, t, response] * margin(t) - cost_per_response(t))
                       - cost_per_customer(t)

and for a count response the same with E[response | x, t] in place of P (value independent of the
count given x, t). ``coarse_gpu.models.twopart.TwoPart`` estimates the two behavioural parts and
applies this accounting at the arms.

Units: margin is a share of the value (dimensionless, e.g. 0.4), the costs are in the profit's
currency units per response / per customer.
"""
from __future__ import annotations

import ast
import math
import operator
from typing import Optional, Sequence, Union

import numpy as np

__all__ = ["ACCOUNTING_KEYS", "Accounting", "AccountingError", "parse_expression"]

#: The three accounting keys, in the order of ``Accounting``'s arguments (the data.* config keys).
ACCOUNTING_KEYS = ("margin", "cost_per_response", "cost_per_customer")

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"min": np.minimum, "max": np.maximum, "abs": np.abs, "exp": np.exp, "log": np.log, "sqrt": np.sqrt}
_ARITY = {"min": 2, "max": 2, "abs": 1, "exp": 1, "log": 1, "sqrt": 1}


class AccountingError(ValueError):
    """An accounting expression that cannot be used (names the key and the offending token)."""


def _token(node: ast.AST, source: str) -> str:
    return ast.get_source_segment(source, node) or type(node).__name__


def _check_node(node: ast.AST, key: str, source: str, names: Sequence[str]) -> None:
    """Raise AccountingError unless the tree below ``node`` uses only the allowed grammar."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise AccountingError(f"data.{key}: {node.value!r} is not a number (in {source!r})")
        return
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise AccountingError(f"data.{key}: '{node.id}' is not a treatment column (in {source!r}); "
                                  f"the expression may use {list(names)}")
        return
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check_node(node.left, key, source, names)
        _check_node(node.right, key, source, names)
        return
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        _check_node(node.operand, key, source, names)
        return
    if isinstance(node, ast.Call):
        fn = node.func.id if isinstance(node.func, ast.Name) else None
        if fn not in _FUNCTIONS:
            raise AccountingError(f"data.{key}: call '{_token(node.func, source)}' is not allowed (in {source!r}); "
                                  f"only {sorted(_FUNCTIONS)}")
        if node.keywords or len(node.args) != _ARITY[fn]:
            raise AccountingError(f"data.{key}: {fn} takes {_ARITY[fn]} positional argument(s) (in {source!r})")
        for a in node.args:
            _check_node(a, key, source, names)
        return
    raise AccountingError(f"data.{key}: '{_token(node, source)}' is not allowed in an accounting expression "
                          f"(in {source!r}); use numbers, treatment columns, + - * / ** and {sorted(_FUNCTIONS)}")


def parse_expression(expr: Union[str, float, int], key: str, names: Sequence[str]) -> ast.AST:
    """The checked syntax tree of ``expr`` (a number or an expression in the treatment ``names``)."""
    if isinstance(expr, bool):
        raise AccountingError(f"data.{key}: expected a number or an expression string, got {expr!r}")
    if isinstance(expr, (int, float, np.integer, np.floating)):
        if not math.isfinite(float(expr)):
            raise AccountingError(f"data.{key}: {expr!r} is not a finite number")
        return ast.Constant(float(expr))
    if not isinstance(expr, str) or not expr.strip():
        raise AccountingError(f"data.{key}: expected a number or an expression string, got {expr!r}")
    if len(expr) > 1000:
        raise AccountingError(f"data.{key}: expression longer than 1000 characters")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as err:
        raise AccountingError(f"data.{key}: {expr!r} is not an arithmetic expression ({err.msg})") from None
    _check_node(tree.body, key, expr.strip(), names)
    return tree.body


def _evaluate(node: ast.AST, columns: dict[str, np.ndarray], m: int) -> np.ndarray:
    if isinstance(node, ast.Constant):
        return np.full(m, float(node.value))
    if isinstance(node, ast.Name):
        return columns[node.id]
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, columns, m), _evaluate(node.right, columns, m))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, columns, m))
    return _FUNCTIONS[node.func.id](*[_evaluate(a, columns, m) for a in node.args])  # ast.Call (checked)


class Accounting:
    """margin(t), cost_per_response(t), cost_per_customer(t) of the firm (module docstring).

    Parameters
    ----------
    margin, cost_per_response, cost_per_customer : a number or an expression string in the treatment
        column names (default: margin 1, no costs -- profit = response * value).
    names : the d treatment column names the expressions may use. Optional here; ``bind(names)``
        (done by the data loaders and ``TwoPart``) checks the expressions against them.

    ``evaluate(T)`` (M, d) -> dict key -> (M,) float64; ``profit(response, value, T)`` (N,) row by row.
    """

    def __init__(self, margin: Union[str, float] = 1.0, cost_per_response: Union[str, float] = 0.0,
                 cost_per_customer: Union[str, float] = 0.0, names: Optional[Sequence[str]] = None) -> None:
        self.margin = margin
        self.cost_per_response = cost_per_response
        self.cost_per_customer = cost_per_customer
        self.names = None if names is None else tuple(str(n) for n in names)
        self._trees = None if self.names is None else self._parse(self.names)

    def _parse(self, names: Sequence[str]) -> dict:
        return {k: parse_expression(getattr(self, k), k, names) for k in ACCOUNTING_KEYS}

    def bind(self, names: Sequence[str]) -> "Accounting":
        """This accounting checked against the treatment column ``names`` (a new object)."""
        return Accounting(self.margin, self.cost_per_response, self.cost_per_customer, names=names)

    def to_dict(self) -> dict:
        """JSON-able description (results.json, saved policies): the three expressions and the names."""
        out = {k: getattr(self, k) for k in ACCOUNTING_KEYS}
        out["names"] = None if self.names is None else list(self.names)
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in ACCOUNTING_KEYS)
        return f"Accounting({args})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Accounting) and self.to_dict() == other.to_dict()

    def _columns(self, T) -> tuple[dict, int]:
        if self._trees is None:
            raise AccountingError("Accounting: call bind(treatment names) before evaluating")
        t = np.asarray(T, dtype=np.float64)
        if t.ndim == 1:
            t = t[:, None] if len(self.names) == 1 else t[None, :]
        if t.ndim != 2 or t.shape[1] != len(self.names):
            raise ValueError(f"Accounting: treatments must be (M, {len(self.names)}) columns {list(self.names)}, "
                             f"got shape {t.shape}")
        return {n: t[:, j] for j, n in enumerate(self.names)}, t.shape[0]

    def evaluate(self, T) -> dict[str, np.ndarray]:
        """{"margin", "cost_per_response", "cost_per_customer"} -> (M,) float64 at treatments T (M, d)."""
        cols, m = self._columns(T)
        with np.errstate(all="ignore"):
            out = {k: np.asarray(_evaluate(tree, cols, m), dtype=np.float64) for k, tree in self._trees.items()}
        for k, v in out.items():
            bad = np.flatnonzero(~np.isfinite(v))
            if bad.size:
                raise AccountingError(f"data.{k}={getattr(self, k)!r} is not finite at treatment "
                                      f"{np.asarray(T, dtype=np.float64).reshape(m, -1)[bad[0]].tolist()}")
        return out

    def profit(self, response, value, T) -> np.ndarray:
        """(N,) realized profit row by row: response * (value * margin - cost_per_response) - cost_per_customer.

        response (N,) >= 0, value (N,) (ignored -- NaN allowed -- where response == 0), T (N, d)."""
        r = np.asarray(response, dtype=np.float64).reshape(-1)
        v = np.asarray(value, dtype=np.float64).reshape(-1)
        parts = self.evaluate(T)
        if not (r.shape[0] == v.shape[0] == parts["margin"].shape[0]):
            raise ValueError(f"Accounting.profit: response ({r.shape[0]}), value ({v.shape[0]}) and treatments "
                             f"({parts['margin'].shape[0]}) must have the same rows")
        basket = np.where(r > 0, np.nan_to_num(v) * parts["margin"], 0.0)
        return r * basket - r * parts["cost_per_response"] - parts["cost_per_customer"]

    def expected_profit(self, p_response: np.ndarray, value: np.ndarray, T) -> np.ndarray:
        """(N, M) expected profit from E[response] (N, M) and E[value | response] (N, M) at treatments T (M, d)."""
        parts = self.evaluate(T)
        return (p_response * (value * parts["margin"][None, :] - parts["cost_per_response"][None, :])
                - parts["cost_per_customer"][None, :])

    def disagreements(self, response, value, T, outcome, rtol: float = 1e-6, atol: float = 1e-6) -> np.ndarray:
        """Rows (indices) where the accounting's profit differs from the realized ``outcome`` column."""
        pi = self.profit(response, value, T)
        y = np.asarray(outcome, dtype=np.float64).reshape(-1)
        return np.flatnonzero(~np.isclose(pi, y, rtol=rtol, atol=atol))
