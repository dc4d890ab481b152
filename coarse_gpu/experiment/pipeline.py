"""The main job: data -> personalize (CATE model) -> discretize (OT + baselines) -> evaluate -> report.

``run_experiment(cfg, run_dir)`` is what ``coarse-gpu`` calls; it is plain Python on an OmegaConf
config, so tests and notebooks can call it without Hydra's command line.
"""
from __future__ import annotations

import logging
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
from coarse_gpu.experiment.report import write_results
from coarse_gpu.experiment.tracking import Tracker
from coarse_gpu.models import DragonNet, TARNet
from coarse_gpu.policy import (
    Policy,
    full_personalization,
    grid_search,
    kmeans_features,
    kmeans_preferences,
    single_best,
)
from coarse_gpu.utils import environment_record, resolve_device, seed_everything

log = logging.getLogger("coarse_gpu")

METHODS = ("ot", "kmeans_features", "kmeans_preferences", "grid", "single_best")
MODELS = {"tarnet": TARNet, "dragonnet": DragonNet}


def progress_enabled(cfg: DictConfig) -> bool:
    return not (cfg.get("quiet", False) or os.environ.get("CI"))


def build_data(data_cfg: DictConfig, seed: int) -> ExperimentData:
    """The experiment named by ``data.name`` (the built-in simulator for now)."""
    if data_cfg.name != "promotions":
        raise ValueError(f"data.name={data_cfg.name!r} is not a known data source; available: promotions")
    sim = PromotionsSimulator(
        n_customers=data_cfg.n_customers,
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


def build_model(model_cfg: DictConfig, device: torch.device, seed: int, verbose: bool):
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
    if model_cfg.name == "dragonnet":
        kwargs.update(alpha=model_cfg.alpha, beta=model_cfg.beta)
    return MODELS[model_cfg.name](**kwargs)


@dataclass
class Scored:
    """One policy's evaluation on the held-out customers (per-customer profits, currency units)."""

    oracle_profit: float
    share_of_full: float
    dr_value: float
    dr_ci: tuple[float, float]


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
        # Both are properties of the held-out customers' true profits only; reuse them when given.
        self.control = control if control is not None else oracle_control_value(test.truth, test.space)
        self.full, self.full_treatments = full if full is not None else oracle_full_personalization(
            test.truth, test.space)

    def score(self, policy: Policy) -> Scored:
        value = oracle_value(self.test.truth, policy)
        rows = np.arange(len(self.test))
        mu_policy = self.model.predict_profit(self.test.X, policy.treatments)[rows, policy.assignment]
        kappa = self.model.grid_.weights(policy.treatments, "linear")[policy.assignment]
        scores = dr_scores(
            self.test.outcome, self.test.arm, self.test.propensity, self.mu_arms, mu_policy, kappa
        )
        dr = dr_value(scores, n_boot=self.n_boot, alpha=self.alpha, seed=self.seed)
        return Scored(value, share_of_full(value, self.control, self.full), dr.value, tuple(dr.ci))


def model_profit_oracle(model, X: np.ndarray, mu_arms: np.ndarray, device: torch.device) -> Callable:
    """pi_hat_i(t) for any T x d treatments as an N x T tensor, reusing the per-arm predictions.

    The arm-interpolating models are linear in their per-arm outputs, so a new treatment costs one
    (N x A) @ (A x T) product instead of a forward pass.
    """
    mu = torch.as_tensor(mu_arms, device=device)
    interpolation = model.interpolation

    def oracle(treatments) -> torch.Tensor:
        t = treatments.detach().cpu().numpy() if isinstance(treatments, torch.Tensor) else np.asarray(treatments)
        w = torch.as_tensor(model.grid_.weights(np.atleast_2d(t), interpolation), device=device, dtype=mu.dtype)
        return mu @ w.T

    return oracle


def ot_policy(profit: np.ndarray, candidates: np.ndarray, k: int, cfg: DictConfig, oracle, space,
              device: torch.device, seed: int) -> tuple[Policy, dict]:
    d = cfg.discretizer
    options = dict(solver=d.solver, n_restarts=d.n_restarts, dtype=d.dtype)
    if d.refine:
        options.update(refine_oracle=oracle, bounds=(np.asarray(space.low), np.asarray(space.high)))
    res = discretize(
        profit, k, candidates=candidates, min_share=d.min_share, max_share=d.max_share,
        epsilon=d.epsilon, device=str(device), seed=seed, **options,
    )
    info = {"solver": res.solver, "epsilon": res.epsilon, "estimated_objective": res.objective,
            "entropic_objective": res.entropic_objective, "n_trace": len(res.trace)}
    return Policy("ot", res.treatments, res.assignment, info), {"trace": res.trace}


def run_experiment(cfg: DictConfig, run_dir: str | Path, tracker: Optional[Tracker] = None) -> dict:
    """Run the whole job and write its outputs into ``run_dir``. Returns the results dict."""
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
    data = build_data(cfg.data, seed)
    train, test = data.split((1.0 - cfg.data.eval_fraction, cfg.data.eval_fraction), seed=seed)
    space = data.space
    candidates = space.grid(list(cfg.data.candidate_points))
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
        true_cand = test.truth.profit(candidates)
        control = oracle_control_value(test.truth, space)
        full_true, full_true_treatments = oracle_full_personalization(test.truth, space)
        one = single_best(true_cand, candidates)
        seg = kmeans_features(test.X, true_cand, candidates, min(5, len(test)), seed=seed)
        checks = {
            "single_best_share_true_profits": share_of_full(oracle_value(test.truth, one), control, full_true),
            "kmeans_features_k5_share_true_profits": share_of_full(oracle_value(test.truth, seg), control, full_true),
        }
        del true_cand
        results["simulator_checks"] = checks
        timings["simulator_checks"] = time.perf_counter() - t0
        log.info("simulator check (true profits): one treatment for all keeps %.1f%%, k-means on covariates K=5 keeps "
                 "%.1f%% of full personalization's incremental profit",
                 100 * checks["single_best_share_true_profits"], 100 * checks["kmeans_features_k5_share_true_profits"])

        # ---- step 1: personalize ------------------------------------------------------------------
        t0 = time.perf_counter()
        model = build_model(cfg.model, device, seed, verbose)
        model.fit(train.X, train.treatment, train.outcome, propensity=train.propensity)
        timings["train"] = time.perf_counter() - t0
        for rec in getattr(model, "history_", []):
            tracker.log({f"train/{k}": v for k, v in rec.items()})

        t0 = time.perf_counter()
        evaluator = Evaluator(test, model, cfg.evaluation.n_boot, cfg.evaluation.ci_level, seed,
                              control=control, full=(full_true, full_true_treatments))
        profit_hat = model.predict_profit(test.X, candidates)
        oracle = model_profit_oracle(model, test.X, evaluator.mu_arms, device)
        grid_pts = space.grid([11, 9])
        rmse = float(np.sqrt(np.mean((model.predict_profit(test.X, grid_pts) - test.truth.profit(grid_pts)) ** 2)))
        timings["predict"] = time.perf_counter() - t0
        results["model"] = {"name": cfg.model.name, "best_epoch": getattr(model, "best_epoch_", None),
                            "rmse_profit_grid": rmse}
        full_est = full_personalization(profit_hat, candidates)
        results["full_personalization"] = {
            "oracle_profit": evaluator.full,
            "control_oracle_profit": evaluator.control,
            "estimated_policy_oracle_profit": oracle_value(test.truth, full_est),
            "estimated_policy_share_of_full": share_of_full(oracle_value(test.truth, full_est), evaluator.control,
                                                            evaluator.full),
        }
        log.info("model %s: RMSE of estimated vs true profit on an 11x9 grid = %.3f (train %.1fs)",
                 cfg.model.name, rmse, timings["train"])

        # ---- step 2: discretize, with the baselines, for every K -------------------------------------
        timings["discretize"] = 0.0
        timings["baselines"] = 0.0
        timings["evaluate"] = 0.0
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
                    policy, extra = ot_policy(profit_hat, candidates, k, cfg, oracle, space, device, seed)
                    timings["discretize"] += time.perf_counter() - t0
                else:
                    if method == "kmeans_features":
                        policy = kmeans_features(test.X, profit_hat, candidates, k, seed=seed)
                    elif method == "kmeans_preferences":
                        policy = kmeans_preferences(profit_hat, candidates, k, seed=seed, scale=space.span)
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
                    "dr_share_of_full": share_of_full(s.dr_value, evaluator.control, evaluator.full),
                    "segment_sizes": np.asarray(policy.segment_sizes).astype(int).tolist(),
                }
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

    results["status"] = "complete"
    timings["total"] = time.perf_counter() - t_start
    write_results(out_path, results)
    return results
