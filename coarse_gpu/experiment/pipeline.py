"""The main job: data -> personalize (CATE model) -> discretize (OT + baselines) -> evaluate -> report.

``run_experiment(cfg, run_dir)`` is what ``coarse-gpu`` calls; it is plain Python on an OmegaConf
config, so tests and notebooks can call it without Hydra's command line. It only wires the steps:
``prepare_data`` (coarse_gpu.experiment.loading: the data and who is scored), ``personalize`` (coarse_gpu.experiment.personalize: the
cross-fitted model and the scored customers' held-out estimates), ``_references`` (no treatment and
full personalization), then per K ``method_policy`` (coarse_gpu.experiment.methods: the OT
discretizer and the baselines) and ``_score_k`` (coarse_gpu.experiment.evaluation: true profits
and doubly robust values with paired intervals).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from coarse_gpu.data import ExperimentData
from coarse_gpu.evaluate import oracle_control_value, oracle_value, share_of_full
from coarse_gpu.evaluate.bootstrap import percentile_ci
from coarse_gpu.evaluate.choose_k import choose_k
from coarse_gpu.evaluate.metrics import DEFAULT_JOB_METRICS, evaluate_metrics
from coarse_gpu.evaluate.oracle import oracle_best_treatments, oracle_ceiling
from coarse_gpu.experiment.distributed import results_record
from coarse_gpu.experiment.dose import is_continuous_dose, results_note
from coarse_gpu.experiment.estimates import ProfitEstimates, _first
from coarse_gpu.experiment.evaluation import Evaluator, oracle_points
from coarse_gpu.experiment.kinds import (
    allow_unseen,
    unseen_mask,
    unseen_record,
    with_unseen_weights,
)

# the data step moved to loading.py; its public names stay importable from here (tests, api, experiments/)
from coarse_gpu.experiment.loading import (  # noqa: F401
    DATA_SOURCES,
    SIMULATED,
    _check_mip_size,
    build_data,
    candidate_treatments,
    check_k_values,
    discrete_dims,
    prepare_data,
)
from coarse_gpu.experiment.methods import METHODS, MethodContext, ensemble_spread, method_policy
from coarse_gpu.experiment.personalize import personalize
from coarse_gpu.experiment.report import write_results
from coarse_gpu.experiment.stages import stage
from coarse_gpu.experiment.tracking import Tracker
from coarse_gpu.experiment.validate import validate_config
from coarse_gpu.models import CrossFitted
from coarse_gpu.policy import Policy, ProfitView, full_personalization, kmeans_features, single_best
from coarse_gpu.utils import environment_record, resolve_device, seed_everything
from coarse_gpu.utils.plugins import load_plugins

log = logging.getLogger("coarse_gpu")


def progress_enabled(cfg: DictConfig) -> bool:
    return not (cfg.get("quiet", False) or os.environ.get("CI"))


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


def _simulator_checks(scored: ExperimentData, candidates: np.ndarray, seed: int, results: dict):
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


def _training_record(model, cfg: DictConfig, run_dir: Path, tracker: Tracker) -> dict:
    """Curves and scalars of the (first) trained network: results.json's "model" block."""
    first = _first(model)
    history = getattr(first, "history_", None)
    for rec in history or []:
        tracker.log({f"train/{k}": v for k, v in rec.items()})
    if history:
        try:  # training curves next to results.json; a plotting problem never fails the run
            from coarse_gpu.models.history import plot_history  # here: matplotlib loads only to draw curves

            n_fold = _n_fold_models(model)
            where = f", fold model 1 of {n_fold}" if n_fold else ""
            chose = getattr(model, "selected_", None)
            plot_history(history, run_dir / "training_curves.png",
                         title=f"{type(first).__name__} training{where}\n(model={cfg.model.name}"
                               f"{f', which chose {chose}' if chose else ''})",
                         best_epoch=getattr(first, "best_epoch_", None))
        except Exception as err:  # pragma: no cover - matplotlib backends
            log.warning("training curves not plotted: %s", err)
    return {"name": cfg.model.name, "selected": getattr(model, "selected_", cfg.model.name),
            "n_fold_models": _n_fold_models(model),
            "best_epoch": getattr(first, "best_epoch_", None), "best_val_loss": getattr(first, "best_val_loss_", None),
            "resumed_from_epoch": getattr(first, "resumed_from_epoch_", 0)}


def _n_fold_models(model) -> Optional[int]:
    """How many fold models the cross-fitted ensemble (or model=auto's winner) holds; None for one model."""
    inner = getattr(model, "model_", model)  # AutoCATE: its winner (a CrossFitted or a Blend of them)
    for m in [inner] + list(getattr(inner, "members_", [])):
        if isinstance(m, CrossFitted):
            return len(m.members())
    return None


