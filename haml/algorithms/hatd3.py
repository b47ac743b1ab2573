"""HATD3 and MATD3: HADDPG's and MADDPG's update ([HAML], Algorithm 3) with the three changes of
TD3 (Fujimoto et al., 2018) that [HARL] carries over to the heterogeneous-agent family.

One update from a replay batch of n-step transitions (s, o, a, R, γ^K(1 - terminated), s', o'):

1. **Critic, clipped double Q.** Two networks Q_φ1, Q_φ2 and their targets. Every target actor's
   action is smoothed, ``a'^i = clip(μ'^i(o'^i) + clip(σ ε, -c, c) · h^i, low^i, high^i)`` with
   ε ~ N(0, I), σ = ``target_noise``, c = ``target_noise_clip`` and h^i the action's half-width
   (1 along an unbounded dimension); the target is ::

       y = R + γ^K (1 - terminated) · min(Q_φ1'(s', a'), Q_φ2'(s', a'))

   and both networks take one Adam step on ``L(Q_φ1(s, a), y) + L(Q_φ2(s, a), y)``.
2. **Delayed actors.** Every ``policy_delay``-th update (the 2nd, 4th, ... with 2) the actors step
   as in HADDPG (HA: a fresh random order, agent i_m ascending
   ``Q_φ1(s, μ_new^{i_{1:m-1}}(o), μ_θ^{i_m}(o), a^{i_{m+1:n}})``) or MADDPG (MA: all at once);
   the actors ascend the first network only.
3. **Delayed targets.** The polyak update of every target runs on those updates only.

:class:`TD3Learner` reuses :class:`~haml.algorithms.haddpg.DDPGLearner`'s actor phase (the
critic's state term once per phase, gradients for the stepping actor only) and its one
multi-tensor target update; :func:`reference_update` is the plain specification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from haml.algorithms.haddpg import (
    DDPGLearner,
    DDPGMetrics,
    HADDPGConfig,
    OnAgent,
    _critic_loss,
    reference_actor_phase,
    reference_target_update,
)
from haml.config.schema import check_positive
from haml.models.deterministic import DeterministicPolicy
from haml.models.q_critic import QCritic

if TYPE_CHECKING:
    from haml.buffers.replay import ReplaySample

__all__ = ["TD3Config", "TD3Learner", "reference_update", "smoothed_target_action"]


@dataclass
class TD3Config(HADDPGConfig):
    """HATD3 / MATD3 (the ``algo:`` section): HADDPG's keys and TD3's three. The discount γ is
    the run's ``train.gamma``."""

    policy_delay: int = 2
    """Critic updates per actor-and-target update (TD3's d; [HARL]'s tuned Walker2d: 8)."""
    target_noise: float = 0.2
    """σ of the target-policy smoothing noise, relative to each action's half-width."""
    target_noise_clip: float = 0.5
    """The smoothing noise is clipped to ± this, relative to each action's half-width."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("algo", "policy_delay", self.policy_delay)
        for name in ("target_noise", "target_noise_clip"):
            check_positive("algo", name, getattr(self, name), allow_zero=True)


def smoothed_target_action(
    policy: DeterministicPolicy, obs: torch.Tensor, sigma: float, clip: float
) -> torch.Tensor:
    """``clip(μ(o) + clip(σ ε, -c, c) · h, low, high)``, ε ~ N(0, I) from the global RNG, without
    gradient (step 1 of the module doc)."""
    with torch.no_grad():
        action = policy(obs)
        if sigma == 0:
            return action
        noise = torch.randn(action.shape, dtype=action.dtype, device=action.device)
        noise = (noise * sigma).clamp_(-clip, clip)
        return torch.clamp(action + noise * policy.action_scale, policy.action_low, policy.action_high)


class TD3Learner(DDPGLearner):
    """The HATD3 (``sequential=True``) or MATD3 (``sequential=False``) update; see the module
    doc. The critic must be twin (:meth:`build_critic` makes it so)."""

    twin_critic = True

    def __init__(
        self,
        policies: Sequence[DeterministicPolicy],
        critic: QCritic,
        cfg: TD3Config,
        gamma: float,
        sequential: bool = True,
    ) -> None:
        super().__init__(policies, critic, cfg, gamma, sequential)
        self.updates = 0
        """Updates done so far (the delay counts from them; saved for exact resume)."""

    def critic_step(self, batch: ReplaySample) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 1 of the module doc; returns ``(q_loss, mean Q_φ1)`` detached."""
        cfg = self.cfg
        next_actions = [
            smoothed_target_action(mu, o, cfg.target_noise, cfg.target_noise_clip)
            for mu, o in zip(self.target_policies, batch.next_obs)
        ]
        with torch.no_grad():
            q1_next, q2_next = self.target_critic(batch.next_state, next_actions)
            y = batch.reward + batch.discount * torch.minimum(q1_next, q2_next)
        q1, q2 = self.critic(batch.state, batch.actions)
        q_loss = _critic_loss(q1, y, cfg) + _critic_loss(q2, y, cfg)
        self._step(self.critic_optimizer, self._critic_params, q_loss)
        return q_loss.detach(), q1.detach().mean()

    def update(self, batch: ReplaySample, on_agent: OnAgent | None = None) -> DDPGMetrics:
        """One HATD3 / MATD3 update: the critic always; the actors and the targets on every
        ``policy_delay``-th update (the others report None actor losses)."""
        q_loss, q_mean = self.critic_step(batch)
        self.updates += 1
        actor_losses: list[torch.Tensor | None] = [None] * self.n_agents
        if self.updates % self.cfg.policy_delay == 0:
            actor_losses = list(self.actor_phase(batch, on_agent))
            self.update_targets()
        return DDPGMetrics(q_loss=q_loss, q_mean=q_mean, actor_losses=actor_losses)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.updates = int(state["updates"])


