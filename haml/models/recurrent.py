"""Recurrent (GRU) actors and critics, for partially observed tasks (SMAC, SMAX).

Layout, as the papers' reference code (HARL's ``RNNLayer`` after ``MLPBase``)::

    MLP trunk  ->  GRU (``rnn_layers`` layers, hidden size = the trunk's width)  ->  LayerNorm  ->  head

Hidden states are batch-first, ``[B, rnn_layers, H]``, so that a rollout can store them as
``[T, E, rnn_layers, H]`` and chunks can be indexed along one batch dimension.

**Episode starts.** ``starts [L, B]`` (bool) marks the steps whose observation is the first of an
episode; the hidden state is zeroed *before* such a step, so no memory leaks from one episode into
the next (HARL multiplies by its ``masks``, the same thing).

**Training.** Rollouts are cut into chunks of ``L`` steps ([HATRPO]'s SMAC setting: data chunk
length 10); each chunk restarts from the hidden state stored at its first step during collection
and is back-propagated through its ``L`` steps only (truncated BPTT). :class:`SequenceView` turns a
recurrent policy and a set of chunks into a module with the plain ``distribution(obs,
action_mask)`` of a feed-forward policy over the flattened ``[L·B]`` samples, so the surrogate, the
trust-region step and its Fisher product (the double-backward fallback) need no recurrent case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.distributions import Categorical, Normal

from haml.models.layer_norm import LayerNorm
from haml.models.mlp import MLP, init_linear
from haml.models.policies import (
    HEAD_GAIN,
    head_distribution,
    joint_log_prob,
    parse_action_space,
    sample_head,
)

__all__ = ["GRUCore", "GRUCritic", "GRUPolicy", "SequenceView", "is_recurrent"]


def is_recurrent(module: nn.Module) -> bool:
    """Whether ``module`` carries a hidden state between steps (a :class:`GRUPolicy` or
    :class:`GRUCritic`)."""
    return bool(getattr(module, "recurrent", False))


class GRUCore(nn.Module):
    """``nn.GRU`` + output LayerNorm, stepped with episode-start resets.

    Weights orthogonal, biases zero (HARL's initialisation of its GRU).
    """

    def __init__(self, in_dim: int, hidden_size: int, layers: int = 1) -> None:
        super().__init__()
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ValueError(f"GRUCore: 'layers' must be an integer >= 1, got {layers!r}")
        self.hidden_size = hidden_size
        self.layers = layers
        self.gru = nn.GRU(in_dim, hidden_size, num_layers=layers)
        for name, param in self.gru.named_parameters():
            if name.startswith("weight"):
                nn.init.orthogonal_(param)
            else:
                nn.init.zeros_(param)
        self.norm = LayerNorm(hidden_size)

    def initial_state(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        """Zeros ``[batch, layers, H]`` with ``like``'s dtype and device."""
        return like.new_zeros(batch, self.layers, self.hidden_size)

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor, starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features ``[L, B, H]`` of inputs ``x [L, B, d]`` from ``h0 [B, layers, H]``.

        Returns ``(features, h_used, h_after)``, both states ``[L, B, layers, H]``: ``h_used[t]``
        is the hidden state step t started from (after its reset), ``h_after[t]`` the state after
        step t (before any reset the next step may bring); ``h_after[-1]`` carries on.
        """
        keep = (~starts).to(x.dtype)[..., None, None]  # [L, B, 1, 1]
        h = h0
        outs, used, after = [], [], []
        for t in range(x.shape[0]):
            h = h * keep[t]
            used.append(h)
            out, h_next = self.gru(x[t : t + 1], h.transpose(0, 1).contiguous())
            outs.append(out[0])
            h = h_next.transpose(0, 1)
            after.append(h)
        return self.norm(torch.stack(outs)), torch.stack(used), torch.stack(after)


def _check_sequence(owner: str, x: torch.Tensor, in_dim: int, h0: torch.Tensor, starts: torch.Tensor,
                    core: GRUCore) -> None:
    if x.dim() != 3 or x.shape[-1] != in_dim:
        raise ValueError(f"{owner}: inputs must be [L, B, {in_dim}], got {tuple(x.shape)}")
    L, B = x.shape[:2]
    if tuple(h0.shape) != (B, core.layers, core.hidden_size):
        raise ValueError(
            f"{owner}: hidden state must be [{B}, {core.layers}, {core.hidden_size}] "
            f"([B, rnn_layers, H]), got {tuple(h0.shape)}"
        )
    if tuple(starts.shape) != (L, B) or starts.dtype != torch.bool:
        raise ValueError(f"{owner}: 'starts' must be bool [{L}, {B}], got {starts.dtype} {tuple(starts.shape)}")


class GRUPolicy(nn.Module):
    """π_θ(a | o_{≤t}): an :class:`~haml.models.mlp.MLP` trunk, a :class:`GRUCore` and a Gaussian or
    masked-categorical head (the same heads as :class:`~haml.models.MLPPolicy`).

    Args: as :class:`~haml.models.MLPPolicy`, plus ``rnn_layers`` (GRU layers; the GRU's width is
    the trunk's last width, as HARL). ``hidden`` must not be empty.
    """

    recurrent = True

    def __init__(
        self,
        obs_dim: int,
        action_space: Any,
        hidden: Sequence[int] = (64,),
        activation: str = "relu",
        layer_norm: bool = True,
        input_norm: bool = True,
        log_std_init: float = 0.0,
        rnn_layers: int = 1,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        head, action_dim = parse_action_space(action_space, "GRUPolicy")
        if len(tuple(hidden)) == 0:
            raise ValueError("GRUPolicy: 'hidden' needs at least one layer (it sets the GRU's width)")
        self.head_type: Literal["gaussian", "categorical"] = head
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.body = MLP(obs_dim, hidden, activation, layer_norm, input_norm)
        self.core = GRUCore(self.body.out_dim, self.body.out_dim, rnn_layers)
        self.head = init_linear(nn.Linear(self.body.out_dim, action_dim), HEAD_GAIN)
        if head == "gaussian":
            self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))
        else:
            self.register_parameter("log_std", None)
        if device is not None:
            self.to(device)

    def initial_state(self, batch: int) -> torch.Tensor:
        """The hidden state at an episode start, ``[batch, rnn_layers, H]`` (zeros)."""
        return self.core.initial_state(batch, self.head.weight)

    def sequence(
        self,
        obs: torch.Tensor,
        h0: torch.Tensor,
        starts: torch.Tensor,
        action_mask: torch.Tensor | None = None,
    ) -> tuple[Normal | Categorical, torch.Tensor]:
        """π over a sequence: ``obs [L, B, obs_dim]`` from ``h0 [B, layers, H]`` with episode
        starts ``starts [L, B]``; returns the distribution over the flattened time-major samples
        ``[L·B]`` (``action_mask`` ``[L, B, n]``) and the hidden state after the last step."""
        out, mask, h_last = self._sequence_head(obs, h0, starts, action_mask)
        return head_distribution(out, self.log_std, mask), h_last

    def _sequence_head(
        self,
        obs: torch.Tensor,
        h0: torch.Tensor,
        starts: torch.Tensor,
        action_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The head's output and the action mask over the flattened ``[L·B]`` samples, and the
        hidden state after the last step (what :meth:`sequence` builds its distribution from)."""
        _check_sequence("GRUPolicy", obs, self.obs_dim, h0, starts, self.core)
        features, _, h_after = self.core(self.body(obs), h0, starts)
        out = self.head(features).flatten(0, 1)
        mask = None if action_mask is None else action_mask.flatten(0, 1)
        if mask is not None and self.head_type != "categorical":
            raise ValueError("GRUPolicy: 'action_mask' applies only to a Discrete action space")
        return out, mask, h_after[-1]

    def step(
        self,
        obs: torch.Tensor,
        h: torch.Tensor,
        starts: torch.Tensor,
        action_mask: torch.Tensor | None = None,
    ) -> tuple[Normal | Categorical, torch.Tensor]:
        """One step for a batch: ``obs [B, obs_dim]``, ``h [B, layers, H]``, ``starts [B]``."""
        return self.sequence(
            obs[None], h, starts[None], None if action_mask is None else action_mask[None]
        )

    def sample(
        self,
        obs: torch.Tensor,
        h: torch.Tensor,
        starts: torch.Tensor,
        action_mask: torch.Tensor | None = None,
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(actions, joint log-probs, next hidden state)`` for one step, without gradient."""
        with torch.no_grad():
            out, mask, h_next = self._sequence_head(
                obs[None], h, starts[None], None if action_mask is None else action_mask[None]
            )
            actions, logp = sample_head(out, self.log_std, mask, deterministic)
            return actions, logp, h_next


class SequenceView(nn.Module):
    """A recurrent policy restricted to fixed chunks, seen as a feed-forward policy.

    ``distribution(obs, action_mask)`` takes the chunks' samples flattened time-major, ``obs
    [L·B, obs_dim]``, runs the GRU from the chunks' stored ``h0 [B, layers, H]`` with their episode
    starts ``[L·B]``, and returns π over the same ``[L·B]`` samples. The policy is a submodule, so
    ``parameters()`` are the policy's own, in the same order (what the Fisher product and the line
    search move).
    """

    def __init__(self, policy: GRUPolicy, h0: torch.Tensor, starts: torch.Tensor, length: int) -> None:
        super().__init__()
        self.policy = policy
        self.h0 = h0
        self.starts = starts
        self.length = length

    def distribution(
        self, obs: torch.Tensor, action_mask: torch.Tensor | None = None
    ) -> Normal | Categorical:
        L = self.length
        if obs.shape[0] != self.starts.shape[0]:
            raise ValueError(
                f"SequenceView: expected {self.starts.shape[0]} samples ({L} steps × "
                f"{self.h0.shape[0]} chunks), got {obs.shape[0]}"
            )
        mask = None if action_mask is None else action_mask.view(L, -1, action_mask.shape[-1])
        dist, _ = self.policy.sequence(
            obs.view(L, -1, obs.shape[-1]), self.h0, self.starts.view(L, -1), mask
        )
        return dist

    def log_prob(
        self, obs: torch.Tensor, actions: torch.Tensor, action_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return joint_log_prob(self.distribution(obs, action_mask), actions)

    def forward(self, obs: torch.Tensor, action_mask: torch.Tensor | None = None) -> Normal | Categorical:
        return self.distribution(obs, action_mask)


class GRUCritic(nn.Module):
    """V_φ(x_{≤t}): an MLP trunk, a :class:`GRUCore` and a scalar head (gain 1)."""

    recurrent = True

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (64,),
        activation: str = "relu",
        layer_norm: bool = True,
        input_norm: bool = True,
        rnn_layers: int = 1,
    ) -> None:
        super().__init__()
        if len(tuple(hidden)) == 0:
            raise ValueError("GRUCritic: 'hidden' needs at least one layer (it sets the GRU's width)")
        self.in_dim = in_dim
        self.body = MLP(in_dim, hidden, activation, layer_norm, input_norm)
        self.core = GRUCore(self.body.out_dim, self.body.out_dim, rnn_layers)
        self.head = init_linear(nn.Linear(self.body.out_dim, 1), 1.0)

    def initial_state(self, batch: int) -> torch.Tensor:
        return self.core.initial_state(batch, self.head.weight)

    def sequence(
        self, x: torch.Tensor, h0: torch.Tensor, starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(values [L, B], h_used, h_after)`` of inputs ``x [L, B, in_dim]``; the states are
        those of :meth:`GRUCore.forward`."""
        _check_sequence("GRUCritic", x, self.in_dim, h0, starts, self.core)
        features, used, after = self.core(self.body(x), h0, starts)
        return self.head(features).squeeze(-1), used, after

    def next_values(self, final_x: torch.Tensor, h_next: torch.Tensor) -> torch.Tensor:
        """V(s_{t+1}) for every step at once: ``final_x [L, B, in_dim]`` (the true next inputs)
        read with ``h_next [L, B, layers, H]``, the hidden state after step t (before a reset)."""
        L, B = final_x.shape[:2]
        flat_h = h_next.flatten(0, 1)
        no_reset = torch.zeros(1, L * B, dtype=torch.bool, device=final_x.device)
        values, _, _ = self.sequence(final_x.reshape(1, L * B, -1), flat_h, no_reset)
        return values.view(L, B)
