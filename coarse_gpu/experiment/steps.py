"""The steps of the main job, each a small function the pipeline object (coarse_gpu.experiment.job)
calls in order: the simulator's difficulty checks (``simulator_checks``), the trained model's record
(``training_record``), the reference policies (``references``: no treatment, full personalization),
and per K the methods' policies scored, priced, saved and logged (``run_k``, ``score_k``).

They take the job's config and state as arguments and return plain dicts (results.json's blocks), so
the command line and the Python API (``CoarsePersonalizer.run``) run the same code.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np
from omegaconf import DictConfig

from coarse_gpu.data import ExperimentData
from coarse_gpu.evaluate import oracle_control_value, oracle_value, share_of_full
from coarse_gpu.evaluate.bootstrap import percentile_ci
from coarse_gpu.evaluate.metrics import evaluate_metrics
from coarse_gpu.evaluate.oracle import oracle_best_treatments
from coarse_gpu.experiment.estimates import ProfitEstimates, _first
from coarse_gpu.experiment.evaluation import Evaluator, oracle_points
from coarse_gpu.experiment.kinds import unseen_mask
from coarse_gpu.experiment.methods import MethodContext, ensemble_spread, method_policy
from coarse_gpu.experiment.stages import stage
from coarse_gpu.experiment.tracking import Tracker
from coarse_gpu.models import CrossFitted
from coarse_gpu.policy import Policy, full_personalization, kmeans_features, single_best

log = logging.getLogger("coarse_gpu")


def ideal_treatment_histogram(ideal: np.ndarray, candidates: np.ndarray, space, max_bins: int = 40) -> Optional[dict]:
    """Where the held-out customers' estimated best treatments lie, as a 2-D histogram for the figures.

    ideal : (N, 2) each customer's estimated best candidate; candidates : (M, 2) the candidate grid.
    One bin per distinct candidate coordinate, centred on it (at most ``max_bins`` per axis, else
    equal bins over the treatment box). None unless the space is 2-D.
    Returns {"x_edges", "y_edges", "counts" (x bins, y bins), "source"}.
    """
    if space.dim != 2:
        return None
    edges = []
    for j in range(2):
        u = np.unique(candidates[:, j])
        lo, hi = float(space.low[j]), float(space.high[j])
        if 1 < u.size <= max_bins:
            mids = (u[1:] + u[:-1]) / 2
            edges.append(np.concatenate([[u[0] - (mids[0] - u[0])], mids, [u[-1] + (u[-1] - mids[-1])]]))
        else:
            edges.append(np.linspace(lo, hi, max_bins + 1) if u.size > 1 else np.array([lo - 0.5, hi + 0.5]))
    counts, _, _ = np.histogram2d(ideal[:, 0], ideal[:, 1], bins=edges)
    return {"x_edges": edges[0].tolist(), "y_edges": edges[1].tolist(), "counts": counts.astype(int).tolist(),
            "source": "estimated best candidate per held-out customer"}


#: Above this many scored customers the simulator checks and the true-profit ceiling use a uniform
#: sample of this many (the same rows for both): their (N, M) true profits stay ~220 MB.
CHECK_ROWS = 50_000


def _check_sample(scored: ExperimentData, seed: int) -> Optional[np.ndarray]:
    """The sorted rows of the checks' sample (the draw ``oracle_ceiling`` makes), None below CHECK_ROWS."""
    n = len(scored)
    return None if n <= CHECK_ROWS else np.sort(np.random.default_rng(seed).choice(n, size=CHECK_ROWS,
                                                                                   replace=False))


