"""Every config value checked before any work: ranges and cross-field rules, each problem naming its key.

``validate_config(cfg)`` runs at the start of ``coarse-gpu`` (before the run folder is touched) and
of ``run_experiment`` (for callers without the command line). It raises ``ConfigValueError`` listing
every problem at once, e.g.::

    config error: discretizer.min_share=0.5 with K=5: K * min_share = 2.5 > 1 ...; evaluation.ci_level=1.5 must be a number in (0, 1)

The dataclass schemas (coarse_gpu.experiment.config) already fix the keys and their types; this
module checks what a type cannot say: ranges, finiteness (OmegaConf floats accept nan and inf),
non-empty lists, and rules that tie keys together (share bounds x K). A rule applies only where its
key exists, so a group that gains keys (a new model) or lacks some (``data=file`` has no
``n_customers``) is checked for what it holds. What needs the data (K vs the number of candidate
treatments and of held-out customers, the arms of a file) is checked by the pipeline right after
loading the data, still before training.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
from typing import Any, Optional

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from coarse_gpu.experiment.distributed import config_problems as distributed_problems

# ConfigValueError lives with the other errors (errors.py) so that modules below validate raise it too
from coarse_gpu.experiment.errors import ConfigValueError
from coarse_gpu.utils.params import FINITE, FRACTION, NONNEG, POSITIVE, Rule, integer, number
from coarse_gpu.utils.params import fmt_number as _fmt

#: The methods ``evaluation.methods`` may list (coarse_gpu.experiment.methods implements each): here, in
#: the torch-free config check, so that checking a config loads neither torch nor the methods. A list:
#: ``methods.register_method`` (a plugin's baseline) appends to it.
METHODS = ["ot", "ot_tree", "kmeans_features", "kmeans_preferences", "kmeans_profiles", "policy_tree", "grid",
           "single_best"]


# The rule type lives with the classes' own parameter declarations (coarse_gpu.utils.params); the keys
# below are the ones no estimator class owns (data sources, the discretizer, evaluation, the launcher).
_int, _num = integer, number


#: Range rules per dotted key; keys a config does not have are skipped.
RULES: dict[str, Rule] = {
    "seed": _int(0, 2**32 - 1),  # numpy's seed range
    "scale": POSITIVE,
    # data (simulator, file, thornton, ihdp)
    "data.n_customers": _int(2),
    "data.n_trips": _int(1),
    "data.n_noise_features": _int(0),
    "data.margin": _num(0.0, 1.0, lo_open=True),
    "data.contact_cost": FINITE,
    "data.beta_max": NONNEG,
    "data.gamma_max": NONNEG,
    "data.type_sharpness": NONNEG,
    "data.basket_sigma": NONNEG,
    "data.eval_fraction": FRACTION,
    "data.candidate_points": Rule("ints", 2, null=True),
    "data.min_per_arm": _int(1),
    "data.outcome_scale": FINITE,
    "data.treatment_low": Rule("numbers", null=True),
    "data.treatment_high": Rule("numbers", null=True),
    "data.incentive_step": _num(0.0, lo_open=True, null=True),  # null: the raw incentive (a dose)
    "data.value_of_result": FINITE,
    # model: the ranges of the estimators' parameters are declared on their classes (``_parameter_constraints``)
    # and checked with the class the config names (model_build.model_key_problems, via target_problems);
    # these two are the pipeline's (folds) and a list the class checks against the data's dimensions
    "model.n_folds": _int(1),
    "model.n_basis": Rule("ints", 2, null=True),
    # discretizer
    "discretizer.k": _int(1, null=True),
    "discretizer.epsilon": _num(0.0, lo_open=True, null=True),
    "discretizer.min_share": _num(0.0, 1.0, null=True),
    "discretizer.max_share": _num(0.0, 1.0, lo_open=True, null=True),
    "discretizer.budget": _num(null=True),
    "discretizer.budget_unit_cost": Rule("numbers", null=True),
    "discretizer.group_parity.max_gap": _num(0.0, null=True),
    # evaluation
    "evaluation.k_values": Rule("ints", 1),
    "evaluation.n_boot": _int(0),
    "evaluation.ci_level": _num(0.0, 1.0, lo_open=True, hi_open=True),
    "evaluation.fixed_cost_per_treatment": NONNEG,
    # logger, launcher
    "logger.init_timeout_s": POSITIVE,
    "launcher.timeout_min": _int(1),
    "launcher.array_parallelism": _int(1),
    "launcher.nodes": _int(1),
    "launcher.tasks_per_node": _int(1),
    "launcher.gpus_per_node": _int(0, null=True),
    "launcher.cpus_per_task": _int(1, null=True),
    "launcher.mem_gb": _int(1, null=True),
}

#: RULES keys of the promotions simulator whose names data=file uses for something else.
SIMULATOR_KEYS = ("data.margin",)
#: The simulator's treatment box (coarse_gpu.data.simulator.PROMOTION_SPACE).
LEVELS = {"data.discount_levels": (0.0, 0.5), "data.duration_levels": (0.0, 4.0)}
#: Most groups a parity constraint may compare (G groups give G (G - 1) / 2 pairwise constraints).
MAX_PARITY_GROUPS = 12


def _plain(cfg: Any) -> dict:
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


def _get(tree: dict, key: str, missing: Any) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return missing
        node = node[part]
    return node


def range_problems(tree: dict) -> list[str]:
    """Values outside their range (RULES) and the simulator's levels lists."""
    missing = object()
    problems = []
    for key, rule in RULES.items():
        if key in SIMULATOR_KEYS and _get(tree, "data.name", None) != "promotions":
            continue  # data=file's data.margin is the accounting's expression (coarse_gpu.data.accounting)
        v = _get(tree, key, missing)
        if v is not missing and not rule.ok(v):
            problems.append(f"{key}={v!r} must be {rule.describe()}")
    if _get(tree, "data.name", None) == "promotions":
        for key, (lo, hi) in LEVELS.items():
            v = _get(tree, key, missing)
            if v is missing:
                continue
            ok = (isinstance(v, list) and len(v) >= 2 and len(set(v)) == len(v)
                  and all(FINITE.ok(x) and lo <= x <= hi for x in v))
            if not ok:
                problems.append(f"{key}={v!r} must be a list of >= 2 distinct numbers in [{_fmt(lo)}, {_fmt(hi)}]")
    return problems


