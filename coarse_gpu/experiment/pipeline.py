"""The main job: data -> personalize (CATE model) -> discretize (OT + baselines) -> evaluate -> report.

``run_experiment(cfg, run_dir)`` is what ``coarse-gpu`` calls; it is plain Python on an OmegaConf
config, so tests and notebooks can call it without Hydra's command line.
"""
from __future__ import annotations

import inspect
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from coarse_gpu.data import ExperimentData, PromotionsSimulator
from coarse_gpu.discretize import discretize
from coarse_gpu.evaluate import (
    dr_scores,
    dr_value,
    oracle_control_value,
    oracle_full_personalization,
    oracle_value,
    share_of_full,
)
from coarse_gpu.evaluate.choose_k import choose_k
from coarse_gpu.experiment.report import write_results
from coarse_gpu.experiment.tracking import Tracker
from coarse_gpu.experiment.validate import validate_config
from coarse_gpu.models import DoseLogit, DoseVC, DragonNet, TARNet
from coarse_gpu.policy import (
    Policy,
    full_personalization,
    grid_search,
    kmeans_features,
    kmeans_preferences,
    kmeans_profiles,
    single_best,
)
from coarse_gpu.policy.tree import policy_tree
from coarse_gpu.utils import environment_record, resolve_device, seed_everything

log = logging.getLogger("coarse_gpu")

METHODS = ("ot", "kmeans_features", "kmeans_preferences", "kmeans_profiles", "policy_tree", "grid", "single_best")
MODELS = {"tarnet": TARNet, "dragonnet": DragonNet, "dose_logit": DoseLogit, "dose_vc": DoseVC}


def progress_enabled(cfg: DictConfig) -> bool:
    return not (cfg.get("quiet", False) or os.environ.get("CI"))


DATA_SOURCES = ("promotions", "file", "thornton", "ihdp")


def build_data(data_cfg: DictConfig, seed: int, scale: float = 1.0) -> ExperimentData:
    """The experiment named by ``data.name``: the simulator, a CSV/Parquet file, or a built-in real dataset.

    ``scale`` (the top-level ``scale=`` key) multiplies the simulator's ``data.n_customers``: one switch
    to take an experiment from the 2-CPU size to a GPU size (``scale=10``) without editing its config.
    Real data has the size it has, so any other value there is an error.
    """
    if data_cfg.name not in DATA_SOURCES:
        raise ValueError(f"data.name={data_cfg.name!r} is not a known data source; available: {list(DATA_SOURCES)}")
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale={scale!r} must be a positive number (it multiplies data.n_customers)")
    if scale != 1.0 and data_cfg.name != "promotions":
        raise ValueError(f"scale={scale} only applies to simulated data (data=promotions); data={data_cfg.name} "
                         "has a fixed number of customers: leave scale=1")
    if data_cfg.name == "file":
        from coarse_gpu.data.file import DataSchemaError, FileSpec, load_experiment

        if not data_cfg.get("path"):
            raise DataSchemaError(["data.path is not set: pass data.path=<your .csv or .parquet file>"], "data=file")
        return load_experiment(data_cfg.path, FileSpec.from_config(data_cfg))
    if data_cfg.name == "thornton":
        from coarse_gpu.data.real import load_thornton

        return load_thornton(data_cfg)
    if data_cfg.name == "ihdp":
        from coarse_gpu.data.real import load_ihdp

        return load_ihdp(data_cfg, seed)
    n_customers = int(round(data_cfg.n_customers * scale))
    if n_customers < 2:
        raise ValueError(f"scale={scale} x data.n_customers={data_cfg.n_customers} leaves {n_customers} customers; "
                         "need at least 2")
    sim = PromotionsSimulator(
        n_customers=n_customers,
        discount_levels=tuple(data_cfg.discount_levels),
        duration_levels=tuple(data_cfg.duration_levels),
        margin=data_cfg.margin,
        contact_cost=data_cfg.contact_cost,
        beta_max=data_cfg.beta_max,
        gamma_max=data_cfg.gamma_max,
        type_sharpness=data_cfg.type_sharpness,
        basket_sigma=data_cfg.basket_sigma,
        n_noise_features=data_cfg.n_noise_features,
        n_trips=data_cfg.n_trips,
        seed=seed,
    )
    return sim.sample()


