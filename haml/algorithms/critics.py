"""Training the V critic: clipped Huber value loss on (optionally) normalised returns.

Per minibatch, with V_old the prediction recorded at collection and R̂ = Â + V the GAE returns
([HATRPO], Algorithm 2 line 15 and the papers' code)::

    V_clip = V_old + clip(V_φ(s) − V_old, −ε_v, ε_v)
    L(φ)   = mean( max( huber(norm(R̂) − V_φ(s)), huber(norm(R̂) − V_clip) ) )

``norm`` is the running :class:`~haml.models.value.ValueNorm` (updated with each minibatch's raw
returns before it is used, as HARL) or the identity.

Each step's gradient of L comes from :func:`haml.ops.value_gradient.value_loss_gradient` for an MLP
critic it serves (the native forward with cached activations and one transposed pass; autograd
only through L), else, or with ``critic.native_gradient: false``, from autograd through the
network. The two agree to rounding.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from dataclasses import dataclass

from haml.algorithms.base import Sequences, minibatch_indices, schedule_lr, set_flat_grad
from haml.buffers.layout import select_units
from haml.config.schema import CriticConfig
from haml.models.recurrent import GRUCritic, is_recurrent
from haml.models.value import ValueNorm, VCritic, huber
from haml.ops.masked import masked_mean
from haml.ops.value_gradient import serves_natively, value_loss_gradient

__all__ = ["CriticLearner", "RolloutValues", "clipped_value_loss"]


@dataclass
class RolloutValues:
    """A critic's reading of one rollout, each ``[T, E]`` (states ``[T, E, layers, H]``)."""

    raw: torch.Tensor
    """The network's outputs for s_t (normalised space; the value-clipping reference)."""
    value: torch.Tensor
    """V(s_t) in return units."""
    next_value: torch.Tensor
    """V(s_{t+1}) in return units, from the true next state."""
    h_used: torch.Tensor | None = None
    h_next: torch.Tensor | None = None


def clipped_value_loss(
    value: torch.Tensor,
    target: torch.Tensor,
    old: torch.Tensor,
    value_clip: float,
    huber_delta: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """L(φ) of the module doc for predictions ``value``, (normalised) targets ``target`` and the
    collection-time outputs ``old``, each ``[N]``; ``value_clip`` 0 drops the clipped term,
    ``huber_delta`` 0 gives the squared error, ``mask`` weights the samples in the mean."""
    error = huber(target - value, huber_delta)
    if value_clip > 0:
        clipped = old + (value - old).clamp(-value_clip, value_clip)
        error = torch.max(error, huber(target - clipped, huber_delta))
    return masked_mean(error, mask)


class CriticLearner:
    """A :class:`VCritic`, its optimiser and its value normaliser."""

    def __init__(self, critic: VCritic | GRUCritic, cfg: CriticConfig) -> None:
        self.critic = critic
        self.cfg = cfg
        self.value_norm = ValueNorm() if cfg.value_norm else None
        # foreach: one multi-tensor op per Adam stage instead of one per parameter (torch picks
        # it on CUDA only); the same numbers, faster on a CPU too (docs/BENCHMARKS.md).
        self.optimizer = torch.optim.Adam(
            critic.parameters(), lr=cfg.lr, eps=cfg.adam_eps, foreach=True
        )

    @property
    def lr(self) -> float:
        """The current learning rate (after the schedule)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def set_progress(self, fraction: float) -> None:
        schedule_lr(self.optimizer, self.cfg.lr, self.cfg.lr_schedule, fraction)

    def _denormalize(self, raw: torch.Tensor) -> torch.Tensor:
        return self.value_norm.denormalize(raw) if self.value_norm is not None else raw

    @torch.no_grad()
    def rollout_values(
        self,
        inputs: torch.Tensor,
        final_inputs: torch.Tensor,
        h0: torch.Tensor | None = None,
        starts: torch.Tensor | None = None,
    ) -> RolloutValues:
        """V(s_t) and V(s_{t+1}) over a rollout: ``inputs``/``final_inputs`` ``[T, E, in]``.

        A recurrent critic runs the rollout as one sequence from ``h0 [E, layers, H]`` with the
        episode starts ``starts [T, E]``; V(s_{t+1}) reads the true next input with the hidden state
        after step t. ``h_used`` (the state each step started from, for the training chunks) and
        ``h_next`` (the state the next rollout continues from) are None for an MLP critic.
        """
        if not is_recurrent(self.critic):
            raw = self.critic(inputs)
            return RolloutValues(raw, self._denormalize(raw), self._denormalize(self.critic(final_inputs)))
        raw, used, after = self.critic.sequence(inputs, h0, starts)
        next_value = self._denormalize(self.critic.next_values(final_inputs, after))
        return RolloutValues(raw, self._denormalize(raw), next_value, used, after[-1])

    def update(
        self,
        inputs: torch.Tensor,
        returns: torch.Tensor,
        old_raw: torch.Tensor,
        mask: torch.Tensor | None = None,
        sequences: Sequences | None = None,
    ) -> dict[str, torch.Tensor]:
        """``epochs`` × ``num_minibatches`` steps on ``inputs [N, in]``, ``returns [N]`` and the
        collection-time outputs ``old_raw [N]``; ``mask [N]`` weights samples (None: all). A
        recurrent critic takes its samples as chunks (``sequences``; minibatches of whole chunks)."""
        cfg = self.cfg
        length = 1 if sequences is None else sequences.length
        units = returns.shape[0] if sequences is None else sequences.h0.shape[0]
        total = torch.zeros((), device=returns.device)
        steps = 0
        for _ in range(cfg.epochs):
            for idx in minibatch_indices(units, cfg.num_minibatches, returns.device):
                target = select_units(returns, idx, length)
                if self.value_norm is not None:
                    self.value_norm.update(target)
                    target = self.value_norm.normalize(target)
                x = select_units(inputs, idx, length)
                value_loss = functools.partial(
                    clipped_value_loss,
                    target=target,
                    old=select_units(old_raw, idx, length),
                    value_clip=cfg.value_clip,
                    huber_delta=cfg.huber_delta,
                    mask=None if mask is None else select_units(mask, idx, length),
                )
                self.optimizer.zero_grad(set_to_none=True)
                if cfg.native_gradient and sequences is None and serves_natively(self.critic, x):
                    loss, flat, _ = value_loss_gradient(self.critic, x, value_loss)
                    set_flat_grad(self.critic, flat)
                else:
                    if sequences is None:
                        value = self.critic(x)
                    else:
                        chunks = sequences.subset(idx)
                        value = self.critic.sequence(
                            x.view(length, -1, x.shape[-1]), chunks.h0, chunks.starts.view(length, -1)
                        )[0].flatten()
                    loss = value_loss(value)
                    loss.backward()
                if cfg.max_grad_norm > 0:
                    nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                total = total + loss.detach()
                steps += 1
        return {"value_loss": total / steps}

    def state_dict(self) -> dict[str, Any]:
        return {
            "critic": self.critic.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "value_norm": None if self.value_norm is None else self.value_norm.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.value_norm is not None:
            self.value_norm.load_state_dict(state["value_norm"])
