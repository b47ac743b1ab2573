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

    @classmethod
    def allocate(cls, spec: EnvSpec, steps: int, num_envs: int, device: torch.device) -> RolloutBuffer:
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
    ) -> None:
        """Record step t: the observation acted on, the actions, and what the env returned."""
        for i, (a, lp) in enumerate(zip(actions, logp)):
            self.obs[i][t] = before.obs[i]
            self.final_obs[i][t] = after.final_obs[i]
            self.actions[i][t] = a
            self.logp[i][t] = lp
            if self.action_masks is not None:
                self.action_masks[i][t] = before.action_masks[i]
        self.state[t] = before.state
        self.final_state[t] = after.final_state
        self.reward[t] = after.reward
        self.terminated[t] = after.terminated
        self.truncated[t] = after.truncated
