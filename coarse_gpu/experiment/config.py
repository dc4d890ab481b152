"""Structured (dataclass) schemas for every Hydra config group.

Each YAML file under ``configs/<group>/`` lists its schema in its defaults list, so a wrong key or a
wrong type fails when the config is composed, with Hydra naming the key (e.g. ``Key 'n_custmers' not
in 'SimulatedDataConfig'``). ``register_configs()`` puts the schemas into Hydra's ConfigStore, and with
them a ``model/<name>`` node for every registered learner (coarse_gpu.models.registry) that has no
``configs/model/<name>.yaml``: ``model_node``, the ``ModelConfig`` defaults with its name and class.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from coarse_gpu.discretize.options import SolverOptions
from coarse_gpu.models.registry import model_entries


@dataclass
class SimulatedDataConfig:
    """The built-in simulated promotions field experiment (coarse_gpu.data.simulator)."""

    name: str = "promotions"
    # The simulator class, built by hydra.utils.instantiate with the keys below that its __init__ takes
    # (your own simulator with the same sample() -> ExperimentData works too).
    _target_: str = "coarse_gpu.data.simulator.PromotionsSimulator"
    n_customers: int = 50_000
    discount_levels: List[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4])
    duration_levels: List[float] = field(default_factory=lambda: [0.0, 2.0, 4.0])
    margin: float = 0.5
    contact_cost: float = 0.35
    beta_max: float = 15.0
    gamma_max: float = 2.0
    type_sharpness: float = 4.0
    basket_sigma: float = 0.4
    n_trips: int = 8  # shopping trips averaged into each customer's outcome (noise variance / n_trips)
    n_noise_features: int = 5
    # true: step 1 also gets the behaviour (purchases, spend per purchase) and the accounting behind the
    # outcome (two-part learners in model=auto); the outcomes are the same either way
    declare_structure: bool = False
    # 0 (default): every customer trains the cross-fitted model and is scored out-of-fold. > 0: this
    # share is held out instead: the model never sees it; policies are chosen on its estimated
    # profits and scored on its true profits / realized outcomes.
    eval_fraction: float = 0.0
    # Candidate treatments for the discretizer and the baselines: a grid with this many points per
    # treatment dimension (continuous refinement may move treatments off it).
    candidate_points: List[int] = field(default_factory=lambda: [26, 21])


@dataclass
class HurdleDataConfig:
    """The zero-inflated, heavy-tailed promotions experiment (coarse_gpu.data.hurdle; docs/data.md):
    24 arms over discount x free shipping x bonus items, stratified randomization, 28 of 36 covariates
    irrelevant, and the firm's declared profit structure (purchase, basket, accounting)."""

    name: str = "hurdle"
    _target_: str = "coarse_gpu.data.hurdle.HurdlePromotionsSimulator"
    n_customers: int = 40_000
    basket_sigma: float = 1.0  # log-sd of the realized basket around its mean
    control_share_loyal: float = 0.2  # stratified design: P(control) for loyal customers (others 1/24)
    eval_fraction: float = 0.0
    candidate_points: Optional[List[int]] = None  # null: the 24 arms (the levers are discrete)


@dataclass
class DoseDataConfig:
    """The continuously randomized discount experiment (coarse_gpu.data.dose_simulator; docs/data.md):
    every customer her own discount drawn uniformly from [dose_low, dose_high], one purchase occasion,
    known true profits. No arms: the main job runs it as a continuous dose (coarse_gpu.experiment.dose)."""

    name: str = "dose"
    _target_: str = "coarse_gpu.data.dose_simulator.DoseSimulator"
    n_customers: int = 20_000
    dose_low: float = 0.0
    dose_high: float = 0.5
    margin: float = 0.5
    beta_max: float = 15.0
    type_sharpness: float = 3.0
    basket_sigma: float = 0.4
    n_trips: int = 1
    n_noise_features: int = 5
    eval_fraction: float = 0.0
    # candidate doses: a grid with this many points over the observed doses (null: 41)
    candidate_points: Optional[List[int]] = None


