"""HAD3QN ([HARL] §5, the discrete off-policy member of the heterogeneous-agent family): per-agent
dueling Q networks acting ε-greedily, and a centralised dueling critic over the joint action.

Networks (:mod:`haml.models.dueling`): agent i's Q^i(o^i, a^i) = V^i(o^i) + A^i(o^i, a^i) -
mean_{a available} A^i(o^i, a); the critic Q_φ(s, ·) with one output per joint action (N = ∏ n_i),
dueling over the available joint actions; a target critic φ'. The agents act ε-greedily (fixed ε,
drawn per env and per agent), greedily at evaluation.

One update from a replay batch of n-step transitions (s, o, a, R, γ^K(1 - terminated), s', o'):

1. **Critic.** The greedy joint action at s', ``ā'^i = argmax_{a available at o'^i} Q^i(o'^i, a)``
   chosen by the *online* agent networks and evaluated by the *target* critic (double-DQN style:
   the choice and the evaluation come from different networks, against Q-learning's
   over-estimation; [HARL]'s released code chooses with target agent networks instead):
   ``y = R + γ^K (1 - terminated) · Q_φ'(s', ā'¹..ā'ⁿ)``; φ takes one Adam step on
   ``mean (Q_φ(s, a) - y)²`` over the batch.
2. **Agents, the sequential greedy update** (``sequential=True``). A fresh random permutation
   ``i_{1:n}``; agent ``i_m`` takes one Adam step on the regression ::

       (1/B) Σ_t mean_{a available} ( Q^{i_m}(o_t, a) - Q_φ(s_t, ā_new^{i_{1:m-1}}, a, a_t^{i_{m+1:n}}) )²

   toward the critic's values of *each* of its own actions, the agents already updated at their
   new greedy actions ``ā_new^{i_k} = argmax Q^{i_k}_new(o^{i_k}, ·)`` (after their step), the
   ones not yet updated at the replay batch's actions (``successor_actions: buffer``, the paper's
   sequential form, the default) or at their current greedy actions (``policy``, as the authors'
   released code does). The mean over actions counts the available ones only; the mean over the
   batch counts the samples where the agent is active.
3. **Agents, simultaneous** (``sequential=False``): every agent against the same critic values,
   all others' actions fixed (the batch's or their greedy ones before the update).
4. **Target.** φ' ← τφ + (1 - τ)φ', one multi-tensor op. The agents need no target networks: the
   critic's target reads their online greedy choice.

The critic's output grows as ∏ n_i: a task whose joint action space exceeds
``algo.max_joint_actions`` is refused (:func:`check_joint_action_space`); HASAC's discrete form
needs no joint-action output.

:class:`HAD3QNLearner` evaluates the critic once per agent phase (its values do not change while
the agents step) and reads each agent's targets from it with
:meth:`~haml.models.dueling.DuelingJointQCritic.agent_values`. :func:`reference_update` is the same
update written plainly (each target built by looping over the agent's actions and evaluating the
critic on every such joint action): the specification the parity test compares against.

[HARL]: Zhong, Kuba et al., "Heterogeneous-Agent Reinforcement Learning", JMLR 2024.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from haml.algorithms.haddpg import DDPGMetrics
from haml.algorithms.off_policy_base import OffPolicyLearnerBase, check_replay_keys
from haml.config.schema import check_choice
from haml.models.deterministic import frozen_copy, polyak_update
from haml.models.dueling import DuelingJointQCritic, DuelingQNetwork, available_actions
from haml.models.policies import parse_action_space
from haml.ops.masked import masked_mean

if TYPE_CHECKING:  # the buffer imports gymnasium; the learner only reads the sample's fields
    from haml.buffers.replay import ReplaySample

__all__ = [
    "SUCCESSOR_ACTIONS",
    "HAD3QNConfig",
    "HAD3QNLearner",
    "check_joint_action_space",
    "reference_update",
]

SUCCESSOR_ACTIONS = ("buffer", "policy")

OnAgent = Callable[[int, int, torch.Tensor], None]
"""``on_agent(position m, agent i_m, regression loss)``, called after each agent's step."""


