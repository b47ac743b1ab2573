"""The one on-policy runner: collect → GAE → actor updates (sequential or simultaneous) → critic.

Every registered on-policy algorithm runs through :class:`OnPolicyRunner`; what differs between
them comes from their registry entry (:class:`~haml.algorithms.AlgoSpec`): the actor update
(clipped / unclipped surrogate or trust-region step), sequential (HA) or simultaneous (MA)
updating, shared or per-agent actors, a central or per-agent critic. The runner never looks at
the algorithm's or the environment's name.

One iteration ([HATRPO], Algorithms 2–3; [HAML], Algorithm 1):

1. collect ``T = rollout_length`` steps of ``E = num_envs`` envs with the current joint policy;
2. V(s_t) and V(s_{t+1}) from the critic, Â and R̂ from :func:`haml.ops.gae` (bootstrapping from
   the true next state at time limits, not at terminal states), Â normalised per agent;
3. draw the agent order (a fresh random permutation for HA algorithms), set M = 1, and for each
   agent (or the shared policy) run the actor update with weight M, then fold the agent's ratio
   π_new/π_old into M (HA only);
4. train the critic on R̂.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from haml.algorithms.base import ActorBatch, Sequences
from haml.algorithms.critics import CriticLearner, RolloutValues
from haml.algorithms.registry import algo_spec
from haml.buffers.layout import ChunkLayout, FlatLayout, SampleLayout
from haml.buffers.rollout import RolloutBuffer
from haml.config.schema import ExperimentConfig
from haml.envs.base import EnvSpec, EnvStep, EpisodeStats, VectorMultiAgentEnv
from haml.logging import metrics as M
from haml.models.build import build_policies, build_value_network, unique_policies
from haml.models.recurrent import is_recurrent
from haml.ops import gae
from haml.runners.acting import JointActor, collect_rollout
from haml.runners.base import AgentUpdate, RunnerBase
from haml.runners.guards import single_thread
from haml.runners.rollout_workers import RolloutWorkers
from haml.runners.sequential import agent_order, fold_factor

__all__ = ["OnPolicyRunner"]


def _normalise(adv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Â → (Â − mean) / (std + 1e-5) over the active entries (HARL's per-agent normalisation)."""
    if mask is None:
        return (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-5)
    weight = mask.to(adv.dtype)
    count = weight.sum().clamp(min=1.0)
    mean = (adv * weight).sum() / count
    var = (((adv - mean) ** 2) * weight).sum() / count
    return (adv - mean) / (var.sqrt() + 1e-5)


def _explained_variance(
    raw: torch.Tensor, returns: torch.Tensor, critics: list[CriticLearner]
) -> torch.Tensor:
    """1 − Var(R̂ − V) / Var(R̂) of the collection-time values (in return units), over all critics."""
    values = torch.stack(
        [
            c.value_norm.denormalize(raw[..., k]) if c.value_norm is not None else raw[..., k]
            for k, c in enumerate(critics)
        ],
        -1,
    )
    var = returns.var(unbiased=False)
    return 1.0 - (returns - values).var(unbiased=False) / var.clamp(min=1e-12)


