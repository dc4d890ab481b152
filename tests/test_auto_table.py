"""experiments/model_table.py's table: the share of the true-profit ceiling's increment per replication,
a later file's row replacing the earlier row, and the ceiling row never counted as the best model."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "model_table", Path(__file__).resolve().parents[1] / "experiments" / "model_table.py")
table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table)


def _cell(model, rep, share, rmse=1.0):
    return {"family": "hurdle", "model": model, "rep": rep, "rmse_profit": rmse, "ot_k5_true_share": share,
            "fit_s": 1.0, "selected": None, "n_train": 10}


def _write(path, cells):
    path.write_text("".join(json.dumps(c) + "\n" for c in cells))
    return path


def test_table_divides_by_the_ceiling_per_replication_and_later_rows_win(tmp_path):
    old = _write(tmp_path / "old.jsonl", [_cell("gb_s", 0, 0.1), _cell("gb_s", 1, 0.1), _cell("gb_s", 2, 0.1),
                                          _cell("true_ceiling", 0, 0.8, 0.0), _cell("true_ceiling", 1, 0.9, 0.0)])
    # a re-run of gb_s with newer code on replications 0 and 1: the old row (3 replications) goes as a whole
    new = _write(tmp_path / "new.jsonl", [_cell("gb_s", 0, 0.4), _cell("gb_s", 1, 0.6)])
    out = table.table([old, new])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in out.splitlines()
            if line.startswith("| ") and "---" not in line}
    # shares 0.4 and 0.6: mean 50.00 %, se 10.00 %; of the ceiling 0.4/0.8 = 0.5 and 0.6/0.9 = 0.667:
    # mean 58.3 %, se 8.3 % (the ratio of the means, 0.5/0.85 = 58.8 %, would be wrong)
    assert "**50.00 ± 10.00 %**" in rows["gb_s"] and "58.3 ± 8.3 %" in rows["gb_s"]
    # the ceiling keeps more (85 %) but is not a model: not bold, no ratio of its own
    assert "85.00 ± 5.00 %" in rows["true_ceiling"] and "**" not in rows["true_ceiling"]
    assert "2 replications" in out


def test_a_ceiling_alone_makes_no_table(tmp_path):
    only = _write(tmp_path / "c.jsonl", [_cell("true_ceiling", 0, 0.9, 0.0)])
    assert table.table(only) == ""
