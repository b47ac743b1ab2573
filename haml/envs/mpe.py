"""The cooperative Multi-Particle Environments (MPE) of Farama's ``mpe2`` package.

A task is the scenario's name without its version suffix, e.g. ``"simple_spread"`` (mpe2's
``simple_spread_v3``; the versioned name is accepted too). Only the scenarios in which every agent
is on one team are offered (:data:`TASKS`); the competitive ones (``simple_adversary``,
``simple_crypto``, ``simple_push``, ``simple_tag``, ``simple_world_comm``) and the single-agent
``simple`` are not.

**Team reward.** :class:`~haml.envs.gym_adapter.ParallelEnvAdapter` reports the mean of the agents'
rewards (``team_reward="sum"`` gives N times that, the sum HARL's MPE wrapper reports). What the
mean is, per task (``docs/envs/mpe.md`` derives each):

- ``simple_spread``: agent i gets ``(1 - α) G + α L_i`` with ``G = -Σ_landmarks min_agents
  distance`` and ``L_i = -(number of other agents colliding with i)``, ``α = local_ratio``; the
  mean is ``(1 - α) G - α 2C / N``, C the number of colliding pairs;
- ``simple_reference``: agent i gets ``-d_i``, the distance of the other agent to the landmark only
  i knows (and must name to it), mixed with the mean of both; the mean is ``-(d_0 + d_1) / 2``
  whatever ``local_ratio``;
- ``simple_speaker_listener``: both get ``-squared distance(listener, target landmark)``;
- ``simple_formation`` / ``simple_line``: all get ``-mean_i clip(distance to assigned slot, 0, 2)``;
- ``collect_treasure``: each gets the shared +5 per pickup and per delivery plus its own distance
  shaping and collision penalty; the mean keeps the shared part once.

**Episodes** last ``max_cycles`` steps (mpe2's default 25) and end *truncated*: the adapter counts
the steps (so the counter is part of the resume state) and the mpe2 env is given no limit of its
own. With ``terminate_on_success`` (spread, formation, line) an episode also *terminates* once the
scenario's goal is met.

**Actions**: ``Discrete`` (movement: no-op, left, right, down, up; speakers: a word;
simple_reference: movement x word = 50) or, with ``continuous_actions``, ``Box(0, 1)``
(movement: the force is ``a[2] - a[1]``, ``a[4] - a[3]``; then the word's values). haml's Gaussian
actions are clipped to [0, 1] by :class:`~haml.envs.vector.GymVectorEnv` before they arrive.

**Stepping.** mpe2's own ``parallel_env()`` is its AEC env behind PettingZoo's AEC-to-parallel
conversion, which computes every observation three times per step (``last()``, the step's, and
``state()``) behind several wrapper layers. :class:`MPEParallelEnv` drives the unwrapped AEC env
through its public AEC methods (``step`` per agent, ``observe``) and builds the global state from
the observations it already has (mpe2's ``state()`` is their concatenation): 1.5-2.5x as fast,
the same numbers (``python_tests/envs/test_mpe.py`` checks both against mpe2's parallel env).

**Exact resume** saves every entity's state and per-episode attributes (positions, velocities,
messages, goals, carried treasures), the scenario's own variables and the env's RNGs; see
:data:`MPE_STATE_HOOKS`.

``mpe2`` (and with it pygame) is imported only when an env is built.
"""

from __future__ import annotations

import functools
import importlib
import sys
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium
import numpy as np
import torch

from haml.envs.gym_adapter import AGENT_VIEWS, AgentView, ParallelEnvAdapter, SimStateHooks
from haml.envs.vector import (
    DEFAULT_STEP_TIMEOUT,
    GymVectorEnv,
    check_vector_options,
    make_gym_vector_env,
)

__all__ = [
    "MPE_STATE_HOOKS",
    "TASKS",
    "MPEParallelEnv",
    "Options",
    "make_single_env",
    "make_vector_env",
    "parse_task",
]

ENV_NAME = "mpe"


