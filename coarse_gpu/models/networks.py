"""Torch building blocks of the neural CATE models: an MLP trunk and a bank of per-arm heads.

Shapes: B rows in a batch, p input features, H representation width, A experimental arms.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn


def _uniform_fan_in_(w: torch.Tensor, fan_in: int, generator: torch.Generator) -> None:
    """torch.nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from ``generator``.

    Using an explicit generator keeps model seeds independent of the global torch RNG.
    """
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    with torch.no_grad():
        w.uniform_(-bound, bound, generator=generator)


class MLP(nn.Module):
    """``n_layers`` x (Linear -> ELU -> Dropout): (B, in_dim) -> (B, width).

    ELU as in DragonNet (Shi et al. 2019): smooth, no dead units, fine with standardized inputs.
    """

    def __init__(self, in_dim: int, width: int, n_layers: int, dropout: float, generator: torch.Generator) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(n_layers):
            lin = nn.Linear(d, width)
            _uniform_fan_in_(lin.weight, d, generator)
            _uniform_fan_in_(lin.bias, d, generator)
            layers += [lin, nn.ELU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = width
        self.net = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ArmHeads(nn.Module):
    """A independent MLP heads (``n_layers`` hidden ELU layers of ``width``, then a scalar output).

    The A heads are stored as stacked (A, in, out) weights and evaluated with one batched matmul,
    so predicting every arm costs one kernel per layer instead of a Python loop over arms (on a
    GPU the loop, with its boolean indexing, would also force a host sync per arm).
    """

    def __init__(
        self, in_dim: int, n_arms: int, width: int, n_layers: int, dropout: float, generator: torch.Generator
    ) -> None:
        super().__init__()
        dims = [in_dim] + [width] * n_layers + [1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            w = nn.Parameter(torch.empty(n_arms, d_in, d_out))
            b = nn.Parameter(torch.empty(n_arms, 1, d_out))
            _uniform_fan_in_(w, d_in, generator)
            _uniform_fan_in_(b, d_in, generator)
            self.weights.append(w)
            self.biases.append(b)
        self.act = nn.ELU()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.n_arms = n_arms
        # Set by the batched ensemble trainer: under torch.func.vmap shapes may not depend on the data,
        # so the grouped-by-arm CPU path below is replaced by all heads + a gather.
        self.dense_observed = False

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, H) representation -> (B, A) output of every head."""
        z = h.unsqueeze(0).expand(self.n_arms, -1, -1)  # (A, B, H), a view: no copy
        last = len(self.weights) - 1
        for j, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = torch.baddbmm(b, z, w)  # (A, B, out)
            if j < last:
                z = self.drop(self.act(z))
        return z.squeeze(-1).T  # (B, A)

    def forward_observed(self, h: torch.Tensor, arm: torch.Tensor) -> torch.Tensor:
        """(B,) output of each row's own head ``arm`` (B,) int64: what the training loss needs.

        On CUDA: all heads in one batched matmul, then a gather (cheap there, no host sync). On CPU:
        rows are grouped by arm and each group goes through its own head only, which is A times less
        arithmetic (the dominant cost of a CPU training step with 15 arms).
        """
        if h.is_cuda or getattr(self, "dense_observed", False):  # getattr: heads saved before the flag
            return self.forward(h).gather(1, arm[:, None]).squeeze(1)
        order = torch.argsort(arm, stable=True)
        counts = torch.bincount(arm, minlength=self.n_arms).tolist()
        groups = h[order].split(counts)
        # unbind: per-arm views whose backward is one stack, not A full-size scatter buffers
        ws = [w.unbind(0) for w in self.weights]
        bs = [b.unbind(0) for b in self.biases]
        last = len(ws) - 1
        outs = []
        for a, z in enumerate(groups):
            for j in range(len(ws)):
                z = torch.addmm(bs[j][a], z, ws[j][a])
                if j < last:
                    z = self.drop(self.act(z))
            outs.append(z)
        sorted_out = torch.cat(outs).squeeze(-1)
        return torch.empty_like(sorted_out).index_copy(0, order, sorted_out)


