"""The StarCraft Multi-Agent Challenge (SMAC): oxwhirl's ``smac`` package, on StarCraft II.

A task is a SMAC map (``"3m"``, ``"2s3z"``, ``"MMM2"``, ...; :data:`TASKS`). Every allied unit is
an agent with ``Discrete`` actions (0 no-op, 1 stop, 2-5 move north/south/east/west, then one
attack (or, for a Medivac, heal) action per target); the team shares one reward; the global state
is ``get_state()``. What reaches haml (:class:`~haml.envs.base.EnvStep`):

- ``obs``: each agent's ``get_obs()`` row (zeros while it is dead), followed by its one-hot agent
  id with ``Options.agent_id``;
- ``action_masks``: ``get_avail_actions()``, per agent ``[E, n_actions]`` bool;
- ``active_masks``: whether each agent is alive, **from the unit's health**
  (``get_unit_by_id(i).health > 0``, the test SMAC itself applies to decide that a unit may only
  no-op). Only an env without ``get_unit_by_id`` falls back to the available actions: a dead
  agent's only available action is the no-op (action 0), while a living one can always stop
  (action 1), so "only the no-op" and "dead" are the same thing in SMAC;
- ``terminated`` when the battle ends (won, lost, or both sides dead); ``truncated`` at the map's
  time limit. StarCraft2Env reports both as ``terminated=True`` and flags the time limit in
  ``info["episode_limit"]`` only with ``continuing_episode=True``, so a time limit is recognised
  by that flag *or* by the env's ``timeouts`` counter going up (what HARL checks). A step after
  which SMAC had to restart a crashed game (it returns ``(0, True, {})``, no ``"battle_won"``)
  counts as truncated: the episode was cut, not decided;
- episode metrics: ``win`` (1.0/0.0, ``info["battle_won"]`` of the last step) and, where the
  installed smac reports them, ``dead_allies``/``dead_enemies``.

Each env runs its own StarCraft II process (launched by its first reset), stepped from a gymnasium
vector env worker (:class:`~haml.envs.vector.GymVectorEnv`; SAME_STEP autoreset: the true last
observation of an ended episode is ``final_obs``).

Seeding: SC2 takes its random seed only when the game is launched. The first ``reset(seed)``
launches env ``e`` with ``seed + e``; a later ``reset(seed)`` closes the running game and launches
a new one with that seed (seconds per env), so that seeded resets mean the same thing as for the
other families. Automatic resets between episodes restart the episode in the running game.
StarCraft II cannot save a running game, so :meth:`StarCraftVectorEnv.state_dict` raises
``NotImplementedError`` (a resumed run starts from fresh envs).

The StarCraft2Env is built by ``Options.env_factory`` (tests pass a fake); the default imports
``smac`` only then. PyPI's ``smac`` is SMAC3, an unrelated hyperparameter optimiser: the real
package comes from GitHub (docs/envs/smac.md), and the error says so when SMAC3 is what is
installed. :mod:`haml.envs.smacv2` reuses everything here for SMACv2.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import gymnasium
import numpy as np
import torch

from haml.envs.base import require_num_envs
from haml.envs.gym_adapter import ParallelEnvAdapter
from haml.envs.vector import (
    GymVectorEnv,
    check_vector_options,
    make_gym_vector_env,
)

__all__ = [
    "DIFFICULTIES",
    "TASKS",
    "Options",
    "StarCraftParallelEnv",
    "StarCraftVectorEnv",
    "build_oxwhirl_env",
    "check_sc2_installed",
    "check_task",
    "default_smac_env",
    "env_kwargs",
    "import_oxwhirl_env_class",
    "import_smac_env_class",
    "make_single_env",
    "make_starcraft_adapter",
    "make_starcraft_vector_env",
    "make_vector_env",
    "parse_absl_flags",
]

ENV_NAME = "smac"

TASKS: tuple[str, ...] = (
    "3m",
    "8m",
    "25m",
    "5m_vs_6m",
    "8m_vs_9m",
    "10m_vs_11m",
    "27m_vs_30m",
    "MMM",
    "MMM2",
    "2s3z",
    "3s5z",
    "3s5z_vs_3s6z",
    "3s_vs_3z",
    "3s_vs_4z",
    "3s_vs_5z",
    "1c3s5z",
    "2m_vs_1z",
    "corridor",
    "6h_vs_8z",
    "2s_vs_1sc",
    "so_many_baneling",
    "bane_vs_bane",
    "2c_vs_64zg",
)
"""The SMAC maps (smac's ``smac_maps.py``; units, enemies and time limits in docs/envs/smac.md)."""

DIFFICULTIES: tuple[str, ...] = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "A")
"""The built-in AI's difficulty levels (``"7"``: VeryHard, SMAC's default and benchmark level)."""

