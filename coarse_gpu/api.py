"""The Python entry point: ``CoarsePersonalizer`` fits both steps on a randomized experiment in one call.

    from coarse_gpu import CoarsePersonalizer
    cp = CoarsePersonalizer(k=5, model="auto", discretizer="sinkhorn", seed=0)
    cp.fit(X, treatment, y, propensity=None)    # X: DataFrame (string / categorical columns one-hot
                                                # encoded as in data=file) or (N, p) array
    cp.treatments_                              # (K, d) the K treatments
    cp.assign(X_new)                            # (N',) segment ids; cp.treatments_[ids] are the treatments
    cp.predict_profit(X_new, T)                 # (N', M) estimated profit at treatments T (M, d)
    cp.evaluate(X, treatment, y)                # doubly robust value of the policy on (new) data, with CI
    cp.save("policies/my_k5"); CoarsePersonalizer.load("policies/my_k5")

It runs the main job's steps on the caller's arrays: the data checks of ``data=file``
(coarse_gpu.data.file), step 1 cross-fitted on every row (coarse_gpu.experiment.personalize, any
``model=`` of the CLI), step 2 (``discretize`` on the out-of-fold estimates at the candidate
treatments: the grid of the arms' levels) and a saved policy in the CLI's format
(``policies/<method>_k<K>``), so a policy fitted here is scored by ``coarse-gpu-assign`` and vice versa.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

__all__ = ["CoarsePersonalizer"]


def _frame(X) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X.reset_index(drop=True)
    a = np.asarray(X)
    if a.ndim != 2:
        raise ValueError(f"X must be a DataFrame or an (N, p) array, got shape {a.shape}")
    return pd.DataFrame(a, columns=[f"x{j}" for j in range(a.shape[1])])


def _treatment_frame(treatment, n: int) -> pd.DataFrame:
    if isinstance(treatment, pd.DataFrame):
        t = treatment.reset_index(drop=True)
    elif isinstance(treatment, pd.Series):
        t = treatment.reset_index(drop=True).to_frame(name=str(treatment.name or "treatment"))
    else:
        try:
            a = np.asarray(treatment, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"treatment must be numbers (one column per treatment dimension, e.g. the discount): "
                             f"{err}") from None
        a = a[:, None] if a.ndim == 1 else a
        if a.ndim != 2:
            raise ValueError(f"treatment must be (N,) or (N, d), got shape {a.shape}")
        t = pd.DataFrame(a, columns=["treatment"] if a.shape[1] == 1 else [f"t{j}" for j in range(a.shape[1])])
    if len(t) != n:
        raise ValueError(f"treatment has {len(t)} rows but X has {n}")
    return t


class CoarsePersonalizer(BaseEstimator):
    """K treatments and who gets which, from a randomized experiment (module docstring).

    Parameters
    ----------
    k : number of distinct treatments.
    model : step 1, a ``model=`` name of the CLI ("auto", "tarnet", "dragonnet", "gb_s", "gb_t", "dr",
        "dose_logit", "dose_vc").
    discretizer : step 2 solver, "sinkhorn" (entropic OT), "lloyd" (the paper's alternation) or "exact".
    min_share, max_share : optional bounds on each treatment's share of customers.
    constraints : ``coarse_gpu.discretize.Constraint`` side constraints on the assignment of the
        training rows (weights (N,) in the order of X's rows, values (M,) over the candidate
        treatments ``candidates_``; docs/constraints.md), or a function of the (M, d) candidate
        treatments that returns them (the candidates are known once the data is): a budget, group
        parity, ... The K treatments
        and the training rows' assignment satisfy them exactly; new customers are assigned by their
        best of the K treatments, so the saved policy records the constraints but does not enforce them.
    n_folds : cross-fitting folds of step 1.
    model_params : extra ``model.*`` settings, e.g. {"hidden": 64} or {"candidates": ["gb_s", "gb_t"]}.
    categorical : columns of X to one-hot encode although they hold numbers (string / category columns
        are encoded anyway).
    seed, device ("auto" | "cpu" | "cuda"), verbose (progress bars).

    Fitted attributes: treatments_ (K, d), assignment_ (N,) of the training rows (from their
    out-of-fold estimates), policy_ (the DeployedPolicy that assigns new customers), model_ (step 1's
    ensemble), model_selection_ (dict), treatment_names_, feature_names_in_.
    """

    def __init__(self, *, k: int = 5, model: str = "auto", discretizer: str = "sinkhorn",
                 min_share: Optional[float] = None, max_share: Optional[float] = None,
                 constraints: Sequence = (), n_folds: int = 5,
                 model_params: Optional[dict] = None, categorical: Sequence[str] = (), seed: int = 0,
                 device: str = "auto", verbose: bool = False) -> None:
        self.k = k
        self.model = model
        self.discretizer = discretizer
        self.min_share = min_share
        self.max_share = max_share
        self.constraints = constraints
        self.n_folds = n_folds
        self.model_params = model_params
        self.categorical = categorical
        self.seed = seed
        self.device = device
        self.verbose = verbose

    # -- fit -------------------------------------------------------------------------------------
    def _experiment(self, X, treatment, y, propensity):
        from coarse_gpu.data.file import FileSpec, experiment_from_frame, is_time_column

        feats = _frame(X)
        t = _treatment_frame(treatment, len(feats))
        clash = sorted(set(feats.columns) & set(t.columns))
        if clash:
            raise ValueError(f"treatment column(s) {clash} are also columns of X; rename one of them")
        df = pd.concat([feats, t], axis=1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if y.shape[0] != len(df):
            raise ValueError(f"y has {y.shape[0]} rows but X has {len(df)}")
        # the names the data checks' messages use: the arguments', unless X has such a column
        out, prop = ("y", "propensity") if not {"y", "propensity"} & set(map(str, df.columns)) else \
            ("__outcome__", "__propensity__")
        df[out] = y
        # String, category and boolean columns are categorical; numeric ones only when listed (dates
        # are neither: the data checks refuse them by name).
        cats = list(self.categorical) + [str(c) for c in feats.columns if str(c) not in self.categorical
                                         and not pd.api.types.is_numeric_dtype(feats[c])
                                         and not is_time_column(feats[c])]
        spec = FileSpec(features=[str(c) for c in feats.columns], treatment=[str(c) for c in t.columns],
                        outcome=out, categorical=cats, min_per_arm=2)
        if propensity is not None:
            df[prop] = np.asarray(propensity, dtype=np.float64).reshape(-1)
            spec.propensity = prop
        return experiment_from_frame(df, spec, source="the arrays passed to CoarsePersonalizer.fit")

    def _model_cfg(self):
        from omegaconf import OmegaConf

        from coarse_gpu.experiment.config import ModelConfig

        cfg = OmegaConf.structured(ModelConfig)
        cfg.name = self.model
        cfg.n_folds = int(self.n_folds)
        cfg.checkpoint = False
        for key, v in (self.model_params or {}).items():
            if key not in cfg:
                raise ValueError(f"model_params: unknown model key {key!r}; known keys: {sorted(cfg.keys())}")
            cfg[key] = v
        return cfg

    def fit(self, X, treatment, y, propensity=None, *, response=None, value=None,
            accounting=None) -> "CoarsePersonalizer":
        """Step 1 (cross-fitted on every row) and step 2 (``k`` treatments on the out-of-fold estimates).

        response, value (N,) and accounting (``coarse_gpu.data.Accounting``, expressions in the treatment
        column names): the declared profit structure (docs/data.md); the accounting must reproduce y row
        by row. With it model="auto" also weighs the two-part learners and model="twopart" can run."""
        from omegaconf import OmegaConf

        from coarse_gpu.discretize import SOLVERS, discretize
        from coarse_gpu.experiment.personalize import personalize
        from coarse_gpu.experiment.pipeline import candidate_treatments, check_k_values
        from coarse_gpu.policy.io import deployable
        from coarse_gpu.policy.policy import Policy
        from coarse_gpu.utils import resolve_device, seed_everything

        if self.discretizer not in SOLVERS:
            raise ValueError(f"discretizer={self.discretizer!r} is not one of {list(SOLVERS)}")
        seed_everything(int(self.seed))
        device = resolve_device(self.device)
        data = self._experiment(X, treatment, y, propensity)
        if response is not None or value is not None or accounting is not None:
            data = _with_structure(data, response, value, accounting)
        candidates = candidate_treatments(data, OmegaConf.create({"candidate_points": None}))
        check_k_values([int(self.k)], len(candidates), len(data), key="k")
        model, est, selection = personalize(self._model_cfg(), data, data, True, device, int(self.seed),
                                            bool(self.verbose))
        profit = est.at_candidates(candidates)  # dense, or factored at millions of customers (as the CLI)
        constraints = list((self.constraints(candidates) if callable(self.constraints) else self.constraints) or ())
        res = discretize(profit, int(self.k), candidates=candidates, solver=self.discretizer,
                         min_share=self.min_share, max_share=self.max_share, seed=int(self.seed), device=str(device),
                         constraints=constraints or None)
        info = {"solver": res.solver}
        if constraints:  # the same record as the CLI's (coarse_gpu.experiment.methods.ot_policy)
            info["constraints"] = {"spec": {"n_constraints": len(constraints), "source": "python"},
                                   "rows": res.info.get("constraints", []), "enforced": False}
        policy = Policy("ot", res.treatments, res.assignment, info)
        self.policy_ = deployable(policy, model, data, candidates, data.X, profit)
        self.treatments_ = np.asarray(res.treatments, dtype=np.float64)
        self.candidates_ = np.asarray(candidates, dtype=np.float64)
        self.assignment_ = np.asarray(res.assignment, dtype=np.int64)
        self.model_ = model
        self.model_selection_ = selection
        self.treatment_names_ = list(data.space.names)
        self.feature_names_in_ = list(self.policy_.feature_schema.columns)
        self._data_space = data.space
        return self

    # -- use -------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "policy_"):
            raise RuntimeError("this CoarsePersonalizer is not fitted yet: call fit(X, treatment, y) first")

    def _matrix(self, X) -> np.ndarray:
        return self.policy_.feature_schema.transform(_frame(X), "X")

    def assign(self, X) -> np.ndarray:
        """(N,) int64 segment in [0, k) of each customer: its best of the k treatments by the ensemble."""
        self._check_fitted()
        return self.policy_.assign_matrix(self._matrix(X))[0]

    def predict_profit(self, X, T) -> np.ndarray:
        """(N, M) estimated profit of each customer at treatments T (M, d) (the fold models' average)."""
        self._check_fitted()
        return self.policy_.model.predict_profit(self._matrix(X), np.atleast_2d(np.asarray(T, dtype=np.float64)))

    def evaluate(self, X, treatment, y, propensity=None, n_boot: int = 1000, ci_level: float = 0.95) -> dict:
        """Doubly robust value per customer of the policy on randomized data (X, treatment, y), with a
        percentile-bootstrap CI. The data must be new to the model for an honest value (a held-out
        experiment); on the training rows the ensemble has seen every customer."""
        from coarse_gpu.evaluate import arm_weights, dr_scores, dr_value

        self._check_fitted()
        X_m = self._matrix(X)
        t = _treatment_frame(treatment, X_m.shape[0]).to_numpy(dtype=np.float64)
        arms = np.asarray(self.policy_.model.arms_, dtype=np.float64)
        match = np.all(t[:, None, :] == arms[None, :, :], axis=2)
        if not match.any(1).all():
            bad = int(np.flatnonzero(~match.any(1))[0])
            raise ValueError(f"row {bad}: treatment {t[bad].tolist()} is not one of the experiment's arms")
        arm = match.argmax(1)
        e = np.asarray(propensity, dtype=np.float64) if propensity is not None else \
            (np.bincount(arm, minlength=len(arms)) / len(arm))[arm]
        seg = self.policy_.assign_matrix(X_m)[0]
        mu_arms = self.policy_.model.predict_arms(X_m)
        mu_pol = self.policy_.model.predict_profit(X_m, self.treatments_)[np.arange(len(seg)), seg]
        kappa = arm_weights(self.treatments_, arms)[seg]
        res = dr_value(dr_scores(np.asarray(y, dtype=np.float64), arm, e, mu_arms, mu_pol, kappa),
                       n_boot=n_boot, alpha=1 - ci_level, seed=int(self.seed))
        return {"dr_value": res.value, "dr_ci": list(res.ci), "se": res.se, "n": res.n,
                "segment_sizes": np.bincount(seg, minlength=len(self.treatments_)).tolist()}

    def save(self, path) -> Path:
        """Write the policy folder (the CLI's ``policies/<method>_k<K>`` format; ``coarse-gpu-assign`` reads it)."""
        from coarse_gpu.policy.io import save_policy

        self._check_fitted()
        return save_policy(path, self.policy_)

    @classmethod
    def load(cls, path, device: str = "cpu") -> "CoarsePersonalizer":
        """A fitted CoarsePersonalizer from a saved policy folder (its own or the CLI's)."""
        from coarse_gpu.policy.io import load_policy

        pol = load_policy(path, device=device)
        cp = cls(k=pol.k, device=device)
        cp.policy_ = pol
        cp.treatments_ = np.asarray(pol.treatments, dtype=np.float64)
        cp.model_ = pol.model
        cp.treatment_names_ = list(pol.treatment_names)
        cp.feature_names_in_ = list(pol.feature_schema.columns)
        return cp


def _with_structure(data, response, value, accounting):
    """``data`` with the declared profit structure, checked: all three given, the accounting bound to the
    treatment names, and reproducing y row by row (the first disagreeing rows named)."""
    import dataclasses

    from coarse_gpu.models.twopart import unstack_outcome

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
