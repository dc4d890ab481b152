"""The true-profit ceiling: the discretizer on the simulator's TRUE profits, per K."""
from __future__ import annotations

import numpy as np
import pytest

from coarse_gpu.data.simulator import PromotionsSimulator
from coarse_gpu.discretize import enumerate_optimum
from coarse_gpu.evaluate.oracle import (
    oracle_ceiling,
    oracle_control_value,
    oracle_full_personalization,
    share_of_full,
)


@pytest.fixture(scope="module")
def world():
    data = PromotionsSimulator(n_customers=3000, seed=1).sample()
    space = data.space
    cand = space.grid([6, 3])
    control = oracle_control_value(data.truth, space)
    full = oracle_full_personalization(data.truth, space, points=[41, 21])[0]
    return data, space, cand, control, full


def test_ceiling_is_the_exact_optimum_over_the_candidates(world):
    data, space, cand, control, full = world
    res = oracle_ceiling(data.truth, space, cand, [1, 2, 3, 18], control, full)
    P = data.truth.profit(cand)
    for k in (1, 2, 3):  # C(18, k) subsets: the enumeration is the exact K-treatment optimum
        _, total = enumerate_optimum(P, k)
        assert res["value"][str(k)] == pytest.approx(total / len(P), rel=1e-9, abs=1e-12)
        assert res["share_of_full"][str(k)] == pytest.approx(share_of_full(total / len(P), control, full), rel=1e-9)
    # K = M: every customer at its best candidate
    assert res["value"]["18"] == pytest.approx(P.max(1).mean(), rel=1e-12)
    shares = [res["share_of_full"][k] for k in ("1", "2", "3", "18")]
    assert shares == sorted(shares) and shares[-1] <= 1.0 + 1e-9 and res["n_customers"] == 3000


def test_a_sampled_ceiling_estimates_the_full_one(world):
    data, space, cand, control, full = world
    whole = oracle_ceiling(data.truth, space, cand, [3], control, full)["share_of_full"]["3"]
    part = oracle_ceiling(data.truth, space, cand, [3], control, full, max_rows=1500, seed=2)
    assert part["n_customers"] == 1500
    assert abs(part["share_of_full"]["3"] - whole) < 0.02


def test_table_and_figure_show_the_ceiling(tmp_path):
    from coarse_gpu.experiment.report import CEILING_LABEL, format_table, plot_share_vs_k

    cell = {"treatments": [[0.1, 0.0]], "oracle_profit": 1.0, "share_of_full": 0.9, "dr_value": 1.0,
            "dr_ci": [0.9, 1.1], "segment_sizes": [10]}
    results = {"k_values": [1], "n_eval": 10, "methods": {"ot": {"1": cell}},
               "full_personalization": {"oracle_profit": 2.0, "control_oracle_profit": 0.5,
                                        "estimated_policy_share_of_full": 0.95},
               "true_profit_ceiling": {"share_of_full": {"1": 0.9375}, "value": {"1": 1.9}, "n_customers": 10}}
    table = format_table(results)
    row = next(line for line in table.splitlines() if line.startswith(CEILING_LABEL))
    assert row.split()[-1] == "93.75%"
    assert plot_share_vs_k(results, tmp_path / "s.png").stat().st_size > 1000