def simulator_checks(scored: ExperimentData, candidates: np.ndarray, seed: int, results: dict):
    """The simulator's difficulty figures with TRUE profits.

    Returns (control value, (full value, full treatments)) of all scored customers, and the true-profit
    ceiling's inputs (truth, control, full, (n, M) true profits at the candidates) of the customers the
    checks ran on (all of them, or the ``CHECK_ROWS`` sample); (None, None, None) without a simulator.
    """
    if scored.truth is None:
        log.info("no simulator behind %s: policies are scored by their doubly robust value only",
                 scored.meta.get("source", "the data"))
        return None, None, None
    space = scored.space
    control = oracle_control_value(scored.truth, space)
    best_profit, best_t = oracle_best_treatments(scored.truth, space, points=oracle_points(space))
    full = (float(best_profit.mean()), best_t)
    rows = _check_sample(scored, seed)
    sample = scored if rows is None else scored.subset(rows)
    # a customer's best treatment depends on its own row only: the sample's value is its rows' mean
    s_control, s_full = (control, full[0]) if rows is None else \
        (oracle_control_value(sample.truth, space), float(best_profit[rows].mean()))
    true_cand = sample.truth.profit(candidates)
    one = single_best(true_cand, candidates)
    seg = kmeans_features(sample.X, true_cand, candidates, min(5, len(sample)), seed=seed)
    checks = {"single_best_share_true_profits": share_of_full(oracle_value(sample.truth, one), s_control, s_full),
              "kmeans_features_k5_share_true_profits": share_of_full(oracle_value(sample.truth, seg), s_control,
                                                                     s_full),
              "n_customers": len(sample)}
    results["simulator_checks"] = checks
    log.info("simulator check (true profits): one treatment for all keeps %.1f%%, k-means on covariates K=5 "
             "keeps %.1f%% of full personalization's incremental profit",
             100 * checks["single_best_share_true_profits"], 100 * checks["kmeans_features_k5_share_true_profits"])
    return control, full, (sample.truth, s_control, s_full, true_cand)


def training_record(model, cfg: DictConfig, run_dir: Optional[Path], tracker: Tracker) -> dict:
    """Curves and scalars of the (first) trained network: results.json's "model" block (the curves'
    figure into ``run_dir``, unless None)."""
    first = _first(model)
    history = getattr(first, "history_", None)
    for rec in history or []:
        tracker.log({f"train/{k}": v for k, v in rec.items()})
    if history and run_dir is not None:
        try:  # training curves next to results.json; a plotting problem never fails the run
            from coarse_gpu.models.history import plot_history  # here: matplotlib loads only to draw curves

            n_fold = n_fold_models(model)
            where = f", fold model 1 of {n_fold}" if n_fold else ""
            chose = getattr(model, "selected_", None)
            plot_history(history, run_dir / "training_curves.png",
                         title=f"{type(first).__name__} training{where}\n(model={cfg.model.name}"
                               f"{f', which chose {chose}' if chose else ''})",
                         best_epoch=getattr(first, "best_epoch_", None))
        except Exception as err:  # pragma: no cover - matplotlib backends
            log.warning("training curves not plotted: %s", err)
    return {"name": cfg.model.name, "selected": getattr(model, "selected_", cfg.model.name),
            "n_fold_models": n_fold_models(model),
            "best_epoch": getattr(first, "best_epoch_", None), "best_val_loss": getattr(first, "best_val_loss_", None),
            "resumed_from_epoch": getattr(first, "resumed_from_epoch_", 0)}


def n_fold_models(model) -> Optional[int]:
    """How many fold models the cross-fitted ensemble (or model=auto's winner) holds; None for one model."""
    inner = getattr(model, "model_", model)  # AutoCATE: its winner (a CrossFitted or a Blend of them)
    for m in [inner] + list(getattr(inner, "members_", [])):
        if isinstance(m, CrossFitted):
            return len(m.members())
    return None


def references(evaluator: Evaluator, est: ProfitEstimates, profit, candidates: np.ndarray,
                data: ExperimentData, results: dict) -> dict:
    """Full personalization and no treatment, estimated and (simulators) true; the model's accuracy."""
    test, space = evaluator.test, evaluator.test.space
    full_est = full_personalization(profit, candidates)
    results["ideal_treatments"] = ideal_treatment_histogram(full_est.treatments[full_est.assignment], candidates,
                                                            space)
    evaluator.est_full = float(full_est.info["estimated_value"])
    evaluator.est_control = float(est.profit_at(np.asarray(space.control, dtype=float)[None, :]).mean())
    if test.truth is None:
        # No true profits: the oracle fields stay null; DR values of the two reference policies
        # (everyone at the control point, each customer's estimated best candidate) stand in.
        control_idx = int(np.argmin(np.abs(candidates - np.asarray(space.control)).sum(1)))
        ctrl = Policy("control", candidates[[control_idx]], np.zeros(len(test), dtype=np.int64))
        (evaluator.dr_control, ci_c), (evaluator.dr_full, ci_f) = evaluator.dr(ctrl), evaluator.dr(full_est)
        results["full_personalization"] = {
            "oracle_profit": None, "control_oracle_profit": None, "estimated_policy_oracle_profit": None,
            "estimated_policy_share_of_full": None, "dr_value": evaluator.dr_full, "dr_ci": list(ci_f),
            "control_treatment": candidates[control_idx].tolist(), "control_dr_value": evaluator.dr_control,
            "control_dr_ci": list(ci_c)}
        return {"rmse_profit_grid": None}
    value = oracle_value(test.truth, full_est)
    results["full_personalization"] = {
        "oracle_profit": evaluator.full, "control_oracle_profit": evaluator.control,
        "estimated_policy_oracle_profit": value,
        "estimated_policy_share_of_full": share_of_full(value, evaluator.control, evaluator.full)}
    grid_pts = space.grid([11, 9]) if space.dim == 2 else candidates
    sq_err = _squared_errors(est, test.truth, grid_pts)
    on_arm = np.isclose(grid_pts[:, None, :], np.asarray(data.arms)[None, :, :]).all(2).any(1)
    return {"rmse_profit_grid": float(np.sqrt(np.mean(sq_err))),
            "rmse_profit_arms": float(np.sqrt(np.mean(sq_err[on_arm]))) if on_arm.any() else None,
            "rmse_profit_off_arms": float(np.sqrt(np.mean(sq_err[~on_arm]))) if (~on_arm).any() else None}


