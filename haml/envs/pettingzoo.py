"""Bring your own environment: any PettingZoo *parallel* env, as a haml vector env.

From Python, :func:`from_pettingzoo` takes a function that builds one env; from the command line,
``haml train --env pettingzoo --task my_package.my_module:make_env`` names that function by its
import path (the task), which the run's ``config.yaml`` records, so that ``haml eval`` and
``haml train --resume`` build the same envs again. ``docs/envs/custom.md`` is the user's guide.

What haml makes of a user's env (:class:`TeamParallelEnv`, then
:class:`~haml.envs.gym_adapter.ParallelEnvAdapter` and :class:`~haml.envs.vector.GymVectorEnv`,
as for the built-in PettingZoo families):

- **Agents** are ``possible_agents``, in that order, and must all be present at every reset (an
  error otherwise). During an episode agents may leave (terminated or truncated): from then on
  they are inactive (``EnvStep.active_masks``), observe zeros, and their actions are not sent to
  the env. The episode ends when the last agent has left: *terminated* unless an agent leaving at
  that step was truncated (a time limit: the critic bootstraps), or when ``episode_limit`` steps
  have passed (truncated).
- **Observations**: a ``Box`` of any shape, flattened to 1-D ``float32`` (integer and bool
  ``Box`` observations are cast), or PettingZoo's ``Dict({"observation": Box, "action_mask":
  ...})``. Any other space is an error naming it.
- **Actions**: a 1-D float ``Box`` (haml clips its Gaussian actions to the bounds) or a
  ``Discrete`` (its ``start`` is added back); anything else is an error naming the supported ones.
- **Action masks** (Discrete actions only), PettingZoo's convention: ``info[agent]["action_mask"]``
  or the ``"action_mask"`` entry of a ``Dict`` observation, 1 where the action is available. An
  agent without a mask may take every action; an agent that has left takes action 0 (ignored).
- **Team reward**: the mean of the rewards of the agents that acted in the step. A cooperative
  env gives them all the same one; where they differ, the vector env warns once and haml trains on
  the mean.
- **Global state** (the centralised critic's input): ``state()`` when the env implements it,
  else the agents' observations concatenated (zeros for agents that have left). One line says
  which when the envs are built.

A user's env cannot be saved exactly (haml would have to unpickle arbitrary objects from a
checkpoint): a resumed run continues with freshly reset envs, and says so.

``pettingzoo`` is imported only to recognise its AEC envs, when an env is checked.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium
import numpy as np
import torch

from haml.envs.gym_adapter import AGENT_VIEWS, AgentView, ParallelEnvAdapter
from haml.envs.vector import (
    DEFAULT_STEP_TIMEOUT,
    GymVectorEnv,
    check_vector_options,
    make_gym_vector_env,
)
from haml.utils.seeding import check_seed

__all__ = [
    "EXAMPLE_TASK",
    "REWARD_MISMATCH_WARNING",
    "TASKS",
    "Options",
    "TeamParallelEnv",
    "from_pettingzoo",
    "load_env_fn",
    "make_single_env",
    "make_vector_env",
    "parse_task",
]

ENV_NAME = "pettingzoo"

EXAMPLE_TASK = "haml.envs.examples.meet:make_env"
"""The example of ``docs/envs/custom.md`` (two agents on a line must meet), the default task."""

TASKS: tuple[str, ...] = (EXAMPLE_TASK,)
"""Known tasks: the example. Any import path ``"package.module:function"`` is a task
(:func:`parse_task`)."""

SUPPORTED_ACTIONS = "Box (1-D, float) and Discrete"

REWARD_MISMATCH_WARNING = (
    "the agents' rewards differ within a step; haml trains on the team reward, their mean "
    "(docs/envs/custom.md)"
)
"""What the vector env warns (once) when a step gives the agents different rewards."""

_DOTTED = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
_TASK = re.compile(rf"^{_DOTTED}:\S+$")
"""A task: a module path, a colon, and the function's qualified name (for :func:`from_pettingzoo`'s
envs a lambda's or local function's too, which names a run but cannot be imported)."""
_NAME = re.compile(rf"^{_DOTTED}$")

EnvFn = Callable[[], Any]


# -- options and tasks --------------------------------------------------------------------------

_VECTORIZATIONS = ("sync", "async")


@dataclass(frozen=True)
class Options:
    """Options of the pettingzoo family (``haml.envs.make_env("pettingzoo", task, **options)``,
    ``env.options.<name>=...`` on the command line)."""

    agent_view: AgentView = "local"
    """What each agent observes: "local" (its own observation), "state" (the global state),
    "state_id" (the global state and the agent's one-hot id)."""
    episode_limit: int | None = None
    """Steps after which haml truncates an episode (None: only the env ends its episodes)."""
    vectorization: Literal["sync", "async"] = "sync"
    """"sync": every env in this process; "async": one subprocess per env (the env function must
    then be picklable: a module-level function or a functools.partial of one)."""
    step_timeout: float | None = DEFAULT_STEP_TIMEOUT
    """Async only: seconds a step/reset may take before the workers are declared stuck and
    stopped (None: wait forever)."""
    start_method: str | None = None
    """Async only: multiprocessing start method ("fork", "forkserver", "spawn"; None: the
    platform's default)."""

    def __post_init__(self) -> None:
        if self.agent_view not in AGENT_VIEWS:
            raise ValueError(
                f"agent_view must be one of {list(AGENT_VIEWS)}, got {self.agent_view!r}"
            )
        if self.episode_limit is not None and (
            isinstance(self.episode_limit, bool)
            or not isinstance(self.episode_limit, int)
            or self.episode_limit < 1
        ):
            raise ValueError(
                f"episode_limit must be an integer >= 1 or None, got {self.episode_limit!r}"
            )
        check_vector_options(
            self.vectorization, _VECTORIZATIONS, self.step_timeout, self.start_method
        )


def parse_task(task: str) -> str:
    """``task`` if it has the form of an import path ``"package.module:function"`` (checked, not
    imported: :func:`load_env_fn` imports it)."""
    if isinstance(task, str) and _TASK.match(task):
        return task
    raise ValueError(
        f"a pettingzoo task is the import path of a function that builds one PettingZoo parallel "
        f"env, 'package.module:function', got {task!r} (e.g. {EXAMPLE_TASK!r})"
    )


def load_env_fn(task: str) -> EnvFn:
    """The function that the import path ``task`` names.

    The module is imported as Python would import it; if it is not found, the current directory
    is added to ``sys.path`` (at the end) and the import tried again, so that ``haml train --task
    my_env:make_env`` finds ``./my_env.py``, as ``python -m`` would.
    """
    module_name, attribute = parse_task(task).split(":", 1)
    if not _NAME.match(attribute):
        raise ImportError(
            f"pettingzoo task {task!r}: {attribute!r} cannot be imported by name (a lambda or a "
            "function defined inside another); name a module-level function"
        )
    try:
        module = _import_module(module_name)
    except ImportError as err:
        raise ImportError(
            f"pettingzoo task {task!r}: cannot import {module_name!r}: {err}"
        ) from err
    target: Any = module
    for name in attribute.split("."):
        if not hasattr(target, name):
            raise ImportError(
                f"pettingzoo task {task!r}: module {module_name!r} has no {attribute!r}"
            )
        target = getattr(target, name)
    if not callable(target):
        raise TypeError(
            f"pettingzoo task {task!r}: {attribute!r} is a {type(target).__name__}, not a function "
            "that builds an env"
        )
    return target


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        top = name.split(".")[0]
        cwd = os.getcwd()
        if err.name != top or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(name)


def _describe(env_fn: EnvFn) -> str:
    """The spec's task for an env function: ``"module:qualified_name"`` (of the function a
    ``functools.partial`` wraps, marked ``(partial)``: its arguments are not part of the name)."""
    partial = isinstance(env_fn, functools.partial)
    target = env_fn.func if partial else env_fn
    module = getattr(target, "__module__", None) or "__main__"
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    name = f"{module}:{qualname}{'(partial)' if partial else ''}"
    return name if _TASK.match(name) else f"{module}:{type(target).__qualname__}"


# -- one env: checks and the layout haml sees ---------------------------------------------------

_MASK_KEY = "action_mask"
_OBSERVATION_KEY = "observation"


def _space_of(env: Any, kind: str, agent: str, name: str) -> Any:
    """``env.observation_space(agent)`` or ``env.action_space(agent)``."""
    method = getattr(env, f"{kind}_space")
    try:
        return method(agent)
    except Exception as err:
        raise TypeError(
            f"{name}: {kind}_space({agent!r}) raised {type(err).__name__}: {err}"
        ) from err


def check_parallel_env(env: Any, name: str) -> None:
    """A ``TypeError`` unless ``env`` follows PettingZoo's parallel API, saying what it is instead
    (an AEC env, a single-agent gymnasium env, something else)."""
    try:
        from pettingzoo import AECEnv
    except ImportError:  # a duck-typed env without pettingzoo installed
        AECEnv = ()  # noqa: N806
    if isinstance(env, AECEnv) or hasattr(env, "agent_selection"):
        raise TypeError(
            f"{name}: the env function returned a PettingZoo AEC env ({type(env).__name__}: agents "
            "act in turn); haml needs a parallel env: return "
            "pettingzoo.utils.conversions.aec_to_parallel(env)"
        )
    if isinstance(env, gymnasium.Env):
        raise TypeError(
            f"{name}: the env function returned a single-agent gymnasium env "
            f"({type(env).__name__}); haml needs a PettingZoo parallel env"
        )
    missing = [
        attr
        for attr in ("possible_agents", "reset", "step", "observation_space", "action_space")
        if not hasattr(env, attr)
    ]
    if missing:
        raise TypeError(
            f"{name}: the env function returned {type(env).__name__}, not a PettingZoo parallel "
            f"env (it has no {', '.join(missing)})"
        )
    agents = list(env.possible_agents)
    if not agents:
        raise ValueError(f"{name}: the env has no possible_agents")
    if len(set(agents)) != len(agents):
        raise ValueError(f"{name}: possible_agents has duplicates: {agents}")


def _flat_box(space: gymnasium.spaces.Box) -> gymnasium.spaces.Box:
    """A numeric Box of any shape as the flat float32 Box haml's models take."""
    return gymnasium.spaces.Box(
        low=space.low.astype(np.float32).reshape(-1),
        high=space.high.astype(np.float32).reshape(-1),
        dtype=np.float32,
    )


def _is_numeric(dtype: Any) -> bool:
    return np.dtype(dtype).kind in "fiub"


def _observation_layout(
    space: Any, agent: str, name: str
) -> tuple[gymnasium.spaces.Box, bool, bool]:
    """``(the flat float32 Box haml sees, whether the observation is PettingZoo's Dict with an
    "observation" entry, whether that Dict has an "action_mask")``."""
    in_dict = (
        isinstance(space, gymnasium.spaces.Dict)
        and _OBSERVATION_KEY in space.spaces
        and set(space.spaces) <= {_OBSERVATION_KEY, _MASK_KEY}
    )
    inner = space[_OBSERVATION_KEY] if in_dict else space
    if not isinstance(inner, gymnasium.spaces.Box) or not _is_numeric(inner.dtype):
        raise TypeError(
            f"{name}: agent {agent!r} has the observation space {space!r}; haml needs a numeric "
            "Box (float, or integer/bool, which is cast to float32), or PettingZoo's "
            "Dict({'observation': Box, 'action_mask': ...}); encode other observations as a "
            "float Box (e.g. one-hot)"
        )
    return _flat_box(inner), in_dict, in_dict and _MASK_KEY in space.spaces


def _action_layout(space: Any, agent: str, name: str) -> Any:
    """The action space haml acts in: the env's 1-D float Box, or ``Discrete(n)`` from 0."""
    if isinstance(space, gymnasium.spaces.Discrete):
        return gymnasium.spaces.Discrete(int(space.n))
    if (
        isinstance(space, gymnasium.spaces.Box)
        and len(space.shape) == 1
        and np.dtype(space.dtype).kind == "f"
    ):
        return gymnasium.spaces.Box(
            low=space.low.astype(np.float32), high=space.high.astype(np.float32), dtype=np.float32
        )
    raise TypeError(
        f"{name}: agent {agent!r} has the action space {space!r}, which haml does not support; "
        f"supported: {SUPPORTED_ACTIONS}"
    )


def _flat_numeric(value: Any, what: str, size: int, name: str) -> np.ndarray:
    """``value`` as a flat float32 array of ``size`` numbers, or an error naming ``what``."""
    array = np.asarray(value)
    if not _is_numeric(array.dtype):
        raise TypeError(f"{name}: {what} is not numeric (dtype {array.dtype}): {value!r:.100}")
    if array.size != size:
        raise ValueError(f"{name}: {what} has {array.size} values ({array.shape}), expected {size}")
    return array.astype(np.float32).reshape(-1)


@dataclass(frozen=True)
class Layout:
    """What haml sees of a user's env: found once (:func:`inspect_env`), checked in every copy."""

    agents: tuple[str, ...]
    obs_spaces: tuple[gymnasium.spaces.Box, ...]
    """Per agent, the flat float32 observation Box."""
    obs_in_dict: tuple[bool, ...]
    """Per agent, whether the observation is PettingZoo's ``{"observation", ...}`` Dict."""
    env_action_spaces: tuple[Any, ...]
    """The env's own action spaces (what actions are converted to)."""
    action_spaces: tuple[Any, ...]
    """The action spaces haml acts in (:func:`_action_layout`)."""
    masks: tuple[str | None, ...]
    """Per agent, where its action mask comes from: "info", "obs" or None (every action)."""
    has_state: bool
    """The env implements ``state()``; else the state is the observations concatenated."""
    state_space: gymnasium.spaces.Box

    @property
    def masked(self) -> bool:
        return any(source is not None for source in self.masks)


def _env_state(env: Any) -> Any | None:
    """``env.state()``, or None when the env does not implement it."""
    state = getattr(env, "state", None)
    if not callable(state):
        return None
    try:
        return state()
    except NotImplementedError:  # PettingZoo's ParallelEnv.state() default
        return None


def inspect_env(env: Any, name: str) -> Layout:
    """Check a freshly built env and find its :class:`Layout`; resets the env once."""
    check_parallel_env(env, name)
    agents = tuple(env.possible_agents)
    obs_layouts = [
        _observation_layout(_space_of(env, "observation", agent, name), agent, name)
        for agent in agents
    ]
    env_actions = tuple(_space_of(env, "action", agent, name) for agent in agents)
    actions = tuple(_action_layout(space, agent, name) for space, agent in zip(env_actions, agents))
    observations, infos = _checked_reset(env, agents, name, seed=None)
    masks = tuple(
        "obs" if obs_mask else "info" if _MASK_KEY in (infos.get(agent) or {}) else None
        for agent, (_, _, obs_mask) in zip(agents, obs_layouts)
    )
    if any(source is not None for source in masks):
        boxes = [
            agent
            for agent, space in zip(agents, actions)
            if not isinstance(space, gymnasium.spaces.Discrete)
        ]
        if boxes:
            raise TypeError(
                f"{name}: the env gives action masks, which need every agent's actions to be "
                f"Discrete; {', '.join(map(repr, boxes))} act in a Box"
            )
    obs_spaces = tuple(space for space, _, _ in obs_layouts)
    for agent, space, (_, in_dict, _) in zip(agents, obs_spaces, obs_layouts):
        value = observations[agent][_OBSERVATION_KEY] if in_dict else observations[agent]
        _flat_numeric(value, f"the observation of {agent!r}", space.shape[0], name)
    state = _env_state(env)
    if state is not None:
        size = _flat_numeric(state, "state()", np.asarray(state).size, name).size
        declared = getattr(env, "state_space", None)
        if isinstance(declared, gymnasium.spaces.Box) and int(np.prod(declared.shape)) == size:
            state_space = _flat_box(declared)
        else:
            state_space = gymnasium.spaces.Box(-np.inf, np.inf, (size,), np.float32)
    else:
        state_space = gymnasium.spaces.Box(
            low=np.concatenate([space.low for space in obs_spaces]),
            high=np.concatenate([space.high for space in obs_spaces]),
            dtype=np.float32,
        )
    return Layout(
        agents=agents,
        obs_spaces=obs_spaces,
        obs_in_dict=tuple(in_dict for _, in_dict, _ in obs_layouts),
        env_action_spaces=env_actions,
        action_spaces=actions,
        masks=masks,
        has_state=state is not None,
        state_space=state_space,
    )


def _checked_reset(
    env: Any, agents: tuple[str, ...], name: str, seed: int | None, options: Any = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``env.reset(...)``, checked: the parallel API's ``(observations, infos)``, and every agent of
    ``agents`` (the first ``possible_agents``) present, no other."""
    result = env.reset(seed=seed, options=options)
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], dict)):
        raise TypeError(
            f"{name}: reset() must return (observations, infos), two dicts keyed by agent "
            f"(PettingZoo's parallel API), got {type(result).__name__}"
        )
    observations, infos = result
    now = tuple(env.possible_agents)
    if now != agents:
        raise ValueError(
            f"{name}: possible_agents changed between resets, from {list(agents)} to {list(now)}; "
            "haml trains a fixed team (agents may leave an episode, but every one starts it)"
        )
    if set(observations) != set(agents):
        raise ValueError(
            f"{name}: reset() gave observations for {sorted(observations)}, not for every possible "
            f"agent {list(agents)}; every agent must be present at the start of every episode"
        )
    return observations, infos or {}


def _step_warnings(env: TeamParallelEnv) -> list[str]:
    """The adapter's ``step_warnings`` hook: what this env has to warn about."""
    notes, env.notes = env.notes, []
    return notes


def _action_masks(env: TeamParallelEnv) -> list[np.ndarray]:
    return env.masks


def _alive(env: TeamParallelEnv) -> np.ndarray:
    return env.alive


class TeamParallelEnv:
    """A user's PettingZoo parallel env as the fixed team of agents that
    :class:`~haml.envs.gym_adapter.ParallelEnvAdapter` steps (see the module docstring).

    Every dict it returns has an entry for every agent; rewards are the team reward, the episode's
    ``terminated``/``truncated`` flags are every agent's. :attr:`alive` and :attr:`masks` are the
    active flags and action masks of the current observation; :attr:`notes` collects warnings for
    the vector env to give once.
    """

    def __init__(self, env: Any, layout: Layout, name: str) -> None:
        check_parallel_env(env, name)
        if tuple(env.possible_agents) != layout.agents:
            raise ValueError(
                f"{name}: this copy of the env has the agents {list(env.possible_agents)}, the "
                f"first had {list(layout.agents)}"
            )
        self.env = env
        self.layout = layout
        self.name = name
        self.possible_agents = layout.agents
        self.state_space = layout.state_space
        n = len(layout.agents)
        self.alive = np.zeros(n, dtype=bool)
        self._every = [np.ones(_n_actions(s), np.int8) for s in layout.action_spaces]
        self._noop = [np.eye(1, _n_actions(s), dtype=np.int8)[0] for s in layout.action_spaces]
        self.masks: list[np.ndarray] = list(self._every)
        self.notes: list[str] = []
        self._warned_reward = False
        self._obs = [np.zeros(space.shape, np.float32) for space in layout.obs_spaces]

    def observation_space(self, agent: str) -> gymnasium.spaces.Box:
        return self.layout.obs_spaces[self.layout.agents.index(agent)]

    def action_space(self, agent: str) -> Any:
        return self.layout.action_spaces[self.layout.agents.index(agent)]

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        observations, infos = _checked_reset(self.env, self.layout.agents, self.name, seed, options)
        self.alive[:] = True
        self._read(observations, infos)
        return self._observations(), {agent: {} for agent in self.layout.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict[str, Any], ...]:
        agents = self.layout.agents
        acting = [agent for agent, alive in zip(agents, self.alive) if alive]
        joint = {agent: self._env_action(agent, actions[agent]) for agent in acting}
        result = self.env.step(joint)
        if not (isinstance(result, tuple) and len(result) == 5):
            raise TypeError(
                f"{self.name}: step() must return (observations, rewards, terminations, "
                "truncations, infos), five dicts keyed by agent (PettingZoo's parallel API)"
            )
        observations, rewards, terminations, truncations, infos = result
        joined = (set(observations) | set(rewards)) - set(acting)
        if joined:
            raise ValueError(
                f"{self.name}: step() returned {sorted(joined)}, which did not act in it (agents "
                f"may leave an episode, but not join it); the acting agents were {acting}"
            )
        team_reward = self._team_reward([float(rewards[a]) for a in acting if a in rewards])
        leaving = [a for a in acting if terminations.get(a, False) or truncations.get(a, False)]
        for agent in leaving:
            self.alive[agents.index(agent)] = False
        self._read(observations, infos or {}, leaving=leaving)
        ended = not self.alive.any()
        truncated = ended and any(
            truncations.get(a, False) and not terminations.get(a, False) for a in leaving
        )
        terminated = ended and not truncated
        return (
            self._observations(),
            {agent: team_reward for agent in agents},
            {agent: terminated for agent in agents},
            {agent: truncated for agent in agents},
            {agent: {} for agent in agents},
        )

    def state(self) -> np.ndarray:
        if not self.layout.has_state:
            return np.concatenate(self._obs)
        state = self.env.state()
        return _flat_numeric(state, "state()", self.layout.state_space.shape[0], self.name)

    def close(self) -> None:
        close = getattr(self.env, "close", None)
        if callable(close):
            close()

    # -- helpers ------------------------------------------------------------------------------

    def _env_action(self, agent: str, action: Any) -> Any:
        space = self.layout.env_action_spaces[self.layout.agents.index(agent)]
        if isinstance(space, gymnasium.spaces.Discrete):
            return int(space.start) + int(action)
        return np.asarray(action, dtype=space.dtype)

    def _team_reward(self, rewards: list[float]) -> float:
        if not rewards:
            return 0.0
        low, high = min(rewards), max(rewards)
        if high - low > 1e-6 * max(1.0, abs(high), abs(low)) and not self._warned_reward:
            self._warned_reward = True
            self.notes.append(REWARD_MISMATCH_WARNING)
        return high if low == high else float(np.mean(rewards))

    def _read(
        self, observations: dict[str, Any], infos: dict[str, Any], leaving: Sequence[str] = ()
    ) -> None:
        """This step's observations and masks; zeros and the no-op mask for agents that left."""
        layout = self.layout
        for i, agent in enumerate(layout.agents):
            if not self.alive[i] and agent not in leaving:
                self._obs[i] = np.zeros_like(self._obs[i])
                self.masks[i] = self._noop[i]
                continue
            if agent not in observations:
                if not self.alive[i]:  # left at this step without a last observation
                    self._obs[i] = np.zeros_like(self._obs[i])
                    self.masks[i] = self._noop[i]
                    continue
                raise ValueError(
                    f"{self.name}: no observation for agent {agent!r}, still in the episode"
                )
            value = observations[agent]
            if layout.obs_in_dict[i]:
                value = value[_OBSERVATION_KEY]
            self._obs[i] = _flat_numeric(
                value, f"the observation of {agent!r}", layout.obs_spaces[i].shape[0], self.name
            )
            self.masks[i] = self._mask(i, observations[agent], infos.get(agent) or {})

    def _mask(self, i: int, observation: Any, info: dict[str, Any]) -> np.ndarray:
        source = self.layout.masks[i]
        if not self.alive[i]:
            return self._noop[i]
        if source is None:
            return self._every[i]
        mask = observation[_MASK_KEY] if source == "obs" else info.get(_MASK_KEY)
        if mask is None:
            raise ValueError(
                f"{self.name}: agent {self.layout.agents[i]!r} gave no action_mask in its "
                f"{source}; it gave one at the first reset, and must give one at every step"
            )
        return np.asarray(mask).reshape(-1)

    def _observations(self) -> dict[str, np.ndarray]:
        return {agent: self._obs[i] for i, agent in enumerate(self.layout.agents)}


def _n_actions(space: Any) -> int:
    return int(space.n) if isinstance(space, gymnasium.spaces.Discrete) else 1


# -- building envs ------------------------------------------------------------------------------


def _build(source: str | EnvFn, name: str) -> Any:
    env_fn = load_env_fn(source) if isinstance(source, str) else source
    try:
        return env_fn()
    except Exception as err:
        raise RuntimeError(f"{name}: the env function raised {type(err).__name__}: {err}") from err


def make_single_env(
    source: str | EnvFn, options: Options, layout: Layout, name: str, env_index: int = 0
) -> ParallelEnvAdapter:
    """One user env as a gymnasium env (what each vector-env worker builds): ``source`` is the
    task's import path or the env function itself."""
    return ParallelEnvAdapter(
        TeamParallelEnv(_build(source, name), layout, name),
        episode_limit=options.episode_limit,
        agent_view=options.agent_view,
        action_masks=_action_masks if layout.masked else None,
        active_masks=_alive,
        step_warnings=_step_warnings,
        env_index=env_index,
        name=name,
    )


_said: set[str] = set()


def _say_once(line: str) -> None:
    """Print ``line`` the first time this process is to print it."""
    if line not in _said:
        _said.add(line)
        print(line, flush=True)


def _make(
    source: str | EnvFn,
    task: str,
    num_envs: int,
    options: Options,
    device: torch.device | str,
    seed: int | None,
) -> GymVectorEnv:
    """The one builder behind :func:`make_vector_env` and :func:`from_pettingzoo`: one env is
    built and checked here (errors surface once, in this process), then the vector env."""
    name = f"{ENV_NAME}/{task}"
    probe = _build(source, name)
    try:
        layout = inspect_env(probe, name)
    finally:
        close = getattr(probe, "close", None)
        if callable(close):
            close()
    dim = layout.state_space.shape[0]
    _say_once(
        f"{name}: the critic's global state is the env's state() ({dim} values)"
        if layout.has_state
        else f"{name}: the critic's global state is the agents' observations concatenated ({dim} "
        "values; the env has no state())"
    )
    return make_gym_vector_env(
        functools.partial(make_single_env, source, options, layout, name),
        num_envs, options, env=ENV_NAME, task=task, device=device, seed=seed,
        episode_limit=options.episode_limit,
    )


def make_vector_env(
    task: str,
    num_envs: int,
    options: Options | None = None,
    device: torch.device | str = "cpu",
    seed: int | None = None,
) -> GymVectorEnv:
    """``num_envs`` copies of the env that the import path ``task`` builds, as a
    :class:`~haml.envs.base.VectorMultiAgentEnv` (the registry's entry; workers import ``task``
    themselves)."""
    options = options or Options()
    load_env_fn(task)  # a bad path fails here, not in every worker
    return _make(task, task, num_envs, options, device, seed)


def from_pettingzoo(
    env_fn: EnvFn,
    num_envs: int = 1,
    *,
    agent_view: AgentView = "local",
    episode_limit: int | None = None,
    vectorization: Literal["sync", "async"] = "sync",
    device: torch.device | str = "cpu",
    seed: int | None = None,
    step_timeout: float | None = DEFAULT_STEP_TIMEOUT,
    start_method: str | None = None,
) -> GymVectorEnv:
    """``num_envs`` copies of the PettingZoo parallel env that ``env_fn()`` builds, as a
    :class:`~haml.envs.base.VectorMultiAgentEnv` that ``haml.train(algo, env)`` and
    ``haml.evaluate(run_dir, env)`` take.

    Args:
        env_fn: builds one env; called once here (to check the env and read its spaces) and once
            per copy. Picklable for ``vectorization="async"`` with the "spawn"/"forkserver" start
            methods (a module-level function or a ``functools.partial`` of one).
        num_envs: copies stepped together.
        agent_view, episode_limit, vectorization, step_timeout, start_method: :class:`Options`.
        device: where the tensors the env returns live.
        seed: env ``e`` is seeded with ``seed + e`` at the first reset.

    The spec's task is ``env_fn``'s import path where it has one (the run directory's name).
    Errors name what the env does that haml cannot take (docs/envs/custom.md lists them).
    """
    if not callable(env_fn):
        raise TypeError(
            f"from_pettingzoo: env_fn must be a function that builds one env, got "
            f"{type(env_fn).__name__} (pass the function, e.g. make_env, not make_env())"
        )
    options = Options(
        agent_view=agent_view,
        episode_limit=episode_limit,
        vectorization=vectorization,
        step_timeout=step_timeout,
        start_method=start_method,
    )
    seed = check_seed(seed, "from_pettingzoo")
    return _make(env_fn, _describe(env_fn), num_envs, options, device, seed)
