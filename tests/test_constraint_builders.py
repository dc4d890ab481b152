"""coarse_gpu.discretize.builders: a budget and group parity from arrays, checked against their closed forms
(the constraint value of an assignment is the mean cost / the gap between two groups' mean levels), solved
by ``discretize`` and by ``CoarsePersonalizer``, and the main job's config reading built on them."""
from __future__ import annotations

import numpy as np
import pytest

from coarse_gpu.discretize import (
    Constraint,
    budget_constraint,
    discretize,
    group_codes,
    parity_constraints,
    treatment_costs,
)


def _value(c: Constraint, assignment: np.ndarray) -> float:
    """sum_i weights[i] * values[c(i)] for an assignment of customers to candidates."""
    return float(np.asarray(c.weights) @ np.asarray(c.values)[assignment])


def test_treatment_costs_is_the_linear_cost_and_names_a_wrong_unit_cost():
    cand = np.array([[0.1, 2.0], [0.3, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(treatment_costs(cand, [10.0, 0.5]), [2.0, 3.0, 2.0])
    with pytest.raises(ValueError, match=r"unit_cost must hold one cost per treatment dimension \(2\)"):
        treatment_costs(cand, [1.0])
    with pytest.raises(ValueError, match="candidates must be"):
        treatment_costs(np.ones(3), [1.0])


def test_budget_constraint_value_is_the_mean_cost_of_any_assignment():
    rng = np.random.default_rng(0)
    costs = rng.uniform(0, 3, 7)
    c = budget_constraint(costs, 1.25, 40)
    a = rng.integers(0, 7, 40)
    assert _value(c, a) == pytest.approx(costs[a].mean(), rel=1e-12)
    assert (c.lo, c.hi, c.name) == (None, 1.25, "budget")
    for bad, match in (({"budget": float("nan")}, "budget must be a finite number"),
                       ({"n": 0}, "n must be the number of customers"),
                       ({"costs": np.ones((2, 2))}, "costs must be a finite")):
        kw = {"costs": costs, "budget": 1.0, "n": 40, **bad}
        with pytest.raises(ValueError, match=match):
            budget_constraint(**kw)


def test_parity_constraints_are_the_pairwise_gaps_of_the_group_means():
    rng = np.random.default_rng(1)
    groups = rng.choice(["b", "a", 3], 60)  # labels compared as strings: "3" < "a" < "b"
    levels_m = rng.uniform(0, 1, 5)
    rows = parity_constraints(groups, levels_m, 0.1, group_name="region", value_name="dose")
    codes, levels = group_codes(groups)
    assert levels == ["3", "a", "b"] and [levels[i] for i in codes] == [str(g) for g in groups]
    assert [r.name for r in rows] == ["parity region=3 vs a (dose)", "parity region=3 vs b (dose)",
                                      "parity region=a vs b (dose)"]
    a = rng.integers(0, 5, 60)
    mean = {g: levels_m[a][codes == i].mean() for i, g in enumerate(levels)}
    for r, (g, h) in zip(rows, (("3", "a"), ("3", "b"), ("a", "b"))):
        assert _value(r, a) == pytest.approx(mean[g] - mean[h], abs=1e-12)
        assert (r.lo, r.hi) == (-0.1, 0.1)
    assert parity_constraints(["x"] * 4, levels_m, 0.1) == []  # one group: nothing to keep apart
    with pytest.raises(ValueError, match="max_gap must be >= 0"):
        parity_constraints(groups, levels_m, -0.1)


def test_discretize_meets_a_built_budget_and_parity():
    rng = np.random.default_rng(0)
    n, m = 40, 4
    level = np.linspace(0, 1, m)
    group = rng.integers(0, 2, n)
    # group 1 gains more from high levels: unconstrained, its mean level is far above group 0's
    profit = rng.normal(0, 0.1, (n, m)) + np.outer(np.where(group == 1, 1.0, -0.5), level)
    cost = treatment_costs(level[:, None], [2.0])
    cons = [budget_constraint(cost, 0.6, n)] + parity_constraints(group, level, 0.05)
    opts = dict(solver="lloyd", n_restarts=1, seed=0)  # the exact alternation: a fraction of a second here
    free = discretize(profit, 2, **opts)
    free_at = free.candidate_index[free.assignment]
    assert cost[free_at].mean() > 0.6  # both bind: unconstrained, the budget is overspent
    assert abs(level[free_at][group == 0].mean() - level[free_at][group == 1].mean()) > 0.05  # and the gap wide
    res = discretize(profit, 2, constraints=cons, **opts)
    chosen = res.candidate_index[res.assignment]
    assert cost[chosen].mean() <= 0.6 + 1e-9
    assert abs(level[chosen][group == 0].mean() - level[chosen][group == 1].mean()) <= 0.05 + 1e-9


def test_the_job_reads_its_config_into_the_builders():
    """methods.constraints_from_config: discretizer.budget / budget_unit_cost / group_parity become the
    builders' rows over the data's customers (the main job's path)."""
    import pandas as pd
    from omegaconf import OmegaConf

    from coarse_gpu.experiment.methods import constraints_from_config

    class _Data:  # what the config reading touches of ExperimentData
        features = pd.DataFrame({"region": ["n", "s", "s", "n", "e"]})
        meta = {"treatment_unit_cost": [3.0, 1.0]}

        class space:
            names = ["discount", "weeks"]

        def __len__(self):
            return 5

    cand = np.array([[0.0, 1.0], [0.2, 2.0], [0.1, 4.0]])
    d = OmegaConf.create({"budget": 1.5, "budget_unit_cost": None,
                          "group_parity": {"column": "region", "max_gap": 0.5, "treatment": "weeks"}})
    rows = constraints_from_config(d, _Data(), cand)
    assert [r.name for r in rows] == ["budget", "parity region=e vs n (weeks)", "parity region=e vs s (weeks)",
                                      "parity region=n vs s (weeks)"]
    np.testing.assert_allclose(rows[0].values, cand @ [3.0, 1.0])
    np.testing.assert_allclose(rows[0].weights, np.full(5, 0.2))
    np.testing.assert_allclose(rows[1].values, cand[:, 1])
    np.testing.assert_allclose(rows[1].weights, [-0.5, 0, 0, -0.5, 1.0])
    d.budget_unit_cost = [1.0, 0.0]  # the config's unit costs win over the data's
    np.testing.assert_allclose(constraints_from_config(d, _Data(), cand)[0].values, cand[:, 0])
