"""The scorer and the policy loader under bad and hostile input (issue 18).

Every test asserts the message (one line naming the problem) AND that nothing on disk changed: the
customers' file, the policy folder and any previous output hash the same before and after.
Fixtures are in realistic units (income in dollars, age in years), far from unit scale.
"""
from __future__ import annotations

import gzip
import hashlib
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coarse_gpu.assign_cli import OUT_SUFFIXES, main as assign_main
from coarse_gpu.data.file import FileSpec, experiment_from_frame
from coarse_gpu.models import TARNet
from coarse_gpu.policy import grid_search, kmeans_features
from coarse_gpu.policy.tree import policy_tree
from coarse_gpu.policy.io import MAX_WEIGHTS_BYTES, PolicyFileError, deployable, load_policy, save_policy

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
REAL_SPEC = FileSpec(features=["income", "age", "visits", "tier"], treatment=["discount"], outcome="profit",
                     id="customer_id", categorical=["tier"])

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def single(cls, **kw):
    """One network whatever the version's defaults (newer versions ensemble small data by default)."""
    if "n_ensemble" in inspect.signature(cls).parameters:
        kw["n_ensemble"] = 1
    return cls(**kw)


def realistic_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Customers in the units a firm has them: income in dollars (lognormal around $55k), age in years,
    store visits per year, a loyalty tier; a randomized discount in {0, 10, 20 %}; profit in dollars,
    where low-income customers respond to the discount and high-income ones do not."""
    rng = np.random.default_rng(seed)
    income = np.round(rng.lognormal(np.log(55_000), 0.5, n), 2)
    age = rng.integers(18, 81, n).astype(np.float64)
    visits = rng.poisson(12, n).astype(np.float64)
    tier = rng.choice(["bronze", "silver", "gold"], n)
    discount = rng.choice([0.0, 0.1, 0.2], n)
    lift = discount * (400.0 * np.exp(-income / 40_000) - 60.0)
    profit = 20 + income / 5000 + 0.3 * visits + lift + rng.normal(0, 3, n)
    return pd.DataFrame({"customer_id": [f"u{seed}-{i}" for i in range(n)], "income": income, "age": age,
                         "visits": visits, "tier": tier, "discount": discount, "profit": profit})


def snapshot(*paths: Path) -> dict[str, str]:
    """sha256 of every file under ``paths`` (and the file names): equal snapshots = nothing changed."""
    out = {}
    for p in paths:
        files = [p] if p.is_file() or p.is_symlink() else sorted(q for q in p.rglob("*"))
        for f in files:
            if f.is_symlink():
                out[str(f)] = "-> " + os.readlink(f)
            elif f.is_file():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
            else:
                out[str(f)] = "dir"
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A grid policy and a policy-tree policy in realistic units, and a file of new customers."""
    tmp = tmp_path_factory.mktemp("scorer")
    data = experiment_from_frame(realistic_frame(1200, seed=0), REAL_SPEC)
    model = single(TARNet, hidden=8, n_repr_layers=1, n_head_layers=1, max_epochs=3, device="cpu", seed=0).fit(
        data.X, data.treatment, data.outcome)
    profit = model.predict_profit(data.X, data.arms)
    pols = {"grid_k2": grid_search(model.predict_arms(data.X), model.arms_, 2),
            "kmeans_features_k3": kmeans_features(data.X, profit, data.arms, 3, seed=0),
            "policy_tree_k3": policy_tree(data.X, profit, data.arms, 3, seed=0, min_samples_leaf=20)}
    folders = {name: save_policy(tmp / "policies" / name, deployable(p, model, data, data.arms, data.X, profit))
               for name, p in pols.items()}
    new = realistic_frame(300, seed=1).drop(columns=["discount", "profit"])
    new.to_csv(tmp / "new.csv", index=False)
    return {"tmp": tmp, "folders": folders, "new": new, "csv": tmp / "new.csv"}


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = assign_main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("coarse-gpu-assign: error: "), err
    return lines[0]


