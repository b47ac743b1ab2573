"""A one-step cooperative game with continuous actions and a differentiable team reward.

``n`` agents each pick a real action vector ``a^i ∈ R^{d_i}`` and all receive
``r(a^1, ..., a^n)``, computed by a torch function, so that its gradient with respect to the
actions is available (:meth:`DifferentiableGame.reward`). There is one state; every episode
lasts one step. The action spaces are unbounded ``Box(-inf, inf, (d_i,))``: the games of the
papers are played with Gaussian policies whose samples are used as they are.

The game of [HATRPO], Figure 1 (``r(a^1, a^2) = a^1 a^2``) is built on it in
:mod:`haml.envs.toy.presets`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from haml.envs.toy._one_step import OneStepGame

__all__ = ["DifferentiableGame", "RewardFn"]

RewardFn = Callable[[tuple[torch.Tensor, ...]], torch.Tensor]
"""``reward_fn(actions) -> r``: per-agent actions ``[*B, d_i]`` to the team reward ``[*B]``,
written with differentiable torch operations."""


class DifferentiableGame(OneStepGame):
    """``num_envs`` copies of a one-step continuous-action game (a ``VectorMultiAgentEnv``).

    Args:
        reward_fn: the team reward (see :data:`RewardFn`); it must accept any batch shape ``B``
            and return one reward per batch entry.
        action_dims: ``(d_1, ..., d_n)``, the size of each agent's action; ``n`` agents.
        num_envs: ``E``, the number of games played at every ``step()``.
        device: where every returned tensor is (and where ``reward_fn`` is evaluated).
        task: the name in ``spec.task`` (the presets pass theirs).
        episode_stats_limit: ``None`` reports one ``EpisodeStats`` per env per step (the
            interface); ``K`` only those of the first ``K`` envs (see :mod:`._one_step`).

    ``step(actions)`` takes one float tensor ``[E, d_i]`` per agent (finite values).
    """

    def __init__(
        self,
        reward_fn: RewardFn,
        action_dims: Sequence[int],
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        *,
        task: str = "differentiable-game",
        episode_stats_limit: int | None = None,
    ) -> None:
        from gymnasium import spaces

        if not callable(reward_fn):
            raise TypeError(
                f"DifferentiableGame: 'reward_fn' must be callable, got {type(reward_fn).__name__}"
            )
        if (
            not isinstance(action_dims, (tuple, list))
            or len(action_dims) == 0
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in action_dims)
        ):
            raise ValueError(
                "DifferentiableGame: 'action_dims' must be a non-empty tuple/list of positive ints "
                f"(one action size per agent), got {action_dims!r}"
            )
        unbounded = float("inf")
        super().__init__(
            task=task,
            action_spaces=tuple(
                spaces.Box(low=-unbounded, high=unbounded, shape=(d,), dtype="float32") for d in action_dims
            ),
            num_envs=num_envs,
            device=device,
            episode_stats_limit=episode_stats_limit,
        )
        self.reward_fn = reward_fn
        self.action_dims: tuple[int, ...] = tuple(action_dims)

    def reward(self, actions: Sequence[torch.Tensor]) -> torch.Tensor:
        """r(a^1, ..., a^n) for actions ``[*B, d_i]``, with autograd (no checks, no episode
        bookkeeping): the function whose gradient the papers' examples reason about."""
        return self.reward_fn(tuple(actions))

    def _game_state(self) -> dict[str, Any]:
        return {"action_dims": list(self.action_dims)}

    def _validated_actions(self, actions: Sequence[Any]) -> tuple[torch.Tensor, ...]:
        E = self.num_envs
        checked = []
        for i, (a, d) in enumerate(zip(actions, self.action_dims)):
            if not isinstance(a, torch.Tensor) or not a.is_floating_point():
                got = f"dtype {a.dtype}" if isinstance(a, torch.Tensor) else type(a).__name__
                raise TypeError(
                    f"DifferentiableGame.step: actions[{i}] (agent {i}) must be a floating "
                    f"torch.Tensor, got {got}"
                )
            if tuple(a.shape) != (E, d):
                raise ValueError(
                    f"DifferentiableGame.step: actions[{i}] (agent {i}) must have shape "
                    f"[num_envs, d_{i}] = [{E}, {d}], got {list(a.shape)}"
                )
            checked.append(a.detach().to(device=self.device, dtype=torch.float32))
        # One host sync for all agents: a NaN action would otherwise become a NaN return silently.
        not_finite = torch.stack([~torch.isfinite(a).all() for a in checked])
        if not_finite.any():
            i = int(not_finite.nonzero()[0, 0])
            raise ValueError(f"DifferentiableGame.step: agent {i}'s actions hold NaN or inf")
        return tuple(checked)

    def _team_reward(self, actions: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.no_grad():
            reward = self.reward_fn(actions)
        if not isinstance(reward, torch.Tensor) or tuple(reward.shape) != (self.num_envs,):
            got = list(reward.shape) if isinstance(reward, torch.Tensor) else type(reward).__name__
            raise ValueError(
                f"DifferentiableGame.step: 'reward_fn' must return one reward per env, "
                f"shape [{self.num_envs}], got {got}"
            )
        return reward.to(dtype=torch.float32)
