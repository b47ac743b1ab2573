"""A scripted fake of SMAC's ``StarCraft2Env`` API, for the SMAC/SMACv2 adapter tests.

No StarCraft II: the battle follows a script given to the constructor (``functools.partial`` of
the class is what the tests pass as ``Options.env_factory``; it is a module-level class, so it
pickles by reference into async workers). Every quantity can be checked by hand:

- agent ``i``'s observation is ``[health, t, episode, x, i + 1]`` while it is alive, zeros once
  dead (as in SMAC); ``t`` is the step within the episode, ``episode`` the number of resets so far,
  ``x`` a number drawn from the game's RNG at every reset (seeded only at construction, like
  StarCraft II, which takes its seed when the game launches);
- the state is ``[t, episode, x, ally healths..., enemy healths...]`` plus, with
  ``state_last_action``, the one-hot last actions;
- actions: 0 no-op (only, and always, for the dead), 1 stop, 2-5 move (north/south available at
  even ``t``, east/west at odd ``t``: the masks change every step), ``6 + j`` attack enemy ``j``
  while it is alive;
- reward 1 per step, plus 10 for a win; ``step`` returns ``(reward, terminated, info)`` with
  ``info["battle_won"]``, ``dead_allies``, ``dead_enemies``; at the time limit it terminates,
  counts ``timeouts`` and sets ``info["episode_limit"]`` only with ``continuing_episode`` (as the
  real one); ``crash_at`` mimics SMAC's restart after a crashed game: ``(0, True, {})``;
- an unavailable action raises ``AssertionError``, as SMAC's own check does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

N_ACTIONS_NO_ATTACK = 6
OBS_DIM = 5


class FakeUnit:
    """What ``get_unit_by_id`` returns: only ``health`` is read."""

    def __init__(self, health: float) -> None:
        self.health = health


class FakeStarCraft2Env:
    """See the module docstring. Script arguments (keyword-only, not StarCraft2Env's):

    ``n_agents``/``n_enemies`` (a ``capability_config``'s ``n_units``/``n_enemies`` take
    precedence, as in SMACv2), ``episode_limit``, ``ally_deaths`` ({agent: step at which it
    dies}), ``win_at`` (step at which every enemy dies), ``lose_at`` (step at which every ally
    dies), ``crash_at`` (step at which the game "crashes").
    """

    def __init__(
        self,
        *,
        n_agents: int = 3,
        n_enemies: int = 3,
        episode_limit: int = 6,
        ally_deaths: dict[int, int] | None = None,
        win_at: int | None = None,
        lose_at: int | None = None,
        crash_at: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.kwargs = kwargs
        """Every StarCraft2Env keyword argument received (map_name, seed, reward_win, ...)."""
        config = kwargs.get("capability_config")
        if config is not None:
            n_agents, n_enemies = config["n_units"], config["n_enemies"]
            for key, sub_config in config.items():
                if isinstance(sub_config, dict):
                    sub_config["env_key"] = key  # smacv2's wrapper writes into its config too
        self.n_agents = n_agents
        self.n_enemies = n_enemies
        self.n_actions = N_ACTIONS_NO_ATTACK + n_enemies
        self.episode_limit = episode_limit
        self.ally_deaths = dict(ally_deaths or {})
        self.win_at, self.lose_at, self.crash_at = win_at, lose_at, crash_at
        self.continuing_episode = kwargs.get("continuing_episode", False)
        self.state_last_action = kwargs.get("state_last_action", True)
        self._seed = kwargs.get("seed")
        self.rng = np.random.default_rng(self._seed)
        self.launched = False
        self.closed = False
        self.timeouts = 0
        self.battles_won = 0
        self.episode = 0
        self.t = 0
        self.x = 0.0
        self.ally_health = np.ones(n_agents)
        self.enemy_health = np.ones(n_enemies)
        self.last_action = np.zeros((n_agents, self.n_actions))

    # -- StarCraft2Env API -------------------------------------------------------------------

    def get_env_info(self) -> dict[str, int]:
        return {
            "n_agents": self.n_agents,
            "n_actions": self.n_actions,
            "obs_shape": OBS_DIM,
            "state_shape": len(self.get_state()),
            "episode_limit": self.episode_limit,
        }

    def reset(self) -> tuple[list[np.ndarray], np.ndarray]:
        self.launched = True
        self.episode += 1
        self.t = 0
        self.x = float(self.rng.random())
        self.ally_health = np.ones(self.n_agents)
        self.enemy_health = np.ones(self.n_enemies)
        self.last_action = np.zeros((self.n_agents, self.n_actions))
        return self.get_obs(), self.get_state()

    def step(self, actions: list[int]) -> tuple[float, bool, dict[str, Any]]:
        assert self.launched, "step before reset"
        assert len(actions) == self.n_agents
        for agent, action in enumerate(actions):
            assert self.get_avail_agent_actions(agent)[action] == 1, (
                f"Agent {agent} cannot perform action {action}"
            )
        if self.t + 1 == self.crash_at:
            return 0, True, {}
        self.t += 1
        self.last_action = np.eye(self.n_actions)[np.asarray(actions, dtype=int)]
        for agent, step in self.ally_deaths.items():
            if step == self.t:
                self.ally_health[agent] = 0.0
        if self.t == self.win_at:
            self.enemy_health[:] = 0.0
        if self.t == self.lose_at:
            self.ally_health[:] = 0.0
        allies_alive = int((self.ally_health > 0).sum())
        enemies_alive = int((self.enemy_health > 0).sum())
        won = allies_alive > 0 and enemies_alive == 0
        info: dict[str, Any] = {
            "battle_won": won,
            "dead_allies": self.n_agents - allies_alive,
            "dead_enemies": self.n_enemies - enemies_alive,
        }
        reward = 1.0 + (10.0 if won else 0.0)
        terminated = False
        if allies_alive == 0 or enemies_alive == 0:
            terminated = True
            self.battles_won += int(won)
        elif self.t >= self.episode_limit:
            terminated = True
            self.timeouts += 1
            if self.continuing_episode:
                info["episode_limit"] = True
        return reward, terminated, info

    def get_obs(self) -> list[np.ndarray]:
        return [self.get_obs_agent(agent) for agent in range(self.n_agents)]

    def get_obs_agent(self, agent: int) -> np.ndarray:
        health = self.ally_health[agent]
        if health <= 0:
            return np.zeros(OBS_DIM, dtype=np.float32)
        return np.array([health, self.t, self.episode, self.x, agent + 1], dtype=np.float32)

    def get_state(self) -> np.ndarray:
        parts = [[self.t, self.episode, self.x], self.ally_health, self.enemy_health]
        if self.state_last_action:
            parts.append(self.last_action.ravel())
        return np.concatenate(parts).astype(np.float32)

    def get_avail_agent_actions(self, agent: int) -> list[int]:
        avail = [0] * self.n_actions
        if self.ally_health[agent] <= 0:
            avail[0] = 1
            return avail
        avail[1] = 1
        moves = (2, 3) if self.t % 2 == 0 else (4, 5)
        for action in moves:
            avail[action] = 1
        for enemy in range(self.n_enemies):
            if self.enemy_health[enemy] > 0:
                avail[N_ACTIONS_NO_ATTACK + enemy] = 1
        return avail

    def get_avail_actions(self) -> list[list[int]]:
        return [self.get_avail_agent_actions(agent) for agent in range(self.n_agents)]

    def get_unit_by_id(self, agent: int) -> FakeUnit:
        return FakeUnit(float(self.ally_health[agent]))

    def seed(self) -> int | None:
        return self._seed

    def close(self) -> None:
        self.closed = True


class FakeStarCraft2EnvWithoutUnits(FakeStarCraft2Env):
    """The fake without ``get_unit_by_id``: the adapter must tell the dead by their actions."""

    def __getattribute__(self, name: str) -> Any:
        if name == "get_unit_by_id":
            raise AttributeError(name)
        return super().__getattribute__(name)


def expected_avail(t: int, n_enemies: int, alive: bool, enemies_alive: bool = True) -> list[bool]:
    """The fake's available actions of an agent at step ``t`` (for the tests' expectations)."""
    avail = [False] * (N_ACTIONS_NO_ATTACK + n_enemies)
    if not alive:
        avail[0] = True
        return avail
    avail[1] = True
    for action in (2, 3) if t % 2 == 0 else (4, 5):
        avail[action] = True
    for enemy in range(n_enemies):
        avail[N_ACTIONS_NO_ATTACK + enemy] = enemies_alive
    return avail