def candidate_treatments(data: ExperimentData, data_cfg: DictConfig) -> np.ndarray:
    """(M, d) candidate treatments for the discretizer and the baselines.

    ``data.candidate_points`` set: a regular grid over the treatment box with that many points per
    dimension (the model interpolates between arms, so the arms must form a full tensor grid).
    null: the tensor grid of the arms' own coordinates (= the arms when they form a full grid).
    """
    from coarse_gpu.models.interpolate import ArmGrid

    points = data_cfg.get("candidate_points")
    try:
        grid = ArmGrid.from_arms(data.arms)
    except ValueError:
        grid = None
    if points is not None:
        points = [int(p) for p in points]
        if len(points) != data.space.dim:
            raise ValueError(f"data.candidate_points={points} needs one count per treatment dimension "
                             f"{list(data.space.names)}")
        if grid is None:
            raise ValueError(f"data.candidate_points={points}: the {data.n_arms} arms do not form a full grid, so the "
                             "model cannot interpolate between them; leave data.candidate_points=null (the arms)")
        return data.space.grid(points)
    if grid is None:
        return np.asarray(data.arms, dtype=np.float64)
    from coarse_gpu.data.treatments import product_grid

    return product_grid(grid.levels)


def check_k_values(k_values: list[int], n_candidates: int, n_customers: int) -> None:
    """Every K must be an integer in [1, min(M candidates, N held-out customers)]; the error names the fix."""
    bad = [k for k in k_values if k < 1]
    if bad:
        raise ValueError(f"every K must be >= 1, got K={bad[0]} in k_values={k_values}")
    too_many = [k for k in k_values if k > n_candidates]
    if too_many:
        raise ValueError(
            f"K={too_many[0]} exceeds the {n_candidates} distinct candidate treatments (k_values={k_values}); "
            f"use K <= {n_candidates}, e.g. evaluation.k_values=[{','.join(str(k) for k in range(1, min(n_candidates, 5) + 1))}], "
            "or a finer data.candidate_points")
    too_few = [k for k in k_values if k > n_customers]
    if too_few:
        raise ValueError(f"K={too_few[0]} exceeds the {n_customers} held-out customers (N < K): "
                         "use a smaller K or more data")


def _arm_weights(model, treatments: np.ndarray, method: str) -> np.ndarray:
    """(M, A) linear map from per-arm predictions to ``treatments`` (arms only when they are not a grid)."""
    if getattr(model, "grid_", None) is not None:
        return model.grid_.weights(np.atleast_2d(treatments), method)
    return model.treatment_weights(np.atleast_2d(treatments))


def build_model(model_cfg: DictConfig, device: torch.device, seed: int, verbose: bool,
                checkpoint_dir: Optional[str | Path] = None):
    if model_cfg.name not in MODELS:
        raise ValueError(f"model.name={model_cfg.name!r} is not a known model; available: {sorted(MODELS)}")
    kwargs = dict(
        hidden=model_cfg.hidden,
        n_repr_layers=model_cfg.n_repr_layers,
        n_head_layers=model_cfg.n_head_layers,
        dropout=model_cfg.dropout,
        lr=model_cfg.lr,
        weight_decay=model_cfg.weight_decay,
        batch_size=model_cfg.batch_size,
        max_epochs=model_cfg.max_epochs,
        patience=model_cfg.patience,
        val_fraction=model_cfg.val_fraction,
        interpolation=model_cfg.interpolation,
        arm_heads=model_cfg.arm_heads,
        head_hidden=model_cfg.head_hidden,
        ema=model_cfg.ema,
        device=str(device),
        seed=seed,
        verbose=verbose,
    )
    # Resumable / mixed-precision training, for the model classes that support it.
    accepted = inspect.signature(MODELS[model_cfg.name]).parameters
    if "amp" in accepted:
        kwargs["amp"] = model_cfg.get("amp", "auto")
    if checkpoint_dir is not None and model_cfg.get("checkpoint", True) and "checkpoint_dir" in accepted:
        kwargs["checkpoint_dir"] = str(checkpoint_dir)
    if model_cfg.name == "dragonnet":
        kwargs.update(alpha=model_cfg.alpha, beta=model_cfg.beta)
    if model_cfg.name == "dose_logit":
        tf = model_cfg.get("transforms")
        kwargs.update(transforms=list(tf) if tf is not None else "identity")
    if model_cfg.name == "dose_vc":
        nb = model_cfg.get("n_basis")
        kwargs.update(n_basis=list(nb) if nb is not None else None, degree=model_cfg.get("degree", 3),
                      knots=model_cfg.get("knots", "uniform"), smoothness=model_cfg.get("smoothness", 0.0))
    # per-arm options (interpolation, arm_heads) only for the models that take them
    kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    return MODELS[model_cfg.name](**kwargs)


