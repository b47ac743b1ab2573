"""What every actor update receives and how it reports: :class:`ActorBatch`, :class:`ActorLearner`.

An actor learner updates one policy from one batch. For the heterogeneous-agent (HA) algorithms
the runner calls it once per agent, in a random order, with the factor M of the agents updated
before; for the multi-agent (MA) baselines it calls it with M = 1 (and, with shared parameters,
with the concatenated data of all agents).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

__all__ = ["ActorBatch", "ActorLearner", "linear_decay", "minibatch_indices", "schedule_lr"]


@dataclass
class ActorBatch:
    """One agent's (or one shared policy's) training data, flattened to ``N`` samples."""

    obs: torch.Tensor
    """``[N, obs_dim]``."""
    actions: torch.Tensor
    """``[N, d]`` (Gaussian) or ``[N]`` (categorical)."""
    logp_old: torch.Tensor
    """log π_θk(a|o) recorded at collection, ``[N]``."""
    advantages: torch.Tensor
    """Â(s, a) of the joint action, ``[N]``."""
    factor: torch.Tensor
    """M^{i_{1:m}}(s, a), the product of the already-updated agents' ratios, ``[N]`` (detached)."""
    mask: torch.Tensor | None = None
    """Active samples ``[N]`` (an agent that is dead or absent contributes nothing); None: all."""
    action_mask: torch.Tensor | None = None
    """Available actions ``[N, n]`` (categorical policies)."""


class ActorLearner(Protocol):
    """Updates ``policy`` (held by the learner) from an :class:`ActorBatch`."""

    policy: nn.Module

    def update(self, batch: ActorBatch) -> dict[str, torch.Tensor]:
        """One iteration's update; returns detached scalar metrics (no host sync)."""
        ...

    def set_progress(self, fraction: float) -> None:
        """Fraction of the run done, in [0, 1] (for learning-rate schedules)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def linear_decay(base_lr: float, schedule: str, fraction: float) -> float:
    """The learning rate at ``fraction`` of the run: constant, or linear decay to 0 (HARL)."""
    if schedule == "linear":
        return base_lr * max(0.0, 1.0 - fraction)
    return base_lr


def schedule_lr(optimizer: torch.optim.Optimizer, base_lr: float, schedule: str, fraction: float) -> None:
    """Set every parameter group of ``optimizer`` to :func:`linear_decay`'s learning rate."""
    lr = linear_decay(base_lr, schedule, fraction)
    for group in optimizer.param_groups:
        group["lr"] = lr


def minibatch_indices(n: int, num_minibatches: int, device: torch.device) -> list[torch.Tensor]:
    """A random partition of ``range(n)`` into ``num_minibatches`` near-equal parts (global RNG,
    so that a checkpoint's RNG state reproduces it)."""
    if num_minibatches > n:
        raise ValueError(
            f"num_minibatches ({num_minibatches}) is larger than the batch ({n} samples)"
        )
    order = torch.randperm(n).to(device)
    return list(order.chunk(num_minibatches))
