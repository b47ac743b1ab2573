"""SMAX: JaxMARL's StarCraft-like micromanagement maps, ``E`` copies stepped by one jitted JAX call.

SMAX (``jaxmarl.environments.smax``, JaxMARL 0.2) re-implements the SMAC unit-vs-unit battles in
JAX: marines, marauders, stalkers, zealots, zerglings and hydralisks on a 32 x 32 open map, with
SMAC-like health, damage, ranges and weapon cooldowns, but its own (simplified) physics, no
terrain, no shields and no StarCraft II. Here the allies are the learning agents and the enemies
play JaxMARL's scripted heuristic (:class:`~jaxmarl.environments.smax.HeuristicEnemySMAX`: shoot
the closest enemy in range, else walk towards a visible enemy or across the map), SMAX's
SMAC-like setting. ``docs/envs/smax.md`` is the user's guide.

Tasks (:data:`TASKS`) are the maps of JaxMARL's ``map_name_to_scenario``: the SMAC names (``3m``,
``2s3z``, ``5m_vs_6m``, ...) and the SMACv2-style ``smacv2_*_units`` (random unit types and
surrounded / reflected start positions every episode). A scenario registered with jaxmarl's
``register_scenario`` is accepted too.

What an agent sees and does (per ally ``i``):

- **observation**: SMAX's ``unit_list`` (13 features for each other unit: health, relative
  position / sight range, last move, last target, cooldown, unit type; then 10 of its own), or
  ``conic`` (units binned by angle); all zeros once the unit is dead. ``agent_id=True`` appends
  the one-hot agent id (the observation grows by ``n_agents``).
- **state**: SMAX's ``world_state``: per unit health, absolute position, raw weapon cooldown and
  unit type (zeros when dead), then every unit's team and type. The raw cooldown keeps falling
  below zero while a unit does not fire (-0.5 per step), so the state is not bounded.
- **actions** (``Discrete(n_enemies + 5)``): 0-3 move north / east / south / west, 4 stop,
  ``5 + j`` attack enemy ``j``. This is SMAX's order, not SMAC's (SMAC: 0 no-op, 1 stop, 2-5 move,
  6+ attack). **Masks**: moves and stop for a living unit, attacks on living enemies in range; a
  dead unit has only "stop" (4), its no-op. An unavailable action is a ``ValueError``.
  ``active_masks[i]`` is True while ally ``i`` is alive at the returned observation.
- **reward** (team, ``[E]``): SMAX gives every ally the same number: the enemies' summed health
  lost this step divided by their (per type) maximum health and by the number of enemies (so the
  damage part sums to 1 over a whole battle), plus ``won_battle_bonus`` (1) when the last enemy
  falls with an ally still alive. Episode returns therefore lie in ``[0, 1 + bonus]`` (SMAC's
  scaled reward is 0-20).
- **episodes** end when one side is eliminated (``terminated``) or after ``episode_limit``
  steps with both sides alive (``truncated``). SMAX's own ``done`` mixes both, and fires one
  step late on the time limit (it compares the step counter before incrementing it, so its
  ``max_steps=100`` episodes last 101 steps): the adapter derives both flags from the unit
  flags and the step counter itself, and truncates after exactly ``episode_limit`` steps.
  ``EpisodeStats.metrics["win"]`` is 1.0 when every enemy is dead and an ally is alive (SMAX's
  won battle; both sides wiped out in one step is a draw, 0.0), else 0.0.

Vectorisation: one ``jax.jit(jax.vmap(...))`` program advances all ``E`` envs (step, automatic
reset of the ended ones, masks, packing), then one device→host copy of one flat float32 buffer
and one numpy→torch conversion; the tensors of the :class:`~haml.envs.base.EnvStep` are views of
that buffer on the env's ``device`` (the agent id, if asked for, is appended there). The reset
is done here (``step_env`` + ``reset`` + ``jnp.where``), not by jaxmarl's auto-resetting
``step``, so that ``final_obs``/``final_state`` are the true last observation of an ended
episode. Resets happen only in a branch taken when an env ended (``lax.cond`` on the batch).

Costs (numbers in docs/BENCHMARKS.md, "Environment adapters"):

- jax and jaxmarl are imported when the first env is built (seconds);
- the program is compiled by the first ``reset()`` of a (map, simulator options, ``E``) in a
  process (seconds, more for larger maps). Env objects with the same map, simulator options
  and ``E`` share the program; ``agent_id`` and ``episode_limit`` are applied outside it and
  compile nothing. JAX's persistent cache (``JAX_COMPILATION_CACHE_DIR=<dir>``) shortens a
  later process's first reset;
- each step adds to the program's own time a host sync, the copy to torch and the action
  checks, which weigh most at small batches: :func:`jax_random_steps_per_second` times the
  same program stepped in JAX alone, the reference ``haml bench train --env smax`` compares to.

Seeding: ``reset(seed)`` gives env ``e`` the key ``jax.random.PRNGKey(seed + e)``; every later
step and automatic reset splits that env's own key, so a run is a function of the seed alone.
(Without ``jax_enable_x64``, JAX keeps only the low 32 bits of a seed: ``2**32 + 1`` acts as 1.)
``state_dict()`` holds the keys, the whole JAX state and the episode bookkeeping (torch tensors
and plain Python: ``torch.load(weights_only=True)`` reads it), and a restored env continues
exactly as the saved one would have.

``import haml.envs.smax`` imports neither jax nor jaxmarl: they are imported when an env is built.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import secrets
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from haml.envs.base import WIN_METRIC, EnvSpec, EnvStep, EpisodeStats, EpisodeTracker, require_num_envs
from haml.utils.seeding import check_seed

__all__ = [
    "ACTION_NAMES",
    "action_name",
    "TASKS",
    "Options",
    "SmaxVectorEnv",
    "jax_random_steps_per_second",
    "make_vector_env",
]

ENV_NAME = "smax"

TASKS: tuple[str, ...] = (
    "3m",
    "2s3z",
    "25m",
    "3s5z",
    "8m",
    "5m_vs_6m",
    "10m_vs_11m",
    "27m_vs_30m",
    "3s5z_vs_3s6z",
    "3s_vs_5z",
    "6h_vs_8z",
    "smacv2_5_units",
    "smacv2_10_units",
    "smacv2_20_units",
)
"""The maps of jaxmarl 0.2's ``map_name_to_scenario`` (listed here so that the registry can name
them without importing jax): SMAC's names, then the SMACv2-style maps of random units."""