@dataclass
class Scored:
    """One policy's evaluation on the held-out customers (per-customer profits, currency units)."""

    oracle_profit: float
    share_of_full: float
    dr_value: float
    dr_ci: tuple[float, float]
    # The paper's measure ("expected incremental profit"): the model's own estimates throughout, i.e.
    # (pi_hat(policy) - pi_hat(control)) / (pi_hat(each customer's estimated best) - pi_hat(control)).
    expected_profit: Optional[float] = None
    expected_share_of_full: Optional[float] = None


class Evaluator:
    """Scores policies on held-out customers: TRUE profit (simulated data) and doubly robust value.

    The DR value uses only what a real user has (randomized arms, realized profits, the model's
    predictions): for a treatment off the experimental arms, the residual correction comes from
    the surrounding arms with multilinear interpolation weights (see coarse_gpu.evaluate.dr).
    """

    def __init__(self, test: ExperimentData, model, n_boot: int, ci_level: float, seed: int,
                 control: Optional[float] = None, full: Optional[tuple[float, np.ndarray]] = None) -> None:
        self.test = test
        self.model = model
        self.n_boot = n_boot
        self.alpha = 1.0 - ci_level
        self.seed = seed
        self.mu_arms = model.predict_arms(test.X)
        self.has_truth = test.truth is not None
        # Both are properties of the held-out customers' true profits only; reuse them when given.
        # Without a simulator (your own data) they are None: policies get DR values only.
        if self.has_truth:
            self.control = control if control is not None else oracle_control_value(test.truth, test.space)
            self.full, self.full_treatments = full if full is not None else oracle_full_personalization(
                test.truth, test.space, points=oracle_points(test.space))
        else:
            self.control, self.full, self.full_treatments = None, None, None
        # Estimated (model) control and full-personalization values per customer, for the paper's
        # "expected" share; set by the pipeline once the profit matrix is predicted.
        self.est_control: Optional[float] = None
        self.est_full: Optional[float] = None

    def _mu_policy(self, policy: Policy) -> np.ndarray:
        rows = np.arange(len(self.test))
        return self.model.predict_profit(self.test.X, policy.treatments)[rows, policy.assignment]

    def dr(self, policy: Policy, mu_policy: Optional[np.ndarray] = None):
        """Doubly robust value of ``policy`` on the held-out customers (DRResult: value, ci)."""
        mu_policy = self._mu_policy(policy) if mu_policy is None else mu_policy
        kappa = _arm_weights(self.model, policy.treatments, "linear")[policy.assignment]
        scores = dr_scores(
            self.test.outcome, self.test.arm, self.test.propensity, self.mu_arms, mu_policy, kappa
        )
        return dr_value(scores, n_boot=self.n_boot, alpha=self.alpha, seed=self.seed)

    def score(self, policy: Policy) -> Scored:
        mu_policy = self._mu_policy(policy)
        dr = self.dr(policy, mu_policy)
        expected = float(mu_policy.mean())
        expected_share = None
        if self.est_control is not None and self.est_full is not None and self.est_full > self.est_control:
            expected_share = share_of_full(expected, self.est_control, self.est_full)
        if not self.has_truth:
            return Scored(None, None, dr.value, tuple(dr.ci), expected, expected_share)
        value = oracle_value(self.test.truth, policy)
        return Scored(value, share_of_full(value, self.control, self.full), dr.value, tuple(dr.ci), expected,
                      expected_share)


