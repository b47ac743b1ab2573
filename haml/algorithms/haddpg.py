"""HADDPG ([HAML], Algorithm 3 and eq. (7)) and MADDPG ([HAML], eq. (3)): deterministic actors, a
centralised Q critic, target networks.

One update from a replay batch of n-step transitions (s, o, a, R, γ^K(1 - terminated), s', o'):

1. **Critic.** ``y = R + γ^K (1 - terminated) · Q_φ'(s', μ'(o'))`` with the target critic φ' and
   the target actors μ'; φ takes one Adam step on ``mean (Q_φ(s, a) - y)²`` (or the Huber loss).
2. **Actors, HA** (``sequential=True``). A fresh random permutation ``i_{1:n}`` every update; agent
   ``i_m`` takes one Adam step ascending ::

       (1/B) Σ_t Q_φ(s_t, μ_new^{i_{1:m-1}}(o_t), μ_θ^{i_m}(o_t), a_t^{i_{m+1:n}})        (eq. (7))

   The agents already updated enter with their *new* actions; the later ones with the replay
   batch's actions (``successor_actions: buffer``, the paper's form, the default), or with their
   current policies' actions (``policy``, what the authors' released code does).
3. **Actors, MA** (``sequential=False``, MADDPG). Every agent from the same critic, all others'
   actions fixed: the batch's (``buffer``) or their policies' before the update (``policy``); no
   order matters.
4. **Targets.** φ' ← τφ + (1 - τ)φ' and the same for every actor, one multi-tensor op.

:class:`DDPGLearner` does this with the critic's state term (what s contributes to its first
layer, input LayerNorm or not) computed once per actor phase
(:meth:`~haml.models.QCritic.state_term`), gradients taken for the updated actor's parameters
only, and every new action computed once. :func:`reference_update` is the same update written
plainly (the full critic and every predecessor's action rebuilt for every agent): the
specification, which the parity test and ``python -m haml.bench.haddpg`` compare against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from haml.algorithms.off_policy_base import OffPolicyLearnerBase, check_replay_keys
from haml.config.schema import check_choice
from haml.models.build import build_deterministic_policies, build_q_critic
from haml.models.deterministic import DeterministicPolicy, frozen_copy, polyak_update
from haml.models.q_critic import QCritic
from haml.ops.masked import masked_mean

if TYPE_CHECKING:  # the buffer imports gymnasium; the learner only reads the sample's fields
    from haml.buffers.replay import ReplaySample

__all__ = [
    "CRITIC_LOSSES",
    "SUCCESSOR_ACTIONS",
    "DDPGLearner",
    "DDPGMetrics",
    "HADDPGConfig",
    "reference_actor_phase",
    "reference_target_update",
    "reference_update",
]

CRITIC_LOSSES = ("mse", "huber")
SUCCESSOR_ACTIONS = ("buffer", "policy")

OnAgent = Callable[[int, int, torch.Tensor], None]
"""``on_agent(position m, agent i_m, actor loss)``, called after each agent's actor step."""


@dataclass
class HADDPGConfig:
    """HADDPG / MADDPG (the ``algo:`` section). Defaults: [HAML], Tables 3 and 4 (MaMuJoCo); the
    discount γ is the run's ``train.gamma``."""

    actor_lr: float = 3e-4
    """Actor learning rate (Adam)."""
    critic_lr: float = 1e-3
    """Critic learning rate (Adam)."""
    tau: float = 0.1
    """Polyak coefficient of the target networks, in (0, 1]: φ' ← τφ + (1 - τ)φ'."""
    n_step: int = 1
    """Rewards summed before bootstrapping (Table 4: 5 or 20 per task)."""
    batch_size: int = 1000
    """Transitions per update."""
    buffer_size: int = 1_000_000
    """Replay capacity, in transitions (at least ``batch_size``)."""
    warmup_steps: int = 25_000
    """Env steps with uniform random actions before the policies act and learning starts."""
    updates_per_step: float = 0.025
    """Updates per env step (Table 3's update-per-step)."""
    train_every: int = 50
    """Vector-env steps between update rounds (each round does the updates owed so far)."""
    exploration_noise: float = 0.1
    """σ of the Gaussian action noise, relative to each action dimension's half-width."""
    loss: str = "mse"
    """Critic loss: ``mse`` or ``huber``."""
    huber_delta: float = 1.0
    """δ of the Huber loss."""
    successor_actions: str = "buffer"
    """Actions of the agents not yet updated in the actor phase: ``buffer`` ([HAML] eq. (7),
    Algorithm 3) or ``policy`` (their current policies', as the authors' released code)."""
    max_grad_norm: float = 0.0
    """Gradient-norm clip of every actor and critic step; 0 turns it off."""
    checkpoint_buffer: bool = True
    """Keep the replay buffer's contents in every checkpoint (exact resume, at the buffer's size
    on disk); false: a resumed run refills the buffer from empty."""

    def __post_init__(self) -> None:
        check_replay_keys(self, positive=("huber_delta",), non_negative=("exploration_noise",))
        check_choice("algo", "loss", self.loss, CRITIC_LOSSES)
        check_choice("algo", "successor_actions", self.successor_actions, SUCCESSOR_ACTIONS)