def _references(evaluator: Evaluator, est: ProfitEstimates, profit, candidates: np.ndarray,
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


def _score_k(evaluator: Evaluator, policies: dict, k: int) -> tuple[dict, dict]:
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


def _price_of_constraints(evaluator: Evaluator, policy: Policy, free: Policy, cell: dict) -> dict:
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


def _run_k(k: int, methods: list[str], ctx: MethodContext, evaluator: Evaluator, model, data, cfg: DictConfig,
           run_dir: Path, results: dict, timings: dict, tracker: Tracker) -> None:
    """Step 2 and the evaluation at one K: every method's policy, scored, saved, logged."""
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
        cells, comparisons = _score_k(evaluator, policies, k)
        if extras.get("ot", {}).get("unconstrained") is not None:
            price = _price_of_constraints(evaluator, policies["ot"], extras["ot"]["unconstrained"], cells["ot"])
            cells["ot"]["price_of_constraints"] = price
            results.setdefault("price_of_constraints", {})[str(k)] = price
        if "ot_tree" in policies:
            cells["ot_tree"]["rules"] = policies["ot_tree"].info["rules"]
            if "ot" in cells:
                cells["ot_tree"]["cost_vs_ot"] = _cost_vs(cells["ot"], cells["ot_tree"])
    if "ot" in policies:
        with stage(timings, "ensemble_spread"):
            cells["ot"]["ensemble_spread"] = ensemble_spread(model, ctx, policies["ot"], k)
    if cfg.get("save_policies", True):
        with stage(timings, "save_policies"):
            _save_policies(run_dir, policies, cells, model, data, ctx, k)
    for m, cell in cells.items():
        results["methods"][m][str(k)] = cell
        tracker.log({f"{m}/share_of_full": cell["share_of_full"], f"{m}/dr_value": cell["dr_value"], "K": k})
    results.setdefault("comparisons", {})[str(k)] = comparisons
    if extras.get("ot", {}).get("trace"):
        tracker.log_trace(f"ot_trace_k{k}", extras["ot"]["trace"])


def _run_settings(cfg: DictConfig) -> tuple[list[int], list[str]]:
    """(the K to evaluate: ``discretizer.k`` if set, else ``evaluation.k_values``; the methods), checked."""
    k_values = [int(cfg.discretizer.k)] if cfg.discretizer.k is not None else [int(k) for k in cfg.evaluation.k_values]
    methods = list(cfg.evaluation.methods)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"evaluation.methods has unknown method(s) {unknown}; available: {list(METHODS)}")
    if not k_values or any(k < 1 for k in k_values):
        raise ValueError(f"evaluation.k_values must hold at least one K >= 1, got {k_values}")
    return k_values, methods


