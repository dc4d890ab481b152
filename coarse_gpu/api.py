"""The Python entry point: ``CoarsePersonalizer`` fits both steps on a randomized experiment in one call.

    from coarse_gpu import CoarsePersonalizer
    cp = CoarsePersonalizer(k=5, model="auto", discretizer="sinkhorn", seed=0)
    cp.fit(X, treatment, y, propensity=None)    # X: DataFrame (string / categorical columns one-hot
                                                # encoded as in data=file) or (N, p) array
    cp.treatments_                              # (K, d) the K treatments
    cp.assign(X_new)                            # (N',) segment ids; cp.treatments_[ids] are the treatments
    cp.predict_profit(X_new, T)                 # (N', M) estimated profit at treatments T (M, d)
    cp.evaluate(X, treatment, y)                # doubly robust value of the policy on (new) data, with CI
                                                # (the kernel DR on a continuous dose, as the main job)
    cp.save("policies/my_k5"); CoarsePersonalizer.load("policies/my_k5")
    results = cp.run(X, treatment, y, k_values=[1, 2, 3, 5], run_dir="outputs/mine")   # the whole job

One core, two doors: the main job is one library object, coarse_gpu.experiment.job.CoarsePipeline,
and both ``coarse-gpu`` and this class run it. ``run`` composes the job config the CLI composes for
``data=file model=<model> discretizer=<discretizer>`` (coarse_gpu.experiment.composed.job_config: the
same YAML files, ``model_params`` / ``discretizer_params`` over them, the CLI's checks) and calls
``CoarsePipeline.run`` on the caller's rows: the data step, step 1, the references, every K's ``ot``
policy and baselines, their evaluation, choose-K, the report files. ``fit`` runs the same pipeline's
steps up to the ``ot`` policy at one K (``prepare``, ``personalize``, ``context``, the ``ot`` method).
So the same rows, seed and options give the CLI's results.json and policies (``policies/<method>_k<K>``,
scored by ``coarse-gpu-assign``), number for number (tests/test_one_core.py).

Rows are paired by POSITION: row i of X goes with row i of treatment, y and propensity whatever the
pandas index labels say. Treatment columns are matched by NAME wherever they have names (DataFrames, a
named Series): ``evaluate`` and ``predict_profit`` reorder columns given in another order and refuse
other names. Every argument is checked before any work, and an error names it.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from sklearn.base import BaseEstimator

from coarse_gpu.api_inputs import (  # the arguments' coercion and checks
    _api_words,
    _by_name,
    _check_range,
    _column,
    _frame,
    _is_int,
    _is_num,
    _run_folder,
    _treatment_frame,
    _unsupported_segments,
)
from coarse_gpu.data.file import FileSpec, check_frame, experiment_from_frame, is_time_column
from coarse_gpu.discretize import SOLVER_TABLE, Constraint
from coarse_gpu.discretize.constraints import check_constraints
from coarse_gpu.discretize.exact import share_counts
from coarse_gpu.evaluate import arm_weights, dr_scores, dr_value
from coarse_gpu.evaluate.bootstrap import SharedBootstrap
from coarse_gpu.evaluate.metrics import DEFAULT_API_METRICS, PolicyEvidence, evaluate_metrics, metric_name_problems
from coarse_gpu.experiment.composed import discretizer_config, job_config, model_config
from coarse_gpu.experiment.dose import dose_policy_scores, is_continuous_dose
from coarse_gpu.experiment.errors import ConfigValueError
from coarse_gpu.experiment.job import CoarsePipeline
from coarse_gpu.experiment.methods import method_policy
from coarse_gpu.experiment.model_build import MODELS, model_key_problems
from coarse_gpu.experiment.report import write_report
from coarse_gpu.experiment.validate import config_problems, range_problems, solver_option_problems
from coarse_gpu.models.twopart import unstack_outcome
from coarse_gpu.policy import Policy
from coarse_gpu.policy.io import deployable, load_policy, save_policy
from coarse_gpu.utils import resolve_device, seed_everything

__all__ = ["CoarsePersonalizer"]


class CoarsePersonalizer(BaseEstimator):
    """K treatments and who gets which, from a randomized experiment (module docstring).

    Parameters
    ----------
    k : number of distinct treatments, an integer >= 1.
    model : step 1, a ``model=`` name of the CLI ("auto", "tarnet", "dragonnet", "gb_s", "gb_t", "dr",
        "dose_logit", "dose_vc", "arm_means", "twopart", or a learner registered with
        ``coarse_gpu.models.register_model``): its hyperparameters are those of
        ``configs/model/<model>.yaml`` (a registered learner without one: the ``ModelConfig`` defaults).
    discretizer : step 2 solver, "sinkhorn" (entropic OT), "lloyd" (the paper's alternation), "exact"
        or "mip"; its options are those of ``configs/discretizer/<discretizer>.yaml``.
    min_share, max_share : optional bounds on each treatment's share of customers, in [0, 1].
    constraints : ``coarse_gpu.discretize.Constraint`` side constraints on the assignment of the
        training rows (weights (N,) in the order of X's rows, values (M,) over the candidate
        treatments ``candidates_``; docs/constraints.md), or a function of the (M, d) candidate
        treatments that returns them (the candidates are known once the data is): a budget, group
        parity (built as the CLI builds ``discretizer.budget`` / ``group_parity``:
        ``coarse_gpu.discretize.budget_constraint``, ``treatment_costs``, ``parity_constraints``), ... The K treatments and the training rows' assignment satisfy them exactly (the
        treatments stay on the candidate grid); new customers are assigned by their best of the K
        treatments, so the saved policy records the constraints but does not enforce them.
    n_folds : cross-fitting folds of step 1, an integer >= 2 (every training row is scored by a model
        that did not see it).
    model_params : ``model.*`` settings over the YAML's, e.g. {"hidden": 64} or {"candidates": ["gb_s", "gb_t"]}.
    discretizer_params : ``discretizer.*`` settings over the YAML's, e.g. {"refine": False, "n_restarts": 4}.
    categorical : columns of X to one-hot encode although they hold numbers (string / category columns
        are encoded anyway).
    treatment_kinds : {treatment column: "continuous" | "discrete" | "categorical"} (the CLI's
        data.treatment_kinds): a discrete dimension (a lever, a count) is only offered at its observed
        values, a categorical one (creatives; a text column is categorical without being told) is a
        set of labels, never ordered or interpolated; an undeclared integer-valued column is kept
        discrete with a warning (docs/data.md, treatment kinds).
    allow_unseen_combinations : offer combinations of discrete / categorical values that no row
        received (needs model="dose_logit" or "dose_vc"; their profits are extrapolated).
    seed, device ("auto" | "cpu" | "cuda"), verbose (progress bars).

    Fitted attributes: treatments_ (K, d) (categorical dimensions as codes into their sorted labels),
    treatments_labelled_ (K lists: the treatments in the user's labels and types), assignment_ (N,) of the training rows (from their
    out-of-fold estimates), effective_k_ (segments with at least one training row; a warning when
    below k), candidates_ (M, d), policy_ (the DeployedPolicy that assigns new customers), model_
    (step 1's ensemble), model_selection_ (dict), treatment_names_, feature_names_in_, continuous_dose_
    (True when every row got her own dose, detected as ``data=file`` does: no arms, the dose learners only,
    candidates over the observed doses; docs/data.md "Continuously randomized doses").
    """

    def __init__(self, *, k: int = 5, model: str = "auto", discretizer: str = "sinkhorn",
                 min_share: Optional[float] = None, max_share: Optional[float] = None,
                 constraints: Sequence = (), n_folds: int = 5,
                 model_params: Optional[dict] = None, discretizer_params: Optional[dict] = None,
                 categorical: Sequence[str] = (), treatment_kinds: Optional[dict] = None,
                 allow_unseen_combinations: bool = False, seed: int = 0,
                 device: str = "auto", verbose: bool = False) -> None:
        self.k = k
        self.model = model
        self.discretizer = discretizer
        self.min_share = min_share
        self.max_share = max_share
        self.constraints = constraints
        self.n_folds = n_folds
        self.model_params = model_params
        self.discretizer_params = discretizer_params
        self.categorical = categorical
        self.treatment_kinds = treatment_kinds
        self.allow_unseen_combinations = allow_unseen_combinations
        self.seed = seed
        self.device = device
        self.verbose = verbose

    # -- the arguments ---------------------------------------------------------------------------
    def _check_params(self) -> None:
        """The constructor's arguments, each named, before any data is read."""
        if not _is_int(self.k) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1 (the number of distinct treatments), got {self.k!r}")
        if not _is_int(self.n_folds) or self.n_folds < 2:
            raise ValueError(f"n_folds must be an integer >= 2 (cross-fitting: every training row is scored by a "
                             f"model fitted without it), got {self.n_folds!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        if self.model not in MODELS:
            raise ValueError(f"model={self.model!r} is not one of {sorted(MODELS)}")
        if self.discretizer not in SOLVER_TABLE:  # the live table: a registered solver too
            raise ValueError(f"discretizer={self.discretizer!r} is not one of {list(SOLVER_TABLE)}")
        for name in ("min_share", "max_share"):
            v = getattr(self, name)
            if v is not None and not _is_num(v):
                raise ValueError(f"{name} must be a number in [0, 1] or None, got {v!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if isinstance(self.categorical, str):
            raise ValueError(f"categorical must be a list of column names, got the string {self.categorical!r}")

    def _model_cfg(self):
        """configs/model/<model>.yaml as the CLI composes it, n_folds, then ``model_params``, each checked by
        the CLI's own rules (experiment.validate) and named."""
        cfg = model_config(self.model)
        cfg.n_folds = int(self.n_folds)
        cfg.checkpoint = False
        params = self.model_params or {}
        if not isinstance(params, dict):
            raise ValueError(f"model_params must be a dict of model.* settings, got {type(params).__name__}")
        for key, v in params.items():
            if key in ("name", "_target_", "n_folds", "checkpoint"):
                raise ValueError(f"model_params: {key!r} is set by the arguments (model=, n_folds=), not here")
            if key not in cfg:
                raise ValueError(f"model_params: unknown model key {key!r}; known keys: {sorted(cfg.keys())}")
            try:
                cfg[key] = v
            except OmegaConfBaseException as err:
                raise ValueError(f"model_params: {key}={v!r}: {str(err).splitlines()[0]}") from None
        tree = {"model": OmegaConf.to_container(cfg, resolve=True)}
        problems = range_problems(tree) + model_key_problems(cfg)
        if problems:
            raise ValueError(f"model_params: {problems[0]}")
        return cfg

    def _discretizer_cfg(self):
        """configs/discretizer/<discretizer>.yaml as the CLI composes it, k and the shares, then
        ``discretizer_params``, checked by the CLI's rules; the ``cfg`` that methods.ot_policy reads."""
        d = discretizer_config(self.discretizer)
        params = self.discretizer_params or {}
        if not isinstance(params, dict):
            raise ValueError(f"discretizer_params must be a dict of discretizer.* settings, "
                             f"got {type(params).__name__}")
        own = ("solver", "k", "min_share", "max_share", "budget", "budget_unit_cost", "group_parity")
        for key, v in params.items():
            if key in own:
                raise ValueError(f"discretizer_params: {key!r} is an argument (discretizer=, k=, min_share=, "
                                 "max_share=) or a constraint (constraints=), not set here")
            if key not in d:
                raise ValueError(f"discretizer_params: unknown key {key!r}; known keys: "
                                 f"{sorted(set(d.keys()) - set(own))}")
            try:
                d[key] = v
            except OmegaConfBaseException as err:
                raise ValueError(f"discretizer_params: {key}={v!r}: {str(err).splitlines()[0]}") from None
        d.k, d.min_share, d.max_share = int(self.k), self.min_share, self.max_share
        tree = {"discretizer": OmegaConf.to_container(d, resolve=True)}
        problems = [p for p in range_problems(tree) + solver_option_problems(tree)
                    if not p.startswith(("discretizer.min_share", "discretizer.max_share"))]
        if problems:
            raise ValueError(f"discretizer_params: {problems[0]}")
        return OmegaConf.create({"discretizer": d, "distributed": False})

    # -- fit -------------------------------------------------------------------------------------
    def _experiment(self, X, treatment, y, propensity):
        """The ExperimentData of the arrays, by position, through the data checks of ``data=file``."""
        feats = _frame(X)
        n = len(feats)
        t, _ = _treatment_frame(treatment, n)
        y = _column(y, "y", n)
        prop_v = None if propensity is None else _column(propensity, "propensity", n)
        missing = [c for c in self.categorical if c not in feats.columns]
        if missing:
            raise ValueError(f"categorical lists {missing}, which are not columns of X {list(map(str, feats.columns))}")
        clash = sorted(set(map(str, feats.columns)) & set(t.columns))
        if clash:
            raise ValueError(f"treatment column(s) {clash} are also columns of X; rename one of them")
        df = pd.concat([feats, t], axis=1)
        # the names the data checks' messages use: the arguments', unless X has such a column
        out, prop = ("y", "propensity") if not {"y", "propensity"} & set(map(str, df.columns)) else \
            ("__outcome__", "__propensity__")
        df[out] = y
        # String, category and boolean columns are categorical; numeric ones only when listed (dates
        # are neither: the data checks refuse them by name).
        cats = list(self.categorical) + [str(c) for c in feats.columns if str(c) not in self.categorical
                                         and not pd.api.types.is_numeric_dtype(feats[c])
                                         and not is_time_column(feats[c])]
        spec = FileSpec(features=[str(c) for c in feats.columns], treatment=list(t.columns),
                        outcome=out, categorical=cats, min_per_arm=2,
                        treatment_kinds={str(k): v for k, v in dict(self.treatment_kinds or {}).items()},
                        allow_unseen_combinations=bool(self.allow_unseen_combinations))
        problems = spec.kind_problems()
        if problems:  # the CLI's wording names data.treatment_kinds; here it is the argument
            raise ValueError(problems[0].replace("data.treatment_kinds", "treatment_kinds"))
        if prop_v is not None:
            df[prop] = prop_v
            spec.propensity = prop
        return experiment_from_frame(df, spec, source="the arrays passed to CoarsePersonalizer.fit")

    def _constraints(self, data, candidates: np.ndarray) -> list:
        """The side constraints (a list, called with the candidates when a function), checked against the
        data's N rows, the M candidates and k before any training."""
        given = self.constraints(candidates) if callable(self.constraints) else self.constraints
        given = [] if given is None else given
        check_constraints(given, len(data), len(candidates), int(self.k))
        return [given] if isinstance(given, Constraint) else list(given)

    def fit(self, X, treatment, y, propensity=None, *, response=None, value=None,
            accounting=None) -> "CoarsePersonalizer":
        """Step 1 (cross-fitted on every row) and step 2 (``k`` treatments on the out-of-fold estimates).

        X : DataFrame or (N, p) array; treatment : (N,) or (N, d) array, Series or DataFrame (one numeric
        column per treatment dimension); y : (N,) realized profit per customer (currency units);
        propensity : optional (N,) probability of the arm each row received (default: the arm's share of
        the rows, right for a completely randomized experiment). Rows pair by position, not by index label.
        response, value (N,) and accounting (``coarse_gpu.data.Accounting``, expressions in the treatment
        column names): the declared profit structure (docs/data.md); the accounting must reproduce y row
        by row. With it model="auto" also weighs the two-part learners and model="twopart" can run.
        Every argument is checked before any training.
        """
        self._check_params()
        cfg = self._job_config(None, ["ot"], 0.0, 0, 0.95, None)
        seed_everything(int(self.seed))
        data = self._experiment(X, treatment, y, propensity)
        if response is not None or value is not None or accounting is not None:
            data = _with_structure(data, response, value, accounting)
        share_counts(len(data), int(self.k), self.min_share, self.max_share)
        # the main job's own steps (coarse_gpu.experiment.job): its data step (kinds, the dose path,
        # candidates, every check), step 1, and its ot method at one K (no smaller K to warm-start from)
        job = CoarsePipeline(cfg, verbose=bool(self.verbose))
        try:
            prep = job.prepare(data, k_key="k")
        except ConfigValueError as err:  # the data step's checks in the API's words
            raise ValueError(_api_words(str(err))) from None
        constraints = self._constraints(prep.scored, prep.candidates)
        model, est, selection = job.personalize(prep)
        device = resolve_device(self.device)
        ctx = job.context(prep, model, est, est.at_candidates(prep.candidates), device)
        job.constrain(ctx, constraints)
        out = method_policy("ot", int(self.k), ctx)
        if out is None:  # pragma: no cover - ot applies at every K
            raise RuntimeError(f"the ot method gave no policy at k={self.k}")
        policy = out[0]
        if constraints:
            policy.info["constraints"]["enforced"] = False
        self._fitted(prep, model, selection, policy)
        if self.effective_k_ < int(self.k):
            warnings.warn(f"CoarsePersonalizer: only {self.effective_k_} of the k={self.k} treatments are given to "
                          "any training row (the others' segments are empty); effective_k_ "
                          f"= {self.effective_k_}", UserWarning, stacklevel=2)
        return self

    def run(self, X, treatment, y, propensity=None, *, response=None, value=None, accounting=None,
            k_values: Optional[Sequence[int]] = None, methods: Optional[Sequence[str]] = None,
            eval_fraction: float = 0.0, n_boot: int = 1000, ci_level: float = 0.95,
            metrics: Optional[Sequence[str]] = None, run_dir=None) -> dict:
        """The whole main job on these rows, as ``coarse-gpu data=file ...`` runs it on a file: step 1,
        every K's ``ot`` policy and the baselines, their evaluation (doubly robust values with paired
        bootstrap intervals, choose-K) and the report data. One library object runs both doors
        (coarse_gpu.experiment.job.CoarsePipeline), so the same rows, seed and options give the CLI's
        results.json, number for number.

        X, treatment, y, propensity, response, value, accounting : as ``fit``.
        k_values : the K to run (default: [k], as ``discretizer.k=k``; else ``evaluation.k_values``, where
            each K's ``ot`` solve is warm-started from the smaller K's, as in the CLI).
        methods : ``evaluation.methods`` (default configs/evaluation/default.yaml's: ot and the baselines).
        eval_fraction : ``data.eval_fraction`` (0: every row cross-fitted and scored out-of-fold; else that
            share held out, scored by the model fitted on the rest).
        n_boot, ci_level, metrics : ``evaluation.n_boot`` / ``ci_level`` / ``metrics``.
        run_dir : a folder for results.json, table.txt, the figures and the saved policies
            (``policies/<method>_k<K>``); None writes nothing.
        Returns the results dict (results.json's keys: docs/evaluation.md). When ``ot`` ran at K = ``k``
        the fitted attributes are those ``fit`` sets, from that policy (``assign``, ``save`` work after).
        """
        self._check_params()
        cfg = self._job_config(k_values, methods, eval_fraction, n_boot, ci_level, metrics)
        if eval_fraction and self.constraints:
            raise ValueError("constraints= are over the training rows; with eval_fraction > 0 the policy assigns "
                             "the held-out rows: use eval_fraction=0")
        folder = None if run_dir is None else _run_folder(run_dir)
        seed_everything(int(self.seed))
        data = self._experiment(X, treatment, y, propensity)
        if response is not None or value is not None or accounting is not None:
            data = _with_structure(data, response, value, accounting)
        job = CoarsePipeline(cfg, verbose=bool(self.verbose), constraints=(
            (lambda prep: self._constraints(prep.scored, prep.candidates)) if self.constraints else None))
        try:
            results = job.run(data=data, run_dir=folder)
        except ConfigValueError as err:  # the data step's checks, before any training: the API's words
            raise ValueError(_api_words(str(err))) from None
        if folder is not None:
            write_report(results, folder, echo=bool(self.verbose))
        done = job.state_.ctx.cache if job.state_.ctx is not None else {}  # every K's ot policy, by ("ot", K)
        if ("ot", int(self.k)) in done:
            self._fitted(job.prepared_, job.state_.model, results.get("model_selection"),
                         done[("ot", int(self.k))][0])
        return results

    def _fitted(self, prep, model, selection, policy) -> None:
        """The fitted attributes from the pipeline's data step ``prep``, its step 1 and an ot ``policy``."""
        self.policy_ = deployable(policy, model, prep.data, prep.candidates)
        self.treatments_ = np.asarray(policy.treatments, dtype=np.float64)
        self.candidates_ = np.asarray(prep.candidates, dtype=np.float64)
        self.assignment_ = np.asarray(policy.assignment, dtype=np.int64)
        self.effective_k_ = int(np.unique(self.assignment_).size)
        self.model_, self.model_selection_ = model, selection
        self.treatment_names_ = list(prep.data.space.names)
        self.treatments_labelled_ = prep.data.space.to_user(self.treatments_)
        self.feature_names_in_ = list(self.policy_.feature_schema.columns)
        self.continuous_dose_ = is_continuous_dose(prep.data)

    def _job_config(self, k_values, methods, eval_fraction, n_boot, ci_level, metrics):
        """The main job's config for these arguments, as ``coarse-gpu data=file ...`` composes it (the model
        and discretizer files, their ``*_params``, the evaluation keys), checked by the CLI's rules; the
        one K ``k`` as ``discretizer.k`` unless ``k_values`` are given."""
        def plain(v):  # numpy numbers as Python's, so the schema takes np.int64(3) as it takes 3
            return v.item() if isinstance(v, np.generic) else v

        for name, v in (("k_values", k_values), ("methods", methods), ("metrics", metrics)):
            if v is not None and (isinstance(v, (str, bytes)) or not hasattr(v, "__iter__")):
                raise ValueError(f"{name} must be a list, e.g. {name}=[{v!r}], got {v!r}")

        ks = [plain(k) for k in (k_values if k_values is not None else [self.k])]
        evaluation = {"n_boot": plain(n_boot), "ci_level": plain(ci_level), "k_values": ks}
        evaluation.update({} if methods is None else {"methods": list(methods)})
        evaluation.update({} if metrics is None else {"metrics": list(metrics)})
        disc = self._discretizer_cfg().discretizer
        disc.k = None if k_values is not None else int(self.k)
        try:
            cfg = job_config(self._model_cfg(), disc, evaluation=evaluation, seed=int(self.seed),
                             device=str(self.device), quiet=not self.verbose,
                             data={"eval_fraction": plain(eval_fraction),
                                   "allow_unseen_combinations": bool(self.allow_unseen_combinations)})
        except OmegaConfBaseException as err:
            raise ValueError(_api_words(f"{err.full_key}: {str(err).splitlines()[0]}")) from None
        # the shares are arguments here: share_counts names them in the API's words once N is known
        problems = [p for p in config_problems(cfg) if not p.startswith(("discretizer.min_share",
                                                                         "discretizer.max_share"))]
        if problems:
            raise ValueError(_api_words(problems[0]))
        return cfg

    # -- use -------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "policy_"):
            raise RuntimeError("this CoarsePersonalizer is not fitted yet: call fit(X, treatment, y) first")

    def _arms(self) -> np.ndarray:
        return np.asarray(self.policy_.model.arms_, dtype=np.float64)

    def _matrix(self, X) -> np.ndarray:
        return self.policy_.feature_schema.transform(_frame(X), "X")

    def _policy_in_range(self) -> None:
        """The policy's K treatments inside the trained range (a hand-edited policy.json is refused)."""
        _check_range(self.treatments_, self._arms(), self.treatment_names_, "the policy's treatment")

    def assign(self, X) -> np.ndarray:
        """(N,) int64 segment in [0, k) of each customer: its best of the k treatments by the ensemble."""
        self._check_fitted()
        self._policy_in_range()
        return self.policy_.assign_matrix(self._matrix(X))[0]

    def predict_profit(self, X, T, extrapolate: bool = False) -> np.ndarray:
        """(N, M) estimated profit (currency units per customer) of each customer at treatments T.

        T : (M, d) array or a DataFrame with the treatment columns (matched by name), or (M,) when d = 1.
        A treatment outside the trained range (per dimension, the arms' min..max) is an error unless
        ``extrapolate=True``: then it gets the model's own continuation beyond its data -- the per-arm
        models (tarnet, dragonnet, gb_s, gb_t, dr, auto) give the profit at the nearest edge of the range
        (a constant continuation), dose_logit / dose_vc continue their functional form. Neither is an
        estimate the experiment supports."""
        self._check_fitted()
        names = self.treatment_names_
        if isinstance(T, (pd.DataFrame, pd.Series)):
            frame, named = _treatment_frame(T, len(T), "T")
            T = _by_name(frame, named, names, "T", self.policy_.treatment_kinds)
        else:
            T = np.asarray(T, dtype=np.float64)
            T = T.reshape(-1, 1) if T.ndim == 1 and len(names) == 1 else np.atleast_2d(T)
            if T.ndim != 2 or T.shape[1] != len(names):
                raise ValueError(f"T must be (M, {len(names)}) treatments {names}, got shape {T.shape}")
        if not np.all(np.isfinite(T)):
            raise ValueError("T contains NaN or inf")
        if not extrapolate:
            _check_range(T, self._arms(), names, "T", "; pass extrapolate=True for the model's own continuation")
        return self.policy_.model.predict_profit(self._matrix(X), T)

    def _check_eval_args(self, n_boot, ci_level, metrics) -> None:
        problems = metric_name_problems(metrics, "metrics") if metrics is not None else []
        if problems:
            raise ValueError(problems[0])
        if not _is_int(n_boot) or n_boot < 0:
            raise ValueError(f"n_boot must be an integer >= 0 (bootstrap resamples; 0 = normal approximation), "
                             f"got {n_boot!r}")
        if not _is_num(ci_level) or not 0 < ci_level < 1:
            raise ValueError(f"ci_level must be a number in (0, 1), e.g. 0.95, got {ci_level!r}")

    def _checked_rows(self, X, treatment, y, propensity):
        """(X matrix (N, p), treatment (N, d) float, y (N,), propensity (N,) or None) of held-out rows, by
        position, checked by the data checks of ``data=file`` (one arm only is refused there as in the CLI;
        on a dose policy the propensity is a density and, with a declared design, every dose must lie in
        its box)."""
        feats = _frame(X)
        n = len(feats)
        frame, named = _treatment_frame(treatment, n)
        t = _by_name(frame, named, self.treatment_names_, "treatment", self.policy_.treatment_kinds)
        yv = _column(y, "y", n)
        pv = None if propensity is None else _column(propensity, "propensity", n)
        # the CLI's data checks on these rows (numbers, one arm only, propensities against the arm
        # frequencies); the features are the policy's to check (feature_schema.transform below)
        names = self.treatment_names_
        out, prop = ("y", "propensity") if not {"y", "propensity"} & set(names) else ("__outcome__", "__propensity__")
        df = pd.DataFrame(t, columns=names).assign(**{out: yv, "__row__": np.arange(n, dtype=np.float64)})
        spec = FileSpec(features=["__row__"], treatment=names, outcome=out, min_per_arm=1)
        dose = self.policy_.dose
        if dose:
            design = dose.get("design")
            spec.continuous_dose, spec.dose_design = True, "uniform" if design else None
            spec.treatment_low, spec.treatment_high = (design["low"], design["high"]) if design else (None, None)
        if pv is not None:
            df[prop] = pv
            spec.propensity = prop
        check_frame(df, spec, source="the rows passed to CoarsePersonalizer.evaluate")
        return self._matrix(feats), t, np.asarray(yv, dtype=np.float64), \
            None if pv is None else np.asarray(pv, dtype=np.float64)

    def _arm_rows(self, X_m, t, y_f, pv) -> dict:
        """The evidence of checked held-out rows (``_checked_rows``) whose treatments are the experiment's
        arms: the AIPW scores of the policy's segments (the propensity, when not given, is each arm's share
        of these rows)."""
        arms = self._arms()
        match = np.all(t[:, None, :] == arms[None, :, :], axis=2)
        if not match.any(1).all():
            bad = int(np.flatnonzero(~match.any(1))[0])
            raise ValueError(f"treatment row {bad}: {t[bad].tolist()} is not one of the experiment's arms")
        arm = match.argmax(1)
        e = pv if pv is not None else (np.bincount(arm, minlength=len(arms)) / len(y_f))[arm]
        seg, mu_pol = self.policy_.assign_matrix(X_m)  # segments and the profit at their treatment
        kappa_k = arm_weights(self.treatments_, arms)
        _unsupported_segments(kappa_k, seg, arm, self.treatments_, self.treatment_names_)
        scores = dr_scores(y_f, arm, e, self.policy_.model.predict_arms(X_m), mu_pol, kappa_k[seg])
        return dict(seg=seg, arm=arm, propensity=e, mu_policy=mu_pol, scores=scores)

    def _dose_rows(self, X_m, t, y_f, density) -> dict:
        """The evidence of checked held-out rows on a continuous-dose policy: the job's kernel-DR scores
        (coarse_gpu.experiment.dose.dose_policy_scores) and the estimator's record."""
        scores, seg, mu_pol, scorer = dose_policy_scores(self.policy_, X_m, t, y_f, density)
        return dict(seg=seg, arm=None, propensity=scorer.f_observed, mu_policy=mu_pol, scores=scores,
                    extra={"kernel_dr": scorer.record()})

    def evaluate(self, X, treatment, y, propensity=None, n_boot: int = 1000, ci_level: float = 0.95,
                 metrics: Optional[Sequence[str]] = None) -> dict:
        """Doubly robust value per customer of the policy on randomized data (X, treatment, y), with a
        percentile-bootstrap CI at ``ci_level``. The data must be new to the model for an honest value (a
        held-out experiment); on the training rows the ensemble has seen every customer.

        Rows pair by position; treatment columns by name (a DataFrame in another order is reordered).
        Refused: rows on one arm only (as the CLI refuses such data), and a policy segment whose
        treatment rests only on arms none of the rows received (its value would be pure extrapolation).
        Returns the keys of ``metrics`` -- registered metric names (coarse_gpu.evaluate.metrics, the
        main job's ``evaluation.metrics``), by default ("dr", "segments"): dr_value, dr_ci [lo, hi],
        segment_sizes (K,) of these rows and effective_k (the number of non-empty segments among them);
        "expected" adds the policy's mean estimated profit, a metric of your own its key -- then se, n.
        The numbers come from the functions the main job's results.json comes from.

        A policy fitted on a continuously randomized dose (``continuous_dose_``, also after ``load``) gets
        the main job's kernel-smoothed doubly robust value (coarse_gpu.experiment.dose.dose_policy_scores:
        Epanechnikov kernel, the "undersmooth" bandwidth on these rows' doses, each row's estimate at her
        own dose from the ensemble) with the GPS f(t | x) of the declared design, else ``propensity`` as
        the density column (any positive number, 1 / treatment units^d), else estimated on these rows; the
        same keys, plus kernel_dr (bandwidth, density source, support). Overlap problems are logged warnings
        (the coarse_gpu logger), as in the job.
        """
        self._check_fitted()
        self._check_eval_args(n_boot, ci_level, metrics)
        self._policy_in_range()
        X_m, t, y_f, pv = self._checked_rows(X, treatment, y, propensity)
        rows = (self._dose_rows if self.policy_.dose else self._arm_rows)(X_m, t, y_f, pv)
        s, extra, seg = rows.pop("scores"), rows.pop("extra", {}), rows.pop("seg")
        plain = dr_value(s, n_boot=0, alpha=1 - float(ci_level))  # checks the scores; se and n
        # the resamples of dr_value / the job's SharedBootstrap, so the CI is the one the job would give
        draws = SharedBootstrap(len(s), int(n_boot), int(self.seed)).means(s) if n_boot > 0 else None
        ev = PolicyEvidence(policy=Policy(self.policy_.method, self.treatments_, seg), outcome=y_f, treatment=t,
                            scores=s, draws=draws, alpha=1 - float(ci_level),
                            profit_at=lambda T: self.policy_.model.predict_profit(X_m, T), **rows)
        out = evaluate_metrics(ev, DEFAULT_API_METRICS if metrics is None else list(metrics))
        return {**out, "se": plain.se, "n": plain.n, **extra}

    def save(self, path) -> Path:
        """Write the policy folder (the CLI's ``policies/<method>_k<K>`` format; ``coarse-gpu-assign`` reads it)."""
        self._check_fitted()
        return save_policy(path, self.policy_)

    @classmethod
    def load(cls, path, device: str = "cpu") -> "CoarsePersonalizer":
        """A fitted CoarsePersonalizer from a saved policy folder (its own or the CLI's)."""
        pol = load_policy(path, device=device)
        cp = cls(k=pol.k, device=device)
        cp.policy_ = pol
        cp.treatments_ = np.asarray(pol.treatments, dtype=np.float64)
        cp.model_ = pol.model
        cp.treatment_names_ = list(pol.treatment_names)
        cp.treatments_labelled_ = pol.treatments_labelled
        cp.feature_names_in_ = list(pol.feature_schema.columns)
        cp.continuous_dose_ = bool(pol.dose)  # evaluate takes the kernel-DR path
        cp._policy_in_range()
        return cp


def _with_structure(data, response, value, accounting):
    """``data`` with the declared profit structure, checked: all three given, the accounting bound to the
    treatment names, and reproducing y row by row (the first disagreeing rows named)."""
    if response is None or value is None or accounting is None:
        raise ValueError("response, value and accounting go together: pass all three (or none)")
    r, v = unstack_outcome(None, response, value, len(data))
    acc = accounting.bind(list(data.space.names))
    pi = acc.profit(r, v, data.treatment)
    off = np.flatnonzero(~np.isclose(pi, data.outcome, rtol=1e-6, atol=0.01))
    if off.size:
        rows = "; ".join(f"row {int(i)}: accounting {pi[i]:.6g}, y {data.outcome[i]:.6g}" for i in off[:3])
        raise ValueError(f"accounting does not reproduce y in {off.size} row(s) (first: {rows})")
    return dataclasses.replace(data, response=r, value=np.where(r > 0, v, np.nan), accounting=acc)
