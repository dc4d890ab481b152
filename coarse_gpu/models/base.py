"""Shared machinery of the per-arm neural CATE models (TARNet, DragonNet).

A model is fitted on a randomized experiment (x_i, t_i, y_i) whose treatments t_i take A distinct
values, the experimental arms. It learns mu_a(x) = E[y | x, t = arm a] for every arm, and extends
it to any treatment t with a linear interpolation operator across arms (``ArmGrid.weights``):

    pi_hat(x, T) = predict_arms(x) @ grid_.weights(T, interpolation).T        (N, M)

Conventions (scikit-learn's): the models are ``BaseEstimator``s whose keyword-only hyperparameters are
stored untouched in ``__init__`` (so ``get_params`` / ``set_params`` / ``sklearn.base.clone`` work);
inputs are validated at the start of ``fit``; everything learned in ``fit`` ends with ``_``. Outcomes
are in the caller's units (e.g. currency per customer): the network works on standardized X and y, and
predictions are mapped back. The training loop is not here: every network model trains through the
one ``Trainer`` of coarse_gpu.models.trainer, and the model keeps only its network, loss, data
preparation and predictions.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from torch import nn

from coarse_gpu.models.arms import ArmModel, as_array, find_arms
from coarse_gpu.models.checkpoint import fingerprint
from coarse_gpu.models.defaults import resolve
from coarse_gpu.models.interpolate import METHODS
from coarse_gpu.models.networks import count_parameters
from coarse_gpu.models.scaling import TRANSFORMS, apply_scaling, fit_scaling
from coarse_gpu.models.trainer import AMP_MODES, Trainer, distributed
from coarse_gpu.utils.device import resolve_device
from coarse_gpu.utils.params import FRACTION, POSITIVE, check_params, choice, integer, number

#: Rows per forward pass when predicting (memory bound only; results do not depend on it).
PREDICT_BATCH = 16384
ARM_HEADS = ("separate", "conditioned")
#: Parameters that do not change what is learned: left out of the checkpoint fingerprint, so a
#: run can resume on another device or with the progress bar switched on.
_NOT_FINGERPRINTED = ("verbose", "device", "checkpoint_dir")


# ---------------------------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------------------------
_to_numpy = as_array  # kept under its old name for the modules that import it


def check_X(X, n_features: Optional[int] = None, name: str = "X") -> np.ndarray:
    """(N, p) float64 finite feature matrix; errors name the offending column.

    float64 until standardized: large raw values (incomes, timestamps) would lose digits in float32.
    """
    x = _to_numpy(X, name)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TypeError(
            f"{name} must be numeric (one-hot encode categorical columns first, e.g. with "
            f"coarse_gpu.data.model_matrix), got dtype {x.dtype}"
        )
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, p) array, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    if n_features is not None and x.shape[1] != n_features:
        raise ValueError(f"{name} has {x.shape[1]} columns but the model was fitted with {n_features}")
    x = x.astype(np.float64, copy=False)
    bad = ~np.isfinite(x)
    if bad.any():
        j = int(np.flatnonzero(bad.any(0))[0])
        kind = "NaN" if np.isnan(x[:, j]).any() else "inf"
        raise ValueError(
            f"{name} contains {kind} in column {j} ({int(bad[:, j].sum())} rows); impute or drop them first"
        )
    return x


def check_treatments(t, n: int) -> np.ndarray:
    """(N, d) float64 treatments from (N,) labels / doses or an (N, d) array."""
    a = _to_numpy(t, "t")
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"t must be (N,) arm labels / doses or an (N, d) array of treatments, got shape {a.shape}")
    if a.shape[0] != n:
        raise ValueError(f"t has {a.shape[0]} rows but X has {n}: shape mismatch")
    try:
        a = a.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"t must be numeric (encode categorical arms as integers), got dtype {a.dtype}") from err
    if not np.all(np.isfinite(a)):
        j = int(np.flatnonzero(~np.isfinite(a).all(0))[0])
        raise ValueError(f"t contains NaN or inf in treatment column {j}")
    return a


def check_outcome(y, n: int) -> np.ndarray:
    a = _to_numpy(y, "y")
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"y must be a 1-D (N,) outcome array, got shape {a.shape}")
    if a.shape[0] != n:
        raise ValueError(f"y has {a.shape[0]} rows but X has {n}: shape mismatch")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"y contains NaN or inf ({int((~np.isfinite(a)).sum())} rows)")
    return a


#: Outcome losses of the learners: the mean of a real outcome (mse), a 0/1 outcome (bce: log-odds link),
#: a count (poisson: log link) or a positive amount (gamma: log link). The last three are the parts of a
#: two-part model (coarse_gpu.models.twopart).
LOSSES = ("mse", "bce", "poisson", "gamma")


def check_loss_outcome(y: np.ndarray, loss: str, name: str) -> None:
    """The outcome (N,) must fit the loss: 0/1 for bce, >= 0 for poisson, > 0 for gamma."""
    if loss == "bce" and not np.all((y == 0) | (y == 1)):
        raise ValueError(f"{name}: loss='bce' needs a 0/1 outcome, got values such as {y[(y != 0) & (y != 1)][0]}")
    if loss == "poisson" and (np.any(y < 0) or not y.sum() > 0):
        raise ValueError(f"{name}: loss='poisson' needs an outcome >= 0 (a count or an amount) with some positive values")
    if loss == "gamma" and np.any(y <= 0):
        raise ValueError(f"{name}: loss='gamma' needs a positive outcome, got min {float(y.min())}")


def outcome_loss(pred: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean minibatch loss of link-scale predictions ``pred`` (B,) against standardized targets (B,)."""
    if loss == "bce":
        return torch.nn.functional.binary_cross_entropy_with_logits(pred, target)
    if loss == "poisson":  # negative Poisson log-likelihood (up to a constant) of the log-mean pred
        return torch.mean(torch.exp(pred) - target * pred)
    if loss == "gamma":  # Gamma deviance (up to constants) of the log-mean pred
        return torch.mean(target * torch.exp(-pred) + pred)
    return torch.mean((pred - target) ** 2)