def k_list(tree: dict) -> list[int]:
    """The K the run evaluates: ``discretizer.k`` if set, else ``evaluation.k_values``."""
    k = _get(tree, "discretizer.k", None)
    if k is not None:
        return [k]
    return list(_get(tree, "evaluation.k_values", []) or [])


def share_problems(tree: dict, k_values: list) -> list[str]:
    """Share bounds that no assignment of customers to K treatments can meet, for some K."""
    lo, hi = _get(tree, "discretizer.min_share", None), _get(tree, "discretizer.max_share", None)
    ks = [k for k in k_values if isinstance(k, int) and not isinstance(k, bool) and k >= 1]
    out = []
    if lo is not None and hi is not None and RULES["discretizer.min_share"].ok(lo) and \
            RULES["discretizer.max_share"].ok(hi) and lo > hi:
        out.append(f"discretizer.min_share={lo} exceeds discretizer.max_share={hi}")
    if lo is not None and RULES["discretizer.min_share"].ok(lo) and ks and max(ks) * lo > 1 + 1e-12:
        k = max(ks)
        out.append(f"discretizer.min_share={lo} with K={k}: K * min_share = {k * lo:.4g} > 1, so {k} treatments "
                   f"cannot each get {100 * lo:.4g}% of the customers; use discretizer.min_share <= "
                   f"{1 / k:.4g} or K <= {math.floor(1 / lo + 1e-12)}")
    if hi is not None and RULES["discretizer.max_share"].ok(hi) and ks and min(ks) * hi < 1 - 1e-12:
        k = min(ks)
        out.append(f"discretizer.max_share={hi} with K={k}: K * max_share = {k * hi:.4g} < 1, so {k} treatment(s) "
                   f"of at most {100 * hi:.4g}% each cannot cover every customer; use discretizer.max_share >= "
                   f"{1 / k:.4g} or K >= {math.ceil(1 / hi - 1e-12)}")
    return out


