"""Built-in real experiments, loaded through the packages that ship them (no copies in this repo).

``data=thornton``  Thornton (2008), "The Demand for, and Impact of, Learning HIV Status": a field
    experiment in Malawi that randomized cash incentives for learning one's HIV test result.
    Loaded with ``causaldata.thornton_hiv`` (the `causaldata` package bundles the table; no network).
      treatment   ``incentive`` = the randomized total incentive ``tinc`` rounded to the nearest
                  ``incentive_step`` (default 0.5: arms 0, 0.5, ..., 3.0). The raw ``tinc`` takes 27
                  values, some held by 2 people; a per-arm model needs several people per arm, and
                  rounding a randomized amount keeps it randomized. ``incentive_step=null``: the raw
                  ``tinc`` as a continuously randomized dose (no arms: the dose learners, candidates
                  over the observed amounts, the kernel-smoothed DR value with an estimated density;
                  coarse_gpu.experiment.dose).
      outcome     ``got`` (1 = went to learn the result); profit = value_of_result * got - incentive
                  (the program's net value, in the incentive's units; ``value_of_result`` defaults to 2).
      features    ``distvct`` (distance to the results centre, km), ``age``, ``hiv2004`` (test result).
      rows        people with a recorded incentive, outcome and covariates (rows with any of them
                  missing were not part of the incentive experiment's analysis sample).
      propensity  empirical arm frequencies (randomized amounts).
``data=ihdp``  IHDP semi-synthetic benchmark, response surface B of Hill (2011), through
    ``econml.data.dgps.ihdp_surface_B`` (econml ships the covariates; no network). Binary treatment
    ``treat`` (0/1), outcome ``y`` (profit = y - treatment_cost * treat), 25 covariates. The response
    surface is known, so the simulator's oracle (true profits, share of full personalization) is
    available: ``IHDPTruth``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from coarse_gpu.data.experiment import ExperimentData
from coarse_gpu.data.file import DataSchemaError, FileSpec, experiment_from_frame

__all__ = ["IHDPTruth", "load_ihdp", "load_thornton", "thornton_frame"]

IHDP_COLUMNS = ["bw", "b.head", "preterm", "birth.o", "nnhealth", "momage", "sex", "twin", "b.marr", "mom.lths",
                "mom.hs", "mom.scoll", "cig", "first", "booze", "drugs", "work.dur", "prenatal", "site1", "site2",
                "site3", "site4", "site5", "site6", "site7"]


def _need(package: str, extra: str = "real"):
    try:
        return __import__(package)
    except ImportError as err:
        raise ImportError(
            f"this dataset needs the '{package}' package: pip install {package} (or pip install -e .[{extra}])"
        ) from err


# ---------------------------------------------------------------------------------------------
# Thornton HIV incentives
# ---------------------------------------------------------------------------------------------
def thornton_frame(incentive_step: Optional[float] = 0.5) -> pd.DataFrame:
    """The Thornton table (analysis rows) with the ``incentive`` treatment column added: ``tinc`` rounded to
    ``incentive_step``, or the raw ``tinc`` (its randomized values, each an arm) when None."""
    _need("causaldata")
    from causaldata import thornton_hiv  # here: causaldata is an optional extra ([real]); _need names it

    raw = thornton_hiv.load_pandas().data
    df = raw.dropna(subset=["tinc", "got", "distvct", "age", "hiv2004"]).reset_index(drop=True)
    tinc = df["tinc"].to_numpy(dtype=np.float64)
    if incentive_step is None:
        df["incentive"] = tinc
    elif not incentive_step > 0:
        raise ValueError(f"data.incentive_step must be > 0 or null (the raw incentive), got {incentive_step}")
    else:
        df["incentive"] = np.round(tinc / incentive_step) * incentive_step
    df["person"] = np.arange(len(df))
    return df


def load_thornton(cfg: Mapping[str, Any]) -> ExperimentData:
    """ExperimentData of the Thornton experiment (see the module docstring); ``cfg`` = the data config."""
    step = cfg.get("incentive_step", 0.5)
    step = None if step is None else float(step)
    value = float(cfg.get("value_of_result", 2.0))
    df = thornton_frame(step)
    spec = FileSpec(features=["distvct", "age", "hiv2004"], treatment=["incentive"], outcome="got",
                    id="person", outcome_scale=value, treatment_cost=[1.0],
                    min_per_arm=int(cfg.get("min_per_arm", 10)),
                    # the raw incentive: 27 values, some held by 2 people: a dose (kernel DR), not 27 arms
                    continuous_dose=step is None)
    data = experiment_from_frame(df, spec, source="causaldata.thornton_hiv")
    data.meta["source"] = "thornton (causaldata.thornton_hiv)"
    return data


# ---------------------------------------------------------------------------------------------
# IHDP, response surface B
# ---------------------------------------------------------------------------------------------
@dataclass
class IHDPTruth:
    """Known response surface B: mu0_i (control), mu1_i (treated), shapes (N,).

    ``profit(T)`` at treatments t in [0, 1] (the arms are 0 and 1; in between: the linear mix, the
    same interpolation the per-arm models use) minus ``treatment_cost * t``.
    """

    mu0: np.ndarray
    mu1: np.ndarray
    treatment_cost: float = 0.0

    def __len__(self) -> int:
        return int(self.mu0.shape[0])

    def subset(self, rows: np.ndarray) -> "IHDPTruth":
        return IHDPTruth(self.mu0[rows], self.mu1[rows], self.treatment_cost)

    def profit(self, treatments, rows: Optional[np.ndarray] = None) -> np.ndarray:
        if hasattr(treatments, "detach"):
            treatments = treatments.detach().cpu().numpy()
        t = np.clip(np.asarray(treatments, dtype=np.float64).reshape(-1), 0.0, 1.0)
        sl = slice(None) if rows is None else rows
        return (self.mu0[sl, None] * (1.0 - t[None, :]) + self.mu1[sl, None] * t[None, :]
                - self.treatment_cost * t[None, :])

    def best_on(self, candidates: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        p = self.profit(candidates)
        return p.argmax(1), p.max(1)


def load_ihdp(cfg: Mapping[str, Any], seed: int = 0) -> ExperimentData:
    """ExperimentData of IHDP surface B drawn with ``random_state=seed``, with its IHDPTruth."""
    _need("econml")
    from econml.data import dgps  # here: econml is an optional extra ([real]); _need names it
    from sklearn.utils import check_random_state  # here: coarse_gpu.data loads no scikit-learn; econml does

    Y, T, X, true_te = dgps.ihdp_surface_B(random_state=int(seed))
    # The same draws as econml (beta first, then the noise), to recover mu0 / mu1 exactly.
    rs = check_random_state(int(seed))
    beta = rs.choice([0, 0.1, 0.2, 0.3, 0.4], size=X.shape[1], replace=True, p=[0.6, 0.1, 0.1, 0.1, 0.1])
    offset = np.concatenate((np.zeros((X.shape[0], 1)), np.ones((X.shape[0], X.shape[1] - 1)) * 0.5), axis=1)
    mu0 = np.exp((X + offset) @ beta)
    mu1 = mu0 + true_te
    if not np.allclose(mu1 - mu0, true_te):  # pragma: no cover - guards against an econml change
        raise RuntimeError("IHDP: could not reproduce econml's response surface B")
    cost = float(cfg.get("treatment_cost", 0.0))
    df = pd.DataFrame(X[:, 1:].astype(np.float64), columns=IHDP_COLUMNS)  # column 0 is econml's intercept
    df["treat"] = np.asarray(T, dtype=np.float64)
    df["y"] = np.asarray(Y, dtype=np.float64).reshape(-1)
    df["child"] = np.arange(len(df))
    constant = [c for c in IHDP_COLUMNS if df[c].nunique() < 2]
    spec = FileSpec(features=[c for c in IHDP_COLUMNS if c not in constant], treatment=["treat"], outcome="y",
                    id="child", treatment_cost=[cost], min_per_arm=int(cfg.get("min_per_arm", 10)))
    try:
        data = experiment_from_frame(df, spec, source="econml.data.dgps.ihdp_surface_B")
    except DataSchemaError:  # pragma: no cover - the packaged table is clean
        raise
    data.truth = IHDPTruth(mu0, mu1, cost)
    data.meta["source"] = "ihdp surface B (econml.data.dgps.ihdp_surface_B)"
    return data


class ThorntonSource:
    """``data=thornton`` as a data source object (``configs/data/thornton.yaml``'s ``_target_``, built by
    ``hydra.utils.instantiate``): ``sample()`` is ``load_thornton`` of these keys."""

    def __init__(self, incentive_step: Optional[float] = 0.5, value_of_result: float = 2.0,
                 min_per_arm: int = 10) -> None:
        self.incentive_step = incentive_step
        self.value_of_result = value_of_result
        self.min_per_arm = min_per_arm

    def sample(self) -> ExperimentData:
        return load_thornton(vars(self))


class IHDPSource:
    """``data=ihdp`` as a data source object (``configs/data/ihdp.yaml``'s ``_target_``): ``sample()`` is
    ``load_ihdp`` of these keys, surface B drawn with ``random_state=seed``."""

    def __init__(self, treatment_cost: float = 0.0, min_per_arm: int = 10, seed: int = 0) -> None:
        self.treatment_cost = treatment_cost
        self.min_per_arm = min_per_arm
        self.seed = seed

    def sample(self) -> ExperimentData:
        return load_ihdp(vars(self), self.seed)
