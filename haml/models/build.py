"""Building the networks of a run from its config, and loading their weights back.

Both runners and ``haml eval`` build policies and critics here, so a checkpoint's weights always
meet the modules they were saved from. A network config is anything with the fields of
:class:`haml.config.schema.NetworkConfig` (``hidden``, ``activation``, ``layer_norm``,
``input_norm``, ``rnn``, ``rnn_layers``; an actor's also ``log_std_init``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from haml.models.policies import MLPPolicy
from haml.models.recurrent import GRUCritic, GRUPolicy
from haml.models.value import VCritic

__all__ = [
    "action_input_size",
    "build_deterministic_policies",
    "build_policies",
    "build_q_critic",
    "build_value_network",
    "load_policy_weights",
    "policy_state_dicts",
    "unique_policies",
]


def _same_space(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def build_policies(
    net: Any,
    obs_spaces: Sequence[Any],
    action_spaces: Sequence[Any],
    device: torch.device,
    share: bool,
    owner: str = "this algorithm",
) -> tuple[list[MLPPolicy | GRUPolicy], list[list[int]]]:
    """One policy per agent (``policies[i]``, for 1-D ``Box`` observation spaces; the same module
    for every agent when ``share``) and the update groups: ``[[0], [1], ...]``, or ``[[0, ..., n-1]]`` shared.

    ``net.rnn == "gru"`` gives :class:`GRUPolicy` actors, else :class:`MLPPolicy`. Sharing needs
    every agent's observation and action space to equal agent 0's; ``owner`` names who asked for
    it in that error."""
    n = len(obs_spaces)

    def make_policy(agent: int) -> MLPPolicy | GRUPolicy:
        common: dict[str, Any] = dict(
            hidden=tuple(net.hidden),
            activation=net.activation,
            layer_norm=net.layer_norm,
            input_norm=net.input_norm,
            log_std_init=net.log_std_init,
            device=device,
        )
        if net.rnn == "gru":
            common["rnn_layers"] = net.rnn_layers
        cls = GRUPolicy if net.rnn == "gru" else MLPPolicy
        return cls(int(obs_spaces[agent].shape[0]), action_spaces[agent], **common)

    if not share:
        return [make_policy(i) for i in range(n)], [[i] for i in range(n)]
    for i in range(1, n):
        if not (
            _same_space(obs_spaces[i], obs_spaces[0])
            and _same_space(action_spaces[i], action_spaces[0])
        ):
            raise ValueError(
                f"{owner} shares one policy between all agents, but agent {i}'s "
                f"observation/action spaces ({obs_spaces[i]}, {action_spaces[i]}) "
                f"differ from agent 0's ({obs_spaces[0]}, {action_spaces[0]}); use a "
                f"non-sharing variant"
            )
    shared = make_policy(0)
    return [shared] * n, [list(range(n))]


def build_value_network(net: Any, in_dim: int, device: torch.device) -> VCritic | GRUCritic:
    """V(x) on inputs of size ``in_dim``: a :class:`GRUCritic` when ``net.rnn == "gru"``, else
    a :class:`VCritic`."""
    if net.rnn == "gru":
        critic: nn.Module = GRUCritic(in_dim, tuple(net.hidden), net.activation, net.layer_norm,
                                      net.input_norm, net.rnn_layers)
    else:
        critic = VCritic(in_dim, tuple(net.hidden), net.activation, net.layer_norm, net.input_norm)
    return critic.to(device)


def build_deterministic_policies(
    net: Any, obs_spaces: Sequence[Any], action_spaces: Sequence[Any], device: torch.device
) -> list[nn.Module]:
    """One :class:`~haml.models.deterministic.DeterministicPolicy` μ^i(o^i) per agent, each
    squashed into its agent's action box."""
    from haml.models.deterministic import DeterministicPolicy

    return [
        DeterministicPolicy(int(obs.shape[0]), action, hidden=tuple(net.hidden), activation=net.activation,
                            layer_norm=net.layer_norm, input_norm=net.input_norm, device=device)
        for obs, action in zip(obs_spaces, action_spaces)
    ]


def action_input_size(space: Any) -> int:
    """How many entries an agent's action takes in a critic's input: a Box's size, or a
    Discrete space's ``n`` (the action enters one-hot)."""
    n = getattr(space, "n", None)
    if n is not None and not getattr(space, "shape", None):
        return int(n)
    return int(space.shape[0])


def build_q_critic(
    net: Any, state_dim: int, action_spaces: Sequence[Any], device: torch.device, twin: bool = False
) -> nn.Module:
    """The centralised :class:`~haml.models.deterministic.QCritic` Q(s, a¹..aⁿ) on the global
    state and the joint action (``twin``: two Q estimates, for the TD3-style algorithms). A
    Discrete agent's action enters one-hot (:func:`action_input_size`)."""
    from haml.models.q_critic import QCritic

    action_dims = [action_input_size(space) for space in action_spaces]
    return QCritic(state_dim, action_dims, hidden=tuple(net.hidden), activation=net.activation,
                   layer_norm=net.layer_norm, input_norm=net.input_norm, twin=twin, device=device)


def unique_policies(policies: Sequence[nn.Module]) -> list[nn.Module]:
    """Each distinct module once, in agent order (a shared policy appears once)."""
    return list({id(p): p for p in policies}.values())


def policy_state_dicts(policies: Sequence[nn.Module]) -> list[dict[str, Any]]:
    """One state dict per distinct policy: what a checkpoint stores, and
    :func:`load_policy_weights` reads."""
    return [p.state_dict() for p in unique_policies(policies)]


def load_policy_weights(policies: Sequence[nn.Module], weights: Sequence[dict[str, Any]]) -> None:
    """Load :func:`policy_state_dicts`'s list into ``policies``."""
    unique = unique_policies(policies)
    if len(weights) != len(unique):
        raise ValueError(
            f"the checkpoint holds {len(weights)} policies but the config builds {len(unique)}"
        )
    for policy, state in zip(unique, weights):
        policy.load_state_dict(state)
