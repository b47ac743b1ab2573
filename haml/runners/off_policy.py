"""The one off-policy runner: act with exploration → replay buffer → rounds of critic and actor updates.

Every registered off-policy algorithm (HADDPG and MADDPG, [HAML] Algorithm 3 and eq. (7)) runs
through :class:`OffPolicyRunner`; what differs between them comes from the registry entry: the
learner and whether the actors update in a fresh random order, each seeing its predecessors' new
actions (HA), or all at once against the buffer's actions (MA). The runner never looks at the
algorithm's or the environment's name.

One iteration:

1. ``algo.train_every`` vector steps of the ``E`` envs: uniform random actions until
   ``algo.warmup_steps`` env steps have been taken, then μ(o) + Gaussian noise
   (``algo.exploration_noise`` × the action's half-width) clipped to the action box; every
   transition goes to the replay buffer (:class:`~haml.buffers.replay.ReplayBuffer`, which keeps
   the true final observation at time limits and computes n-step returns when sampling);
2. once past the warm-up, the updates owed so far at ``algo.updates_per_step`` per env step
   (counted from the end of the warm-up; a fraction carries over to the next round), each on a
   uniform batch of ``algo.batch_size`` transitions: the critic's step on the n-step target,
   the actors' steps, the polyak update of the targets (the learner's ``update``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from haml.buffers.replay import ReplayBuffer
from haml.config.schema import ExperimentConfig
from haml.envs.base import EnvSpec, EnvStep, EpisodeStats, VectorMultiAgentEnv
from haml.logging import metrics as M
from haml.algorithms.registry import algo_spec
from haml.envs.random_actions import random_action_sampler
from haml.runners.base import AgentUpdate, RunnerBase
from haml.runners.guards import single_thread

__all__ = ["OffPolicyRunner"]


def check_schedule(cfg: ExperimentConfig) -> None:
    """Cross-checks of the off-policy keys against the rest of the run (each error names its key;
    the algo section's own checks are :class:`~haml.algorithms.haddpg.HADDPGConfig`'s)."""
    algo, train = cfg.algo, cfg.train
    if cfg.actor.rnn != "none" or cfg.critic.network.rnn != "none":
        raise ValueError(
            "actor.rnn / critic.network.rnn: the off-policy algorithms have feed-forward networks "
            "only; set both to none"
        )
    if algo.warmup_steps >= train.steps:
        raise ValueError(
            f"algo.warmup_steps ({algo.warmup_steps}) must be smaller than train.steps "
            f"({train.steps}): the run would never update"
        )


class OffPolicyRunner(RunnerBase):
    """Trains ``cfg.algo_name`` (an off-policy algorithm) on ``env``, evaluating on ``eval_env``;
    follows :class:`haml.runners.Runner`.

    ``sequential`` overrides the registry entry's actor scheme (True: HA, a fresh random order,
    predecessors' new actions; False: MA, every actor against the buffer's actions).
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        env: VectorMultiAgentEnv,
        eval_env: VectorMultiAgentEnv | None = None,
        sequential: bool | None = None,
    ) -> None:
        check_schedule(cfg)
        espec = self._init_run(cfg, env, eval_env, sequential)
        algo = cfg.algo
        self.policies = self.spec.learner.build_policies(cfg, espec, self.device)
        self.critic = self.spec.learner.build_critic(cfg, espec, self.device)
        self.learner = self.spec.learner(
            self.policies, self.critic, algo, gamma=cfg.train.gamma, sequential=self.sequential
        )
        self.buffer = ReplayBuffer(espec, algo.buffer_size, env.num_envs, algo.n_step, cfg.train.gamma,
                                   self.device)
        self.batch_steps = algo.train_every * env.num_envs
        self.total_iterations = max(1, math.ceil(cfg.train.steps / self.batch_steps))
        self.updates_done = 0
        # The global RNG (no generator of its own): a checkpoint's RNG state reproduces the warm-up.
        self._random_actions = random_action_sampler(espec.action_spaces, env.num_envs, self.device)

    @staticmethod
    def build_acting_policies(cfg: ExperimentConfig, espec: EnvSpec, device: torch.device) -> list[nn.Module]:
        """The policies of ``cfg``'s algorithm, one per agent (its learner builds them)."""
        return algo_spec(cfg.algo_name).learner.build_policies(cfg, espec, device)

    # -- acting ------------------------------------------------------------------------------------

    def reset_envs(self) -> None:
        self._step = self.env.reset(seed=self.cfg.seed)

    @torch.no_grad()
    def _actions(self, step: EnvStep) -> list[torch.Tensor]:
        """Uniform random actions (among the available ones) during the warm-up, then the
        learner's exploring actions."""
        if self.env_steps < self.cfg.algo.warmup_steps:
            return self._random_actions(step.action_masks)
        return self.learner.explore(step.obs, step.action_masks)

    def collect(self) -> list[EpisodeStats]:
        """``algo.train_every`` vector steps into the replay buffer; returns the episodes that
        ended meanwhile."""
        if self._step is None:
            self.reset_envs()
        episodes: list[EpisodeStats] = []
        step = self._step
        with single_thread():
            for _ in range(self.cfg.algo.train_every):
                actions = self._actions(step)
                after = self.env.step(actions)
                self.buffer.add(step, actions, after)
                episodes.extend(after.episodes)
                self.env_steps += self.env.num_envs
                step = after
        self._step = step
        return episodes

    @property
    def warming_up(self) -> bool:
        """True until the updates start: the warm-up's steps are not all taken, or the buffer
        holds less than a batch (``haml bench train`` runs the iterations before timing)."""
        algo = self.cfg.algo
        return self.env_steps < algo.warmup_steps or len(self.buffer) < algo.batch_size

    # -- learning ----------------------------------------------------------------------------------

    def update(self) -> dict[str, torch.Tensor]:
        """One round of the updates owed, once past the warm-up (and with a batch's worth of
        transitions stored); detached metrics, means over the round (no host sync)."""
        algo = self.cfg.algo
        if self.warming_up:
            return {}
        # Owed since the warm-up ended, counted from the totals (no float drift across rounds).
        owed = math.floor((self.env_steps - algo.warmup_steps) * algo.updates_per_step + 1e-9)
        updates = owed - self.updates_done
        if updates <= 0:
            return {}
        self.updates_done = owed
        q_losses, q_means = [], []
        actor_losses: list[list[torch.Tensor]] = [[] for _ in range(self.n_agents)]
        extra: dict[str, list[torch.Tensor]] = {}
        for _ in range(updates):
            result = self.learner.update(self.buffer.sample(algo.batch_size), on_agent=self._on_agent)
            q_losses.append(result.q_loss)
            q_means.append(result.q_mean)
            for agent, loss in enumerate(result.actor_losses):
                if loss is not None:
                    actor_losses[agent].append(loss)
            for name, value in result.extra.items():
                extra.setdefault(name, []).append(value)
        metrics = {M.VALUE_LOSS: torch.stack(q_losses).mean(), M.Q_MEAN: torch.stack(q_means).mean()}
        for agent, losses in enumerate(actor_losses):
            if losses:
                metrics[M.agent_metric(M.POLICY_LOSS, agent)] = torch.stack(losses).mean()
        for name, values in extra.items():
            metrics[name] = torch.stack(values).mean()
        return metrics

    def _on_agent(self, position: int, agent: int, actor_loss: torch.Tensor) -> None:
        """Hooks see each actor step (``factor`` is None: there is no factor M off-policy)."""
        self._notify(AgentUpdate(self.iteration, position, [agent], self.policies[agent], None,
                                 {"policy_loss": actor_loss}))

    def modules(self) -> list[nn.Module]:
        return [*self.policies, self.critic]

    def _collect_phase(self) -> tuple[None, list[EpisodeStats]]:
        return None, self.collect()

    def _update_phase(self, collected: None) -> dict[str, torch.Tensor]:
        return self.update()

    # -- state -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = self._common_state()
        state["updates_done"] = self.updates_done
        state["critic"] = self.critic.state_dict()
        state["learner"] = self.learner.state_dict()
        state["buffer"] = self.buffer.state_dict(include_contents=self.cfg.algo.checkpoint_buffer)
        return state

    def load_state_dict(self, state: dict[str, Any], on_warning: Callable[[str], None] = print) -> None:
        self._load_common_state(state)
        self.critic.load_state_dict(state["critic"])
        self.learner.load_state_dict(state["learner"])
        self.buffer.load_state_dict(state["buffer"])
        self.updates_done = int(state["updates_done"])
        self._restore_envs(state, on_warning)

    def close(self) -> None:
        """Nothing to release beyond what garbage collection frees; the envs belong to their maker."""