@dataclass
class FileDataConfig:
    """Your own randomized experiment from a CSV / Parquet file (coarse_gpu.data.file).

    One row per customer. ``features``/``treatment`` are lists of column names; ``outcome`` is the
    realized profit per customer, or a response turned into profit by
    profit = outcome_scale * outcome - sum_j treatment_cost[j] * treatment_j.
    """

    name: str = "file"
    # the data source class, built by hydra.utils.instantiate with the keys below (sample() -> ExperimentData)
    _target_: str = "coarse_gpu.data.file.FileSource"
    path: Optional[str] = None  # CSV (.csv, .csv.gz, .tsv) or Parquet (.parquet, .pq)
    features: List[str] = field(default_factory=list)
    treatment: List[str] = field(default_factory=list)
    outcome: Optional[str] = None
    propensity: Optional[str] = None  # probability of the received arm; null = empirical arm frequency
    id: Optional[str] = None  # unique customer id, copied to assignment outputs
    categorical: List[str] = field(default_factory=list)  # feature columns to one-hot encode
    treatment_low: Optional[List[float]] = None  # declared range per treatment column; rows outside = error
    treatment_high: Optional[List[float]] = None
    # the "no treatment" point; null = each column's minimum (a categorical column: its first label)
    control: Optional[List[Any]] = None
    min_per_arm: int = 10  # fewest customers an arm may have
    outcome_scale: float = 1.0
    treatment_cost: Optional[List[float]] = None
    # The profit's structure (all optional; docs/data.md "Declaring the profit's structure"): the
    # behaviour columns and the firm's accounting, each a number or an expression in the treatment
    # columns. profit = response * (value * margin - cost_per_response) - cost_per_customer.
    response: Optional[str] = None  # column: 0/1 purchase or a count
    value: Optional[str] = None  # column: value (spend) per response; ignored (may be empty) where response = 0
    margin: Optional[str] = None  # e.g. '0.40 - discount' (null: 1)
    cost_per_response: Optional[str] = None  # e.g. '4*free_ship + 3*bonus_items' (null: 0)
    cost_per_customer: Optional[str] = None  # e.g. '0.10*emailed' (null: 0)
    eval_fraction: float = 0.0
    # null: candidates = the tensor grid of the arms' coordinates; else a regular grid with this many
    # points per treatment dimension over [low, high] (needs arms that form a full grid).
    candidate_points: Optional[List[int]] = None
    # {treatment column: continuous | discrete | categorical} (docs/data.md "Treatment kinds"); a column
    # not named is continuous if numeric (kept on its observed values, with a warning, if they are all
    # integers), categorical if it holds text
    treatment_kinds: Dict[str, str] = field(default_factory=dict)
    # true: combinations of the discrete / categorical dimensions that no customer received may be offered
    # (their profits are extrapolations, and results.json / the report say so)
    allow_unseen_combinations: bool = False
    # a continuously randomized dose (every customer her own dose, no arms; docs/data.md): null = detected
    # (numeric treatment, at least half the rows distinct), true / false = declared
    continuous_dose: Optional[bool] = None
    # uniform: the doses were drawn uniformly on [treatment_low, treatment_high] (a known density for the
    # kernel DR); null: the density f(t|x) is estimated, or read from data.propensity when given
    dose_design: Optional[str] = None


@dataclass
class ThorntonDataConfig:
    """Thornton (2008) HIV-results incentives experiment via causaldata (coarse_gpu.data.real)."""

    name: str = "thornton"
    _target_: str = "coarse_gpu.data.real.ThorntonSource"  # built by hydra.utils.instantiate, as the others
    # the randomized incentive rounded to this step -> arms 0, 0.5, ..., 3; null: the raw incentive
    # (its 27 randomized values, each its own arm; docs/data.md)
    incentive_step: Optional[float] = 0.5
    value_of_result: float = 2.0  # profit = value_of_result * got - incentive
    min_per_arm: int = 10
    eval_fraction: float = 0.0
    candidate_points: Optional[List[int]] = None


@dataclass
class IHDPDataConfig:
    """IHDP semi-synthetic benchmark, response surface B, via econml (coarse_gpu.data.real)."""

    name: str = "ihdp"
    _target_: str = "coarse_gpu.data.real.IHDPSource"  # built by hydra.utils.instantiate, as the others
    treatment_cost: float = 0.0  # profit = y - treatment_cost * treat
    min_per_arm: int = 10
    eval_fraction: float = 0.0
    candidate_points: Optional[List[int]] = None


