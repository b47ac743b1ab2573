"""One PettingZoo *parallel* environment seen as one single-agent ``gymnasium.Env``.

gymnasium's vector envs (``AsyncVectorEnv`` in subprocesses with shared memory, ``SyncVectorEnv``)
batch single-agent envs. :class:`ParallelEnvAdapter` packs a multi-agent step into that shape:

- observation: a ``Dict`` space ``{"agent_0": Box, ..., "agent_{n-1}": Box, "state": Box}``, all
  ``float32`` and 1-D, so gymnasium can lay it out in shared memory. Agents are indexed in the
  order of ``possible_agents``; the keys are :func:`obs_key` of that index whatever the
  PettingZoo names are;
- action: a ``Tuple`` of the per-agent action spaces (sizes may differ between agents);
- optional masks, for discrete-action tasks where not every action is always allowed and agents
  can die (StarCraft-style tasks): ``action_mask_{i}`` (:func:`action_mask_key`), a ``MultiBinary``
  over agent ``i``'s actions (1 = available), and ``"active"`` (:data:`ACTIVE_KEY`), a
  ``MultiBinary`` over the agents (1 = alive). They are extra keys of the same ``Dict``, so they
  travel through shared memory and the vector env's autoreset exactly like the observations they
  belong to (after an episode ends: the masks of the next episode's first observation);
- reward: the **team reward**, the mean of the agents' rewards. On a cooperative task where every
  agent receives the same reward (MaMuJoCo, the papers' setting) it is that shared reward exactly;
- ``terminated``/``truncated`` are kept apart. A vector env resets a whole env at once, so the
  episode ends as soon as *any* agent is done: ``terminated`` if any agent reached a terminal
  state, ``truncated`` if any agent was truncated or the adapter's own time limit
  (``episode_limit`` steps) was reached. Both may be true together (gymnasium's convention: the
  terminal state wins for bootstrapping, as GAE reads ``terminated`` first).

What each agent observes (``agent_view``):

- ``"local"``: the PettingZoo env's own per-agent observation (MaMuJoCo: its ``agent_obsk`` view);
- ``"state"``: every agent observes the global state ``state()``;
- ``"state_id"``: the global state followed by the one-hot id of the agent (fully observable with
  identity; what the papers' MaMuJoCo code fed every actor).

Exact resume: :attr:`ParallelEnvAdapter.resume_state` (readable and assignable, so that a vector
env reaches it with ``get_attr``/``set_attr``) holds the time-limit step counter and whatever the
``sim_state`` hooks capture of the simulator (its physics state and RNG). Restoring it and feeding
the same actions reproduces the uninterrupted trajectory bit for bit.

Only numpy and gymnasium here: this module runs inside the env worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium
import numpy as np

__all__ = [
    "ACTIVE_KEY",
    "AGENT_VIEWS",
    "STATE_KEY",
    "WARNING_KEY",
    "AgentView",
    "ParallelEnvAdapter",
    "SimStateHooks",
    "action_mask_key",
    "obs_key",
]

AgentView = Literal["local", "state", "state_id"]
AGENT_VIEWS: tuple[str, ...] = ("local", "state", "state_id")

STATE_KEY = "state"
"""The key of the global state in the adapter's observation dict."""


ACTIVE_KEY = "active"
"""The key of the per-agent alive flags (0/1, one per agent) in the adapter's observation dict."""


WARNING_KEY = "warning"
"""The info key of a step's warnings (text), which the vector env gives once each
(:func:`haml.envs.vector.GymVectorEnv`), in the process that trains."""


def obs_key(agent: int) -> str:
    """The key of agent ``agent``'s observation in the adapter's observation dict."""
    return f"agent_{agent}"


def action_mask_key(agent: int) -> str:
    """The key of agent ``agent``'s available-action mask in the adapter's observation dict."""
    return f"action_mask_{agent}"