@dataclass(frozen=True)
class _Task:
    """What haml needs to know of one mpe2 scenario."""

    module: str
    """The versioned mpe2 module, e.g. ``"simple_spread_v3"``."""
    sizable: bool = False
    """Takes ``N`` (the ``n_agents`` option)."""
    local_ratio: bool = False
    """Takes ``local_ratio`` *and* the team reward depends on it."""
    terminates: bool = False
    """Takes ``terminate_on_success``."""


_TASKS: dict[str, _Task] = {
    "simple_spread": _Task("simple_spread_v3", sizable=True, local_ratio=True, terminates=True),
    "simple_reference": _Task("simple_reference_v3"),
    "simple_speaker_listener": _Task("simple_speaker_listener_v4"),
    "simple_formation": _Task("simple_formation_v1", sizable=True, terminates=True),
    "simple_line": _Task("simple_line_v1", sizable=True, terminates=True),
    "collect_treasure": _Task("collect_treasure_v1"),
}

TASKS: tuple[str, ...] = tuple(_TASKS)
"""The cooperative mpe2 scenarios (every agent on one team). ``simple_reference`` takes mpe2's
``local_ratio`` too, but the mean over its two agents does not depend on it, so it is not an
option there."""

_VERSIONED = {task.module: name for name, task in _TASKS.items()}

_NO_LIMIT = sys.maxsize
"""``max_cycles`` given to mpe2 itself: the adapter owns the time limit (and saves its counter)."""


def parse_task(task: str) -> str:
    """The task's haml name (``"simple_spread_v3"`` → ``"simple_spread"``), validated."""
    if isinstance(task, str):
        if task in _TASKS:
            return task
        if task in _VERSIONED:
            return _VERSIONED[task]
    raise ValueError(
        f"unknown MPE task {task!r}; known tasks: {', '.join(TASKS)} (cooperative mpe2 scenarios; "
        "the versioned names, e.g. 'simple_spread_v3', work too)"
    )


# -- options ------------------------------------------------------------------------------------


def action_kind_option(kind: str) -> str | None:
    """Registry hook: the override that gives every MPE task ``kind`` actions."""
    return {"continuous": "env.options.continuous_actions=true",
            "discrete": "env.options.continuous_actions=false"}.get(kind)


_VECTORIZATIONS = ("sync", "async")
_TEAM_REWARDS = ("mean", "sum")


@dataclass(frozen=True)
class Options:
    """MPE options (``haml.envs.make_env("mpe", task, **options)``)."""

    continuous_actions: bool = False
    """``Box(0, 1)`` actions instead of ``Discrete`` ones."""
    max_cycles: int = 25
    """Steps after which an episode is truncated (mpe2's default 25)."""
    n_agents: int | None = None
    """simple_spread (agents = landmarks), simple_formation, simple_line: the number of agents
    (mpe2's ``N``); None: mpe2's default (3, 4, 4). An error for the other tasks."""
    local_ratio: float | None = None
    """simple_spread: the weight α in [0, 1] of each agent's own collision penalty against the
    shared coverage reward; None: mpe2's default 0.5. An error for the other tasks."""
    terminate_on_success: bool = False
    """simple_spread, simple_formation, simple_line: end the episode (terminated) as soon as the
    goal is met (every landmark covered / every agent in its slot). An error for the others."""
    agent_view: AgentView = "local"
    """What each agent observes: "local" (its mpe2 observation), "state" (the global state: every
    agent's observation concatenated), "state_id" (the state and the agent's one-hot id)."""
    team_reward: Literal["mean", "sum"] = "mean"
    """"mean" of the agents' rewards (haml's convention, the adapter's) or their "sum" (N times
    the mean: the scale of HARL's MPE returns)."""
    vectorization: Literal["sync", "async"] = "sync"
    """"sync": every env in this process; "async": one subprocess per env. An MPE step is a
    fraction of a millisecond of Python, about what an async step spends on IPC and process
    switches, so sync is the default; only collect_treasure, whose step is several times longer,
    may gain from async, given cores to spare (docs/BENCHMARKS.md, "Environment adapters")."""
    step_timeout: float | None = DEFAULT_STEP_TIMEOUT
    """Async only: seconds a step/reset may take before the workers are declared stuck (None: wait
    forever): 30 s, where a step takes a fraction of a millisecond, so only a stuck worker trips
    it."""
    start_method: str | None = None
    """Async only: multiprocessing start method ("fork", "forkserver", "spawn"; None: the
    platform's default)."""

    def __post_init__(self) -> None:
        if self.max_cycles < 1:
            raise ValueError(f"max_cycles must be >= 1, got {self.max_cycles}")
        if self.n_agents is not None and self.n_agents < 2:
            raise ValueError(f"n_agents must be >= 2 or None, got {self.n_agents}")
        if self.local_ratio is not None and not 0.0 <= self.local_ratio <= 1.0:
            raise ValueError(f"local_ratio must be in [0, 1] or None, got {self.local_ratio}")
        if self.agent_view not in AGENT_VIEWS:
            raise ValueError(
                f"agent_view must be one of {list(AGENT_VIEWS)}, got {self.agent_view!r}"
            )
        if self.team_reward not in _TEAM_REWARDS:
            raise ValueError(
                f"team_reward must be one of {list(_TEAM_REWARDS)}, got {self.team_reward!r}"
            )
        check_vector_options(self.vectorization, _VECTORIZATIONS, self.step_timeout, self.start_method)