@dataclass
class ModelConfig:
    """Step 1: the CATE model (coarse_gpu.models), cross-fitted (coarse_gpu.experiment.personalize).

    A null value means "adapt to the data" (coarse_gpu.models.defaults) or the model's own default.
    """

    # tarnet | dragonnet | dose_logit | dose_vc | gb_s | gb_t | dr | arm_means | twopart | a learner registered
    # with coarse_gpu.models.register_model | auto (cross-validated choice among ``candidates`` by decision
    # loss, coarse_gpu.models.select): the model's label in the outputs
    name: str = "tarnet"
    # The estimator class, built by hydra.utils.instantiate with the keys below that its __init__ takes
    # (each configs/model/<name>.yaml sets it; your own class with the same fit/predict_arms interface
    # works too). null = the registered class of ``name``.
    _target_: Optional[str] = None
    # Cross-fitting folds: every customer's estimates come from the fold model that never saw it, and
    # new customers are scored by the ensemble of all fold models. 1 = one model (needs
    # data.eval_fraction > 0: a held-out share to score).
    n_folds: int = 5
    # model=auto: the twopart_* candidates take part only when the data declare a profit structure;
    # arm_means (no heterogeneity) wins by a one-standard-error rule (coarse_gpu.models.select)
    candidates: List[str] = field(
        default_factory=lambda: ["tarnet", "gb_s", "gb_t", "arm_means", "dose_logit", "dose_vc", "twopart_gb_s",
                                 "twopart_tarnet"])
    combine: str = "stack"  # model=auto: stack (cross-fitted convex weights) | select (the best candidate)
    blend: bool = True  # model=auto, combine=select: also score the average of the best candidates
    # -- model=twopart (coarse_gpu.models.twopart): response and value learners of the family ``base``
    base: str = "gb_s"  # tarnet | dragonnet | gb_s | gb_t | dose_vc | dose_logit
    response_loss: str = "auto"  # auto (bce for 0/1, poisson for counts) | bce | poisson
    value_loss: str = "poisson"  # poisson | gamma | log (log-value least squares + smearing)
    complexity: str = "auto"  # auto (boosting parts: tree size by held-out deviance) | default
    # -- neural models (tarnet, dragonnet, dose_logit, dose_vc) --------------------------------
    hidden: int = 128
    n_repr_layers: int = 3
    n_head_layers: int = 3
    # "conditioned": one head MLP fed [representation, arm coordinates, one-hot arm] so neighbouring
    # arms share strength; "separate": classic TARNet, one head per arm; null/auto: separate with at
    # most 3 arms, conditioned with more.
    arm_heads: str = "auto"
    head_hidden: Optional[int] = None
    ema: float = 0.0
    dropout: float = 0.0
    lr: float = 1e-3
    weight_decay: Optional[float] = None
    batch_size: Optional[int] = None
    max_epochs: Optional[int] = None
    patience: Optional[int] = None
    val_fraction: float = 0.2
    n_ensemble: Optional[int] = None  # networks averaged per fit; null = round(20000 / rows) in [1, 5]
    x_transform: str = "auto"  # auto: squash heavy-tailed columns before standardizing | standard
    # How per-arm predictions extend to any t: linear (multilinear, never overshoots between arms,
    # so the discretizer is not lured off-arm by interpolation artefacts) | spline.
    interpolation: str = "linear"
    # Mixed precision on CUDA: auto (bf16 autocast where supported, else fp16 + GradScaler; off on
    # CPU) | bf16 | fp16 | off.
    amp: str = "auto"
    # Train every fold x seed network as one batched module (coarse_gpu.models.ensemble; the same models
    # up to float rounding, docs/models.md "Batched training"); false: one network after another.
    batched: bool = True
    # Per-epoch checkpoints in <run dir>/checkpoints/: re-running the same command with
    # hydra.run.dir=<that run dir> resumes training where it stopped.
    checkpoint: bool = True
    alpha: float = 1.0  # DragonNet: weight of the propensity loss
    beta: float = 1.0  # DragonNet: weight of the targeted regularization
    # dose_logit: per-dimension transform phi_j of the treatment inside the logit (identity | log1p |
    # sqrt | log); null = identity for every dimension.
    transforms: Optional[List[str]] = None
    # dose_vc: B-splines per treatment dimension (null = number of distinct doses, in [2, 8]), their
    # degree, knot placement (uniform | quantile) and the P-spline smoothness penalty.
    n_basis: Optional[List[int]] = None
    degree: int = 3
    knots: str = "uniform"
    smoothness: float = 0.0
    # -- gradient boosting (gb_s, gb_t, dr): HistGradientBoostingRegressor's parameters -----------
    learning_rate: float = 0.1
    max_iter: int = 100
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 20
    l2_regularization: float = 0.0
    early_stopping: Optional[bool] = None  # null = auto (on above 10,000 rows)