def _squared_errors(est: ProfitEstimates, truth, points: np.ndarray, block: int = 65_536) -> np.ndarray:
    """(G,) mean over the customers of (estimated - true profit)^2 at each of the points (G, d).

    The per-arm models' estimates are formed in row blocks (mu_arms[rows] @ W.T), so no N x G matrix
    exists at millions of customers; the dose-response models evaluate all rows at once."""
    n = est.mu_arms.shape[0]
    if est.weights is None:
        return ((est.profit_at(points) - truth.profit(points)) ** 2).mean(0)
    W = np.asarray(est.weights(points), dtype=np.float64)
    total = np.zeros(len(points))
    for lo in range(0, n, block):
        rows = np.arange(lo, min(n, lo + block))
        total += ((est.mu_arms[rows] @ W.T - truth.profit(points, rows)) ** 2).sum(0)
    return total / n


def score_k(evaluator: Evaluator, policies: dict, k: int) -> tuple[dict, dict]:
    """Every method's cell at K and the paired comparisons ``ot`` minus each baseline (one bootstrap)."""
    names = list(policies)
    mu = [evaluator.mu_policy(policies[m]) for m in names]
    S = np.column_stack([evaluator.scores(policies[m], mu[j]) for j, m in enumerate(names)])
    draws = evaluator.boot.means(S) if evaluator.boot is not None else None
    cells, comparisons = {}, {}
    space = evaluator.test.space
    for j, m in enumerate(names):
        cells[m] = {"treatments": np.asarray(policies[m].treatments, dtype=float).tolist(),
                    # the same in the user's values: labels for categorical dimensions, ints for discrete ones
                    "treatments_labelled": space.to_user(policies[m].treatments),
                    # a treatment combining discrete / categorical values no customer received together
                    "extrapolated": bool(unseen_mask(policies[m].treatments, evaluator.test.arms,
                                                     space.fixed_dims).any()),
                    # the run's metrics (evaluation.metrics; coarse_gpu.evaluate.metrics): oracle_profit,
                    # share_of_full, dr_value, dr_ci, dr_share_of_full, expected_*, segment_sizes, effective_k
                    **evaluator.metrics(policies[m], S[:, j], None if draws is None else draws[:, j], mu[j])}
    if "ot" in names:
        o = names.index("ot")
        for j, m in enumerate(names):
            if m == "ot":
                continue
            diff = S[:, o] - S[:, j]
            ci = percentile_ci(draws[:, o] - draws[:, j], evaluator.alpha) if draws is not None else \
                evaluator.intervals(diff[:, None])[0]
            comparisons[f"ot_minus_{m}"] = {"dr_value": float(diff.mean()), "dr_ci": list(ci)}
    return cells, comparisons


#: per-customer profit measures of a cell that the price of a constraint / of interpretability compares
PROFITS = ("oracle_profit", "expected_profit", "dr_value")


def _cost_vs(ref: dict, cell: dict) -> dict:
    """ref minus cell for each per-customer profit measure (None where either lacks it)."""
    return {m: (ref[m] - cell[m]) if ref.get(m) is not None and cell.get(m) is not None else None for m in PROFITS}


