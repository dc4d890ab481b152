"""Treatment kinds (issue 27 item 1): continuous, discrete and categorical dimensions, observed combinations only.

The must-shows: a Hillstrom-style 3-arm experiment given as ONE text column runs end to end through
``data=file`` and its saved policies and assignment CSV name the labels; the same experiment as two 0/1
columns never offers (1, 1) unless ``data.allow_unseen_combinations=true`` (then the output says
extrapolated); a mixed space (continuous depth x declared-discrete lever x categorical creative) never gets
a value a dimension cannot take from any method of the default run.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from coarse_gpu.assign_cli import main as assign_main
from coarse_gpu.data.file import DataSchemaError, FileSpec, experiment_from_frame
from coarse_gpu.data.treatments import TreatmentSpace
from coarse_gpu.experiment.kinds import resolve_kinds, unseen_mask
from coarse_gpu.experiment.pipeline import candidate_treatments
from coarse_gpu.policy.io import PolicyFileError, load_policy

from test_reliability import cli

SEGMENTS = ["Mens E-Mail", "Womens E-Mail", "No E-Mail"]
FAST = ["model=gb_s", "model.max_iter=20", "model.n_folds=2", "evaluation.n_boot=10", "logger=none", "quiet=true"]


def hillstrom(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Hillstrom-style e-mail experiment: ``segment`` randomized over three labels; the men's e-mail lifts
    spend by 3 for customers with x1 > 0 and lowers it by 1 for the others, the women's the reverse."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    seg = rng.choice(SEGMENTS, n)
    men = x[:, 0] > 0
    lift = np.where(seg == "Mens E-Mail", np.where(men, 3.0, -1.0),
                    np.where(seg == "Womens E-Mail", np.where(men, -1.0, 3.0), 0.0))
    y = 5 + x[:, 1] + lift + rng.normal(0, 1, n)
    return pd.DataFrame({"cid": np.arange(n), "x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "segment": seg,
                         "spend": y})


def two_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The same experiment as two 0/1 columns: (1, 1), both e-mails, was never randomized."""
    out = df.drop(columns="segment")
    out["mens"] = (df.segment == "Mens E-Mail").astype(int)
    out["womens"] = (df.segment == "Womens E-Mail").astype(int)
    return out