@dataclass
class GroupParityConfig:
    """Group parity (coarse_gpu.experiment.methods.constraints_from_config): the mean level of one
    treatment dimension may differ by at most ``max_gap`` between any two groups of customers."""

    column: Optional[str] = None  # raw data column whose values are the groups (e.g. region); null = off
    max_gap: Optional[float] = None  # largest allowed gap between two groups' mean treatment level
    treatment: Optional[str] = None  # the treatment dimension bounded (a name in data's treatment space);
    # null = the only dimension (an error with several)


@dataclass
class DiscretizerConfig(SolverOptions):
    """Step 2: the optimal-transport discretizer (coarse_gpu.discretize).

    Every plain-valued option of ``discretize`` is inherited from ``SolverOptions`` (with its default
    and meaning there), so each is ``discretizer.<name>=...`` on the command line; the keys below are
    the main job's own.
    """

    # The step-2 entry point, built by hydra.utils.instantiate (a partial) with the options above and called
    # with the profits, K and the run's own arguments (candidates, the model's oracle, constraints, device).
    _target_: str = "coarse_gpu.discretize.discretize"
    # One K for this run (for sweeps: -m discretizer.k=2,3); null = every K in evaluation.k_values.
    k: Optional[int] = None
    epsilon: Optional[float] = None  # target entropic regularization (unit-free); null = solver default
    min_share: Optional[float] = None
    max_share: Optional[float] = None
    refine: bool = True  # move treatments off the candidate grid with the model's profit oracle
    # Budget: the mean cost per customer of the assigned treatments is at most this (null = none).
    # Cost of treatment t = sum_j unit_cost_j t_j, unit costs from ``budget_unit_cost`` or the data's
    # profit definition (data.meta["treatment_unit_cost"]: file data's treatment_cost; the simulator:
    # discount x mean revenue per customer + contact_cost x weeks). Turns off ``refine`` (the costs are
    # per candidate).
    budget: Optional[float] = None
    budget_unit_cost: Optional[List[float]] = None  # cost per unit of each treatment dimension
    group_parity: GroupParityConfig = field(default_factory=GroupParityConfig)


@dataclass
class EvaluationConfig:
    k_values: List[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 8])
    # policy_tree (econml's PolicyTree, the `real` extra: ~250 MB with numba) is not among the defaults;
    # the paper's experiments (experiment=paper_simulation, thornton) list it.
    methods: List[str] = field(
        default_factory=lambda: ["ot", "kmeans_features", "kmeans_preferences", "kmeans_profiles", "grid",
                                 "single_best"]
    )
    n_boot: int = 1000  # bootstrap resamples for the doubly robust confidence intervals
    # Simulators: per K, the share the discretizer keeps on the TRUE profits (results.json
    # "true_profit_ceiling", the figure's ceiling line; coarse_gpu.evaluate.oracle.oracle_ceiling).
    true_ceiling: bool = True
    ci_level: float = 0.95
    # Choosing K: cost of one more distinct treatment, per customer (total cost / customers it is spread
    # over); results.json "choose_k" gives the K maximizing value - cost * K for the ot policy.
    fixed_cost_per_treatment: float = 0.0
    # The metrics every results.json cell carries (coarse_gpu.evaluate.metrics.METRICS; the five built-ins,
    # which the report's tables read, then any registered by a plugin): docs/evaluation.md "Metrics".
    metrics: List[str] = field(
        default_factory=lambda: ["true_profit", "dr", "dr_share", "expected", "segments"]
    )


@dataclass
class LoggerConfig:
    """Weights & Biases. ``offline`` never needs a network or a login (``wandb sync`` later)."""

    # the tracker's factory, built by hydra.utils.instantiate with these keys and the run's folder, config,
    # run name and group (coarse_gpu.experiment.tracking.open_tracker; yours may return another tracker)
    _target_: str = "coarse_gpu.experiment.tracking.open_tracker"
    name: str = "wandb"  # wandb | none
    mode: str = "offline"  # offline | online | disabled
    project: str = "coarse_gpu"
    entity: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    init_timeout_s: float = 30.0