def price_of_constraints(evaluator: Evaluator, policy: Policy, free: Policy, cell: dict) -> dict:
    """The constrained OT policy (``cell``) next to the unconstrained one at the same K: both per-customer
    profits, their difference ("cost"), and per constraint its value, bounds and dual multiplier, total
    ("dual": estimated profit one more unit of the bound buys) and per customer (dual / N)."""
    s = evaluator.scores(free)
    sc = evaluate_metrics(evaluator.evidence(free, s), ("true_profit", "expected", "segments"))
    unc = {"oracle_profit": sc["oracle_profit"], "expected_profit": sc["expected_profit"],
           "dr_value": float(s.mean()), "share_of_full": sc["share_of_full"],
           "treatments": np.asarray(free.treatments).tolist(), "segment_sizes": sc["segment_sizes"],
           "effective_k": sc["effective_k"]}
    con = {m: cell.get(m) for m in PROFITS + ("share_of_full",)}
    rows = [{**r, "dual_per_customer": r["dual"] / policy.n} for r in policy.info["constraints"]["rows"]]
    return {"constrained": con, "unconstrained": unc, "cost": _cost_vs(unc, con), "constraints": rows}


def _save_policies(run_dir: Path, policies: dict, cells: dict, model, data, ctx, k: int) -> None:
    from coarse_gpu.policy.io import deployable, save_policy  # here: the policy writers load only to save policies

    for m, policy in policies.items():
        try:
            dep = deployable(policy, model, data, ctx.candidates, metrics=cells[m])
        except NotImplementedError as why:  # no rule to assign new customers with
            log.warning("policy of %s at K=%d not saved: %s", m, k, why)
            cells[m]["policy_path"] = None
        else:
            folder = save_policy(run_dir / "policies" / f"{m}_k{k}", dep)
            cells[m]["policy_path"] = str(folder.relative_to(run_dir))


@dataclasses.dataclass
class JobState:
    """What the steps after training share, in one object instead of long argument lists.

    cfg : the job's config (discretizer, evaluation, save_policies); results / timings : results.json's dict
    and its ``timings_s`` block, filled in place; tracker : the experiment tracker (disabled: a no-op);
    run_dir : where saved policies and figures go, None for none (the Python API without a folder);
    model, data, ctx, evaluator : the fitted step 1, the experiment, the methods' context, the evaluator.
    """

    cfg: DictConfig
    results: dict
    timings: dict
    tracker: Tracker
    run_dir: Optional[Path]
    model: object = None
    data: Optional[ExperimentData] = None
    ctx: Optional[MethodContext] = None
    evaluator: Optional[Evaluator] = None


def run_k(k: int, methods: list[str], state: JobState) -> None:
    """Step 2 and the evaluation at one K: every method's policy, scored, saved (when the state has a
    run folder and ``save_policies`` is on), logged; into ``state.results``."""
    ctx, evaluator, model, cfg = state.ctx, state.evaluator, state.model, state.cfg
    results, timings, tracker = state.results, state.timings, state.tracker
    policies, extras = {}, {}
    for method in methods:
        t0 = time.perf_counter()
        with stage(timings, "discretize" if method == "ot" else "baselines", ctx.device):
            out = method_policy(method, k, ctx)
        by_method = timings.setdefault("methods", {})
        by_method[method] = by_method.get(method, 0.0) + time.perf_counter() - t0
        if out is not None:
            policies[method], extras[method] = out
    with stage(timings, "evaluate"):
        cells, comparisons = score_k(evaluator, policies, k)
        if extras.get("ot", {}).get("unconstrained") is not None:
            price = price_of_constraints(evaluator, policies["ot"], extras["ot"]["unconstrained"], cells["ot"])
            cells["ot"]["price_of_constraints"] = price
            results.setdefault("price_of_constraints", {})[str(k)] = price
        if "ot_tree" in policies:
            cells["ot_tree"]["rules"] = policies["ot_tree"].info["rules"]
            if "ot" in cells:
                cells["ot_tree"]["cost_vs_ot"] = _cost_vs(cells["ot"], cells["ot_tree"])
    if "ot" in policies:
        with stage(timings, "ensemble_spread"):
            cells["ot"]["ensemble_spread"] = ensemble_spread(model, ctx, policies["ot"], k)
    if cfg.get("save_policies", True) and state.run_dir is not None:
        with stage(timings, "save_policies"):
            _save_policies(state.run_dir, policies, cells, model, state.data, ctx, k)
    for m, cell in cells.items():
        results["methods"][m][str(k)] = cell
        tracker.log({f"{m}/share_of_full": cell["share_of_full"], f"{m}/dr_value": cell["dr_value"], "K": k})
    results.setdefault("comparisons", {})[str(k)] = comparisons
    if extras.get("ot", {}).get("trace"):
        tracker.log_trace(f"ot_trace_k{k}", extras["ot"]["trace"])