SMAC_GITHUB = "git+https://github.com/oxwhirl/smac.git"
SMACV2_GITHUB = "git+https://github.com/oxwhirl/smacv2.git"

_VECTORIZATIONS = ("auto", "async", "sync")


@dataclass(frozen=True)
class Options:
    """SMAC options (``haml.envs.make_env("smac", map_name, **options)``).

    The fields from ``step_mul`` to ``debug`` are StarCraft2Env's own constructor arguments, with
    its defaults (its docstring has the details); ``env_kwargs`` passes any other.
    """

    agent_id: bool = False
    """Append each agent's one-hot id to its observation (a parameter-shared policy needs it to
    tell agents apart; haml's heterogeneous agents have a network each)."""
    step_mul: int | None = None
    """Game steps per agent step; None: the env's default (8)."""
    move_amount: float = 2.0
    """How far a move action orders a unit."""
    difficulty: str = "7"
    """The built-in AI's difficulty, one of :data:`DIFFICULTIES` ("7": VeryHard)."""
    game_version: str | None = None
    """StarCraft II version to run (None: the installed one)."""
    obs_all_health: bool = True
    """Observations include the health (and shield) of every unit in sight."""
    obs_own_health: bool = True
    """Observations include the agent's own health (implied by obs_all_health)."""
    obs_last_action: bool = False
    """Observations include the last actions of the allies in sight."""
    obs_pathing_grid: bool = False
    """Observations include the pathing grid around the agent."""
    obs_terrain_height: bool = False
    """Observations include the terrain height around the agent."""
    obs_instead_of_state: bool = False
    """The global state is all agents' observations concatenated."""
    state_last_action: bool = True
    """The global state includes every agent's last action."""
    reward_sparse: bool = False
    """Reward only +1/-1 for winning/losing (the other reward options are then ignored)."""
    reward_only_positive: bool = True
    """Reward only damage dealt and kills (no penalty for damage and deaths taken)."""
    reward_death_value: float = 10.0
    """Reward per enemy killed (and, without reward_only_positive, penalty per ally lost)."""
    reward_win: float = 200.0
    """Reward for winning the battle."""
    reward_defeat: float = 0.0
    """Reward for losing the battle (<= 0)."""
    reward_negative_scale: float = 0.5
    """Scale of the penalties (without reward_only_positive)."""
    reward_scale: bool = True
    """Divide rewards by max_reward / reward_scale_rate (the most a team can earn, about
    reward_scale_rate per episode)."""
    reward_scale_rate: float = 20.0
    """See reward_scale."""
    replay_dir: str = ""
    """Where StarCraft II saves replays ("": its Replays folder)."""
    replay_prefix: str = ""
    """Replay file name prefix ("": the map name)."""
    debug: bool = False
    """StarCraft2Env logs observations, actions and rewards."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Further StarCraft2Env keyword arguments (e.g. ``window_size_x``), passed as they are; a
    key that is an option above is an error (set the option)."""
    sc2_path: str | None = None
    """The StarCraft II installation (sets ``SC2PATH`` for this process and its env workers);
    None: ``SC2PATH`` from the environment, else pysc2's default (``~/StarCraftII`` on Linux)."""
    vectorization: Literal["auto", "async", "sync"] = "auto"
    """"async": one worker process per env (each drives its own StarCraft II process, so the
    games advance in parallel); "sync": all envs from this process, one game after the other;
    "auto": async when num_envs > 1."""
    step_timeout: float | None = 300.0
    """Seconds an async step/reset may take before the workers are declared stuck (None: wait
    forever). A step is tens of milliseconds of StarCraft II (seconds with many games on few
    cores), but the first reset launches every env's game at once and SMAC relaunches a crashed
    game inside a step, each tens of seconds or more on a loaded machine: 300 s."""
    start_method: str | None = None
    """multiprocessing start method of the async workers (None: the platform's default)."""
    max_concurrency: int | None = None
    """Async only: at most this many workers step at once (None: all)."""
    env_factory: Callable[..., Any] | None = None
    """Builds the StarCraft2Env-API env from StarCraft2Env's keyword arguments (``map_name``,
    ``seed``, ...). None: ``smac.env.StarCraft2Env``. Tests pass a fake; it must be picklable
    (a module-level class or function) for async vectorisation."""

    _ENV_KWARG_FIELDS: ClassVar[tuple[str, ...]] = (
        "step_mul",
        "move_amount",
        "difficulty",
        "game_version",
        "obs_all_health",
        "obs_own_health",
        "obs_last_action",
        "obs_pathing_grid",
        "obs_terrain_height",
        "obs_instead_of_state",
        "state_last_action",
        "reward_sparse",
        "reward_only_positive",
        "reward_death_value",
        "reward_win",
        "reward_defeat",
        "reward_negative_scale",
        "reward_scale",
        "reward_scale_rate",
        "replay_dir",
        "replay_prefix",
        "debug",
    )
    """The options passed to StarCraft2Env under their own names."""
    _SET_BY_FAMILY: ClassVar[tuple[str, ...]] = ("map_name", "seed")
    """StarCraft2Env arguments the family sets itself (never in ``env_kwargs``)."""

    def __post_init__(self) -> None:
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(
                f"difficulty must be one of {list(DIFFICULTIES)}, got {self.difficulty!r}"
            )
        if self.step_mul is not None and self.step_mul < 1:
            raise ValueError(f"step_mul must be >= 1 or None, got {self.step_mul}")
        if self.move_amount <= 0:
            raise ValueError(f"move_amount must be > 0, got {self.move_amount}")
        if self.reward_scale_rate <= 0:
            raise ValueError(f"reward_scale_rate must be > 0, got {self.reward_scale_rate}")
        if self.reward_defeat > 0:
            raise ValueError(f"reward_defeat must be <= 0, got {self.reward_defeat}")
        if not isinstance(self.env_kwargs, dict) or not all(
            isinstance(key, str) for key in self.env_kwargs
        ):
            raise TypeError(f"env_kwargs must be a dict with string keys, got {self.env_kwargs!r}")
        reserved = {*self._SET_BY_FAMILY, *self._ENV_KWARG_FIELDS}
        clashing = sorted(reserved & set(self.env_kwargs))
        if clashing:
            raise ValueError(
                f"env_kwargs: {', '.join(map(repr, clashing))} cannot be given here: set the "
                f"option of that name (the task and the vector env set "
                f"{', '.join(self._SET_BY_FAMILY)})"
            )
        if self.sc2_path is not None and not self.sc2_path:
            raise ValueError("sc2_path must be a directory or None, got ''")
        check_vector_options(
            self.vectorization, _VECTORIZATIONS, self.step_timeout, self.start_method,
            self.max_concurrency,
        )
        if self.env_factory is not None and not callable(self.env_factory):
            raise TypeError(f"env_factory must be callable or None, got {self.env_factory!r}")


