"""discretizer.budget and discretizer.group_parity from the config to the discretizer, results.json (price of the
constraints), the saved policies, and the one-line errors for keys the data cannot serve; ot_tree in the main job."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from coarse_gpu.cli import config_dir
import coarse_gpu.experiment.personalize as step_one
from coarse_gpu.experiment import pipeline
from coarse_gpu.experiment.config import register_configs
from coarse_gpu.experiment.pipeline import build_data, run_experiment
from coarse_gpu.experiment.validate import ConfigValueError

TINY = ["model=tarnet", "model.n_ensemble=1", "model.n_folds=2", "data.n_customers=2000", "model.max_epochs=3",
        "model.hidden=16", "evaluation.n_boot=20", "discretizer.n_restarts=2", "evaluation.k_values=[2,3]",
        "evaluation.methods=[ot,ot_tree]", "logger=none", "quiet=true"]
BUDGET, GAP = 0.4, 0.05


def _cfg(extra=()):
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=TINY + list(extra))


@pytest.fixture(scope="module")
def constrained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = _cfg([f"discretizer.budget={BUDGET}", "discretizer.group_parity.column=region",
                f"discretizer.group_parity.max_gap={GAP}", "discretizer.group_parity.treatment=duration_weeks"])
    return run_dir, run_experiment(cfg, run_dir), build_data(cfg.data, int(cfg.seed))


def _segments(run_dir, k):
    """(treatments (K, d), assignment (N,)) of the saved ot policy, assigned on the scored customers."""
    from coarse_gpu.policy.io import load_policy

    return load_policy(run_dir / "policies" / f"ot_k{k}")


def test_budget_and_parity_hold_exactly_on_the_ot_assignment(constrained_run):
    run_dir, results, data = constrained_run
    unit = np.asarray(data.meta["treatment_unit_cost"])
    duals = []
    for k in (2, 3):
        cell = results["methods"]["ot"][str(k)]
        T = np.asarray(cell["treatments"])
        price = results["price_of_constraints"][str(k)]
        rows = {r["name"]: r for r in price["constraints"]}
        # the recorded value of the budget row is the mean cost of the treatments as assigned
        assert rows["budget"]["value"] <= BUDGET * (1 + 1e-9)
        assert rows["budget"]["satisfied"]
        # the budget binds here (the unconstrained policy spends more) and its dual is positive
        unc = price["unconstrained"]
        unc_cost = np.asarray(unc["treatments"]) @ unit @ np.asarray(unc["segment_sizes"]) / len(data)
        assert unc_cost > BUDGET
        assert price["cost"]["expected_profit"] > 0  # so the constraints cost estimated profit
        # a positive dual only where the bound is tight for the chosen treatments (the treatment choice can
        # also absorb a budget: cheaper treatments, everyone at its best of them, dual 0)
        assert rows["budget"]["dual"] >= 0
        if rows["budget"]["dual"] > 0:
            # tight up to one customer moved between two of the K treatments (the assignment is integral)
            step = np.ptp(T @ unit) / len(data)
            assert rows["budget"]["binding"] == "hi" and BUDGET - step <= rows["budget"]["value"]
        duals.append(rows["budget"]["dual"])
        # one parity row per pair of the 4 regions, each within the band
        parity = [r for n, r in rows.items() if n.startswith("parity region=")]
        assert len(parity) == 6 and all(abs(r["value"]) <= GAP * (1 + 1e-9) for r in parity)
        assert any(r["binding"] for r in parity)  # the band is active: the regions differ without it
        assert T.shape == (k, 2)
    assert max(duals) > 0


def test_the_assignment_itself_meets_the_constraints(constrained_run, monkeypatch):
    """Recompute budget and parity from the assignment the discretizer returned (not its own report)."""
    run_dir, results, data = constrained_run
    from coarse_gpu.experiment import methods

    captured = {}
    orig = methods.ot_policy

    def spy(*a, **kw):
        pol, extra = orig(*a, **kw)
        captured[a[2]] = pol
        return pol, extra

    monkeypatch.setattr(methods, "ot_policy", spy)
    cfg = _cfg([f"discretizer.budget={BUDGET}", "discretizer.group_parity.column=region",
                f"discretizer.group_parity.max_gap={GAP}", "discretizer.group_parity.treatment=duration_weeks",
                "evaluation.k_values=[3]", "evaluation.methods=[ot]", "evaluation.n_boot=0"])
    out = run_dir / "again"
    run_experiment(cfg, out)
    pol = captured[3]
    unit = np.asarray(data.meta["treatment_unit_cost"])
    cost = pol.treatments[pol.assignment] @ unit
    assert cost.mean() <= BUDGET * (1 + 1e-9)
    weeks = pol.treatments[pol.assignment][:, 1]
    region = data.features["region"].astype(str).to_numpy()
    means = [weeks[region == g].mean() for g in np.unique(region)]
    assert max(means) - min(means) <= GAP * (1 + 1e-9)


def test_saved_policy_records_its_constraints(constrained_run):
    run_dir, results, data = constrained_run
    doc = json.loads((run_dir / "policies" / "ot_k3" / "policy.json").read_text())
    spec = doc["constraints"]["spec"]
    assert spec["budget"] == BUDGET
    assert spec["budget_unit_cost"] == pytest.approx(data.meta["treatment_unit_cost"])
    assert spec["group_parity"] == {"column": "region", "max_gap": GAP, "treatment": "duration_weeks",
                                    "groups": ["east", "north", "south", "west"]}
    names = [r["name"] for r in doc["constraints"]["rows"]]
    assert names[0] == "budget" and len(names) == 7
    assert _segments(run_dir, 3).constraints["spec"]["budget"] == BUDGET  # load_policy reads it back
    tree = json.loads((run_dir / "policies" / "ot_tree_k3" / "policy.json").read_text())
    assert tree["rule"] == "tree" and tree["constraints"]["enforced"] is False


def test_ot_tree_reports_rules_and_its_cost_against_ot(constrained_run):
    run_dir, results, data = constrained_run
    from coarse_gpu.experiment.report import format_table

    for k in ("2", "3"):
        tree, ot = results["methods"]["ot_tree"][k], results["methods"]["ot"][k]
        assert tree["treatments"] == ot["treatments"]  # the OT's K treatments
        assert "-> segment" in tree["rules"] and sum(tree["segment_sizes"]) == len(data)
        assert tree["cost_vs_ot"]["oracle_profit"] == pytest.approx(ot["oracle_profit"] - tree["oracle_profit"])
    table = format_table(results)
    assert "ot_tree rules at K=3:" in table and "Price of the constraints" in table


def test_price_figure_is_written(constrained_run, tmp_path):
    from coarse_gpu.experiment.report import plot_price_of_constraints

    png = plot_price_of_constraints(constrained_run[1], tmp_path / "price.png")
    assert png is not None and png.stat().st_size > 1000


@pytest.mark.parametrize("overrides, expected", [
    (["discretizer.group_parity.column=no_such", "discretizer.group_parity.max_gap=0.1",
      "discretizer.group_parity.treatment=duration_weeks"], "discretizer.group_parity.column='no_such' is not a column"),
    (["discretizer.group_parity.column=region", "discretizer.group_parity.max_gap=0.1"],
     "discretizer.group_parity.treatment is null"),
    (["discretizer.group_parity.column=region"], "needs discretizer.group_parity.max_gap"),
    (["discretizer.budget=-1"], "discretizer.budget=-1.0 is below the cheapest candidate"),
    (["discretizer.budget=1", "discretizer.budget_unit_cost=[1]"], "needs one value per treatment dimension"),
])
def test_bad_constraint_keys_are_named_before_training(overrides, expected, tmp_path, monkeypatch):
    def no_training(*a, **kw):
        raise AssertionError("trained before the config error")

    monkeypatch.setattr(step_one, "personalize", no_training)
    with pytest.raises(ConfigValueError) as err:
        run_experiment(_cfg(overrides), tmp_path)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_ot_tree_alone_runs_the_ot_and_uses_its_grid_solution(tmp_path):
    """Without constraints ot refines off the grid; ot_tree takes the grid treatments before refinement."""
    res = run_experiment(_cfg(["evaluation.methods=[ot_tree]", "evaluation.k_values=[3]", "evaluation.n_boot=0"]),
                         tmp_path)
    cell = res["methods"]["ot_tree"]["3"]
    assert "ot" not in res["methods"] and "price_of_constraints" not in res
    grid = pipeline.candidate_treatments(build_data(_cfg().data, 0), _cfg().data)
    T = np.asarray(cell["treatments"])
    assert all(np.isclose(grid, t).all(1).any() for t in T)
    assert json.loads((tmp_path / "policies" / "ot_tree_k3" / "policy.json").read_text())["constraints"] == {}
