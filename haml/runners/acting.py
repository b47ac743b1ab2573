"""The agents acting together on ``E`` envs: one action per agent per step, recurrent states kept.

Collection (training) and evaluation both step the env through :class:`JointActor`, so both handle
available-action masks and recurrent policies the same way. The hidden state of a recurrent policy
is kept per agent (a shared policy still has one state per agent) and zeroed before the first step
of every episode; ``starts`` marks those steps (all envs after a reset, then the envs whose episode
ended at the previous step).

Feed-forward agents whose policies have the same architecture act as one
:class:`~haml.models.stacked.StackedPolicies` (one batched forward for all of them): per env step
the ops, not their arithmetic, are the cost of acting, and acting runs beside every env step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from haml.buffers.rollout import RolloutBuffer
from haml.envs.base import EnvStep, EpisodeStats, VectorMultiAgentEnv
from haml.models.recurrent import is_recurrent
from haml.models.stacked import StackedPolicies, stack_key

__all__ = ["JointActor", "collect_rollout"]


class JointActor:
    """``policies[i]`` acts for agent ``i`` (the same module may repeat) on ``num_envs`` envs."""

    def __init__(self, policies: Sequence[nn.Module], num_envs: int) -> None:
        self.policies = list(policies)
        self.num_envs = num_envs
        # (agents, stack): agents acting as one StackedPolicies, or one agent and None.
        self._groups: list[tuple[list[int], StackedPolicies | None]] = []
        by_key: dict[tuple[Any, ...], list[int]] = {}
        for i, policy in enumerate(self.policies):
            key = stack_key(policy)
            if key is None:
                self._groups.append(([i], None))
            else:
                by_key.setdefault(key, []).append(i)
        for agents in by_key.values():
            if len(agents) == 1:
                self._groups.append((agents, None))
            else:
                self._groups.append((agents, StackedPolicies([self.policies[i] for i in agents])))
        self.reset()

    def reset(self) -> None:
        """Every env starts a new episode at the next step."""
        self.states: list[torch.Tensor | None] = [
            p.initial_state(self.num_envs) if is_recurrent(p) else None for p in self.policies
        ]
        device = next(self.policies[0].parameters()).device
        self.starts = torch.ones(self.num_envs, dtype=torch.bool, device=device)

    @property
    def recurrent(self) -> bool:
        return any(s is not None for s in self.states)

    def state_shapes(self) -> list[tuple[int, ...] | None]:
        """Each agent's recurrent state shape per env (None: feed-forward), as
        :meth:`~haml.buffers.rollout.RolloutBuffer.allocate` takes them."""
        return [None if h is None else tuple(h.shape[1:]) for h in self.states]

    @torch.no_grad()
    def act(
        self, step: EnvStep, deterministic: bool = False
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor | None]]:
        """``(actions, log-probs, hidden states used)`` per agent for the observation ``step``.

        A recurrent agent's state is zeroed where ``starts`` is set before it acts; the state it
        acted from is returned (what a training chunk starting here restarts from).
        """
        n = len(self.policies)
        actions: list[Any] = [None] * n
        logps: list[Any] = [None] * n
        used: list[torch.Tensor | None] = [None] * n
        masks = step.action_masks
        keep = None
        for agents, stack in self._groups:
            if stack is not None:
                action, logp = stack.sample(
                    [step.obs[i] for i in agents],
                    None if masks is None else [masks[i] for i in agents],
                    deterministic=deterministic,
                )
                for i, a, lp in zip(agents, action.unbind(0), logp.unbind(0)):
                    actions[i], logps[i] = a, lp
                continue
            (i,) = agents
            policy, state = self.policies[i], self.states[i]
            mask = None if masks is None else masks[i]
            if state is None:
                actions[i], logps[i] = policy.sample(step.obs[i], mask, deterministic=deterministic)
            else:
                if keep is None:
                    keep = (~self.starts).float()[:, None, None]
                state = state * keep
                actions[i], logps[i], self.states[i] = policy.sample(
                    step.obs[i], state, self.starts, mask, deterministic=deterministic
                )
                used[i] = state
        return actions, logps, used

    def observe(self, after: EnvStep) -> None:
        """Record which envs start a new episode at the next step."""
        self.starts = after.terminated | after.truncated

    def state_dict(self) -> dict[str, Any]:
        return {"states": list(self.states), "starts": self.starts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.starts.device
        self.states = [None if s is None else s.to(device) for s in state["states"]]
        self.starts = state["starts"].to(device)


def collect_rollout(
    env: VectorMultiAgentEnv, actor: JointActor, buffer: RolloutBuffer, step: EnvStep
) -> tuple[EnvStep, list[EpisodeStats]]:
    """Fill ``buffer`` with ``T = buffer.steps`` steps of ``env``, ``actor`` acting from the
    observation ``step``; returns the last step (what the next rollout acts on) and the episodes
    that ended meanwhile. The one rollout loop: the runner's in-process collection and every
    rollout worker (:mod:`haml.runners.rollout_workers`) run it."""
    episodes: list[EpisodeStats] = []
    for t in range(buffer.steps):
        starts = actor.starts
        actions, logps, states = actor.act(step)
        after = env.step(actions)
        buffer.store(t, step, actions, logps, after, starts, states)
        actor.observe(after)
        episodes.extend(after.episodes)
        step = after
    return step, episodes
