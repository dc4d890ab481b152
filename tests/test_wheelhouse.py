"""scripts/make_wheelhouse.sh and the install half of scripts/gpu_check.sh: the wheelhouse built here
installs coarse_gpu into a fresh virtual environment with ``pip --no-index`` (nothing but the
wheelhouse and a torch-only site), and the default node profile stays under the 60 MB that travels
to the GPU node. The network tests skip only when the package index cannot be reached."""
from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYVER = "%d.%d" % sys.version_info[:2]
ALL_TORCH_BRINGS = {"torch", "filelock", "typing-extensions", "setuptools", "sympy", "mpmath", "networkx", "jinja2",
                    "markupsafe", "fsspec", "triton"}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mw = _load("make_wheelhouse")


def _hermetic_env(**extra) -> dict:
    """No pip.conf, no PIP_* (this machine's find-links would hide a wheel missing from the wheelhouse),
    no PYTHONPATH (the checkout must not stand in for the installed package)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """Skip when the package index is unreachable (the one reason these tests may not run)."""
    d = tmp_path_factory.mktemp("probe")
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(d),
                           "cycler"], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.skip("the package index (PyPI) is unreachable: " + (proc.stderr.strip().splitlines() or ["?"])[-1])


def _make(dest: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "make_wheelhouse.sh"), "--dest", str(dest), *args],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable})


@pytest.fixture(scope="module")
def bare_wheelhouse(index, tmp_path_factory):
    """The complete wheelhouse for this Python: a node with nothing but torch."""
    dest = tmp_path_factory.mktemp("wh") / "wh"
    proc = _make(dest, "--python", PYVER, "--node-packages", "none", "--max-mb", "400")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dest, proc.stdout


def _torch_only_site(dest: Path) -> Path:
    """A folder of links to torch and the distributions torch requires (recursively), and nothing else."""
    dest.mkdir()
    seen, stack = set(), ["torch"]
    while stack:
        name = stack.pop()
        if mw.canon(name) in seen:
            continue
        seen.add(mw.canon(name))
        dist = md.distribution(name)
        base = Path(dist.locate_file(""))
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            if top != ".." and not top.endswith(".pth") and (base / top).exists() and not (dest / top).exists():
                os.symlink(base / top, dest / top)
        stack += [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in dist.requires or [] if "extra ==" not in r]
    return dest


def _fresh_venv(tmp: Path, site: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, timeout=300)
    py = tmp / "venv" / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "torch_only.pth").write_text(str(site) + "\n")
    # the venv's own old setuptools (Python < 3.12) would shadow the one torch requires
    subprocess.run([str(py), "-m", "pip", "uninstall", "-q", "-y", "setuptools"], capture_output=True,
                   env=_hermetic_env())
    return py


@pytest.mark.slow
@pytest.mark.network
def test_wheelhouse_installs_coarse_gpu_into_a_fresh_venv_with_no_index(bare_wheelhouse, tmp_path):
    wh, out = bare_wheelhouse
    manifest = json.loads((wh / "wheelhouse.json").read_text())
    names = [w["name"] for w in manifest["wheels"]]
    assert len(names) == len(set(names)), "one version of each project"
    assert {"coarse-gpu", "pykeops", "keopscore", "hydra-core", "omegaconf", "antlr4-python3-runtime", "numpy",
            "scipy", "pandas", "pot", "pytest"} <= set(names)
    assert not set(names) & ALL_TORCH_BRINGS and not any(n.startswith("nvidia-") for n in names)
    for f in (w["file"] for w in manifest["wheels"]):  # every wheel installs on CPython X.Y manylinux x86_64
        assert f.endswith("-none-any.whl") or f"-cp{PYVER.replace('.', '')}-" in f or "-abi3-" in f, f
    assert sorted(p.name for p in wh.glob("*.whl")) == sorted(w["file"] for w in manifest["wheels"])
    total = sum(p.stat().st_size for p in wh.glob("*.whl"))
    assert manifest["total_bytes"] == total and f"{total / 1e6:.1f} MB" in out

    py = _fresh_venv(tmp_path, _torch_only_site(tmp_path / "torch_site"))
    inst = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wh),
                           "coarse_gpu[keops]"], capture_output=True, text=True, timeout=600, env=_hermetic_env())
    assert inst.returncode == 0, inst.stderr[-3000:]
    env = _hermetic_env(COARSE_GPU_CONFIG_DIR=str(ROOT / "configs"), MPLBACKEND="Agg")
    code = ("import coarse_gpu, pykeops, hydra; from coarse_gpu import CoarsePersonalizer; "
            "print(coarse_gpu.__file__)")
    imp = subprocess.run([str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert imp.returncode == 0, imp.stderr[-3000:]
    assert imp.stdout.strip().splitlines()[-1].startswith(str(tmp_path / "venv")), imp.stdout  # KeOps may warn first
    helped = subprocess.run([str(tmp_path / "venv" / "bin" / "coarse-gpu", ), "--help"], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=300)
    assert helped.returncode == 0 and "Configuration groups" in helped.stdout, helped.stderr[-2000:]
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True, env=_hermetic_env())
    assert check.returncode == 0, check.stdout
    # the venv sees torch's site only: a package of the project's own venv that is no dependency stays hidden
    hidden = subprocess.run([str(py), "-c", "import econml"], cwd=tmp_path, capture_output=True, env=env)
    assert hidden.returncode != 0


@pytest.mark.slow
@pytest.mark.network
def test_gpu_check_sh_installs_from_the_wheelhouse_for_a_node_python_that_is_a_venv(bare_wheelhouse, tmp_path):
    wh, _ = bare_wheelhouse
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--wheelhouse", str(wh), "--work",
                           str(tmp_path / "work"), "--install-only"], capture_output=True, text=True, timeout=600,
                          env={**_hermetic_env(), "PYTHON": sys.executable, "GPU_CHECK_CPU_SMOKE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "installed in" in proc.stderr
    vpy = tmp_path / "work" / "venv" / "bin" / "python"
    where = subprocess.run([str(vpy), "-c", "import coarse_gpu, ot, hydra; print(coarse_gpu.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, env=_hermetic_env())
    # the venv's own coarse_gpu wins over any copy the node's Python can see (here: an editable checkout)
    assert where.returncode == 0 and where.stdout.strip().splitlines()[-1].startswith(str(tmp_path / "work" / "venv"))


@pytest.mark.slow
@pytest.mark.network
def test_default_node_profile_keeps_the_python_3_12_wheelhouse_under_60_mb(index, tmp_path):
    proc = _make(tmp_path / "wh", "--python", "3.12")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "wh" / "wheelhouse.json").read_text())
    names = {w["name"] for w in manifest["wheels"]}
    # what a PyTorch CUDA image lacks; everything else is left to the node and checked there
    # hypothesis (+ sortedcontainers): the property tests' test extra, collected with the CUDA-marked tests
    assert names == {"coarse-gpu", "pot", "hydra-core", "omegaconf", "antlr4-python3-runtime", "pykeops", "keopscore",
                     "hypothesis", "sortedcontainers"}
    assert manifest["total_bytes"] <= 60e6
    assert {"numpy", "scipy", "pandas", "scikit-learn", "matplotlib", "pyarrow"} <= set(manifest["assumed_on_node"])
    assert manifest["assumed_on_node"]["scipy"] and all("-cp312-" in w["file"] or w["file"].endswith("none-any.whl")
                                                        for w in manifest["wheels"])


def test_selection_keeps_what_the_node_lacks_and_records_what_it_must_have():
    env = mw.marker_env("3.12")
    wheels = [{"name": n, "version": v, "requires": r, "file": f"{n}.whl", "bytes": 1} for n, v, r in [
        ("a", "1.0", ["c>=2", "old; python_version < '3.0'", "torch>=2", "filelock"]),
        ("b", "1.0", ["e[x]"]),
        ("c", "2.5", []), ("old", "1", []), ("e", "1", ["f; extra == 'x'", "g; extra == 'y'"]),
        ("f", "1", []), ("g", "1", [])]]
    kept, assumed = mw.select(wheels, ["a>=1", "b"], {}, env)
    assert [w["name"] for w in kept] == ["a", "b", "c", "e", "f"]  # no marker-off, no other-extra, no torch
    assert set(assumed) == {"torch", "filelock"} and assumed["torch"] == [">=2"]
    # the node has b (so e and f are not needed) and c, but at a version the requirement refuses
    kept, assumed = mw.select(wheels, ["a>=1", "b"], {"b": None, "c": "1.5"}, env)
    assert [w["name"] for w in kept] == ["a", "c"] and "b" in assumed and "c" not in assumed
    kept, assumed = mw.select(wheels, ["a>=1", "b"], {"b": None, "c": "2.1"}, env)
    assert [w["name"] for w in kept] == ["a"] and assumed["c"] == [">=2"]
    with pytest.raises(SystemExit, match="no wheel"):
        mw.select(wheels[1:], ["a"], {}, env)


def test_node_packages_requirements_platforms_and_budget(tmp_path):
    f = tmp_path / "node.txt"
    f.write_text("# a comment\nNumPy==2.5.2\nscikit_learn\n-e git+https://x/y#egg=z\nfoo @ file:///tmp/foo\n\n")
    assert mw.parse_node_packages(str(f)) == {"numpy": "2.5.2", "scikit-learn": None, "foo": None}
    assert mw.parse_node_packages("none") == {}
    with pytest.raises(SystemExit, match="no such file"):
        mw.parse_node_packages(str(tmp_path / "missing.txt"))
    reqs = [mw.canon(r.split(">")[0].split("<")[0].split("=")[0]) for r in mw.top_requirements(ROOT / "pyproject.toml")]
    assert "torch" not in reqs and {"pykeops", "pytest", "hydra-core", "numpy"} <= set(reqs)
    assert not {"wandb", "econml", "hydra-submitit-launcher"} & set(reqs)
    tags = mw.platforms("2.28")
    assert tags[0] == "manylinux_2_28_x86_64" and {"manylinux_2_17_x86_64", "manylinux2014_x86_64",
                                                    "manylinux1_x86_64"} <= set(tags)
    assert "manylinux2014_x86_64" not in mw.platforms("2.12")
    with pytest.raises(SystemExit, match="--glibc"):
        mw.platforms("3.1")
    assert mw.over_budget(59_999_999, 60) is None
    assert "60.0 MB, over --max-mb 59" in mw.over_budget(60_000_000, 59)


def test_gpu_check_sh_names_the_missing_wheelhouse_and_the_missing_gpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("GPU_CHECK_CPU_SMOKE", None)
    sh = str(ROOT / "scripts" / "gpu_check.sh")
    none = subprocess.run(["bash", sh, "--wheelhouse", str(tmp_path / "nothing")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert none.returncode == 2 and "no wheelhouse" in none.stderr and "make_wheelhouse.sh" in none.stderr
    import torch

    if torch.cuda.is_available():
        return
    wh = tmp_path / "wh"
    wh.mkdir()
    (wh / "coarse_gpu-0.1.0-py3-none-any.whl").write_bytes(b"")
    (wh / "wheelhouse.json").write_text(json.dumps({"python": PYVER}))
    nogpu = subprocess.run(["bash", sh, "--wheelhouse", str(wh), "--work", str(tmp_path / "w")], capture_output=True,
                           text=True, env=env, timeout=120)
    assert nogpu.returncode == 3 and len(nogpu.stderr.strip().splitlines()) == 1
    assert "no CUDA device" in nogpu.stderr and "GPU_CHECK_CPU_SMOKE=1" in nogpu.stderr
    assert not (tmp_path / "w").exists()  # said before any work