def list_problems(tree: dict) -> list[str]:
    """Lists that must be non-empty and without repeats: K values, methods; file ranges of the right length."""
    out = []
    missing = object()
    ks = _get(tree, "evaluation.k_values", missing)
    if ks is not missing and isinstance(ks, list):
        if not ks:
            out.append("evaluation.k_values=[] is empty: give at least one K, e.g. evaluation.k_values=[1,2,3]")
        elif len(set(map(str, ks))) != len(ks):
            out.append(f"evaluation.k_values={ks} repeats a K; list each K once")
    methods = _get(tree, "evaluation.methods", missing)
    if methods is not missing:
        if not methods:
            out.append(f"evaluation.methods=[] is empty: give at least one of {', '.join(METHODS)}")
        elif len(set(methods)) != len(methods):
            out.append(f"evaluation.methods={list(methods)} repeats a method; list each once")
        else:
            unknown = [m for m in methods if m not in METHODS]
            if unknown:
                out.append(f"evaluation.methods has unknown method(s) {unknown}; available: {list(METHODS)}")
            elif "policy_tree" in methods and importlib.util.find_spec("econml") is None:
                out.append("evaluation.methods lists policy_tree, which needs econml: pip install "
                           "'coarse_gpu[real]' (or econml), or leave policy_tree out")
    out += _metric_problems(_get(tree, "evaluation.metrics", missing), missing)
    treatment = _get(tree, "data.treatment", None)
    low, high = _get(tree, "data.treatment_low", None), _get(tree, "data.treatment_high", None)
    for key, v in (("data.treatment_low", low), ("data.treatment_high", high), ("data.control", _get(tree, "data.control", None))):
        if isinstance(v, list) and treatment and len(v) != len(treatment):
            out.append(f"{key}={v} needs one value per treatment column {list(treatment)}")
    if isinstance(low, list) and isinstance(high, list) and len(low) == len(high) and \
            RULES["data.treatment_low"].ok(low) and RULES["data.treatment_high"].ok(high):
        bad = [i for i, (a, b) in enumerate(zip(low, high)) if not a < b]
        if bad:
            out.append(f"data.treatment_low={low} must be below data.treatment_high={high} in every column "
                       f"(not in column {bad[0]})")
    out += _kind_problems(tree, treatment)
    n, scale = _get(tree, "data.n_customers", None), _get(tree, "scale", 1.0)
    if RULES["data.n_customers"].ok(n) and POSITIVE.ok(scale) and round(n * scale) < 2:
        out.append(f"scale={scale} x data.n_customers={n} leaves {round(n * scale)} customers; need at least 2")
    return out


def _metric_problems(names, missing) -> list[str]:
    """evaluation.metrics: registered names (coarse_gpu.evaluate.metrics; plugins are imported before this
    check), each once, the built-ins the report's tables read among them."""
    if names is missing:
        return []
    # here: the registry imports the oracle (coarse_gpu.discretize, torch), validate.py does not
    from coarse_gpu.evaluate.metrics import DEFAULT_JOB_METRICS, metric_name_problems

    out = metric_name_problems(names, "evaluation.metrics")
    if not out:
        dropped = [m for m in DEFAULT_JOB_METRICS if m not in names]
        if dropped:
            keep = list(DEFAULT_JOB_METRICS) + [m for m in names if m not in DEFAULT_JOB_METRICS]
            out.append(f"evaluation.metrics={list(names)} leaves out the built-in metric(s) {dropped}, which the "
                       f"report's tables read; keep them and add yours: evaluation.metrics=[{','.join(keep)}]")
    return out


def _kind_problems(tree: dict, treatment) -> list[str]:
    """data.control (numbers, or labels of categorical columns) and data.treatment_kinds (every key a
    treatment column, every value a kind), each naming the key."""
    from coarse_gpu.data.treatments import KINDS  # here: coarse_gpu.data loads torch, validate.py does not

    out = []
    control = _get(tree, "data.control", None)
    if control is not None:
        ok = isinstance(control, list) and all(
            (isinstance(v, str) and v) or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
            for v in control)
        if not ok:
            out.append(f"data.control={control!r} must be a list of finite numbers, one per treatment column (a "
                       "categorical column's control may be one of its labels)")
    kinds = _get(tree, "data.treatment_kinds", None)
    if kinds is None:
        return out
    if not isinstance(kinds, dict):
        return out + [f"data.treatment_kinds={kinds!r} must be a mapping {{column: kind}}, e.g. "
                      "data.treatment_kinds={free_ship:discrete,creative:categorical}"]
    for col, kind in kinds.items():
        if treatment and col not in treatment:
            out.append(f"data.treatment_kinds.{col}: '{col}' is not a treatment column (data.treatment = "
                       f"{list(treatment)})")
        elif kind not in KINDS:
            out.append(f"data.treatment_kinds.{col}={kind!r} is not a kind; use one of {list(KINDS)}")
    return out