def env_kwargs(options: Options) -> dict[str, Any]:
    """StarCraft2Env's keyword arguments from ``options``, less ``map_name`` and ``seed``.

    ``None`` values are left out, so that the env's own default applies (``step_mul``).
    """
    kwargs = {
        name: getattr(options, name)
        for name in options._ENV_KWARG_FIELDS
        if getattr(options, name) is not None
    }
    return {**kwargs, **options.env_kwargs}


# -- importing smac ---------------------------------------------------------------------------


def _package_dirs(package: str) -> list[str] | None:
    """The directories of the top-level ``package`` (None: not installed), without importing it
    (SMAC3's ``__init__`` imports half of its dependencies)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    return list(spec.submodule_search_locations or [])


def _has_subpackage(dirs: list[str], name: str) -> bool:
    return any(os.path.exists(os.path.join(folder, name)) for folder in dirs)


def _install_hint(github: str) -> str:
    return (
        f'pip install "{github}" (and StarCraft II with the SMAC maps: see docs/envs/smac.md)'
    )


def _smac_import_problem(package: str, github: str, err: Exception | None = None) -> str:
    """Why ``{package}.env`` (oxwhirl's env classes) cannot be imported, with the fix."""
    dirs = _package_dirs(package)
    if dirs is None:
        return f"oxwhirl's {package!r} package is not installed: {_install_hint(github)}"
    if not _has_subpackage(dirs, "env"):
        if package == "smac" and _has_subpackage(dirs, "facade"):
            try:
                version = f" {importlib.metadata.version('smac')}"
            except importlib.metadata.PackageNotFoundError:
                version = ""
            return (
                f"the installed 'smac'{version} is SMAC3 (Sequential Model-based Algorithm "
                "Configuration, a hyperparameter optimiser; PyPI's 'smac'), not oxwhirl's "
                "StarCraft Multi-Agent Challenge. Uninstall it (pip uninstall smac) and install "
                f"oxwhirl's smac from GitHub: {_install_hint(github)}"
            )
        return (
            f"the installed {package!r} package ({dirs[0] if dirs else '?'}) has no "
            f"'{package}.env': it is not oxwhirl's StarCraft Multi-Agent Challenge. Install the "
            f"real one from GitHub: {_install_hint(github)}"
        )
    return (
        f"importing {package}.env failed ({type(err).__name__}: {err}); its dependencies "
        f"(pysc2, s2clientprotocol, absl-py) may be missing: pip install \"haml[smac]\", or "
        f"reinstall {package}: {_install_hint(github)}"
    )


def import_oxwhirl_env_class(package: str, github: str, class_name: str) -> type:
    """``{package}.env.{class_name}`` from oxwhirl's ``package`` (``smac``, ``smacv2``), or an
    ``ImportError`` that says what to install (naming SMAC3 when PyPI's unrelated ``smac`` is
    what is installed)."""
    dirs = _package_dirs(package)
    if dirs is None or not _has_subpackage(dirs, "env"):
        raise ImportError(_smac_import_problem(package, github))
    try:
        return getattr(importlib.import_module(f"{package}.env"), class_name)
    except (ImportError, AttributeError) as err:
        raise ImportError(_smac_import_problem(package, github, err)) from err


def import_smac_env_class() -> type:
    """oxwhirl's ``smac.env.StarCraft2Env`` (see :func:`import_oxwhirl_env_class`)."""
    return import_oxwhirl_env_class("smac", SMAC_GITHUB, "StarCraft2Env")


def parse_absl_flags() -> None:
    """pysc2 reads absl flags when it launches the game and fails if they were never parsed
    (``UnparsedFlagAccessError``): parse the defaults, unless the program already did."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS([sys.argv[0] if sys.argv else "haml"], known_only=True)


def check_sc2_installed() -> None:
    """A clear error before pysc2's own when StarCraft II is not where it will look.

    Checked where the place is known: ``SC2PATH`` when set, ``~/StarCraftII`` on Linux (on macOS
    and Windows pysc2 also searches the standard install locations).
    """
    path = os.environ.get("SC2PATH")
    if path is None and sys.platform.startswith("linux"):
        path = os.path.expanduser("~/StarCraftII")
    if path is not None and not os.path.isdir(path):
        raise FileNotFoundError(
            f"StarCraft II is not installed at {path!r}: install the Linux build and the SMAC "
            "maps (docs/envs/smac.md), then set SC2PATH or the sc2_path option to its folder"
        )


def build_oxwhirl_env(env_class: type, kwargs: dict[str, Any]) -> Any:
    """``env_class(**kwargs)`` once StarCraft II is known to be there and pysc2 can run."""
    check_sc2_installed()
    parse_absl_flags()
    return env_class(**kwargs)


def default_smac_env(**kwargs: Any) -> Any:
    """``smac.env.StarCraft2Env(**kwargs)`` (the default ``Options.env_factory``)."""
    return build_oxwhirl_env(import_smac_env_class(), kwargs)


# -- one env ----------------------------------------------------------------------------------


def _dead_only_noop(avail: np.ndarray) -> np.ndarray:
    """Per agent: whether its only available action is the no-op (action 0), SMAC's mark of a
    dead agent."""
    return (avail[:, 0] == 1) & (avail[:, 1:].sum(axis=1) == 0)


class StarCraftParallelEnv:
    """A StarCraft2Env-API env (SMAC or SMACv2) as a PettingZoo-style parallel env with ``state()``,
    which :class:`~haml.envs.gym_adapter.ParallelEnvAdapter` turns into a gymnasium env.

    Args:
        build: ``build(seed)`` returns a new, not yet launched StarCraft2Env-API env seeded with
            ``seed`` (None: unseeded).
        agent_id: append each agent's one-hot id to its observation.
        name: the task, named in error messages.

    After every reset and step it caches the available actions and the alive flags
    (:attr:`avail_actions`, :attr:`alive`) and keeps the env's last ``info`` (:attr:`last_info`).
    """

    def __init__(self, build: Callable[[int | None], Any], *, agent_id: bool, name: str) -> None:
        self._build = build
        self.name = name
        self.env = build(None)
        self._seed: int | None = None
        self._launched = False
        info = self.env.get_env_info()
        self.n_agents = int(info["n_agents"])
        self.n_actions = int(info["n_actions"])
        self.episode_limit = int(info["episode_limit"])
        self.agent_id = agent_id
        self.possible_agents = [f"agent_{i}" for i in range(self.n_agents)]
        obs_dim = int(info["obs_shape"]) + (self.n_agents if agent_id else 0)
        self._obs_space = gymnasium.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self._action_space = gymnasium.spaces.Discrete(self.n_actions)
        self.state_space = gymnasium.spaces.Box(
            -np.inf, np.inf, (int(info["state_shape"]),), np.float32
        )
        self._one_hot = np.eye(self.n_agents, dtype=np.float32)
        self.avail_actions = np.zeros((self.n_agents, self.n_actions), dtype=np.int8)
        self.alive = np.zeros(self.n_agents, dtype=bool)
        self.last_info: dict[str, Any] = {}
        self._timeouts: int | None = None

    # -- the parallel-env API used by ParallelEnvAdapter --------------------------------------

    def observation_space(self, agent: str) -> gymnasium.spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> gymnasium.spaces.Discrete:
        return self._action_space

    def state(self) -> np.ndarray:
        return np.asarray(self.env.get_state(), dtype=np.float32)

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        if seed is not None and (self._launched or seed != self._seed):
            # SC2 takes its seed only at launch: a seeded reset starts a new game.
            self.env.close()
            self.env = self._build(seed)
            self._seed = seed
            self._launched = False
        # The return value is not used: SMACv2's wrapper returns None when it had to retry.
        self.env.reset()
        self._launched = True
        self._timeouts = self._timeout_count()
        self.last_info = {}
        self._refresh()
        return self._observations(), {agent: {} for agent in self.possible_agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict[str, np.ndarray], ...]:
        joint = [int(actions[agent]) for agent in self.possible_agents]
        for i, action in enumerate(joint):
            if not 0 <= action < self.n_actions or not self.avail_actions[i, action]:
                raise ValueError(
                    f"agent {i} chose action {action}, which is not available (available: "
                    f"{np.flatnonzero(self.avail_actions[i]).tolist()})"
                )
        reward, ended, info = self.env.step(joint)
        info = dict(info or {})
        terminated = truncated = False
        if ended:
            timeouts = self._timeout_count()
            timed_out = bool(info.get("episode_limit", False)) or (
                timeouts is not None and self._timeouts is not None and timeouts > self._timeouts
            )
            crashed = "battle_won" not in info  # SMAC restarted a crashed game: (0, True, {})
            truncated = timed_out or crashed
            terminated = not truncated
            self._timeouts = timeouts
        self.last_info = info
        self._refresh()
        agents = self.possible_agents
        return (
            self._observations(),
            {agent: float(reward) for agent in agents},
            {agent: terminated for agent in agents},
            {agent: truncated for agent in agents},
            {agent: {} for agent in agents},
        )

    def close(self) -> None:
        self.env.close()

    # -- helpers ------------------------------------------------------------------------------

    def _timeout_count(self) -> int | None:
        count = getattr(self.env, "timeouts", None)
        return None if count is None else int(count)

    def _refresh(self) -> None:
        """Cache the available actions and alive flags of the current game state."""
        avail = np.asarray(self.env.get_avail_actions(), dtype=np.int8)
        if avail.shape != (self.n_agents, self.n_actions):
            raise ValueError(
                f"{self.name}: get_avail_actions() has shape {avail.shape}, expected "
                f"({self.n_agents}, {self.n_actions})"
            )
        self.avail_actions = avail
        get_unit = getattr(self.env, "get_unit_by_id", None)
        if get_unit is not None:
            self.alive = np.array(
                [get_unit(i).health > 0 for i in range(self.n_agents)], dtype=bool
            )
        else:
            self.alive = ~_dead_only_noop(avail)

    def _observations(self) -> dict[str, np.ndarray]:
        obs = np.asarray(self.env.get_obs(), dtype=np.float32).reshape(self.n_agents, -1)
        if self.agent_id:
            obs = np.concatenate([obs, self._one_hot], axis=1)
        return {agent: obs[i] for i, agent in enumerate(self.possible_agents)}


def _available_actions(env: StarCraftParallelEnv) -> np.ndarray:
    return env.avail_actions


def _alive_flags(env: StarCraftParallelEnv) -> np.ndarray:
    return env.alive


def _episode_metrics(env: StarCraftParallelEnv) -> dict[str, float]:
    """``win`` and, where the env reports them, ``dead_allies``/``dead_enemies``."""
    info = env.last_info
    metrics = {"win": float(bool(info.get("battle_won", False)))}
    for key in ("dead_allies", "dead_enemies"):
        if key in info:
            metrics[key] = float(info[key])
    return metrics


def _build_env(factory: Callable[..., Any], kwargs: dict[str, Any], seed: int | None) -> Any:
    # A deep copy per env: SMACv2's wrapper writes into its capability_config.
    return factory(**copy.deepcopy(kwargs), seed=seed)


def _set_sc2_path(options: Options) -> None:
    if options.sc2_path is not None:
        os.environ["SC2PATH"] = os.path.expanduser(options.sc2_path)


def make_starcraft_adapter(
    env_name: str,
    task: str,
    kwargs: dict[str, Any],
    factory: Callable[..., Any],
    options: Options,
    env_index: int = 0,
) -> ParallelEnvAdapter:
    """One StarCraft2Env-API env as a gymnasium env (what each vector-env worker builds).

    ``kwargs``: the env's constructor arguments except ``seed``; ``factory(**kwargs, seed=...)``
    builds it.
    """
    _set_sc2_path(options)
    name = f"{env_name}/{task}"
    parallel_env = StarCraftParallelEnv(
        functools.partial(_build_env, factory, kwargs), agent_id=options.agent_id, name=name
    )
    return ParallelEnvAdapter(
        parallel_env,
        episode_limit=None,  # the env has its own, reported as truncation (see the module doc)
        agent_view="local",
        episode_metrics=_episode_metrics,
        action_masks=_available_actions,
        active_masks=_alive_flags,
        env_index=env_index,
        name=name,
    )


class StarCraftVectorEnv(GymVectorEnv):
    """:class:`GymVectorEnv` of StarCraft II envs, which cannot save a running game."""

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError(
            f"{self.spec.env}/{self.spec.task}: StarCraft II cannot save a running game, so "
            "these envs cannot be saved exactly (a resumed run starts from freshly reset envs)"
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError(
            f"{self.spec.env}/{self.spec.task}: StarCraft II cannot restore a saved game"
        )


def make_starcraft_vector_env(
    env_name: str,
    task: str,
    num_envs: int,
    options: Options,
    kwargs: dict[str, Any],
    factory: Callable[..., Any],
    device: torch.device | str = "cpu",
    seed: int | None = None,
) -> StarCraftVectorEnv:
    """``num_envs`` StarCraft2Env-API envs built by ``factory(**kwargs, seed=...)`` as one
    :class:`~haml.envs.base.VectorMultiAgentEnv` (shared by the ``smac`` and ``smacv2`` families).
    """
    require_num_envs(num_envs)
    if options.sc2_path is not None and not os.path.isdir(os.path.expanduser(options.sc2_path)):
        raise ValueError(f"sc2_path: no such directory {options.sc2_path!r}")
    _set_sc2_path(options)
    # One env built here, never launched: a missing package, a bad keyword argument or a missing
    # StarCraft II fails once, in this process, and the time limit is known for the spec.
    probe = _build_env(factory, kwargs, None)
    try:
        episode_limit = int(probe.get_env_info()["episode_limit"])
    finally:
        probe.close()
    return make_gym_vector_env(
        functools.partial(make_starcraft_adapter, env_name, task, kwargs, factory, options),
        num_envs, options, env=env_name, task=task, device=device, seed=seed,
        episode_limit=episode_limit, vector_class=StarCraftVectorEnv,
    )


# -- the smac family ----------------------------------------------------------------------------


def check_task(task: str, tasks: Sequence[str], family: str) -> None:
    """``task`` must be one of ``tasks``: a ``ValueError`` listing them otherwise."""
    if task not in tasks:
        raise ValueError(f"unknown {family} task {task!r}; known tasks: {', '.join(tasks)}")


def _smac_env_kwargs(task: str, options: Options) -> dict[str, Any]:
    return {"map_name": task, **env_kwargs(options)}


def make_single_env(
    task: str, options: Options | None = None, env_index: int = 0
) -> ParallelEnvAdapter:
    """One SMAC env as a gymnasium env (what each vector-env worker builds)."""
    options = options or Options()
    check_task(task, TASKS, "SMAC")
    factory = options.env_factory or default_smac_env
    return make_starcraft_adapter(
        ENV_NAME, task, _smac_env_kwargs(task, options), factory, options, env_index
    )


def make_vector_env(
    task: str,
    num_envs: int,
    options: Options | None = None,
    device: torch.device | str = "cpu",
    seed: int | None = None,
) -> StarCraftVectorEnv:
    """``num_envs`` copies of a SMAC map as a :class:`~haml.envs.base.VectorMultiAgentEnv`.

    Env ``e`` is seeded with ``seed + e`` when its game is launched (the first reset).
    """
    options = options or Options()
    check_task(task, TASKS, "SMAC")
    factory = options.env_factory or default_smac_env
    return make_starcraft_vector_env(
        ENV_NAME, task, num_envs, options, _smac_env_kwargs(task, options), factory, device, seed
    )