@dataclass
class HAD3QNConfig:
    """HAD3QN (the ``algo:`` section). Defaults: the authors' released configuration for HAD3QN
    (the discount γ, 0.95 there, is the run's ``train.gamma``)."""

    actor_lr: float = 5e-4
    """Learning rate of every agent's Q network (Adam)."""
    critic_lr: float = 1e-3
    """Learning rate of the centralised critic (Adam)."""
    tau: float = 0.005
    """Polyak coefficient of the target critic, in (0, 1]: φ' ← τφ + (1 - τ)φ'."""
    n_step: int = 1
    """Rewards summed before bootstrapping."""
    batch_size: int = 1000
    """Transitions per update."""
    buffer_size: int = 1_000_000
    """Replay capacity, in transitions (at least ``batch_size``)."""
    warmup_steps: int = 10_000
    """Env steps with uniform random (available) actions before the agents act and learning starts."""
    updates_per_step: float = 0.05
    """Updates per env step (the authors': one update per vector step of 20 envs)."""
    train_every: int = 50
    """Vector-env steps between update rounds (each round does the updates owed so far)."""
    epsilon: float = 0.05
    """ε of the ε-greedy exploration, in [0, 1]: each agent in each env takes a uniform random
    available action with this probability, else its greedy one. Fixed (no schedule)."""
    dueling_hidden: list[int] = field(default_factory=lambda: [128])
    """Widths of the V and A streams after the trunk (``actor.hidden`` / ``critic.network.hidden``),
    in the agents' networks and in the critic."""
    successor_actions: str = "buffer"
    """Actions of the agents not yet updated in the sequential update: ``buffer`` (the paper's
    sequential form) or ``policy`` (their current greedy actions, as the authors' released code)."""
    max_joint_actions: int = 4096
    """Largest joint action space ∏ n_i accepted: the critic has one output per joint action."""
    max_grad_norm: float = 0.0
    """Gradient-norm clip of every agent and critic step; 0 turns it off."""
    checkpoint_buffer: bool = True
    """Keep the replay buffer's contents in every checkpoint (exact resume, at the buffer's size
    on disk); false: a resumed run refills the buffer from empty."""

    def __post_init__(self) -> None:
        check_replay_keys(self, positive=("max_joint_actions",), non_negative=("epsilon",))
        if self.epsilon > 1:
            raise ValueError(f"algo.epsilon must be in [0, 1], got {self.epsilon!r}")
        if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in self.dueling_hidden):
            raise ValueError(
                f"algo.dueling_hidden widths must be positive integers, got {list(self.dueling_hidden)}"
            )
        check_choice("algo", "successor_actions", self.successor_actions, SUCCESSOR_ACTIONS)


def check_joint_action_space(action_counts: Sequence[int], limit: int) -> int:
    """∏ n_i of ``action_counts``; an error that says why and what to use instead when it is
    larger than ``limit`` (``algo.max_joint_actions``)."""
    n_joint = math.prod(action_counts)
    if n_joint > limit:
        raise ValueError(
            f"had3qn: the joint action space has {' x '.join(map(str, action_counts))} = {n_joint} "
            f"joint actions, more than algo.max_joint_actions = {limit}. HAD3QN's centralised critic "
            f"has one output per joint action, which grows exponentially with the agents; use "
            f"hasac (discrete HASAC, whose critic takes the joint action as input) for this task, "
            f"or raise algo.max_joint_actions if the critic's size is acceptable"
        )
    return n_joint


def _action_counts(action_spaces: Sequence[Any]) -> list[int]:
    counts = []
    for i, space in enumerate(action_spaces):
        kind, n = parse_action_space(space, owner=f"had3qn (agent {i})")
        if kind != "categorical":
            raise ValueError(
                f"had3qn: agent {i}'s action space is {type(space).__name__}; HAD3QN acts in "
                f"Discrete action spaces only"
            )
        counts.append(n)
    return counts


def _active(batch: Any, agent: int) -> torch.Tensor | None:
    """Agent ``agent``'s active mask ``[B]`` (None: all samples count)."""
    masks = getattr(batch, "active_masks", None)
    return None if masks is None else masks[agent].reshape(-1)


def _mask(masks: Sequence[torch.Tensor] | None, agent: int) -> torch.Tensor | None:
    return None if masks is None else masks[agent]