N_MOVE_ACTIONS = 5
"""SMAX's non-attack actions: move north, east, south, west, and stop."""
STOP_ACTION = 4
"""The "stop" action: always available, the only one of a dead unit."""
ACTION_NAMES: tuple[str, ...] = ("move north", "move east", "move south", "move west", "stop")
"""Names of actions 0-4; action ``5 + j`` is "attack enemy j"."""

_STATE_FORMAT = "haml.envs.smax.SmaxVectorEnv/1"


@dataclass(frozen=True)
class Options:
    """SMAX options (``haml.envs.make_env("smax", task, **options)``); the defaults are
    jaxmarl's own (``SMAX`` / ``HeuristicEnemySMAX``), the same for every map."""

    agent_id: bool = False
    """Append the one-hot agent id to every agent's observation (``obs_dim`` grows by
    ``n_agents``); lets one shared policy act differently per agent."""
    episode_limit: int = 100
    """Steps after which an episode with both sides alive is truncated: SMAX's ``max_steps``
    (jaxmarl's default 100 for every map; SMAC's per-map limits are 60-180). Exactly this many
    steps here; jaxmarl's own ``done`` would come one step later."""
    enemy_shoots: bool = True
    """The heuristic enemies fire (False: they only move, an easy sanity-check setting)."""
    attack_mode: Literal["closest", "random"] = "closest"
    """Which enemy in range a heuristic enemy attacks: the closest (jaxmarl's default) or a
    random one; it keeps its target while that stays in range."""
    see_enemy_actions: bool = True
    """Observations show the enemies' last move and target as well as the allies'."""
    walls_cause_death: bool = True
    """A unit that touches the map's edge dies (SMAX's default)."""
    won_battle_bonus: float = 1.0
    """Reward added when the last enemy dies while an ally lives."""
    observation_type: Literal["unit_list", "conic"] = "unit_list"
    """``unit_list``: a fixed slot per other unit (SMAC-like); ``conic``: units binned into 32
    sectors around the agent, two per sector (size independent of the unit count)."""
    world_steps_per_env_step: int = 8
    """Physics substeps (of 1/16 s) per env step; SMAC's step_mul is 8 game loops too."""

    def __post_init__(self) -> None:
        limit = self.episode_limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"episode_limit must be an integer >= 1, got {limit!r}")
        if self.attack_mode not in ("closest", "random"):
            raise ValueError(f"attack_mode must be one of ['closest', 'random'], got {self.attack_mode!r}")
        if self.observation_type not in ("unit_list", "conic"):
            raise ValueError(
                f"observation_type must be one of ['unit_list', 'conic'], got {self.observation_type!r}"
            )
        if not math.isfinite(self.won_battle_bonus):
            raise ValueError(f"won_battle_bonus must be finite, got {self.won_battle_bonus!r}")
        steps = self.world_steps_per_env_step
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"world_steps_per_env_step must be an integer >= 1, got {steps!r}")

    def simulator_kwargs(self) -> dict[str, Any]:
        """The ``HeuristicEnemySMAX`` keyword arguments these options set. ``agent_id`` and
        ``episode_limit`` are not among them: the adapter applies both itself (the limit is an
        input of the compiled program), so that changing them compiles nothing new."""
        return {
            "enemy_shoots": self.enemy_shoots,
            "attack_mode": self.attack_mode,
            "see_enemy_actions": self.see_enemy_actions,
            "walls_cause_death": self.walls_cause_death,
            "won_battle_bonus": float(self.won_battle_bonus),
            "observation_type": self.observation_type,
            "world_steps_per_env_step": self.world_steps_per_env_step,
        }