def _check_task_options(task: str, options: Options) -> None:
    """Options that only some scenarios take: an error for the others, naming those that do."""
    spec = _TASKS[task]

    def takers(flag: str) -> str:
        return ", ".join(name for name, t in _TASKS.items() if getattr(t, flag))

    if options.n_agents is not None and not spec.sizable:
        raise ValueError(
            f"MPE task {task!r} has a fixed number of agents; n_agents is an option of "
            f"{takers('sizable')} only"
        )
    if options.local_ratio is not None and not spec.local_ratio:
        raise ValueError(
            f"local_ratio does not change the team reward of MPE task {task!r}; it is an option "
            f"of {takers('local_ratio')} only"
        )
    if options.terminate_on_success and not spec.terminates:
        raise ValueError(
            f"MPE task {task!r} has no success condition; terminate_on_success is an option of "
            f"{takers('terminates')} only"
        )


# -- the mpe2 env as a parallel env -------------------------------------------------------------


def _import_scenario(module: str) -> Any:
    """mpe2's scenario module, with the pip hint when mpe2 is not installed."""
    try:
        return importlib.import_module(f"mpe2.{module}")
    except ImportError as err:
        raise ImportError(f'MPE needs the mpe2 package ({err}): pip install "haml[mpe]"') from err


class MPEParallelEnv:
    """An mpe2 scenario's unwrapped AEC env, stepped as a PettingZoo-style parallel env.

    ``step`` feeds each agent's action to the AEC env in turn (the world moves after the last
    one), then reads the rewards and flags and observes each agent once; ``state()`` is those
    observations concatenated, which is what mpe2's ``state()`` computes.

    Discrete actions are checked (mpe2 would silently wrap an out-of-range index); continuous
    ones are clipped to ``[0, 1]`` as mpe2's own wrapper does.
    """

    def __init__(self, raw_env: Any, *, reward_scale: float = 1.0) -> None:
        self.raw_env = raw_env
        self.possible_agents: tuple[str, ...] = tuple(raw_env.possible_agents)
        self.state_space = raw_env.state_space
        self.reward_scale = reward_scale
        for agent in self.possible_agents:
            space = raw_env.action_space(agent)
            if not isinstance(space, (gymnasium.spaces.Discrete, gymnasium.spaces.Box)):
                raise TypeError(f"mpe2 {agent}: unexpected action space {space!r}")
        self._obs: dict[str, np.ndarray] | None = None

    @property
    def unwrapped(self) -> Any:
        return self.raw_env

    def observation_space(self, agent: str) -> Any:
        return self.raw_env.observation_space(agent)

    def action_space(self, agent: str) -> Any:
        return self.raw_env.action_space(agent)

    def _observe(self) -> dict[str, np.ndarray]:
        self._obs = {agent: self.raw_env.observe(agent) for agent in self.possible_agents}
        return self._obs

    def _checked(self, agent: str, action: Any) -> Any:
        space = self.raw_env.action_space(agent)
        if isinstance(space, gymnasium.spaces.Discrete):
            index = int(action)
            if not 0 <= index < space.n or index != action:
                raise ValueError(
                    f"action of {agent} must be an integer in 0..{space.n - 1}, got {action!r}"
                )
            return index
        action = np.asarray(action, dtype=np.float32)
        if action.shape != space.shape:
            raise ValueError(
                f"action of {agent} must have shape {space.shape}, got {action.shape}"
            )
        return np.clip(action, space.low, space.high)

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        self.raw_env.reset(seed=seed, options=options)
        return self._observe(), {agent: {} for agent in self.possible_agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict[str, np.ndarray], ...]:
        raw = self.raw_env
        for agent in self.possible_agents:
            if raw.agent_selection != agent:  # a bug, not a user error: AEC order is fixed
                raise RuntimeError(f"mpe2 expected {raw.agent_selection}'s action, not {agent}'s")
            raw.step(self._checked(agent, actions[agent]))
        rewards = {agent: raw.rewards[agent] * self.reward_scale for agent in self.possible_agents}
        terminations = {agent: raw.terminations[agent] for agent in self.possible_agents}
        truncations = {agent: raw.truncations[agent] for agent in self.possible_agents}
        infos = {agent: dict(raw.infos[agent]) for agent in self.possible_agents}
        return self._observe(), rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        if self._obs is None:
            raise RuntimeError("state() before reset()")
        return np.concatenate([self._obs[agent] for agent in self.possible_agents])

    def close(self) -> None:
        self.raw_env.close()


