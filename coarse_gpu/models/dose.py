"""Continuous dose-response models: pi_hat(x, t) for ANY treatment t in a (possibly 2-D) space.

The per-arm models (TARNet, DragonNet) learn one outcome per experimental arm and interpolate
between arms. The models here put the treatment *inside* the head, so the same network answers at
the arms, between them and (with a documented extrapolation) beyond them:

``DoseLogit`` (structured, economic; in the spirit of Farrell, Liang & Misra 2021, "Deep neural
networks for estimation and inference", where the network outputs the individual parameters of a
known economic model). With z_j = (t_j - lo_j) / (hi_j - lo_j) the treatment scaled to [0, 1] on the
training range and u_j = the same scaling of phi_j(t_j), a per-dimension transform:

    pi_hat(x, t) = [s_0(x) + sum_j s_j(x) z_j] * sigmoid(a(x) + sum_j b_j(x) u_j) + c_0(x) + sum_j c_j(x) z_j

    purchase probability  sigmoid(a + sum_j b_j phi_j(t_j)):  individual intercept a(x) and
                          sensitivities b_j(x) to each (transformed) lever;
    value per purchase    s_0 + sum_j s_j t_j:  e.g. basket value times the margin left after a
                          discount (linear in the discount depth);
    direct cost / offset  c_0 + sum_j c_j t_j:  e.g. a contact cost per week an offer runs.

  All 3 + 3d parameters come from one MLP on the shared representation. ``transforms`` picks phi_j
  per dimension: "identity" (t), "log1p" (log(1 + t), diminishing returns of duration, say),
  "sqrt" (sqrt(t)), "log" (log(t + 1e-3 * range)). Outside the training range the form itself
  extrapolates (linear scale and cost, a logit that saturates).

``DoseVC`` (flexible varying-coefficient head, VCNet-style, Nie et al. 2021): a tensor-product
B-spline basis B_k(t), k = 1..K, in the treatment and coefficients from the representation,

    pi_hat(x, t) = sum_k theta_k(x) B_k(t),       theta(x) = Linear(MLP(Phi(x)))  (K,)

  Per dimension ``n_basis`` B-splines of degree min(``degree``, n_basis - 1) on knots spread over the
  training range (uniformly, or at quantiles of the observed doses with ``knots="quantile"``);
  outside the range each 1-D basis is continued linearly (value + slope at the boundary), so
  pi_hat extrapolates linearly rather than being clipped. A P-spline penalty (``smoothness``) on
  second differences of theta along each dimension prefers smooth curves between observed doses.
  Predicting M treatments is one (N, K) @ (K, M) product.

Both fit on N x d doses (arms are just doses), keep ``arms_`` (the distinct training treatments,
what the pipeline's grid baseline and the doubly robust evaluation need), and answer
``predict_profit(X, T)`` for any T (M, d), batched on the model's device. ``profit_oracle(X)``
returns a torch callable T (M, d) -> (N, M) on the device for the discretizer.

Training is the shared ``Trainer`` (coarse_gpu.models.trainer: AdamW, ReduceLROnPlateau, early
stopping, EMA, checkpoints, history), through ``PerArmCATEModel._train``: the batch's "arm" slot
carries the (B, d) float treatment instead of an arm index.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from coarse_gpu.models.base import (
    PREDICT_BATCH,
    PerArmCATEModel,
    _to_numpy,
    check_X,
    find_arms,
    stratified_split,
)
from coarse_gpu.models.interpolate import ArmGrid
from coarse_gpu.models.networks import MLP, _uniform_fan_in_
from coarse_gpu.models.splines import SplineBasis1D, TensorSplineBasis  # also importable from here
from coarse_gpu.utils.device import resolve_device
from coarse_gpu.utils.params import NONNEG, choice, integer

TRANSFORMS = ("identity", "log1p", "sqrt", "log")
KNOTS = ("uniform", "quantile")


# ---------------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------------
class _DoseNetwork(nn.Module):
    """Representation Phi(x) -> head MLP -> per-customer parameters theta(x) (B, P); subclasses map
    (theta, t) to the outcome. forward(x, t) -> {"mu_obs": (B,), "phi", "theta"}; forward(x) -> {"theta", "phi"}."""

    n_params: int

    def __init__(self, in_dim, hidden, n_repr_layers, head_hidden, n_head_layers, dropout, generator, n_params):
        super().__init__()
        self.repr = MLP(in_dim, hidden, n_repr_layers, dropout, generator)
        self.head = MLP(self.repr.out_dim, head_hidden, n_head_layers, dropout, generator)
        self.out = nn.Linear(self.head.out_dim, n_params)
        _uniform_fan_in_(self.out.weight, self.head.out_dim, generator)
        _uniform_fan_in_(self.out.bias, self.head.out_dim, generator)
        self.n_params = n_params

    def parameters_of(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        phi = self.repr(x)
        return self.out(self.head(phi)), phi

    def at(self, theta: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        """(N, P) parameters, (M, d) treatments -> (N, M) outcome (standardized y units)."""
        raise NotImplementedError

    def at_rows(self, theta: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B, P), (B, d) -> (B,) each row at its own treatment."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, t: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        theta, phi = self.parameters_of(x)
        out = {"theta": theta, "phi": phi}
        if t is not None:
            out["mu_obs"] = self.at_rows(theta, t)
        return out


class DoseLogitNetwork(_DoseNetwork):
    """theta = [a, b_1..b_d, s_0, s_1..s_d, c_0, c_1..c_d] (3 + 3d); see ``DoseLogit``."""

    def __init__(self, in_dim, hidden, n_repr_layers, head_hidden, n_head_layers, dropout, generator,
                 lo, hi, transforms, scale_slopes, linear_terms):
        d = len(lo)
        super().__init__(in_dim, hidden, n_repr_layers, head_hidden, n_head_layers, dropout, generator, 3 + 3 * d)
        self.d = d
        self.transforms = tuple(transforms)
        self.scale_slopes = bool(scale_slopes)
        self.linear_terms = bool(linear_terms)
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        self.register_buffer("lo", torch.as_tensor(lo, dtype=torch.float32))
        self.register_buffer("span", torch.as_tensor(hi - lo, dtype=torch.float32))
        self.register_buffer("eps", torch.as_tensor(1e-3 * (hi - lo), dtype=torch.float32))
        # range of phi_j over [lo_j, hi_j] (all transforms are increasing)
        plo = self._phi(torch.as_tensor(lo[None, :], dtype=torch.float32), raw=True)[0]
        phi_hi = self._phi(torch.as_tensor(hi[None, :], dtype=torch.float32), raw=True)[0]
        self.register_buffer("phi_lo", plo)
        self.register_buffer("phi_span", phi_hi - plo)
        with torch.no_grad():  # start with a positive value per purchase, so the logit gets gradient
            self.out.bias[1 + d] += 1.0

    def _phi(self, t: torch.Tensor, raw: bool = False) -> torch.Tensor:
        cols = []
        for j, name in enumerate(self.transforms):
            x = t[:, j]
            if name == "log1p":
                x = torch.log1p(x.clamp(min=-0.999))
            elif name == "sqrt":
                x = torch.sqrt(x.clamp(min=0))
            elif name == "log":
                x = torch.log((x - self.lo[j]).clamp(min=0) + self.eps[j])
            cols.append(x)
        p = torch.stack(cols, dim=1)
        return p if raw else (p - self.phi_lo) / self.phi_span

    def _split(self, theta):
        d = self.d
        a, b = theta[:, 0], theta[:, 1 : 1 + d]
        s0, s = theta[:, 1 + d], theta[:, 2 + d : 2 + 2 * d]
        c0, c = theta[:, 2 + 2 * d], theta[:, 3 + 2 * d :]
        if not self.scale_slopes:
            s = torch.zeros_like(s)
        if not self.linear_terms:
            c = torch.zeros_like(c)
        return a, b, s0, s, c0, c

    def at(self, theta, T):
        a, b, s0, s, c0, c = self._split(theta)
        T = T.to(theta.dtype)
        z = (T - self.lo) / self.span
        u = self._phi(T)
        logit = a[:, None] + b @ u.T
        return (s0[:, None] + s @ z.T) * torch.sigmoid(logit) + c0[:, None] + c @ z.T

    def at_rows(self, theta, t):
        a, b, s0, s, c0, c = self._split(theta)
        z = (t - self.lo) / self.span
        u = self._phi(t)
        logit = a + (b * u).sum(1)
        return (s0 + (s * z).sum(1)) * torch.sigmoid(logit) + c0 + (c * z).sum(1)


class DoseVCNetwork(_DoseNetwork):
    """theta (K,) coefficients of a tensor-product spline basis; see ``DoseVC``."""

    def __init__(self, in_dim, hidden, n_repr_layers, head_hidden, n_head_layers, dropout, generator, basis):
        super().__init__(in_dim, hidden, n_repr_layers, head_hidden, n_head_layers, dropout, generator, basis.n_basis)
        self.basis = basis

    def at(self, theta, T):
        return theta @ self.basis(T.to(theta.dtype)).T

    def at_rows(self, theta, t):
        return (theta * self.basis(t.to(theta.dtype))).sum(1)


# ---------------------------------------------------------------------------------------------
# estimators
# ---------------------------------------------------------------------------------------------
class DoseResponseModel(PerArmCATEModel):
    """Shared fit / predict of the continuous dose-response models (``DoseLogit``, ``DoseVC``).

    Parameters as ``PerArmCATEModel`` (hidden, n_repr_layers, n_head_layers, head_hidden, dropout, lr,
    weight_decay, batch_size, max_epochs, patience, val_fraction, device, seed, verbose, lr_patience,
    min_delta, ema), plus
    t_low, t_high : optional (d,) range of the treatment space used to scale t (and to place the
        spline knots); default the observed range of the training treatments.

    amp, checkpoint_dir : mixed precision on CUDA and per-epoch checkpoints (see ``PerArmCATEModel``).

    Fitted attributes: arms_ (A, d) distinct training treatments, arm_counts_, n_arms_, grid_ (ArmGrid
    when the distinct treatments form a full grid, else None), t_low_ / t_high_ (d,), n_treatment_dims_,
    n_features_in_, x_mean_ / x_scale_, y_mean_ / y_scale_, network_, history_, best_epoch_,
    best_val_loss_, fit_time_s_, n_parameters_.
    """

    def __init__(
        self,
        *,
        hidden: int = 128,
        n_repr_layers: int = 3,
        n_head_layers: int = 2,
        dropout: float = 0.0,
        lr: float = 1e-3,
        weight_decay: Optional[float] = None,
        batch_size: Optional[int] = None,
        max_epochs: Optional[int] = None,
        patience: Optional[int] = None,
        val_fraction: float = 0.2,
        device: str = "auto",
        seed: int = 0,
        verbose: bool = False,
        head_hidden: Optional[int] = None,
        lr_patience: Optional[int] = None,
        min_delta: float = 1e-4,
        ema: float = 0.0,
        t_low: Optional[Sequence[float]] = None,
        t_high: Optional[Sequence[float]] = None,
        amp: str = "auto",
        checkpoint_dir: Optional[str] = None,
        x_transform: str = "auto",
        n_ensemble="auto",
        loss: str = "mse",
    ) -> None:
        super().__init__(
            hidden=hidden, n_repr_layers=n_repr_layers, n_head_layers=n_head_layers, dropout=dropout, lr=lr,
            weight_decay=weight_decay, batch_size=batch_size, max_epochs=max_epochs, patience=patience,
            val_fraction=val_fraction, device=device, seed=seed, verbose=verbose, head_hidden=head_hidden,
            lr_patience=lr_patience, min_delta=min_delta, ema=ema, amp=amp, checkpoint_dir=checkpoint_dir,
            x_transform=x_transform, n_ensemble=n_ensemble, loss=loss,
        )
        self.t_low = t_low
        self.t_high = t_high

    def _head_width(self) -> int:
        return int(self.head_hidden) if self.head_hidden is not None else int(self.hidden)

    def _treatment_range(self, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = T.shape[1]
        lo = T.min(0) if self.t_low is None else np.broadcast_to(np.asarray(self.t_low, dtype=np.float64), (d,)).copy()
        hi = T.max(0) if self.t_high is None else np.broadcast_to(np.asarray(self.t_high, dtype=np.float64), (d,)).copy()
        bad = np.flatnonzero(~(hi > lo))
        if bad.size:
            j = int(bad[0])
            raise ValueError(
                f"treatment dimension {j} has an empty range [{lo[j]}, {hi[j]}] (a constant treatment, or t_low >= "
                "t_high): a dose-response model needs variation in every treatment dimension"
            )
        return lo, hi

    def _fit_one(self, X: np.ndarray, T: np.ndarray, y: np.ndarray, propensity) -> None:
        """Learn pi(x, t) from validated X (N, p), doses T (N, d) and y (N,) (``fit`` validates and
        handles ensembles). ``propensity`` is ignored: the outcome model needs none in an experiment."""
        n = X.shape[0]
        arms, arm, counts = find_arms(T)
        if arms.shape[0] < 2:
            raise ValueError(f"t has a single distinct value {arms[0].tolist()}: need at least 2 doses to estimate effects")
        self.arms_ = arms
        self.n_arms_ = int(arms.shape[0])
        self.arm_counts_ = counts.astype(np.int64)
        self.n_features_in_ = int(X.shape[1])
        self.n_treatment_dims_ = int(T.shape[1])
        try:
            self.grid_: Optional[ArmGrid] = ArmGrid.from_arms(arms)
        except ValueError:
            self.grid_ = None
        self.t_low_, self.t_high_ = self._treatment_range(T)
        self._setup_treatments(T)
        self._fit_scaling(X, y)
        self.device_ = resolve_device(self.device)
        gen = torch.Generator().manual_seed(int(self.seed))
        if counts.min() >= 2 and self.n_arms_ <= max(2, n // 20):
            train_rows, val_rows = stratified_split(arm, float(self.val_fraction), gen)  # a few doses: by dose
        else:
            perm = torch.randperm(n, generator=gen).numpy()
            n_val = int(round(float(self.val_fraction) * n))
            train_rows, val_rows = np.sort(perm[n_val:]), np.sort(perm[:n_val])
        dev = self.device_
        cols = {
            "x": torch.as_tensor(self._standardize(X), device=dev),
            "arm": torch.as_tensor(T, dtype=torch.float32, device=dev),  # (N, d) doses in the "arm" slot
            "y": torch.as_tensor((y - self.y_mean_) / self.y_scale_, dtype=torch.float32, device=dev),
        }
        self._fit_rows(cols, train_rows, val_rows, gen)

    def _setup_treatments(self, T: np.ndarray) -> None:
        """Hook: per-model preparation that depends on the training treatments (knots, transforms)."""

    def _batch_loss(self, out: dict, batch: dict):
        mse = self._outcome_loss(out["mu_obs"], batch["y"])
        return mse, {"mse": mse}

    # -- predict -------------------------------------------------------------------------------
    def _as_T(self, T) -> np.ndarray:
        self._check_fitted()
        d = self.n_treatment_dims_
        t = _to_numpy(T, "T")
        try:
            t = t.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"T must be numeric treatments, got dtype {t.dtype}") from err
        if t.ndim == 0 or (t.ndim == 1 and d == 1):
            t = t.reshape(-1, 1)
        elif t.ndim == 1 and t.shape[0] == d:
            t = t[None, :]
        if t.ndim != 2 or t.shape[1] != d:
            raise ValueError(f"T must be an (M, {d}) array of treatments, got shape {np.shape(T)}")
        if t.shape[0] == 0:
            raise ValueError("T has no treatments")
        if not np.all(np.isfinite(t)):
            raise ValueError("T contains NaN or inf")
        return t

    @torch.no_grad()
    def _theta(self, X) -> torch.Tensor:
        self._check_fitted()
        x = self._standardize(check_X(X, self.n_features_in_))
        self.network_.eval()
        outs = []
        for s in range(0, x.shape[0], PREDICT_BATCH):
            xb = torch.as_tensor(x[s : s + PREDICT_BATCH], device=self.device_)
            outs.append(self.network_.parameters_of(xb)[0])
        return torch.cat(outs, 0)

    def profit_oracle(self, X, device=None, dtype=torch.float64):
        """Callable T (M, d) (tensor or array) -> (N, M) tensor of pi_hat in y's units on the model's
        device: theta(X) is computed once, each call only evaluates the head at T."""
        if getattr(self, "members_", None):
            return self._members_oracle(X, device, dtype)
        theta = self._theta(X)
        net = self.network_
        dev = self.device_ if device is None else torch.device(device)

        @torch.no_grad()
        def oracle(T) -> torch.Tensor:
            t = torch.as_tensor(self._as_T(T), dtype=torch.float32, device=self.device_)
            out = []
            for s in range(0, theta.shape[0], PREDICT_BATCH):
                out.append(net.at(theta[s : s + PREDICT_BATCH], t))
            return self._to_outcome(torch.cat(out, 0).to(dtype)).to(dev)

        return oracle

    def predict_profit(self, X, T) -> np.ndarray:
        """(N, M) float64 predicted outcome of each customer at each of the M treatments T (M, d), in y's
        units; any T (no clipping: outside the training range the head's form extrapolates).
        For one treatment dimension T may be a list of M doses ([0, 1] for a binary treatment)."""
        t = self._as_T(T)
        return self.profit_oracle(X, device="cpu")(t).numpy()

    def _members_oracle(self, X, device, dtype):
        """An ensemble's oracle: the average of its members' oracles."""
        oracles = [m.profit_oracle(X, device=device, dtype=dtype) for m in self.members_]

        def oracle(T) -> torch.Tensor:
            return torch.stack([o(T) for o in oracles], 0).mean(0)

        return oracle

    def predict_arms(self, X) -> np.ndarray:
        """(N, A) float64 prediction at every distinct training treatment ``arms_``."""
        self._check_fitted()
        return self.predict_profit(X, self.arms_)

    # ``treatment_weights(T)`` (inherited) maps treatments to the training arms (multilinear weights on
    # a grid of arms, exact matches otherwise). The dose models do NOT predict through it; it is the
    # kappa of the doubly robust evaluation (coarse_gpu.evaluate.dr), which corrects residuals at arms.


class DoseLogit(DoseResponseModel):
    """Structured economic dose response (see the module docstring for the formula):

        pi_hat(x, t) = [s_0(x) + sum_j s_j(x) z_j] * sigmoid(a(x) + sum_j b_j(x) u_j) + c_0(x) + sum_j c_j(x) z_j

    z_j = (t_j - lo_j) / (hi_j - lo_j), u_j = the same min-max scaling of phi_j(t_j).

    Extra parameters
    ----------------
    transforms : phi_j per treatment dimension, a name from ("identity", "log1p", "sqrt", "log") or a
        list of d names (e.g. ["identity", "log1p"] for (discount depth, offer weeks)).
    scale_slopes : the value per purchase varies linearly with t (s_j); False -> s_0(x) only.
    linear_terms : the direct linear cost / offset terms c_j(x) t_j; False -> c_0(x) only.
    """

    def __init__(self, *, hidden: int = 128, n_repr_layers: int = 3, n_head_layers: int = 2, dropout: float = 0.0,
                 lr: float = 1e-3, weight_decay: Optional[float] = None, batch_size: Optional[int] = None,
                 max_epochs: Optional[int] = None, patience: Optional[int] = None, val_fraction: float = 0.2, device: str = "auto", seed: int = 0,
                 verbose: bool = False, head_hidden: Optional[int] = None, lr_patience: Optional[int] = None,
                 min_delta: float = 1e-4, ema: float = 0.0, t_low=None, t_high=None, amp: str = "auto",
                 checkpoint_dir: Optional[str] = None, x_transform: str = "auto", n_ensemble="auto",
                 transforms="identity", scale_slopes: bool = True, linear_terms: bool = True,
                 loss: str = "mse") -> None:
        super().__init__(hidden=hidden, n_repr_layers=n_repr_layers, n_head_layers=n_head_layers, dropout=dropout,
                         lr=lr, weight_decay=weight_decay, batch_size=batch_size, max_epochs=max_epochs,
                         patience=patience, val_fraction=val_fraction, device=device, seed=seed, verbose=verbose,
                         head_hidden=head_hidden, lr_patience=lr_patience, min_delta=min_delta, ema=ema,
                         t_low=t_low, t_high=t_high, amp=amp, checkpoint_dir=checkpoint_dir,
                         x_transform=x_transform, n_ensemble=n_ensemble, loss=loss)
        self.transforms = transforms
        self.scale_slopes = scale_slopes
        self.linear_terms = linear_terms

    def _setup_treatments(self, T: np.ndarray) -> None:
        d = T.shape[1]
        tf = [self.transforms] * d if isinstance(self.transforms, str) else list(self.transforms)
        if len(tf) != d:
            raise ValueError(f"DoseLogit: transforms has {len(tf)} entries but the treatment has {d} dimensions")
        for j, name in enumerate(tf):
            if name not in TRANSFORMS:
                raise ValueError(f"DoseLogit: transforms[{j}]={name!r} is not one of {TRANSFORMS}")
            if name in ("log1p", "sqrt") and self.t_low_[j] < (0 if name == "sqrt" else -1 + 1e-9):
                raise ValueError(f"DoseLogit: transform {name!r} needs treatment dimension {j} >= 0, got min {self.t_low_[j]}")
        self.transforms_ = tuple(tf)

    def _build_network(self, n_features: int, n_arms: int, generator: torch.Generator) -> nn.Module:
        return DoseLogitNetwork(
            n_features, self.hidden, self.n_repr_layers, self._head_width(), self.n_head_layers, self.dropout,
            generator, self.t_low_, self.t_high_, self.transforms_, self.scale_slopes, self.linear_terms,
        )


class DoseVC(DoseResponseModel):
    """Varying-coefficient dose response: pi_hat(x, t) = sum_k theta_k(x) B_k(t), B = tensor-product
    B-splines in t with linear continuation outside the training range (module docstring).

    Extra parameters
    ----------------
    n_basis : B-splines per treatment dimension, an int or a list of d ints; None -> the number of
        distinct training doses in that dimension, clipped to [2, 8] (as many functions as levels: the
        spline interpolates the levels rather than inventing wiggles between them).
    degree : spline degree (the effective degree is min(degree, n_basis - 1)).
    knots : "uniform" interior knots over [lo, hi], or "quantile" (at quantiles of the observed doses:
        dense where the doses are).
    smoothness : weight of the P-spline penalty on second differences of theta (per dimension).
    """

    def __init__(self, *, hidden: int = 128, n_repr_layers: int = 3, n_head_layers: int = 2, dropout: float = 0.0,
                 lr: float = 1e-3, weight_decay: Optional[float] = None, batch_size: Optional[int] = None,
                 max_epochs: Optional[int] = None, patience: Optional[int] = None, val_fraction: float = 0.2, device: str = "auto", seed: int = 0,
                 verbose: bool = False, head_hidden: Optional[int] = None, lr_patience: Optional[int] = None,
                 min_delta: float = 1e-4, ema: float = 0.0, t_low=None, t_high=None, amp: str = "auto",
                 checkpoint_dir: Optional[str] = None, x_transform: str = "auto", n_ensemble="auto",
                 n_basis=None, degree: int = 3, knots: str = "uniform", smoothness: float = 0.0,
                 loss: str = "mse") -> None:
        super().__init__(hidden=hidden, n_repr_layers=n_repr_layers, n_head_layers=n_head_layers, dropout=dropout,
                         lr=lr, weight_decay=weight_decay, batch_size=batch_size, max_epochs=max_epochs,
                         patience=patience, val_fraction=val_fraction, device=device, seed=seed, verbose=verbose,
                         head_hidden=head_hidden, lr_patience=lr_patience, min_delta=min_delta, ema=ema,
                         t_low=t_low, t_high=t_high, amp=amp, checkpoint_dir=checkpoint_dir,
                         x_transform=x_transform, n_ensemble=n_ensemble, loss=loss)
        self.n_basis = n_basis
        self.degree = degree
        self.knots = knots
        self.smoothness = smoothness

    # n_basis (an int or one per dimension) is checked against the data's dimensions in _setup_treatments
    _parameter_constraints = {"degree": integer(0), "knots": choice(*KNOTS), "smoothness": NONNEG}

    def _setup_treatments(self, T: np.ndarray) -> None:
        d = T.shape[1]
        if self.n_basis is None:
            nb = [int(np.clip(np.unique(T[:, j]).shape[0], 2, 8)) for j in range(d)]
        else:
            nb = [self.n_basis] * d if np.ndim(self.n_basis) == 0 else list(self.n_basis)
        if len(nb) != d or any(int(b) != b or b < 2 for b in nb):
            raise ValueError(f"DoseVC: n_basis must be None, an int >= 2 or a list of {d} ints >= 2, got {self.n_basis!r}")
        inner_knots, degrees = [], []
        for j in range(d):
            nbj = int(nb[j])
            deg = min(int(self.degree), nbj - 1)
            n_inner = nbj - deg - 1
            lo, hi = float(self.t_low_[j]), float(self.t_high_[j])
            if n_inner <= 0:
                inner = np.empty(0)
            elif self.knots == "quantile":
                inner = np.quantile(T[:, j], np.linspace(0, 1, n_inner + 2)[1:-1])
                inner = np.clip(inner, lo, hi)
                if np.unique(np.concatenate([[lo], inner, [hi]])).shape[0] != n_inner + 2:  # ties: fall back
                    inner = np.linspace(lo, hi, n_inner + 2)[1:-1]
            else:
                inner = np.linspace(lo, hi, n_inner + 2)[1:-1]
            inner_knots.append(inner)
            degrees.append(deg)
        # fitted state as plain arrays (NaN-padded knots): a saved model rebuilds the same basis from them
        width = max(1, max(k.shape[0] for k in inner_knots))
        self.spline_inner_knots_ = np.full((d, width), np.nan)
        for j, inner in enumerate(inner_knots):
            self.spline_inner_knots_[j, :inner.shape[0]] = inner
        self.spline_degree_ = np.asarray(degrees, dtype=np.int64)
        self.n_basis_ = tuple(b.n_basis for b in self._spline_bases())

    def _spline_bases(self) -> list[SplineBasis1D]:
        """The per-dimension bases from the fitted knots, degrees and range (training and reload alike)."""
        bases = []
        for j in range(self.spline_degree_.shape[0]):
            inner = self.spline_inner_knots_[j]
            bases.append(SplineBasis1D(inner[~np.isnan(inner)], float(self.t_low_[j]), float(self.t_high_[j]),
                                       int(self.spline_degree_[j])))
        return bases

    def _build_network(self, n_features: int, n_arms: int, generator: torch.Generator) -> nn.Module:
        return DoseVCNetwork(
            n_features, self.hidden, self.n_repr_layers, self._head_width(), self.n_head_layers, self.dropout,
            generator, TensorSplineBasis(self._spline_bases()),
        )

    def _batch_loss(self, out: dict, batch: dict):
        mse = self._outcome_loss(out["mu_obs"], batch["y"])
        if self.smoothness > 0:
            rough = self.network_roughness(out["theta"])
            return mse + self.smoothness * rough, {"mse": mse, "roughness": rough}
        return mse, {"mse": mse}

    def network_roughness(self, theta: torch.Tensor) -> torch.Tensor:
        shape = self.n_basis_
        th = theta.reshape(theta.shape[0], *shape)
        total = theta.new_zeros(())
        for j, nj in enumerate(shape):
            if nj >= 3:
                total = total + torch.diff(th, n=2, dim=1 + j).pow(2).sum(dim=tuple(range(1, th.ndim))).mean()
        return total


__all__ = ["DoseLogit", "DoseResponseModel", "DoseVC", "SplineBasis1D", "TensorSplineBasis"]
