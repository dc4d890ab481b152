"""Choosing K net of a fixed cost per treatment: closed-form answers on concave curves."""
import math

import pytest

from coarse_gpu.evaluate.choose_k import choose_k


def test_concave_curve_stops_where_the_marginal_gain_falls_below_the_cost():
    # V(K) = 10 - 4 / K: marginal gains 2, 0.667, 0.333, 0.2, ...
    values = {k: 10 - 4 / k for k in (1, 2, 3, 4, 5, 8)}
    assert choose_k(values, 0.0)["k"] == 8
    assert choose_k(values, 1.0)["k"] == 2  # gain 1->2 is 2 > 1, 2->3 is 0.667 < 1
    assert choose_k(values, 0.5)["k"] == 3  # gain 2->3 0.667 > 0.5, 3->4 0.333 < 0.5
    assert choose_k(values, 5.0)["k"] == 1
    r = choose_k(values, 0.5)
    assert r["net_value"] == pytest.approx(10 - 4 / 3 - 1.5) and r["value"] == pytest.approx(10 - 4 / 3)


def test_ties_pick_the_smaller_k_and_missing_values_are_skipped():
    assert choose_k({1: 5.0, 2: 5.0}, 0.0)["k"] == 1
    assert choose_k({1: None, 2: 5.0, 3: math.nan}, 0.1)["k"] == 2
    assert choose_k({1: None}, 0.1) is None


def test_bad_cost_is_named():
    with pytest.raises(ValueError, match="fixed_cost_per_treatment"):
        choose_k({1: 1.0}, -1.0)