def mixed(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """A continuous depth (0, 0.1, 0.2, 0.3) x an on/off lever x a creative label, fully randomized."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    depth = rng.choice([0.0, 0.1, 0.2, 0.3], n)
    lever = rng.choice([0, 1], n)
    creative = rng.choice(["bold", "calm", "retro"], n)
    a = x[:, 0] > 0
    y = (5 + x[:, 1] + np.where(a, 20 * depth - 30 * depth ** 2, -5 * depth) + np.where(a, 1.0, -0.5) * lever
         + np.select([creative == "bold", creative == "calm"], [np.where(a, 1.5, -1.0), np.where(a, -1.0, 1.5)], 0.3)
         + rng.normal(0, 1, n))
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "depth": depth, "lever": lever,
                         "creative": creative, "profit": y})


def _spec(treatment, **kw) -> FileSpec:
    return FileSpec(features=["x1", "x2", "x3"], treatment=list(treatment), outcome="spend", **kw)


# ---- the kinds in the data ----------------------------------------------------------------------------
def test_a_text_treatment_column_is_categorical_coded_over_its_sorted_labels():
    df = hillstrom(600)
    data = experiment_from_frame(df, _spec(["segment"], control=["No E-Mail"]))
    labels = sorted(SEGMENTS)
    assert data.space.kinds == ("categorical",) and data.space.labels == (labels,)
    np.testing.assert_array_equal(data.treatment[:, 0], [labels.index(s) for s in df.segment])
    assert data.arms[:, 0].tolist() == [0.0, 1.0, 2.0]
    assert data.space.control == (float(labels.index("No E-Mail")),)
    assert data.space.to_user(data.arms) == [[lab] for lab in labels]
    # a numeric column declared categorical keeps its own values as labels (ints where whole)
    df2 = df.assign(segment=df.segment.map({s: 10 * i for i, s in enumerate(SEGMENTS)}))
    d2 = experiment_from_frame(df2, _spec(["segment"], treatment_kinds={"segment": "categorical"}))
    assert d2.space.labels == ([0, 10, 20],) and d2.space.to_user([[2.0]]) == [[20]]


@pytest.mark.parametrize("kinds, expected", [
    ({"segmnt": "categorical"}, "data.treatment_kinds.segmnt: 'segmnt' is not a treatment column (data.treatment "
                                "= ['segment'])"),
    ({"segment": "ordinal"}, "data.treatment_kinds.segment='ordinal' is not a kind; use one of ['continuous', "
                             "'discrete', 'categorical']"),
])
def test_a_wrong_kind_key_or_value_is_one_line_naming_the_key(kinds, expected, tmp_path):
    with pytest.raises(DataSchemaError) as err:
        experiment_from_frame(hillstrom(300), _spec(["segment"], treatment_kinds=kinds))
    assert err.value.problems == [expected]
    # the command line refuses it before anything runs (no data read: the file does not even exist)
    code, out = cli(tmp_path / "run", "data=file", f"data.path={tmp_path / 'absent.csv'}", "data.features=[x1]",
                    "data.treatment=[segment]", "data.outcome=spend",
                    "data.treatment_kinds={" + ",".join(f"{k}:{v}" for k, v in kinds.items()) + "}", *FAST)
    assert code != 0 and expected in out and "absent.csv" not in out, out


def test_a_text_column_declared_numeric_and_a_wrong_control_label_are_named():
    with pytest.raises(DataSchemaError) as err:
        experiment_from_frame(hillstrom(300), _spec(["segment"], treatment_kinds={"segment": "discrete"}))
    assert "treatment column 'segment'" in str(err.value) and "declares 'segment' discrete" in str(err.value)
    with pytest.raises(DataSchemaError, match=r"data.control\[0\]='No mail' for the categorical treatment column "
                                              r"'segment' is not one of its labels"):
        experiment_from_frame(hillstrom(300), _spec(["segment"], control=["No mail"]))
    rare = hillstrom(300)
    rare.loc[:5, "segment"] = "Both E-Mails"
    with pytest.raises(DataSchemaError, match="e.g. arm \\(segment='Both E-Mails'\\) with 6 row"):
        experiment_from_frame(rare, _spec(["segment"]))


def test_a_declared_kind_wins_over_the_integer_heuristic():
    data = experiment_from_frame(two_columns(hillstrom(600)), _spec(["mens", "womens"]))
    assert resolve_kinds(data).space.kind_list == ["discrete", "discrete"]  # undeclared 0/1: kept discrete
    assert resolve_kinds(data).meta["treatment_kinds_inferred"] == ["mens", "womens"]
    assert resolve_kinds(data, refine_integer_dims=True).space.kind_list == ["continuous", "continuous"]
    declared = experiment_from_frame(two_columns(hillstrom(600)),
                                     _spec(["mens", "womens"], treatment_kinds={"mens": "continuous"}))
    # declared continuous stays continuous whatever the heuristic; the undeclared one is still kept discrete
    assert resolve_kinds(declared).space.kind_list == ["continuous", "discrete"]


def test_candidates_are_observed_values_and_combinations_only():
    data = experiment_from_frame(two_columns(hillstrom(600)), _spec(["mens", "womens"]))
    cand = candidate_treatments(data, OmegaConf.create({"candidate_points": None}), keep_integer_dims=True)
    assert sorted(map(tuple, cand.tolist())) == [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0)]
    allowed = candidate_treatments(data, OmegaConf.create({"candidate_points": None,
                                                           "allow_unseen_combinations": True}), keep_integer_dims=True)
    assert sorted(map(tuple, allowed.tolist())) == [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]
    assert unseen_mask(allowed, data.arms, np.array([True, True])).tolist() == \
        [tuple(r) == (1.0, 1.0) for r in allowed.tolist()]
    # a grid of candidate points: a continuous dimension is gridded, the others keep their observed values
    m = experiment_from_frame(mixed(600), FileSpec(features=["x1", "x2"], treatment=["depth", "lever", "creative"],
                                                   outcome="profit", treatment_kinds={"lever": "discrete"}))
    c = candidate_treatments(m, OmegaConf.create({"candidate_points": [7, 5, 5]}))
    assert c.shape == (7 * 2 * 3, 3)
    assert np.unique(c[:, 0]).size == 7 and set(c[:, 1]) == {0.0, 1.0} and set(c[:, 2]) == {0.0, 1.0, 2.0}


def test_treatment_space_refuses_labels_that_do_not_fit_the_codes():
    with pytest.raises(ValueError, match="dimension 'c' \\(categorical\\) has labels"):
        TreatmentSpace(("c",), (0.0,), (2.0,), (0.0,), kinds=("categorical",), labels=(["a", "b"],))
    with pytest.raises(ValueError, match="kinds must be 1 of"):
        TreatmentSpace(("c",), (0.0,), (2.0,), (0.0,), kinds=("nominal",))


# ---- end to end --------------------------------------------------------------------------------------
def _cells(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def test_hillstrom_segment_column_runs_end_to_end_and_names_its_labels(tmp_path, capsys):
    csv = tmp_path / "hillstrom.csv"
    hillstrom().to_csv(csv, index=False)
    run = tmp_path / "run"
    code, err = cli(run, "data=file", f"data.path={csv}", "data.features=[x1,x2,x3]", "data.treatment=[segment]",
                    "data.outcome=spend", "data.id=cid", "data.control=[No E-Mail]", "evaluation.k_values=[1,2]",
                    *FAST)
    assert code == 0, err
    res = _cells(run)
    assert res["treatment_kinds"] == [{"name": "segment", "kind": "categorical", "labels": sorted(SEGMENTS)}]
    assert res["full_personalization"]["control_treatment"] == [float(sorted(SEGMENTS).index("No E-Mail"))]
    for m, cells in res["methods"].items():
        for k, cell in cells.items():
            assert {t[0] for t in cell["treatments_labelled"]} <= set(SEGMENTS), (m, k)
            assert not cell["extrapolated"]
    # the heterogeneity is learnt: at K=2 OT sends the men's e-mail to some and the women's to the others
    assert sorted(t[0] for t in res["methods"]["ot"]["2"]["treatments_labelled"]) == ["Mens E-Mail", "Womens E-Mail"]
    assert "OT treatments at K=2: segment=" in (run / "table.txt").read_text()
    pol = load_policy(run / "policies" / "ot_k2")
    assert sorted(t[0] for t in pol.treatments_labelled) == ["Mens E-Mail", "Womens E-Mail"]
    assert json.loads((run / "policies" / "ot_k2" / "policy.json").read_text())["treatment_kinds"][0]["labels"] == \
        sorted(SEGMENTS)
    new = tmp_path / "new.csv"
    hillstrom(200, seed=1).drop(columns=["segment", "spend"]).to_csv(new, index=False)
    out = tmp_path / "assign.csv"
    assert assign_main([f"policy={run / 'policies' / 'ot_k2'}", f"data.path={new}", f"out={out}"]) == 0
    capsys.readouterr()
    table = pd.read_csv(out)
    assert set(table.segment) == {"Mens E-Mail", "Womens E-Mail"}
    # the labels follow the covariate that drives the response (x1 > 0: the men's e-mail pays)
    x1 = pd.read_csv(new).x1.to_numpy()
    assert np.mean((table.segment == "Mens E-Mail").to_numpy() == (x1 > 0)) > 0.9


def test_two_01_columns_never_offer_both_unless_allowed_and_then_say_extrapolated(tmp_path):
    csv = tmp_path / "two.csv"
    two_columns(hillstrom(2000)).to_csv(csv, index=False)
    base = ["data=file", f"data.path={csv}", "data.features=[x1,x2,x3]", "data.treatment=[mens,womens]",
            "data.outcome=spend", "evaluation.k_values=[1,2,3]"]
    # dose_logit predicts anywhere and the OT refinement has an oracle: the run that refined to (1, 1)
    dose = ["model=dose_logit", "model.max_epochs=2", "model.n_folds=2", "evaluation.n_boot=10", "logger=none",
            "quiet=true"]
    code, err = cli(tmp_path / "run", *base, *dose)
    assert code == 0, err
    res = _cells(tmp_path / "run")
    seen = {(0, 0), (0, 1), (1, 0)}
    for m, cells in res["methods"].items():
        for k, cell in cells.items():
            assert {tuple(t) for t in cell["treatments_labelled"]} <= seen, (m, k, cell["treatments_labelled"])
    assert all(isinstance(v, int) for t in res["methods"]["ot"]["3"]["treatments_labelled"] for v in t)
    # allowed by name: a per-arm model has no estimate at (1, 1): refused before training, naming the key
    code, err = cli(tmp_path / "run2", *base, "data.allow_unseen_combinations=true", *FAST)
    assert code != 0 and "data.allow_unseen_combinations=true offers 1 treatment combination(s) no customer " \
                         "received, e.g. (mens=1, womens=1), but model=gb_s" in err, err
    assert not (tmp_path / "run2" / "results.json").exists()
    # a dose-response model extrapolates there: (1, 1) is a candidate and the outputs say extrapolated
    code, err = cli(tmp_path / "run3", *base[:-1], "data.allow_unseen_combinations=true", *dose,
                    "evaluation.k_values=[1,2]", "evaluation.methods=[ot,grid]")
    assert code == 0, err
    res = _cells(tmp_path / "run3")
    assert res["unseen_combinations"]["allowed"] and res["unseen_combinations"]["candidates"] == [[1, 1]]
    for m, cells in res["methods"].items():
        for k, cell in cells.items():
            assert cell["extrapolated"] == ([1, 1] in cell["treatments_labelled"]), (m, k)
    assert not any(c["extrapolated"] for c in res["methods"]["grid"].values())  # the arms only
    if any(c["extrapolated"] for c in res["methods"]["ot"].values()):
        assert "EXTRAPOLATED: data.allow_unseen_combinations=true" in (tmp_path / "run3" / "table.txt").read_text()


def test_mixed_space_no_method_assigns_a_value_a_dimension_cannot_take(tmp_path):
    csv = tmp_path / "mixed.csv"
    df = mixed()
    df.to_csv(csv, index=False)
    run = tmp_path / "run"
    code, err = cli(run, "data=file", f"data.path={csv}", "data.features=[x1,x2,x3]",
                    "data.treatment=[depth,lever,creative]", "data.outcome=profit",
                    "data.treatment_kinds={lever:discrete}", "data.candidate_points=[7,5,5]",
                    "model.interpolation=spline", "evaluation.k_values=[1,3]", *FAST)
    assert code == 0, err
    res = _cells(run)
    assert [d["kind"] for d in res["treatment_kinds"]] == ["continuous", "discrete", "categorical"]
    observed = {(int(lv), cr) for lv, cr in zip(df.lever, df.creative)}
    depths = set()
    for m, cells in res["methods"].items():
        for k, cell in cells.items():
            for depth, lever, creative in cell["treatments_labelled"]:
                assert (lever, creative) in observed and isinstance(lever, int), (m, k, lever, creative)
                assert 0.0 <= depth <= 0.3
                depths.add(round(depth, 9))
            policy = load_policy(run / cell["policy_path"])
            assert {tuple(t[1:]) for t in policy.treatments_labelled} <= observed
    assert set(res["methods"]) >= {"ot", "kmeans_features", "kmeans_preferences", "kmeans_profiles", "grid"}
    # the continuous depth is gridded between its arms (it could have been kept on them: the test can fail)
    assert not depths <= {0.0, 0.1, 0.2, 0.3}


def test_a_policy_saved_without_kinds_loads_as_continuous_and_edited_codes_are_refused(tmp_path):
    csv = tmp_path / "h.csv"
    hillstrom(1200).to_csv(csv, index=False)
    run = tmp_path / "run"
    code, err = cli(run, "data=file", f"data.path={csv}", "data.features=[x1,x2,x3]", "data.treatment=[segment]",
                    "data.outcome=spend", "evaluation.k_values=[2]", "evaluation.methods=[ot]", *FAST)
    assert code == 0, err
    folder = run / "policies" / "ot_k2"
    pj = folder / "policy.json"
    doc = json.loads(pj.read_text())
    old = {k: v for k, v in doc.items() if k not in ("treatment_kinds", "treatments_labelled")}
    pj.write_text(json.dumps(old))  # a policy written before kinds existed
    pol = load_policy(folder)
    assert pol.treatment_kinds == [] and pol.treatments_labelled == doc["treatments"]
    bad = dict(doc, treatments=[[0.5], [2.0]])
    pj.write_text(json.dumps(bad))
    with pytest.raises(PolicyFileError, match="categorical treatment 'segment' holds \\[0.5, 2.0\\], which are not "
                                              "codes 0..2 of its labels"):
        load_policy(folder)


def test_parity_on_a_categorical_treatment_is_refused_before_training(tmp_path):
    csv = tmp_path / "h.csv"
    hillstrom(600).assign(group=lambda d: np.where(d.x3 > 0, "a", "b")).to_csv(csv, index=False)
    code, err = cli(tmp_path / "run", "data=file", f"data.path={csv}", "data.features=[x1,x2,x3]",
                    "data.treatment=[segment]", "data.outcome=spend", "discretizer.group_parity.column=group",
                    "discretizer.group_parity.max_gap=0.5", "evaluation.k_values=[2]", *FAST)
    assert code != 0 and "discretizer.group_parity.treatment='segment' is a categorical treatment" in err, err
    assert not (tmp_path / "run" / "results.json").exists()


def test_the_treatments_figure_labels_a_categorical_axis_and_a_discrete_one_by_their_values():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from coarse_gpu.experiment.report import _label_fixed_axes

    fig, ax = plt.subplots()
    ax.scatter([0.1, 0.3], [0.0, 2.0])
    results = {"treatment_kinds": [{"name": "lever", "kind": "discrete"},
                                   {"name": "creative", "kind": "categorical", "labels": ["bold", "calm", "retro"]}],
               "arms": [[0.0, 0.0], [1.0, 1.0], [0.0, 2.0], [1.0, 0.0]]}
    _label_fixed_axes(ax, results)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["bold", "calm", "retro"]
    assert list(ax.get_yticks()) == [0, 1, 2]
    assert list(ax.get_xticks()) == [0.0, 1.0] and [t.get_text() for t in ax.get_xticklabels()] == ["0", "1"]
    plt.close(fig)


@pytest.mark.parametrize("dims", [2, 3])
def test_the_treatments_figure_shows_a_categorical_dimension_as_one_panel_per_label(dims, tmp_path, monkeypatch):
    from coarse_gpu.experiment import report

    labels = ["bold", "calm", "retro"]
    kinds = [{"name": "depth", "kind": "continuous"}] + ([{"name": "lever", "kind": "discrete"}] if dims == 3 else []) \
        + [{"name": "creative", "kind": "categorical", "labels": labels}]
    treatments = [[0.1, 1.0, 0.0], [0.25, 0.0, 2.0], [0.05, 1.0, 2.0]] if dims == 3 else [[0.1, 0.0], [0.25, 2.0]]
    results = {"treatment_names": [r["name"] for r in kinds], "treatment_kinds": kinds,
               "arms": [list(t) for t in treatments],
               "methods": {"ot": {"3": {"treatments": treatments, "segment_sizes": [5, 3, 2][:len(treatments)]}}}}
    seen = {}

    def capture(fig, path):
        seen["titles"] = [a.get_title() for a in fig.axes]
        seen["xticks"] = [[t.get_text() for t in a.get_xticklabels()] for a in fig.axes]
        seen["offsets"] = [np.vstack([c.get_offsets() for c in a.collections if len(c.get_offsets())] or
                                     [np.empty((0, 2))]) for a in fig.axes]
        return Path(path)

    monkeypatch.setattr(report, "_save_figure", capture)
    assert report.plot_treatments(results, tmp_path / "t.png", 3) is not None
    assert seen["titles"] == [f"creative = {lab}" for lab in labels]
    # every treatment is drawn in the panel of its own label, at its depth (never at a creative code)
    for p, offsets in enumerate(seen["offsets"]):
        want = sorted(t[0] for t in treatments if t[-1] == p)
        assert sorted(offsets[:, 0].round(6).tolist()) == pytest.approx(want if dims == 2 else
                                                                         sorted(want + want))  # arms + ot
