"""Small PettingZoo parallel envs for the tests of haml's ``pettingzoo`` family
(``haml/envs/pettingzoo.py``), each built so that what haml must make of it can be computed by
hand. They are module-level classes, so a ``functools.partial`` of one pickles by reference into
async workers, and ``pettingzoo_envs:make_masked`` is an import path for ``--task``.

- :class:`Hetero`: three agents with different observation shapes and dtypes (a 2x3 float64 Box,
  an int64 Box, a bool Box) and action spaces (a float64 Box, ``Discrete(4, start=1)``, a float32
  Box); no ``state()``. Observations carry the step and the actions received.
- :class:`Masked`: two ``Discrete(4)`` agents with action masks, one in its info and one in a
  ``Dict`` observation, that change every step; an unavailable action raises.
- :class:`Dying`: three agents that leave the episode one after another (agent ``i`` at step
  ``i + 1``); agent ``i``'s reward is ``i + 1`` (so they differ); an action for an agent that has
  left raises.
- envs that haml must refuse, one per incompatibility.
"""

from __future__ import annotations

import numpy as np
from gymnasium.spaces import Box, Dict, Discrete, MultiBinary, MultiDiscrete
from pettingzoo import AECEnv, ParallelEnv


class Hetero(ParallelEnv):
    """Agents ``a``, ``b``, ``c``; every episode is truncated after ``length`` steps; reward 1.

    - ``a`` observes a 2x3 float64 array: ``[[t, t, t], [a's last action (2), 0]]`` and acts in
      ``Box(-1, 1, (2,), float64)``;
    - ``b`` observes int64 ``[t, the action it received, 7]`` and acts in ``Discrete(4, start=1)``
      (it receives ``1 .. 4``);
    - ``c`` observes bool ``[t is odd]`` and acts in ``Box(-2, 2, (1,), float32)``.
    """

    metadata = {"name": "hetero"}

    def __init__(self, length=5):
        self.possible_agents = ["a", "b", "c"]
        self.length = length
        self.t = 0
        self.last_a = np.zeros(2)
        self.last_b = 0

    def observation_space(self, agent):
        return {
            "a": Box(-np.inf, np.inf, (2, 3), np.float64),
            "b": Box(0, 100, (3,), np.int64),
            "c": Box(0, 1, (1,), np.bool_),
        }[agent]

    def action_space(self, agent):
        return {
            "a": Box(-1.0, 1.0, (2,), np.float64),
            "b": Discrete(4, start=1),
            "c": Box(-2.0, 2.0, (1,), np.float32),
        }[agent]

    def _observations(self):
        t = self.t
        return {
            "a": np.array([[t, t, t], [*self.last_a, 0.0]], dtype=np.float64),
            "b": np.array([t, self.last_b, 7], dtype=np.int64),
            "c": np.array([t % 2 == 1]),
        }

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.t, self.last_a, self.last_b = 0, np.zeros(2), 0
        return self._observations(), {agent: {} for agent in self.agents}

    def step(self, actions):
        assert actions["a"].dtype == np.float64 and actions["a"].shape == (2,)
        assert self.action_space("b").contains(actions["b"]), actions["b"]
        self.t += 1
        self.last_a, self.last_b = np.asarray(actions["a"]), int(actions["b"])
        late = self.t >= self.length
        agents = self.agents
        if late:
            self.agents = []
        return (self._observations(), {a: 1.0 for a in agents}, {a: False for a in agents},
                {a: late for a in agents}, {a: {} for a in agents})


def left_mask(t):
    """``left``'s available actions at step ``t``: ``t % 4`` and ``(t + 1) % 4``."""
    mask = np.zeros(4, np.int8)
    mask[[t % 4, (t + 1) % 4]] = 1
    return mask


def right_mask(t):
    """``right``'s one available action at step ``t``: ``(t + 2) % 4``."""
    return np.eye(4, dtype=np.int8)[(t + 2) % 4]


class Masked(ParallelEnv):
    """Agents ``left`` (mask in its info) and ``right`` (mask in its Dict observation), each
    ``Discrete(4)``; observations ``[t, last action]``. The team reward is 1 when ``left`` takes
    the lower-numbered of its two available actions (``t % 4`` is not always the lower one), else
    0. An unavailable action raises. Episodes are truncated after ``length`` steps."""

    metadata = {"name": "masked"}

    def __init__(self, length=8):
        self.possible_agents = ["left", "right"]
        self.length = length
        self.t = 0
        self.last = {"left": 0, "right": 0}

    def observation_space(self, agent):
        box = Box(-np.inf, np.inf, (2,), np.float32)
        if agent == "left":
            return box
        return Dict({"observation": box, "action_mask": MultiBinary(4)})

    def action_space(self, agent):
        return Discrete(4)

    def _observe(self):
        t = self.t
        left = np.array([t, self.last["left"]], np.float32)
        right = np.array([t, self.last["right"]], np.float32)
        observations = {"left": left, "right": {"observation": right, "action_mask": right_mask(t)}}
        return observations, {"left": {"action_mask": left_mask(t)}, "right": {}}

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.t, self.last = 0, {"left": 0, "right": 0}
        return self._observe()

    def step(self, actions):
        left, right = int(actions["left"]), int(actions["right"])
        if not left_mask(self.t)[left] or not right_mask(self.t)[right]:
            raise ValueError(f"unavailable action at t={self.t}: left {left}, right {right}")
        reward = float(left == min(np.flatnonzero(left_mask(self.t))))
        self.t += 1
        self.last = {"left": left, "right": right}
        late = self.t >= self.length
        agents = self.agents
        if late:
            self.agents = []
        observations, infos = self._observe()
        return (observations, {a: reward for a in agents}, {a: False for a in agents},
                {a: late for a in agents}, infos)


