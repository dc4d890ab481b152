"""TARNet (Shalit, Johansson & Sontag 2017): shared representation + one outcome head per arm."""
from __future__ import annotations

from coarse_gpu.models.base import PerArmCATEModel
from coarse_gpu.models.networks import TARNetNetwork


class TARNet(PerArmCATEModel):
    """Treatment-agnostic representation network for A experimental arms.

    Phi(x) is an ELU MLP shared by all arms; the head of arm a maps Phi(x) to mu_a(x) = E[y | x, arm a].
    Each row's loss is the squared error (standardized y) of its received arm's prediction only.
    With ``arm_heads="separate"`` (Shalit et al.) every arm has its own head MLP, so a head learns from
    its own arm's rows alone; with ``arm_heads="conditioned"`` (default) one head MLP takes [Phi(x), arm
    coordinates, one-hot arm] and is evaluated at each arm, so rows of neighbouring arms inform each
    other while each arm can still deviate. The conditioned head is much less noisy when outcomes are
    noisy and arms many (numbers in scripts/tune_models.py); both return one prediction per arm.

    See ``PerArmCATEModel`` for the parameters. Fitted attributes:
      arms_ (A, d) distinct treatments, grid_ (ArmGrid, or None if the arms are not a full grid),
      arm_counts_ (A,), n_features_in_, x_mean_ / x_scale_ (p,), y_mean_ / y_scale_ (floats, y units),
      network_ (torch module, eval mode, on device_), history_ (list of per-epoch dicts with epoch,
      train_loss, val_loss, lr; losses are MSE in standardized-y units), best_epoch_, best_val_loss_,
      fit_time_s_, n_parameters_.

    Example
    -------
    >>> m = TARNet(max_epochs=20).fit(X, t, y)
    >>> m.predict_arms(X_new)                 # (N, A) at the arms
    >>> m.predict_profit(X_new, [[0.15, 1.0]])  # (N, 1) anywhere in the arms' hull
    """

    _network_cls = TARNetNetwork

    def _batch_loss(self, out: dict, batch: dict):
        # Only the received arm's head sees this row: gather its output, squared error.
        # (or the loss of ``loss``: cross-entropy for a 0/1 response, Poisson, Gamma)
        mse = self._outcome_loss(out["mu_obs"], batch["y"])
        return mse, {"mse": mse}
