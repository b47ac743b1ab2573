"""Value functions: the V critic and the running value normaliser.

The critic is the MLP trunk of :mod:`haml.models.mlp` with a scalar head (orthogonal init, gain 1,
as HARL). With value normalisation on, the critic is trained to predict *normalised* returns and
its outputs are denormalised before they enter GAE.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from haml.models.mlp import MLP, init_linear

__all__ = ["VCritic", "ValueNorm", "huber"]


class VCritic(nn.Module):
    """V_φ(x) for inputs ``[*B, in_dim]`` (the global state, or an agent's own observation)."""

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (64,),
        activation: str = "relu",
        layer_norm: bool = True,
        input_norm: bool = True,
    ) -> None:
        super().__init__()
        self.body = MLP(in_dim, hidden, activation, layer_norm, input_norm)
        self.head = init_linear(nn.Linear(self.body.out_dim, 1), 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Values ``[*B]``."""
        return self.head(self.body(x)).squeeze(-1)


class ValueNorm(nn.Module):
    """Running mean and variance of the returns, debiased (HARL's ``ValueNorm``).

    Exponential moving averages with weight β of the batch mean and mean of squares::

        μ ← β μ + (1-β) mean(x),   ν ← β ν + (1-β) mean(x²),   d ← β d + (1-β)
        mean = μ / d,   var = max(ν / d − mean², var_min)

    The debiasing term d makes the first updates unbiased (as Adam's bias correction); the floor
    ``var_min`` keeps a near-constant return from blowing up the normalised targets.
    """

    def __init__(self, beta: float = 0.99999, eps: float = 1e-5, var_min: float = 1e-2) -> None:
        super().__init__()
        self.beta = beta
        self.eps = eps
        self.var_min = var_min
        self.register_buffer("running_mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("running_mean_sq", torch.zeros((), dtype=torch.float64))
        self.register_buffer("debiasing", torch.zeros((), dtype=torch.float64))

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.debiasing.clamp(min=self.eps)
        mean = self.running_mean / d
        var = (self.running_mean_sq / d - mean**2).clamp(min=self.var_min)
        return mean, var

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float64)
        b = self.beta
        self.running_mean.mul_(b).add_((1 - b) * x.mean())
        self.running_mean_sq.mul_(b).add_((1 - b) * (x**2).mean())
        self.debiasing.mul_(b).add_(1 - b)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = self.mean_var()
        return ((x - mean) / var.sqrt()).to(x.dtype)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = self.mean_var()
        return (x * var.sqrt() + mean).to(x.dtype)


def huber(error: torch.Tensor, delta: float) -> torch.Tensor:
    """Elementwise Huber loss of ``error`` with threshold δ (δ = 0: the squared error / 2)."""
    if delta <= 0:
        return 0.5 * error**2
    abs_error = error.abs()
    quadratic = abs_error.clamp(max=delta)
    return 0.5 * quadratic**2 + delta * (abs_error - quadratic)
