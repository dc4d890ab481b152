"""DragonNet (Shi, Blei & Veitch 2019), generalized from a binary treatment to A arms."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from coarse_gpu.models.base import PerArmCATEModel
from coarse_gpu.models.networks import DragonNetNetwork
from coarse_gpu.utils.params import NONNEG, number


class DragonNet(PerArmCATEModel):
    """TARNet + a propensity head on the shared representation + targeted regularization.

    What is implemented (A arms, row i received arm a_i, all losses on standardized y):

    * outcome loss      L_y   = mean_i (y_i - mu_{a_i}(x_i))^2                  (as TARNet)
    * propensity loss   L_e   = mean_i -log e_{a_i}(x_i),  e(x) = softmax(W Phi(x) + b) over the A arms
      (the multinomial version of DragonNet's sigmoid treatment head)
    * targeted regularization, one perturbation epsilon_a per arm:
          y~_i = mu_{a_i}(x_i) + sum_a epsilon_a 1{a_i = a} / e_a(x_i) = mu_{a_i}(x_i) + epsilon_{a_i} / e_{a_i}(x_i)
          L_tr = mean_i (y_i - y~_i)^2
      The clever covariate of arm a, H_a(x, a_i) = 1{a_i = a} / e_a(x), is the efficient-influence-
      function direction of the arm mean E[mu_a(X)]; with two arms and epsilon_0 = -epsilon_1 it is the
      paper's h(x, t) = t/g(x) - (1-t)/(1-g(x)). Giving each arm its own epsilon targets every arm mean
      (hence every contrast) at once. At a stationary point in epsilon_a, sum_{i: a_i=a} (y_i - y~_i)/e_a(x_i) = 0:
      the AIPW estimating equation of arm a's mean holds for the perturbed predictions.
    * total loss = L_y + alpha * L_e + beta * L_tr.

    Propensities: the head's e_{a_i}(x_i) is used in L_tr unless known propensities are passed to
    ``fit`` and ``use_known_propensity`` is True (the default): in a randomized experiment the design
    probabilities are exact, so there is no reason to replace them with an estimate. The head is
    trained in both cases (its loss regularizes the representation, the point of DragonNet).
    Propensities in L_tr are clipped to >= ``propensity_clip`` so 1/e stays bounded.

    Predictions: ``predict_arms`` returns the heads mu_a(x) (the targeted-regularization loss shapes them
    during training, as in the paper's CATE estimates); ``targeted_predictions=True`` instead returns
    mu_a(x) + epsilon_a / e_a(x) with the head's propensity (the plug-in TMLE-style correction).
    Early stopping uses the validation outcome MSE, so ``val_loss`` is comparable with TARNet's.

    Extra parameters
    ----------------
    alpha : weight of the propensity cross-entropy.  beta : weight of the targeted regularization.
    use_known_propensity : use ``fit(..., propensity=...)`` in L_tr when given.
    propensity_clip : lower bound of propensities in L_tr (and in targeted predictions).
    targeted_predictions : add epsilon_a / e_a(x) to the per-arm predictions.
    Extra fitted attributes: epsilon_ (A,) in y's units, used_known_propensity_ (bool).
    History records also hold val_outcome_mse, val_propensity_ce and val_targeted_mse.
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
        alpha: float = 1.0,
        beta: float = 1.0,
        use_known_propensity: bool = True,
        propensity_clip: float = 0.01,
        targeted_predictions: bool = False,
        loss: str = "mse",
    ) -> None:
        super().__init__(
            hidden=hidden, n_repr_layers=n_repr_layers, n_head_layers=n_head_layers, dropout=dropout, lr=lr,
            weight_decay=weight_decay, batch_size=batch_size, max_epochs=max_epochs, patience=patience,
            val_fraction=val_fraction, interpolation=interpolation, device=device, seed=seed, verbose=verbose,
            head_hidden=head_hidden, lr_patience=lr_patience, min_delta=min_delta, arm_heads=arm_heads, ema=ema,
            amp=amp, checkpoint_dir=checkpoint_dir, x_transform=x_transform, n_ensemble=n_ensemble, loss=loss,
        )
        self.alpha = alpha
        self.beta = beta
        self.use_known_propensity = use_known_propensity
        self.propensity_clip = propensity_clip
        self.targeted_predictions = targeted_predictions

    _parameter_constraints = {"alpha": NONNEG, "beta": NONNEG,
                              "propensity_clip": number(0.0, 1.0, lo_open=True, hi_open=True)}

    _network_cls = DragonNetNetwork

    def _prepare_extra(self, arm: np.ndarray, propensity: Optional[np.ndarray]) -> dict[str, np.ndarray]:
        self.used_known_propensity_ = bool(propensity is not None and self.use_known_propensity)
        return {"e_known": propensity} if self.used_known_propensity_ else {}

    def _parts(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        arm = batch["arm"][:, None]
        mu = out["mu_obs"]
        log_e = F.log_softmax(out["logits"], dim=1)
        ce = -log_e.gather(1, arm).squeeze(1).mean()
        if "e_known" in batch:
            e = batch["e_known"]
        else:
            # Not detached, as in the paper: L_tr also shapes the propensity head through 1/e.
            e = log_e.gather(1, arm).squeeze(1).exp()
        e = e.clamp(min=self.propensity_clip)
        eps = out["epsilon"][batch["arm"]]
        y_tilde = mu + eps / e
        return {
            "mse": self._outcome_loss(mu, batch["y"]),
            "ce": ce,
            # with a 0/1 or count loss the fluctuation lives on the link scale, fitted by the same loss
            # (TMLE's logistic fluctuation for a binary outcome)
            "tr": self._outcome_loss(y_tilde, batch["y"]),
        }

    def _batch_loss(self, out: dict, batch: dict):
        p = self._parts(out, batch)
        loss = p["mse"] + self.alpha * p["ce"] + self.beta * p["tr"]
        return loss, p

    def _val_parts(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        p = self._parts(out, batch)
        return {"val_loss": p["mse"], "val_outcome_mse": p["mse"], "val_propensity_ce": p["ce"],
                "val_targeted_mse": p["tr"]}

    def _train(self, tr: dict, va: dict, gen: torch.Generator) -> None:
        super()._train(tr, va, gen)
        # epsilon is in standardized-y units inside the network; report it in y's units.
        self.epsilon_ = self.network_.epsilon.detach().double().cpu().numpy() * self.y_scale_

    def _fit_ensemble(self, X, T, y, propensity) -> "DragonNet":
        super()._fit_ensemble(X, T, y, propensity)
        self.epsilon_ = np.mean([m.epsilon_ for m in self.members_], axis=0)
        return self

    def predict_propensity(self, X) -> np.ndarray:
        """(N, A) float64 estimated probability e_a(x_i) of each arm (rows sum to 1)."""
        logits = self._forward_numpy(X, "logits")
        logits = logits - logits.max(1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(1, keepdims=True)

    def predict_arms(self, X) -> np.ndarray:
        """(N, A) float64 predicted outcome at every arm in y's units (see the class docstring)."""
        mu = super().predict_arms(X)
        if self.targeted_predictions:
            e = np.maximum(self.predict_propensity(X), self.propensity_clip)
            mu = mu + self.epsilon_[None, :] / e
        return mu
