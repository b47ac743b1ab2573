"""The on-policy rollout: ``T`` steps of ``E`` envs, torch tensors on the training device.

Shapes are time-major, ``[T, E, ...]``, with one tensor per agent where agents differ (observation
and action sizes). ``terminated`` and ``truncated`` stay apart up to GAE; ``final_state`` /
``final_obs`` are the true next states s_{t+1} (the final observation where an episode ended at
t), from which V(s_{t+1}) is computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from haml.envs.base import EnvSpec, EnvStep

__all__ = ["RolloutBuffer"]


def _action_shape(space) -> tuple[tuple[int, ...], torch.dtype]:
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return (), torch.int64
    return (int(space.shape[0]),), torch.float32


@dataclass
class RolloutBuffer:
    obs: list[torch.Tensor]
    """Per agent ``[T, E, obs_dim_i]``."""
    final_obs: list[torch.Tensor]
    """Per agent ``[T, E, obs_dim_i]``: the observation after step t (true final one at an end)."""
    actions: list[torch.Tensor]
    """Per agent ``[T, E, d_i]`` float or ``[T, E]`` int64."""
    logp: list[torch.Tensor]
    """Per agent ``[T, E]``: log π_θk(a|o) at collection."""
    action_masks: list[torch.Tensor] | None
    """Per agent ``[T, E, n_i]`` bool, for tasks with available-action masks."""
    state: torch.Tensor
    """``[T, E, state_dim]``."""
    final_state: torch.Tensor
    """``[T, E, state_dim]``."""
    reward: torch.Tensor
    """``[T, E]``."""
    terminated: torch.Tensor
    """``[T, E]`` bool."""
    truncated: torch.Tensor
    """``[T, E]`` bool."""
    starts: torch.Tensor
    """``[T, E]`` bool: obs t is the first of an episode (recurrent states are zeroed there)."""
    active_masks: list[torch.Tensor] | None = None
    """Per agent ``[T, E]`` bool: the agent is alive at obs t, for tasks where agents die."""
    actor_states: list[torch.Tensor | None] | None = None
    """Per agent ``[T, E, layers, H]``: the hidden state a recurrent policy acted from."""

    @classmethod
    def allocate(
        cls,
        spec: EnvSpec,
        steps: int,
        num_envs: int,
        device: torch.device,
        actor_state_shapes: list[tuple[int, ...] | None] | None = None,
    ) -> RolloutBuffer:
        """Empty tensors for ``steps`` steps of ``num_envs`` envs; ``actor_state_shapes`` gives
        each agent's recurrent state shape per env (None: feed-forward)."""
        T, E, n = steps, num_envs, spec.n_agents
        kw = {"device": device}
        obs = [torch.empty(T, E, spec.obs_dim(i), **kw) for i in range(n)]
        final_obs = [torch.empty(T, E, spec.obs_dim(i), **kw) for i in range(n)]
        actions, logp = [], []
        for space in spec.action_spaces:
            shape, dtype = _action_shape(space)
            actions.append(torch.empty(T, E, *shape, dtype=dtype, **kw))
            logp.append(torch.empty(T, E, **kw))
        masks = None
        if spec.action_masks:
            masks = [torch.empty(T, E, int(s.n), dtype=torch.bool, **kw) for s in spec.action_spaces]
        active = None
        if spec.active_masks:
            active = [torch.empty(T, E, dtype=torch.bool, **kw) for _ in range(n)]
        states = None
        if actor_state_shapes is not None and any(s is not None for s in actor_state_shapes):
            states = [None if s is None else torch.empty(T, E, *s, **kw) for s in actor_state_shapes]
        return cls(
            obs=obs,
            final_obs=final_obs,
            actions=actions,
            logp=logp,
            action_masks=masks,
            state=torch.empty(T, E, spec.state_dim, **kw),
            final_state=torch.empty(T, E, spec.state_dim, **kw),
            reward=torch.empty(T, E, **kw),
            terminated=torch.empty(T, E, dtype=torch.bool, **kw),
            truncated=torch.empty(T, E, dtype=torch.bool, **kw),
            starts=torch.empty(T, E, dtype=torch.bool, **kw),
            active_masks=active,
            actor_states=states,
        )

    @property
    def steps(self) -> int:
        return self.reward.shape[0]

    def store(
        self,
        t: int,
        before: EnvStep,
        actions: list[torch.Tensor],
        logp: list[torch.Tensor],
        after: EnvStep,
        starts: torch.Tensor,
        actor_states: list[torch.Tensor | None] | None = None,
    ) -> None:
        """Record step t: the observation acted on (and whether it starts an episode), the
        actions, the recurrent states acted from, and what the env returned."""
        for i, (a, lp) in enumerate(zip(actions, logp)):
            self.obs[i][t] = before.obs[i]
            self.final_obs[i][t] = after.final_obs[i]
            self.actions[i][t] = a
            self.logp[i][t] = lp
            if self.action_masks is not None:
                self.action_masks[i][t] = before.action_masks[i]
            if self.active_masks is not None:
                self.active_masks[i][t] = before.active_masks[i]
            if self.actor_states is not None and self.actor_states[i] is not None:
                self.actor_states[i][t] = actor_states[i]
        self.starts[t] = starts
        self.state[t] = before.state
        self.final_state[t] = after.final_state
        self.reward[t] = after.reward
        self.terminated[t] = after.terminated
        self.truncated[t] = after.truncated