def make_masked():
    """The import path ``pettingzoo_envs:make_masked`` for ``--task``."""
    return Masked()


class Dying(ParallelEnv):
    """Agents ``d0``, ``d1``, ``d2`` (``Box(-1, 1, (1,))`` actions) observe ``[t, i]``; agent
    ``i`` gets reward ``i + 1`` while it acts and leaves at step ``i + 1``: terminated, except
    the last, which is truncated when ``last_truncated``. With ``silent_death`` an agent that
    leaves gives no last observation. An action for an agent that has left raises."""

    metadata = {"name": "dying"}

    def __init__(self, last_truncated=False, silent_death=False):
        self.possible_agents = ["d0", "d1", "d2"]
        self.last_truncated = last_truncated
        self.silent_death = silent_death
        self.t = 0

    def observation_space(self, agent):
        return Box(-np.inf, np.inf, (2,), np.float32)

    def action_space(self, agent):
        return Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.t = 0
        return self._observations(self.agents), {a: {} for a in self.agents}

    def _observations(self, agents):
        return {a: np.array([self.t, self.possible_agents.index(a)], np.float32) for a in agents}

    def step(self, actions):
        if set(actions) != set(self.agents):
            raise ValueError(f"actions for {sorted(actions)}, but the agents are {self.agents}")
        self.t += 1
        acting = self.agents
        leaving = self.possible_agents[self.t - 1]
        self.agents = [a for a in acting if a != leaving]
        last = not self.agents
        truncated = {a: a == leaving and last and self.last_truncated for a in acting}
        terminated = {a: a == leaving and not truncated[a] for a in acting}
        seen = self.agents if self.silent_death else acting
        rewards = {a: float(self.possible_agents.index(a) + 1) for a in acting}
        return self._observations(seen), rewards, terminated, truncated, {a: {} for a in acting}


# -- envs haml must refuse ----------------------------------------------------------------------


class AecOnly(AECEnv):
    """A PettingZoo AEC env (agents act in turn): not a parallel env."""

    metadata = {"name": "aec_only"}

    def __init__(self):
        super().__init__()
        self.possible_agents = ["x", "y"]
        self.agents = list(self.possible_agents)
        self.agent_selection = "x"

    def observation_space(self, agent):
        return Box(0, 1, (1,))

    def action_space(self, agent):
        return Discrete(2)


class Spaces(Masked):
    """:class:`Masked` with the observation or action space of ``left`` replaced."""

    def __init__(self, observation=None, action=None):
        super().__init__()
        self.left_observation = observation
        self.left_action = action

    def observation_space(self, agent):
        if agent == "left" and self.left_observation is not None:
            return self.left_observation
        return super().observation_space(agent)

    def action_space(self, agent):
        if agent == "left" and self.left_action is not None:
            return self.left_action
        return super().action_space(agent)


class TextObservation(Masked):
    """Declares a float Box but observes strings."""

    def _observe(self):
        observations, infos = super()._observe()
        observations["left"] = np.array(["t", "x"])
        return observations, infos


class GrowingTeam(Masked):
    """One more possible agent at every reset after the first (the team changes between
    episodes)."""

    def __init__(self):
        super().__init__(length=2)
        self.resets = 0

    def reset(self, seed=None, options=None):
        self.resets += 1
        if self.resets > 1:
            self.possible_agents = [*self.possible_agents, f"extra_{self.resets}"]
        return super().reset(seed, options)


class AbsentAtReset(Masked):
    """``right`` is not in the observations of a reset."""

    def reset(self, seed=None, options=None):
        observations, infos = super().reset(seed, options)
        del observations["right"]
        return observations, infos


class Latecomer(Masked):
    """An agent that was not there at the start of the episode appears at its second step."""

    def step(self, actions):
        result = super().step(actions)
        if self.t == 2:
            result[1]["newcomer"] = 0.0
        return result


class MaskVanishes(Masked):
    """``left``'s info stops carrying its action mask at step 3."""

    def _observe(self):
        observations, infos = super()._observe()
        if self.t == 3:
            infos["left"] = {}
        return observations, infos


def masked_box_actions():
    """Masks in the info of an agent that acts in a Box."""
    return Spaces(action=Box(-1, 1, (1,), np.float32))


UNSUPPORTED_ACTIONS = {
    "MultiDiscrete": MultiDiscrete([2, 3]),
    "MultiBinary": MultiBinary(3),
    "an integer Box": Box(0, 3, (1,), np.int64),
    "a 2-D Box": Box(-1, 1, (2, 2), np.float32),
}
"""Action spaces haml does not take, by what the test calls them."""