@dataclass(frozen=True)
class SimStateHooks:
    """How to read and write everything of a simulator that its future depends on.

    ``get(parallel_env)`` returns a picklable value (numpy arrays, Python scalars, dicts, lists);
    ``set(parallel_env, value)`` puts the simulator back exactly there. Both run in the env's own
    process. The family module (e.g. ``haml.envs.mamujoco``) provides them; without hooks an
    adapter cannot resume and says so.
    """

    get: Callable[[Any], Any]
    set: Callable[[Any, Any], None]


def _flat_float_box(space: Any, what: str) -> gymnasium.spaces.Box:
    """``space`` as a 1-D float32 Box (the shared-memory layout and the dtype the models use)."""
    if not isinstance(space, gymnasium.spaces.Box) or len(space.shape) != 1:
        raise TypeError(f"{what} must be a 1-D gymnasium Box, got {space!r}")
    return gymnasium.spaces.Box(
        low=space.low.astype(np.float32),
        high=space.high.astype(np.float32),
        shape=space.shape,
        dtype=np.float32,
    )


def _state_space(parallel_env: Any) -> gymnasium.spaces.Box:
    """The env's ``state_space`` if it declares one, else an unbounded Box shaped as ``state()``."""
    space = getattr(parallel_env, "state_space", None)
    if space is not None:
        return space
    shape = np.asarray(parallel_env.state()).shape
    return gymnasium.spaces.Box(low=-np.inf, high=np.inf, shape=shape, dtype=np.float32)


