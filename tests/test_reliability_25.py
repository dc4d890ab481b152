"""Issue 25, the CLI / config / discretizer / saved-policy side: one test per case the issue found.

Each test asserts the message the user gets (one line, naming the key / column / row / file) or the
correct result, and, where files are involved, that nothing on disk changed (``snapshot``). The
fixtures are built so that a plausible wrong implementation fails: the K treatments of every saved
policy differ (a scorer reporting the best-of-K profit instead of the assigned segment's is caught),
declared ranges are one-sided (each side checked on its own).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coarse_gpu.assign_cli import main as assign_main
from coarse_gpu.policy.io import PolicyFileError, load_policy

from test_reliability import cli, snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
NEURAL = ["model.max_epochs=10", "model.lr=0.01", "model.hidden=8", "model.n_repr_layers=1", "model.n_ensemble=1"]
BOOSTED = ["model.max_iter=5"]
#: every configs/model/*.yaml, with the keys that make it small (1 epoch / 5 boosting rounds)
FAMILIES = {
    "tarnet": NEURAL, "dragonnet": NEURAL, "dose_logit": NEURAL, "dose_vc": NEURAL,
    "gb_s": BOOSTED, "gb_t": BOOSTED, "dr": BOOSTED,
    "auto": ["model.max_epochs=3", "model.hidden=8", "model.n_repr_layers=1", "model.n_ensemble=1"] + BOOSTED,
}


def two_kinds(n: int, seed: int = 0) -> pd.DataFrame:
    """Customers of two kinds with opposite, large responses (so that even a briefly trained model gives
    K different treatments and segments of both kinds): for x1 > 0 the discount pays and the weeks cost,
    for x1 <= 0 the reverse. Randomized discount in {0, 0.2, 0.4}, weeks in {0, 2, 4}."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    tier = rng.choice(["a", "b"], n)
    disc = rng.choice([0.0, 0.2, 0.4], n)
    weeks = rng.choice([0.0, 2.0, 4.0], n)
    up = x[:, 0] > 0
    profit = 10 + x[:, 1] + np.where(up, 40 * disc - 2 * weeks, -40 * disc + 2 * weeks) + rng.normal(0, 1, n)
    return pd.DataFrame({"customer_id": [f"c{seed}-{i}" for i in range(n)], "x1": x[:, 0], "x2": x[:, 1],
                         "x3": x[:, 2], "tier": tier, "discount": disc, "duration_weeks": weeks, "profit": profit})


def file_run(tmp: Path, n: int = 900, seed: int = 0) -> list[str]:
    """The overrides of a small data=file run on ``two_kinds`` (discount x weeks)."""
    csv = tmp / "experiment.csv"
    if not csv.exists():
        two_kinds(n, seed=seed).to_csv(csv, index=False)
    return ["data=file", f"data.path={csv}", "data.features=[x1,x2,x3,tier]",
            "data.treatment=[discount,duration_weeks]", "data.outcome=profit", "data.id=customer_id",
            "data.categorical=[tier]", "model.n_folds=2", "evaluation.n_boot=20",
            "discretizer.n_restarts=1", "logger=none", "quiet=true"]


#: families whose saved policies are checked elsewhere: no heterogeneity (every customer's best arm is
#: the same, so this fixture's K distinct treatments cannot exist) and the two-part learner (needs a
#: declared profit structure, which this fixture has not)
ELSEWHERE = {"arm_means": "tests/test_twopart.py::test_arm_means_effects_do_not_vary_with_x",
             "twopart": "tests/test_twopart.py::test_cli_file_with_declared_structure_runs_end_to_end"}


def test_every_configs_model_yaml_is_covered():
    assert sorted([*FAMILIES, *ELSEWHERE]) == sorted(p.stem for p in (ROOT / "configs" / "model").glob("*.yaml"))
    for where in ELSEWHERE.values():
        path, name = where.split("::")
        assert f"def {name}(" in (ROOT / path).read_text(), where


