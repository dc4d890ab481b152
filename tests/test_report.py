"""Reports: results.json written atomically, the terminal table and the figures."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from coarse_gpu.experiment.report import format_table, plot_share_vs_k, plot_treatments, write_results
from coarse_gpu.utils import atomic_write_text


def _results():
    methods = {}
    for m, base in [("ot", 0.9), ("kmeans_features", 0.5), ("kmeans_preferences", 0.8), ("grid", 0.85)]:
        methods[m] = {str(k): {"treatments": [[0.1 * i, 1.0] for i in range(k)], "oracle_profit": base,
                               "share_of_full": base + 0.01 * k, "dr_value": base, "dr_ci": [base - 0.1, base + 0.1],
                               "segment_sizes": [10] * k} for k in (1, 2, 5)}
    methods["single_best"] = {"1": {"treatments": [[0.2, 2.0]], "oracle_profit": 0.4, "share_of_full": 0.7,
                                    "dr_value": 0.4, "dr_ci": [0.3, 0.5], "segment_sizes": [30]}}
    return {"k_values": [1, 2, 5], "n_eval": 30, "treatment_names": ["discount", "duration_weeks"],
            "arms": [[0.0, 0.0], [0.2, 2.0]], "methods": methods,
            "full_personalization": {"oracle_profit": 1.0, "control_oracle_profit": 0.0,
                                     "estimated_policy_share_of_full": 0.95}}


def test_table_lists_every_method_and_k():
    table = format_table(_results())
    assert "OT discretizer" in table and "k-means on features" in table
    assert " 95.00%" in table  # ot at K=5: 0.9 + 0.05
    assert "K=5" in table and "[" in table  # DR CI printed


def test_results_json_round_trips_numpy_and_rejects_nothing(tmp_path):
    res = {"a": np.float32(1.5), "b": np.arange(3), "c": float("nan"), "d": {"e": np.int64(2)}}
    path = write_results(tmp_path / "results.json", res)
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": None, "d": {"e": 2}}


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_text(path, "old")


    with pytest.raises(TypeError):
        write_results(path, {"x": object()})  # not JSON serializable
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp files left behind


def test_plots_are_png(tmp_path):
    p1 = plot_share_vs_k(_results(), tmp_path / "share.png")
    p2 = plot_treatments(_results(), tmp_path / "t.png", 5)
    for p in (p1, p2):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.path.getsize(p) > 5000
    one_d = dict(_results(), treatment_names=["discount"])
    assert plot_treatments(one_d, tmp_path / "none.png", 5) is None
    # with the heatmap of the customers' estimated best treatments under the chosen treatments
    from coarse_gpu.data import PROMOTION_SPACE
    from coarse_gpu.experiment.pipeline import ideal_treatment_histogram

    cand = PROMOTION_SPACE.grid([5, 3])
    ideal = cand[np.random.default_rng(0).integers(0, 15, size=300)]
    hist = ideal_treatment_histogram(ideal, cand, PROMOTION_SPACE)
    counts = np.asarray(hist["counts"])
    assert counts.shape == (5, 3) and counts.sum() == 300
    # every customer lands in the bin centred on its own candidate
    i = np.searchsorted(hist["x_edges"], ideal[:, 0]) - 1
    j = np.searchsorted(hist["y_edges"], ideal[:, 1]) - 1
    assert np.array_equal(np.bincount(i * 3 + j, minlength=15).reshape(5, 3), counts)
    p3 = plot_treatments(dict(_results(), ideal_treatments=hist), tmp_path / "heat.png", 5)
    assert p3.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.path.getsize(p3) > os.path.getsize(p2) * 0.5
