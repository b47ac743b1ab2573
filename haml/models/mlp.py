"""The MLP trunk shared by haml's policies (and, later, its critics).

Layout, as in the papers' reference code (HARL's ``MLPBase``)::

    [LayerNorm(obs_dim)]  ->  ( Linear -> activation -> [LayerNorm] ) x len(hidden)

The input LayerNorm is on when ``input_norm`` is set, the LayerNorm after each hidden layer when
``layer_norm`` is set. Every Linear is initialised orthogonally with the activation's gain and a
zero bias; the output layer of a policy (not part of this trunk) uses gain 0.01.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from haml.models.layer_norm import LayerNorm

__all__ = ["ACTIVATIONS", "MLP", "activation_gain", "init_linear"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
"""The supported hidden activations by name; the native Fisher product implements exactly these."""


def activation_gain(activation: str) -> float:
    """The orthogonal-init gain of ``activation`` (5/3 for tanh, √2 for ReLU)."""
    return nn.init.calculate_gain(activation)


def init_linear(layer: nn.Linear, gain: float) -> nn.Linear:
    """Orthogonal weights scaled by ``gain``, zero bias (HARL's ``init_`` for every Linear)."""
    nn.init.orthogonal_(layer.weight, gain=gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def _check_hidden(hidden: Sequence[int]) -> tuple[int, ...]:
    if isinstance(hidden, int) or not isinstance(hidden, Sequence):
        raise TypeError(f"MLP: 'hidden' must be a sequence of layer widths, got {hidden!r}")
    widths = tuple(hidden)
    for width in widths:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"MLP: 'hidden' widths must be positive integers, got {hidden!r}")
    return widths


class MLP(nn.Module):
    """``[LayerNorm] -> (Linear -> activation -> [LayerNorm]) x len(hidden)``; see the module doc.

    ``hidden=()`` gives the identity (or just the input LayerNorm): a linear policy on top.
    ``layers`` is the ``nn.Sequential`` of all modules in forward order, ``out_dim`` the width of
    the features it returns.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        layer_norm: bool = False,
        input_norm: bool = False,
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if isinstance(in_dim, bool) or not isinstance(in_dim, int) or in_dim < 1:
            raise ValueError(f"MLP: 'in_dim' must be a positive integer, got {in_dim!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"MLP: 'activation' must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        self.in_dim = in_dim
        self.hidden = _check_hidden(hidden)
        self.activation = activation
        self.layer_norm = bool(layer_norm)
        self.input_norm = bool(input_norm)
        self.layer_norm_eps = float(layer_norm_eps)

        gain = activation_gain(activation)
        modules: list[nn.Module] = []
        if self.input_norm:
            modules.append(LayerNorm(in_dim, eps=self.layer_norm_eps))
        width = in_dim
        for out in self.hidden:
            modules.append(init_linear(nn.Linear(width, out), gain))
            modules.append(ACTIVATIONS[activation]())
            if self.layer_norm:
                modules.append(LayerNorm(out, eps=self.layer_norm_eps))
            width = out
        self.layers = nn.Sequential(*modules)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[*B, out_dim]`` of inputs ``[*B, in_dim]``."""
        return self.layers(x)