class ConditionedHead(nn.Module):
    """One outcome head shared by all arms, fed [Phi(x), c_a] where c_a (k,) is a fixed feature vector
    of arm a (the models pass standardized treatment coordinates + a one-hot arm indicator):
    mu_a(x) = g(Phi(x), c_a).

    Arms close in treatment space get similar functions unless the data say otherwise, so every row
    informs the neighbouring arms' predictions too (per-arm heads see only their own arm's rows).
    Like ``ArmHeads`` it returns one prediction per experimental arm.
    """

    def __init__(
        self, in_dim: int, arm_coords: torch.Tensor, width: int, n_layers: int, dropout: float,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.register_buffer("coords", arm_coords.to(torch.float32))  # (A, k)
        self.n_arms, d = arm_coords.shape
        self.body = MLP(in_dim + d, width, n_layers, dropout, generator)
        self.out = nn.Linear(self.body.out_dim, 1)
        _uniform_fan_in_(self.out.weight, self.body.out_dim, generator)
        _uniform_fan_in_(self.out.bias, self.body.out_dim, generator)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, H) -> (B, A)."""
        b = h.shape[0]
        z = torch.cat(
            [h.unsqueeze(1).expand(b, self.n_arms, -1), self.coords.unsqueeze(0).expand(b, -1, -1)], dim=2
        )
        return self.out(self.body(z)).squeeze(-1)

    def forward_observed(self, h: torch.Tensor, arm: torch.Tensor) -> torch.Tensor:
        """(B,) prediction of each row's own arm."""
        return self.out(self.body(torch.cat([h, self.coords[arm]], dim=1))).squeeze(-1)


class TARNetNetwork(nn.Module):
    """Shared representation Phi(x) (B, H) + one outcome head per arm: forward -> (B, A)."""

    def __init__(
        self,
        in_dim: int,
        n_arms: int,
        hidden: int,
        n_repr_layers: int,
        head_hidden: int,
        n_head_layers: int,
        dropout: float,
        generator: torch.Generator,
        arm_coords: Optional[torch.Tensor] = None,
    ) -> None:
        super().__init__()
        self.repr = MLP(in_dim, hidden, n_repr_layers, dropout, generator)
        if arm_coords is None:
            self.heads = ArmHeads(self.repr.out_dim, n_arms, head_hidden, n_head_layers, dropout, generator)
        else:
            self.heads = ConditionedHead(self.repr.out_dim, arm_coords, head_hidden, n_head_layers, dropout, generator)

    def forward(self, x: torch.Tensor, arm: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """x (B, p) -> {"phi": (B, H), "mu": (B, A) all heads} or, given ``arm`` (B,), {"phi", "mu_obs": (B,)}."""
        phi = self.repr(x)
        if arm is not None:
            return {"mu_obs": self.heads.forward_observed(phi, arm), "phi": phi}
        return {"mu": self.heads(phi), "phi": phi}


class DragonNetNetwork(TARNetNetwork):
    """TARNet + a multinomial propensity head (linear on Phi, A logits) + one epsilon per arm.

    ``epsilon`` (A,) is the targeted-regularization perturbation (see ``DragonNet``); it lives in
    the network so that the optimizer trains it jointly with everything else, as in the paper.
    """

    def __init__(self, *args, generator: torch.Generator, **kwargs) -> None:
        super().__init__(*args, generator=generator, **kwargs)
        n_arms = int(self.heads.n_arms)
        self.propensity = nn.Linear(self.repr.out_dim, n_arms)
        _uniform_fan_in_(self.propensity.weight, self.repr.out_dim, generator)
        _uniform_fan_in_(self.propensity.bias, self.repr.out_dim, generator)
        self.epsilon = nn.Parameter(torch.zeros(n_arms))

    def forward(self, x: torch.Tensor, arm: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        out = super().forward(x, arm)
        out["logits"] = self.propensity(out["phi"])
        out["epsilon"] = self.epsilon
        return out


def no_decay_parameters(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters into (decayed, not decayed): weight decay on weight matrices only.

    Biases and the targeted-regularization epsilons are offsets; shrinking them to 0 is a bias, not
    a regularizer.
    """
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        is_bias = name.endswith("bias") or ".biases." in name or name == "epsilon"
        (no_decay if is_bias else decay).append(p)
    return decay, no_decay


def count_parameters(module: Optional[nn.Module]) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())
