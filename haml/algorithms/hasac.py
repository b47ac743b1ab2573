"""HASAC ([HASAC], Algorithm 1): maximum-entropy heterogeneous-agent soft actor-critic, for Box and
Discrete action spaces; with ``sequential=False`` the simultaneous variant (MASAC-like).

Stochastic actors π^i (:mod:`haml.models.soft_policy`), one centralised twin soft Q critic
Q_φ1, Q_φ2 (:class:`~haml.models.QCritic`, ``twin=True``) with target networks, and a temperature
α_i per agent. One update from a replay batch of n-step transitions
(s, o, a, R, γ^K(1 - terminated), s', o', avail(o')):

1. **Soft critic.** Fresh next actions from the *current* policies, ``a'^i ~ π^i(·|o'^i)``
   (available actions only), and their log-probabilities; the target ::

       y = R + γ^K (1 - terminated) · ( min(Q_φ1', Q_φ2')(s', a') - Σ_i α_i log π^i(a'^i|o'^i) )

   Both networks take one Adam step on ``L(Q_φ1(s, a), y) + L(Q_φ2(s, a), y)`` (L: squared error
   or Huber, each a mean over the samples where at least one agent is active). For Discrete
   agents the expectation over a' cannot be taken exactly (the critic is over the *joint*
   action: |A_1|···|A_n| evaluations), so a' is *sampled* and its log-probabilities used, as for
   Box agents; the entropy term is then a one-sample estimate. The n-step reward R holds the
   environment's rewards only (no entropy bonus for the steps inside the window), as in the
   authors' code.
2. **Actors, HA** (``sequential=True``). A fresh random permutation ``i_{1:n}`` every update. Every
   agent's action is first *sampled* from its current policy (no gradient). Agent ``i_m``
   minimises ([HASAC] eq. (10), the HA soft policy objective) ::

       E_s [ α_i log π^{i_m}(a^{i_m}|o) - min(Q_φ1, Q_φ2)(s, a_new^{i_{1:m-1}}, a^{i_m}, a^{i_{m+1:n}}) ]

   where a_new^{i_{1:m-1}} are the predecessors' actions *re-sampled from their updated
   policies* (once, right after each one's step) and a^{i_{m+1:n}} the successors' samples from
   their current policies (the authors' choice; [HASAC] leaves the successors' actions to the
   expectation over π_old). A Box agent's own action is reparameterised (``a = squash(μ + σε)``)
   and the loss is its one-sample estimate; a Discrete agent's loss is the exact expectation over
   its own actions, ``Σ_a π(a|o) (α log π(a|o) - min Q(s, ..., onehot(a), ...))``, Q evaluated
   once per action in one batch, unavailable actions excluded. Samples where the agent is
   inactive weigh nothing.
3. **Actors, MA** (``sequential=False``). Every agent against the others' samples from their
   policies before the update; no order, no re-sampling.
4. **Temperatures.** With ``auto_alpha`` agent i_m's log α takes one Adam step right after its
   actor step, on ``log α · E[H^i - H̄^i]`` with H^i its policy's entropy at the step's samples
   (Box: ``-log π(a)`` of the reparameterised draw; Discrete: exact) and the target H̄^i:
   ``target_entropy_per_dim · dim(A_i)`` (Box) or ``target_entropy_ratio · log |available
   actions|`` per sample (Discrete), so α grows when the policy is less random than the target.
5. **Targets.** φ' ← τφ + (1 - τ)φ' for both critic networks, one multi-tensor op. There are no
   target actors: the critic target reads the current policies, as in SAC.

:class:`SACLearner` does this with the critic's state term (what s contributes to its first
layer, input LayerNorm or not) computed once for the actor phase
(:meth:`~haml.models.QCritic.state_term` / ``q_from``), gradients taken for the stepping actor
only, and a Discrete agent's per-action Q values in one batched call.
:func:`reference_update` is the same update written plainly: the specification, which the
parity test compares against.

[HASAC] Liu et al., "Maximum Entropy Heterogeneous-Agent Reinforcement Learning", ICLR 2024.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from haml.algorithms.haddpg import DDPGMetrics
from haml.algorithms.off_policy_base import OffPolicyLearnerBase, check_replay_keys
from haml.config.schema import check_choice
from haml.logging import metrics as M
from haml.models.build import build_q_critic
from haml.models.deterministic import frozen_copy, polyak_update
from haml.models.q_critic import QCritic, StateTerm
from haml.models.soft_policy import make_soft_policy
from haml.ops.masked import masked_mean

if TYPE_CHECKING:  # the buffer imports gymnasium; the learner only reads the sample's fields
    from haml.buffers.replay import ReplaySample

__all__ = ["CRITIC_LOSSES", "HASACConfig", "SACLearner", "reference_update"]

CRITIC_LOSSES = ("mse", "huber")

OnAgent = Callable[[int, int, torch.Tensor], None]
"""``on_agent(position m, agent i_m, actor loss)``, called after each agent's actor step."""


