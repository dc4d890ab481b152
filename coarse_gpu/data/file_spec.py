"""The column spec of ``data=file`` (which column plays which role) and the data-check error.

Part of coarse_gpu.data.file (the package's file source); see that module's docstring.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from coarse_gpu.data.accounting import Accounting, AccountingError
from coarse_gpu.data.treatments import KINDS

CSV_SUFFIXES = (".csv", ".csv.gz", ".txt", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
MAX_LEVELS = 1000  # a categorical column with more levels is almost surely an id or a typo
#: Largest |value| a numeric column may hold: the model matrix and the networks are float32, where a
#: larger finite value (1e300) becomes inf.
MAX_ABS_VALUE = float(np.finfo(np.float32).max)
_log = logging.getLogger(__name__)


class DataSchemaError(ValueError):
    """The input table does not fit the declared columns. ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[str], source: str = "the data") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"data check failed for {source}: {len(self.problems)} problem(s)\n{lines}")


#: The keys of a declared profit structure (FileDataConfig, docs/data.md).
STRUCTURE_KEYS = ("response", "value", "margin", "cost_per_response", "cost_per_customer")
#: Tolerance of the accounting against a realized profit column: a cent (rounded files) or 1e-6 relative.
ACCOUNTING_ATOL = 0.01
ACCOUNTING_RTOL = 1e-6