# ---- 1. every model family's saved policies reload and assign identically --------------------------------
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_model_family_saves_policies_that_reload_and_assign_identically(family, tmp_path, monkeypatch):
    import coarse_gpu.policy.io as pio

    kept = {}
    real_save = pio.save_policy

    def capture(folder, policy):  # the run's in-memory policy, to compare the reloaded one with
        kept[Path(folder).name] = policy
        return real_save(folder, policy)

    monkeypatch.setattr(pio, "save_policy", capture)
    run = tmp_path / "run"
    code, err = cli(run, *file_run(tmp_path), f"model={family}", *FAMILIES[family],
                    "evaluation.k_values=[3]", "evaluation.methods=[ot,kmeans_features]")
    assert code == 0, err
    assert sorted(kept) == ["kmeans_features_k3", "ot_k3"]
    new = two_kinds(400, seed=7).drop(columns=["discount", "duration_weeks", "profit"])
    new.to_csv(tmp_path / "new.csv", index=False)
    for name, mem in kept.items():
        folder = run / "policies" / name
        # the fixture's K treatments differ (identical ones would hide a scorer reporting another segment's profit)
        assert len(np.unique(mem.treatments, axis=0)) >= (3 if name.startswith("ot") else 2), (family, mem.treatments)
        before = snapshot(folder)
        loaded = load_policy(folder)
        a = mem.assign(new, ids=new.customer_id)
        b = loaded.assign(new, ids=new.customer_id)
        pd.testing.assert_frame_equal(a, b)
        # the profit reported is the ASSIGNED segment's, predicted by the reloaded model on its own
        X = loaded.feature_schema.transform(new, "new")
        p_k = loaded.model.predict_profit(X, loaded.treatments)
        np.testing.assert_allclose(b.predicted_profit, p_k[np.arange(len(new)), b.segment], rtol=1e-12)
        np.testing.assert_array_equal(b[["discount", "duration_weeks"]].to_numpy(), loaded.treatments[b.segment])
        out = tmp_path / f"{name}.csv"
        assert assign_main([f"policy={folder}", f"data.path={tmp_path / 'new.csv'}", f"out={out}",
                            "chunk_rows=150"]) == 0
        c = pd.read_csv(out)
        np.testing.assert_array_equal(c.segment, a.segment)
        np.testing.assert_allclose(c.predicted_profit, a.predicted_profit, rtol=1e-6, atol=1e-5)  # float32 chunks
        assert snapshot(folder) == before
    # kmeans_features assigns by features, not by profit: some customers' segment is not their best,
    # so a scorer that reported the best-of-K profit would differ from the assigned segment's
    pol = load_policy(run / "policies" / "kmeans_features_k3")
    X = pol.feature_schema.transform(new, "new")
    seg, prof = pol.assign_matrix(X)
    assert np.mean(prof < pol.model.predict_profit(X, pol.treatments).max(1) - 1e-9) > 0.05, family


# ---- 2. a saved policy's treatments are range-checked at load -----------------------------------------
@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("saved")
    run = tmp / "run"
    code, err = cli(run, *file_run(tmp), "model=tarnet", *NEURAL, "evaluation.k_values=[2]",
                    "evaluation.methods=[ot]")
    assert code == 0, err
    return run / "policies" / "ot_k2"


@pytest.mark.parametrize("value, side", [(40.0, "above"), (-0.5, "below")])
def test_an_edited_treatment_outside_the_arms_range_is_refused_at_load_on_each_side(saved_run, tmp_path, value,
                                                                                   side):
    folder = tmp_path / "p"
    shutil.copytree(saved_run, folder)
    pj = folder / "policy.json"
    doc = json.loads(pj.read_text())
    doc["treatments"][1][0] = value  # discount, arms range 0-0.4
    pj.write_text(json.dumps(doc))
    before = snapshot(folder)
    with pytest.raises(PolicyFileError) as info:
        load_policy(folder)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"policy file '{pj}': treatment 'discount' of segment 1 is {value:g}, {side} the range [0, 0.4]" in msg
    rc = assign_main([f"policy={folder}", f"data.path={tmp_path / 'none.csv'}", f"out={tmp_path / 'o.csv'}"])
    assert rc != 0 and not (tmp_path / "o.csv").exists()
    assert snapshot(folder) == before
    # the second dimension (weeks, 0-4) is checked on its own too
    doc["treatments"][1][0] = 0.2
    doc["treatments"][0][1] = 4.5 if side == "above" else -1.0
    pj.write_text(json.dumps(doc))
    with pytest.raises(PolicyFileError, match=f"treatment 'duration_weeks' of segment 0 is .*, {side} the range "
                                              r"\[0, 4\]"):
        load_policy(folder)