# -- jaxmarl ----------------------------------------------------------------------------------


def _import_smax() -> Any:
    """``jaxmarl.environments.smax``, with a clear error when jax/jaxmarl are not installed.

    Importing jaxmarl prints two lines about its optional "submoduled environments" (dropped
    here; anything else it prints is passed on). Its MABrax module also sets ``sys.stdout`` and
    ``sys.stderr`` back to ``sys.__stdout__``/``sys.__stderr__`` while it imports, which would
    undo any redirection in place (pytest's capture, a log tee), so all four are restored.
    """
    if "jaxmarl.environments.smax" in sys.modules:
        return sys.modules["jaxmarl.environments.smax"]
    saved = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    captured = io.StringIO()
    try:
        sys.stdout = sys.__stdout__ = captured  # type: ignore[misc]
        from jaxmarl.environments import smax
    except ImportError as err:
        raise ImportError(f"SMAX needs jax and jaxmarl ({err}): pip install \"haml[smax]\"") from err
    finally:
        sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__ = saved  # type: ignore[misc]
        for line in captured.getvalue().splitlines():
            if "ubmoduled environments" not in line:
                print(line)
    return smax


def _scenario(task: str) -> Any:
    smax = _import_smax()
    try:
        return smax.map_name_to_scenario(task)
    except KeyError:
        from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO

        raise ValueError(
            f"unknown SMAX task {task!r}; known maps: {', '.join(MAP_NAME_TO_SCENARIO)}"
        ) from None


def _check_task(task: Any) -> str:
    """``task`` if it names a SMAX map (checked without jax for the known ones)."""
    if not isinstance(task, str):
        raise ValueError(f"SMAX task must be a map name (str), got {task!r}; known maps: {', '.join(TASKS)}")
    if task not in TASKS:
        _scenario(task)  # a map registered with jaxmarl's register_scenario is fine too
    return task


def _core(task: str, options: Options) -> _SmaxCore:
    """The compiled SMAX programs for ``task`` and the simulator part of ``options``."""
    return _cached_core(task, tuple(sorted(options.simulator_kwargs().items())))


@functools.lru_cache(maxsize=16)
def _cached_core(task: str, simulator_kwargs: tuple[tuple[str, Any], ...]) -> _SmaxCore:
    # One per (task, simulator options) in the process, shared by every env object: jax.jit
    # then keeps one executable per number of envs, compiled by the first call.
    return _SmaxCore(task, dict(simulator_kwargs))


