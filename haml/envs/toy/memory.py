"""A cue-recall game that only a policy with memory solves, with action masks and dying agents.

Not from the papers: the cheapest task on which a recurrent policy must beat a feed-forward one,
and that exercises every StarCraft-style feature of the env interface (available-action masks,
agents that die, per-episode metrics) in pure torch, thousands of copies at once.

An episode has ``delay + 1`` steps. At step 0 agent i sees its private cue c_i ∈ {0, 1}; at later
steps its observation holds only the time step. Actions: 0 and 1 ("the cue was 0/1") are
available only at the last step, 2 (wait) only before it. At the last step the team reward is the
fraction of living agents whose answer equals their cue, and the episode terminates. An agent
dies at step 0 with probability ``death_prob``: from then on its only available action is the
wait (2), its observation is zeros and its alive flag (``active_masks``) is False; if every agent
is dead the reward is 0. A memoryless policy earns 0.5 in expectation, one that remembers its cue 1.

Observation of agent i (``2 + delay + 1``): the cue one-hot (step 0 only), then the time step one-hot.
Global state: every cue (one-hot, all steps), the time step one-hot and the alive flags: the
critic sees everything, so only the actors need memory.
"""

from __future__ import annotations

from typing import Any

import torch

from haml.envs.base import EnvSpec, EnvStep, EpisodeStats, require_num_envs

__all__ = ["MemoryGame"]

WAIT = 2


class MemoryGame:
    """``num_envs`` copies of the cue-recall game (a :class:`~haml.envs.base.VectorMultiAgentEnv`)."""

    def __init__(
        self,
        n_agents: int = 2,
        delay: int = 2,
        death_prob: float = 0.0,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        seed: int | None = None,
    ) -> None:
        from gymnasium import spaces

        for name, value, low in (("n_agents", n_agents, 1), ("delay", delay, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"MemoryGame: '{name}' must be an int >= {low}, got {value!r}")
        if not 0.0 <= float(death_prob) < 1.0:
            raise ValueError(f"MemoryGame: 'death_prob' must lie in [0, 1), got {death_prob!r}")
        self.num_envs = require_num_envs(num_envs, "MemoryGame")
        self.device = torch.device(device)
        self.n_agents, self.delay, self.death_prob = n_agents, delay, float(death_prob)
        obs_dim = 2 + delay + 1
        state_dim = 2 * n_agents + delay + 1 + n_agents
        box = lambda d: spaces.Box(0.0, 1.0, shape=(d,), dtype="float32")  # noqa: E731
        self.spec = EnvSpec(
            env="toy",
            task="memory",
            n_agents=n_agents,
            obs_spaces=(box(obs_dim),) * n_agents,
            action_spaces=(spaces.Discrete(3),) * n_agents,
            state_space=box(state_dim),
            action_masks=True,
            active_masks=True,
            episode_limit=delay + 1,
        )
        self._generator = torch.Generator(device="cpu")
        self._seed = seed
        E = self.num_envs
        self._t = torch.zeros(E, dtype=torch.long)
        self._cues = torch.zeros(E, n_agents, dtype=torch.long)
        self._alive = torch.ones(E, n_agents, dtype=torch.bool)

    # -- game logic (on the CPU: tiny tensors; the step result moves to ``device``) ----------------

    def _draw(self, envs: torch.Tensor) -> None:
        """New episodes in ``envs`` (bool [E])."""
        k = int(envs.sum())
        if k == 0:
            return
        g = self._generator
        self._t[envs] = 0
        self._cues[envs] = torch.randint(0, 2, (k, self.n_agents), generator=g)
        self._alive[envs] = torch.rand(k, self.n_agents, generator=g) >= self.death_prob

    def _observe(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        E, n, D = self.num_envs, self.n_agents, self.delay
        time = torch.nn.functional.one_hot(self._t.clamp(max=D), D + 1).float()
        cue = torch.nn.functional.one_hot(self._cues, 2).float()  # [E, n, 2]
        shown = (self._t == 0).float()[:, None]
        obs, masks, active = [], [], []
        answer = (self._t == D)[:, None]
        for i in range(n):
            alive = self._alive[:, i]
            o = torch.cat([cue[:, i] * shown, time], 1) * alive[:, None].float()
            can_answer = answer & alive[:, None]
            mask = torch.cat([can_answer.expand(E, 2), ~can_answer], 1)
            obs.append(o.to(self.device))
            masks.append(mask.to(self.device))
            active.append(alive.to(self.device))
        state = torch.cat([cue.reshape(E, 2 * n), time, self._alive.float()], 1).to(self.device)
        return tuple(obs), state, tuple(masks), tuple(active)

    def _result(self, reward: torch.Tensor, terminated: torch.Tensor, final: Any,
                episodes: list[EpisodeStats]) -> EnvStep:
        obs, state, masks, active = self._observe()
        final_obs, final_state = final if final is not None else (obs, state)
        return EnvStep(
            obs=obs,
            state=state,
            reward=reward.to(self.device),
            terminated=terminated.to(self.device),
            truncated=torch.zeros(self.num_envs, dtype=torch.bool, device=self.device),
            final_obs=final_obs,
            final_state=final_state,
            action_masks=masks,
            active_masks=active,
            episodes=episodes,
        )

    # -- the VectorMultiAgentEnv protocol ------------------------------------------------------

    def reset(self, seed: int | None = None) -> EnvStep:
        seed = self._seed if seed is None else seed
        if seed is not None:
            self._generator.manual_seed(seed)
        self._draw(torch.ones(self.num_envs, dtype=torch.bool))
        zeros = torch.zeros(self.num_envs)
        return self._result(zeros, zeros.bool(), None, [])

    def step(self, actions: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> EnvStep:
        if len(actions) != self.n_agents:
            raise ValueError(f"MemoryGame.step: expected {self.n_agents} actions, got {len(actions)}")
        _, _, masks, _ = self._observe()
        acts = []
        for i, a in enumerate(actions):
            a = torch.as_tensor(a).reshape(-1).long().cpu()
            if a.shape[0] != self.num_envs:
                raise ValueError(f"MemoryGame.step: agent {i}'s actions must be [{self.num_envs}], got {tuple(a.shape)}")
            if ((a < 0) | (a > 2)).any() or not masks[i].cpu().gather(1, a[:, None]).all():
                raise ValueError(f"MemoryGame.step: agent {i} took an unavailable action")
            acts.append(a)
        answers = torch.stack(acts, 1)  # [E, n]
        done = self._t == self.delay
        alive = self._alive.float()
        correct = ((answers == self._cues).float() * alive).sum(1) / alive.sum(1).clamp(min=1.0)
        reward = torch.where(done, correct, torch.zeros_like(correct))
        self._t += 1
        episodes = []
        final = None
        if done.any():
            obs, state, _, _ = self._observe()
            final = (obs, state)
            for e in done.nonzero().flatten().tolist():
                ep_alive = float(self._alive[e].sum())
                episodes.append(
                    EpisodeStats(float(reward[e]), self.delay + 1, {"alive": ep_alive}, env=e)
                )
            self._draw(done)
        return self._result(reward, done, final, episodes)

    def state_dict(self) -> dict[str, Any]:
        return {
            "t": self._t.clone(),
            "cues": self._cues.clone(),
            "alive": self._alive.clone(),
            "generator": self._generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._t = state["t"].clone()
        self._cues = state["cues"].clone()
        self._alive = state["alive"].clone()
        self._generator.set_state(state["generator"])

    def close(self) -> None:
        pass