@dataclass
class LauncherConfig:
    """Where the jobs run (configs/launcher/): ``local`` = this machine (Hydra's basic launcher),
    ``slurm`` = a SLURM job array through hydra-submitit-launcher (these values feed hydra.launcher)."""

    name: str = "local"  # local | slurm
    partition: Optional[str] = None
    gpus_per_node: Optional[int] = None
    cpus_per_task: Optional[int] = None
    mem_gb: Optional[int] = None
    timeout_min: int = 60
    array_parallelism: int = 256  # at most this many jobs of a sweep run at once
    nodes: int = 1
    tasks_per_node: int = 1
    account: Optional[str] = None
    qos: Optional[str] = None


@dataclass
class ExperimentConfig:
    """Name and description of a saved experiment (configs/experiment/, selected by ``experiment=``)."""

    name: str = "default"
    description: str = ""


@dataclass
class RunConfig:
    """The whole run (configs/config.yaml)."""

    defaults: List[Any] = field(default_factory=list)
    data: Any = MISSING
    model: ModelConfig = MISSING
    discretizer: DiscretizerConfig = MISSING
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    logger: LoggerConfig = MISSING
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    seed: int = 0
    scale: float = 1.0  # multiplies data.n_customers of simulated data (e.g. scale=10 device=cuda on a GPU)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    quiet: bool = False  # no progress bars (also off when the CI environment variable is set)
    # Rerun into a run folder that holds a run with another config: replace it (its outputs stay until
    # the new run completes). Without it such a rerun is refused (coarse_gpu.experiment.rundir).
    overwrite: bool = False
    debug: bool = False  # print the full traceback of an error (it is always in the run's cli.log)
    # One job on several processes (torchrun, or launcher=slurm with nodes x tasks_per_node): DDP training,
    # the OT discretizer sharded over the ranks, rank 0 writes (coarse_gpu.experiment.distributed).
    distributed: bool = False
    # Modules to import before the config is checked, whose import registers a metric (or another
    # extension): coarse_gpu.utils.plugins; the environment variable COARSE_GPU_PLUGINS does the same.
    plugins: List[str] = field(default_factory=list)


GROUP_SCHEMAS = {
    "data": [("promotions_schema", SimulatedDataConfig), ("file_schema", FileDataConfig),
             ("hurdle_schema", HurdleDataConfig), ("dose_schema", DoseDataConfig),
             ("thornton_schema", ThorntonDataConfig), ("ihdp_schema", IHDPDataConfig)],
    "model": [("model_schema", ModelConfig)],
    "discretizer": [("discretizer_schema", DiscretizerConfig)],
    "logger": [("logger_schema", LoggerConfig)],
    "evaluation": [("evaluation_schema", EvaluationConfig)],
    # launcher/ and experiment/ files are `# @package _global_` (they also set hydra.* or patch other
    # groups); their own keys live under `launcher:` / `experiment:`, validated by these schemas
    # through RunConfig.
    "launcher": [("launcher_schema", LauncherConfig)],
    "experiment": [("experiment_schema", ExperimentConfig)],
}

#: ``data.name`` -> the source class its schema names (``_target_``): for a data node written without one.
SOURCE_TARGETS = {schema.name: schema._target_ for _, schema in GROUP_SCHEMAS["data"]}

_registered = False
#: The registered learners whose ``model/<name>`` node is in the ConfigStore.
_stored_models: set[str] = set()
#: Mapping-valued keys whose entries the user names (``data.treatment_kinds={creative:categorical}``):
#: their node accepts new keys, else Hydra's struct mode would refuse every column name as an unknown key
#: (the values are still typed, and validate.py names a wrong column or kind).
OPEN_MAPPINGS = {FileDataConfig: ("treatment_kinds",)}


