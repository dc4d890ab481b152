"""Choosing K: the profit-vs-K curve net of a fixed cost per distinct treatment."""
from __future__ import annotations

import math
from typing import Mapping, Optional


def choose_k(values: Mapping[int, float], fixed_cost_per_treatment: float) -> Optional[dict]:
    """The K maximizing V(K) - c K.

    values : {K: V(K)} profit per customer of the K-treatment policy (oracle or doubly robust value).
    fixed_cost_per_treatment : c, the cost of running one more distinct treatment (creative, operations,
        legal review), in the same units as V: the total cost divided by the number of customers it
        is spread over. c = 0 picks the largest profit (ties: the smallest K).
    Returns {"k", "net_value", "value", "net_values": {K: V(K) - c K}} or None when no value is finite.
    """
    c = float(fixed_cost_per_treatment)
    if not math.isfinite(c) or c < 0:
        raise ValueError(f"evaluation.fixed_cost_per_treatment must be a finite number >= 0, got {fixed_cost_per_treatment!r}")
    net = {int(k): float(v) - c * int(k) for k, v in values.items() if v is not None and math.isfinite(float(v))}
    if not net:
        return None
    best = max(sorted(net), key=lambda k: (net[k], -k))
    return {"k": best, "net_value": net[best], "value": float(values[best]), "net_values": net}
