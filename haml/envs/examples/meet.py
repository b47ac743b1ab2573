"""Meet: two agents on a line must meet. A cooperative PettingZoo parallel env."""

import numpy as np
from gymnasium.spaces import Box, Discrete
from pettingzoo import ParallelEnv


class Meet(ParallelEnv):
    """A walker (moves by up to 0.1) and a hopper (hops 0.1 left, stays, or hops right) start
    at random points of [-1, 1]. Both are rewarded minus their distance every step; they meet
    (terminated) within 0.1 of each other, or the episode is cut after max_steps (truncated)."""

    metadata = {"name": "meet_v0"}

    def __init__(self, max_steps=25):
        self.possible_agents = ["walker", "hopper"]
        self.max_steps = max_steps
        self.rng = np.random.default_rng()

    def observation_space(self, agent):
        return Box(-1.0, 1.0, shape=(2,), dtype=np.float32)  # own position, the other's

    def action_space(self, agent):
        if agent == "walker":
            return Box(-0.1, 0.1, shape=(1,), dtype=np.float32)
        return Discrete(3)

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self.position = self.rng.uniform(-1.0, 1.0, size=2)
        self.steps = 0
        return self._observations(), {agent: {} for agent in self.agents}

    def step(self, actions):
        self.position[0] += np.clip(actions["walker"][0], -0.1, 0.1)
        self.position[1] += 0.1 * (int(actions["hopper"]) - 1)
        self.position = np.clip(self.position, -1.0, 1.0)
        self.steps += 1
        distance = abs(self.position[0] - self.position[1])
        met, late = distance < 0.1, self.steps >= self.max_steps
        agents = self.agents
        if met or late:
            self.agents = []
        return (self._observations(), {a: -distance for a in agents}, {a: met for a in agents},
                {a: late and not met for a in agents}, {a: {} for a in agents})

    def state(self):
        return self.position.astype(np.float32)

    def _observations(self):
        walker, hopper = self.position.astype(np.float32)
        return {"walker": np.array([walker, hopper]), "hopper": np.array([hopper, walker])}


def make_env():
    return Meet()
