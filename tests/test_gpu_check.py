"""scripts/gpu_check.py: the table it ends with, the figures it reads off each stage's output, and a
CPU smoke run of every stage at tiny sizes (what GPU_CHECK_CPU_SMOKE=1 scripts/gpu_check.sh runs after
the install, which tests/test_wheelhouse.py covers)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
gc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gc)


def test_table_has_one_line_per_stage_and_says_what_did_not_finish():
    rows = [
        {"stage": "GPU tests (pytest -m gpu)", "status": "ok", "figure": "2 passed", "time_s": 21.04, "peak_mb": 812.4,
         "device": "cuda"},
        {"stage": "discretize lazy", "status": "failed", "why": "rc 1", "figure": "KeOps: nvrtc | not found",
         "time_s": 3.0, "peak_mb": None, "device": "cuda"},
        {"stage": "discretize dense", "status": "skipped", "figure": "N x M = 38.1 GB float32 > 35", "time_s": 40.0,
         "peak_mb": None, "device": "cuda"},
        {"stage": "main job", "status": "timeout", "why": "cap 180 s", "figure": "training", "time_s": 180.2,
         "peak_mb": 51234.0, "device": "cuda"},
        {"stage": "train", "status": "skipped", "why": "budget spent", "figure": "not started", "time_s": None,
         "peak_mb": None, "device": "cpu"},
    ]
    table = gc.build_table(rows, ["GPU check, NVIDIA H200, 140 GiB", "torch 2.11"])
    lines = table.splitlines()
    assert lines[0].startswith("GPU check, NVIDIA H200") and "torch 2.11" in lines[1]
    assert "| stage | figure | time s | peak GPU MB |" in lines
    body = [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| stage") and "---" not in ln]
    assert len(body) == len(rows)
    assert all(ln.count(" | ") == 3 for ln in body), "a '|' inside a figure would break the columns"
    assert body[0] == "| GPU tests (pytest -m gpu) | 2 passed | 21.0 | 812 |"
    assert "**FAILED** (rc 1): KeOps: nvrtc / not found" in body[1] and body[1].endswith("| 3.0 | - |")
    assert "**SKIPPED**: N x M" in body[2]
    assert "**TIMEOUT** (cap 180 s)" in body[3] and body[3].endswith("| 180.2 | 51,234 |")
    assert body[4].endswith("| - | n/a (cpu) |") and "budget spent" in body[4]


def test_figures_read_off_each_stage_output(tmp_path):
    log = "..\n===== 1 failed, 1 passed, 37 deselected in 12.31s =====\n"
    assert gc.figure_tests(log) == "1 failed, 1 passed, 37 deselected"
    assert gc.figure_tests("2 skipped, 37 deselected in 3.10s\n") == "2 skipped, 37 deselected"
    train = ("device=cuda (NVIDIA H200) torch=2.11\nmodel=tarnet N=1000000\n"
             "train_wall_s=4.20 epochs_per_s=0.714 rows_per_s=714,286\n"
             "effect_rmse=0.1234 (constant-effect model: 0.9)\n")
    assert gc.figure_train(train) == "714,286 rows/s (fit 4.20 s), effect RMSE 0.1234 vs 0.9 constant"
    assert gc.figure_train("Traceback...\nRuntimeError: CUDA out of memory\n") == "RuntimeError: CUDA out of memory"
    lazy = [{"wall_s": 2.5, "path": "factored-keops", "objective": 200.0, "peak_mb": 3000.0, "device": "cuda"}]
    dense = [{"wall_s": 1.5, "path": "dense", "objective": 199.0, "peak_mb": 45000.0, "device": "cuda"}]
    assert gc.figure_discretize(lazy, "") == ("solve 2.50 s, path factored-keops", 3000.0)
    fig, peak = gc.figure_discretize(dense, "", lazy)
    assert "objective 99.500 % of the lazy path's" in fig and peak == 45000.0
    fig, peak = gc.figure_discretize([], "  10000000  1024 ours-dense  skipped: N x M = 38.1 GB float32 > 35\n")
    assert fig == "skipped: N x M = 38.1 GB float32 > 35" and peak is None
    run = tmp_path / "run"
    run.mkdir()
    assert gc.figure_main(run, "last words\n") == "last words"
    (run / "results.json").write_text(json.dumps({"status": "complete", "timings_s": {"total": 95.0, "train": 20.5},
                                                  "methods": {"ot": {"5": {"share_of_full": 0.9123}}}}))
    assert gc.figure_main(run, "") == \
        "complete: total 95.0 s, train 20.5 s, OT K=5 keeps 91.2 % of full personalization"


def test_plan_uses_the_issue_sizes_on_gpu_and_dense_only_where_it_fits(tmp_path):
    p = gc.plan(False, tmp_path, gpu_gib=139.8)
    lazy = p["lazy"]["cmd"]
    assert lazy[lazy.index("--n") + 1] == "10000000" and lazy[lazy.index("--m") + 1] == "1024"
    assert lazy[lazy.index("--k") + 1] == "5" and lazy[lazy.index("--device") + 1] == "cuda"
    assert p["dense"]["cmd"][p["dense"]["cmd"].index("--max-dense-gb") + 1] == "69.9"  # 38 GiB fits, on 80 GB too
    assert "data.n_customers=1000000" in p["main"]["cmd"] and "device=cuda" in p["main"]["cmd"]
    assert p["train"]["cmd"][p["train"]["cmd"].index("--n") + 1] == "1000000"
    files = p["tests"]["cmd"][p["tests"]["cmd"].index("no:cacheprovider") + 1:]
    assert files == gc.gpu_test_files() and {"tests/test_discretize.py", "tests/test_models.py"} <= set(files)
    assert sum(gc.CAPS_S.values()) <= gc.BUDGET_S <= 450  # with the install, within 8 minutes


@pytest.mark.slow
def test_cpu_smoke_run_reports_every_stage(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--smoke", "--work",
                           str(tmp_path / "work"), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "gpu_check_results.json").read_text())
    assert [s["key"] for s in res["stages"]] == list(gc.STAGE_ORDER)
    assert all(s["status"] == "ok" and s["time_s"] > 0 for s in res["stages"]), res["stages"]
    by = {s["key"]: s["figure"] for s in res["stages"]}
    assert "skipped" in by["tests"] and "path factored-torch" in by["lazy"] and "path dense" in by["dense"]
    assert "rows/s" in by["train"] and by["main"].startswith("complete:")
    md = (tmp_path / "out" / "gpu_check_results.md").read_text()
    assert md in proc.stdout and "CPU SMOKE RUN" in md
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu_check.log", "gpu_check_results.json",
                                                                  "gpu_check_results.md"]
