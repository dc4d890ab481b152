"""The tools that keep the tree in shape, run by the test command: ``lint-imports`` (the layer order and
no import circle in discretize/ nor in experiment/, contracts in pyproject.toml), ``ruff check``
(pyproject.toml's rule set) and ``mypy`` on discretize/, models/base.py and api.py; no module over 600 lines, no function over 80. They come with the ``lint`` extra
(scripts/setup_env.sh installs ``all``, which holds it); an environment without them (the GPU node's
``[keops,test]``) skips these tests with a line saying how to install them."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    """The console script ``name`` of this interpreter's environment (else on PATH); skips if absent."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed: pip install -e '.[lint]' (scripts/setup_env.sh installs it)")
    return found


def _run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    # PYTHONPATH: the tools analyse this checkout's coarse_gpu, not an installed copy
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_import_linter_contracts_hold():
    out = _run([_tool("lint-imports"), "--no-cache"])
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    # all three contracts ran (layers, no circle in discretize/, none in experiment/): a renamed package
    # would make the tool check nothing
    assert "3 kept, 0 broken" in out.stdout, out.stdout[-2000:]


def test_ruff_is_clean_on_the_package():
    out = _run([_tool("ruff"), "check", "coarse_gpu", "--output-format", "concise"])
    assert out.returncode == 0, ("ruff found (fix most with `ruff check --fix coarse_gpu`):\n"
                                 + out.stdout[-4000:] + out.stderr[-2000:])


def test_mypy_is_clean_on_the_public_api():
    out = _run([_tool("mypy"), "coarse_gpu/discretize", "coarse_gpu/models/base.py", "coarse_gpu/api.py"],
               timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_no_module_over_600_lines_and_no_function_over_80():
    import ast

    too_long = []
    for path in sorted((ROOT / "coarse_gpu").rglob("*.py")):
        text, name = path.read_text(), path.relative_to(ROOT).as_posix()
        if text.count("\n") > 600:
            too_long.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                too_long.append(f"{name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long