def config_dir() -> Path:
    """The Hydra config folder: $COARSE_GPU_CONFIG_DIR, else ``configs/`` of this source checkout.
    FileNotFoundError (saying how to fix it) when it has no config.yaml."""
    env = os.environ.get("COARSE_GPU_CONFIG_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "configs"
    if not (path / "config.yaml").is_file():
        raise FileNotFoundError(
            f"no config.yaml in {path}. Install from a source checkout with `pip install -e .` "
            "or point COARSE_GPU_CONFIG_DIR at a copy of the repository's configs/ folder.")
    return path


#: Constructor parameters the job sets itself (build_model), never config keys.
_JOB_PARAMS = ("self", "seed", "device", "verbose", "checkpoint_dir")


def _own_params(cls: type) -> list[tuple[str, Any, Any]]:
    """(name, type, field) of the keyword parameters of ``cls.__init__`` that ``ModelConfig`` lacks and
    that have a plain default (a number, a string, a bool, None or a list of those): the learner's own
    config keys, typed by their default."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    out = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in known or p.name in _JOB_PARAMS or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        d = p.default
        if isinstance(d, (bool, int, float, str)):
            out.append((p.name, type(d), field(default=d)))
        elif d is None:
            out.append((p.name, Optional[Any], field(default=None)))
        elif isinstance(d, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in d):
            out.append((p.name, List[Any], field(default_factory=lambda d=d: list(d))))
    return out


#: The schemas of registered learners with parameters of their own, by model name (``_model_schema``).
_SCHEMAS: dict[str, type] = {}
_SCHEMA_PREFIX = "ModelConfig_"


def _model_schema(name: str) -> type:
    """``ModelConfig``, or for a registered learner with parameters of its own (``_own_params``) a
    subclass with them, named ``ModelConfig_<name>`` in this module so that a composed config pickles
    (a SLURM launcher sends it to its jobs; ``__getattr__`` below rebuilds it there)."""
    if name not in _SCHEMAS:
        entry = next((e for e in model_entries() if e.name == name), None)
        own = _own_params(entry.cls) if entry is not None else []
        if not own:
            return ModelConfig
        schema = dataclasses.make_dataclass(_SCHEMA_PREFIX + name, own, bases=(ModelConfig,), namespace={
            "__doc__": f"model={name}: ModelConfig and the parameters of {entry.target}."})
        schema.__module__ = __name__
        _SCHEMAS[name] = schema
    return _SCHEMAS[name]


def __getattr__(attr: str):
    """``ModelConfig_<name>``: a registered learner's schema, built on first use (module docstring)."""
    if attr.startswith(_SCHEMA_PREFIX) and attr[len(_SCHEMA_PREFIX):] in {e.name for e in model_entries()}:
        return _model_schema(attr[len(_SCHEMA_PREFIX):])
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def model_node(name: str) -> DictConfig:
    """The ``model=<name>`` config of a learner without a YAML file: the ``ModelConfig`` defaults, ``name``
    and, when ``name`` is registered, its class as ``_target_`` and its own parameters as further keys
    (``_model_schema``); what ``register_configs`` stores."""
    entry = next((e for e in model_entries() if e.name == name), None)
    cfg = OmegaConf.structured(_model_schema(name))
    cfg.name = name
    if entry is not None:
        cfg._target_ = entry.target
    return cfg


def _open_mappings(node):
    """The schema ``node`` as stored: a DictConfig whose ``OPEN_MAPPINGS`` children accept new keys."""
    keys = OPEN_MAPPINGS.get(node)
    if not keys:
        return node
    cfg = OmegaConf.structured(node)
    for key in keys:
        OmegaConf.set_struct(cfg[key], False)
    return cfg


def _store_model_nodes(cs: ConfigStore) -> None:
    """A ``model/<name>`` node for each registered learner without ``configs/model/<name>.yaml`` (a
    learner registered since the last call included)."""
    try:
        folder = config_dir() / "model"
    except FileNotFoundError:
        return  # no config folder: the command line says so when it looks for config.yaml
    for entry in model_entries():
        if entry.name in _stored_models or (folder / f"{entry.name}.yaml").is_file():
            continue
        cs.store(group="model", name=entry.name, node=model_node(entry.name))
        _stored_models.add(entry.name)


def register_configs() -> None:
    """Store the schemas and the registered learners' model nodes in Hydra's ConfigStore (idempotent;
    a learner registered after an earlier call is added by the next)."""
    global _registered
    cs = ConfigStore.instance()
    _store_model_nodes(cs)
    if _registered:
        return
    cs.store(name="run_schema", node=RunConfig)
    for group, entries in GROUP_SCHEMAS.items():
        for name, node in entries:
            cs.store(group=group, name=name, node=_open_mappings(node))
    _registered = True