class _SmaxCore:
    """The JAX side: the jaxmarl env and the jitted programs that advance ``E`` copies of it.

    ``advance(keys, state, actions, force_reset, limit) -> (keys, state, packed)``:

    - ``keys`` ``[E, 2]`` uint32 (one PRNG key per env), ``state`` the batched
      ``HeuristicEnemySMAX`` state, ``actions`` ``[E, n]`` int32, ``force_reset`` ``[E]`` bool
      (reset these envs whatever happens; used by :meth:`SmaxVectorEnv.reset`), ``limit`` the
      episode limit (an int32 scalar: a new limit compiles nothing);
    - every env steps (``step_env``: no automatic reset), then envs whose episode ended, or that
      were forced, are replaced by a fresh episode from their own key;
    - ``packed`` is one flat float32 array holding, field after field, each ``[rows, E, width]``
      (:attr:`fields`): obs and state after the reset, the true next obs and state, reward,
      terminated, truncated, won, available actions and alive flags. Observations are SMAX's
      own (no agent id: the adapter appends it).
    """

    def __init__(self, task: str, simulator_kwargs: dict[str, Any]) -> None:
        import jax
        import jax.numpy as jnp

        smax = _import_smax()
        self.env = env = smax.HeuristicEnemySMAX(scenario=_scenario(task), **simulator_kwargs)
        self.agents: tuple[str, ...] = tuple(env.agents)
        self.n_agents = n = int(env.num_allies)
        self.n_enemies = int(env.num_enemies)
        self.n_actions = int(env.num_ally_actions)
        self.obs_dim = int(env.obs_size)
        self.state_dim = int(env.state_size)
        self.fields: tuple[tuple[str, int, int], ...] = (
            # (name, rows, width): the field is [rows, E, width] in the packed buffer
            ("obs", n, self.obs_dim),
            ("state", 1, self.state_dim),
            ("final_obs", n, self.obs_dim),
            ("final_state", 1, self.state_dim),
            ("reward", 1, 1),
            ("terminated", 1, 1),
            ("truncated", 1, 1),
            ("won", 1, 1),
            ("avail", n, self.n_actions),
            ("alive", n, 1),
        )

        def observe(obs: dict[str, Any]) -> tuple[Any, Any]:
            """jaxmarl's obs dict → per-agent ``[n, obs_dim]`` and the world state."""
            per_agent = jnp.stack([obs[agent] for agent in self.agents]).astype(jnp.float32)
            return per_agent, obs["world_state"].astype(jnp.float32)

        def reset_one(key: Any) -> tuple[Any, Any, Any]:
            obs, state = env.reset(key)
            return (_strong(state), *observe(obs))

        def step_one(key: Any, state: Any, actions: Any) -> tuple[Any, ...]:
            key, step_key, reset_key = jax.random.split(key, 3)
            obs, state, rewards, _, _ = env.step_env(
                step_key, state, {agent: actions[i] for i, agent in enumerate(self.agents)}
            )
            team_reward = jnp.mean(jnp.stack([rewards[agent] for agent in self.agents]))
            return (key, reset_key, state, *observe(obs), team_reward)

        def avail_one(state: Any) -> Any:
            avail = env.get_avail_actions(state)
            return jnp.stack([avail[agent] for agent in self.agents]).astype(bool)

        def advance(
            keys: Any, state: Any, actions: Any, force_reset: Any, limit: Any
        ) -> tuple[Any, Any, Any]:
            keys, reset_keys, stepped, step_obs, step_state, reward = jax.vmap(step_one)(
                keys, state, actions
            )
            alive = stepped.state.unit_alive
            allies_dead = ~jnp.any(alive[:, :n], axis=1)
            enemies_dead = ~jnp.any(alive[:, n:], axis=1)
            terminated = allies_dead | enemies_dead
            truncated = (stepped.state.step >= limit) & ~terminated
            won = enemies_dead & ~allies_dead
            restart = terminated | truncated | force_reset

            def with_resets() -> tuple[Any, Any, Any]:
                fresh, fresh_obs, fresh_state = jax.vmap(reset_one)(reset_keys)

                def pick(new: Any, old: Any) -> Any:
                    mask = restart.reshape(restart.shape + (1,) * (old.ndim - 1))
                    return jnp.where(mask, new, old)

                return (
                    jax.tree.map(pick, fresh, stepped),
                    pick(fresh_obs, step_obs),
                    pick(fresh_state, step_state),
                )

            # Most steps end no episode: then the E resets are skipped (on CPU and GPU alike).
            next_state, obs, world_state = jax.lax.cond(
                jnp.any(restart), with_resets, lambda: (stepped, step_obs, step_state)
            )
            avail = jax.vmap(avail_one)(next_state)
            columns = {
                "obs": jnp.swapaxes(obs, 0, 1),
                "state": world_state[None],
                "final_obs": jnp.swapaxes(step_obs, 0, 1),
                "final_state": step_state[None],
                "reward": reward[None, :, None],
                "terminated": terminated[None, :, None],
                "truncated": truncated[None, :, None],
                "won": won[None, :, None],
                "avail": jnp.swapaxes(avail, 0, 1),
                "alive": jnp.swapaxes(next_state.state.unit_alive[:, :n], 0, 1)[..., None],
            }
            packed = jnp.concatenate(
                [columns[name].astype(jnp.float32).reshape(-1) for name, _, _ in self.fields]
            )
            return keys, next_state, packed

        def sample_available(key: Any, packed: Any) -> tuple[Any, Any]:
            """Uniformly random available actions ``[E, n]`` int32, read from ``packed``."""
            avail = self.unpack_avail(packed)  # [n, E, A]
            key, draw = jax.random.split(key)
            logits = jnp.where(avail > 0.5, 0.0, -jnp.inf)
            return key, jax.random.categorical(draw, logits, axis=-1).T.astype(jnp.int32)

        self._reset_one = reset_one
        self.advance = jax.jit(advance)
        self.sample_available = jax.jit(sample_available)

    def packed_size(self, num_envs: int) -> int:
        return sum(rows * num_envs * width for _, rows, width in self.fields)

    def offsets(self, num_envs: int) -> dict[str, tuple[int, int, int, int]]:
        """``name -> (start, rows, E, width)`` of each field in the packed buffer."""
        out, start = {}, 0
        for name, rows, width in self.fields:
            out[name] = (start, rows, num_envs, width)
            start += rows * num_envs * width
        return out

    def unpack_avail(self, packed: Any) -> Any:
        """The ``[n, E, A]`` available-action block of a packed buffer (jax or numpy)."""
        num_envs = self._num_envs_of(packed)
        start, rows, e, width = self.offsets(num_envs)["avail"]
        return packed[start : start + rows * e * width].reshape(rows, e, width)

    def _num_envs_of(self, packed: Any) -> int:
        per_env = self.packed_size(1)
        return int(packed.shape[0]) // per_env

    def initial_keys(self, seed: int, num_envs: int) -> Any:
        """Env ``e``'s key: ``jax.random.PRNGKey(seed + e)``."""
        import jax
        import jax.numpy as jnp

        return jnp.stack([jax.random.PRNGKey(seed + e) for e in range(num_envs)])

    def placeholder_state(self, num_envs: int) -> Any:
        """A batched state of the right shapes and dtypes (all zeros), for a first forced reset."""
        import jax
        import jax.numpy as jnp

        shapes = jax.eval_shape(jax.vmap(self._reset_one), jax.ShapeDtypeStruct((num_envs, 2), jnp.uint32))[0]
        return jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), shapes)

    def reset(self, keys: Any, state: Any, limit: Any) -> tuple[Any, Any, Any]:
        """Every env starts a fresh episode from its own key (the advance program, forced)."""
        import jax.numpy as jnp

        num_envs = int(keys.shape[0])
        actions = jnp.full((num_envs, self.n_agents), STOP_ACTION, dtype=jnp.int32)
        return self.advance(keys, state, actions, jnp.ones((num_envs,), dtype=bool), limit)