def regression_loss(
    q: torch.Tensor,
    target: torch.Tensor,
    action_mask: torch.Tensor | None,
    active: torch.Tensor | None,
) -> torch.Tensor:
    """``masked_mean_t( mean_{a available} (q[t, a] - target[t, a])² )`` for ``q``, ``target``
    ``[B, n]``: the mean over the available actions of each sample, then over the active samples."""
    squared = (q - target).square()
    available = available_actions(action_mask, squared)
    if available is None:
        per_sample = squared.mean(-1)
    else:
        weight = available.to(squared.dtype)
        per_sample = (squared * weight).sum(-1) / weight.sum(-1)
    return masked_mean(per_sample, active)


class HAD3QNLearner(OffPolicyLearnerBase):
    """The HAD3QN update of the agents' Q networks ``policies`` and the joint ``critic``; see the
    module doc. Builds the target critic and the Adam optimisers.

    Follows the off-policy learner protocol of :class:`~haml.algorithms.haddpg.DDPGLearner`
    (``build_policies``, ``build_critic``, ``explore``, ``update``, ``set_progress``,
    ``state_dict``). ``sequential=False`` gives the simultaneous variant (step 3).
    """

    def __init__(
        self,
        policies: Sequence[DuelingQNetwork],
        critic: DuelingJointQCritic,
        cfg: HAD3QNConfig,
        gamma: float,
        sequential: bool = True,
    ) -> None:
        self.policies = list(policies)
        if len({id(p) for p in self.policies}) != len(self.policies):
            raise ValueError("HAD3QNLearner: every agent needs its own Q network (no sharing)")
        counts = tuple(p.action_dim for p in self.policies)
        if counts != critic.action_counts:
            raise ValueError(
                f"HAD3QNLearner: the agents' action counts {counts} differ from the critic's "
                f"action_counts {critic.action_counts}"
            )
        check_joint_action_space(counts, cfg.max_joint_actions)
        if not 0 <= gamma <= 1:
            raise ValueError(f"HAD3QNLearner: 'gamma' must be in [0, 1], got {gamma!r}")
        self.critic = critic
        self.cfg = cfg
        self.gamma = float(gamma)
        self.sequential = bool(sequential)
        self.target_critic = frozen_copy(critic)
        self._agent_params = [[p for p in q.parameters() if p.requires_grad] for q in self.policies]
        self._critic_params = [p for p in critic.parameters() if p.requires_grad]
        # Plain Adam (the fused kernel: one per tensor, the same numbers as the default one).
        self.agent_optimizers = [
            torch.optim.Adam(params, lr=cfg.actor_lr, fused=True) for params in self._agent_params
        ]
        self.critic_optimizer = torch.optim.Adam(self._critic_params, lr=cfg.critic_lr, fused=True)

    # -- what the off-policy runner asks of its learner --------------------------------------------

    @staticmethod
    def build_policies(cfg: Any, espec: Any, device: torch.device) -> list[nn.Module]:
        """One :class:`DuelingQNetwork` Q^i(o^i, ·) per agent of ``espec``: the trunk of
        ``cfg.actor``, the streams of ``cfg.algo.dueling_hidden``."""
        _action_counts(espec.action_spaces)
        net = cfg.actor
        return [
            DuelingQNetwork(int(obs.shape[0]), action, hidden=tuple(net.hidden),
                            dueling_hidden=tuple(cfg.algo.dueling_hidden), activation=net.activation,
                            layer_norm=net.layer_norm, input_norm=net.input_norm, device=device)
            for obs, action in zip(espec.obs_spaces, espec.action_spaces)
        ]

    @staticmethod
    def build_critic(cfg: Any, espec: Any, device: torch.device) -> DuelingJointQCritic:
        """The joint critic Q_φ(s, ·) of ``cfg.critic.network`` (and ``cfg.algo.dueling_hidden``);
        refuses a joint action space above ``cfg.algo.max_joint_actions``."""
        counts = _action_counts(espec.action_spaces)
        check_joint_action_space(counts, cfg.algo.max_joint_actions)
        net = cfg.critic.network
        return DuelingJointQCritic(espec.state_dim, counts, hidden=tuple(net.hidden),
                                   dueling_hidden=tuple(cfg.algo.dueling_hidden),
                                   activation=net.activation, layer_norm=net.layer_norm,
                                   input_norm=net.input_norm, device=device)

    def explore(
        self, obs: Sequence[torch.Tensor], action_masks: Sequence[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """Acting actions after the warm-up: each agent ε-greedy over its available actions, ε
        drawn independently per env (global torch RNG)."""
        eps = self.cfg.epsilon
        return [q.explore(o, eps, _mask(action_masks, i))
                for i, (q, o) in enumerate(zip(self.policies, obs))]

    # -- the update ------------------------------------------------------------------------------

    def greedy_actions(
        self, obs: Sequence[torch.Tensor], action_masks: Sequence[torch.Tensor] | None
    ) -> list[torch.Tensor]:
        """Every agent's ``argmax_{a available} Q^i(o^i, a)`` ``[B]``, without gradient."""
        return [q.greedy(o, _mask(action_masks, i)) for i, (q, o) in enumerate(zip(self.policies, obs))]

    def critic_step(self, batch: ReplaySample) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 1 of the module doc; returns ``(q_loss, q_mean)`` detached."""
        with torch.no_grad():
            next_actions = self.greedy_actions(batch.next_obs, batch.next_action_masks)
            next_q = self.target_critic.value(batch.next_state, next_actions, batch.next_action_masks)
            y = batch.reward + batch.discount * next_q
        q = self.critic.value(batch.state, batch.actions, batch.action_masks)
        q_loss = F.mse_loss(q, y)
        self._step(self.critic_optimizer, self._critic_params, q_loss)
        return q_loss.detach(), q.detach().mean()

    def agent_phase(
        self, batch: ReplaySample, on_agent: OnAgent | None = None
    ) -> list[torch.Tensor]:
        """Steps 2-3 of the module doc; returns each agent's regression loss (agent order).

        ``joint`` holds the actions the critic is read at for every agent: the batch's or the
        current greedy ones at first, each agent's new greedy action once it is updated.
        """
        n = self.n_agents
        order = self.agent_order()
        masks = batch.action_masks
        with torch.no_grad():
            q_all = self.critic(batch.state, masks)  # [B, N]: fixed during the agents' steps
            if self.cfg.successor_actions == "policy":
                joint = self.greedy_actions(batch.obs, masks)
            else:
                joint = list(batch.actions)
        losses: list[torch.Tensor] = [torch.zeros(())] * n
        for m, i in enumerate(order):
            q_i, o_i, mask_i = self.policies[i], batch.obs[i], _mask(masks, i)
            with torch.no_grad():
                target = self.critic.agent_values(q_all, joint, i)  # Q(s, ā^{-i}, ·) [B, n_i]
            loss = regression_loss(q_i(o_i, mask_i), target, mask_i, _active(batch, i))
            self._step(self.agent_optimizers[i], self._agent_params[i], loss)
            losses[i] = loss.detach()
            if self.sequential and m < n - 1:
                joint[i] = q_i.greedy(o_i, mask_i)  # ā_new^{i_m}: what the successors see
            if on_agent is not None:
                on_agent(m, i, losses[i])
        return losses

    def update_targets(self) -> None:
        """Step 4: φ' ← τφ + (1 - τ)φ', one multi-tensor op."""
        polyak_update([self.target_critic], [self.critic], self.cfg.tau)

    def update(self, batch: ReplaySample, on_agent: OnAgent | None = None) -> DDPGMetrics:
        """One HAD3QN update (critic, agents, target) from ``batch``."""
        q_loss, q_mean = self.critic_step(batch)
        losses = self.agent_phase(batch, on_agent)
        self.update_targets()
        return DDPGMetrics(q_loss=q_loss, q_mean=q_mean, actor_losses=list(losses))

    # -- checkpoints -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The critic, the target critic and every optimiser (the agents' networks are the
        runner's)."""
        return {
            "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "agent_optimizers": [opt.state_dict() for opt in self.agent_optimizers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["agent_optimizers"]) != self.n_agents:
            raise ValueError(
                f"HAD3QNLearner: the saved state is for {len(state['agent_optimizers'])} agents, "
                f"this learner has {self.n_agents}"
            )
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        for opt, saved in zip(self.agent_optimizers, state["agent_optimizers"]):
            opt.load_state_dict(saved)


def reference_update(
    learner: HAD3QNLearner, batch: ReplaySample, on_agent: OnAgent | None = None
) -> DDPGMetrics:
    """:meth:`HAD3QNLearner.update` written plainly, on ``learner``'s networks and optimisers: the
    specification (same numbers up to rounding, same draws from the global RNG).

    Every greedy action is the argmax of the network's full Q over the available actions; every
    agent's target is built by evaluating the critic on each joint action in which that agent
    takes one of its actions (the others fixed), one column at a time; the target critic is
    updated one tensor at a time.
    """
    cfg, agents, critic = learner.cfg, learner.policies, learner.critic
    n = len(agents)
    masks, next_masks = batch.action_masks, batch.next_action_masks

    def greedy(i: int, obs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():
            q = agents[i](obs, mask)
            if mask is not None:
                q = torch.where(mask | ~mask.any(-1, keepdim=True), q, torch.full_like(q, -math.inf))
            return q.argmax(-1)

    # Critic: y = R + γ^K (1 - terminated) Q_φ'(s', argmax Q^1(o'^1), ..., argmax Q^n(o'^n)).
    with torch.no_grad():
        next_actions = [greedy(i, batch.next_obs[i], _mask(next_masks, i)) for i in range(n)]
        y = batch.reward + batch.discount * learner.target_critic.value(
            batch.next_state, next_actions, next_masks)
    q = critic.value(batch.state, batch.actions, masks)
    q_loss = F.mse_loss(q, y)
    learner.critic_optimizer.zero_grad()
    q_loss.backward()
    if cfg.max_grad_norm > 0:
        nn.utils.clip_grad_norm_(critic.parameters(), cfg.max_grad_norm)
    learner.critic_optimizer.step()

    # Agents: i_m regresses Q^{i_m}(o, ·) on Q(s, ā_new^{i_{1:m-1}}, ·, a^{i_{m+1:n}}).
    order = torch.randperm(n).tolist() if learner.sequential else list(range(n))
    if cfg.successor_actions == "policy":  # the greedy actions before any agent's step
        current = [greedy(j, batch.obs[j], _mask(masks, j)) for j in range(n)]
    updated: list[int] = []
    losses: list[torch.Tensor] = [torch.zeros(())] * n
    for m, i in enumerate(order):
        others: list[torch.Tensor] = []
        for j in range(n):
            if learner.sequential and j in updated:
                others.append(greedy(j, batch.obs[j], _mask(masks, j)))  # ā_new^j
            elif cfg.successor_actions == "policy":
                others.append(current[j])
            else:
                others.append(batch.actions[j])
        columns = []
        with torch.no_grad():
            for a in range(agents[i].action_dim):
                joint = [torch.full_like(others[i], a) if j == i else others[j] for j in range(n)]
                columns.append(critic.value(batch.state, joint, masks))
        target = torch.stack(columns, dim=-1)
        q_i = agents[i](batch.obs[i], _mask(masks, i))
        squared = (q_i - target) ** 2
        if masks is None:
            per_sample = squared.mean(-1)
        else:
            available = (masks[i] | ~masks[i].any(-1, keepdim=True)).to(squared.dtype)
            per_sample = (squared * available).sum(-1) / available.sum(-1)
        loss = masked_mean(per_sample, _active(batch, i))
        optimizer = learner.agent_optimizers[i]
        optimizer.zero_grad()
        loss.backward()
        if cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(agents[i].parameters(), cfg.max_grad_norm)
        optimizer.step()
        updated.append(i)
        losses[i] = loss.detach()
        if on_agent is not None:
            on_agent(m, i, losses[i])

    # Target: φ' ← τφ + (1 - τ)φ'.
    with torch.no_grad():
        for t, s in zip(learner.target_critic.parameters(), critic.parameters()):
            t.mul_(1 - cfg.tau).add_(s, alpha=cfg.tau)
    return DDPGMetrics(q_loss=q_loss.detach(), q_mean=q.detach().mean(), actor_losses=losses)
