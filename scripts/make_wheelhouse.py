"""Build a wheelhouse for ``scripts/gpu_check.sh`` on a machine with network (see make_wheelhouse.sh).

The wheelhouse holds coarse_gpu's own wheel and the wheels of its runtime dependencies plus the
``keops`` and ``test`` extras (the GPU check runs the KeOps path and pytest) for ONE target
Python (``--python``) on manylinux x86_64, minus what the node is assumed to have already:

* torch and everything torch brings (the node has PyTorch with CUDA): ``TORCH_BRINGS`` below;
* the packages named in ``--node-packages`` (default ``scripts/gpu_node_packages.txt``, the
  scientific stack of a usual PyTorch CUDA image); ``none`` assumes nothing beyond torch.

Resolution is pip's: one ``pip download --only-binary=:all:`` of the whole requirement set for the
target Python and platform. Projects published only as sdists (antlr4-python3-runtime, pykeops,
keopscore) are built into wheels here with ``pip wheel --no-deps`` and must come out pure Python
(``py3-none-any``), which then install anywhere. The downloaded set is then pruned to what is
reachable from the top-level requirements without passing through an assumed package, so a
package needed only by, say, the node's matplotlib is not carried.

``wheelhouse.json`` in the destination records the target, the wheels and the assumed packages
with the version specifiers they must satisfy; gpu_check.sh checks those on the node before pip
runs, so a node that lacks one fails with a message naming it instead of a resolver trace.
Stdlib only (plus pip's vendored ``packaging``), so any Python >= 3.9 with pip can run it.
"""
from __future__ import annotations

import argparse
import email.parser
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version
except ImportError:  # pip always vendors it
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NODE_PACKAGES = ROOT / "scripts" / "gpu_node_packages.txt"
# torch 2.x's own requirements on Linux x86_64 (and theirs): on the node they came with torch.
TORCH_BRINGS = {"torch", "filelock", "typing-extensions", "setuptools", "sympy", "mpmath", "networkx", "jinja2",
                "markupsafe", "fsspec", "triton"}
TORCH_BRINGS_PREFIXES = ("nvidia-", "cuda-")
EXTRAS = ("keops", "test")  # the extras the GPU check uses; wandb, real, cluster stay out
MAX_BUILD_ROUNDS = 8  # sdist-only projects built per run (three today)


def canon(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def torch_brings(name: str) -> bool:
    return canon(name) in TORCH_BRINGS or canon(name).startswith(TORCH_BRINGS_PREFIXES)


def read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        from pip._vendor import tomli as tomllib
    return tomllib.loads(path.read_text())


def top_requirements(pyproject: Path, extras=EXTRAS) -> list[str]:
    """coarse_gpu's runtime requirements and those of ``extras``, torch left out, duplicates merged."""
    proj = read_toml(pyproject)["project"]
    reqs = list(proj["dependencies"])
    for extra in extras:
        reqs += proj.get("optional-dependencies", {}).get(extra, [])
    out, seen = [], set()
    for r in reqs:
        key = canon(Requirement(r).name)
        if not torch_brings(key) and key not in seen:
            seen.add(key)
            out.append(r)
    return out


def marker_env(python: str) -> dict:
    """The marker environment of CPython ``python`` (e.g. "3.12") on Linux x86_64."""
    env = dict(default_environment())
    env.update(python_version=python, python_full_version=f"{python}.0", implementation_name="cpython",
               platform_python_implementation="CPython", sys_platform="linux", platform_system="Linux",
               platform_machine="x86_64", os_name="posix")
    return env


def parse_node_packages(path: str | None) -> dict[str, str | None]:
    """{canonical name: version or None} from ``pip freeze`` / ``pip list --format=freeze`` lines
    or bare names (a bare name: the node's version is trusted); ``none`` or None: {}."""
    if path in (None, "none"):
        return {}
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"make_wheelhouse: --node-packages {path}: no such file")
    out: dict[str, str | None] = {}
    for raw in p.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:===?\s*([^\s;]+))?", line)
        if not m:
            raise SystemExit(f"make_wheelhouse: --node-packages {path}: cannot read the line {raw!r}")
        out[canon(m.group(1))] = m.group(2) if " @ " not in line else None
    return out


def wheel_metadata(path: Path) -> dict:
    """{"name", "version", "requires": [str], "file", "bytes"} read from a wheel's METADATA."""
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        msg = email.parser.Parser().parsestr(z.read(meta).decode("utf-8"))
    return {"name": canon(msg["Name"]), "version": msg["Version"], "requires": msg.get_all("Requires-Dist") or [],
            "file": path.name, "bytes": path.stat().st_size}


