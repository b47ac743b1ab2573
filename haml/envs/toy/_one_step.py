"""What every one-step toy game shares: the constant observation, the batch of ``E`` games, and
the :class:`~haml.envs.base.EnvStep` it returns.

A one-step game has one state. Every agent sees the same constant observation ``[1.0]`` (no agent
id: with identical observations, a policy whose parameters are shared is the *same* distribution
for every agent, which is the "shared policy constraint" of [HATRPO], Proposition 1). Each ``step()``
plays one whole game in every env: the episode terminates (``terminated`` True, ``truncated``
False, V(s_{t+1}) = 0), and the env is at once back at the single state, so ``obs`` and
``final_obs`` are both the constant observation. Nothing is random: ``seed`` is accepted and
changes nothing.

Cost of ``EnvStep.episodes``. The interface reports one :class:`EpisodeStats` per finished
episode, i.e. ``E`` Python objects per step here. At ``E = 4096`` that is ~7-10 ms on a 2-core
CPU, ~50x the torch work of the step itself (~0.2 ms). ``episode_stats_limit=K`` reports only
the episodes of the first ``K`` envs: every env plays the same game under the same policies, so
they are an i.i.d. sample of the returns, but the *count* of episodes is then ``K`` per step, not
``E``. The default (``None``) follows the interface exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from haml.envs.base import EnvSpec, EnvStep, EpisodeStats, require_num_envs
from haml.utils.seeding import check_seed

__all__ = ["OneStepGame", "OBS_DIM"]

OBS_DIM = 1
"""Every agent's observation (and the global state) is the constant vector ``[1.0]``."""


def check_episode_stats_limit(owner: str, limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(
            f"{owner}: 'episode_stats_limit' must be None (one EpisodeStats per env) or an int >= 0, "
            f"got {limit!r}"
        )
    return limit


class OneStepGame:
    """Base of :class:`MatrixGame` and :class:`DifferentiableGame` (a :class:`VectorMultiAgentEnv`).

    Subclasses provide ``_validated_actions(actions)`` (checks, moves to ``device``) and
    ``_team_reward(actions) -> [E] float32``, and may extend ``state_dict`` with their game's
    identity (``_game_state``).
    """

    def __init__(
        self,
        *,
        task: str,
        action_spaces: tuple[Any, ...],
        num_envs: int,
        device: torch.device | str,
        episode_stats_limit: int | None,
    ) -> None:
        from gymnasium import spaces

        owner = type(self).__name__
        self.num_envs = require_num_envs(num_envs, owner)
        self.device = torch.device(device)
        self.episode_stats_limit = check_episode_stats_limit(owner, episode_stats_limit)
        # [0, 1] and not the degenerate [1, 1]: a normaliser dividing by (high - low) stays finite.
        obs_space = spaces.Box(low=0.0, high=1.0, shape=(OBS_DIM,), dtype="float32")
        self.spec = EnvSpec(
            env="toy",
            task=task,
            n_agents=len(action_spaces),
            obs_spaces=(obs_space,) * len(action_spaces),
            action_spaces=tuple(action_spaces),
            state_space=obs_space,
            action_masks=False,
            episode_limit=None,  # episodes end by termination after one step, never by a time limit
        )
        self._steps = 0
        self._closed = False

    # -- the VectorMultiAgentEnv protocol ------------------------------------------------------

    def reset(self, seed: int | None = None) -> EnvStep:
        """Every env at the single state. ``seed`` (int or None) changes nothing: no randomness."""
        self._check_open("reset")
        check_seed(seed, f"{type(self).__name__}.reset")
        obs, state = self._constant_obs()
        zeros = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return EnvStep(
            obs=obs,
            state=state,
            reward=torch.zeros(self.num_envs, dtype=torch.float32, device=self.device),
            terminated=zeros,
            truncated=zeros.clone(),
            final_obs=obs,
            final_state=state,
            episodes=[],
        )

    def step(self, actions: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> EnvStep:
        """Play one game in every env; every episode terminates with return = its reward."""
        self._check_open("step")
        actions = self._validated_actions(self._agent_sequence(actions))
        reward = self._team_reward(actions)
        self._steps += 1
        obs, state = self._constant_obs()
        return EnvStep(
            obs=obs,
            state=state,
            reward=reward,
            terminated=torch.ones(self.num_envs, dtype=torch.bool, device=self.device),
            truncated=torch.zeros(self.num_envs, dtype=torch.bool, device=self.device),
            final_obs=obs,
            final_state=state,
            episodes=self._episode_stats(reward),
        )

    def state_dict(self) -> dict[str, Any]:
        """The game's identity and the step counter (there is no other state: no RNG is used)."""
        return {
            "env": self.spec.env,
            "task": self.spec.task,
            "num_envs": self.num_envs,
            "steps": self._steps,
            **self._game_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step counter; refuses the state of a different game or number of envs."""
        owner = f"{type(self).__name__}.load_state_dict"
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state))
        if missing:
            raise KeyError(f"{owner}: 'state' lacks the keys {missing}")
        for key, value in expected.items():
            if key == "steps":
                continue
            other = state[key]
            if isinstance(value, torch.Tensor):
                same = isinstance(other, torch.Tensor) and torch.equal(value, other.to(value.device))
            else:
                same = value == other
            if not same:
                raise ValueError(
                    f"{owner}: 'state' is from a different game: {key}={other!r}, this env has "
                    f"{value!r}"
                )
        self._steps = int(state["steps"])

    def close(self) -> None:
        self._closed = True

    # -- helpers --------------------------------------------------------------------------------

    @property
    def steps(self) -> int:
        """How many times ``step()`` has been called (one game per env each time)."""
        return self._steps

    def _game_state(self) -> dict[str, Any]:
        return {}

    def _validated_actions(self, actions: Sequence[Any]) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def _team_reward(self, actions: tuple[torch.Tensor, ...]) -> torch.Tensor:
        raise NotImplementedError

    def _check_open(self, method: str) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__}.{method}: the env is closed")

    def _agent_sequence(self, actions: Any) -> Sequence[Any]:
        n = self.spec.n_agents
        if not isinstance(actions, (tuple, list)) or len(actions) != n:
            got = type(actions).__name__
            if isinstance(actions, (tuple, list)):
                got += f" of length {len(actions)}"
            raise ValueError(
                f"{type(self).__name__}.step: 'actions' must be a tuple or list with one tensor per agent "
                f"({n} agents), got a {got}"
            )
        return actions

    def _constant_obs(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        # Fresh tensors every call, so that a caller writing into one cannot change the next step.
        obs = tuple(
            torch.ones(self.num_envs, OBS_DIM, dtype=torch.float32, device=self.device)
            for _ in range(self.spec.n_agents)
        )
        state = torch.ones(self.num_envs, OBS_DIM, dtype=torch.float32, device=self.device)
        return obs, state

    def _episode_stats(self, reward: torch.Tensor) -> list[EpisodeStats]:
        # Every env finished an episode of length 1 whose return is its reward.
        limit = self.episode_stats_limit
        if limit is None:
            return [EpisodeStats(ret, 1, env=e) for e, ret in enumerate(reward.tolist())]
        # A sample of the envs: no env index, since the others never report an episode (an
        # evaluation that waited for every env's share would never end).
        return [EpisodeStats(ret, 1) for ret in reward[:limit].tolist()]
