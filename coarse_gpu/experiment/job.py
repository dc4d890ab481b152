"""The main job as one library object: ``CoarsePipeline(config).run(data=None, run_dir=None)``.

Both doors run it. ``coarse-gpu`` composes the config, and ``run_experiment`` (pipeline.py) checks it
and calls ``run`` with a run folder: the data comes from ``config.data``'s source (a simulator built by
``hydra.utils.instantiate``, a file, a built-in dataset). ``CoarsePersonalizer.run`` (coarse_gpu.api)
composes the same config from its arguments and calls ``run`` on the caller's arrays, with or without
a folder. So the same data, seed and options give the same results dict, policies included.

The steps, in order, each a small function of coarse_gpu.experiment.steps / loading / personalize:
``prepare`` (the split, the candidates, every check of the config against the data), the simulator's
checks and the true-profit ceiling, ``personalize`` (the cross-fitted model and the scored rows'
estimates), the references (no treatment, full personalization), then per K every method's policy,
scored, priced and saved (``steps.run_k``), and choose-K. results.json is rewritten after every K, so
a killed run keeps what it finished.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

import coarse_gpu.experiment.personalize as step_one  # called through the module: tests replace step 1 there
from coarse_gpu.data import ExperimentData
from coarse_gpu.evaluate.choose_k import choose_k
from coarse_gpu.evaluate.metrics import DEFAULT_JOB_METRICS
from coarse_gpu.evaluate.oracle import oracle_ceiling
from coarse_gpu.experiment.distributed import results_record
from coarse_gpu.experiment.dose import is_continuous_dose, results_note
from coarse_gpu.experiment.evaluation import Evaluator
from coarse_gpu.experiment.kinds import allow_unseen, unseen_mask, unseen_record, with_unseen_weights
from coarse_gpu.experiment.loading import prepare_experiment, source_data
from coarse_gpu.experiment.methods import METHODS, MethodContext
from coarse_gpu.experiment.report import write_results
from coarse_gpu.experiment.stages import stage
from coarse_gpu.experiment.steps import JobState, references, run_k, simulator_checks, training_record
from coarse_gpu.experiment.tracking import Tracker
from coarse_gpu.policy import ProfitView
from coarse_gpu.utils import environment_record, resolve_device, seed_everything

log = logging.getLogger("coarse_gpu")

__all__ = ["CoarsePipeline", "Prepared", "run_settings"]


@dataclasses.dataclass
class Prepared:
    """The data step's output: the experiment (kinds settled), its training and scored rows (the same
    object when ``data.eval_fraction=0``: all cross-fitted, scored out-of-fold) and (M, d) candidates."""

    data: ExperimentData
    train: ExperimentData
    scored: ExperimentData
    candidates: np.ndarray


def run_settings(cfg: DictConfig) -> tuple[list[int], list[str]]:
    """(the K to evaluate: ``discretizer.k`` if set, else ``evaluation.k_values``; the methods), checked."""
    k_values = [int(cfg.discretizer.k)] if cfg.discretizer.k is not None else [int(k) for k in cfg.evaluation.k_values]
    methods = list(cfg.evaluation.methods)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"evaluation.methods has unknown method(s) {unknown}; available: {list(METHODS)}")
    if not k_values or any(k < 1 for k in k_values):
        raise ValueError(f"evaluation.k_values must hold at least one K >= 1, got {k_values}")
    return k_values, methods


class CoarsePipeline:
    """The whole main job on one config (module docstring).

    config : the composed job config (configs/config.yaml's tree: data, model, discretizer, evaluation,
        seed, device, quiet, save_policies, ...), already checked (coarse_gpu.experiment.validate).
    verbose : progress bars (the CLI: on unless ``quiet`` or $CI).
    constraints : None (the config's ``discretizer.budget`` / ``group_parity``), or a function of the
        prepared data (``Prepared``) returning ``coarse_gpu.discretize.Constraint`` side constraints over
        the scored rows and the candidates (the Python API's ``constraints=``); it is called, and its
        constraints checked, right after the data step, before any training.

    After ``run``: ``prepared_`` (the data step's output) and ``state_`` (the fitted model, the methods'
    context with every K's ``ot`` policy in ``state_.ctx.cache[("ot", K)]``, the evaluator).
    """

    def __init__(self, config: DictConfig, *, verbose: bool = False, constraints=None) -> None:
        self.config = config
        self.verbose = verbose
        self.constraints = constraints

    def prepare(self, data: Optional[ExperimentData] = None, k_key: Optional[str] = None) -> Prepared:
        """The data step: ``data`` (else the config's source), split, candidates, checked against the config
        (``k_key``: the name the K check's error gives the one K, e.g. the API's ``k``)."""
        cfg, seed = self.config, int(self.config.seed)
        data = source_data(cfg, seed) if data is None else data
        return Prepared(*prepare_experiment(cfg, data, seed, run_settings(cfg)[0], k_key=k_key))

    def personalize(self, prep: Prepared, run_dir: Optional[Path] = None):
        """Step 1: (the fitted model, the scored rows' ProfitEstimates, the model-selection record).
        Checkpoints go under ``run_dir/checkpoints`` (a rerun resumes), none without a folder."""
        cfg = self.config
        ckpt = None if run_dir is None else Path(run_dir) / "checkpoints"
        model, est, selection = step_one.personalize(cfg.model, prep.train, prep.scored, prep.train is prep.scored,
                                            resolve_device(cfg.device), int(cfg.seed), self.verbose,
                                            checkpoint_dir=ckpt)
        if unseen_mask(prep.candidates, prep.data.arms, prep.data.space.fixed_dims).any():
            est = with_unseen_weights(est, prep.data)  # no customer received those: no residual to correct
        return model, est, selection

    def run(self, data: Optional[ExperimentData] = None, run_dir: Optional[Path] = None,
            tracker: Optional[Tracker] = None) -> dict:
        """Every step; returns the results dict (results.json's), written to ``run_dir`` after every K
        when a folder is given (with the saved policies and the training curves)."""
        cfg, seed = self.config, int(self.config.seed)
        run_dir = None if run_dir is None else Path(run_dir)
        t_start = time.perf_counter()
        timings: dict = {"discretize": 0.0, "baselines": 0.0, "evaluate": 0.0}
        seed_everything(seed)
        device = resolve_device(cfg.device)
        k_values, methods = run_settings(cfg)
        with stage(timings, "data"):
            prep = self.prepare(data)
            given = None if self.constraints is None else list(self.constraints(prep))
        note = results_note(methods) if is_continuous_dose(prep.data) else None
        if note:  # the arms-based baseline has nothing to search over
            methods = [m for m in methods if m != "grid"]
            log.warning(note)
        results = _skeleton(cfg, prep, k_values, methods, timings, device)
        if note:
            results["warnings"].append(note)
        results["unseen_combinations"] = unseen_record(prep.data, prep.candidates, allow_unseen(prep.data, cfg.data))
        state = JobState(cfg, results, timings, tracker or Tracker.disabled(), run_dir, data=prep.data)
        self.prepared_, self.state_ = prep, state
        out_path = None if run_dir is None else run_dir / "results.json"
        try:
            control, full = self._checks(prep, state, str(device), k_values)
            self._step_one(prep, state, control, full, device)
            self.constrain(state.ctx, given)
            for k in tqdm(k_values, desc="K", disable=not self.verbose):
                run_k(k, methods, state)
                timings["total"] = time.perf_counter() - t_start
                _write(out_path, results)  # after every K: a killed run keeps what it finished
        except BaseException as err:
            # Keep everything finished so far (earlier K are already in results.json) and say why it stopped.
            results["status"] = "failed" if not isinstance(err, KeyboardInterrupt) else "interrupted"
            results["error"] = f"{type(err).__name__}: {err}"
            timings["total"] = time.perf_counter() - t_start
            _write(out_path, results)
            raise
        results["choose_k"] = _choose_k(cfg, results)
        results["status"] = "complete"
        timings["total"] = time.perf_counter() - t_start
        _write(out_path, results)
        return results

    def _checks(self, prep: Prepared, state: JobState, device: str, k_values: list[int]):
        """The simulator's difficulty figures and the true-profit ceiling (true profits; nothing without a
        simulator). Returns (control value, (full value, full treatments)) or (None, None)."""
        cfg, seed, timings, results = self.config, int(self.config.seed), state.timings, state.results
        with stage(timings, "simulator_checks"):
            control, full, ceiling_input = simulator_checks(prep.scored, prep.candidates, seed, results)
        if control is not None and cfg.evaluation.get("true_ceiling", True):
            truth, s_control, s_full, true_cand = ceiling_input
            with stage(timings, "true_ceiling"):
                results["true_profit_ceiling"] = oracle_ceiling(truth, prep.scored.space, prep.candidates, k_values,
                                                                s_control, s_full, profit=true_cand, seed=seed,
                                                                device=device)
        return control, full  # the (n, M) true profits of the ceiling are not kept through training

    def _step_one(self, prep: Prepared, state: JobState, control, full, device) -> None:
        """Training, the model's record, the evaluator and the references; fills ``state``."""
        cfg, timings, results = self.config, state.timings, state.results
        # distributed=true: ranks > 0 make this same call (experiment/followers.py follow); keep them in step
        with stage(timings, "train", device):
            model, est, selection = self.personalize(prep, state.run_dir)
        results["model_selection"] = selection
        results["model"] = training_record(model, cfg, state.run_dir, state.tracker)
        with stage(timings, "predict", device):
            evaluator = Evaluator(prep.scored, est, cfg.evaluation.n_boot, cfg.evaluation.ci_level, int(cfg.seed),
                                  control, full, metrics=list(cfg.evaluation.get("metrics") or DEFAULT_JOB_METRICS))
            results.update(evaluator.extra_metrics())  # the metrics beyond the built-ins, for the report
            profit = est.at_candidates(prep.candidates)  # dense, or factored at millions of customers
            view = ProfitView(profit)  # its row maxima serve the references and the baselines (computed once)
            results["model"].update(references(evaluator, est, view, prep.candidates, prep.data, results))
            if evaluator.dose is not None:
                results["continuous_dose"] = evaluator.dose.record()
        log.info("model %s (%s) trained in %.1fs%s", cfg.model.name, results["model"]["selected"], timings["train"],
                 "" if results["model"]["rmse_profit_grid"] is None
                 else f"; RMSE of estimated vs true profit = {results['model']['rmse_profit_grid']:.3f}")
        state.ctx = self.context(prep, model, est, profit, device, cache={"profit_view": view})
        state.model, state.evaluator = model, evaluator

    @staticmethod
    def constrain(ctx: MethodContext, given: Optional[list]) -> None:
        """The caller's side constraints (``constraints=``) instead of the config's, on the methods' context:
        built once, as they do not depend on K; nothing when ``given`` is empty."""
        if given:
            ctx.constraints = list(given)
            ctx.cache["constraint_spec"] = {"n_constraints": len(given), "source": "python"}

    def context(self, prep: Prepared, model, est, profit, device, cache: Optional[dict] = None) -> MethodContext:
        """What every method reads at every K (``methods.MethodContext``): the scored rows, their estimates
        and (N, M) estimated profit at the candidates, the model's arms (the data's on a continuous dose)."""
        arms = np.asarray(prep.data.arms if is_continuous_dose(prep.data) else model.arms_)
        return MethodContext(prep.scored, est, profit, prep.candidates, arms, self.config, device,
                             int(self.config.seed), cache=dict(cache or {}))


def _write(path: Optional[Path], results: dict) -> None:
    if path is not None:
        write_results(path, results)


def _skeleton(cfg: DictConfig, prep: Prepared, k_values: list[int], methods: list[str], timings: dict,
              device) -> dict:
    """results.json before any step: the config, sizes, the treatment space, the environment."""
    data, env = prep.data, environment_record(device)
    return {
        "config": OmegaConf.to_container(cfg, resolve=True), "status": "running", "seed": int(cfg.seed),
        "n_customers": len(data), "n_train": len(prep.train), "n_eval": len(prep.scored),
        "estimates": "out-of-fold" if prep.train is prep.scored else "held-out",
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