class OnPolicyRunner(RunnerBase):
    """Trains ``cfg.algo_name`` on ``env`` (a :class:`VectorMultiAgentEnv` with
    ``cfg.train.num_envs`` envs), evaluating on ``eval_env`` when given; follows
    :class:`haml.runners.Runner`.

    The runner holds the whole training state; :meth:`state_dict` / :meth:`load_state_dict` are
    what a checkpoint stores (weights, optimisers, value normalisers, counters, the envs' states
    and the observation the next step acts on; the RNG states are added by the caller).

    ``sequential`` overrides the registry entry's update scheme (True: one agent after another
    weighted by M; False: every agent from the same batch with M = 1), for experiments that
    compare the two schemes with one learner.

    With ``cfg.train.rollout_workers > 0`` the rollout is collected by
    :class:`~haml.runners.rollout_workers.RolloutWorkers` (Ray actors building their envs from
    ``cfg.env``; ``env`` then only gives the spec), or by ``rollout_workers`` when given (e.g.
    in-process workers); the update is the same either way.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        env: VectorMultiAgentEnv,
        eval_env: VectorMultiAgentEnv | None = None,
        sequential: bool | None = None,
        rollout_workers: RolloutWorkers | None = None,
    ) -> None:
        espec = self._init_run(cfg, env, eval_env, sequential)
        self._build_actors(espec)
        self._build_critics(espec)
        self.batch_steps = cfg.train.rollout_length * cfg.train.num_envs
        self.total_iterations = max(1, math.ceil(cfg.train.steps / self.batch_steps))
        self.last_order: list[int] = []
        self._buffer: RolloutBuffer | None = None
        self._actor = JointActor(self.policies, cfg.train.num_envs)
        chunk = cfg.train.chunk_length
        self._actor_layout: SampleLayout = ChunkLayout(chunk) if self._actor.recurrent else FlatLayout()
        self._critic_layout: SampleLayout = (
            ChunkLayout(chunk) if is_recurrent(self.critics[0].critic) else FlatLayout()
        )
        for layout in (self._actor_layout, self._critic_layout):
            if isinstance(layout, ChunkLayout):
                layout._check(cfg.train.rollout_length)
        self._critic_states = self._initial_critic_states()
        if rollout_workers is None and cfg.train.rollout_workers > 0:
            rollout_workers = RolloutWorkers(cfg, self.device)
        self.rollout_workers = rollout_workers
        """Where the rollout is collected when not in this process (None: in-process)."""

    # -- construction -------------------------------------------------------------------------

    @staticmethod
    def build_acting_policies(cfg: ExperimentConfig, espec: EnvSpec, device: torch.device) -> list[nn.Module]:
        """The stochastic policies of ``cfg`` (one per agent; shared when the algorithm shares)."""
        return OnPolicyRunner._policies_and_groups(cfg, espec, device)[0]

    @staticmethod
    def _policies_and_groups(cfg: ExperimentConfig, espec: EnvSpec, device: torch.device):
        spec = algo_spec(cfg.algo_name)
        return build_policies(cfg.actor, espec.obs_spaces, espec.action_spaces, device,
                              share=spec.share_actors, owner=spec.name)

    def _build_actors(self, espec: EnvSpec) -> None:
        self.policies, self.groups = self._policies_and_groups(self.cfg, espec, self.device)
        self.actor_learners = [
            self.spec.learner(self.policies[group[0]], self.cfg.algo) for group in self.groups
        ]

    def _build_critics(self, espec: EnvSpec) -> None:
        if self.spec.critic == "local":
            in_dims = [espec.obs_dim(i) for i in range(espec.n_agents)]
        else:
            in_dims = [espec.state_dim]
        net = self.cfg.critic.network
        self.critics = [
            CriticLearner(build_value_network(net, d, self.device), self.cfg.critic) for d in in_dims
        ]

    def _initial_critic_states(self) -> list[torch.Tensor | None]:
        E = self.cfg.train.num_envs
        return [
            c.critic.initial_state(E) if is_recurrent(c.critic) else None for c in self.critics
        ]

    def _critic_of(self, agent: int) -> int:
        return agent if self.spec.critic == "local" else 0

    def _critic_inputs(self, buffer: RolloutBuffer, k: int, final: bool) -> torch.Tensor:
        if self.spec.critic == "local":
            return (buffer.final_obs if final else buffer.obs)[k]
        return buffer.final_state if final else buffer.state

    # -- one iteration --------------------------------------------------------------------------

    def reset_envs(self) -> None:
        if self.rollout_workers is not None:
            self.rollout_workers.reset()
        else:
            self._step = self.env.reset(seed=self.cfg.seed)
        self._actor.reset()
        self._critic_states = self._initial_critic_states()

    @torch.no_grad()
    def collect(self) -> tuple[RolloutBuffer, list[EpisodeStats]]:
        """``T`` steps of every env with the current policies; returns the buffer and the
        episodes that ended meanwhile."""
        T, E = self.cfg.train.rollout_length, self.cfg.train.num_envs
        if self.rollout_workers is not None:
            collected = self.rollout_workers.collect(self.policies)
            self.env_steps += T * E  # counted once the rollout is in, as below
            return collected
        if self._step is None:
            self.reset_envs()
        if self._buffer is None:
            shapes = self._actor.state_shapes()
            self._buffer = RolloutBuffer.allocate(self.env.spec, T, E, self.device, shapes)
        with single_thread():
            self._step, episodes = collect_rollout(self.env, self._actor, self._buffer, self._step)
        self.env_steps += T * E
        return self._buffer, episodes

    def advantages(
        self, buffer: RolloutBuffer
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[RolloutValues]]:
        """``(Â, R̂, raw V)``, each ``[T, E, K]`` with K critics (1 central, n local), and each
        critic's :class:`RolloutValues` (a recurrent critic's states for its training chunks).

        A recurrent critic reads the rollout from the state it ended the previous one with, and
        carries its final state on to the next rollout."""
        readings = []
        for k, critic in enumerate(self.critics):
            reading = critic.rollout_values(
                self._critic_inputs(buffer, k, final=False),
                self._critic_inputs(buffer, k, final=True),
                self._critic_states[k],
                buffer.starts,
            )
            if reading.h_next is not None:
                self._critic_states[k] = reading.h_next
            readings.append(reading)
        K = len(self.critics)
        raw = torch.stack([r.raw for r in readings], -1)
        value = torch.stack([r.value for r in readings], -1)
        next_value = torch.stack([r.next_value for r in readings], -1)
        shape = value.shape
        adv, ret = gae(
            buffer.reward.unsqueeze(-1).expand(shape).contiguous(),
            value,
            next_value,
            buffer.terminated.unsqueeze(-1).expand(shape).contiguous(),
            buffer.truncated.unsqueeze(-1).expand(shape).contiguous(),
            self.cfg.train.gamma,
            self.cfg.train.gae_lambda,
        )
        assert adv.shape[-1] == K
        return adv, ret, raw, readings

    def _actor_batch(
        self, buffer: RolloutBuffer, agents: list[int], adv: torch.Tensor, factor: torch.Tensor
    ) -> ActorBatch:
        """The samples of ``agents`` (one, or all for a shared policy) in the actors' layout;
        ``adv [T, E, K]`` and ``factor [T, E]``."""
        layout = self._actor_layout
        samples = layout.to_samples

        def gather(per_agent: Callable[[int], torch.Tensor]) -> torch.Tensor:
            return layout.concat([samples(per_agent(i)) for i in agents])

        def advantages(i: int) -> torch.Tensor:
            a = adv[..., self._critic_of(i)]
            if self.cfg.train.normalize_advantages:
                a = _normalise(a, None if buffer.active_masks is None else buffer.active_masks[i])
            return a

        sequences = None
        if isinstance(layout, ChunkLayout):
            sequences = Sequences(
                layout.length,
                torch.cat([layout.chunk_starts(buffer.actor_states[i]) for i in agents], 0),
                gather(lambda i: buffer.starts),
            )
        return ActorBatch(
            obs=gather(lambda i: buffer.obs[i]),
            actions=gather(lambda i: buffer.actions[i]),
            logp_old=gather(lambda i: buffer.logp[i]),
            advantages=gather(advantages),
            factor=gather(lambda i: factor),
            mask=None if buffer.active_masks is None else gather(lambda i: buffer.active_masks[i]),
            action_mask=None if buffer.action_masks is None
            else gather(lambda i: buffer.action_masks[i]),
            sequences=sequences,
        )

    def update(self, buffer: RolloutBuffer) -> dict[str, torch.Tensor]:
        """Steps 2–4 of the iteration; returns detached metrics under the fixed names of
        :mod:`haml.logging.metrics` (tensors: no host sync here)."""
        fraction = self.iteration / self.total_iterations
        for learner in (*self.actor_learners, *self.critics):
            learner.set_progress(fraction)
        adv, ret, raw, readings = self.advantages(buffer)
        metrics = self._update_actors(buffer, adv)
        metrics.update(self._update_critics(buffer, ret, raw, readings))
        lrs = [learner.lr for learner in self.actor_learners if getattr(learner, "lr", None) is not None]
        if lrs:
            metrics[M.ACTOR_LR] = torch.tensor(lrs[0])
        metrics[M.CRITIC_LR] = torch.tensor(self.critics[0].lr)
        return metrics

    def _update_actors(self, buffer: RolloutBuffer, adv: torch.Tensor) -> dict[str, torch.Tensor]:
        """Step 3: the actor updates in this iteration's agent order, each weighted by M."""
        T, E = buffer.steps, self.cfg.train.num_envs
        factor = torch.ones(T, E, device=self.device)
        metrics: dict[str, torch.Tensor] = {}
        order = agent_order(len(self.groups), self.sequential)
        self.last_order = order
        for position, g in enumerate(order):
            agents = self.groups[g]
            learner = self.actor_learners[g]
            batch = self._actor_batch(buffer, agents, adv, factor)
            # A shared policy reports under the plain names, one policy per agent per agent.
            name = (lambda m: m) if len(agents) > 1 else (lambda m, i=agents[0]: M.agent_metric(m, i))
            metrics[name(M.FACTOR_MEAN)] = factor.mean()
            metrics[name(M.FACTOR_STD)] = factor.std(unbiased=False)
            metrics[name(M.FACTOR_MAX)] = factor.max()
            if self.sequential:
                if len(agents) != 1:
                    raise RuntimeError("a sequential algorithm updates one agent at a time")
                logp_before = self._batch_log_prob(learner.policy, batch)
            learned = learner.update(batch)
            for key, value in learned.items():
                if key in M.LEARNER_METRICS:
                    metrics[name(M.LEARNER_METRICS[key])] = value
            self._notify(AgentUpdate(self.iteration, position, list(agents), learner.policy, factor, learned))
            if self.sequential:
                logp_after = self._batch_log_prob(learner.policy, batch)
                back = lambda x: self._actor_layout.from_samples(x, T, E)  # noqa: E731
                active = None if buffer.active_masks is None else buffer.active_masks[agents[0]]
                factor = fold_factor(factor, back(logp_before), back(logp_after), active)
        return metrics

    def _update_critics(
        self,
        buffer: RolloutBuffer,
        ret: torch.Tensor,
        raw: torch.Tensor,
        readings: list[RolloutValues],
    ) -> dict[str, torch.Tensor]:
        """Step 4: each critic regresses on R̂."""
        value_losses = []
        layout = self._critic_layout
        for k, critic in enumerate(self.critics):
            inputs = self._critic_inputs(buffer, k, final=False)
            sequences = None
            if isinstance(layout, ChunkLayout):
                sequences = Sequences(
                    layout.length, layout.chunk_starts(readings[k].h_used), layout.to_samples(buffer.starts)
                )
            # Per-agent critics (IPPO) skip the samples where their agent is dead.
            mask = None
            if self.spec.critic == "local" and buffer.active_masks is not None:
                mask = layout.to_samples(buffer.active_masks[k])
            losses = critic.update(
                layout.to_samples(inputs),
                layout.to_samples(ret[..., k]),
                layout.to_samples(raw[..., k]),
                mask,
                sequences,
            )
            value_losses.append(losses["value_loss"])
        return {
            M.VALUE_LOSS: torch.stack(value_losses).mean(),
            M.EXPLAINED_VARIANCE: _explained_variance(raw, ret, self.critics),
        }

    @staticmethod
    @torch.no_grad()
    def _batch_log_prob(policy: nn.Module, batch: ActorBatch) -> torch.Tensor:
        return batch.view(policy).log_prob(batch.obs, batch.actions, batch.action_mask)

    def modules(self) -> list[nn.Module]:
        unique = unique_policies(self.policies)
        return [*unique, *(c.critic for c in self.critics)]

    def _collect_phase(self) -> tuple[RolloutBuffer, list[EpisodeStats]]:
        return self.collect()

    def _update_phase(self, collected: RolloutBuffer) -> dict[str, torch.Tensor]:
        return self.update(collected)

    # -- state ------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = self._common_state()
        if self.rollout_workers is not None:
            # The workers' envs and generators stand in for the (unused) in-process envs'.
            state["env"], state["env_step"] = None, None
            state["rollout_workers"] = self.rollout_workers.state_dict()
            state["rollout_workers"]["critic_states"] = list(self._critic_states)
        elif state["env_step"] is not None:
            state["env_step"]["actor"] = self._actor.state_dict()
            state["env_step"]["critic_states"] = list(self._critic_states)
        state["actor_learners"] = [learner.state_dict() for learner in self.actor_learners]
        state["critics"] = [critic.state_dict() for critic in self.critics]
        return state

    def load_state_dict(self, state: dict[str, Any], on_warning: Callable[[str], None] = print) -> None:
        self._load_common_state(state)
        for learner, s in zip(self.actor_learners, state["actor_learners"]):
            learner.load_state_dict(s)
        for critic, s in zip(self.critics, state["critics"]):
            critic.load_state_dict(s)
        if self.rollout_workers is not None:
            saved = state.get("rollout_workers")
            restored = self.rollout_workers.load_state_dict(saved, on_warning)
        else:
            saved = self._restore_envs(state, on_warning)
            restored = saved is not None
            if restored:
                self._actor.load_state_dict(saved["actor"])
        if restored:
            self._critic_states = [None if h is None else h.to(self.device) for h in saved["critic_states"]]

    def close(self) -> None:
        """Drop the rollout buffer and stop the rollout workers (the envs belong to whoever made
        them)."""
        self._buffer = None
        if self.rollout_workers is not None:
            self.rollout_workers.close()
            self.rollout_workers = None