@dataclass
class HASACConfig:
    """HASAC (the ``algo:`` section). Defaults: the authors' released defaults for HASAC (see
    docs/REFERENCE.md); the discount γ is the run's ``train.gamma``."""

    actor_lr: float = 5e-4
    """Actor learning rate (Adam)."""
    critic_lr: float = 5e-4
    """Critic learning rate (Adam), both Q networks."""
    tau: float = 0.005
    """Polyak coefficient of the target critic, in (0, 1]: φ' ← τφ + (1 - τ)φ'."""
    n_step: int = 20
    """Rewards summed before bootstrapping."""
    batch_size: int = 1000
    """Transitions per update."""
    buffer_size: int = 1_000_000
    """Replay capacity, in transitions (at least ``batch_size``)."""
    warmup_steps: int = 10_000
    """Env steps with uniform random actions before the policies act and learning starts."""
    updates_per_step: float = 0.05
    """Updates per env step (the authors': 50 updates every 50 steps of 20 envs)."""
    train_every: int = 50
    """Vector-env steps between update rounds (each round does the updates owed so far)."""
    alpha: float = 0.001
    """Every agent's temperature α_i: fixed, or the initial value with ``auto_alpha``."""
    auto_alpha: bool = False
    """Tune each α_i by gradient steps on log α_i toward the target entropy."""
    alpha_lr: float = 3e-4
    """Learning rate (Adam) of each log α_i (with ``auto_alpha``)."""
    target_entropy_per_dim: float = -1.0
    """Box agents' target entropy per action dimension: H̄_i = this · dim(A_i) (SAC's -dim(A))."""
    target_entropy_ratio: float = 0.98
    """Discrete agents' target entropy as a fraction of the largest, log |available actions|, per
    sample; in (0, 1]."""
    loss: str = "huber"
    """Critic loss: ``mse`` (squared error) or ``huber``."""
    huber_delta: float = 10.0
    """δ of the Huber loss."""
    log_std_min: float = -20.0
    """Lower clamp of a Box policy's state-dependent log σ."""
    log_std_max: float = 2.0
    """Upper clamp of a Box policy's state-dependent log σ."""
    max_grad_norm: float = 0.0
    """Gradient-norm clip of every actor and critic step (not the temperatures'); 0 turns it
    off."""
    checkpoint_buffer: bool = True
    """Keep the replay buffer's contents in every checkpoint (exact resume, at the buffer's size
    on disk); false: a resumed run refills the buffer from empty."""

    def __post_init__(self) -> None:
        check_replay_keys(self, positive=("alpha", "alpha_lr", "huber_delta", "target_entropy_ratio"))
        if self.target_entropy_ratio > 1:
            raise ValueError(
                f"algo.target_entropy_ratio must be in (0, 1], got {self.target_entropy_ratio!r}"
            )
        if not math.isfinite(self.target_entropy_per_dim):
            raise ValueError(
                f"algo.target_entropy_per_dim must be finite, got {self.target_entropy_per_dim!r}"
            )
        if not self.log_std_min < self.log_std_max:
            raise ValueError(
                f"algo.log_std_min must be smaller than algo.log_std_max ({self.log_std_max!r}), "
                f"got {self.log_std_min!r}"
            )
        check_choice("algo", "loss", self.loss, CRITIC_LOSSES)