# -- exact resume -------------------------------------------------------------------------------

_LIVE_ATTRIBUTES = frozenset({"state", "action", "action_callback"})
"""Entity attributes that are not per-episode values: the physical state (saved separately), the
action (rebuilt from the policy's action every step) and scripted-agent callbacks (none here)."""


def _plain(value: Any, where: str) -> Any:
    """``value`` as a saveable copy (arrays, Python scalars, None, and lists/tuples of them), or
    a TypeError naming it: a value of another kind would make the resume inexact, silently."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item, f"{where}[{i}]") for i, item in enumerate(value))
    raise TypeError(f"cannot save {where} ({type(value).__name__}): exact resume unsupported")


def _entity_values(entity: Any, index: dict[int, int]) -> dict[str, Any]:
    """An entity's physical state and attributes; references to entities become indices."""
    from mpe2._mpe_utils.core import Entity

    values: dict[str, Any] = {}
    refs: dict[str, int] = {}
    for name, value in vars(entity).items():
        if name in _LIVE_ATTRIBUTES:
            continue
        if isinstance(value, Entity):
            refs[name] = index[id(value)]
        else:
            values[name] = _plain(value, f"{entity.name}.{name}")
    state = {
        name: _plain(value, f"{entity.name}.state.{name}")
        for name, value in vars(entity.state).items()
    }
    return {"values": values, "refs": refs, "state": state}


