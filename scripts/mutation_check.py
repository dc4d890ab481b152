#!/usr/bin/env python
"""Plant plausible one-line bugs, one at a time, and report which ones the test suite misses.

    .venv/bin/python scripts/mutation_check.py              # all mutations, 2 workers
    .venv/bin/python scripts/mutation_check.py --jobs 1 --only x3,d1
    .venv/bin/python scripts/mutation_check.py --list

Each mutation names a source file, an exact substring of it (found by its text, never by line
number: it must occur exactly once, else the mutation is reported as stale and not counted), its
replacement, and the focused test files that should catch it. For every mutation the runner copies
the repository (code, tests, configs) into a scratch folder once per worker, replaces the substring
there, runs ``pytest -x -q`` on the named test files with the scratch copy first on PYTHONPATH and
one torch thread, and restores the file. A mutation is CAUGHT when pytest fails (or runs past
``--timeout``), MISSED when the tests pass. The last line is ``caught N/M (P %)``; the exit status
is 1 below ``--target`` percent. The unmutated copy is run first on the union of the test files
(``--no-baseline`` skips it): a failing baseline makes every verdict meaningless.

Not part of CI: one run takes ~10-20 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY = ("coarse_gpu", "tests", "configs", "scripts", "pyproject.toml")
PLUGIN = '''
import os


def pytest_collection_finish(session):
    """One torch thread (two workers share two cores), and the scratch copy really is the code under test."""
    import torch

    import coarse_gpu

    torch.set_num_threads(1)
    root = os.path.realpath(os.environ["MUTATION_ROOT"])
    if not os.path.realpath(coarse_gpu.__file__).startswith(root):
        raise RuntimeError(f"coarse_gpu imported from {coarse_gpu.__file__}, not from the scratch copy {root}")
'''


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    what: str


M = Mutation
MUTATIONS: list[Mutation] = [
    # ---- data ---------------------------------------------------------------------------------
    M("d1", "coarse_gpu/data/file.py",
      "            if miss.any():\n                problems.append(f\"feature column '{c}' (categorical)",
      "            if False:\n                problems.append(f\"feature column '{c}' (categorical)",
      ("tests/test_mutations_caught.py", "tests/test_bad_input.py"), "categorical missing-value check switched off"),
    M("d2", "coarse_gpu/data/file.py", "if y is not None and n > 1 and np.all(y == y[0]):", "if False:",
      ("tests/test_bad_input.py",), "constant-outcome check switched off"),
    M("d3", "coarse_gpu/data/file.py", "out |= v > float(hi)", "out |= v >= float(hi)",
      ("tests/test_bad_input.py",), "declared upper bound treated as exclusive"),
    M("d4", "coarse_gpu/data/file.py", "dup = ids.duplicated(keep=False).to_numpy() & ~miss",
      "dup = ids.duplicated(keep='first').to_numpy() & ~miss", ("tests/test_bad_input.py",),
      "duplicate ids counted without their first occurrence"),
    M("d5", "coarse_gpu/data/file.py", "prop = (counts / n)[arm]", "prop = (counts / counts.sum() / counts.size)[arm]",
      ("tests/test_data_file.py",), "empirical propensity divided by the number of arms"),
    M("d6", "coarse_gpu/data/file.py", "off = np.flatnonzero((ht < 1.0 / PROPENSITY_FACTOR) | (ht > PROPENSITY_FACTOR))",
      "off = np.flatnonzero(ht > PROPENSITY_FACTOR)", ("tests/test_bad_input.py",),
      "Horvitz-Thompson propensity check one-sided"),
    M("d7", "coarse_gpu/data/file.py", "blocks += [(vals == lv).astype(np.float32) for lv in self.categorical[c]]",
      "blocks += [(vals == lv).astype(np.float32) for lv in sorted(self.categorical[c])[::-1]]",
      ("tests/test_data_file.py", "tests/test_policy_io.py"), "one-hot columns in another order than their names"),
    M("d8", "coarse_gpu/data/file.py", "y = y - T @ np.asarray(spec.treatment_cost, dtype=np.float64).reshape(d)",
      "y = y + T @ np.asarray(spec.treatment_cost, dtype=np.float64).reshape(d)", ("tests/test_data_file.py",),
      "treatment cost added to the profit"),
    M("d9", "coarse_gpu/data/simulator.py", "(self.margin - t[:, 0]) - self.contact_cost * t[:, 1]",
      "(self.margin - t[:, 0]) + self.contact_cost * t[:, 1]", ("tests/test_simulator.py",),
      "simulated contact cost with the wrong sign"),
    M("d10", "coarse_gpu/data/experiment.py", "out.append(self.subset(np.sort(perm[start:stop])))",
      "out.append(self.subset(np.sort(perm[max(0, start - 1):stop])))",
      ("tests/test_mutations_caught.py", "tests/test_data_file.py"), "train / test splits overlap by a customer"),
    M("d11", "coarse_gpu/data/file.py", "return RowIssue(col, what, idx + offset, [s.iloc[i] for i in idx[:MAX_LISTED_ROWS]], hint)",
      "return RowIssue(col, what, idx, [s.iloc[i] for i in idx[:MAX_LISTED_ROWS]], hint)",
      ("tests/test_scorer_safety.py",), "bad rows numbered within their chunk"),
    # ---- models -------------------------------------------------------------------------------
    M("m1", "coarse_gpu/models/dragonnet.py", "y_tilde = mu + eps / e", "y_tilde = mu - eps / e",
      ("tests/test_mutations_caught.py", "tests/test_models.py"), "DragonNet targeted regularization sign flipped"),
    M("m2", "coarse_gpu/models/dragonnet.py", "mu = mu + self.epsilon_[None, :] / e", "mu = mu - self.epsilon_[None, :] / e",
      ("tests/test_models.py", "tests/test_mutations_caught.py"), "targeted predictions shifted the wrong way"),
    M("m3", "coarse_gpu/models/interpolate.py", "frac = (x - levels[j]) / (levels[j + 1] - levels[j])",
      "frac = (levels[j + 1] - x) / (levels[j + 1] - levels[j])", ("tests/test_models.py", "tests/test_evaluate.py"),
      "linear interpolation weights mirrored"),
    M("m4", "coarse_gpu/models/base.py", "return ((X - self.x_mean_) / self.x_scale_).astype(np.float32)",
      "return (X - self.x_mean_).astype(np.float32)", ("tests/test_mutations_caught.py", "tests/test_models.py"),
      "model inputs centred but not scaled"),
    M("m5", "coarse_gpu/models/scores.py", "freq = np.bincount(arm, minlength=len(arms)) / len(arm)",
      "freq = np.bincount(arm, minlength=len(arms)) / len(arms)", ("tests/test_crossfit.py",),
      "empirical propensity over the number of arms"),
    M("m6", "coarse_gpu/models/scores.py", "diff = np.asarray(scores)[:, a] - np.asarray(scores)[:, b]",
      "diff = np.asarray(scores)[:, b] - np.asarray(scores)[:, a]", ("tests/test_crossfit.py",), "ATE sign flipped"),
    # ---- discretize ---------------------------------------------------------------------------
    M("x1", "coarse_gpu/discretize/exact.py", "it = itertools.combinations(range(m), k)",
      "it = itertools.combinations(range(m - 1), k)", ("tests/test_mutations_caught.py", "tests/test_discretize.py"),
      "K-subset enumeration skips the last candidate"),
    M("x2", "coarse_gpu/discretize/exact.py", "for S in itertools.combinations(range(M), k):",
      "for S in itertools.combinations(range(1, M), k):", ("tests/test_mutations_caught.py", "tests/test_discretize.py"),
      "capacitated enumeration skips the first candidate"),
    M("x3", "coarse_gpu/discretize/solver.py",
      "                else:\n                    C[r] = torch.as_tensor(new, device=C.device)",
      "                else:\n                    active[r] = False",
      ("tests/test_mutations_caught.py", "tests/test_discretize.py"), "Lloyd iteration skips its location update"),
    M("x4", "coarse_gpu/discretize/exact.py", "L = int(math.ceil(lo * n - 1e-9))", "L = int(math.floor(lo * n - 1e-9))",
      ("tests/test_discretize.py",), "minimum share capacity rounded down"),
    M("x5", "coarse_gpu/discretize/sinkhorn.py", "g = torch.maximum(a, torch.minimum(torch.zeros_like(b), b))",
      "g = torch.minimum(a, torch.maximum(torch.zeros_like(b), b))", ("tests/test_discretize.py",),
      "share-constrained Sinkhorn potential update clamped the wrong way"),
    M("x6", "coarse_gpu/discretize/exact.py", "improved = cand < dist - tol", "improved = cand < dist - 1e6 * tol",
      ("tests/test_mutations_caught.py", "tests/test_discretize.py"), "optimality certificate ignores small negative cycles"),
    M("x7", "coarse_gpu/discretize/sinkhorn.py", "total += (torch.softmax(u / eps, dim=1) * u).to(torch.float64).sum()",
      "total += (torch.softmax(u * eps, dim=1) * u).to(torch.float64).sum()", ("tests/test_discretize.py",),
      "entropic value at the inverse temperature"),
    M("x8", "coarse_gpu/discretize/refine.py", "if gain > 1e-12 * (abs(float(J[k])) + 1.0):", "if gain < 0:",
      ("tests/test_discretize.py",), "pattern search never accepts an improving move"),
    # ---- policy -------------------------------------------------------------------------------
    M("p1", "coarse_gpu/policy/baselines.py", "    mean = p.mean(axis=0)\n    j = int(np.argmax(mean))",
      "    mean = p.mean(axis=0)\n    j = int(np.argmax(p.max(axis=0)))", ("tests/test_policy.py",),
      "single best by the best customer instead of the mean"),
    M("p2", "coarse_gpu/policy/baselines.py", "idx[s] = int(np.argmax(p[lab == s].mean(axis=0)))",
      "idx[s] = int(np.argmax(p.mean(axis=0)))", ("tests/test_policy.py",),
      "every segment gets the overall best candidate"),
    M("p3", "coarse_gpu/policy/io.py", "        scale = x.std(0)\n        scale[scale <= 1e-12] = 1.0",
      "        scale = np.ones_like(center)\n        scale[scale <= 1e-12] = 1.0",
      ("tests/test_mutations_caught.py", "tests/test_policy_io.py"), "saved feature-centroid policy drops the scaling"),
    M("p4", "coarse_gpu/policy/tree.py", "go_left = x[np.flatnonzero(inner), f] <= threshold[node[inner]]",
      "go_left = x[np.flatnonzero(inner), f] >= threshold[node[inner]]", ("tests/test_policy_tree.py",),
      "policy tree sends customers the wrong way"),
    M("p5", "coarse_gpu/policy/io.py", "d2[:, ~ok] = np.inf", "d2[:, ~ok] = 0.0", ("tests/test_bad_input.py",),
      "empty segments chosen for new customers"),
    M("p6", "coarse_gpu/policy/io.py", 'pd.Series(np.arange(offset, offset + len(df)), name="row")',
      'pd.Series(np.arange(len(df)), name="row")', ("tests/test_policy_io.py", "tests/test_scorer_safety.py"),
      "row ids restart in every chunk"),
    M("p7", "coarse_gpu/policy/io.py", "    if real.parent != folder.resolve():", "    if False:",
      ("tests/test_scorer_safety.py",), "weights symlinked out of the policy folder are followed"),
    M("p8", "coarse_gpu/assign_cli.py",
      "    if real == source.resolve() or (out.exists() and source.exists() and os.path.samefile(out, source)):",
      "    if real == source.resolve():", ("tests/test_scorer_safety.py",),
      "output compared with the input by path only (a hard link to the input is overwritten)"),
    M("p9", "coarse_gpu/policy/io.py", "if trained is not None and trained != schema.names:", "if False:",
      ("tests/test_scorer_safety.py",), "a consistently reordered feature schema is trusted"),
    # ---- evaluate -----------------------------------------------------------------------------
    M("e1", "coarse_gpu/evaluate/dr.py", "return mu_p + k[rows, a] / e * (y - mu_a[rows, a])",
      "return mu_p + k[rows, a] * e * (y - mu_a[rows, a])", ("tests/test_evaluate.py",),
      "AIPW residual multiplied by the propensity"),
    M("e2", "coarse_gpu/evaluate/dr.py", "lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])",
      "lo, hi = np.quantile(means, [alpha, 1 - alpha])", ("tests/test_evaluate.py",), "bootstrap CI at twice alpha"),
    M("e3", "coarse_gpu/evaluate/oracle.py", "return prof[np.arange(policy.n), policy.assignment]",
      "return prof.max(axis=1)", ("tests/test_evaluate.py",), "oracle value of the best of K, not the assigned"),
    M("e4", "coarse_gpu/evaluate/oracle.py", "better = v > best_val[rows]", "better = v < best_val[rows]",
      ("tests/test_evaluate.py",), "full-personalization refinement keeps the worse point"),
    M("e5", "coarse_gpu/evaluate/oracle.py", "    return (v - c) / (f - c)", "    return (v - c) / f",
      ("tests/test_evaluate.py",), "share of full personalization without the control's baseline"),
    M("e6", "coarse_gpu/evaluate/choose_k.py", "float(v) - c * int(k)", "float(v) - c * (int(k) - 1)",
      ("tests/test_choose_k.py",), "fixed cost charged for one treatment fewer"),
    # ---- experiment ---------------------------------------------------------------------------
    M("r1", "coarse_gpu/experiment/pipeline.py", "bad = [k for k in k_values if k < 1]",
      "bad = [k for k in k_values if k < 0]", ("tests/test_bad_input.py",), "K = 0 accepted"),
    M("r2", "coarse_gpu/experiment/report.py", "cells.append(f\"{100 * r['share_of_full']:7.2f}%\"",
      "cells.append(f\"{r['share_of_full']:7.2f}%\"", ("tests/test_mutations_caught.py", "tests/test_report.py"),
      "table shows fractions as percent"),
    M("r3", "coarse_gpu/experiment/pipeline.py", "too_many = [k for k in k_values if k > n_candidates]",
      "too_many = [k for k in k_values if k > n_candidates + 1]", ("tests/test_bad_input.py",),
      "K above the number of candidates accepted"),
]


def _scratch(base: Path) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="mutation_", dir=base))
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    (dest / "_mutation_plugin.py").write_text(PLUGIN)
    return dest


def _pytest(root: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    """('pass' | 'fail' | 'timeout', seconds, last output line) of ``pytest -x -q tests`` in ``root``."""
    env = {**os.environ, "PYTHONPATH": str(root), "MUTATION_ROOT": str(root), "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "KEOPS_CACHE_FOLDER": str(ROOT / ".keops_cache"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "_mutation_plugin", *tests]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0, f"no result after {timeout:.0f} s"
    lines = [x for x in (proc.stdout + proc.stderr).strip().splitlines() if x.strip()]
    last = lines[-1] if lines else ""
    if "RuntimeError: coarse_gpu imported from" in proc.stdout + proc.stderr:
        raise SystemExit(f"the scratch copy is not the code under test: {last}")
    return ("pass" if proc.returncode == 0 else "fail"), time.perf_counter() - t0, last


def check_sources(muts: list[Mutation]) -> dict[str, str]:
    """{id: reason} of mutations whose substring is missing or ambiguous in the current source."""
    stale = {}
    for m in muts:
        text = (ROOT / m.file).read_text()
        count = text.count(m.old)
        if count != 1:
            stale[m.id] = f"substring found {count} times in {m.file}"
    return stale


def run_one(m: Mutation, root: Path, timeout: float) -> tuple[str, float, str]:
    path = root / m.file
    original = path.read_text()
    path.write_text(original.replace(m.old, m.new, 1))
    try:
        return _pytest(root, m.tests, timeout)
    finally:
        path.write_text(original)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="mutations run at once (one scratch copy each)")
    ap.add_argument("--only", default="", help="comma-separated mutation ids")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per mutation; longer counts as caught")
    ap.add_argument("--target", type=float, default=90.0, help="exit 1 below this percentage caught")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the test files")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = ap.parse_args(argv)
    muts = MUTATIONS
    if args.only:
        want = set(args.only.split(","))
        muts = [m for m in muts if m.id in want]
    if args.list:
        for m in muts:
            print(f"{m.id:4} {m.file}: {m.what}  [{', '.join(m.tests)}]")
        return 0
    stale = check_sources(muts)
    live = [m for m in muts if m.id not in stale]
    base = Path(tempfile.mkdtemp(prefix="coarse_gpu_mutations_"))
    roots = [_scratch(base) for _ in range(max(1, args.jobs))]
    t_all = time.perf_counter()
    try:
        if not args.no_baseline:
            tests = tuple(sorted({t for m in live for t in m.tests}))
            verdict, secs, last = _pytest(roots[0], tests, args.timeout * 3)
            print(f"baseline (unmutated, {len(tests)} test files): {verdict} in {secs:.0f} s: {last}", flush=True)
            if verdict != "pass":
                print("the unmutated tests do not pass: fix them first", file=sys.stderr)
                return 2
        free = list(roots)
        results: dict[str, tuple[str, float, str]] = {}

        def work(m: Mutation):
            root = free.pop()
            try:
                results[m.id] = run_one(m, root, args.timeout)
            finally:
                free.append(root)
            verdict, secs, last = results[m.id]
            status = {"pass": "MISSED", "fail": "caught", "timeout": "caught (timeout)"}[verdict]
            print(f"{m.id:4} {status:16} {secs:6.1f} s  {m.what} ({m.file})" +
                  (f"\n       {last}" if verdict == "pass" else ""), flush=True)

        with ThreadPoolExecutor(max_workers=len(roots)) as pool:
            list(pool.map(work, live))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for mid, why in stale.items():
        print(f"{mid:4} STALE            {why} (not counted)")
    missed = [m for m in live if results[m.id][0] == "pass"]
    n, caught = len(live), len(live) - len(missed)
    pct = 100.0 * caught / n if n else 0.0
    print(f"survivors: {', '.join(f'{m.id} ({m.what})' for m in missed) or 'none'}")
    print(f"total {time.perf_counter() - t_all:.0f} s on {len(roots)} worker(s)")
    print(f"caught {caught}/{n} ({pct:.1f} %)")
    return 0 if pct >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