def check_propensity(p, n: int) -> Optional[np.ndarray]:
    if p is None:
        return None
    a = _to_numpy(p, "propensity").astype(np.float64)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(
            f"propensity must be a 1-D (N,) array of the probability of each row's received arm with N={n}, "
            f"got shape {a.shape}"
        )
    if not np.all(np.isfinite(a)) or np.any(a <= 0) or np.any(a > 1):
        raise ValueError("propensity must lie in (0, 1] (probability of the received arm), got values outside")
    return a


def check_inputs(X, t, y, propensity=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """``fit``'s inputs validated together: X (N, p) float64, T (N, d) float64, y (N,), propensity (N,) or None."""
    X = check_X(X)
    n = X.shape[0]
    return X, check_treatments(t, n), check_outcome(y, n), check_propensity(propensity, n)


def stratified_split(arm: np.ndarray, val_fraction: float, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows): ``val_fraction`` of each arm goes to validation, at least one row of each
    arm stays in training (so that every head gets gradient), randomness from ``generator``."""
    if val_fraction <= 0:
        return np.arange(arm.shape[0]), np.empty(0, dtype=np.int64)
    train, val = [], []
    for a in range(int(arm.max()) + 1):
        rows = np.flatnonzero(arm == a)
        perm = rows[torch.randperm(rows.shape[0], generator=generator).numpy()]
        n_val = min(int(round(val_fraction * rows.shape[0])), rows.shape[0] - 1)
        val.append(perm[:n_val])
        train.append(perm[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


# ---------------------------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------------------------
class PerArmCATEModel(ArmModel, BaseEstimator):
    """Base class: representation + one outcome head per experimental arm, trained by minibatch AdamW.

    Subclasses provide the network (``_network_cls`` or ``_build_network(p, A, generator)``) and the
    loss of a minibatch (``_batch_loss(out, batch)``); ``coarse_gpu.models.trainer.Trainer`` trains it.
    All parameters are keyword-only.

    Parameters (shared by TARNet and DragonNet)
    ----------
    hidden : width H of the shared representation layers.
    n_repr_layers : number of hidden (Linear + ELU) layers of the representation.
    n_head_layers : hidden layers in each arm's outcome head (then a linear scalar output).
    head_hidden : width of the head layers; None -> hidden // 2 with separate heads (as in DragonNet:
        200 / 100), hidden with the conditioned head.
    dropout : dropout probability after every hidden layer (0 = none).
    lr : AdamW learning rate; weight_decay : AdamW decoupled weight decay (weight matrices only).
    batch_size : rows per minibatch; max_epochs : upper bound on passes over the training rows.
    patience : stop after this many epochs without a validation improvement (best weights restored).
    lr_patience : halve the learning rate after this many epochs without improvement
        (ReduceLROnPlateau); None -> max(1, patience // 3).
    min_delta : relative validation-loss improvement that counts (1e-4 = 0.01%).
    arm_heads : "conditioned" (default: one head MLP fed [Phi(x), standardized arm coordinates,
        one-hot arm], evaluated at each arm, so neighbouring arms share statistical strength; markedly
        more accurate on the noisy promotions experiment, see scripts/tune_models.py; use
        n_head_layers >= 2 so that arm and features interact) or "separate" (classic TARNet: A
        independent head MLPs, each trained only on its own arm's rows). Both give one prediction per
        arm, so the interpolation and the rest of the API are the same.
    ema : decay of an exponential moving average of the weights, updated every step (0 = off); the
        averaged weights are validated, early-stopped and returned.
    val_fraction : share of each arm's rows held out for early stopping (stratified by arm);
        0 trains ``max_epochs`` epochs and keeps the last weights.
    interpolation : "spline" | "linear", how ``predict_profit`` extends per-arm predictions to any t.
    device : "auto" (CUDA when available) | "cpu" | "cuda" | "cuda:N".
    seed : seeds the weight init, the validation split, the minibatch order and dropout.
    verbose : tqdm progress bar over epochs.
    amp : mixed precision on CUDA: "auto" (default: bfloat16 autocast where the GPU supports it,
        else float16 with a GradScaler; off on CPU, so the CPU path is exact float32), "bf16",
        "fp16" (CUDA only) or "off". Validation and predictions always run in float32.
    checkpoint_dir : folder for per-epoch checkpoints (None = none). Every epoch the model,
        optimizer, LR scheduler, early-stopping state, best weights, history and all RNG states
        are written atomically to ``<checkpoint_dir>/<Class>-<fingerprint>.pt``; ``fit`` on the
        same hyperparameters and data resumes from it (a killed run continues where its last
        finished epoch ended and, on CPU, ends with bitwise the same model; a finished run is
        restored without training). See coarse_gpu.models.checkpoint.

    Distributed data parallel: when ``fit`` runs inside an initialized torch.distributed process
    group (``torchrun``, see coarse_gpu.models.distributed), the Trainer wraps the network in
    DistributedDataParallel, every rank trains on its DistributedSampler shard with
    ``batch_size // world_size`` rows per step (so ``batch_size`` stays the global batch), and
    only rank 0 writes checkpoints.
    """

    def __init__(
        self,
        *,
        hidden: int = 128,
        n_repr_layers: int = 3,
        n_head_layers: int = 3,
        dropout: float = 0.0,
        lr: float = 1e-3,
        weight_decay: Optional[float] = None,
        batch_size: Optional[int] = None,
        max_epochs: Optional[int] = None,
        patience: Optional[int] = None,
        val_fraction: float = 0.2,
        interpolation: str = "linear",
        device: str = "auto",
        seed: int = 0,
        verbose: bool = False,
        head_hidden: Optional[int] = None,
        lr_patience: Optional[int] = None,
        min_delta: float = 1e-4,
        arm_heads: str = "auto",
        ema: float = 0.0,
        amp: str = "auto",
        checkpoint_dir: Optional[str] = None,
        x_transform: str = "auto",
        n_ensemble="auto",
        loss: str = "mse",
    ) -> None:
        self.hidden = hidden
        self.n_repr_layers = n_repr_layers
        self.n_head_layers = n_head_layers
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.val_fraction = val_fraction
        self.interpolation = interpolation
        self.device = device
        self.seed = seed
        self.verbose = verbose
        self.head_hidden = head_hidden
        self.lr_patience = lr_patience
        self.min_delta = min_delta
        self.arm_heads = arm_heads
        self.ema = ema
        self.amp = amp
        self.checkpoint_dir = checkpoint_dir
        self.x_transform = x_transform
        self.n_ensemble = n_ensemble
        self.loss = loss

    #: torch module class built by ``_build_network`` (TARNetNetwork or a subclass).
    _network_cls: Optional[type] = None  # set by subclasses
    #: Each parameter's allowed values, stated once: ``fit`` checks them and so does the config check of
    #: ``model.*`` (coarse_gpu.experiment.validate); None means "adapt to the data" where the parameter
    #: is in AUTO_PARAMS.
    _parameter_constraints = {
        "hidden": integer(1), "n_repr_layers": integer(1), "n_head_layers": integer(0),
        "head_hidden": integer(1, null=True), "batch_size": integer(1, null=True),
        "max_epochs": integer(1, null=True), "patience": integer(1, null=True),
        "n_ensemble": integer(1, options=("auto",)), "dropout": FRACTION, "lr": POSITIVE,
        "weight_decay": number(0.0, null=True), "val_fraction": FRACTION, "ema": FRACTION,
        "arm_heads": choice(*ARM_HEADS, "auto"), "x_transform": choice(*TRANSFORMS),
        "interpolation": choice(*METHODS), "amp": choice(*AMP_MODES), "loss": choice(*LOSSES),
    }
    # fitted state set by fit (declared for the type checker only: no class attribute is created)
    best_val_loss_: float
    n_parameters_: int

    def _hp(self, name: str):
        """A hyperparameter as used in this fit: the value resolved from the data (``<name>_``, see
        coarse_gpu.models.defaults) where the parameter was left to adapt, else the parameter itself."""
        v = getattr(self, name + "_", None)
        return v if v is not None else getattr(self, name)

    # -- hooks for subclasses ------------------------------------------------------------------
    def _head_width(self) -> int:
        """Width of the head layers: ``head_hidden``, else hidden // 2 for separate heads (DragonNet's
        200 / 100 ratio: A small heads) and hidden for the one conditioned head (it serves every arm)."""
        if self.head_hidden is not None:
            return int(self.head_hidden)
        return int(self.hidden) if self._hp("arm_heads") == "conditioned" else max(1, int(self.hidden) // 2)

    def _build_network(self, n_features: int, n_arms: int, generator: torch.Generator) -> nn.Module:
        if self._network_cls is None:
            raise TypeError(f"{type(self).__name__} sets no _network_cls: a subclass must name its torch module")
        return self._network_cls(
            n_features,
            n_arms,
            hidden=self.hidden,
            n_repr_layers=self.n_repr_layers,
            head_hidden=self._head_width(),
            n_head_layers=self.n_head_layers,
            dropout=self.dropout,
            generator=generator,
            arm_coords=self._arm_coords(),
        )

    def _batch_loss(self, out: dict, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss of one minibatch and named parts to log (all scalars).

        ``out`` is the network's output for ``net(x, arm)``: "mu_obs" (B,) is each row's own arm's
        head, "phi" (B, H) the representation (DragonNet adds "logits" (B, A) and "epsilon" (A,)).
        """
        raise NotImplementedError

    def _prepare_extra(self, arm: np.ndarray, propensity: Optional[np.ndarray]) -> dict[str, np.ndarray]:
        """Extra per-row arrays a subclass needs in its batches (e.g. known propensities)."""
        return {}

    # -- helpers -------------------------------------------------------------------------------
    def _check_params(self) -> None:
        check_params(self)  # the ranges in _parameter_constraints (coarse_gpu.utils.params)

    def _arm_coords(self) -> Optional[torch.Tensor]:
        """(A, d + A) arm features for ``arm_heads="conditioned"`` (None for separate heads).

        Standardized treatment coordinates, so that arms close in treatment space start out with
        similar functions and every row informs its neighbours; plus a one-hot arm indicator, so that
        each arm can still deviate where its own rows say so (and unordered arms remain usable).
        Measured on the promotions simulator: coordinates alone win with many closely spaced arms but
        lose to separate heads on a coarse 3 x 2 grid; with the one-hot as well the head matches the
        better of the two in both cases.
        """
        if self._hp("arm_heads") == "separate":
            return None
        a = self.arms_
        sd = a.std(0)
        coords = (a - a.mean(0)) / np.where(sd > 0, sd, 1.0)
        return torch.as_tensor(np.hstack([coords, np.eye(a.shape[0])]), dtype=torch.float32)

    def _check_fitted(self) -> None:
        if not hasattr(self, "network_") and not getattr(self, "members_", None):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet: call fit(X, t, y) first")

    def _standardize(self, X: np.ndarray) -> np.ndarray:
        return apply_scaling(X, self.x_mean_, self.x_scale_, getattr(self, "x_log_", None),
                             getattr(self, "x_center_", None), getattr(self, "x_spread_", None))

    # -- fit -----------------------------------------------------------------------------------
    def fit(self, X, t, y, propensity=None) -> "PerArmCATEModel":
        """Learn the per-arm outcome functions from a randomized experiment.

        X : (N, p) numeric features (not standardized; the model standardizes on these rows).
        t : (N,) arm labels or 1-D doses, or (N, d) treatment values; the distinct rows are the arms.
        y : (N,) realized outcomes (any units; predictions come back in the same units).
        propensity : optional (N,) probability that each row received its arm (known by design in an
            experiment). TARNet ignores it; DragonNet can use it in its targeted regularization.
        Returns self.
        """
        self._check_params()
        X, T, y, propensity = check_inputs(X, t, y, propensity)
        check_loss_outcome(y, self._loss_kind(), type(self).__name__)
        n = X.shape[0]
        # Hyperparameters left to adapt are resolved from the data (coarse_gpu.models.defaults).
        for key, v in resolve(self.get_params(), n, int(find_arms(T)[0].shape[0])).items():
            setattr(self, key + "_", v)
        if int(getattr(self, "n_ensemble_", 1)) > 1:
            return self._fit_ensemble(X, T, y, propensity)
        self.members_: Optional[list[PerArmCATEModel]] = None
        self._fit_one(X, T, y, propensity)
        return self

    def _fit_ensemble(self, X, T, y, propensity) -> "PerArmCATEModel":
        """``n_ensemble_`` members, seeds ``seed + j``, each with its own initialization, minibatch order
        and early-stopping split; predictions are their average (member 0 is the single model)."""
        self.__dict__.pop("network_", None)  # a refit: no stale single network next to the members
        members: list[PerArmCATEModel] = []
        self.members_ = members
        t0 = time.perf_counter()
        for j in range(int(self.n_ensemble_)):
            member = clone(self).set_params(n_ensemble=1, seed=int(self.seed) + j)
            members.append(member.fit(X, T, y, propensity=propensity))
        first = members[0]
        for key, v in vars(first).items():  # arms, grids, scaling, resolved hyperparameters: shared
            if key.endswith("_") and not key.startswith("_") and key not in ("network_", "members_", "n_ensemble_"):
                setattr(self, key, v)
        self.best_val_loss_ = float(np.mean([m.best_val_loss_ for m in members]))
        self.n_parameters_ = int(sum(m.n_parameters_ for m in members))
        self.fit_time_s_ = time.perf_counter() - t0
        return self

    def _fit_one(self, X: np.ndarray, T: np.ndarray, y: np.ndarray, propensity: Optional[np.ndarray]) -> None:
        """Fit one network on validated inputs (the body of ``fit``; the dose models override it)."""
        arm = self._set_arms(T)
        self.n_features_in_ = int(X.shape[1])

        self._fit_scaling(X, y)
        self.device_ = resolve_device(self.device)
        gen = torch.Generator().manual_seed(int(self.seed))
        train_rows, val_rows = stratified_split(arm, float(self.val_fraction), gen)

        dev = self.device_
        cols = {
            "x": torch.as_tensor(self._standardize(X), device=dev),
            "arm": torch.as_tensor(arm, device=dev),
            "y": torch.as_tensor((y - self.y_mean_) / self.y_scale_, dtype=torch.float32, device=dev),
        }
        for k, v in self._prepare_extra(arm, propensity).items():
            cols[k] = torch.as_tensor(v, dtype=torch.float32, device=dev)
        self._fit_rows(cols, train_rows, val_rows, gen)

    def _fit_scaling(self, X: np.ndarray, y: np.ndarray) -> None:
        """Input scaling (heavy-tailed columns squashed, standardized, clipped: coarse_gpu.models.scaling)
        and the outcome's mean and scale, learned on the training rows X (N, p), y (N,)."""
        for key, v in fit_scaling(X, self.x_transform).items():
            setattr(self, key, v)
        loss = self._loss_kind()
        if loss != "mse":  # link-scale heads: 0/1 targets as they are, counts / amounts relative to their mean
            self.y_mean_ = 0.0
            self.y_scale_ = 1.0 if loss == "bce" else float(y.mean())
            return
        self.y_mean_ = float(y.mean())
        ysd = float(y.std())
        self.y_scale_ = ysd if ysd > 1e-12 else 1.0

    def _loss_kind(self) -> str:
        return getattr(self, "loss", "mse")

    def _outcome_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """This model's outcome loss (``loss``) of link-scale predictions against standardized targets."""
        return outcome_loss(pred, target, self._loss_kind())

    def _to_outcome(self, head):
        """Head outputs (numpy or torch, link scale) -> the mean outcome in y's units (inverse link)."""
        loss = self._loss_kind()
        if loss == "bce":
            return 1.0 / (1.0 + np.exp(-head)) if isinstance(head, np.ndarray) else torch.sigmoid(head)
        if loss in ("poisson", "gamma"):
            return (np.exp(head) if isinstance(head, np.ndarray) else torch.exp(head)) * self.y_scale_
        return head * self.y_scale_ + self.y_mean_

    def _fit_rows(self, cols: dict, train_rows: np.ndarray, val_rows: np.ndarray, gen: torch.Generator) -> None:
        """Train on rows ``train_rows`` of the (N, ...) tensors ``cols``, early-stopping on ``val_rows``."""
        dev = self.device_
        tr = {k: v[torch.as_tensor(train_rows, device=dev)] for k, v in cols.items()}
        va = {k: v[torch.as_tensor(val_rows, device=dev)] for k, v in cols.items()}
        t_start = time.perf_counter()
        # fork_rng: the default init of the layers and dropout draw from the global RNG; seeding a
        # forked copy makes fits reproducible without changing the caller's random state.
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(int(self.seed))
            self._train(tr, va, gen)
        self.fit_time_s_ = time.perf_counter() - t_start

    # -- training: the shared Trainer, fed this model's network, loss and data -----------------
    def _train(self, tr: dict, va: dict, gen: torch.Generator) -> None:
        """Build the network and train it on the tensors ``tr`` (early stopping on ``va``): dicts of
        x (N, p), arm (N,) (the dose models: (N, d) doses), y (N,) and the loss's extras. ``gen`` has
        drawn the validation split; it draws the initial weights, then the Trainer's minibatches."""
        net = self._build_network(self.n_features_in_, self.n_arms_, gen).to(self.device_)
        self.history_: list[dict] = []  # filled while training runs (a resume starts it with the checkpoint's)
        self.checkpoint_path_ = self._checkpoint_file(tr, va, distributed()[1])
        self.resumed_from_epoch_ = 0
        result = self._trainer(self.checkpoint_path_).fit(net, self._loss, self._metrics, tr, va, gen,
                                                         history=self.history_)
        self.resumed_from_epoch_ = result.resumed_from_epoch
        self.network_ = result.net
        self.best_epoch_ = result.best_epoch
        self.best_val_loss_ = result.best_val_loss
        self.n_parameters_ = count_parameters(result.net)

    def _trainer(self, checkpoint: Optional[Path]) -> Trainer:
        """The Trainer of this fit, from the hyperparameters (resolved from the data where left to adapt)."""
        return Trainer(
            lr=self.lr, weight_decay=self._hp("weight_decay"), batch_size=int(self._hp("batch_size")),
            max_epochs=int(self._hp("max_epochs")), patience=int(self._hp("patience")), device=self.device_,
            lr_patience=self.lr_patience, min_delta=self.min_delta, ema=float(self.ema), amp=self.amp,
            seed=int(self.seed), checkpoint=checkpoint, verbose=self.verbose, name=type(self).__name__,
        )

    def _checkpoint_file(self, tr: dict, va: dict, world: int) -> Optional[Path]:
        """``<checkpoint_dir>/<Class>-<fingerprint of hyperparameters + training data>.pt`` or None."""
        if self.checkpoint_dir is None:
            return None
        params = {k: v for k, v in self.get_params().items() if k not in _NOT_FINGERPRINTED}
        params.update(world_size=world, model=type(self).__name__)
        arrays = [tr[k] for k in sorted(tr)] + [va[k] for k in sorted(va)]
        if getattr(self, "arms_", None) is not None:
            arrays.append(np.asarray(self.arms_))
        return Path(self.checkpoint_dir) / f"{type(self).__name__}-{fingerprint(params, arrays)}.pt"

    def _loss(self, net: nn.Module, batch: dict) -> torch.Tensor:
        """The Trainer's minibatch loss: the network on (x, arm), then ``_batch_loss``."""
        return self._batch_loss(net(batch["x"], batch["arm"]), batch)[0]

    def _metrics(self, net: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """The Trainer's validation metrics: the network on (x, arm), then ``_val_parts``."""
        return self._val_parts(net(batch["x"], batch["arm"]), batch)

    def _val_parts(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        """Per-batch mean validation metrics; default: factual outcome MSE (standardized y)."""
        return {"val_loss": self._outcome_loss(out["mu_obs"], batch["y"])}

    # -- predict -------------------------------------------------------------------------------
    @torch.no_grad()
    def _forward_numpy(self, X, key: str) -> np.ndarray:
        self._check_fitted()
        members = getattr(self, "members_", None)
        if members:  # an ensemble: the average of its members' outputs
            return np.mean([m._forward_numpy(X, key) for m in members], axis=0)
        x = self._standardize(check_X(X, self.n_features_in_))
        self.network_.eval()
        outs = []
        for s in range(0, x.shape[0], PREDICT_BATCH):
            xb = torch.as_tensor(x[s : s + PREDICT_BATCH], device=self.device_)
            outs.append(self.network_(xb)[key].double().cpu().numpy())
        return np.concatenate(outs, axis=0)

    def predict_arms(self, X) -> np.ndarray:
        """(N, A) float64 predicted outcome mu_a(x_i) at every experimental arm ``arms_[a]``, in y's units."""
        return self._to_outcome(self._forward_numpy(X, "mu"))