def reference_update(
    learner: TD3Learner, batch: ReplaySample, on_agent: OnAgent | None = None
) -> DDPGMetrics:
    """:meth:`TD3Learner.update` written plainly on ``learner``'s networks and optimisers: the
    specification (same numbers up to rounding, same draws from the global RNG in the same order).

    The full critic for every agent, every predecessor's new action rebuilt from its policy,
    the targets updated one tensor at a time.
    """
    cfg, critic = learner.cfg, learner.critic

    # Critic: y = R + γ^K (1 - terminated) min_k Q_φk'(s', a'), a' smoothed target actions.
    with torch.no_grad():
        next_actions = []
        for mu, o in zip(learner.target_policies, batch.next_obs):
            a = mu(o)
            smoothing = torch.zeros_like(a)
            if cfg.target_noise != 0:  # σ = 0 draws nothing, as the learner
                eps = torch.randn(a.shape, dtype=a.dtype, device=a.device)
                smoothing = torch.clamp(cfg.target_noise * eps, -cfg.target_noise_clip, cfg.target_noise_clip)
            next_actions.append(torch.clamp(a + smoothing * mu.action_scale, mu.action_low, mu.action_high))
        q1_next, q2_next = learner.target_critic(batch.next_state, next_actions)
        y = batch.reward + batch.discount * torch.min(torch.stack([q1_next, q2_next]), dim=0).values
    q1, q2 = critic(batch.state, batch.actions)
    q_loss = _critic_loss(q1, y, cfg) + _critic_loss(q2, y, cfg)
    learner.critic_optimizer.zero_grad()
    q_loss.backward()
    if cfg.max_grad_norm > 0:
        nn.utils.clip_grad_norm_(critic.parameters(), cfg.max_grad_norm)
    learner.critic_optimizer.step()
    learner.updates += 1

    actor_losses: list[torch.Tensor | None] = [None] * learner.n_agents
    if learner.updates % cfg.policy_delay == 0:
        actor_losses = reference_actor_phase(learner, batch, on_agent)  # ascends Q_φ1
        reference_target_update(learner)
    return DDPGMetrics(q_loss=q_loss.detach(), q_mean=q1.detach().mean(), actor_losses=actor_losses)
