"""Structured (dataclass) schemas for every Hydra config group.

Each YAML file under ``configs/<group>/`` lists its schema in its defaults list, so a wrong key or a
wrong type fails when the config is composed, with Hydra naming the key (e.g. ``Key 'n_custmers' not
in 'SimulatedDataConfig'``). ``register_configs()`` puts the schemas into Hydra's ConfigStore.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class SimulatedDataConfig:
    """The built-in simulated promotions field experiment (coarse_gpu.data.simulator)."""

    name: str = "promotions"
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
    # Share of customers held out: the model never sees them; policies are chosen on their
    # estimated profits and scored on their true profits / realized outcomes.
    eval_fraction: float = 0.4
    # Candidate treatments for the discretizer and the baselines: a grid with this many points per
    # treatment dimension (continuous refinement may move treatments off it).
    candidate_points: List[int] = field(default_factory=lambda: [26, 21])


@dataclass
class ModelConfig:
    """Step 1: the neural CATE model (coarse_gpu.models)."""

    name: str = "tarnet"  # tarnet | dragonnet
    hidden: int = 128
    n_repr_layers: int = 3
    n_head_layers: int = 3
    # "conditioned": one head MLP fed [representation, arm coordinates, one-hot arm] so neighbouring
    # arms share strength (about 4 points of K=5 share better on the promotions data); "separate":
    # classic TARNet, one independent head per arm.
    arm_heads: str = "conditioned"
    head_hidden: Optional[int] = None
    ema: float = 0.0
    dropout: float = 0.0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 512
    max_epochs: int = 60
    patience: int = 8
    val_fraction: float = 0.2
    # How per-arm predictions extend to any t: linear (multilinear, never overshoots between arms,
    # so the discretizer is not lured off-arm by interpolation artefacts) | spline.
    interpolation: str = "linear"
    alpha: float = 1.0  # DragonNet: weight of the propensity loss
    beta: float = 1.0  # DragonNet: weight of the targeted regularization


@dataclass
class DiscretizerConfig:
    """Step 2: the optimal-transport discretizer (coarse_gpu.discretize)."""

    solver: str = "sinkhorn"  # sinkhorn | lloyd
    # One K for this run (for sweeps: -m discretizer.k=2,3); null = every K in evaluation.k_values.
    k: Optional[int] = None
    n_restarts: int = 8
    epsilon: Optional[float] = None  # target entropic regularization (unit-free); null = solver default
    min_share: Optional[float] = None
    max_share: Optional[float] = None
    refine: bool = True  # move treatments off the candidate grid with the model's profit oracle
    dtype: str = "float32"


@dataclass
class EvaluationConfig:
    k_values: List[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 8])
    methods: List[str] = field(
        default_factory=lambda: ["ot", "kmeans_features", "kmeans_preferences", "grid", "single_best"]
    )
    n_boot: int = 1000  # bootstrap resamples for the doubly robust confidence intervals
    ci_level: float = 0.95


@dataclass
class LoggerConfig:
    """Weights & Biases. ``offline`` never needs a network or a login (``wandb sync`` later)."""

    name: str = "wandb"  # wandb | none
    mode: str = "offline"  # offline | online | disabled
    project: str = "coarse_gpu"
    entity: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    init_timeout_s: float = 30.0


@dataclass
class RunConfig:
    """The whole run (configs/config.yaml)."""

    defaults: List[Any] = field(default_factory=list)
    data: Any = MISSING
    model: ModelConfig = MISSING
    discretizer: DiscretizerConfig = MISSING
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    logger: LoggerConfig = MISSING
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    quiet: bool = False  # no progress bars (also off when the CI environment variable is set)


GROUP_SCHEMAS = {
    "data": [("promotions_schema", SimulatedDataConfig)],
    "model": [("model_schema", ModelConfig)],
    "discretizer": [("discretizer_schema", DiscretizerConfig)],
    "logger": [("logger_schema", LoggerConfig)],
}

_registered = False


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    global _registered
    if _registered:
        return
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    for group, entries in GROUP_SCHEMAS.items():
        for name, node in entries:
            cs.store(group=group, name=name, node=node)
    _registered = True