def _copy(value: Any) -> Any:
    """A saved value, copied so that the env's in-place updates do not reach the saved state."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(item) for item in value)
    return value


def _get_sim_state(env: MPEParallelEnv) -> dict[str, Any]:
    """Everything an mpe2 episode's future depends on.

    Per entity (agents, then landmarks): position, velocity, message, and every attribute (goals,
    colours, carried/alive/type of collect_treasure), other entities as indices. The scenario's
    own variables (formation slots, curriculum stage, ...), the env's ``np_random`` (resets) and,
    where a scenario keeps one, the world's (collect_treasure's respawns). The scenarios here
    draw nothing from numpy's global RNG (they set no action noise).
    """
    raw = env.raw_env
    world = raw.world
    entities = world.entities
    index = {id(entity): i for i, entity in enumerate(entities)}
    world_rng = getattr(world, "_np_random", None)
    return {
        "steps": int(raw.steps),
        "names": [entity.name for entity in entities],
        "entities": [_entity_values(entity, index) for entity in entities],
        "scenario": {
            name: _plain(value, f"scenario.{name}") for name, value in vars(raw.scenario).items()
        },
        "np_random": raw.np_random.bit_generator.state,
        "world_np_random": None if world_rng is None else world_rng.bit_generator.state,
    }


def _set_sim_state(env: MPEParallelEnv, state: dict[str, Any]) -> None:
    raw = env.raw_env
    # A reset first: it sets up the AEC bookkeeping (rewards, flags, agent order) of an env that
    # may never have been reset; everything it draws is overwritten below.
    raw.reset()
    world = raw.world
    entities = world.entities
    names = [entity.name for entity in entities]
    if list(state["names"]) != names:
        raise ValueError(f"MPE state of entities {list(state['names'])}, this world has {names}")
    if set(state["scenario"]) != set(vars(raw.scenario)):
        raise ValueError(
            f"MPE scenario state with variables {sorted(state['scenario'])}, this scenario has "
            f"{sorted(vars(raw.scenario))}"
        )
    for entity, saved in zip(entities, state["entities"]):
        for name, value in saved["values"].items():
            setattr(entity, name, _copy(value))
        for name, i in saved["refs"].items():
            setattr(entity, name, entities[int(i)])
        for name, value in saved["state"].items():
            setattr(entity.state, name, _copy(value))
    for name, value in state["scenario"].items():
        setattr(raw.scenario, name, _copy(value))
    raw.np_random.bit_generator.state = state["np_random"]
    if state["world_np_random"] is not None:
        world._np_random.bit_generator.state = state["world_np_random"]
    raw.steps = int(state["steps"])
    env._observe()


MPE_STATE_HOOKS = SimStateHooks(get=_get_sim_state, set=_set_sim_state)
"""Reads and writes an :class:`MPEParallelEnv`'s complete state (the adapter's resume hooks)."""


# -- building envs ------------------------------------------------------------------------------


def _scenario_kwargs(task: str, options: Options) -> dict[str, Any]:
    spec = _TASKS[task]
    kwargs: dict[str, Any] = {
        "max_cycles": _NO_LIMIT,
        "continuous_actions": options.continuous_actions,
    }
    if options.n_agents is not None:
        kwargs["N"] = options.n_agents
    if options.local_ratio is not None:
        kwargs["local_ratio"] = options.local_ratio
    if spec.terminates:
        kwargs["terminate_on_success"] = options.terminate_on_success
    return kwargs


def make_single_env(
    task: str, options: Options | None = None, env_index: int = 0
) -> ParallelEnvAdapter:
    """One MPE env as a gymnasium env (what each vector-env worker builds)."""
    options = options or Options()
    task = parse_task(task)
    _check_task_options(task, options)
    module = _import_scenario(_TASKS[task].module)
    raw_env = module.raw_env(**_scenario_kwargs(task, options))
    # mpe2 allocates a 700x700 render surface per env (about 2 MB; haml never renders), and its
    # close() would shut pygame down for every env in the process: drop the surface.
    raw_env.screen = None
    n_agents = len(raw_env.possible_agents)
    scale = float(n_agents) if options.team_reward == "sum" else 1.0
    return ParallelEnvAdapter(
        MPEParallelEnv(raw_env, reward_scale=scale),
        episode_limit=options.max_cycles,
        agent_view=options.agent_view,
        sim_state=MPE_STATE_HOOKS,
        env_index=env_index,
        name=f"{ENV_NAME}/{task}",
    )


def make_vector_env(
    task: str,
    num_envs: int,
    options: Options | None = None,
    device: torch.device | str = "cpu",
    seed: int | None = None,
) -> GymVectorEnv:
    """``num_envs`` copies of an MPE task as a :class:`~haml.envs.base.VectorMultiAgentEnv`.

    Env ``e`` is seeded with ``seed + e`` on the first reset (see :class:`GymVectorEnv`).
    """
    options = options or Options()
    task = parse_task(task)
    _check_task_options(task, options)  # a bad combination fails here, not in every worker
    _import_scenario(_TASKS[task].module)  # a missing package fails here with the pip hint
    return make_gym_vector_env(
        functools.partial(make_single_env, task, options), num_envs, options,
        env=ENV_NAME, task=task, device=device, seed=seed, episode_limit=options.max_cycles,
    )