def _dr_share(evaluator: Evaluator, value: float) -> Optional[float]:
    """DR value as a share of full personalization's increment: true V_0 / V_full on simulated data,
    else the DR values of everyone-at-control and the estimated per-customer best (None if not larger)."""
    control, full = evaluator.control, evaluator.full
    if control is None:
        control, full = getattr(evaluator, "dr_control", None), getattr(evaluator, "dr_full", None)
    if control is None or full is None or not full > control:
        return None
    return share_of_full(value, control, full)


def oracle_points(space) -> list[int]:
    """Grid points per dimension for the oracle's full personalization (101 x 81 in 2-D)."""
    return [101, 81] if space.dim == 2 else [101] * space.dim if space.dim == 1 else [41] * space.dim


def model_profit_oracle(model, X: np.ndarray, mu_arms: np.ndarray, device: torch.device) -> Callable:
    """pi_hat_i(t) for any T x d treatments as an N x T tensor, reusing the per-arm predictions.

    The arm-interpolating models are linear in their per-arm outputs, so a new treatment costs one
    (N x A) @ (A x T) product instead of a forward pass.
    """
    mu = torch.as_tensor(mu_arms, device=device)
    interpolation = model.interpolation

    def oracle(treatments) -> torch.Tensor:
        t = treatments.detach().cpu().numpy() if isinstance(treatments, torch.Tensor) else np.asarray(treatments)
        w = torch.as_tensor(_arm_weights(model, t, interpolation), device=device, dtype=mu.dtype)
        return mu @ w.T

    return oracle


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


def warm_start(profit: np.ndarray, previous: Optional[list], k: int) -> Optional[list]:
    """Seed for K from the solution at a smaller K: its grid treatments plus, one at a time, the candidate
    with the largest profit gain over them (greedy facility location); None when there is no previous."""
    if not previous or len(previous) >= k or len(set(previous)) != len(previous):
        return None
    chosen = list(previous)
    best = profit[:, chosen].max(1)
    while len(chosen) < k:
        gain = np.maximum(profit - best[:, None], 0.0).sum(0)
        gain[chosen] = -np.inf
        m = int(gain.argmax())
        chosen.append(m)
        best = np.maximum(best, profit[:, m])
    return chosen


def ot_policy(profit: np.ndarray, candidates: np.ndarray, k: int, cfg: DictConfig, oracle, space,
              device: torch.device, seed: int, init: Optional[list] = None) -> tuple[Policy, dict]:
    """The OT discretizer's policy at K; ``init`` (K grid indices, e.g. ``warm_start``) seeds restart 0."""
    d = cfg.discretizer
    options = dict(solver=d.solver, n_restarts=d.n_restarts, dtype=d.dtype, init=init)
    if d.refine and oracle is not None:  # no oracle: the model cannot leave the arms
        options.update(refine_oracle=oracle, bounds=(np.asarray(space.low), np.asarray(space.high)))
    res = discretize(
        profit, k, candidates=candidates, min_share=d.min_share, max_share=d.max_share,
        epsilon=d.epsilon, device=str(device), seed=seed, **options,
    )
    info = {"solver": res.solver, "epsilon": res.epsilon, "estimated_objective": res.objective,
            "entropic_objective": res.entropic_objective, "n_trace": len(res.trace)}
    return Policy("ot", res.treatments, res.assignment, info), {"trace": res.trace,
                                                                 "grid_index": res.info.get("grid_index")}