def run_experiment(cfg: DictConfig, run_dir: str | Path, tracker: Optional[Tracker] = None) -> dict:
    """Run the whole job and write its outputs into ``run_dir``. Returns the results dict."""
    load_plugins(cfg.get("plugins") or ())  # the user's registrations (a metric): the checks below know them
    validate_config(cfg)  # every value and cross-field rule, naming the key, before anything is written
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings: dict[str, float] = {"discretize": 0.0, "baselines": 0.0, "evaluate": 0.0}
    seed = int(cfg.seed)
    seed_everything(seed)
    device = resolve_device(cfg.device)
    verbose = progress_enabled(cfg)
    tracker = tracker or Tracker.disabled()
    k_values, methods = _run_settings(cfg)
    with stage(timings, "data"):
        data, train, scored, candidates = prepare_data(cfg, seed, k_values, {})
    note = results_note(methods) if is_continuous_dose(data) else None
    if note:  # the arms-based baseline has nothing to search over
        methods = [m for m in methods if m != "grid"]
        log.warning(note)
    results = _skeleton(cfg, seed, data, train, scored, k_values, methods, timings, device)
    if note:
        results["warnings"].append(note)
    results["unseen_combinations"] = unseen_record(data, candidates, allow_unseen(data, cfg.data))
    out_path = run_dir / "results.json"
    try:
        with stage(timings, "simulator_checks"):
            control, full, ceiling_input = _simulator_checks(scored, candidates, seed, results)
        if control is not None and cfg.evaluation.get("true_ceiling", True):
            truth, s_control, s_full, true_cand = ceiling_input
            with stage(timings, "true_ceiling"):
                results["true_profit_ceiling"] = oracle_ceiling(truth, scored.space, candidates, k_values, s_control,
                                                                s_full, profit=true_cand, seed=seed,
                                                                device=str(device))
        del ceiling_input  # (n, M) true profits: not kept through training
        # distributed=true: ranks > 0 make this same call (experiment/followers.py follow); keep them in step
        with stage(timings, "train", device):
            model, est, selection = personalize(cfg.model, train, scored, train is scored, device, seed, verbose,
                                                checkpoint_dir=run_dir / "checkpoints")
        if unseen_mask(candidates, data.arms, data.space.fixed_dims).any():
            est = with_unseen_weights(est, data)  # no customer received those: no residual to correct
        results["model_selection"] = selection
        results["model"] = _training_record(model, cfg, run_dir, tracker)
        with stage(timings, "predict", device):
            evaluator = Evaluator(scored, est, cfg.evaluation.n_boot, cfg.evaluation.ci_level, seed, control, full,
                                  metrics=list(cfg.evaluation.get("metrics") or DEFAULT_JOB_METRICS))
            results.update(evaluator.extra_metrics())  # the metrics beyond the built-ins, for the report
            profit = est.at_candidates(candidates)  # dense, or factored at millions of customers
            view = ProfitView(profit)  # its row maxima serve the references and the baselines (computed once)
            results["model"].update(_references(evaluator, est, view, candidates, data, results))
            if evaluator.dose is not None:
                results["continuous_dose"] = evaluator.dose.record()
        log.info("model %s (%s) trained in %.1fs%s", cfg.model.name, results["model"]["selected"], timings["train"],
                 "" if results["model"]["rmse_profit_grid"] is None
                 else f"; RMSE of estimated vs true profit = {results['model']['rmse_profit_grid']:.3f}")
        arms = np.asarray(data.arms if is_continuous_dose(data) else model.arms_)
        ctx = MethodContext(scored, est, profit, candidates, arms, cfg, device, seed,
                            cache={"profit_view": view})
        for k in tqdm(k_values, desc="K", disable=not verbose):
            _run_k(k, methods, ctx, evaluator, model, data, cfg, run_dir, results, timings, tracker)
            timings["total"] = time.perf_counter() - t_start
            write_results(out_path, results)  # after every K: a killed run keeps what it finished
    except BaseException as err:
        # Keep everything finished so far (earlier K are already in results.json) and say why it stopped.
        results["status"] = "failed" if not isinstance(err, KeyboardInterrupt) else "interrupted"
        results["error"] = f"{type(err).__name__}: {err}"
        timings["total"] = time.perf_counter() - t_start
        write_results(out_path, results)
        raise
    results["choose_k"] = _choose_k(cfg, results)
    results["status"] = "complete"
    timings["total"] = time.perf_counter() - t_start
    write_results(out_path, results)
    return results


def _skeleton(cfg, seed, data, train, scored, k_values, methods, timings, device) -> dict:
    env = environment_record(device)
    return {
        "config": OmegaConf.to_container(cfg, resolve=True), "status": "running", "seed": seed,
        "n_customers": len(data), "n_train": len(train), "n_eval": len(scored),
        "estimates": "out-of-fold" if train is scored else "held-out",
        "k_values": k_values, "treatment_names": list(data.space.names), "arms": np.asarray(data.arms).tolist(),
        # per dimension {name, kind, labels}: a categorical dimension's treatments are codes into its labels
        "treatment_kinds": data.space.describe(), "arms_labelled": data.space.to_user(data.arms),
        "full_personalization": {}, "methods": {m: {} for m in methods}, "timings_s": timings,
        "warnings": list(data.meta.get("warnings", [])),
        # the declared profit structure (null without one): the accounting the two-part learners used
        "profit_structure": ({"accounting": data.accounting.to_dict(), "response_rate": float(np.mean(data.response > 0))}
                             if data.structured else None),
        "device": env["device"], "versions": env["versions"], "environment": env,
        **results_record(cfg),  # distributed=true: {"distributed": {world_size, backend, launcher}}
    }


def _choose_k(cfg: DictConfig, results: dict) -> dict:
    cost = float(cfg.evaluation.get("fixed_cost_per_treatment", 0.0) or 0.0)
    ot_cells = results["methods"].get("ot", {})
    return {"method": "ot", "fixed_cost_per_treatment": cost,
            "by_dr_value": choose_k({int(k): c.get("dr_value") for k, c in ot_cells.items()}, cost),
            "by_oracle_profit": choose_k({int(k): c.get("oracle_profit") for k, c in ot_cells.items()}, cost)}