def _strong(tree: Any) -> Any:
    """``tree`` with no weakly typed leaves (SMAX's reset makes its step counter one): otherwise
    the first step's output types differ from the reset's and the program is compiled twice."""
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype=jnp.asarray(leaf).dtype), tree)


# -- the vector env ------------------------------------------------------------------------------


class SmaxVectorEnv:
    """``num_envs`` copies of a SMAX map as a :class:`~haml.envs.base.VectorMultiAgentEnv`.

    Args:
        task: a map name (:data:`TASKS`).
        num_envs: ``E``.
        options: :class:`Options` (None: the defaults).
        device: where the returned tensors live (JAX computes on its own default device).
        seed: used by the first :meth:`reset` that is given no seed.
    """

    def __init__(
        self,
        task: str,
        num_envs: int,
        options: Options | None = None,
        device: torch.device | str = "cpu",
        seed: int | None = None,
    ) -> None:
        from gymnasium import spaces

        require_num_envs(num_envs)
        options = Options() if options is None else options
        if not isinstance(options, Options):
            raise TypeError(f"options must be a haml.envs.smax.Options, got {type(options).__name__}")
        seed = check_seed(seed, "SmaxVectorEnv")
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.options = options
        self._core = core = _core(_check_task(task), options)
        n = core.n_agents
        obs_dim = core.obs_dim + (n if options.agent_id else 0)
        # SMAX's bounds (positions are relative to the sight range; the one-hot ids lie inside)
        obs_space = spaces.Box(low=-1.0, high=1.0, shape=(obs_dim,), dtype=np.float32)
        self.spec = EnvSpec(
            env=ENV_NAME,
            task=task,
            n_agents=n,
            obs_spaces=(obs_space,) * n,
            action_spaces=(spaces.Discrete(core.n_actions),) * n,
            state_space=spaces.Box(low=-np.inf, high=np.inf, shape=(core.state_dim,), dtype=np.float32),
            action_masks=True,
            active_masks=True,
            episode_limit=options.episode_limit,
        )
        self._label = f"{ENV_NAME}/{task}"
        self._offsets = core.offsets(num_envs)
        self._pending_seed = seed
        self._keys: Any = None
        self._state: Any = None
        # the packed buffer of the current observation (a JAX array: immutable, so the tensors
        # handed out can be views of a host copy without guarding it)
        self._packed: Any = None
        self._avail: np.ndarray | None = None  # [E, n, A] bool: the masks actions are checked on
        self._episodes = EpisodeTracker(num_envs)
        self._no_reset: Any = None  # see _jax_constants
        self._limit: Any = None
        # with agent_id: agent i's one-hot id, [E, n] on the device, appended to its observation
        self._agent_ids = (
            tuple(torch.eye(n, device=self.device)[i].expand(num_envs, n) for i in range(n))
            if options.agent_id
            else None
        )
        self._closed = False

    # -- the protocol ---------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> EnvStep:
        """Start a fresh episode in every env.

        With a seed (or the constructor's, on the first reset), env ``e``'s key becomes
        ``jax.random.PRNGKey(seed + e)``; without one, every env draws its episode from its own
        key (the first reset of an env built without a seed takes a seed from the OS).
        """
        self._check_open("reset")
        seed = check_seed(seed, f"{self._label}: reset")
        if seed is None and self._pending_seed is not None:
            seed = self._pending_seed
        self._pending_seed = None
        if seed is None and self._keys is None:
            seed = secrets.randbits(31)
        keys = self._keys if seed is None else self._core.initial_keys(seed, self.num_envs)
        state = self._state if self._state is not None else self._core.placeholder_state(self.num_envs)
        _, limit = self._jax_constants()
        self._keys, self._state, packed = self._core.reset(keys, state, limit)
        self._episodes.reset()
        return self._env_step(*self._take(packed), final=False, episodes=[])

    def step(self, actions: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> EnvStep:
        """Step every env with one action index per agent (``[E]`` integer tensors); an env whose
        episode ends is reset within the step (``final_obs``/``final_state`` hold its last
        observation)."""
        self._check_open("step")
        if self._packed is None:
            raise RuntimeError(f"{self._label}: call reset() (or load_state_dict) before step()")
        chosen = self._validated_actions(actions)
        no_reset, limit = self._jax_constants()
        # numpy straight into the jitted call: its C++ path copies it in far faster than
        # jnp.asarray, whose per-call cost exceeds the step itself
        self._keys, self._state, packed = self._core.advance(self._keys, self._state, chosen, no_reset, limit)
        host, fields = self._take(packed)
        reward = fields["reward"][0, :, 0].numpy()
        terminated = fields["terminated"][0, :, 0].numpy() > 0.5
        truncated = fields["truncated"][0, :, 0].numpy() > 0.5
        won = fields["won"][0, :, 0].numpy()
        episodes = self._episodes.step(
            reward, terminated | truncated, lambda e: {WIN_METRIC: float(won[e])}
        )
        return self._env_step(host, fields, final=True, episodes=episodes)

    def current(self) -> EnvStep:
        """The envs' current observation as an :class:`EnvStep` (reward 0, no episode ended):
        what :meth:`reset` returns, and after :meth:`load_state_dict` the observation to act on.
        (Not part of the protocol.)"""
        if self._packed is None:
            raise RuntimeError(f"{self._label}: no current observation; call reset() first")
        host = self._host_copy(self._packed)
        return self._env_step(host, self._views(host), final=False, episodes=[])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: each env's PRNG key, the whole JAX state, the
        current observation (packed), the running episode returns and lengths, a pending seed."""
        import jax

        started = self._state is not None
        return {
            "format": _STATE_FORMAT,
            "task": self.spec.task,
            "num_envs": self.num_envs,
            "options": dataclasses.asdict(self.options),
            "keys": _to_torch(self._keys).to(torch.int64) if started else None,
            "sim_state": {
                jax.tree_util.keystr(path): _to_torch(leaf)
                for path, leaf in jax.tree_util.tree_flatten_with_path(self._state)[0]
            }
            if started
            else None,
            "packed": None if self._packed is None else _to_torch(self._packed),
            **self._episodes.state_dict(),
            "pending_seed": self._pending_seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put every env back where :meth:`state_dict` found it (same task, options and E)."""
        import jax
        import jax.numpy as jnp

        self._check_open("load_state_dict")
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{self._label}: not a {_STATE_FORMAT} state dict (format={found!r})")
        mine = {
            "task": self.spec.task,
            "num_envs": self.num_envs,
            "options": dataclasses.asdict(self.options),
        }
        for key, value in mine.items():
            if state.get(key) != value:
                raise ValueError(
                    f"{self._label}: the state dict is for {key}={state.get(key)!r}, this env has {value!r}"
                )
        if state["sim_state"] is None:
            keys = jax_state = None
        else:
            template = self._core.placeholder_state(self.num_envs)
            leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
            saved = state["sim_state"]
            names = [jax.tree_util.keystr(path) for path, _ in leaves]
            if sorted(names) != sorted(saved):
                raise ValueError(
                    f"{self._label}: the saved SMAX state has the fields {sorted(saved)}, this "
                    f"jaxmarl version has {sorted(names)}"
                )
            restored = []
            for name, (_, leaf) in zip(names, leaves):
                value = saved[name].numpy()
                if value.shape != leaf.shape or value.dtype != leaf.dtype:
                    raise ValueError(
                        f"{self._label}: saved state field {name} is {value.dtype}{list(value.shape)}, "
                        f"expected {leaf.dtype}{list(leaf.shape)}"
                    )
                restored.append(jnp.asarray(value))
            jax_state = jax.tree_util.tree_unflatten(treedef, restored)
            keys = jnp.asarray(state["keys"].numpy().astype(np.uint32))
        self._keys, self._state = keys, jax_state
        self._packed = None if state["packed"] is None else jnp.asarray(state["packed"].numpy())
        self._avail = None
        self._episodes.load_state_dict(state)
        self._pending_seed = state["pending_seed"]

    def close(self) -> None:
        """Drop the JAX state (the compiled program stays cached for other envs)."""
        self._closed = True
        self._keys = self._state = None

    # -- helpers ----------------------------------------------------------------------------------

    def _jax_constants(self) -> tuple[Any, Any]:
        """``force_reset`` all False ``[E]`` and the episode limit, as JAX arrays (made once)."""
        import jax.numpy as jnp

        if self._no_reset is None:
            self._no_reset = jnp.zeros((self.num_envs,), dtype=bool)
            self._limit = jnp.asarray(self.options.episode_limit, dtype=jnp.int32)
        return self._no_reset, self._limit

    def _check_open(self, method: str) -> None:
        if self._closed:
            raise RuntimeError(f"{self._label}: {method}() on a closed env")

    def _host_copy(self, packed: Any) -> torch.Tensor:
        """The device→host copy of a packed buffer, as a CPU tensor that owns it (the one
        numpy→torch conversion of a step)."""
        return torch.from_numpy(np.array(packed, dtype=np.float32, copy=True))

    def _take(self, packed: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Make ``packed`` the current observation: its host copy, the views of its fields, and
        the masks the next actions are checked on (a copy: the caller may write into the
        tensors it is given)."""
        self._packed = packed
        host = self._host_copy(packed)
        fields = self._views(host)
        self._avail = fields["avail"].numpy().transpose(1, 0, 2) > 0.5
        return host, fields

    def _available(self) -> np.ndarray:
        """``[E, n, A]`` bool: the actions available at the current observation."""
        if self._avail is None:
            start, rows, e, width = self._offsets["avail"]
            block = np.asarray(self._packed[start : start + rows * e * width]).reshape(rows, e, width)
            self._avail = block.transpose(1, 0, 2) > 0.5
        return self._avail

    def _views(self, buffer: torch.Tensor) -> dict[str, torch.Tensor]:
        """``name -> [rows, E, width]`` views of a packed buffer."""
        return {
            name: buffer[start : start + rows * e * width].view(rows, e, width)
            for name, (start, rows, e, width) in self._offsets.items()
        }

    def _env_step(
        self,
        host: torch.Tensor,
        host_fields: dict[str, torch.Tensor],
        *,
        final: bool,
        episodes: list[EpisodeStats],
    ) -> EnvStep:
        """An :class:`EnvStep` whose tensors are views of ``host`` on the device (one copy to it)."""
        on_device = host.to(self.device)
        fields = host_fields if on_device is host else self._views(on_device)
        obs = self._with_ids(fields["obs"])
        state = fields["state"][0]
        if final:
            final_obs = self._with_ids(fields["final_obs"])
            final_state = fields["final_state"][0]
            reward = fields["reward"][0, :, 0]
            terminated = fields["terminated"][0, :, 0] > 0.5
            truncated = fields["truncated"][0, :, 0] > 0.5
        else:
            final_obs, final_state = tuple(o.clone() for o in obs), state.clone()
            reward = torch.zeros(self.num_envs, dtype=torch.float32, device=self.device)
            terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
            truncated = terminated.clone()
        avail = fields["avail"] > 0.5
        alive = fields["alive"][..., 0] > 0.5
        return EnvStep(
            obs=obs,
            state=state,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            final_obs=final_obs,
            final_state=final_state,
            action_masks=tuple(avail[i] for i in range(self.spec.n_agents)),
            active_masks=tuple(alive[i] for i in range(self.spec.n_agents)),
            episodes=episodes,
        )

    def _with_ids(self, obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[n, E, d]`` → per agent ``[E, d]``, with its one-hot id appended (``agent_id``)."""
        if self._agent_ids is None:
            return tuple(obs[i] for i in range(self.spec.n_agents))
        return tuple(torch.cat([obs[i], ids], dim=1) for i, ids in enumerate(self._agent_ids))

    def _validated_actions(self, actions: Any) -> np.ndarray:
        """``[E, n]`` int32 action indices, or a ``ValueError`` naming the agent at fault."""
        n, num_envs, n_actions = self.spec.n_agents, self.num_envs, self._core.n_actions
        if not isinstance(actions, (tuple, list)) or len(actions) != n:
            got = type(actions).__name__
            if isinstance(actions, (tuple, list)):
                got += f" of length {len(actions)}"
            raise ValueError(
                f"{self._label}: actions must be a tuple or list of one tensor per agent "
                f"({n} agents), got a {got}"
            )
        columns = []
        for i, action in enumerate(actions):
            who = f"agent {i} ({self._core.agents[i]})"
            if not isinstance(action, torch.Tensor):
                raise TypeError(
                    f"{self._label}: actions[{i}] ({who}) must be a torch.Tensor, got {type(action).__name__}"
                )
            if action.dtype == torch.bool or action.is_floating_point() or action.is_complex():
                raise ValueError(
                    f"{self._label}: actions[{i}] ({who}) must be an integer tensor of action indices, "
                    f"got {action.dtype}"
                )
            if tuple(action.shape) != (num_envs,):
                raise ValueError(
                    f"{self._label}: actions[{i}] ({who}) must have shape [{num_envs}] (one index per env), "
                    f"got {list(action.shape)}"
                )
            columns.append(action.detach().to("cpu", torch.int64))
        chosen = torch.stack(columns, dim=1).numpy()  # [E, n]
        outside = (chosen < 0) | (chosen >= n_actions)
        if outside.any():
            e, i = (int(x) for x in np.argwhere(outside)[0])
            raise ValueError(
                f"{self._label}: agent {i} ({self._core.agents[i]}) in env {e} chose action {chosen[e, i]}, "
                f"outside 0..{n_actions - 1}"
            )
        masks = self._available()
        available = np.take_along_axis(masks, chosen[:, :, None], axis=2)[:, :, 0]
        if not available.all():
            e, i = (int(x) for x in np.argwhere(~available)[0])
            allowed = np.flatnonzero(masks[e, i])
            raise ValueError(
                f"{self._label}: agent {i} ({self._core.agents[i]}) in env {e} chose unavailable action "
                f"{chosen[e, i]} ({action_name(int(chosen[e, i]))}); available: "
                + ", ".join(f"{a} ({action_name(int(a))})" for a in allowed)
            )
        return chosen.astype(np.int32)


def action_name(action: int) -> str:
    """``0 -> "move north"``, ..., ``4 -> "stop"``, ``5 + j -> "attack enemy j"``."""
    return ACTION_NAMES[action] if action < N_MOVE_ACTIONS else f"attack enemy {action - N_MOVE_ACTIONS}"


def _to_torch(array: Any) -> torch.Tensor:
    """A JAX array as a CPU tensor, bit for bit (uint32 PRNG keys become int64)."""
    value = np.array(array, copy=True)
    if value.dtype == np.uint32:
        value = value.astype(np.int64)
    return torch.from_numpy(value)


# -- entry points ---------------------------------------------------------------------------------


def make_vector_env(
    task: str,
    num_envs: int,
    options: Options | None = None,
    device: torch.device | str = "cpu",
    seed: int | None = None,
) -> SmaxVectorEnv:
    """``num_envs`` copies of SMAX map ``task`` (env ``e`` seeded with ``seed + e`` on the first
    reset); the registry's entry point."""
    return SmaxVectorEnv(task, num_envs, options, device, seed)


def _options(options: Options | Mapping[str, Any] | None) -> Options:
    if options is None or isinstance(options, Options):
        return options or Options()
    if isinstance(options, Mapping):
        from haml.envs.registry import build_options

        return build_options(Options, dict(options))
    raise TypeError(
        f"options must be an Options, a mapping of option values or None, got {type(options).__name__}"
    )


def jax_random_steps_per_second(
    task: str,
    num_envs: int,
    steps: int,
    seed: int = 0,
    options: Options | Mapping[str, Any] | None = None,
) -> float:
    """Env steps per second (``num_envs * steps / seconds``) of the adapter's own jitted program
    stepped entirely in JAX: random *available* actions drawn in JAX, no host copy, no torch.

    The reference for "SMAX steps/s inside the runner vs JAX-only stepping of the same batch"
    (``haml bench train --env smax``): the difference is what the adapter and the training loop
    add (the device→host copy, torch tensors, action checks, policies, learning). Compilation
    (once per task, options and ``num_envs`` per process) and one warm-up step are not timed;
    the clock stops after ``block_until_ready``.
    """
    import jax
    import jax.numpy as jnp

    require_num_envs(num_envs)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    seed = check_seed(seed, "jax_random_steps_per_second", optional=False)
    options = _options(options)
    core = _core(_check_task(task), options)
    limit = jnp.asarray(options.episode_limit, dtype=jnp.int32)
    keys, state, packed = core.reset(
        core.initial_keys(seed, num_envs), core.placeholder_state(num_envs), limit
    )
    no_reset = jnp.zeros((num_envs,), dtype=bool)
    draw_key = jax.random.PRNGKey(seed)
    draw_key, actions = core.sample_available(draw_key, packed)  # warm-up (and compilation)
    keys, state, packed = core.advance(keys, state, actions, no_reset, limit)
    jax.block_until_ready((keys, state, packed))
    start = time.perf_counter()
    for _ in range(steps):
        draw_key, actions = core.sample_available(draw_key, packed)
        keys, state, packed = core.advance(keys, state, actions, no_reset, limit)
    jax.block_until_ready((keys, state, packed))
    return num_envs * steps / (time.perf_counter() - start)
