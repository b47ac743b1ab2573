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

from haml.buffers.layout import select_units
from haml.models.recurrent import SequenceView

__all__ = [
    "ActorBatch", "ActorLearner", "Sequences", "linear_decay", "minibatch_indices", "schedule_lr",
    "set_flat_grad",
]


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
    sequences: Sequences | None = None
    """For a recurrent policy: the samples are ``L``-step chunks laid out time-major
    (:class:`~haml.buffers.layout.ChunkLayout`); None for a feed-forward one."""

    @property
    def units(self) -> int:
        """What minibatches partition: samples, or chunks for a recurrent policy."""
        return self.logp_old.shape[0] if self.sequences is None else self.sequences.h0.shape[0]

    def subset(self, idx: torch.Tensor | None) -> ActorBatch:
        """The minibatch of units ``idx`` (samples, or whole chunks); ``None``: all of them."""
        if idx is None:
            return self
        length = 1 if self.sequences is None else self.sequences.length
        take = lambda x: None if x is None else select_units(x, idx, length)  # noqa: E731
        return ActorBatch(
            obs=take(self.obs),
            actions=take(self.actions),
            logp_old=take(self.logp_old),
            advantages=take(self.advantages),
            factor=take(self.factor),
            mask=take(self.mask),
            action_mask=take(self.action_mask),
            sequences=None if self.sequences is None else self.sequences.subset(idx),
        )

    def view(self, policy: nn.Module) -> nn.Module:
        """``policy`` as a module whose ``distribution(obs, action_mask)`` reads this batch's
        samples: the policy itself, or a :class:`~haml.models.recurrent.SequenceView` of it."""
        if self.sequences is None:
            return policy
        return SequenceView(policy, self.sequences.h0, self.sequences.starts, self.sequences.length)


@dataclass
class Sequences:
    """The chunks of a recurrent batch: ``length`` L steps each, the hidden states ``h0 [C, layers,
    H]`` they restart from, and the episode starts ``starts [L·C]`` (time-major)."""

    length: int
    h0: torch.Tensor
    starts: torch.Tensor

    def subset(self, idx: torch.Tensor | None) -> Sequences:
        if idx is None:
            return self
        return Sequences(self.length, self.h0[idx], select_units(self.starts, idx, self.length))


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


def minibatch_indices(
    n: int, num_minibatches: int, device: torch.device
) -> list[torch.Tensor] | list[None]:
    """A random partition of ``range(n)`` (samples, or chunks) into ``num_minibatches``
    near-equal parts (global RNG, so that a checkpoint's RNG state reproduces it).

    One minibatch is ``[None]``: the whole batch in its own order. Its gradient does not depend
    on the order, so no permutation is drawn and no copy of the batch is gathered
    (:func:`~haml.buffers.layout.select_units` and ``subset`` take ``None`` as "all")."""
    if num_minibatches > n:
        raise ValueError(
            f"num_minibatches ({num_minibatches}) is larger than the batch ({n} samples or chunks)"
        )
    if num_minibatches == 1:
        return [None]
    order = torch.randperm(n).to(device)
    return list(order.chunk(num_minibatches))


def set_flat_grad(module: nn.Module, flat: torch.Tensor) -> None:
    """Each parameter's ``.grad`` from ``flat``, a gradient laid out over ``module.parameters()``
    in order (the native gradients' layout), as views of it."""
    params = list(module.parameters())
    for p, grad in zip(params, flat.split([p.numel() for p in params])):
        p.grad = grad.view_as(p)