def model_problems(tree: dict) -> list[str]:
    """Rules between the model and the data split: someone must be scored on held-out estimates."""
    folds, frac = _get(tree, "model.n_folds", None), _get(tree, "data.eval_fraction", None)
    name = _get(tree, "model.name", None)
    if folds == 1 and frac == 0 and name != "auto":
        return ["model.n_folds=1 with data.eval_fraction=0: one model fitted on every customer leaves no customer "
                "with a held-out estimate to choose and score policies on; use model.n_folds >= 2 (cross-fitting, "
                "the default 5) or data.eval_fraction > 0"]
    if name == "auto" and isinstance(folds, int) and folds < 2:
        return [f"model.n_folds={folds}: model=auto cross-validates its candidates and needs model.n_folds >= 2"]
    return []


def constraint_config_problems(tree: dict) -> list[str]:
    """The constraint keys that belong together (no data needed): group_parity's column and max_gap, and
    no constraints with solver=exact (subset enumeration has no side constraints)."""
    gp = _get(tree, "discretizer.group_parity", None) or {}
    out = []
    if (gp.get("column") is None) != (gp.get("max_gap") is None):
        have, lack = ("column", "max_gap") if gp.get("column") is not None else ("max_gap", "column")
        out.append(f"discretizer.group_parity.{have}={gp.get(have)!r} needs discretizer.group_parity.{lack} too "
                   "(the groups' column and the largest gap between their mean treatment levels)")
    if gp.get("treatment") is not None and gp.get("column") is None:
        out.append("discretizer.group_parity.treatment is set without discretizer.group_parity.column")
    constrained = _get(tree, "discretizer.budget", None) is not None or gp.get("column") is not None
    from coarse_gpu.discretize.spec import SOLVER_TABLE  # here, not at the top: loading validate.py loads no torch

    spec = SOLVER_TABLE.get(_get(tree, "discretizer.solver", None))
    if constrained and spec is not None and not spec.constraints:
        out.append(f"discretizer.solver={spec.name} ({spec.summary}) takes no budget or group parity; use "
                   "discretizer.solver=mip (exact, with constraints) or sinkhorn")
    return out


def data_constraint_problems(cfg: Any, columns: list, treatment_names: list, unit_cost: Optional[list],
                             candidates, groups: Optional[dict] = None) -> list[str]:
    """What the budget and group-parity keys need from the loaded data, checked before training.

    columns : the data's raw feature columns; treatment_names : its treatment dimensions; unit_cost :
    the data's cost per unit of each dimension (data.meta["treatment_unit_cost"]) or None; candidates :
    (M, d) candidate treatments; groups : {column: number of distinct values} for the parity column.
    """
    tree = _plain(cfg)
    d = _get(tree, "discretizer", {}) or {}
    out = []
    if d.get("budget") is not None:
        unit = d.get("budget_unit_cost") if d.get("budget_unit_cost") is not None else unit_cost
        if unit is None:
            out.append(f"discretizer.budget={d['budget']} needs the cost of a treatment, which this data does not "
                       f"define: set discretizer.budget_unit_cost (one cost per unit of {list(treatment_names)})")
        elif len(unit) != len(treatment_names):
            out.append(f"discretizer.budget_unit_cost={list(unit)} needs one value per treatment dimension "
                       f"{list(treatment_names)}")
        else:
            cost = np.asarray(candidates, dtype=float) @ np.asarray(unit, dtype=float)
            if cost.min() > d["budget"]:
                out.append(f"discretizer.budget={d['budget']} is below the cheapest candidate treatment's cost "
                           f"{cost.min():.6g} (costs span [{cost.min():.6g}, {cost.max():.6g}] per customer)")
    gp = d.get("group_parity") or {}
    col = gp.get("column")
    if col is not None:
        if col not in columns:
            out.append(f"discretizer.group_parity.column={col!r} is not a column of the data (neither a feature "
                       f"nor another column of data.path); columns read: {list(columns)}")
        elif groups is not None and not 2 <= groups.get(col, 0) <= MAX_PARITY_GROUPS:
            out.append(f"discretizer.group_parity.column={col!r} has {groups.get(col, 0)} distinct values; parity "
                       f"needs 2 to {MAX_PARITY_GROUPS} groups (bin a numeric column into a few groups first)")
        t = gp.get("treatment")
        if t is None and len(treatment_names) > 1:
            out.append(f"discretizer.group_parity.treatment is null but the treatment has {len(treatment_names)} "
                       f"dimensions; name the one parity bounds: one of {list(treatment_names)}")
        elif t is not None and t not in treatment_names:
            out.append(f"discretizer.group_parity.treatment={t!r} is not a treatment dimension; one of "
                       f"{list(treatment_names)}")
    return out