@dataclass
class DDPGMetrics:
    """One update's diagnostics: detached device tensors (no host sync)."""

    q_loss: torch.Tensor
    """The critic loss before its step."""
    q_mean: torch.Tensor
    """Mean Q_φ(s, a) of the batch before the critic step."""
    actor_losses: list[torch.Tensor | None]
    """Per agent (agent order, not update order): -mean Q at its step, before it; None for an
    agent that took no actor step in this update (a delayed actor phase)."""
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    """Further diagnostics under their fixed metric names (:mod:`haml.logging.metrics`), e.g. a
    per-agent temperature; the runner logs each one's mean over an update round."""


def _critic_loss(q: torch.Tensor, y: torch.Tensor, cfg: HADDPGConfig) -> torch.Tensor:
    if cfg.loss == "huber":
        return F.huber_loss(q, y, delta=cfg.huber_delta)
    return F.mse_loss(q, y)


def _active(batch: Any, agent: int) -> torch.Tensor | None:
    """Agent ``agent``'s active mask ``[B]`` (None: all samples count)."""
    masks = getattr(batch, "active_masks", None)
    return None if masks is None else masks[agent].reshape(-1)


class DDPGLearner(OffPolicyLearnerBase):
    """The HADDPG (``sequential=True``) or MADDPG (``sequential=False``) update of ``policies`` and
    ``critic``; see the module doc. Builds the target networks and the Adam optimisers.

    Each policy must be its own module (no parameter sharing). ``gamma`` is the run's discount; the
    update itself reads γ^K from the batch's ``discount``, which the replay buffer computed with it.
    """

    twin_critic = False
    """Whether the critic has two Q networks (TD3's subclass) or one."""

    def __init__(
        self,
        policies: Sequence[DeterministicPolicy],
        critic: QCritic,
        cfg: HADDPGConfig,
        gamma: float,
        sequential: bool = True,
    ) -> None:
        self.policies = list(policies)
        if len({id(p) for p in self.policies}) != len(self.policies):
            raise ValueError("DDPGLearner: every agent needs its own policy module (no sharing)")
        if critic.twin != self.twin_critic:
            wanted = "two Q networks (twin=True)" if self.twin_critic else "one Q network (twin=False)"
            raise ValueError(f"{type(self).__name__}: the critic must have {wanted}")
        dims = tuple(p.action_dim for p in self.policies)
        if dims != critic.action_dims:
            raise ValueError(
                f"DDPGLearner: the policies' action sizes {dims} differ from the critic's "
                f"action_dims {critic.action_dims}"
            )
        if not 0 <= gamma <= 1:
            raise ValueError(f"DDPGLearner: 'gamma' must be in [0, 1], got {gamma!r}")
        self.critic = critic
        self.cfg = cfg
        self.gamma = float(gamma)
        self.sequential = bool(sequential)
        self.target_policies = [frozen_copy(p) for p in self.policies]
        self.target_critic = frozen_copy(critic)
        self._actor_params = [[p for p in policy.parameters() if p.requires_grad]
                              for policy in self.policies]
        self._critic_params = [p for p in critic.parameters() if p.requires_grad]
        # fused: the whole Adam step in one kernel per tensor (CPU and CUDA) rather than a
        # multi-tensor op per stage (foreach): n + 1 steps per update make it show; same numbers.
        self.actor_optimizers = [
            torch.optim.Adam(params, lr=cfg.actor_lr, fused=True) for params in self._actor_params
        ]
        self.critic_optimizer = torch.optim.Adam(self._critic_params, lr=cfg.critic_lr, fused=True)

    # -- what the off-policy runner asks of its learner --------------------------------------------

    @staticmethod
    def build_policies(cfg: Any, espec: Any, device: torch.device) -> list[nn.Module]:
        """The deterministic policies μ^i of an experiment config ``cfg`` (its ``actor``
        section), one per agent of the env spec ``espec``."""
        return build_deterministic_policies(cfg.actor, espec.obs_spaces, espec.action_spaces, device)

    @classmethod
    def build_critic(cls, cfg: Any, espec: Any, device: torch.device) -> QCritic:
        """The centralised critic Q_φ(s, a¹..aⁿ) of ``cfg.critic.network`` (twin when
        :attr:`twin_critic`)."""
        return build_q_critic(cfg.critic.network, espec.state_dim, espec.action_spaces, device,
                              twin=cls.twin_critic)

    def explore(
        self, obs: Sequence[torch.Tensor], action_masks: Sequence[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """Acting actions after the warm-up: μ^i(o^i) plus Gaussian noise of σ =
        ``exploration_noise`` × the half-width, clipped to the box, without gradient."""
        noise = self.cfg.exploration_noise
        return [policy.explore(o, noise) for policy, o in zip(self.policies, obs)]

    # -- the update ------------------------------------------------------------------------------

    def critic_step(self, batch: ReplaySample) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 1 of the module doc; returns ``(q_loss, q_mean)`` detached."""
        with torch.no_grad():
            next_actions = [mu(o) for mu, o in zip(self.target_policies, batch.next_obs)]
            y = batch.reward + batch.discount * self.target_critic(batch.next_state, next_actions)
        q = self.critic(batch.state, batch.actions)
        q_loss = _critic_loss(q, y, self.cfg)
        self._step(self.critic_optimizer, self._critic_params, q_loss)
        return q_loss.detach(), q.detach().mean()

    def actor_phase(
        self, batch: ReplaySample, on_agent: OnAgent | None = None
    ) -> list[torch.Tensor]:
        """Steps 2-3 of the module doc; returns each agent's actor loss (agent order), detached.

        ``joint`` holds the actions the critic sees for every agent: the batch's or the current
        policies' at first, each agent's new action once it is updated (HA). Only the updated
        agent's entry carries a gradient, and Q is evaluated from the state term computed once.
        """
        n = self.n_agents
        order = self.agent_order()
        with torch.no_grad():  # the actors ascend Q_φ's first (or only) network
            h_s = self.critic.state_term(batch.state, which=0)
            if self.cfg.successor_actions == "policy":
                joint = [mu(o) for mu, o in zip(self.policies, batch.obs)]
            else:
                joint = list(batch.actions)
        losses: list[torch.Tensor] = [torch.zeros(())] * n
        for m, i in enumerate(order):
            mu_i, o_i = self.policies[i], batch.obs[i]
            a_i = mu_i(o_i)
            q = self.critic.q_from(h_s, [*joint[:i], a_i, *joint[i + 1:]], which=0)
            actor_loss = -masked_mean(q, _active(batch, i))
            self._step(self.actor_optimizers[i], self._actor_params[i], actor_loss)
            losses[i] = actor_loss.detach()
            if self.sequential and m < n - 1:
                with torch.no_grad():
                    joint[i] = mu_i(o_i)  # μ_new^{i_m}(o): what the successors see
            if on_agent is not None:
                on_agent(m, i, losses[i])
        return losses

    def update_targets(self) -> None:
        """Step 4: φ' ← τφ + (1 - τ)φ' for the critic and every actor, one multi-tensor op."""
        polyak_update(
            [self.target_critic, *self.target_policies], [self.critic, *self.policies], self.cfg.tau
        )

    def update(self, batch: ReplaySample, on_agent: OnAgent | None = None) -> DDPGMetrics:
        """One HADDPG / MADDPG update (critic, actors, targets) from ``batch``."""
        q_loss, q_mean = self.critic_step(batch)
        actor_losses = self.actor_phase(batch, on_agent)
        self.update_targets()
        return DDPGMetrics(q_loss=q_loss, q_mean=q_mean, actor_losses=actor_losses)

    # -- checkpoints -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The critic, the target networks and every optimiser (the policies are the runner's)."""
        return {
            "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "target_policies": [target.state_dict() for target in self.target_policies],
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "actor_optimizers": [opt.state_dict() for opt in self.actor_optimizers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved_agents = {len(state["target_policies"]), len(state["actor_optimizers"])}
        if saved_agents != {self.n_agents}:
            raise ValueError(
                f"DDPGLearner: the saved state is for {len(state['target_policies'])} agents, "
                f"this learner has {self.n_agents}"
            )
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        for target, saved in zip(self.target_policies, state["target_policies"]):
            target.load_state_dict(saved)
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        for opt, saved in zip(self.actor_optimizers, state["actor_optimizers"]):
            opt.load_state_dict(saved)


def reference_update(
    learner: DDPGLearner, batch: ReplaySample, on_agent: OnAgent | None = None
) -> DDPGMetrics:
    """:meth:`DDPGLearner.update` written plainly, on ``learner``'s networks and optimisers: the
    specification (same numbers up to rounding, same draws from the global RNG).

    For every agent the joint action is rebuilt from scratch (each predecessor's new action from
    its updated policy) and the full critic Q_φ(s, a) is evaluated, backpropagating through all of
    it; the targets are updated one tensor at a time.
    """
    cfg, critic = learner.cfg, learner.critic

    # Critic: y = R + γ^K (1 - terminated) Q_φ'(s', μ'(o')).
    with torch.no_grad():
        next_actions = [mu(o) for mu, o in zip(learner.target_policies, batch.next_obs)]
        y = batch.reward + batch.discount * learner.target_critic(batch.next_state, next_actions)
    q = critic(batch.state, batch.actions)
    q_loss = _critic_loss(q, y, cfg)
    learner.critic_optimizer.zero_grad()
    q_loss.backward()
    if cfg.max_grad_norm > 0:
        nn.utils.clip_grad_norm_(critic.parameters(), cfg.max_grad_norm)
    learner.critic_optimizer.step()

    actor_losses = reference_actor_phase(learner, batch, on_agent)
    reference_target_update(learner)
    return DDPGMetrics(q_loss=q_loss.detach(), q_mean=q.detach().mean(), actor_losses=actor_losses)


def reference_actor_phase(
    learner: DDPGLearner, batch: ReplaySample, on_agent: OnAgent | None = None
) -> list[torch.Tensor | None]:
    """The actor phase of :func:`reference_update` (HADDPG's and HATD3's): for every agent the
    joint action rebuilt from scratch and the full critic evaluated (its first network when
    twin); returns the actor losses in agent order."""
    cfg, policies, critic = learner.cfg, learner.policies, learner.critic
    n = len(policies)
    # Actors: agent i_m maximises Q(s, μ_new^{i_{1:m-1}}(o), μ^{i_m}(o), a^{i_{m+1:n}}).
    order = torch.randperm(n).tolist() if learner.sequential else list(range(n))
    if cfg.successor_actions == "policy":
        with torch.no_grad():  # the policies' actions before any actor step
            current = [mu(o) for mu, o in zip(policies, batch.obs)]
    updated: list[int] = []
    actor_losses: list[torch.Tensor | None] = [None] * n
    for m, i in enumerate(order):
        joint = []
        for j in range(n):
            if j == i:
                joint.append(policies[i](batch.obs[i]))
            elif learner.sequential and j in updated:
                with torch.no_grad():
                    joint.append(policies[j](batch.obs[j]))  # μ_new^j(o)
            elif cfg.successor_actions == "policy":
                joint.append(current[j])
            else:
                joint.append(batch.actions[j])
        q = critic(batch.state, joint)
        actor_loss = -masked_mean(q[0] if critic.twin else q, _active(batch, i))
        optimizer = learner.actor_optimizers[i]
        optimizer.zero_grad()
        actor_loss.backward()
        if cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(policies[i].parameters(), cfg.max_grad_norm)
        optimizer.step()
        updated.append(i)
        actor_losses[i] = actor_loss.detach()
        if on_agent is not None:
            on_agent(m, i, actor_losses[i])
    critic.zero_grad(set_to_none=True)  # the actor losses' gradients on the critic are unused
    return actor_losses


def reference_target_update(learner: DDPGLearner) -> None:
    """φ' ← τφ + (1 - τ)φ' for the critic and every actor, one tensor at a time."""
    cfg = learner.cfg
    with torch.no_grad():
        for target, source in zip([learner.target_critic, *learner.target_policies],
                                  [learner.critic, *learner.policies]):
            for t, s in zip(target.parameters(), source.parameters()):
                t.mul_(1 - cfg.tau).add_(s, alpha=cfg.tau)