class ParallelEnvAdapter(gymnasium.Env):
    """A PettingZoo parallel env with a global ``state()`` as a single-agent gymnasium env.

    Args:
        parallel_env: the multi-agent env (PettingZoo ``ParallelEnv`` API with ``state()``).
        episode_limit: steps after which the episode is truncated (``None``: only the env's own
            truncation). The adapter owns this counter so that it can be saved and restored;
            give the wrapped env no time limit of its own, or a longer one.
        agent_view: what each agent observes, see the module docstring.
        sim_state: hooks that capture and restore the simulator exactly (resume support).
        episode_metrics: called with the wrapped env when an episode ends; a dict of floats
            reported in the final step's info under ``"episode_metrics"`` (e.g. a win flag).
        action_masks: called with the wrapped env after every reset and step: per agent, a 0/1
            (or bool) sequence over its ``Discrete`` actions, 1 where the action is available
            now. Every agent must have at least one. ``None``: no masks (every action allowed).
        active_masks: called likewise: one flag per agent, true while the agent is alive (its
            action matters). ``None``: every agent is always active.
        step_warnings: called with the wrapped env after every step: messages about the env
            (e.g. that its agents' rewards differ), reported in the step's info under
            :data:`WARNING_KEY`; the vector env warns once per message.
        env_index: the position of this env in its vector env, named in error messages.
        name: the task, named in error messages.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        parallel_env: Any,
        *,
        episode_limit: int | None = None,
        agent_view: AgentView = "local",
        sim_state: SimStateHooks | None = None,
        episode_metrics: Callable[[Any], dict[str, float]] | None = None,
        action_masks: Callable[[Any], Sequence[Any]] | None = None,
        active_masks: Callable[[Any], Sequence[Any]] | None = None,
        step_warnings: Callable[[Any], Sequence[str]] | None = None,
        env_index: int = 0,
        name: str = "",
    ) -> None:
        if agent_view not in AGENT_VIEWS:
            raise ValueError(f"agent_view must be one of {list(AGENT_VIEWS)}, got {agent_view!r}")
        if episode_limit is not None and episode_limit < 1:
            raise ValueError(f"episode_limit must be >= 1 or None, got {episode_limit}")
        self.parallel_env = parallel_env
        self.episode_limit = episode_limit
        self.agent_view = agent_view
        self.env_index = env_index
        self.name = name or type(parallel_env).__name__
        self._sim_state = sim_state
        self.resumable = sim_state is not None
        """Whether :attr:`resume_state` works (read by vector envs before they ask for it)."""
        self._episode_metrics = episode_metrics
        self._action_masks = action_masks
        self._active_masks = active_masks
        self._step_warnings = step_warnings
        self._elapsed_steps = 0

        self.agents: tuple[str, ...] = tuple(parallel_env.possible_agents)
        self.n_agents = len(self.agents)
        if self.n_agents == 0:
            raise ValueError(f"{self.name}: the parallel env has no agents")

        state_box = _flat_float_box(_state_space(parallel_env), f"{self.name}: state space")
        agent_boxes = [self._agent_obs_space(i, state_box) for i in range(self.n_agents)]
        self.action_space = gymnasium.spaces.Tuple(
            tuple(parallel_env.action_space(agent) for agent in self.agents)
        )
        spaces: dict[str, gymnasium.Space] = {
            **{obs_key(i): box for i, box in enumerate(agent_boxes)},
            STATE_KEY: state_box,
        }
        self._n_actions: list[int] = []
        if action_masks is not None:
            for i, space in enumerate(self.action_space.spaces):
                if not isinstance(space, gymnasium.spaces.Discrete):
                    raise TypeError(
                        f"{self.name}: action masks need Discrete action spaces, agent {i} has "
                        f"{space!r}"
                    )
                self._n_actions.append(int(space.n))
                spaces[action_mask_key(i)] = gymnasium.spaces.MultiBinary(int(space.n))
        if active_masks is not None:
            spaces[ACTIVE_KEY] = gymnasium.spaces.MultiBinary(self.n_agents)
        self.observation_space = gymnasium.spaces.Dict(spaces)
        self._one_hot = np.eye(self.n_agents, dtype=np.float32)

    # -- spaces and observations --------------------------------------------------------------

    def _agent_obs_space(self, agent: int, state_box: gymnasium.spaces.Box) -> gymnasium.spaces.Box:
        if self.agent_view == "local":
            return _flat_float_box(
                self.parallel_env.observation_space(self.agents[agent]),
                f"{self.name}: observation space of {self.agents[agent]}",
            )
        if self.agent_view == "state":
            return state_box
        # state_id: the state's bounds, then [0, 1] for the one-hot id
        return gymnasium.spaces.Box(
            low=np.concatenate([state_box.low, np.zeros(self.n_agents, np.float32)]),
            high=np.concatenate([state_box.high, np.ones(self.n_agents, np.float32)]),
            dtype=np.float32,
        )

    def _observe(self, local_obs: dict[str, Any]) -> dict[str, np.ndarray]:
        """The adapter's observation dict from the env's per-agent observations and ``state()``.

        Fresh arrays every call: vector envs keep what an env returns (final observations).
        """
        state = np.asarray(self.parallel_env.state(), dtype=np.float32).copy()
        obs: dict[str, np.ndarray] = {}
        for i, agent in enumerate(self.agents):
            if self.agent_view == "local":
                obs[obs_key(i)] = np.asarray(local_obs[agent], dtype=np.float32).copy()
            elif self.agent_view == "state":
                obs[obs_key(i)] = state.copy()
            else:
                obs[obs_key(i)] = np.concatenate([state, self._one_hot[i]])
        obs[STATE_KEY] = state
        if self._action_masks is not None:
            self._observe_action_masks(obs)
        if self._active_masks is not None:
            active = np.asarray(self._active_masks(self.parallel_env)).astype(np.int8)
            if active.shape != (self.n_agents,):
                raise ValueError(
                    f"{self.name} (env {self.env_index}): active_masks gave shape "
                    f"{active.shape}, expected ({self.n_agents},)"
                )
            obs[ACTIVE_KEY] = active
        return obs

    def _observe_action_masks(self, obs: dict[str, np.ndarray]) -> None:
        """Each agent's available-action mask into ``obs``, checked: a policy cannot sample
        from a mask without an available action (its probabilities would all be zero)."""
        masks = self._action_masks(self.parallel_env)
        if len(masks) != self.n_agents:
            raise ValueError(
                f"{self.name} (env {self.env_index}): action_masks gave {len(masks)} masks "
                f"for {self.n_agents} agents"
            )
        for i, (mask, n) in enumerate(zip(masks, self._n_actions)):
            mask = np.asarray(mask).astype(np.int8)
            if mask.shape != (n,):
                raise ValueError(
                    f"{self.name} (env {self.env_index}): the action mask of agent {i} has "
                    f"shape {mask.shape}, expected ({n},)"
                )
            if not mask.any():
                raise ValueError(
                    f"{self.name} (env {self.env_index}): agent {i} has no available action"
                )
            obs[action_mask_key(i)] = mask

    # -- gymnasium API ------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        local_obs, _ = self.parallel_env.reset(seed=seed, options=options)
        self._elapsed_steps = 0
        return self._observe(local_obs), {}

    def step(
        self, action: tuple[Any, ...] | list[Any]
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if len(action) != self.n_agents:
            raise ValueError(
                f"{self.name} (env {self.env_index}): expected {self.n_agents} per-agent actions, "
                f"got {len(action)}"
            )
        joint_action = dict(zip(self.agents, action))
        try:
            local_obs, rewards, terminations, truncations, _ = self.parallel_env.step(joint_action)
        except Exception as err:
            # Re-raised with the env named: from a worker process the original traceback is only
            # logged, so the message is what the user sees.
            raise RuntimeError(
                f"{self.name} (env {self.env_index}) raised inside step: "
                f"{type(err).__name__}: {err}"
            ) from err
        self._elapsed_steps += 1

        team_rewards = [float(rewards.get(agent, 0.0)) for agent in self.agents]
        first = team_rewards[0]
        # The shared reward itself when agents share it (a mean could differ in the last bit).
        team_reward = (
            first if all(r == first for r in team_rewards) else float(np.mean(team_rewards))
        )
        terminated = any(bool(terminations.get(agent, False)) for agent in self.agents)
        truncated = any(bool(truncations.get(agent, False)) for agent in self.agents)
        if self.episode_limit is not None and self._elapsed_steps >= self.episode_limit:
            truncated = True

        info: dict[str, Any] = {}
        warnings = [] if self._step_warnings is None else self._step_warnings(self.parallel_env)
        if warnings:
            info[WARNING_KEY] = "; ".join(warnings)
        if (terminated or truncated) and self._episode_metrics is not None:
            info["episode_metrics"] = {
                key: float(value) for key, value in self._episode_metrics(self.parallel_env).items()
            }
        return self._observe(local_obs), team_reward, terminated, truncated, info

    def close(self) -> None:
        self.parallel_env.close()

    # -- exact resume -------------------------------------------------------------------------

    @property
    def resume_state(self) -> dict[str, Any]:
        """Everything this env's future depends on: the step counter and the simulator's state.

        Raises ``NotImplementedError`` when the adapter was built without ``sim_state`` hooks.
        """
        if self._sim_state is None:
            raise NotImplementedError(
                f"{self.name}: no simulator state hooks, so this env cannot be saved exactly"
            )
        return {
            "elapsed_steps": self._elapsed_steps,
            "sim": self._sim_state.get(self.parallel_env),
        }

    @resume_state.setter
    def resume_state(self, state: dict[str, Any]) -> None:
        if self._sim_state is None:
            raise NotImplementedError(
                f"{self.name}: no simulator state hooks, so this env cannot be restored exactly"
            )
        if not isinstance(state, dict) or set(state) != {"elapsed_steps", "sim"}:
            raise ValueError(
                f"{self.name} (env {self.env_index}): resume_state must be a dict with keys "
                f"'elapsed_steps' and 'sim', got {state!r:.200}"
            )
        self._sim_state.set(self.parallel_env, state["sim"])
        self._elapsed_steps = int(state["elapsed_steps"])