def solver_option_problems(tree: dict) -> list[str]:
    """Each ``discretizer.<option>`` of ``discretize``'s ``SolverOptions`` checked by the solver's own
    rules (one at a time, so every bad option is named)."""
    from coarse_gpu.discretize.options import OPTION_NAMES, check_solver_options, default_options  # here: loads torch

    given = _get(tree, "discretizer", None) or {}
    problems = []
    for name in OPTION_NAMES:
        if name in given:
            try:
                check_solver_options({**default_options(), name: given[name]})
            except (ValueError, TypeError) as err:
                problems.append(f"discretizer.{err}")
    return problems


def target_problems(tree: dict) -> list[str]:
    """The model group's keys against its estimator (``personalize.model_key_problems``); the
    simulator's ``data._target_`` importable."""
    from coarse_gpu.experiment.model_build import model_key_problems  # here: it loads torch, validate.py does not

    model = _get(tree, "model", None)
    out = model_key_problems(model) if isinstance(model, dict) and "name" in model else []
    target = _get(tree, "data._target_", None)
    if target:
        from coarse_gpu.utils.imports import locate_class  # here: coarse_gpu.utils loads torch

        try:
            locate_class(target, "data._target_")
        except ValueError as err:
            out.append(str(err))
    return out


def unknown_key_problems(cfg: Any) -> list[str]:
    """Keys of a composed config that its dataclass schema does not have. Hydra's ``+key=value``
    appends a key even to a structured config (``+discretizer.min_shares=0.3`` would be accepted and
    never read); every node typed by a schema is walked, and each extra key is named with the
    schema's closest key. A plain dict (no schema) has nothing to check."""
    out: list[str] = []

    def walk(node: DictConfig, path: str) -> None:
        schema = OmegaConf.get_type(node)
        fields = ({f.name for f in dataclasses.fields(schema)} - {"defaults"}
                  if isinstance(schema, type) and dataclasses.is_dataclass(schema) else None)
        for key in node.keys():
            full = f"{path}.{key}" if path else str(key)
            if fields is not None and key not in fields:
                near = difflib.get_close_matches(str(key), sorted(fields), n=1)
                out.append(f"unknown key '{full}' (added with '+'?): {schema.__name__} has no key '{key}'"
                           + (f"; did you mean '{(path + '.') if path else ''}{near[0]}'?" if near else
                              f"; allowed keys in {path or 'the top level'}: {', '.join(sorted(fields))}"))
                continue
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
                walk(child, full)

    if isinstance(cfg, DictConfig):
        walk(cfg, "")
    return out


def config_problems(cfg: Any) -> list[str]:
    """Every problem of ``cfg`` (an OmegaConf config or a plain dict), each a sentence naming its key."""
    unknown = unknown_key_problems(cfg)
    if unknown:  # the other rules read the known keys; an extra key is reported alone
        return unknown
    tree = _plain(cfg)
    return (target_problems(tree) + range_problems(tree) + list_problems(tree) + share_problems(tree, k_list(tree))
            + model_problems(tree) + constraint_config_problems(tree) + solver_option_problems(tree)
            + distributed_problems(tree))


def validate_config(cfg: Any) -> None:
    """Raise ``ConfigValueError`` naming every out-of-range or inconsistent value of ``cfg``."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigValueError(problems)


__all__ = ["ConfigValueError", "METHODS", "RULES", "Rule", "config_problems", "data_constraint_problems", "unknown_key_problems",
           "validate_config"]