# ---------------------------------------------------------------------------------------------
# the column spec
# ---------------------------------------------------------------------------------------------
@dataclass
class FileSpec:
    """Which column plays which role (mirrors ``FileDataConfig`` in coarse_gpu.experiment.config).

    features, treatment : lists of column names; outcome : one column name.
    propensity, id : optional column names. categorical : feature columns to one-hot encode even
        if they hold numbers (string columns must be listed too: nothing is guessed).
    treatment_low, treatment_high : optional declared range of each treatment column (d floats);
        rows outside it are an error. Default: the observed range.
    control : optional "no treatment" point (d floats); default: each treatment column's minimum.
    min_per_arm : fewest customers an arm may have (per-arm models need several rows per arm).
    outcome_scale, treatment_cost : profit = outcome_scale * outcome - treatment_cost . t.
    group_columns : raw columns read beside the features but never model inputs (a protected attribute
        that ``discretizer.group_parity`` bounds, which the model must not use); kept in
        ``ExperimentData.features`` as strings, absent from ``X`` and the feature schema. Only those
        present in the file are read (the constraint's check names a missing one).
    """

    features: list[str]
    treatment: list[str]
    outcome: str
    propensity: Optional[str] = None
    id: Optional[str] = None
    categorical: list[str] = field(default_factory=list)
    treatment_low: Optional[list[float]] = None
    treatment_high: Optional[list[float]] = None
    control: Optional[list[float]] = None
    min_per_arm: int = 10
    outcome_scale: float = 1.0
    treatment_cost: Optional[list[float]] = None
    group_columns: list[str] = field(default_factory=list)
    #: {treatment column: kind} (coarse_gpu.data.treatments.KINDS); a column not named is continuous if
    #: numeric, categorical if it holds text. A categorical column's labels are coded 0..L-1 in sorted order.
    treatment_kinds: dict = field(default_factory=dict)
    #: false: a combination of the discrete / categorical dimensions that no customer received is never
    #: offered; true: it may be (its profit is then an extrapolation of the model, and the outputs say so)
    allow_unseen_combinations: bool = False
    # the declared profit structure (coarse_gpu.data.accounting): behaviour columns and the accounting
    response: Optional[str] = None
    value: Optional[str] = None
    margin: Optional[str] = None
    cost_per_response: Optional[str] = None
    cost_per_customer: Optional[str] = None
    #: a continuously randomized dose (every customer her own dose, no arms): None = detect it (every
    #: treatment dimension continuous and at least DOSE_DISTINCT_SHARE of the rows distinct), True /
    #: False = declared. A dose experiment skips the per-arm checks (min_per_arm) and is evaluated by
    #: the kernel-smoothed DR (coarse_gpu.evaluate.kernel_dr); ``propensity`` is then the density f(t|x).
    continuous_dose: Optional[bool] = None
    #: "uniform": the doses were drawn uniformly on [treatment_low, treatment_high] (the observed range
    #: when not given), a known generalized propensity score; None: estimated (coarse_gpu.evaluate.gps)
    dose_design: Optional[str] = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "FileSpec":
        """From a ``data`` config node (DictConfig or dict); unknown keys are ignored here."""
        def lst(v):
            return None if v is None else [x for x in v]

        return cls(
            features=[str(c) for c in (cfg.get("features") or [])],
            treatment=[str(c) for c in (cfg.get("treatment") or [])],
            outcome=cfg.get("outcome"),
            propensity=cfg.get("propensity"),
            id=cfg.get("id"),
            categorical=[str(c) for c in (cfg.get("categorical") or [])],
            treatment_low=lst(cfg.get("treatment_low")),
            treatment_high=lst(cfg.get("treatment_high")),
            control=lst(cfg.get("control")),
            min_per_arm=int(cfg.get("min_per_arm", 10)),
            outcome_scale=float(cfg.get("outcome_scale", 1.0)),
            treatment_cost=lst(cfg.get("treatment_cost")),
            treatment_kinds={str(k): v for k, v in (cfg.get("treatment_kinds") or {}).items()},
            allow_unseen_combinations=bool(cfg.get("allow_unseen_combinations", False)),
            continuous_dose=cfg.get("continuous_dose"),
            dose_design=cfg.get("dose_design"),
            **{k: (None if cfg.get(k) is None else str(cfg.get(k))) for k in STRUCTURE_KEYS},
        )

    def config_problems(self) -> list[str]:
        """Problems with the spec itself (before looking at any data)."""
        out = []
        if not self.features:
            out.append("data.features is empty: list the covariate columns, e.g. data.features=[age,income]")
        if not self.treatment:
            out.append("data.treatment is empty: list the treatment column(s), e.g. data.treatment=[discount]")
        if not self.outcome and not self.response:
            out.append("data.outcome is not set: name the realized-profit column, e.g. data.outcome=profit "
                       "(or declare the profit's structure: data.response, data.value, data.margin, ...)")
        out += self.structure_problems()
        d = len(self.treatment)
        for key in ("treatment_low", "treatment_high", "control", "treatment_cost"):
            v = getattr(self, key)
            if v is not None and len(v) != d:
                out.append(f"data.{key} has {len(v)} values but data.treatment has {d} column(s) {self.treatment}")
        for c in self.categorical:
            if c not in self.features:
                out.append(f"data.categorical lists '{c}', which is not in data.features {self.features}")
        roles: dict[str, list[str]] = {}
        for role, cols in (("features", self.features), ("treatment", self.treatment), ("outcome", [self.outcome]),
                           ("propensity", [self.propensity]), ("id", [self.id]), ("response", [self.response]),
                           ("value", [self.value])):
            for c in cols:
                if c:
                    roles.setdefault(c, []).append(role)
        for c, rs in roles.items():
            if len(rs) > 1:
                out.append(f"column '{c}' is used more than once (as {', '.join(rs)}); each column has one role")
        out += self.kind_problems()
        if self.min_per_arm < 1:
            out.append(f"data.min_per_arm must be >= 1, got {self.min_per_arm}")
        if self.continuous_dose not in (None, True, False):
            out.append(f"data.continuous_dose must be true, false or null (detect), got {self.continuous_dose!r}")
        if self.dose_design not in (None, "uniform"):
            out.append(f"data.dose_design must be 'uniform' (doses drawn uniformly on [data.treatment_low, "
                       f"data.treatment_high]) or null (density estimated), got {self.dose_design!r}")
        elif self.dose_design is not None and self.continuous_dose is False:
            out.append("data.dose_design is set but data.continuous_dose=false: a dose design describes a "
                       "continuously randomized dose; drop one of them")
        if not np.isfinite(self.outcome_scale) or self.outcome_scale == 0:
            out.append(f"data.outcome_scale must be a finite nonzero number, got {self.outcome_scale}")
        return out

    def kind_problems(self) -> list[str]:
        """data.treatment_kinds: every key a treatment column, every value a kind; no cost on a label."""
        out = []
        if not isinstance(self.treatment_kinds, Mapping):
            return [f"data.treatment_kinds must be a mapping {{column: kind}}, got {self.treatment_kinds!r}"]
        for col, kind in self.treatment_kinds.items():
            if col not in self.treatment:
                out.append(f"data.treatment_kinds.{col}: '{col}' is not a treatment column (data.treatment = "
                           f"{self.treatment})")
            elif kind not in KINDS:
                out.append(f"data.treatment_kinds.{col}={kind!r} is not a kind; use one of {list(KINDS)}")
            elif kind == "categorical" and self.treatment_cost is not None and \
                    len(self.treatment_cost) == len(self.treatment) and self.treatment_cost[self.treatment.index(col)]:
                out.append(f"data.treatment_cost[{self.treatment.index(col)}] charges a cost per unit of the "
                           f"categorical treatment column '{col}', whose values are labels: set it to 0")
        return out

    def columns(self) -> list[str]:
        cols = list(self.features) + list(self.treatment) + ([self.outcome] if self.outcome else [])
        return cols + [c for c in (self.propensity, self.id, self.response, self.value) if c]

    @property
    def structured(self) -> bool:
        """Whether a profit structure is declared (data.response and data.value)."""
        return bool(self.response and self.value)

    def accounting(self):
        """The declared ``Accounting`` bound to the treatment columns (AccountingError if it does not parse)."""
        parts = {k: getattr(self, k) for k in ("margin", "cost_per_response", "cost_per_customer")}
        defaults = {"margin": 1.0, "cost_per_response": 0.0, "cost_per_customer": 0.0}
        return Accounting(**{k: (defaults[k] if v is None else v) for k, v in parts.items()}, names=self.treatment)

    def structure_problems(self) -> list[str]:
        """The declared structure's own problems: keys that need each other, expressions that do not parse."""
        out = []
        acc_keys = [k for k in ("margin", "cost_per_response", "cost_per_customer") if getattr(self, k) is not None]
        if bool(self.response) != bool(self.value):
            have, miss = ("response", "value") if self.response else ("value", "response")
            out.append(f"data.{have} is set but data.{miss} is not: a declared profit structure needs both "
                       "(the response column, e.g. bought, and the value per response, e.g. spend)")
        elif acc_keys and not self.response:
            out.append(f"{['data.' + k for k in acc_keys]} set without data.response and data.value: the accounting "
                       "turns a response and its value into profit, so name those columns")
        if self.structured:
            try:
                self.accounting()
            except AccountingError as err:
                out.append(str(err))
        return out


# ---------------------------------------------------------------------------------------------
# reading