# ---- 3. integer-valued treatment dimensions stay on their observed values ----------------------------
def creatives(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """A creative coded 0/1/2 whose profits (10, 12, 11.5 + 1 for x1 > 0) a spline peaks between 1 and 2."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    c = rng.choice([0, 1, 2], n)
    y = 10 + x[:, 1] + np.array([0.0, 2.0, 1.5])[c] + 1.0 * (x[:, 0] > 0) * (c == 2) + rng.normal(0, 1, n)
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "creative": c, "profit": y})


def _creative_run(tmp: Path, *extra: str) -> tuple[int, str, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    csv = tmp / "creatives.csv"
    creatives().to_csv(csv, index=False)
    run = tmp / "run"
    code, err = cli(run, "data=file", f"data.path={csv}", "data.features=[x1,x2]", "data.treatment=[creative]",
                    "data.outcome=profit", "model=gb_s", "model.max_iter=20", "model.n_folds=2",
                    "model.interpolation=spline", "evaluation.k_values=[1,2]",
                    "evaluation.methods=[ot,kmeans_features]", "evaluation.n_boot=10", "logger=none", "quiet=true",
                    *extra)
    return code, err, run


def test_a_categorical_treatment_coded_0_1_2_is_never_refined_between_its_codes(tmp_path):
    code, err, run = _creative_run(tmp_path)
    assert code == 0, err
    log = (run / "cli.log").read_text()
    assert ("treatment dimension(s) ['creative'] hold only integer values (a coded category, a count or an on/off "
            "lever): their candidates are the observed values and the refinement never moves them; set "
            "discretizer.refine_integer_dims=true") in log
    res = json.loads((run / "results.json").read_text())
    for m, cells in res["methods"].items():
        for k, cell in cells.items():
            assert set(np.ravel(cell["treatments"])) <= {0.0, 1.0, 2.0}, (m, k, cell["treatments"])
    for folder in (run / "policies").iterdir():
        assert set(np.ravel(load_policy(folder).treatments)) <= {0.0, 1.0, 2.0}, folder.name
    # the user's say-so: the same run treats the codes as a dose and refines between them (the fixture
    # does move a refined treatment off the codes, so the test above can fail)
    code, err, run2 = _creative_run(tmp_path / "continuous", "discretizer.refine_integer_dims=true")
    assert code == 0, err
    ot = json.loads((run2 / "results.json").read_text())["methods"]["ot"]
    assert not set(np.ravel(ot["1"]["treatments"])) <= {0.0, 1.0, 2.0}


def test_the_solver_freezes_integer_dimensions_of_its_candidates_unless_told():
    import torch

    from coarse_gpu.discretize import discretize

    rng = np.random.default_rng(0)
    cand = np.array([[d, c] for d in (0.0, 0.2, 0.4) for c in (0.0, 1.0, 2.0)])
    peak = rng.uniform(0, 2, (300, 2)) * [0.2, 1.0]

    def oracle(T):
        T = torch.as_tensor(T, dtype=torch.float64)
        return -((torch.as_tensor(peak)[:, None, :] - T[None]) ** 2 * torch.tensor([25.0, 1.0])).sum(-1)

    X = oracle(torch.as_tensor(cand)).numpy()
    kw = dict(candidates=cand, device="cpu", seed=0, refine_oracle=oracle, bounds=(cand.min(0), cand.max(0)))
    kept = discretize(X, 2, **kw)
    assert kept.info["refine_kept_integer_dims"] == [1]
    assert set(kept.treatments[:, 1]) <= {0.0, 1.0, 2.0}
    assert not set(kept.treatments[:, 0]) <= {0.0, 0.2, 0.4}  # the continuous discount still moves
    free = discretize(X, 2, refine_integer_dims=True, **kw)
    assert not set(free.treatments[:, 1]) <= {0.0, 1.0, 2.0} and free.objective >= kept.objective
    # a declared kind (frozen_dims, coarse_gpu.experiment.kinds) wins over the heuristic being off
    declared = discretize(X, 2, refine_integer_dims=True, frozen_dims=[False, True], **kw)
    assert declared.info["refine_kept_fixed_dims"] == [1]
    assert set(declared.treatments[:, 1]) <= {0.0, 1.0, 2.0} and not set(declared.treatments[:, 0]) <= {0.0, 0.2, 0.4}


# ---- 4. Hydra's +key cannot add keys to the structured configs -----------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("+discretizer.min_shares=0.3", "unknown key 'discretizer.min_shares' (added with '+'?): DiscretizerConfig has "
                                    "no key 'min_shares'; did you mean 'discretizer.min_share'?"),
    ("+discretizer.group_parity.foo=1", "unknown key 'discretizer.group_parity.foo' (added with '+'?): "
                                        "GroupParityConfig has no key 'foo'; allowed keys in discretizer.group_parity: "
                                        "column, max_gap, treatment"),
    ("+data.n_customer=10", "unknown key 'data.n_customer' (added with '+'?): SimulatedDataConfig has no key "
                            "'n_customer'; did you mean 'data.n_customers'?"),
    ("+sede=3", "unknown key 'sede' (added with '+'?): RunConfig has no key 'sede'; did you mean 'seed'?"),
])
def test_a_key_added_with_plus_is_refused_by_name_before_any_work(override, expected, tmp_path):
    run = tmp_path / "run"
    code, err = cli(run, override, "logger=none", "quiet=true")
    assert code == 1
    assert err.strip() == f"coarse-gpu: config error: {expected}"
    assert sorted(p.name for p in run.iterdir()) == ["cli.log"]  # Hydra's log only: no data, no training


@pytest.mark.parametrize("overrides", [[], ["hparams_search=optuna"], ["data=file", "model=dose_vc"]] + [
    [f"experiment={p.stem}"] for p in sorted((ROOT / "configs" / "experiment").glob("*.yaml"))])
def test_every_shipped_config_has_only_schema_keys(overrides):
    from hydra import compose, initialize_config_dir

    from coarse_gpu.cli import config_dir
    from coarse_gpu.experiment.config import register_configs
    from coarse_gpu.experiment.validate import unknown_key_problems

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    assert unknown_key_problems(cfg) == []


# ---- 5. the heuristic solvers never refuse a problem the exact solver solves ---------------------------
def promotions_grid(seed: int, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(profit (n, 30), candidates (30, 2) discount x weeks, cost (30,) = 10 discount + 0.35 weeks): every
    customer's best promotion costs something, the free one (0, 0) is nobody's best (the CLI case)."""
    rng = np.random.default_rng(seed)
    cand = np.array([(a, b) for a in np.linspace(0, 0.4, 6) for b in np.linspace(0, 4, 5)])
    ideal, iw = rng.uniform(0.1, 0.4, (n, 1)), rng.uniform(1, 4, (n, 1))
    X = 10 - 30 * (cand[None, :, 0] - ideal) ** 2 - 0.5 * (cand[None, :, 1] - iw) ** 2 \
        + 0.2 * rng.normal(size=(n, len(cand)))
    return X, cand, 10 * cand[:, 0] + 0.35 * cand[:, 1]


def test_sinkhorn_and_lloyd_reach_the_mip_optimum_under_small_budgets():
    from coarse_gpu.discretize import Constraint, discretize

    X, cand, cost = promotions_grid(1, n=150)
    n = X.shape[0]
    for budget in (0.0, 0.05, 0.3):
        for k in (2, 3):
            cons = [Constraint(np.full(n, 1 / n), cost, hi=budget, name="budget")]
            ref = discretize(X, k, candidates=cand, device="cpu", solver="mip", constraints=cons)
            for solver in ("sinkhorn", "lloyd"):
                res = discretize(X, k, candidates=cand, device="cpu", seed=0, solver=solver, constraints=cons,
                                 n_restarts=2)
                chosen = res.candidate_index[res.assignment]
                assert float(np.mean(cost[chosen])) <= budget + 1e-9, (solver, budget, k)
                assert res.objective == pytest.approx(X[np.arange(n), chosen].sum(), rel=1e-12)
                assert res.objective >= ref.objective * (1 - 2e-3), (solver, budget, k, res.objective, ref.objective)
                assert res.objective <= ref.info["mip_dual_bound"] * (1 + 1e-9)
                if budget == 0.0:  # only the free promotion is affordable: everyone gets it
                    assert np.all(cost[chosen] == 0.0) and res.objective == pytest.approx(ref.objective, rel=1e-12)


def test_a_problem_no_restart_can_start_feasibly_falls_back_to_the_mip(monkeypatch):
    """No candidate satisfies the constraints alone (a floor AND a ceiling on the mean cost that need a mix):
    when every restart is infeasible on a small instance, the MIP decides instead of a refusal."""
    import coarse_gpu.discretize.solver as solver_mod
    from coarse_gpu.discretize import Constraint, discretize

    X, cand, cost = promotions_grid(3, n=120)
    n = X.shape[0]
    cons = [Constraint(np.full(n, 1 / n), cost, lo=0.9, hi=1.0, name="band")]
    ref = discretize(X, 3, candidates=cand, device="cpu", solver="mip", constraints=cons)
    real_lloyd = solver_mod._Run.lloyd

    def hopeless(self, C0, phase, ids, prices=None):  # every restart of the search ends infeasible
        C, obj, p = real_lloyd(self, C0, phase, ids, prices)
        return C, obj.new_full(obj.shape, -np.inf), p

    monkeypatch.setattr(solver_mod._Run, "lloyd", hopeless)
    monkeypatch.setattr(solver_mod._Run, "swap_constrained", lambda self, C, obj, *a: (C, obj, None))
    res = discretize(X, 3, candidates=cand, device="cpu", seed=0, solver="lloyd", constraints=cons, n_restarts=2)
    assert res.info["fallback"] == "mip: no restart of the search found a feasible set"
    assert res.objective == pytest.approx(ref.objective, rel=1e-9)


def test_budget_zero_with_a_free_no_promotion_runs_and_flags_its_single_treatment(tmp_path):
    """The issue's command: discretizer.budget=0 with unit costs [10, 0.35] ran out of restarts after
    training. Now it runs, and the K=3 policy (everyone at no promotion) reports effective K = 1."""
    run = tmp_path / "run"
    code, err = cli(run, *file_run(tmp_path), "model=gb_s", *BOOSTED, "evaluation.k_values=[1,3]",
                    "evaluation.methods=[ot]", "discretizer.budget=0", "discretizer.budget_unit_cost=[10,0.35]")
    assert code == 0, err
    res = json.loads((run / "results.json").read_text())
    cell = res["methods"]["ot"]["3"]
    assert cell["segment_sizes"] == [900, 0, 0] or sorted(cell["segment_sizes"]) == [0, 0, 900]
    assert cell["effective_k"] == 1 and res["methods"]["ot"]["1"]["effective_k"] == 1
    seg = int(np.argmax(cell["segment_sizes"]))
    assert cell["treatments"][seg] == [0.0, 0.0]
    assert ("(empty segments: effective K, the number of segments that serve someone, is below K for OT "
            "discretizer K=3: 1)") in (run / "table.txt").read_text()


# ---- 6. the MIP refuses sizes far beyond its documented range, before training -------------------------
def test_mip_beyond_its_size_is_refused_before_training_with_the_alternative(tmp_path):
    run = tmp_path / "run"
    code, err = cli(run, "discretizer=mip", "data.n_customers=2000", "model=gb_s", *BOOSTED, "model.n_folds=2",
                    "evaluation.k_values=[2]", "evaluation.methods=[ot]", "logger=none", "quiet=true")
    assert code == 1
    assert err.strip() == (
        "coarse-gpu: config error: discretizer.solver=mip: 2000 scored customers x 546 candidate treatments: N x M = "
        "2000 x 546 = 1,092,000 profit entries is beyond the 200,000 the exact mixed-integer program is run on (it "
        "is meant for about 1e5 and may run for many minutes above); use discretizer=sinkhorn, which takes the same "
        "share bounds and constraints, or raise discretizer.mip_max_entries")
    assert not (run / "results.json").exists() and not (run / "checkpoints").exists()  # nothing trained


def test_mip_max_entries_is_the_limit_the_check_uses():
    from omegaconf import OmegaConf

    from coarse_gpu.experiment.pipeline import _check_mip_size
    from coarse_gpu.experiment.validate import ConfigValueError

    cfg = OmegaConf.create({"discretizer": {"solver": "mip", "mip_max_entries": 1_092_000}})
    _check_mip_size(cfg, 2000, 546)  # raised knowingly, to exactly the size: accepted
    with pytest.raises(ConfigValueError, match="1,092,000 profit entries is beyond the 1,091,999"):
        _check_mip_size(OmegaConf.create({"discretizer": {"solver": "mip", "mip_max_entries": 1_091_999}}), 2000, 546)
    _check_mip_size(OmegaConf.create({"discretizer": {"solver": "sinkhorn"}}), 10**6, 10**3)  # not the MIP


# ---- 7. effective K in results.json and the table ------------------------------------------------------
def test_the_table_flags_policies_with_empty_segments_and_only_those():
    from coarse_gpu.experiment.report import format_table

    def cell(sizes, **kw):
        return {"treatments": [[0.1 * i] for i in range(len(sizes))], "oracle_profit": None, "share_of_full": None,
                "dr_value": 1.0, "dr_ci": [0.5, 1.5], "segment_sizes": sizes, **kw}

    full = {"k_values": [1, 2], "full_personalization": {"dr_value": 2.0, "control_dr_value": 0.5},
            "methods": {"ot": {"1": cell([2000]), "2": cell([1200, 800], effective_k=2)},
                        "grid": {"1": cell([2000]), "2": cell([2000, 0])}}}  # no effective_k: counted
    table = format_table(full)
    assert table.count("empty segments") == 1
    assert "is below K for grid search (arms) K=2: 1)" in table
    full["methods"]["grid"]["2"] = cell([1500, 500])
    assert "empty segments" not in format_table(full)


# ---- 8. messages: one line, naming the column / key / folder -------------------------------------------
def test_huge_finite_values_are_named_per_column_with_their_first_row(tmp_path):
    from coarse_gpu.data.file import DataSchemaError, FileSpec, check_frame

    df = two_kinds(300)
    df.loc[5, "x3"] = 1e300
    df.loc[9, "x2"] = -1e300
    df.loc[11, "x2"] = 1e300
    spec = FileSpec(features=["x1", "x2", "x3", "tier"], treatment=["discount", "duration_weeks"], outcome="profit",
                    categorical=["tier"])
    with pytest.raises(DataSchemaError) as info:
        check_frame(df, spec)
    assert info.value.problems == [
        "feature column 'x2': 2 row(s) hold a finite value too large to be used (|value| > 3.4e+38, the float32 "
        "range the models compute in) (e.g. -1e+300 in row 9); rescale the column (e.g. to thousands) or drop the rows",
        "feature column 'x3': 1 row(s) hold a finite value too large to be used (|value| > 3.4e+38, the float32 "
        "range the models compute in) (e.g. 1e+300 in row 5); rescale the column (e.g. to thousands) or drop the rows"]
    # the scorer names them the same way in new customers' files
    from coarse_gpu.data.file import FeatureSchema

    schema = FeatureSchema.fit(two_kinds(300)[["x1", "x2", "x3"]])
    issues = schema.row_issues(df[["x1", "x2", "x3"]], offset=100)
    assert [(i.column, i.what) for i in issues if "too large" in i.what] == [
        ("x2", "hold a finite value too large to be used (|value| > 3.4e+38)"),
        ("x3", "hold a finite value too large to be used (|value| > 3.4e+38)")]


def test_an_eval_fraction_that_starves_the_arms_names_the_key(tmp_path):
    run = tmp_path / "run"
    code, err = cli(run, *file_run(tmp_path), "model=gb_s", *BOOSTED, "data.eval_fraction=0.99",
                    "evaluation.k_values=[2]", "evaluation.methods=[ot]")
    assert code == 1
    line = err.strip()
    assert line.startswith("coarse-gpu: config error: data.eval_fraction=0.99 leaves 9 of the 900 customers to train "
                           "on, and ") and line.endswith(": lower data.eval_fraction") and "\n" not in line
    assert "(model.n_folds=2: 2 per arm in every fold)" in line
    assert not (run / "results.json").exists() and not (run / "checkpoints").exists()


@pytest.mark.parametrize("kind", ["log file is a folder", "run dir under a file"])
def test_an_unwritable_run_directory_is_named_before_any_work(kind, tmp_path):
    if kind == "log file is a folder":  # what a read-only folder gives a non-root user: no cli.log
        run = tmp_path / "run"
        (run / "cli.log").mkdir(parents=True)
        want = (f"coarse-gpu: the run directory '{run}' cannot be created or written (cannot open its log file "
                f"'{run / 'cli.log'}' (Is a directory)); nothing was run")
    else:
        (tmp_path / "afile").write_text("x")
        run = tmp_path / "afile" / "run"
        want = (f"coarse-gpu: the run directory '{run}' cannot be created or written (Not a directory: '{run}'); "
                "nothing was run")
    before = snapshot(tmp_path)
    code, err = cli(run, "logger=none", "quiet=true")
    assert code == 1
    assert err.strip() == want + ": set hydra.run.dir (hydra.sweep.dir with -m) to a writable folder"
    assert snapshot(tmp_path) == before


def test_group_parity_on_a_file_column_that_is_not_a_feature(tmp_path):
    """A protected attribute the model must not use: read from the file for the constraint only."""
    df = two_kinds(900)
    df["gender"] = np.where(np.random.default_rng(1).random(900) < 0.5, "f", "m")
    csv = tmp_path / "experiment.csv"
    df.to_csv(csv, index=False)
    base = [o for o in file_run(tmp_path) if not o.startswith("data.path")] + [f"data.path={csv}"]
    run = tmp_path / "run"
    code, err = cli(run, *base, "model=gb_s", *BOOSTED, "evaluation.k_values=[2]", "evaluation.methods=[ot]",
                    "discretizer.group_parity.column=gender", "discretizer.group_parity.max_gap=0.05",
                    "discretizer.group_parity.treatment=discount")
    assert code == 0, err
    res = json.loads((run / "results.json").read_text())
    gap = [r for r in res["price_of_constraints"]["2"]["constraints"] if "gender" in r["name"] or "parity" in r["name"]]
    assert gap and all(abs(r["value"]) <= 0.05 + 1e-9 for r in gap), res["price_of_constraints"]["2"]["constraints"]
    pol = load_policy(run / "policies" / "ot_k2")
    assert "gender" not in pol.feature_schema.columns and pol.feature_schema.columns == ["x1", "x2", "x3", "tier"]
    # a column in neither place is named with what was read
    code, err = cli(tmp_path / "run2", *base, "model=gb_s", *BOOSTED, "evaluation.k_values=[2]",
                    "evaluation.methods=[ot]", "discretizer.group_parity.column=genre",
                    "discretizer.group_parity.max_gap=0.05", "discretizer.group_parity.treatment=discount")
    assert code == 1
    assert "discretizer.group_parity.column='genre' is not a column of the data (neither a feature nor another " \
           "column of data.path); columns read: ['x1', 'x2', 'x3', 'tier']" in err
