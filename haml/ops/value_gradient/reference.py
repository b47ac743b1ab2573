"""The gradient of a value network's loss, readable form: autograd through the network.

For a value network V_φ (:class:`haml.models.value.VCritic`) and a scalar loss ℓ of its outputs
on N inputs (the critic's clipped Huber loss, :mod:`haml.algorithms.critics`),

    ∇_φ ℓ(V_φ(x_1), …, V_φ(x_N)) = Σ_n (∂ℓ/∂V_n) ∇_φ V_φ(x_n)

This module runs the network's forward and backward through autograd. The native form
(:mod:`haml.ops.value_gradient`) gets the same vector from a cached forward and one transposed
pass, autograd running only through ℓ.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["value_loss_gradient"]


def value_loss_gradient(
    network: nn.Module,
    inputs: torch.Tensor,
    loss: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ℓ, ∇_φ ℓ, V)``: the loss's value, its gradient flat over the network's trainable
    parameters (``parameters()`` order) and the values ``[N]``, each detached."""
    params = [p for p in network.parameters() if p.requires_grad]
    with torch.enable_grad():
        values = network(inputs)
        value = loss(values)
        grads = torch.autograd.grad(value, params, allow_unused=True, materialize_grads=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    return value.detach(), flat, values.detach()
