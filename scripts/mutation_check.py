#!/usr/bin/env python
"""Plant plausible one-line bugs, one at a time, and report which ones the test suite misses.

    .venv/bin/python scripts/mutation_check.py              # all mutations, 2 workers
    .venv/bin/python scripts/mutation_check.py --jobs 1 --only x3,d1
    .venv/bin/python scripts/mutation_check.py --layer evaluate,api
    .venv/bin/python scripts/mutation_check.py --list

Each mutation names a source file, an exact substring of it (found by its text, never by line
number: it must occur exactly once, else the mutation is reported as stale and not counted), its
replacement, and the focused test files that should catch it. For every mutation the runner copies
the repository (code, tests, configs) into a scratch folder once per worker, replaces the substring
there, runs ``pytest -x -q`` on the named test files with the scratch copy first on PYTHONPATH and
one torch thread, and restores the file. A mutation is CAUGHT when pytest fails (or runs past
``--timeout``), MISSED when the tests pass. The survivors are listed, then the score per layer
(``LAYERS``: the folders of coarse_gpu/, and "api" for api.py and the CLIs); the last line is
``caught N/M (P %)``; the exit status is 1 below ``--target`` percent. The unmutated copy is run first on the union of the test files
(``--no-baseline`` skips it): a failing baseline makes every verdict meaningless.

Not part of CI: all 82 take about an hour on 2 busy cores (docs/testing.md has the last score).
CI checks only that every mutation still matches its code exactly once
(tests/test_mutations_caught.py), so none goes stale unnoticed.
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


#: The project's layers (tests/test_layers.py), bottom up; "api" is coarse_gpu/api.py and the CLIs.
LAYERS = ("data", "models", "discretize", "policy", "evaluate", "experiment", "api")


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    what: str

    @property
    def layer(self) -> str:
        """The layer of the mutated file: its folder under coarse_gpu/, or "api" for the top-level modules."""
        parts = Path(self.file).parts
        return parts[1] if len(parts) > 2 and parts[1] in LAYERS else "api"


M = Mutation
MUTATIONS: list[Mutation] = [
    # ---- data ---------------------------------------------------------------------------------
    M("d1", "coarse_gpu/data/frame_checks.py",
      "            if miss.any():\n                problems.append(f\"feature column '{c}' (categorical)",
      "            if False:\n                problems.append(f\"feature column '{c}' (categorical)",
      ("tests/test_mutations_caught.py", "tests/test_bad_input.py"), "categorical missing-value check switched off"),
    M("d2", "coarse_gpu/data/frame_checks.py", "if y is not None and n > 1 and np.all(y == y[0]):", "if False:",
      ("tests/test_bad_input.py",), "constant-outcome check switched off"),
    M("d3", "coarse_gpu/data/frame_checks.py", "out |= v > float(hi)", "out |= v >= float(hi)",
      ("tests/test_bad_input.py",), "declared upper bound treated as exclusive"),
    M("d4", "coarse_gpu/data/frame_checks.py", "dup = ids.duplicated(keep=False).to_numpy() & ~miss",
      "dup = ids.duplicated(keep='first').to_numpy() & ~miss", ("tests/test_bad_input.py",),
      "duplicate ids counted without their first occurrence"),
    M("d5", "coarse_gpu/data/file.py", "prop = (counts / n)[arm]", "prop = (counts / counts.sum() / counts.size)[arm]",
      ("tests/test_data_file.py",), "empirical propensity divided by the number of arms"),
    M("d6", "coarse_gpu/data/frame_checks.py", "off = np.flatnonzero((ht < 1.0 / PROPENSITY_FACTOR) | (ht > PROPENSITY_FACTOR))",
      "off = np.flatnonzero(ht > PROPENSITY_FACTOR)", ("tests/test_bad_input.py",),
      "Horvitz-Thompson propensity check one-sided"),
    M("d7", "coarse_gpu/data/feature_schema.py", "blocks += [(vals == lv).astype(np.float32) for lv in self.categorical[c]]",
      "blocks += [(vals == lv).astype(np.float32) for lv in sorted(self.categorical[c])[::-1]]",
      ("tests/test_data_file.py", "tests/test_policy_io.py"), "one-hot columns in another order than their names"),
    M("d8", "coarse_gpu/data/frame_checks.py", "y = y - T @ np.asarray(spec.treatment_cost, dtype=np.float64).reshape(len(spec.treatment))",
      "y = y + T @ np.asarray(spec.treatment_cost, dtype=np.float64).reshape(len(spec.treatment))", ("tests/test_data_file.py",),
      "treatment cost added to the profit"),
    M("d9", "coarse_gpu/data/simulator.py", "(self.margin - t[:, 0]) - self.contact_cost * t[:, 1]",
      "(self.margin - t[:, 0]) + self.contact_cost * t[:, 1]", ("tests/test_simulator.py",),
      "simulated contact cost with the wrong sign"),
    M("d10", "coarse_gpu/data/experiment.py", "out.append(self.subset(np.sort(perm[start:stop])))",
      "out.append(self.subset(np.sort(perm[max(0, start - 1):stop])))",
      ("tests/test_mutations_caught.py", "tests/test_data_file.py"), "train / test splits overlap by a customer"),
    M("d11", "coarse_gpu/data/feature_schema.py", "return RowIssue(col, what, idx + offset, [s.iloc[i] for i in idx[:MAX_LISTED_ROWS]], hint)",
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
    M("m5", "coarse_gpu/models/scores.py", "freq = np.bincount(arm, minlength=len(arms)) / len(arm)",
      "freq = np.bincount(arm, minlength=len(arms)) / len(arms)", ("tests/test_crossfit.py",),
      "empirical propensity over the number of arms"),
    M("m6", "coarse_gpu/models/scores.py", "diff = np.asarray(scores)[:, a] - np.asarray(scores)[:, b]",
      "diff = np.asarray(scores)[:, b] - np.asarray(scores)[:, a]", ("tests/test_crossfit.py",), "ATE sign flipped"),
    M("m7", "coarse_gpu/models/select.py", "best = min(losses, key=lambda c: float(losses[c].mean()))",
      "best = max(losses, key=lambda c: float(losses[c].mean()))", ("tests/test_learners.py",),
      "auto picks the candidate with the worst decision loss"),
    M("m8", "coarse_gpu/models/scores.py", "gamma[rows, arm] += (y - mu[rows, arm]) / e",
      "gamma[rows, arm] += (y - mu[rows, arm])", ("tests/test_learners.py", "tests/test_crossfit.py"),
      "AIPW pseudo-outcomes without the inverse propensity"),
    M("m9", "coarse_gpu/models/select.py", "    m = mu_hat - mu_hat.mean(1, keepdims=True)", "    m = mu_hat",
      ("tests/test_learners.py",), "decision loss compares uncentred predictions with centred pseudo-outcomes"),
    M("m10", "coarse_gpu/models/boosting.py", "            z[:, x.shape[1]:] = self.arms_[a]",
      "            z[:, x.shape[1]:] = self.arms_[0]", ("tests/test_learners.py",),
      "S-learner predicts every arm at the first arm's treatment"),
    M("m11", "coarse_gpu/models/boosting.py", "return self._mean(np.stack([tr.predict(x) for tr in self.trees_], axis=1))",
      "return self._mean(np.stack([tr.predict(x) for tr in self.trees_[::-1]], axis=1))", ("tests/test_learners.py",),
      "T-learner's per-arm models in reverse order"),
    M("m12", "coarse_gpu/models/scaling.py", "return np.clip((X - x_mean) / x_scale, -CLIP, CLIP).astype(np.float32)",
      "return np.clip(X - x_mean, -CLIP, CLIP).astype(np.float32)", ("tests/test_learners.py",),
      "inputs centred, not scaled, before clipping"),
    M("m13", "coarse_gpu/models/crossfit.py", "res = self._mean_std([predict(m, self.X_[rows]) for m in members], True)",
      "res = self._mean_std([predict(m, self.X_[rows]) for m in self.models_[(k + 1) % len(self.models_)]], True)",
      ("tests/test_crossfit.py",), "out-of-fold rows scored by a fold model that trained on them"),
    M("m14", "coarse_gpu/models/defaults.py", "round(20000 / max(n_rows, 1))", "round(2000 / max(n_rows, 1))",
      ("tests/test_learners.py",), "ensemble size rule off by 10x"),
    # ---- discretize ---------------------------------------------------------------------------
    M("x1", "coarse_gpu/discretize/facility.py",
      "subsets = np.array(list(combinations(range(G), k)), dtype=np.int64).reshape(comb(G, k), k)",
      "subsets = np.array(list(combinations(range(G - 1), k)), dtype=np.int64).reshape(comb(G - 1, k), k)",
      ("tests/test_mutations_caught.py", "tests/test_discretize.py"),
      "K-subset enumeration skips the last candidate"),
    M("x2", "coarse_gpu/discretize/exact.py", "for S in itertools.combinations(range(M), k):",
      "for S in itertools.combinations(range(1, M), k):", ("tests/test_mutations_caught.py", "tests/test_discretize.py"),
      "capacitated enumeration skips the first candidate"),
    M("x3", "coarse_gpu/discretize/lloyd.py",
      "            else:\n                C[r] = torch.as_tensor(new, device=C.device)",
      "            else:\n                active[r] = False",
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
    M("p1", "coarse_gpu/policy/baselines.py", "        mean = view.col_mean()\n        j = int(np.argmax(mean))",
      "        mean = view.col_mean()\n        j = int(np.bincount(view.row_argmax(), minlength=len(mean)).argmax())",
      ("tests/test_policy.py", "tests/test_properties_policy.py"),
      "single best by the most customers' favourite instead of the best mean"),
    M("p2", "coarse_gpu/policy/estimator.py", "idx[s] = int(np.argmax(p[lab == s].mean(axis=0)))",
      "idx[s] = int(np.argmax(p.mean(axis=0)))", ("tests/test_policy.py", "tests/test_properties_policy.py"),
      "every segment gets the overall best candidate"),
    M("p3", "coarse_gpu/policy/rules.py", '"scale": _f64(est.scale_),', '"scale": np.ones_like(_f64(est.scale_)),',
      ("tests/test_mutations_caught.py", "tests/test_policy_io.py"), "saved feature-centroid policy drops the scaling"),
    M("p4", "coarse_gpu/policy/stored_tree.py", "go_left = x[np.flatnonzero(inner), f] <= threshold[node[inner]]",
      "go_left = x[np.flatnonzero(inner), f] >= threshold[node[inner]]", ("tests/test_policy_tree.py",),
      "policy tree sends customers the wrong way"),
    M("p5", "coarse_gpu/policy/clustering.py", "        for j in live:  # one center",
      "        for j in range(c.shape[0]):  # one center", ("tests/test_bad_input.py",),
      "empty segments chosen for new customers"),
    M("p6", "coarse_gpu/policy/io.py", 'pd.Series(np.arange(offset, offset + len(df)), name="row")',
      'pd.Series(np.arange(len(df)), name="row")', ("tests/test_policy_io.py", "tests/test_scorer_safety.py"),
      "row ids restart in every chunk"),
    M("p7", "coarse_gpu/policy/load_checks.py", "    if real.parent != folder.resolve():", "    if False:",
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
    M("e2", "coarse_gpu/evaluate/bootstrap.py", "lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2])",
      "lo, hi = np.quantile(draws, [alpha, 1 - alpha])", ("tests/test_evaluate.py",), "bootstrap CI at twice alpha"),
    M("e3", "coarse_gpu/evaluate/oracle.py", "return prof[np.arange(policy.n), policy.assignment]",
      "return prof.max(axis=1)", ("tests/test_evaluate.py",), "oracle value of the best of K, not the assigned"),
    M("e4", "coarse_gpu/evaluate/oracle.py", "better = v > best_val[rows]", "better = v < best_val[rows]",
      ("tests/test_evaluate.py",), "full-personalization refinement keeps the worse point"),
    M("e5", "coarse_gpu/evaluate/oracle.py", "    return (v - c) / (f - c)", "    return (v - c) / f",
      ("tests/test_evaluate.py",), "share of full personalization without the control's baseline"),
    M("e6", "coarse_gpu/evaluate/choose_k.py", "float(v) - c * int(k)", "float(v) - c * (int(k) - 1)",
      ("tests/test_choose_k.py",), "fixed cost charged for one treatment fewer"),
    # ---- experiment ---------------------------------------------------------------------------
    M("r1", "coarse_gpu/experiment/loading.py", "bad = [k for k in k_values if k < 1]",
      "bad = [k for k in k_values if k < 0]", ("tests/test_bad_input.py",), "K = 0 accepted"),
    M("r2", "coarse_gpu/experiment/report.py", 'return f"{100 * v:7.2f}%" if v is not None',
      'return f"{v:7.2f}%" if v is not None', ("tests/test_mutations_caught.py", "tests/test_report.py"),
      "table shows fractions as percent"),
    M("r3", "coarse_gpu/experiment/loading.py", "too_many = [k for k in k_values if k > n_candidates]",
      "too_many = [k for k in k_values if k > n_candidates + 1]", ("tests/test_bad_input.py",),
      "K above the number of candidates accepted"),
    # ==== issue 25: plausible bugs the suite missed, and more in every layer, each caught by a property ====
    # ---- data (tests/test_properties_data.py: invariances, one-sided ranges) --------------------
    M("d12", "coarse_gpu/data/frame_checks.py", "        if lo is not None or hi is not None:",
      "        if lo is not None and hi is not None:", ("tests/test_properties_data.py", "tests/test_bad_input.py"),
      "a treatment range declared on one side only is never checked"),
    M("d13", "coarse_gpu/data/file.py", "    feats = df[spec.features].copy()",
      "    feats = df[[c for c in df.columns if c in spec.features]].copy()", ("tests/test_properties_data.py",),
      "model-matrix columns in the file's column order instead of data.features'"),
    M("d14", "coarse_gpu/data/feature_schema.py",
      "            s = df[c]\n            if c in self.categorical:\n                vals",
      "            s = df.iloc[:, self.columns.index(c)]\n            if c in self.categorical:\n                vals",
      ("tests/test_properties_data.py", "tests/test_properties_policy.py"),
      "new customers' feature columns read by position, not by name"),
    M("d15", "coarse_gpu/data/frame_checks.py", "out |= v < float(lo)", "out |= v <= float(lo)", ("tests/test_properties_data.py",),
      "declared lower bound treated as exclusive"),
    # ---- models (tests/test_properties_models.py: fold balance and membership, scaling, interpolation)
    M("m15", "coarse_gpu/models/crossfit.py", "offset += rows.shape[0]", "offset = 0",
      ("tests/test_properties_models.py", "tests/test_crossfit.py"),
      "cross-fitting's fold rotation dropped (every one-row stratum lands in fold 0)"),
    M("m16", "coarse_gpu/models/crossfit.py",
      "train = np.flatnonzero(self.fold_ != k) if self.n_folds > 1 else np.arange(n)",
      "train = np.flatnonzero(self.fold_ != (k + 1) % self.n_folds) if self.n_folds > 1 else np.arange(n)",
      ("tests/test_properties_models.py",), "fold k's members train on their own held-out fold"),
    M("m17", "coarse_gpu/models/scaling.py", "    mean = Z.mean(0)", "    mean = X.mean(0)",
      ("tests/test_properties_models.py",), "squashed columns centred by the raw column's mean"),
    M("m18", "coarse_gpu/models/scaling.py", "scale = np.where(sd > 1e-12 * np.maximum(1.0, np.abs(mean)), sd, 1.0)",
      "scale = np.where(sd > 1e-12 * np.maximum(1.0, np.abs(mean)), sd, 0.0)", ("tests/test_properties_models.py",),
      "a constant column divided by a zero scale"),
    M("m19", "coarse_gpu/models/interpolate.py", 'j = np.clip(np.searchsorted(levels, x, side="right") - 1, 0, n - 2)',
      'j = np.clip(np.searchsorted(levels, x, side="right") - 1, 0, n - 1)', ("tests/test_properties_models.py",),
      "tent weights at the top level index past the last cell"),
    # ---- discretize (tests/test_properties_discretize.py: brute force, LP reference, consistency) ---
    M("x9", "coarse_gpu/discretize/facility.py", "        for j in range(1, block.shape[1]):",
      "        for j in range(2, block.shape[1]):", ("tests/test_properties_discretize.py",),
      "subset values ignore each subset's second treatment"),
    M("x10", "coarse_gpu/discretize/finish.py", "    T = cand[C_best.cpu().numpy()].copy()",
      "    T = cand[np.sort(C_best.cpu().numpy())].copy()", ("tests/test_properties_discretize.py",),
      "treatments sorted apart from the assignment's segment order"),
    M("x11", "coarse_gpu/discretize/exact.py", "H = int(math.floor(hi * n + 1e-9))", "H = int(math.ceil(hi * n - 1e-9))",
      ("tests/test_properties_discretize.py",), "maximum share capacity rounded up"),
    M("x12", "coarse_gpu/discretize/finish.py", "objective = float(src.reduce_sum(U64.gather(1, a_t[:, None]).sum()))",
      "objective = float(src.reduce_sum(U64.max(1).values.sum()))", ("tests/test_properties_discretize.py",),
      "objective of each customer's best of K, not the (share-constrained) assignment"),
    M("x13", "coarse_gpu/discretize/builders.py", "w = np.where(codes == g, 1.0 / size[g], 0.0)",
      "w = np.where(codes == g, 1.0 / size[h], 0.0)", ("tests/test_constraint_builders.py",),
      "a parity band weighs group g by the other group's size"),
    M("x14", "coarse_gpu/discretize/builders.py", "np.full(int(n), 1.0 / n)", "np.full(int(n), 1.0)",
      ("tests/test_constraint_builders.py",), "a budget bounds the total cost instead of the mean per customer"),
    # ---- policy (tests/test_properties_policy.py: a fixture whose K treatments differ) -----------
    M("p10", "coarse_gpu/policy/io.py", "            prof[s: s + chunk_rows] = p_k[np.arange(lab.shape[0]), lab]",
      "            prof[s: s + chunk_rows] = p_k.max(1)", ("tests/test_properties_policy.py",),
      "a saved policy reports the best-of-K profit instead of the assigned segment's"),
    M("p11", "coarse_gpu/policy/io.py", "            out[name] = self.user_values(j, self.treatments[seg, j])",
      "            out[name] = self.user_values(j, self.treatments[seg, 0])", ("tests/test_properties_policy.py",),
      "every treatment column of the assignment table holds the first dimension"),
    M("p12", "coarse_gpu/policy/rules.py", 'return nearest_center(cand[best] / params["pref_scale"], params["centroids"])',
      'return nearest_center(cand[best], params["centroids"])', ("tests/test_properties_policy.py",),
      "saved preference-centroid rule drops the treatments' scaling"),
    M("p13", "coarse_gpu/policy/embeddings.py", "    sd = x.std(axis=0)\n    sd[sd <= 1e-12] = 1.0",
      "    sd = np.ones_like(mu)\n    sd[sd <= 1e-12] = 1.0", ("tests/test_properties_policy.py",),
      "segmenting on characteristics clusters raw (unstandardized) features"),
    M("p14", "coarse_gpu/policy/estimates.py", "max_dense = DENSE_PROFIT_ENTRIES if max_dense is None else max_dense",
      "max_dense = 2**26 if max_dense is None else max_dense", ("tests/test_profit_estimates.py",),
      "the dense-size limit read from a copy, so a patched limit leaves the profit dense"),
    # ---- evaluate (tests/test_properties_evaluate.py: bootstrap balance, closed-form widths) ------
    M("e7", "coarse_gpu/evaluate/bootstrap.py", "rng.integers(0, n, n)", "rng.integers(0, n - 1, n)",
      ("tests/test_properties_evaluate.py", "tests/test_evaluate.py"), "the shared bootstrap never draws the last row"),
    M("e8", "coarse_gpu/evaluate/dr.py", "lo, hi = percentile_ci(SharedBootstrap(n, n_boot, seed).means(s), alpha)",
      "lo, hi = percentile_ci(SharedBootstrap(n, n_boot, seed).means(s), alpha / 2)",
      ("tests/test_properties_evaluate.py", "tests/test_evaluate.py"), "the DR interval's alpha halved twice"),
    M("e9", "coarse_gpu/evaluate/dr.py", "z = float(norm.ppf(1 - alpha / 2))", "z = float(norm.ppf(1 - alpha))",
      ("tests/test_properties_evaluate.py",), "normal-approximation interval with a one-sided z"),
    M("e10", "coarse_gpu/evaluate/dr.py", "se = float(s.std(ddof=1) / np.sqrt(n))", "se = float(s.std(ddof=1) / n)",
      ("tests/test_properties_evaluate.py",), "standard error over N instead of sqrt(N)"),
    M("e11", "coarse_gpu/evaluate/dr.py", "return mu_p + k[rows, a] / e * (y - mu_a[rows, a])",
      "return mu_p + k[rows].sum(1) / e * (y - mu_a[rows, a])", ("tests/test_properties_evaluate.py",),
      "AIPW residual weighted by the whole kappa row, not the received arm's weight"),
    M("e12", "coarse_gpu/evaluate/bootstrap.py", "w[r] = np.bincount(idx, minlength=n)",
      "w[r] = np.bincount(idx, minlength=n) > 0", ("tests/test_properties_evaluate.py",),
      "bootstrap weights count distinct customers, not draws"),
    # ---- experiment (tests/test_properties_experiment.py: the run folder over any job sequence) --
    M("r4", "coarse_gpu/experiment/rundir.py",
      'names = [p.name for p in self.out_dir.iterdir() if p.name not in ("checkpoints", COMMIT_LIST)]',
      "names = [p.name for p in self.out_dir.iterdir() if p.name != COMMIT_LIST]",
      ("tests/test_properties_experiment.py", "tests/test_reliability.py"),
      "a staged rerun deletes the checkpoints and leaves run/checkpoints pointing outside the run folder"),
    M("r5", "coarse_gpu/experiment/rundir.py", 'return ("rerun" if prev.status == "complete" else "resume"), prev.status',
      'return ("rerun" if prev.status != "complete" else "resume"), prev.status',
      ("tests/test_properties_experiment.py",), "a complete run is resumed in place (its results overwritten mid-job)"),
    M("r6", "coarse_gpu/experiment/rundir.py", 'return any(key == p or key.startswith(p + ".") for p in IGNORED)',
      "return any(key.startswith(p) for p in IGNORED)", ("tests/test_properties_experiment.py",),
      "config keys that merely start like an ignored key (logger_level) are ignored"),
    M("r7", "coarse_gpu/experiment/evaluation.py", "self.alpha = 1.0 - ci_level", "self.alpha = (1.0 - ci_level) / 2",
      ("tests/test_properties_experiment.py",), "the run's intervals at half the requested alpha"),
    M("e13", "coarse_gpu/evaluate/metrics.py", "ci = percentile_ci(ev.draws, ev.alpha) if ev.draws",
      "ci = percentile_ci(ev.draws, ev.alpha / 2) if ev.draws", ("tests/test_metrics.py",),
      "the dr metric's interval (both doors') at half the requested alpha"),
    M("e14", "coarse_gpu/evaluate/metrics.py", "        if not all(ev.has(n) for n in self.needs):",
      "        if False:", ("tests/test_metrics.py",),
      "a metric that needs a simulator is called without one (the API, your own data)"),
    M("r8", "coarse_gpu/experiment/rundir.py", "        if old.name not in items:", "        if False:",
      ("tests/test_properties_experiment.py",), "an earlier config's outputs survive a completed rerun"),
    # ---- api: coarse_gpu/api.py (tests/test_properties_api.py: rows paired by position, never by label)
    M("a1", "coarse_gpu/api_inputs.py", "        return X.reset_index(drop=True)", "        return X",
      ("tests/test_properties_api.py",), "CoarsePersonalizer.fit pairs X with treatment and y by index label"),
    M("a2", "coarse_gpu/api_inputs.py", "        t, named = treatment.reset_index(drop=True), True", "        t, named = treatment, True",
      ("tests/test_properties_api.py",), "a treatment DataFrame paired with X by index label"),
    M("a3", "coarse_gpu/api_inputs.py", "t = treatment.reset_index(drop=True).to_frame(", "t = treatment.to_frame(",
      ("tests/test_properties_api.py",), "a treatment Series paired with X by index label"),
    M("a4", "coarse_gpu/api_inputs.py", "    a = v.to_numpy() if isinstance(v, (pd.Series, pd.DataFrame)) else np.asarray(v)",
      "    a = v.sort_index().to_numpy() if isinstance(v, (pd.Series, pd.DataFrame)) else np.asarray(v)",
      ("tests/test_properties_api.py",), "an outcome Series paired with X by index label"),
    M("tp1", "coarse_gpu/models/twopart.py", "        size = COMPLEXITY_GRID[int(np.argmin(scores))]",
      "        size = COMPLEXITY_GRID[int(np.argmax(scores))]", ("tests/test_twopart.py",),
      "a two-part model keeps the tree size with the WORST held-out deviance"),
    M("tp2", "coarse_gpu/models/select.py",
      "            names = _drop(names, _uses_dose, \"the treatment is categorical\", what=\"a dose model\")",
      "            names = list(names)", ("tests/test_twopart.py",),
      "auto fits a dose curve along the codes of a categorical treatment"),
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


def layer_table(live: list[Mutation], missed: set[str], stale: dict[str, str]) -> str:
    """Caught / counted per layer (a layer without mutations is listed too: untested is a result)."""
    every = {m.id: m for m in MUTATIONS}
    rows = ["layer        caught / total   survivors"]
    for layer in LAYERS:
        mine = [m for m in live if m.layer == layer]
        n_stale = sum(1 for mid in stale if every[mid].layer == layer)
        caught = sum(1 for m in mine if m.id not in missed)
        pct = f"{100.0 * caught / len(mine):5.1f} %" if mine else "    - "
        lost = ", ".join(m.id for m in mine if m.id in missed) or "-"
        rows.append(f"{layer:12} {caught:3d} / {len(mine):3d} {pct}  {lost}" + (f"  ({n_stale} stale)" if n_stale else ""))
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="mutations run at once (one scratch copy each)")
    ap.add_argument("--only", default="", help="comma-separated mutation ids")
    ap.add_argument("--layer", default="", help=f"comma-separated layers, of {', '.join(LAYERS)}")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per mutation; longer counts as caught")
    ap.add_argument("--target", type=float, default=90.0, help="exit 1 below this percentage caught")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the test files")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = ap.parse_args(argv)
    muts = MUTATIONS
    if args.only:
        want = set(args.only.split(","))
        unknown = want - {m.id for m in MUTATIONS}
        if unknown:
            ap.error(f"--only: unknown mutation id(s) {sorted(unknown)}; see --list")
        muts = [m for m in muts if m.id in want]
    if args.layer:
        layers = set(args.layer.split(","))
        if layers - set(LAYERS):
            ap.error(f"--layer: unknown layer(s) {sorted(layers - set(LAYERS))}; layers: {', '.join(LAYERS)}")
        muts = [m for m in muts if m.layer in layers]
    if args.list:
        for m in muts:
            print(f"{m.id:4} {m.layer:10} {m.file}: {m.what}  [{', '.join(m.tests)}]")
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
    print(layer_table(live, {m.id for m in missed}, stale))
    print(f"total {time.perf_counter() - t_all:.0f} s on {len(roots)} worker(s)")
    print(f"caught {caught}/{n} ({pct:.1f} %)")
    return 0 if pct >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
