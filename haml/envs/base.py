"""haml's multi-agent environment interface: what every runner sees of an environment.

A runner talks to a **vectorised** environment (``E`` copies stepped together) through
:class:`VectorMultiAgentEnv`, whose inputs and outputs are torch tensors on its ``device``. numpy
appears only inside the adapters (``haml/envs/vector.py`` turns gymnasium's numpy batches into
tensors); the pure-torch toy games implement the protocol directly.

Conventions (fixed; every adapter follows them):

- agents are indexed ``0 .. n_agents-1``; each has its own 1-D observation space and its own
  action space (``Box``: float actions ``[E, d_i]``; ``Discrete``: int64 indices ``[E]``);
- the global state (the centralised critic's input) is 1-D, ``[E, state_dim]``;
- the team reward is one number per env ``[E]`` (the cooperative setting of both papers);
- discrete-action tasks may give per-agent available-action masks ``[E, n_i]`` and, where agents
  die (StarCraft-style tasks), per-agent alive flags ``[E]`` (``active_masks``); a dead agent
  still receives an observation (zeros, typically) and must take its one available no-op action;
- ``terminated`` (a true terminal state: no bootstrap) and ``truncated`` (a time limit: bootstrap
  from the true next state) are kept apart from the env to GAE;
- environments reset themselves when an episode ends. ``obs``/``state`` are then the first
  observation of the next episode, while ``final_obs``/``final_state`` hold the true next
  observation s_{t+1} of the step just taken (for every env: equal to ``obs``/``state`` where the
  episode goes on), which is what V(s_{t+1}) is computed from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

__all__ = [
    "WIN_METRIC",
    "EnvError",
    "EnvSpec",
    "EnvStep",
    "EpisodeMeans",
    "EpisodeStats",
    "EpisodeTracker",
    "RenderUnavailable",
    "VectorMultiAgentEnv",
    "episode_means",
    "require_num_envs",
]

WIN_METRIC = "win"
"""The :attr:`EpisodeStats.metrics` key of tasks with a winner: 1.0 for a won episode, else 0.0
(logged as the training and evaluation win rates)."""


class EnvError(RuntimeError):
    """An environment failed: an exception inside an env, an env worker process that died, or
    one that did not answer within its time limit. The message names the env family and task,
    the env index and the cause; the envs are unusable afterwards (their workers are stopped),
    while a run's checkpoints are left as they were. ``haml train``/``haml eval`` print it as one
    line."""


class RenderUnavailable(RuntimeError):
    """Raised by a family's ``episode_frames`` hook (see :mod:`haml.envs.registry`) when no
    frame can be drawn here; the message says why and what to do."""


def require_num_envs(num_envs: object, owner: str | None = None) -> int:
    """``num_envs`` if it is an integer >= 1 (bools refused), else a ``ValueError`` naming it
    (and ``owner``, the class that was given it): the check of every family's vector-env
    constructor, before any worker starts."""
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        prefix = f"{owner}: " if owner else ""
        raise ValueError(f"{prefix}num_envs must be an integer >= 1, got {num_envs!r}")
    return num_envs


@dataclass(frozen=True)
class EnvSpec:
    """The static description of a multi-agent task.

    ``obs_spaces``/``action_spaces`` are gymnasium spaces, one per agent (``Box`` 1-D observations;
    ``Box`` 1-D or ``Discrete`` actions); ``state_space`` is the 1-D ``Box`` of the global state.
    ``action_masks`` says whether :class:`EnvStep` carries available-action masks, and
    ``active_masks`` whether it carries per-agent alive flags (agents that can die mid-episode).
    """

    env: str
    """The registered environment family, e.g. ``"mamujoco"``."""
    task: str
    """The task within the family, e.g. ``"HalfCheetah-2x3"``."""
    n_agents: int
    obs_spaces: tuple[Any, ...]
    action_spaces: tuple[Any, ...]
    state_space: Any
    action_masks: bool = False
    active_masks: bool = False
    episode_limit: int | None = None
    """Steps after which an episode is truncated, if the task has a limit."""

    def obs_dim(self, agent: int) -> int:
        return int(self.obs_spaces[agent].shape[0])

    @property
    def state_dim(self) -> int:
        return int(self.state_space.shape[0])


@dataclass
class EpisodeStats:
    """One finished episode: its undiscounted team return, its length, and env-specific metrics
    (e.g. ``{"win": 1.0}`` on StarCraft-style tasks; the adapter's ``episode_metrics()``)."""

    ret: float
    length: int
    metrics: dict[str, float] = field(default_factory=dict)
    env: int | None = None
    """The index (``0 .. E-1``) of the env the episode ran in, where the adapter reports it;
    evaluation uses it to take the same number of episodes from every env."""


@dataclass(frozen=True)
class EpisodeMeans:
    """Means over a list of finished episodes (:func:`episode_means`)."""

    ret: float
    """Mean undiscounted team return."""
    length: float
    """Mean episode length in steps."""
    metrics: dict[str, float]
    """Mean of each env-specific metric, by key, in sorted key order (an episode that lacks a
    key counts as 0.0 for it)."""


def episode_means(episodes: Sequence[EpisodeStats]) -> EpisodeMeans:
    """The mean return, length and env metrics of ``episodes`` (at least one): the one place
    training, evaluation and the benchmarks average episodes."""
    n = len(episodes)
    if n == 0:
        raise ValueError("episode_means: no episodes to average")
    keys = sorted({key for episode in episodes for key in episode.metrics})
    return EpisodeMeans(
        ret=sum(episode.ret for episode in episodes) / n,
        length=sum(episode.length for episode in episodes) / n,
        metrics={key: sum(episode.metrics.get(key, 0.0) for episode in episodes) / n for key in keys},
    )


class EpisodeTracker:
    """The running undiscounted return and length of each of ``E`` envs, and the
    :class:`EpisodeStats` of those whose episode ends: the bookkeeping of every adapter that
    accumulates episodes on the host (numpy, float64 returns).

    ``state_dict()`` holds the running sums as CPU tensors (``episode_return``,
    ``episode_length``), so that a resumed run continues the episodes in progress.
    """

    def __init__(self, num_envs: int) -> None:
        self.num_envs = num_envs
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)

    def reset(self) -> None:
        """Every env starts a new episode."""
        self.returns[:] = 0.0
        self.lengths[:] = 0

    def step(
        self,
        reward: np.ndarray,
        ended: np.ndarray,
        metrics: Callable[[int], dict[str, float]] | None = None,
    ) -> list[EpisodeStats]:
        """Add one step's team ``reward`` ``[E]``; for each env where ``ended`` ``[E]`` bool, an
        :class:`EpisodeStats` (``metrics(e)`` its env metrics) and a fresh episode. Env order."""
        self.returns += reward
        self.lengths += 1
        episodes = []
        for e in np.flatnonzero(ended):
            episodes.append(
                EpisodeStats(
                    ret=float(self.returns[e]),
                    length=int(self.lengths[e]),
                    metrics={} if metrics is None else metrics(int(e)),
                    env=int(e),
                )
            )
        self.returns[ended] = 0.0
        self.lengths[ended] = 0
        return episodes

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "episode_return": torch.from_numpy(self.returns.copy()),
            "episode_length": torch.from_numpy(self.lengths.copy()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The running sums from ``state`` (a dict holding at least :meth:`state_dict`'s keys)."""
        self.returns = state["episode_return"].numpy().astype(np.float64, copy=True)
        self.lengths = state["episode_length"].numpy().astype(np.int64, copy=True)


@dataclass
class EnvStep:
    """What ``reset()`` and ``step()`` return; tensors on the env's device, leading dim ``E``.

    After ``reset()``: ``reward`` is 0, ``terminated``/``truncated`` are False and ``final_*``
    equal ``obs``/``state``.
    """

    obs: tuple[torch.Tensor, ...]
    """Per agent ``[E, obs_dim_i]`` float32: the observation the next action is chosen from."""
    state: torch.Tensor
    """``[E, state_dim]`` float32: the global state matching ``obs``."""
    reward: torch.Tensor
    """``[E]`` float32 team reward of the step just taken."""
    terminated: torch.Tensor
    """``[E]`` bool: the step reached a terminal state (V(s_{t+1}) = 0)."""
    truncated: torch.Tensor
    """``[E]`` bool: the episode was cut by a time limit (bootstrap from ``final_state``)."""
    final_obs: tuple[torch.Tensor, ...]
    """Per agent ``[E, obs_dim_i]``: the true next observation s_{t+1} of the step just taken."""
    final_state: torch.Tensor
    """``[E, state_dim]``: the true next global state of the step just taken."""
    action_masks: tuple[torch.Tensor, ...] | None = None
    """Per agent ``[E, n_actions_i]`` bool (available actions for ``obs``), if the task has them."""
    active_masks: tuple[torch.Tensor, ...] | None = None
    """Per agent ``[E]`` bool: the agent is alive at ``obs`` (its action matters), if the task
    has agents that die. A dead agent's samples are left out of its losses and of the factor M
    (HARL's ``active_masks``); None means every agent is always active."""
    episodes: list[EpisodeStats] = field(default_factory=list)
    """Episodes that ended at this step, in env order."""


@runtime_checkable
class VectorMultiAgentEnv(Protocol):
    """``E`` copies of a multi-agent task, stepped together, torch in and out.

    ``state_dict()``/``load_state_dict()`` capture everything needed to continue exactly where
    the envs were (simulator states, RNGs, episode counters): a resumed run then reproduces an
    uninterrupted one. An adapter that cannot do this raises ``NotImplementedError`` and the
    runner resumes with freshly reset envs (saying so).
    """

    spec: EnvSpec
    num_envs: int
    device: torch.device

    def reset(self, seed: int | None = None) -> EnvStep:
        """Reset every env; env ``e`` is seeded with ``seed + e`` when ``seed`` is given."""
        ...

    def step(self, actions: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> EnvStep:
        """Step every env with per-agent actions (``[E, d_i]`` float or ``[E]`` int64)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...
