"""experiments/aggregate.py: means, sds and the DR agreement rate of a sweep, from results.json files."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("aggregate", ROOT / "experiments" / "aggregate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cell(share, oracle, ci):
    return {"treatments": [[0.1, 0.0]], "oracle_profit": oracle, "share_of_full": share, "dr_value": sum(ci) / 2,
            "dr_ci": ci, "segment_sizes": [10]}


def test_sweep_summary(tmp_path):
    agg = _load()
    shares = {0: (0.90, 0.80), 1: (0.96, 0.82), 2: (0.93, 0.84)}
    for seed, (ot, km) in shares.items():
        d = tmp_path / f"{seed}_seed={seed}"
        d.mkdir()
        res = {"status": "complete", "seed": seed, "n_customers": 100, "k_values": [2],
               "config": {"experiment": {"name": "t"}, "model": {"name": "tarnet"}},
               "methods": {"ot": {"2": _cell(ot, 5.0, [4.0, 6.0])},
                           "kmeans_features": {"2": _cell(km, 5.0, [5.5, 6.0] if seed == 0 else [4.0, 6.0])}}}
        (d / "results.json").write_text(json.dumps(res))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{not json")
    out = tmp_path / "out"
    assert agg.main([str(tmp_path), "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["n_runs"] == 3
    assert s["share_of_full"]["ot"]["2"]["mean"] == pytest.approx(0.93)
    assert s["share_of_full"]["ot"]["2"]["sd"] == pytest.approx(0.03)
    assert s["share_of_full"]["kmeans_features"]["2"]["mean"] == pytest.approx(0.82)
    assert s["dr_agreement"] == {"cells": 6, "oracle_inside_dr_ci": 5, "rate": pytest.approx(5 / 6)}
    assert s["ot_vs_best_baseline"]["2"]["ot_minus_best_baseline_pts"] == pytest.approx(11.0)
    assert "93.00 ± 3.00" in (out / "table.md").read_text()
    assert (out / "share_vs_k.png").read_bytes()[:4] == b"\x89PNG"


def test_empty_sweep_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="no results.json"):
        _load().main([str(tmp_path), "--out", str(tmp_path / "o")])