def run_experiment(cfg: DictConfig, run_dir: str | Path, tracker: Optional[Tracker] = None) -> dict:
    """Run the whole job and write its outputs into ``run_dir``. Returns the results dict."""
    validate_config(cfg)  # every value and cross-field rule, naming the key, before anything is written
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    seed = int(cfg.seed)
    seed_everything(seed)
    device = resolve_device(cfg.device)
    env = environment_record(device)
    verbose = progress_enabled(cfg)
    tracker = tracker or Tracker.disabled()

    k_values = [int(cfg.discretizer.k)] if cfg.discretizer.k is not None else [int(k) for k in cfg.evaluation.k_values]
    methods = list(cfg.evaluation.methods)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"evaluation.methods has unknown method(s) {unknown}; available: {list(METHODS)}")
    if any(k < 1 for k in k_values):
        raise ValueError(f"every K must be >= 1, got k_values={k_values}")

    # ---- data -------------------------------------------------------------------------------
    t0 = time.perf_counter()
    data = build_data(cfg.data, seed, float(cfg.get("scale", 1.0)))
    train, test = data.split((1.0 - cfg.data.eval_fraction, cfg.data.eval_fraction), seed=seed)
    space = data.space
    candidates = candidate_treatments(data, cfg.data)
    check_k_values(k_values, len(candidates), len(test))
    timings["data"] = time.perf_counter() - t0
    log.info("data: %d customers (%d train, %d held out), %d arms, %d candidate treatments",
             len(data), len(train), len(test), data.n_arms, len(candidates))

    results: dict = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "status": "running",
        "seed": seed,
        "n_customers": len(data),
        "n_train": len(train),
        "n_eval": len(test),
        "k_values": k_values,
        "treatment_names": list(space.names),
        "arms": np.asarray(data.arms).tolist(),
        "full_personalization": {},
        "methods": {m: {} for m in methods},
        "timings_s": timings,
        "device": env["device"],
        "versions": env["versions"],
        "environment": env,
    }

    out_path = run_dir / "results.json"
    try:
        # ---- the simulator's own difficulty figures (true profits, no estimation) --------------------
        t0 = time.perf_counter()
        control = full_true = full_true_treatments = None
        if test.truth is not None:
            true_cand = test.truth.profit(candidates)
            control = oracle_control_value(test.truth, space)
            full_true, full_true_treatments = oracle_full_personalization(test.truth, space,
                                                                          points=oracle_points(space))
            one = single_best(true_cand, candidates)
            seg = kmeans_features(test.X, true_cand, candidates, min(5, len(test)), seed=seed)
            checks = {
                "single_best_share_true_profits": share_of_full(oracle_value(test.truth, one), control, full_true),
                "kmeans_features_k5_share_true_profits": share_of_full(oracle_value(test.truth, seg), control,
                                                                       full_true),
            }
            del true_cand
            results["simulator_checks"] = checks
            timings["simulator_checks"] = time.perf_counter() - t0
            log.info("simulator check (true profits): one treatment for all keeps %.1f%%, k-means on covariates K=5 "
                     "keeps %.1f%% of full personalization's incremental profit",
                     100 * checks["single_best_share_true_profits"], 100 * checks["kmeans_features_k5_share_true_profits"])
        else:
            log.info("no simulator behind %s: policies are scored by their doubly robust value only",
                     data.meta.get("source", cfg.data.name))

        # ---- step 1: personalize ------------------------------------------------------------------
        t0 = time.perf_counter()
        model = build_model(cfg.model, device, seed, verbose, checkpoint_dir=run_dir / "checkpoints")
        model.fit(train.X, train.treatment, train.outcome, propensity=train.propensity)
        timings["train"] = time.perf_counter() - t0
        for rec in getattr(model, "history_", []):
            tracker.log({f"train/{k}": v for k, v in rec.items()})
        if getattr(model, "history_", None):
            try:  # training curves next to results.json; a plotting problem never fails the run
                from coarse_gpu.models.history import plot_history

                plot_history(model.history_, run_dir / "training_curves.png", title=f"{cfg.model.name} training",
                             best_epoch=getattr(model, "best_epoch_", None))
            except Exception as err:  # pragma: no cover - matplotlib backends
                log.warning("training curves not plotted: %s", err)

        t0 = time.perf_counter()
        evaluator = Evaluator(test, model, cfg.evaluation.n_boot, cfg.evaluation.ci_level, seed,
                              control=control, full=(full_true, full_true_treatments))
        profit_hat = model.predict_profit(test.X, candidates)
        # Off-arm treatments need a grid of arms to interpolate on; otherwise the OT stays on the arms.
        if hasattr(model, "profit_oracle"):  # dose-response models: pi_hat at any t, on the device
            oracle = model.profit_oracle(test.X, device)
        else:
            oracle = (model_profit_oracle(model, test.X, evaluator.mu_arms, device)
                      if getattr(model, "grid_", None) is not None else None)
        full_est = full_personalization(profit_hat, candidates)
        # full_est already holds each customer's estimated best candidate and its mean estimated value
        results["ideal_treatments"] = ideal_treatment_histogram(full_est.treatments[full_est.assignment], candidates,
                                                                space)
        evaluator.est_full = float(full_est.info["estimated_value"])
        evaluator.est_control = float(model.predict_profit(test.X, np.asarray(space.control, dtype=float)[None, :])
                                      .mean())
        if test.truth is not None:
            grid_pts = space.grid([11, 9]) if space.dim == 2 else candidates
            sq_err = (model.predict_profit(test.X, grid_pts) - test.truth.profit(grid_pts)) ** 2
            rmse = float(np.sqrt(np.mean(sq_err)))
            on_arm = np.isclose(grid_pts[:, None, :], np.asarray(data.arms)[None, :, :]).all(2).any(1)
            rmse_split = {"rmse_profit_arms": float(np.sqrt(np.mean(sq_err[:, on_arm]))) if on_arm.any() else None,
                          "rmse_profit_off_arms": float(np.sqrt(np.mean(sq_err[:, ~on_arm]))) if (~on_arm).any()
                          else None}
            results["full_personalization"] = {
                "oracle_profit": evaluator.full,
                "control_oracle_profit": evaluator.control,
                "estimated_policy_oracle_profit": oracle_value(test.truth, full_est),
                "estimated_policy_share_of_full": share_of_full(oracle_value(test.truth, full_est), evaluator.control,
                                                                evaluator.full),
            }
        else:
            # No true profits: the oracle fields stay null; DR values of the two reference policies
            # (everyone at the control point, each customer's estimated best candidate) stand in.
            rmse, rmse_split = None, {}
            control_idx = int(np.argmin(np.abs(candidates - np.asarray(space.control)).sum(1)))
            ctrl = Policy("control", candidates[[control_idx]], np.zeros(len(test), dtype=np.int64))
            dr_ctrl, dr_full = evaluator.dr(ctrl), evaluator.dr(full_est)
            evaluator.dr_control, evaluator.dr_full = dr_ctrl.value, dr_full.value
            results["full_personalization"] = {
                "oracle_profit": None, "control_oracle_profit": None,
                "estimated_policy_oracle_profit": None, "estimated_policy_share_of_full": None,
                "dr_value": dr_full.value, "dr_ci": list(dr_full.ci),
                "control_treatment": candidates[control_idx].tolist(),
                "control_dr_value": dr_ctrl.value, "control_dr_ci": list(dr_ctrl.ci),
            }
        timings["predict"] = time.perf_counter() - t0
        results["model"] = {"name": cfg.model.name, "best_epoch": getattr(model, "best_epoch_", None),
                            "best_val_loss": getattr(model, "best_val_loss_", None),
                            "resumed_from_epoch": getattr(model, "resumed_from_epoch_", 0),
                            "rmse_profit_grid": rmse, **rmse_split}
        log.info("model %s trained in %.1fs%s", cfg.model.name, timings["train"],
                 "" if rmse is None else f"; RMSE of estimated vs true profit = {rmse:.3f}")

        # ---- step 2: discretize, with the baselines, for every K -------------------------------------
        timings["discretize"] = 0.0
        timings["baselines"] = 0.0
        timings["evaluate"] = 0.0
        ot_previous = None  # the ot solution at the previous K: warm start (k_values ascending)
        bar = tqdm(k_values, desc="K", disable=not verbose)
        for k in bar:
            for method in methods:
                if method == "single_best" and k != 1:
                    continue  # the K=1 bound; reported once
                if method == "grid" and k > data.n_arms:
                    log.warning("grid: K=%d exceeds the %d experimental arms; skipped", k, data.n_arms)
                    continue
                bar.set_postfix(method=method)
                t0 = time.perf_counter()
                extra: dict = {}
                if method == "ot":
                    init = warm_start(profit_hat, ot_previous, k) if cfg.discretizer.solver != "exact" else None
                    policy, extra = ot_policy(profit_hat, candidates, k, cfg, oracle, space, device, seed, init)
                    ot_previous = extra.get("grid_index")
                    timings["discretize"] += time.perf_counter() - t0
                else:
                    if method == "kmeans_features":
                        policy = kmeans_features(test.X, profit_hat, candidates, k, seed=seed)
                    elif method == "kmeans_preferences":
                        policy = kmeans_preferences(profit_hat, candidates, k, seed=seed, scale=space.span)
                    elif method == "kmeans_profiles":
                        policy = kmeans_profiles(profit_hat, candidates, k, seed=seed)
                    elif method == "policy_tree":
                        policy = policy_tree(test.X, profit_hat, candidates, k, seed=seed,
                                             feature_names=getattr(data, "feature_names", None))
                    elif method == "grid":
                        policy = grid_search(evaluator.mu_arms, model.arms_, k, seed=seed)
                    else:
                        policy = single_best(profit_hat, candidates)
                    timings["baselines"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                s = evaluator.score(policy)
                timings["evaluate"] += time.perf_counter() - t0
                results["methods"][method][str(k)] = {
                    "treatments": np.asarray(policy.treatments, dtype=float).tolist(),
                    "oracle_profit": s.oracle_profit,
                    "share_of_full": s.share_of_full,
                    "dr_value": s.dr_value,
                    "dr_ci": list(s.dr_ci),
                    "dr_share_of_full": _dr_share(evaluator, s.dr_value),
                    "expected_profit": s.expected_profit,
                    "expected_share_of_full": s.expected_share_of_full,
                    "segment_sizes": np.asarray(policy.segment_sizes).astype(int).tolist(),
                }
                if cfg.get("save_policies", True):
                    from coarse_gpu.policy.io import deployable, save_policy

                    try:
                        dep = deployable(policy, model, data, candidates, test.X, profit_hat,
                                         metrics=results["methods"][method][str(k)])
                    except NotImplementedError as why:  # no rule to assign new customers with
                        log.warning("policy of %s at K=%d not saved: %s", method, k, why)
                        results["methods"][method][str(k)]["policy_path"] = None
                    else:
                        folder = save_policy(run_dir / "policies" / f"{method}_k{k}", dep)
                        results["methods"][method][str(k)]["policy_path"] = str(folder.relative_to(run_dir))
                tracker.log({f"{method}/share_of_full": s.share_of_full, f"{method}/dr_value": s.dr_value, "K": k})
                if method == "ot" and extra.get("trace"):
                    tracker.log_trace(f"ot_trace_k{k}", extra["trace"])
            timings["total"] = time.perf_counter() - t_start
            write_results(out_path, results)  # after every K: a killed run keeps what it finished
    except BaseException as err:
        # Keep everything finished so far (earlier K are already in results.json) and say why it stopped.
        results["status"] = "failed" if not isinstance(err, KeyboardInterrupt) else "interrupted"
        results["error"] = f"{type(err).__name__}: {err}"
        timings["total"] = time.perf_counter() - t_start
        write_results(out_path, results)
        raise

    cost = float(cfg.evaluation.get("fixed_cost_per_treatment", 0.0) or 0.0)
    ot_cells = results["methods"].get("ot", {})
    results["choose_k"] = {
        "method": "ot",
        "fixed_cost_per_treatment": cost,
        "by_dr_value": choose_k({int(k): c.get("dr_value") for k, c in ot_cells.items()}, cost),
        "by_oracle_profit": choose_k({int(k): c.get("oracle_profit") for k, c in ot_cells.items()}, cost),
    }
    results["status"] = "complete"
    timings["total"] = time.perf_counter() - t_start
    write_results(out_path, results)
    return results
