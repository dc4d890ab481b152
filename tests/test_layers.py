"""The package's layers look only down: utils <- data <- models, discretize (side by side) <- policy <-
evaluate <- experiment <- the entry points (cli, assign_cli, api). Every import of every module,
lazy ones inside functions included, is read from the source and checked."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "coarse_gpu"
LAYER = {"utils": 0, "data": 1, "models": 2, "discretize": 2, "policy": 3, "evaluate": 4, "experiment": 5,
         "api_inputs": 6, "cli": 7, "assign_cli": 7, "api": 7, "__init__": 7}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else "__init__"


def test_no_module_imports_from_a_layer_above_it_or_from_its_sibling():
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        here = rel.parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            for name in names:
                if not name.startswith("coarse_gpu.") and name != "coarse_gpu":
                    continue
                there = _part(name)
                if there == here:
                    continue
                if LAYER[there] > LAYER[here] or (LAYER[there] == LAYER[here] and here != "__init__"):
                    bad.append(f"{rel}: imports {name}")
    assert not bad, bad
    assert set(p.name for p in PKG.iterdir() if p.is_dir() and not p.name.startswith("_")) <= set(LAYER)