def _active(req: Requirement, env: dict, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": e}) for e in extras | {""})


def _satisfies(version: str | None, specs: list[SpecifierSet]) -> bool:
    if version is None:
        return True
    try:
        v = Version(version)
    except InvalidVersion:
        return False
    return all(s.contains(v, prereleases=True) for s in specs)


def _collect_specs(reqs: list[str]) -> dict[str, list[SpecifierSet]]:
    specs: dict[str, list[SpecifierSet]] = {}
    for r in reqs:
        req = Requirement(r)
        specs.setdefault(canon(req.name), []).append(req.specifier)
    return specs


def _walk(by_name: dict, top: list[str], assumed: set[str], env: dict) -> tuple[dict, set[str]]:
    """Wheels reachable from ``top`` without entering an assumed package; the assumed ones reached."""
    kept, reached, extras_seen = {}, set(), {}
    stack = [(Requirement(r), set()) for r in top]
    while stack:
        req, parent_extras = stack.pop()
        name = canon(req.name)
        if not _active(req, env, parent_extras):
            continue
        if name in assumed:
            reached.add(name)
            continue
        if name not in by_name:
            raise SystemExit(f"make_wheelhouse: {req} is required but pip downloaded no wheel of it")
        want = set(req.extras)
        if name in kept and want <= extras_seen[name]:
            continue  # visited already with these extras
        kept[name] = by_name[name]
        extras_seen[name] = extras_seen.get(name, set()) | want
        stack += [(Requirement(r), extras_seen[name]) for r in by_name[name]["requires"]]
    return kept, reached


def select(wheels: list[dict], top: list[str], node: dict[str, str | None], env: dict) -> tuple[list[dict], dict]:
    """The wheels to keep and the packages assumed on the node.

    wheels: wheel_metadata() of every downloaded wheel; top: top-level requirement strings; node:
    parse_node_packages(). A package is assumed on the node when torch brings it, or when the node
    lists it at a version (if given) inside every specifier that the top-level requirements and the
    KEPT wheels put on it (the node's own packages bring their own, consistent requirements). That is
    a fixed point: keeping a wheel can add a specifier that a listed version fails.
    Returns (kept wheels, {name: [specifier strings]} of the assumed packages that are reached).
    """
    by_name = {w["name"]: w for w in wheels}
    names = set(by_name) | {canon(Requirement(r).name) for r in top + [r for w in wheels for r in w["requires"]]}
    kept: dict = {}
    for _ in range(len(names) + 1):
        specs = _collect_specs(top + [r for w in kept.values() for r in w["requires"]])
        assumed = {n for n in names | set(node)
                   if torch_brings(n) or (n in node and _satisfies(node[n], specs.get(n, [])))}
        new_kept, reached = _walk(by_name, top, assumed, env)
        if new_kept.keys() == kept.keys():
            break
        kept = new_kept
    used = {n: sorted({str(s) for s in specs.get(n, []) if str(s)}) for n in sorted(reached)}
    return sorted(kept.values(), key=lambda w: w["name"]), used


def platforms(glibc: str) -> list[str]:
    """manylinux tags up to glibc ``glibc`` (pip matches each tag exactly, so all are listed)."""
    major, minor = (int(x) for x in glibc.split("."))
    if major != 2 or not 5 <= minor <= 60:
        raise SystemExit(f"make_wheelhouse: --glibc must look like 2.28, got {glibc!r}")
    tags = [f"manylinux_2_{m}_x86_64" for m in range(minor, 4, -1)]
    legacy = [("manylinux2014_x86_64", 17), ("manylinux2010_x86_64", 12), ("manylinux1_x86_64", 5)]
    return tags + [tag for tag, since in legacy if minor >= since]


def _pip(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, **kw)


def build_sdist_only(spec: str, built: Path, target: list[str], pip_error: str = "") -> None:
    """Build the wheel of an sdist-only project ``spec``; it must be pure Python to run on the node."""
    probe = _pip(["download", "--no-deps", "--only-binary=:all:", "-d", str(built / "_probe"), spec])
    if probe.returncode == 0:  # a wheel exists, only not for the target (or a real conflict): no build helps
        raise SystemExit(f"make_wheelhouse: pip found no {spec} for {' and '.join(target)} although it has "
                         f"wheels (another --python or --glibc?); pip said: {pip_error}")
    before = set(built.glob("*.whl"))
    proc = _pip(["wheel", "--no-deps", "-w", str(built), spec])
    new = sorted(set(built.glob("*.whl")) - before)
    if proc.returncode != 0 or not new:
        raise SystemExit(f"make_wheelhouse: building the wheel of {spec} failed: "
                         + (proc.stderr.strip().splitlines() or ["?"])[-1])
    for w in new:
        if not w.name.endswith("-none-any.whl"):
            w.unlink()
            raise SystemExit(f"make_wheelhouse: {spec} is published as an sdist only and builds into the "
                             f"platform wheel {w.name}, which would not run on the node")
        print(f"[wheelhouse] built {w.name} from its sdist", file=sys.stderr)


def download(reqs: list[str], dest: Path, built: Path, python: str, glibc: str) -> None:
    """pip download of the whole set for the target; sdist-only projects are built and retried."""
    target = ["--python-version", python, "--implementation", "cp", "--only-binary=:all:"]
    for tag in platforms(glibc):
        target += ["--platform", tag]
    for _ in range(MAX_BUILD_ROUNDS):
        proc = _pip(["download", "-d", str(dest), "--find-links", str(built), *target, *reqs])
        if proc.returncode == 0:
            return
        # a missing top-level project reads "No matching distribution found for X"; a missing
        # dependency of one reads as a conflict "... depends on X"
        said = proc.stdout + proc.stderr  # pip prints the conflict's explanation on stdout
        missing = re.search(r"No matching distribution found for (\S+)", said) \
            or re.search(r"The conflict is caused by:\s+\S+ \S+ depends on (\S+)", said)
        tail = " | ".join([ln for ln in proc.stderr.strip().splitlines() if "is ignored" not in ln][-3:])
        if not missing:
            raise SystemExit("make_wheelhouse: pip download failed (no network?): " + tail)
        build_sdist_only(missing.group(1), built, [f"Python {python}", f"manylinux (glibc {glibc}) x86_64"], tail)
    raise SystemExit(f"make_wheelhouse: more than {MAX_BUILD_ROUNDS} sdist-only projects; giving up")


def build_own(stage: Path) -> Path:
    """coarse_gpu's wheel, built from a copy of the package (no build/ or egg-info left in the checkout)."""
    src = stage / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "coarse_gpu", src / "coarse_gpu", ignore=shutil.ignore_patterns("__pycache__"))
    proc = _pip(["wheel", "--no-deps", "-w", str(stage / "own"), str(src)])
    wheels = sorted((stage / "own").glob("coarse_gpu-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise SystemExit("make_wheelhouse: building coarse_gpu's wheel failed: "
                         + (proc.stderr.strip().splitlines() or ["?"])[-1])
    return wheels[0]


def over_budget(total_bytes: int, max_mb: float) -> str | None:
    """The failure message when the wheelhouse is larger than ``max_mb`` MB (10^6 bytes), else None."""
    if total_bytes <= max_mb * 1e6:
        return None
    return (f"make_wheelhouse: the wheelhouse is {total_bytes / 1e6:.1f} MB, over --max-mb {max_mb:g}: list more "
            "of the node's packages in --node-packages (the node's `python3 -m pip list --format=freeze`) "
            "or raise --max-mb")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default="3.12", help="the node's Python, X.Y (default 3.12)")
    ap.add_argument("--dest", default=str(ROOT / ".wheelhouse"))
    ap.add_argument("--node-packages", default=str(DEFAULT_NODE_PACKAGES),
                    help="what the node's Python already has (pip freeze lines or names); 'none' = only torch")
    ap.add_argument("--glibc", default="2.28", help="the oldest glibc of the nodes (manylinux tags up to it)")
    ap.add_argument("--max-mb", type=float, default=60.0, help="fail when the wheels add up to more (10^6 bytes)")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"3\.\d{1,2}", args.python):
        raise SystemExit(f"make_wheelhouse: --python must be X.Y (e.g. 3.12), got {args.python!r}")
    if args.max_mb <= 0:
        raise SystemExit(f"make_wheelhouse: --max-mb must be positive, got {args.max_mb}")
    node = parse_node_packages(args.node_packages)
    platforms(args.glibc)
    dest = Path(args.dest)
    with tempfile.TemporaryDirectory(prefix="wheelhouse-") as tmp:
        stage = Path(tmp)
        (stage / "built").mkdir()
        own = build_own(stage)
        reqs = top_requirements(ROOT / "pyproject.toml")
        print(f"[wheelhouse] resolving {len(reqs)} requirements for CPython {args.python} manylinux x86_64",
              file=sys.stderr)
        download(reqs, stage / "dl", stage / "built", args.python, args.glibc)
        wheels = [wheel_metadata(p) for p in sorted((stage / "dl").glob("*.whl"))]
        kept, assumed = select(wheels, reqs, node, marker_env(args.python))
        dest.mkdir(parents=True, exist_ok=True)
        for old in list(dest.glob("*.whl")) + [dest / "wheelhouse.json"]:  # one version of each, ours only
            old.unlink(missing_ok=True)
        shutil.copy2(own, dest / own.name)
        for w in kept:
            shutil.copy2(stage / "dl" / w["file"], dest / w["file"])
    own_meta = wheel_metadata(dest / own.name)
    kept = [own_meta] + kept
    total = sum(w["bytes"] for w in kept)
    manifest = {"python": args.python, "glibc": args.glibc, "node_packages": args.node_packages,
                "wheels": [{k: w[k] for k in ("name", "version", "file", "bytes")} for w in kept],
                "assumed_on_node": assumed, "total_bytes": total}
    (dest / "wheelhouse.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for w in sorted(kept, key=lambda w: -w["bytes"]):
        print(f"{w['bytes'] / 1e6:9.2f} MB  {w['file']}")
    print(f"[wheelhouse] {len(kept)} wheels, {total / 1e6:.1f} MB in {dest} (CPython {args.python}); assumed on "
          f"the node: torch and {len(assumed) - sum(map(torch_brings, assumed))} more "
          f"({', '.join(n for n in assumed if not torch_brings(n)) or 'nothing else'})")
    msg = over_budget(total, args.max_mb)
    if msg:
        print(msg, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