# ---- never overwrite what the user owns --------------------------------------------------------
def test_out_that_is_the_input_file_is_refused_under_every_name(world, tmp_path, capsys):
    src = tmp_path / "customers.csv"
    shutil.copy(world["csv"], src)
    (tmp_path / "link.csv").symlink_to(src)
    os.link(src, tmp_path / "hard.csv")
    (tmp_path / "sub").mkdir()
    before = snapshot(tmp_path, world["folders"]["grid_k2"])
    for out in (src, tmp_path / "sub" / ".." / "customers.csv", tmp_path / "link.csv", tmp_path / "hard.csv"):
        rc, _, err = cli(capsys, f"policy={world['folders']['grid_k2']}", f"data.path={src}", f"out={out}")
        assert rc == 2 and "is the input file data.path=" in one_error_line(err), err
        assert "would destroy the customers' data" in err
    assert snapshot(tmp_path, world["folders"]["grid_k2"]) == before


def test_out_inside_the_policy_folder_is_refused(world, tmp_path, capsys):
    folder = world["folders"]["grid_k2"]
    weights = next(folder.glob("model-*.safetensors"))
    os.link(folder / "policy.json", tmp_path / "innocent.csv")  # the policy file under another name
    before = snapshot(folder, world["csv"], tmp_path)
    for out in (folder / "policy.json", weights, folder / "assignments.csv", folder, tmp_path / "innocent.csv"):
        rc, _, err = cli(capsys, f"policy={folder}", f"data.path={world['csv']}", f"out={out}")
        line = one_error_line(err)
        assert rc == 2 and ("lies inside the policy folder" in line or "is an existing folder" in line), line
    rc, _, err = cli(capsys, f"policy={folder / 'policy.json'}", f"data.path={world['csv']}", f"out={folder / 'policy.json'}")
    assert rc == 2 and "lies inside the policy folder" in err
    assert snapshot(folder, world["csv"], tmp_path) == before


def test_out_that_is_a_folder_or_an_unwritable_format_is_refused(world, tmp_path, capsys):
    (tmp_path / "results").mkdir()
    before = snapshot(tmp_path, world["csv"])
    rc, _, err = cli(capsys, f"policy={world['folders']['grid_k2']}", f"data.path={world['csv']}",
                     f"out={tmp_path / 'results'}")
    assert rc == 2 and "is an existing folder; give the assignments file, e.g. out=" in one_error_line(err)
    for bad in ("x.xlsx", "x.json", "assignments"):
        rc, _, err = cli(capsys, f"policy={world['folders']['grid_k2']}", f"data.path={world['csv']}",
                         f"out={tmp_path / bad}")
        line = one_error_line(err)
        assert rc == 2 and "files; the assignments are written as .csv, .csv.gz, .tsv, .parquet, .pq" in line, line
    assert snapshot(tmp_path, world["csv"]) == before


def test_every_supported_output_format_holds_the_same_assignments(world, tmp_path, capsys):
    folder = world["folders"]["kmeans_features_k3"]
    tables = {}
    for suffix in OUT_SUFFIXES:
        out = tmp_path / f"a{suffix}"
        rc, _, err = cli(capsys, f"policy={folder}", f"data.path={world['csv']}", f"out={out}", "chunk_rows=128")
        assert rc == 0, err
        if suffix.endswith((".parquet", ".pq")):
            tables[suffix] = pd.read_parquet(out)
        else:
            if suffix.endswith(".gz"):
                with gzip.open(out, "rb") as fh:
                    assert fh.read(11) == b"customer_id"  # really gzip, really CSV
            tables[suffix] = pd.read_csv(out, sep="\t" if suffix == ".tsv" else ",")
        mask = os.umask(0)
        os.umask(mask)
        assert (out.stat().st_mode & 0o777) == 0o666 & ~mask  # the user's umask, not mkstemp's 0600
    for t in tables.values():
        pd.testing.assert_frame_equal(t, tables[".csv"])
    assert len(tables[".csv"]) == 300 and not list(tmp_path.glob(".a*"))


