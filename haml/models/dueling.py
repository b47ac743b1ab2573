"""The dueling Q networks of HAD3QN ([HARL], the discrete off-policy member of the HA family).

- :class:`DuelingQNetwork`: agent i's Q^i(o^i, ·) over its own actions, dueling
  ([Wang et al. 2016]): ``Q^i(o, a) = V^i(o) + A^i(o, a) - mean_{a' available} A^i(o, a')``.
  It acts greedily over the available actions (:meth:`~DuelingQNetwork.sample`, the interface the
  shared acting and evaluation code calls) or ε-greedily (:meth:`~DuelingQNetwork.explore`).
- :class:`DuelingJointQCritic`: the centralised Q(s, a¹..aⁿ) over the global state with one output
  per joint action, ``N = ∏_i n_i`` outputs, dueling in the same way over the joint actions
  available (every agent's action available). Joint actions are numbered row-major, agent 0's
  action varying slowest, which is the order of ``itertools.product(range(n_1), ..., range(n_n))``:
  ``index(a) = Σ_i a^i · stride_i`` with ``stride_i = ∏_{j>i} n_j`` (:meth:`joint_index`).
  :meth:`~DuelingJointQCritic.agent_values` reads the n_i values of one agent's actions with every
  other agent's action fixed, the values the sequential update regresses an agent toward.

Shapes: observations and states ``[*B, dim]``; Q values ``[*B, n]``; actions int64 indices
``[*B]``; an available-action mask is bool ``[*B, n]`` (True: available). A row with no available
action counts every action as available (as :func:`haml.models.policies.masked_logits` does).

Layout of both networks: an :class:`~haml.models.mlp.MLP` trunk, then two streams, each an MLP of
``dueling_hidden`` widths and a linear output (1 for V, n or N for A). Orthogonal init with the
activation's gain, zero biases, output layers gain 1. Imports no environment and no algorithm.

[HARL]: Zhong, Kuba et al., "Heterogeneous-Agent Reinforcement Learning", JMLR 2024.
[Wang et al. 2016]: "Dueling Network Architectures for Deep Reinforcement Learning", ICML 2016.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from haml.models.checks import check_agent_sizes, check_positive_int
from haml.models.mlp import MLP, init_linear
from haml.models.policies import parse_action_space

__all__ = [
    "DuelingJointQCritic",
    "DuelingQNetwork",
    "available_actions",
    "dueling_combine",
    "masked_greedy",
]


def available_actions(action_mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """``action_mask`` as bool ``[*B, n]`` with an all-unavailable row made all available; None
    stays None. ``like`` is the ``[*B, n]`` tensor the mask goes with (its shape is checked)."""
    if action_mask is None:
        return None
    if not isinstance(action_mask, torch.Tensor):
        raise TypeError(f"'action_mask' must be a torch.Tensor, got {type(action_mask).__name__}")
    if action_mask.shape != like.shape:
        raise ValueError(
            f"'action_mask' must have shape {tuple(like.shape)} ([*B, n_actions]), "
            f"got {tuple(action_mask.shape)}"
        )
    mask = action_mask if action_mask.dtype == torch.bool else action_mask != 0
    return mask | ~mask.any(-1, keepdim=True)


def dueling_combine(
    value: torch.Tensor, advantage: torch.Tensor, available: torch.Tensor | None = None
) -> torch.Tensor:
    """``Q = V + A - mean_{available} A`` for ``value [*B, 1]`` and ``advantage [*B, n]``;
    ``available`` (bool ``[*B, n]``, from :func:`available_actions`) restricts the mean."""
    if available is None:
        baseline = advantage.mean(-1, keepdim=True)
    else:
        weight = available.to(advantage.dtype)
        baseline = (advantage * weight).sum(-1, keepdim=True) / weight.sum(-1, keepdim=True)
    return value + advantage - baseline


def masked_greedy(q: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
    """``argmax_{a available} q[..., a]`` as int64 ``[*B]`` (ties: the lowest index)."""
    if available is not None:
        q = q.masked_fill(~available, float("-inf"))
    return q.argmax(-1)


def _stream(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str, layer_norm: bool,
            layer_norm_eps: float) -> nn.Sequential:
    body = MLP(in_dim, hidden, activation, layer_norm, False, layer_norm_eps)
    return nn.Sequential(*body.layers, init_linear(nn.Linear(body.out_dim, out_dim), 1.0))


class _Dueling(nn.Module):
    """Trunk + V stream + A stream over ``out_dim`` actions: the part both networks share."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int], dueling_hidden: Sequence[int],
                 activation: str, layer_norm: bool, input_norm: bool, layer_norm_eps: float) -> None:
        super().__init__()
        self.body = MLP(in_dim, hidden, activation, layer_norm, input_norm, layer_norm_eps)
        self.value_stream = _stream(self.body.out_dim, dueling_hidden, 1, activation, layer_norm,
                                    layer_norm_eps)
        self.advantage_stream = _stream(self.body.out_dim, dueling_hidden, out_dim, activation,
                                        layer_norm, layer_norm_eps)

    def streams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V [*B, 1], A [*B, out_dim])``."""
        h = self.body(x)
        return self.value_stream(h), self.advantage_stream(h)


def _check_input(owner: str, name: str, x: Any, dim: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner}: '{name}' must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[-1] != dim:
        raise ValueError(f"{owner}: '{name}' must have shape [*B, {dim}], got {tuple(x.shape)}")


class DuelingQNetwork(nn.Module):
    """Agent i's Q^i(o^i, ·): see the module doc.

    Args:
        obs_dim: size of the (flat) observation.
        action_space: a gymnasium ``spaces.Discrete`` (from 0); ``action_dim`` is its ``n``.
        hidden: the trunk's widths ([HARL]'s code: [128, 128]).
        dueling_hidden: each stream's widths before its output layer ([HARL]'s code: [128]).
        activation, layer_norm, input_norm, layer_norm_eps: as :class:`~haml.models.mlp.MLP`
            (the streams use the trunk's activation and LayerNorm setting, never an input norm).
        dtype, device: where to put the parameters.
    """

    def __init__(
        self,
        obs_dim: int,
        action_space: Any,
        hidden: Sequence[int] = (128, 128),
        dueling_hidden: Sequence[int] = (128,),
        activation: str = "relu",
        layer_norm: bool = False,
        input_norm: bool = False,
        layer_norm_eps: float = 1e-5,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        kind, n = parse_action_space(action_space, owner="DuelingQNetwork")
        if kind != "categorical":
            raise TypeError(
                "DuelingQNetwork: 'action_space' must be a gymnasium spaces.Discrete (a Q network "
                f"has one output per action), got {type(action_space).__name__}"
            )
        self.obs_dim = obs_dim
        self.action_dim = n
        """The number of actions n_i."""
        self.net = _Dueling(obs_dim, n, hidden, dueling_hidden, activation, layer_norm, input_norm,
                            layer_norm_eps)
        if dtype is not None or device is not None:
            self.to(device=device, dtype=dtype)

    def forward(self, obs: torch.Tensor, action_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Q^i(o, ·) ``[*B, n]`` for observations ``[*B, obs_dim]`` (differentiable); the dueling
        mean runs over the actions ``action_mask`` leaves available (all when None). The values
        of unavailable actions are computed but mean nothing."""
        _check_input("DuelingQNetwork", "obs", obs, self.obs_dim)
        value, advantage = self.net.streams(obs)
        return dueling_combine(value, advantage, available_actions(action_mask, advantage))

    @torch.no_grad()
    def greedy(self, obs: torch.Tensor, action_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``argmax_{a available} Q^i(o, a)``: int64 ``[*B]``, without gradient."""
        _check_input("DuelingQNetwork", "obs", obs, self.obs_dim)
        value, advantage = self.net.streams(obs)
        available = available_actions(action_mask, advantage)
        # The argmax of Q itself (V and the mean shift every action alike, but rounding may not).
        return masked_greedy(dueling_combine(value, advantage, available), available)

    def sample(
        self, obs: torch.Tensor, action_mask: torch.Tensor | None = None, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(greedy actions [*B], zeros [*B])``, whatever ``deterministic`` says: the stochastic
        policies' interface, so that the shared acting and evaluation code runs a Q network
        unchanged. Exploration is :meth:`explore`."""
        action = self.greedy(obs, action_mask)
        return action, obs.new_zeros(action.shape)

    @torch.no_grad()
    def explore(
        self,
        obs: torch.Tensor,
        epsilon: float,
        action_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """ε-greedy actions ``[*B]``: in each row independently, with probability ``epsilon`` an
        action drawn uniformly among the available ones, else the greedy one. ``generator`` (on
        the network's device) makes the draws reproducible apart from the global RNG."""
        greedy = self.greedy(obs, action_mask)
        if epsilon == 0:
            return greedy
        shape = (*greedy.shape, self.action_dim)
        weights = obs.new_ones(shape)
        available = available_actions(action_mask, weights)
        if available is not None:
            weights = available.to(weights.dtype)
        uniform = torch.multinomial(weights.reshape(-1, self.action_dim), 1, generator=generator)
        uniform = uniform.reshape(greedy.shape)
        explore = torch.rand(greedy.shape, generator=generator, device=greedy.device) < epsilon
        return torch.where(explore, uniform, greedy)


class DuelingJointQCritic(nn.Module):
    """Q(s, ·) over every joint action: see the module doc.

    Args:
        state_dim: size of the global state s.
        action_counts: ``(n_1, ..., n_n)``, each agent's number of actions (they may differ).
        hidden, dueling_hidden, activation, layer_norm, input_norm, layer_norm_eps: as
            :class:`DuelingQNetwork`.
        dtype, device: where to put the parameters.

    ``n_joint`` = N = ∏ n_i; ``strides`` = (∏_{j>0} n_j, ..., n_n, 1). How large N may grow is the
    algorithm's decision (the network itself refuses nothing but N > 2^31).
    """

    def __init__(
        self,
        state_dim: int,
        action_counts: Sequence[int],
        hidden: Sequence[int] = (128, 128),
        dueling_hidden: Sequence[int] = (128,),
        activation: str = "relu",
        layer_norm: bool = False,
        input_norm: bool = False,
        layer_norm_eps: float = 1e-5,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("DuelingJointQCritic", "state_dim", state_dim)
        check_agent_sizes("DuelingJointQCritic", "action_counts", action_counts,
                          "each agent's number of actions")
        self.state_dim = state_dim
        self.action_counts = tuple(action_counts)
        self.n_joint = math.prod(self.action_counts)
        if self.n_joint > 2**31:
            raise ValueError(
                f"DuelingJointQCritic: {self.n_joint} joint actions is more than one output layer holds"
            )
        self.strides = tuple(math.prod(self.action_counts[i + 1:]) for i in range(len(self.action_counts)))
        self.net = _Dueling(state_dim, self.n_joint, hidden, dueling_hidden, activation, layer_norm,
                            input_norm, layer_norm_eps)
        if dtype is not None or device is not None:
            self.to(device=device, dtype=dtype)

    @property
    def n_agents(self) -> int:
        return len(self.action_counts)

    # -- joint actions ------------------------------------------------------------------------

    def _check_actions(self, actions: Sequence[torch.Tensor]) -> None:
        if len(actions) != self.n_agents:
            raise ValueError(
                f"DuelingJointQCritic: {len(actions)} agents' actions given, expected {self.n_agents}"
            )

    def joint_index(self, actions: Sequence[torch.Tensor]) -> torch.Tensor:
        """``Σ_i a^i · stride_i``: the joint action's index ``[*B]`` (int64) of the agents' actions
        (int64 ``[*B]`` each)."""
        self._check_actions(actions)
        index = actions[0] * self.strides[0]
        for a, stride in zip(actions[1:], self.strides[1:]):
            index = index + a * stride
        return index

    def joint_available(self, action_masks: Sequence[torch.Tensor] | None) -> torch.Tensor | None:
        """Bool ``[*B, N]``: a joint action is available when every agent's action is (per-agent
        masks ``[*B, n_i]``, rows with none available made all available first); None: all."""
        if action_masks is None:
            return None
        self._check_actions(action_masks)
        joint = None
        for mask, n in zip(action_masks, self.action_counts):
            mask = available_actions(mask, mask.new_zeros((*mask.shape[:-1], n), dtype=torch.bool))
            joint = mask if joint is None else (joint.unsqueeze(-1) & mask.unsqueeze(-2)).flatten(-2)
        return joint

    def agent_values(self, q: torch.Tensor, actions: Sequence[torch.Tensor], agent: int) -> torch.Tensor:
        """``[*B, n_agent]``: ``q [*B, N]`` at the joint actions where ``agent`` takes each of its
        actions and every other agent ``j`` takes ``actions[j]`` (``actions[agent]`` is ignored)."""
        self._check_actions(actions)
        others = torch.zeros_like(actions[0])
        for j, (a, stride) in enumerate(zip(actions, self.strides)):
            if j != agent:
                others = others + a * stride
        own = torch.arange(self.action_counts[agent], device=q.device) * self.strides[agent]
        return q.gather(-1, others.unsqueeze(-1) + own)

    # -- values -------------------------------------------------------------------------------

    def forward(
        self, state: torch.Tensor, action_masks: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Q(s, ·) ``[*B, N]`` for states ``[*B, state_dim]``; the dueling mean runs over the joint
        actions available under the per-agent ``action_masks`` (all when None)."""
        _check_input("DuelingJointQCritic", "state", state, self.state_dim)
        value, advantage = self.net.streams(state)
        return dueling_combine(value, advantage, self.joint_available(action_masks))

    def value(
        self,
        state: torch.Tensor,
        actions: Sequence[torch.Tensor],
        action_masks: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Q(s, a¹..aⁿ) ``[*B]`` of one joint action per sample."""
        q = self(state, action_masks)
        return q.gather(-1, self.joint_index(actions).unsqueeze(-1)).squeeze(-1)