# -- pieces shared by the learner and the reference ----------------------------------------------


def _elementwise_loss(q: torch.Tensor, y: torch.Tensor, cfg: HASACConfig) -> torch.Tensor:
    if cfg.loss == "huber":
        return F.huber_loss(q, y, reduction="none", delta=cfg.huber_delta)
    return F.mse_loss(q, y, reduction="none")


def _mask(masks: Sequence[torch.Tensor] | None, agent: int) -> torch.Tensor | None:
    """Agent ``agent``'s available-action mask as bool ``[B, n]`` (None: all available)."""
    if masks is None:
        return None
    mask = masks[agent]
    return mask if mask.dtype == torch.bool else mask != 0


def _active(batch: Any, agent: int) -> torch.Tensor | None:
    """Agent ``agent``'s active mask ``[B]`` (None: all samples count)."""
    masks = getattr(batch, "active_masks", None)
    return None if masks is None else masks[agent].reshape(-1)


def _any_active(batch: Any) -> torch.Tensor | None:
    """``[B]``: the samples where at least one agent is active (what the critic's loss counts)."""
    masks = getattr(batch, "active_masks", None)
    if masks is None:
        return None
    return torch.stack([m.reshape(-1) for m in masks]).any(0)


def _available_count(mask: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
    """``[B]`` (or a scalar without a mask): how many actions are available."""
    if mask is None:
        return torch.full((), float(n), dtype=like.dtype, device=like.device)
    return mask.to(like.dtype).sum(-1).clamp_min(1.0)


class SACLearner(OffPolicyLearnerBase):
    """The HASAC (``sequential=True``) or MASAC-like (``sequential=False``) update of
    ``policies`` and ``critic``; see the module doc. Builds the target critic, the Adam
    optimisers and the temperatures.

    ``policies`` are :mod:`haml.models.soft_policy` modules, one per agent (no sharing), Box and
    Discrete agents alike; ``critic`` is a twin :class:`~haml.models.QCritic` whose per-agent
    action sizes are the policies' ``action_dim`` (a Discrete agent's action enters one-hot).
    ``gamma`` is the run's discount; the update reads γ^K from the batch's ``discount``.
    """

    def __init__(
        self,
        policies: Sequence[nn.Module],
        critic: QCritic,
        cfg: HASACConfig,
        gamma: float,
        sequential: bool = True,
    ) -> None:
        self.policies = list(policies)
        if len({id(p) for p in self.policies}) != len(self.policies):
            raise ValueError("SACLearner: every agent needs its own policy module (no sharing)")
        for i, policy in enumerate(self.policies):
            if getattr(policy, "kind", None) not in ("gaussian", "categorical"):
                raise TypeError(
                    f"SACLearner: agent {i}'s policy must be a SquashedGaussianPolicy or a "
                    f"SoftCategoricalPolicy, got {type(policy).__name__}"
                )
        if not critic.twin:
            raise ValueError("SACLearner: the critic must have two Q networks (twin=True)")
        dims = tuple(p.action_dim for p in self.policies)
        if dims != critic.action_dims:
            raise ValueError(
                f"SACLearner: the policies' action sizes {dims} differ from the critic's "
                f"action_dims {critic.action_dims}"
            )
        if not 0 <= gamma <= 1:
            raise ValueError(f"SACLearner: 'gamma' must be in [0, 1], got {gamma!r}")
        self.critic = critic
        self.cfg = cfg
        self.gamma = float(gamma)
        self.sequential = bool(sequential)
        self.target_critic = frozen_copy(critic)
        self._actor_params = [[p for p in policy.parameters() if p.requires_grad]
                              for policy in self.policies]
        self._critic_params = [p for p in critic.parameters() if p.requires_grad]
        self.actor_optimizers = [
            torch.optim.Adam(params, lr=cfg.actor_lr, fused=True) for params in self._actor_params
        ]
        self.critic_optimizer = torch.optim.Adam(self._critic_params, lr=cfg.critic_lr, fused=True)
        like = self._critic_params[0]
        self.log_alphas = [
            torch.tensor(math.log(cfg.alpha), dtype=like.dtype, device=like.device,
                         requires_grad=cfg.auto_alpha)
            for _ in self.policies
        ]
        self.alpha_optimizers = (
            [torch.optim.Adam([log_alpha], lr=cfg.alpha_lr) for log_alpha in self.log_alphas]
            if cfg.auto_alpha else []
        )

    # -- what the off-policy runner asks of its learner --------------------------------------------

    @staticmethod
    def build_policies(cfg: Any, espec: Any, device: torch.device) -> list[nn.Module]:
        """The soft policies π^i of an experiment config ``cfg`` (its ``actor`` section and the
        algo's log-σ clamp), one per agent of the env spec ``espec``: tanh-squashed Gaussian for a
        Box agent, categorical for a Discrete one."""
        net, algo = cfg.actor, cfg.algo
        return [
            make_soft_policy(int(obs.shape[0]), action, hidden=tuple(net.hidden),
                             activation=net.activation, layer_norm=net.layer_norm,
                             input_norm=net.input_norm, log_std_min=algo.log_std_min,
                             log_std_max=algo.log_std_max, device=device)
            for obs, action in zip(espec.obs_spaces, espec.action_spaces)
        ]

    @staticmethod
    def build_critic(cfg: Any, espec: Any, device: torch.device) -> QCritic:
        """The centralised twin critic Q_φ1, Q_φ2(s, a¹..aⁿ) of ``cfg.critic.network``."""
        return build_q_critic(cfg.critic.network, espec.state_dim, espec.action_spaces, device,
                              twin=True)

    def explore(
        self, obs: Sequence[torch.Tensor], action_masks: Sequence[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """Acting actions after the warm-up: a draw from each π^i(·|o^i) (available actions
        only), without gradient."""
        return [policy.sample(o, _mask(action_masks, i))[0]
                for i, (policy, o) in enumerate(zip(self.policies, obs))]

    def alpha(self, agent: int) -> torch.Tensor:
        """α_i = exp(log α_i), detached (a 0-dim tensor)."""
        return self.log_alphas[agent].detach().exp()

    def target_entropy(self, agent: int, action_mask: torch.Tensor | None,
                       like: torch.Tensor) -> torch.Tensor:
        """H̄_i: ``target_entropy_per_dim · dim(A_i)`` (Box), or ``target_entropy_ratio · log
        |available actions|`` per sample ``[B]`` (Discrete; a scalar without masks)."""
        policy = self.policies[agent]
        if policy.kind == "gaussian":
            return torch.full((), self.cfg.target_entropy_per_dim * policy.action_dim,
                              dtype=like.dtype, device=like.device)
        count = _available_count(action_mask, policy.action_dim, like)
        return self.cfg.target_entropy_ratio * torch.log(count)

    # -- the update ------------------------------------------------------------------------------

    def critic_step(self, batch: ReplaySample) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 1 of the module doc; returns ``(q_loss, q_mean)`` detached (q_mean: the batch's
        mean min(Q_φ1, Q_φ2)(s, a) before the step)."""
        with torch.no_grad():
            next_inputs, entropy_term = [], 0.0
            for i, policy in enumerate(self.policies):
                a_next, logp_next = policy.action_log_prob(
                    batch.next_obs[i], _mask(batch.next_action_masks, i))
                next_inputs.append(policy.critic_input(a_next))
                entropy_term = entropy_term + self.alpha(i) * logp_next
            q1_next, q2_next = self.target_critic(batch.next_state, next_inputs)
            y = batch.reward + batch.discount * (torch.minimum(q1_next, q2_next) - entropy_term)
        inputs = [p.critic_input(a) for p, a in zip(self.policies, batch.actions)]
        q1, q2 = self.critic(batch.state, inputs)
        weight = _any_active(batch)
        q_loss = (masked_mean(_elementwise_loss(q1, y, self.cfg), weight)
                  + masked_mean(_elementwise_loss(q2, y, self.cfg), weight))
        self._step(self.critic_optimizer, self._critic_params, q_loss)
        return q_loss.detach(), torch.minimum(q1, q2).detach().mean()

    def _discrete_q(self, h_s: StateTerm, joint: list[torch.Tensor],
                    agent: int) -> torch.Tensor:
        """``min(Q_φ1, Q_φ2)(s, ..., onehot(a), ...)`` for every action a of Discrete agent
        ``agent``, the others at ``joint``: ``[B, n_a]``, from one critic call on ``[n_a, B, ·]``."""
        n_a = self.policies[agent].action_dim
        B = joint[0].shape[0]
        eye = torch.eye(n_a, dtype=joint[agent].dtype, device=joint[agent].device)
        per_action = [
            eye[:, None, :].expand(n_a, B, n_a) if j == agent else x.expand(n_a, *x.shape)
            for j, x in enumerate(joint)
        ]
        q1, q2 = self.critic.q_from(h_s, torch.cat(per_action, dim=-1))
        return torch.minimum(q1, q2).transpose(0, 1)

    def actor_phase(
        self, batch: ReplaySample, on_agent: OnAgent | None = None
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Steps 2-4 of the module doc; returns each agent's actor loss (agent order) and the
        per-agent temperatures and entropies under their metric names, all detached.

        ``joint`` holds every agent's critic input: its sample from its current policy at first,
        each agent's re-sampled new action once it is updated (HA). Q is evaluated from the state
        term computed once.
        """
        n = self.n_agents
        order = self.agent_order()
        with torch.no_grad():
            h_s = self.critic.state_term(batch.state)
            joint = []
            for i, policy in enumerate(self.policies):
                a, _ = policy.action_log_prob(batch.obs[i], _mask(batch.action_masks, i))
                joint.append(policy.critic_input(a))
        losses: list[torch.Tensor] = [torch.zeros(())] * n
        extra: dict[str, torch.Tensor] = {}
        for m, i in enumerate(order):
            policy, o_i, mask_i = self.policies[i], batch.obs[i], _mask(batch.action_masks, i)
            alpha_i = self.alpha(i)
            if policy.kind == "gaussian":
                a_i, log_pi = policy.action_log_prob(o_i)
                q1, q2 = self.critic.q_from(h_s, [*joint[:i], a_i, *joint[i + 1:]])
                per_sample = alpha_i * log_pi - torch.minimum(q1, q2)
                entropy = -log_pi.detach()
            else:
                probs, log_probs = policy.probs(o_i, mask_i)
                if mask_i is not None:  # unavailable actions: π = 0, and no log π · 0 = NaN
                    log_probs = torch.where(mask_i, log_probs, torch.zeros_like(log_probs))
                with torch.no_grad():
                    q = self._discrete_q(h_s, joint, i)
                per_sample = (probs * (alpha_i * log_probs - q)).sum(-1)
                entropy = -(probs * log_probs).sum(-1).detach()
            active_i = _active(batch, i)
            actor_loss = masked_mean(per_sample, active_i)
            self._step(self.actor_optimizers[i], self._actor_params[i], actor_loss)
            losses[i] = actor_loss.detach()
            if self.cfg.auto_alpha:  # log α · E[H - H̄]: α grows while H is below the target
                gap = entropy - self.target_entropy(i, mask_i, entropy)
                alpha_loss = self.log_alphas[i] * masked_mean(gap, active_i)
                self.alpha_optimizers[i].zero_grad(set_to_none=True)
                alpha_loss.backward(inputs=[self.log_alphas[i]])  # never clipped
                self.alpha_optimizers[i].step()
            extra[M.agent_metric(M.ALPHA, i)] = self.alpha(i)
            extra[M.agent_metric(M.ENTROPY, i)] = masked_mean(entropy, active_i)
            if self.sequential and m < n - 1:
                with torch.no_grad():  # a_new^{i_m} ~ π_new^{i_m}: what the successors see
                    a_new, _ = policy.action_log_prob(o_i, mask_i)
                    joint[i] = policy.critic_input(a_new)
            if on_agent is not None:
                on_agent(m, i, losses[i])
        return losses, extra

    def update_targets(self) -> None:
        """Step 5: φ' ← τφ + (1 - τ)φ' for both critic networks, one multi-tensor op."""
        polyak_update([self.target_critic], [self.critic], self.cfg.tau)

    def update(self, batch: ReplaySample, on_agent: OnAgent | None = None) -> DDPGMetrics:
        """One HASAC update (critic, actors and temperatures, target) from ``batch``."""
        q_loss, q_mean = self.critic_step(batch)
        actor_losses, extra = self.actor_phase(batch, on_agent)
        self.update_targets()
        return DDPGMetrics(q_loss=q_loss, q_mean=q_mean, actor_losses=list(actor_losses),
                           extra=extra)

    # -- checkpoints -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The critic, its target, the temperatures and every optimiser (the policies are the
        runner's)."""
        return {
            "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "log_alphas": [log_alpha.detach().clone() for log_alpha in self.log_alphas],
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "actor_optimizers": [opt.state_dict() for opt in self.actor_optimizers],
            "alpha_optimizers": [opt.state_dict() for opt in self.alpha_optimizers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved_agents = {len(state["log_alphas"]), len(state["actor_optimizers"])}
        if saved_agents != {self.n_agents}:
            raise ValueError(
                f"SACLearner: the saved state is for {len(state['log_alphas'])} agents, "
                f"this learner has {self.n_agents}"
            )
        if len(state["alpha_optimizers"]) != len(self.alpha_optimizers):
            raise ValueError(
                "SACLearner: the saved state and this config differ in algo.auto_alpha"
            )
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        with torch.no_grad():
            for log_alpha, saved in zip(self.log_alphas, state["log_alphas"]):
                log_alpha.copy_(saved)
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        for opt, saved in zip(self.actor_optimizers, state["actor_optimizers"]):
            opt.load_state_dict(saved)
        for opt, saved in zip(self.alpha_optimizers, state["alpha_optimizers"]):
            opt.load_state_dict(saved)


def reference_update(
    learner: SACLearner, batch: ReplaySample, on_agent: OnAgent | None = None
) -> DDPGMetrics:
    """:meth:`SACLearner.update` written plainly, on ``learner``'s networks, temperatures and
    optimisers: the specification (same numbers up to rounding, same draws from the global RNG).

    For every agent the joint action is rebuilt from scratch and the full twin critic Q(s, a) is
    evaluated, backpropagating through all of it; a Discrete agent's expectation is an explicit
    sum over its actions, one critic call per action; the target is updated one tensor at a time.
    """
    cfg, policies, critic = learner.cfg, learner.policies, learner.critic
    n = len(policies)
    alphas = [log_alpha.detach().exp() for log_alpha in learner.log_alphas]

    # Critic: y = R + γ^K (1 - terminated) (min Q'(s', a') - Σ_i α_i log π^i(a'^i | o'^i)).
    with torch.no_grad():
        next_actions, next_log_pis = [], []
        for i, pi in enumerate(policies):
            a, log_pi = pi.action_log_prob(batch.next_obs[i], _mask(batch.next_action_masks, i))
            next_actions.append(pi.critic_input(a))
            next_log_pis.append(log_pi)
        q1_next, q2_next = learner.target_critic(batch.next_state, next_actions)
        soft_value = torch.minimum(q1_next, q2_next)
        for i in range(n):
            soft_value = soft_value - alphas[i] * next_log_pis[i]
        y = batch.reward + batch.discount * soft_value
    q1, q2 = critic(batch.state, [pi.critic_input(a) for pi, a in zip(policies, batch.actions)])
    q_mean = torch.minimum(q1, q2).detach().mean()
    weight = _any_active(batch)
    q_loss = (masked_mean(_elementwise_loss(q1, y, cfg), weight)
              + masked_mean(_elementwise_loss(q2, y, cfg), weight))
    learner.critic_optimizer.zero_grad()
    q_loss.backward()
    if cfg.max_grad_norm > 0:
        nn.utils.clip_grad_norm_(critic.parameters(), cfg.max_grad_norm)
    learner.critic_optimizer.step()

    # Actors: agent i_m minimises E[α log π^{i_m} - min Q(s, a_new^{i_{1:m-1}}, a^{i_m}, a^{rest})].
    order = torch.randperm(n).tolist() if learner.sequential else list(range(n))
    with torch.no_grad():  # every agent's sample from its policy before any actor step
        current = [pi.critic_input(pi.action_log_prob(batch.obs[i],
                                                      _mask(batch.action_masks, i))[0])
                   for i, pi in enumerate(policies)]
    new: dict[int, torch.Tensor] = {}
    actor_losses: list[torch.Tensor] = [torch.zeros(())] * n
    extra: dict[str, torch.Tensor] = {}
    for m, i in enumerate(order):
        pi, mask_i, active_i = policies[i], _mask(batch.action_masks, i), _active(batch, i)

        def joint_with(own: torch.Tensor, i: int = i) -> list[torch.Tensor]:
            return [own if j == i else new.get(j, current[j]) for j in range(n)]

        if pi.kind == "gaussian":
            a_i, log_pi = pi.action_log_prob(batch.obs[i])
            q1, q2 = critic(batch.state, joint_with(a_i))
            actor_loss = masked_mean(alphas[i] * log_pi - torch.minimum(q1, q2), active_i)
            log_pi_estimate = log_pi.detach()
        else:
            probs, log_probs = pi.probs(batch.obs[i], mask_i)
            if mask_i is not None:  # π(a) = 0 there: keep α log π(a) finite (no 0 · inf)
                log_probs = torch.where(mask_i, log_probs, torch.zeros_like(log_probs))
            B, n_a = probs.shape
            expectation = torch.zeros(B, dtype=probs.dtype, device=probs.device)
            entropy = torch.zeros(B, dtype=probs.dtype, device=probs.device)
            for a in range(n_a):
                onehot = torch.zeros(B, n_a, dtype=probs.dtype, device=probs.device)
                onehot[:, a] = 1.0
                q1, q2 = critic(batch.state, joint_with(onehot))
                term = probs[:, a] * (alphas[i] * log_probs[:, a] - torch.minimum(q1, q2))
                if mask_i is not None:  # an unavailable action adds nothing
                    term = torch.where(mask_i[:, a], term, torch.zeros_like(term))
                expectation = expectation + term
                entropy = entropy - probs[:, a] * log_probs[:, a]
            actor_loss = masked_mean(expectation, active_i)
            log_pi_estimate = -entropy.detach()
        optimizer = learner.actor_optimizers[i]
        optimizer.zero_grad()
        actor_loss.backward()
        if cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(pi.parameters(), cfg.max_grad_norm)
        optimizer.step()
        actor_losses[i] = actor_loss.detach()
        if cfg.auto_alpha:  # J(α) = E[-α (log π + H̄)], in log α
            log_alpha = learner.log_alphas[i]
            target = learner.target_entropy(i, mask_i, log_pi_estimate)
            alpha_loss = -log_alpha * masked_mean(log_pi_estimate + target, active_i)
            learner.alpha_optimizers[i].zero_grad()
            alpha_loss.backward()
            learner.alpha_optimizers[i].step()
        extra[M.agent_metric(M.ALPHA, i)] = learner.log_alphas[i].detach().exp()
        extra[M.agent_metric(M.ENTROPY, i)] = masked_mean(-log_pi_estimate, active_i)
        if learner.sequential and m < n - 1:
            with torch.no_grad():  # a_new^{i_m} ~ π_new^{i_m}, drawn once
                a_new, _ = pi.action_log_prob(batch.obs[i], mask_i)
                new[i] = pi.critic_input(a_new)
        if on_agent is not None:
            on_agent(m, i, actor_losses[i])
    critic.zero_grad(set_to_none=True)  # the actor losses' gradients on the critic are unused

    # Target: φ' ← τφ + (1 - τ)φ'.
    with torch.no_grad():
        for t, s in zip(learner.target_critic.parameters(), critic.parameters()):
            t.mul_(1 - cfg.tau).add_(s, alpha=cfg.tau)
    return DDPGMetrics(q_loss=q_loss.detach(), q_mean=q_mean, actor_losses=actor_losses,
                       extra=extra)