def test_rows_are_numbered_across_chunks_without_an_id_column(world, tmp_path, capsys):
    src = tmp_path / "no_ids.csv"
    world["new"].drop(columns=["customer_id"]).to_csv(src, index=False)
    rc, _, err = cli(capsys, f"policy={world['folders']['grid_k2']}", f"data.path={src}", f"out={tmp_path / 'a.csv'}",
                     "chunk_rows=64")
    out = pd.read_csv(tmp_path / "a.csv")
    assert rc == 0 and list(out.columns[:2]) == ["row", "segment"], err
    np.testing.assert_array_equal(out.row, np.arange(len(world["new"])))


def test_help_exits_0(capsys):
    assert assign_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "coarse-gpu-assign policy=" in out and ".csv.gz" in out
    proc = subprocess.run([sys.executable, "-m", "coarse_gpu.assign_cli", "-h"], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0 and "data.path=PATH" in proc.stdout


# ---- every bad row, with its absolute row number, before anything is written -------------------
def test_every_failing_row_is_reported_with_its_absolute_row_number(world, tmp_path, capsys):
    df = realistic_frame(2500, seed=3).drop(columns=["discount", "profit"])
    df["tier"] = df["tier"].astype(object)
    df["age"] = df["age"].astype(object)
    df.loc[[5, 1500], "tier"] = "platinum"
    df.loc[2499, "tier"] = "diamond"
    df.loc[1200, "income"] = np.nan
    df.loc[2001, "age"] = "abc"
    src = tmp_path / "new.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "a.csv"
    out.write_text("previous,complete\n1,2\n")
    before = snapshot(tmp_path, world["folders"]["grid_k2"])
    rc, _, err = cli(capsys, f"policy={world['folders']['grid_k2']}", f"data.path={src}", f"out={out}", "chunk_rows=1000")
    assert rc == 2, err
    assert f"data check failed for {src}: 3 problem(s)" in err
    assert ("  - feature column 'tier': 3 row(s) have a level not seen in training: row 5 = 'platinum', "
            "row 1500 = 'platinum', row 2499 = 'diamond'; known levels: ['bronze', 'gold', 'silver']") in err
    assert "  - feature column 'income': 1 row(s) are NaN/missing: row 1200\n" in err
    assert "  - feature column 'age': 1 row(s) are not numeric: row 2001 = 'abc'\n" in err
    assert "Traceback" not in err
    assert snapshot(tmp_path, world["folders"]["grid_k2"]) == before  # the previous output is intact
    # many bad rows: all counted, the first 20 listed
    df.loc[100:129, "tier"] = "platinum"
    df.to_csv(src, index=False)
    rc, _, err = cli(capsys, f"policy={world['folders']['grid_k2']}", f"data.path={src}", f"out={out}", "chunk_rows=64")
    assert rc == 2 and "feature column 'tier': 33 row(s) have a level not seen in training: row 5 = 'platinum', " \
                       "row 100 = 'platinum'" in err and ", and 13 more; known levels" in err, err
    assert out.read_text() == "previous,complete\n1,2\n"


def test_new_customers_far_outside_the_training_range_get_a_named_warning(world, tmp_path, capsys):
    df = world["new"].copy()
    df.loc[7, "income"] = 5_000_000.0
    df.loc[[9, 11], "age"] = 300.0
    df.loc[12, "age"] = 85.0  # a little beyond the oldest training customer (80): not "far"
    src = tmp_path / "new.csv"
    df.to_csv(src, index=False)
    rc, _, err = cli(capsys, f"policy={world['folders']['grid_k2']}", f"data.path={src}", f"out={tmp_path / 'a.csv'}")
    assert rc == 0
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(x.startswith("coarse-gpu-assign: warning: feature_out_of_range: ") for x in lines)
    assert "feature column 'income': 1 row(s) lie far outside the training range [" in lines[0]
    assert "row 7 = 5000000.0; predictions there are extrapolations" in lines[0]
    assert "feature column 'age': 2 row(s) lie far outside the training range [18, 80]: row 9 = 300.0, row 11 = 300.0" \
        in lines[1]
    assert len(pd.read_csv(tmp_path / "a.csv")) == len(df)  # still scored
    # the range is part of the policy's feature schema
    doc = json.loads((world["folders"]["grid_k2"] / "policy.json").read_text())
    assert doc["feature_schema"]["ranges"]["age"] == [18.0, 80.0] and "tier" not in doc["feature_schema"]["ranges"]


def test_duplicate_columns_in_the_new_customers_are_refused(world, tmp_path, capsys):
    text = world["csv"].read_text().replace("customer_id,income,age,visits", "customer_id,income,age,income", 1)
    src = tmp_path / "dup.csv"
    src.write_text(text)
    before = snapshot(tmp_path)
    rc, _, err = cli(capsys, f"policy={world['folders']['grid_k2']}", f"data.path={src}", f"out={tmp_path / 'a.csv'}")
    assert rc == 2 and "column name 'income' occurs 2 times in the header (columns [1, 3])" in one_error_line(err)
    assert snapshot(tmp_path) == before


# ---- errors that were raw tracebacks -----------------------------------------------------------
def test_unreadable_inputs_give_one_line_errors(world, tmp_path, capsys):
    folder = world["folders"]["grid_k2"]
    (tmp_path / "a_folder.csv").mkdir()
    (tmp_path / "not_gzip.csv.gz").write_text("customer_id,income\n1,2\n")
    whole = gzip.compress(world["csv"].read_bytes() * 1)
    (tmp_path / "truncated.csv.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet at all PAR1")
    broken = tmp_path / "broken_policy"
    shutil.copytree(folder, broken)
    doc = json.loads((broken / "policy.json").read_text())
    del doc["method"]
    (broken / "policy.json").write_text(json.dumps(doc))
    (tmp_path / "out.csv").write_text("previous\n")
    before = snapshot(tmp_path, folder)
    cases = [
        ({"data.path": tmp_path / "a_folder.csv"}, "is a folder, not a file (data.path)"),  # was IsADirectoryError
        ({"data.path": tmp_path / "not_gzip.csv.gz"}, "could not be read as csv: BadGzipFile"),
        ({"data.path": tmp_path / "truncated.csv.gz", "chunk_rows": 50}, "could not be read as csv: EOFError"),
        ({"data.path": tmp_path / "corrupt.parquet"}, "could not be read as parquet: ArrowInvalid"),
        ({"policy": broken}, "lacks the key 'method'"),  # was KeyError
        ({"policy": world["csv"]}, "no policy at"),
        ({"chunk_rows": "many"}, "chunk_rows must be a whole number, got 'many'"),
    ]
    for change, expect in cases:
        args = {"policy": folder, "data.path": world["csv"], "out": tmp_path / "out.csv", **change}
        rc, _, err = cli(capsys, *[f"{k}={v}" for k, v in args.items()])
        assert rc == 2 and expect in one_error_line(err), (expect, err)
    assert snapshot(tmp_path, folder) == before


# ---- policy files as untrusted input -----------------------------------------------------------
def _copy(folder: Path, dest: Path) -> tuple[Path, dict, Path]:
    f = Path(shutil.copytree(folder, dest))
    return f, json.loads((f / "policy.json").read_text()), next(f.glob("model-*.safetensors"))


def _write(f: Path, doc: dict) -> None:
    (f / "policy.json").write_text(json.dumps(doc))


def test_weights_name_is_confined_to_the_policy_folder(world, tmp_path):
    f, doc, w = _copy(world["folders"]["grid_k2"], tmp_path / "p")
    shutil.copy(w, tmp_path / "outside.safetensors")  # the right bytes: a loader that follows the name would succeed
    (f / "sub").mkdir()
    shutil.copy(w, f / "sub" / "w.safetensors")
    for name in ("../outside.safetensors", str(tmp_path / "outside.safetensors"), "sub/w.safetensors", "..", "", 7):
        _write(f, {**doc, "model": {**doc["model"], "weights": name}})
        before = snapshot(tmp_path)
        with pytest.raises(PolicyFileError, match=r"model.weights must be a plain file name inside the policy folder, "
                                                  rf"got {re.escape(repr(name))}; refusing to read it"):
            load_policy(f)
        assert snapshot(tmp_path) == before
    (f / "link.safetensors").symlink_to(tmp_path / "outside.safetensors")
    _write(f, {**doc, "model": {**doc["model"], "weights": "link.safetensors"}})
    with pytest.raises(PolicyFileError, match=r"are a link to '.*outside.safetensors', outside the policy folder"):
        load_policy(f)
    (f / "inner.safetensors").symlink_to(w.name)  # a link that stays inside the folder is fine
    _write(f, {**doc, "model": {**doc["model"], "weights": "inner.safetensors"}})
    assert load_policy(f).k == 2



def test_weights_that_are_not_regular_files_are_refused_without_blocking(world, tmp_path):
    f, doc, w = _copy(world["folders"]["grid_k2"], tmp_path / "p")

    def boom(*_):
        raise TimeoutError("load_policy blocked")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(20)  # a FIFO opened without O_NONBLOCK would wait for a writer forever
    try:
        os.mkfifo(f / "fifo.safetensors")
        (f / "dir.safetensors").mkdir()
        for name in ("fifo.safetensors", "dir.safetensors"):
            _write(f, {**doc, "model": {**doc["model"], "weights": name}})
            with pytest.raises(PolicyFileError, match=r"is not a regular file \(a FIFO, device or folder\)"):
                load_policy(f)
        (f / "zero.safetensors").symlink_to("/dev/zero")
        _write(f, {**doc, "model": {**doc["model"], "weights": "zero.safetensors"}})
        with pytest.raises(PolicyFileError, match="outside the policy folder"):
            load_policy(f)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_weights_size_is_checked_before_reading(world, tmp_path):
    f, doc, w = _copy(world["folders"]["grid_k2"], tmp_path / "p")
    assert doc["model"]["size"] == w.stat().st_size
    with open(w, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(PolicyFileError, match=rf"are corrupt or truncated: {doc['model']['size'] + 1} bytes, "
                                              rf"policy.json records {doc['model']['size']}"):
        load_policy(f)
    # a policy without a recorded size (written before it was recorded): the upper bound, before a read
    del doc["model"]["size"]
    _write(f, doc)
    with open(w, "r+b") as fh:
        fh.truncate(MAX_WEIGHTS_BYTES + 1)  # sparse: nothing is written, but a full read would take 2 GB
    t0 = time.perf_counter()
    with pytest.raises(PolicyFileError, match=rf"has {MAX_WEIGHTS_BYTES + 1} bytes, more than the "
                                              rf"{MAX_WEIGHTS_BYTES}-byte limit; refusing to read it"):
        load_policy(f)
    assert time.perf_counter() - t0 < 2.0


def _edits(doc: dict) -> list[tuple[str, dict, str]]:
    """(what, edited policy.json, expected message) for a grid policy's document."""
    fs = doc["feature_schema"]
    cols = fs["columns"]
    swapped = [cols[1], cols[0]] + cols[2:]
    reordered = {**fs, "columns": swapped}
    reordered["names"] = [n for c in swapped for n in ([f"{c}={lv}" for lv in fs["categorical"][c]]
                                                       if c in fs["categorical"] else [c])]
    m = doc["model"]
    return [
        ("treatments of the wrong dimension", {**doc, "treatments": [r + [0.0] for r in doc["treatments"]]},
         r"'treatments' must be a finite K x d array with d = len\(treatment_names\) = 1, got shape \(2, 2\)"),
        ("non-finite treatments", {**doc, "treatments": [[None], [0.1]]}, r"got shape \(2, 1\) with non-finite entries"),
        ("k that disagrees", {**doc, "k": 3}, r"'k' = 3 but 'treatments' has 2 rows"),
        ("duplicate treatment names", {**doc, "treatment_names": ["discount", "discount"]},
         r"'treatment_names' must be a non-empty list of distinct names"),
        ("unknown rule", {**doc, "rule": "oracle"}, r"unknown assignment rule 'oracle'; known: \['argmax'"),
        ("reordered feature columns", {**doc, "feature_schema": {**fs, "columns": swapped}},
         r"the model-matrix names .* do not match the columns .*: the columns were reordered or edited"),
        ("columns and names reordered together", {**doc, "feature_schema": reordered},
         r"but the weights were trained on \['income', 'age', .*refusing to assign with shifted inputs"),
        ("categorical levels of an unknown column", {**doc, "feature_schema": {**fs, "categorical": {"x": ["a"]}}},
         r"categorical column 'x' is not among the columns"),
        ("a fitted attribute that is not fitted state",
         {**doc, "model": {**m, "fitted": {**m["fitted"], "__class__": 1, "_build_network": 0}}},
         r"the model metadata sets attributes \['__class__', '_build_network'\] that are not fitted state; refusing"),
        ("a class outside the registry that passes a name-prefix allowlist",
         {**doc, "model": {**m, "class": "coarse_gpu.models.base.PerArmCATEModel"}},
         r"model class 'coarse_gpu.models.base.PerArmCATEModel' is not one this version of coarse_gpu loads "
         r"\(known: \[.*'coarse_gpu.models.tarnet.TARNet'"),
        ("a size that is not a byte count", {**doc, "model": {**m, "size": "big"}},
         r"model.size must be a byte count, got 'big'"),
        ("a missing key", {k: v for k, v in doc.items() if k != "treatments"}, r"lacks the key 'treatments'"),
    ]


def test_policy_json_fields_are_validated(world, tmp_path):
    f, doc, _ = _copy(world["folders"]["grid_k2"], tmp_path / "p")
    for what, edited, expect in _edits(doc):
        _write(f, edited)
        before = snapshot(f)
        with pytest.raises(PolicyFileError, match=expect):
            load_policy(f)
        assert snapshot(f) == before, what


def test_rule_arrays_are_shape_checked(world, tmp_path):
    f, doc, _ = _copy(world["folders"]["kmeans_features_k3"], tmp_path / "km")
    rp = doc["rule_params"]
    p = len(doc["feature_schema"]["names"])
    cases = [
        ({k: v for k, v in rp.items() if k != "centroids"}, r"rule 'feature_centroid' needs rule_params.centroids"),
        ({**rp, "centroids": [row[:-1] for row in rp["centroids"]]},
         rf"rule_params.centroids has shape \(3, {p - 1}\), expected \(3, {p}\)"),
        ({**rp, "scale": [0.0] * p}, r"rule_params.scale must be finite and positive"),
        ({**rp, "centroids": [[None] * p] * 3}, r"rule_params.centroids must be finite rows"),
    ]
    for params, expect in cases:
        _write(f, {**doc, "rule_params": params})
        with pytest.raises(PolicyFileError, match=expect):
            load_policy(f)
    t, tdoc, _ = _copy(world["folders"]["policy_tree_k3"], tmp_path / "tree")
    tp = tdoc["rule_params"]
    feat = list(tp["tree_feature"])
    feat[0] = p + 5  # the root splits a column the model matrix does not have
    _write(t, {**tdoc, "rule_params": {**tp, "tree_feature": feat}})
    with pytest.raises(PolicyFileError, match=rf"the tree is malformed \(children in \[-1, \d+\), split features in "
                                              rf"\[0, {p}\), leaf slots in \[0, 3\)\)"):
        load_policy(t)


def test_a_policy_in_the_landed_format_keeps_loading():
    """tests/data/policy_v1_*: a policy and its assignments written by the code before issue 18 (no
    recorded size, no feature ranges, no feature names in the weights): it loads and assigns the same."""
    before = snapshot(DATA)
    pol = load_policy(DATA / "policy_v1_kmeans_features_k3")
    new = pd.read_csv(DATA / "policy_v1_new_customers.csv")
    expect = pd.read_csv(DATA / "policy_v1_assignments.csv")
    got = pol.assign(new, ids=new.customer_id)
    np.testing.assert_array_equal(got.segment, expect.segment)
    # the model is a float32 network: its sums depend on the thread count (1 in a module that pins it,
    # 2 otherwise), so equal means equal to float32 precision, not to the last bit
    np.testing.assert_allclose(got.predicted_profit, expect.predicted_profit, rtol=1e-6)
    assert pol.feature_schema.ranges == {}  # no ranges recorded: the range check is skipped
    assert snapshot(DATA) == before
