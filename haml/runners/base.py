"""The runner protocol: what ``haml.train``, ``haml eval``, ``haml bench`` and the experiments need
of a runner, whichever family (on-policy, off-policy) it belongs to.

A runner holds the whole training state of one run: the networks, their learners, the envs' last
step and the counters. Callers build one with :func:`haml.runners.make_runner`, which picks the
runner class from the algorithm's registry entry; no module outside ``haml/runners/`` names a
runner class.

Per-agent updates can be observed through :meth:`Runner.add_update_hook`: after each update of an
agent (or of a shared policy) the runner calls every hook with an :class:`AgentUpdate`. The
experiments use it to record each agent's step of a sequential update.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from haml.config.schema import ExperimentConfig
from haml.algorithms.registry import algo_spec
from haml.envs.base import WIN_METRIC, EnvSpec, EnvStep, EpisodeStats, VectorMultiAgentEnv, episode_means
from haml.logging import metrics as M
from haml.models.build import load_policy_weights, policy_state_dicts
from haml.runners.env_position import restore_env_position, save_env_position
from haml.runners.evaluate import EvalResult, evaluate
from haml.runners.guards import check_finite

__all__ = ["AgentUpdate", "Runner", "RunnerBase", "UpdateHook"]


@dataclass
class AgentUpdate:
    """One agent's (or one shared policy's) update within an iteration, as hooks see it."""

    iteration: int
    """The iteration being run (0-based: the runner's ``iteration`` before it ends)."""
    position: int
    """The update's place in this iteration's agent order (0 first)."""
    agents: list[int]
    """The agents whose policy was updated (one, or all for a shared policy)."""
    policy: nn.Module
    """The policy just updated (its parameters are the new ones)."""
    factor: torch.Tensor | None
    """The factor M this update was weighted with (``[T, E]``; ones for the first agent and for
    simultaneous updates), or None where the family has no such factor."""
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    """The learner's own metrics of this update (detached)."""


UpdateHook = Callable[[AgentUpdate], None]


@runtime_checkable
class Runner(Protocol):
    """What every runner offers (:class:`~haml.runners.on_policy.OnPolicyRunner` is one)."""

    cfg: ExperimentConfig
    env: VectorMultiAgentEnv
    """The training envs."""
    iteration: int
    """Iterations completed."""
    env_steps: int
    """Environment steps taken (all envs together)."""
    total_iterations: int
    """Iterations ``cfg.train.steps`` asks for."""
    policies: list[nn.Module]
    """One acting policy per agent (the same module for every agent when it is shared)."""
    last_eval: EvalResult | None
    """The latest :meth:`run_eval` result."""
    last_timing: dict[str, float]
    """Seconds of the latest iteration's phases (``collect_seconds``, ``update_seconds``)."""

    def iterate(self) -> dict[str, float]:
        """One iteration (collect, update); returns host-side metrics under the fixed names of
        :mod:`haml.logging.metrics`. Raises :class:`~haml.runners.guards.TrainingDiverged` when
        a loss or a parameter stops being finite."""
        ...

    def run_eval(self, episodes: int, seed: int) -> EvalResult:
        """``episodes`` deterministic episodes on the evaluation envs, reseeded with ``seed``."""
        ...

    def reset_envs(self) -> None:
        """Start fresh episodes in the training envs (e.g. after they served as eval envs)."""
        ...

    def add_update_hook(self, hook: UpdateHook) -> None:
        """Call ``hook`` after every agent's (or shared policy's) update."""
        ...

    def modules(self) -> list[nn.Module]:
        """Every distinct trained network (policies, critics)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything that resumes this run exactly, but the RNG states (the caller adds them)."""
        ...

    def load_state_dict(self, state: dict[str, Any], on_warning: Callable[[str], None] = print) -> None:
        """Restore :meth:`state_dict`'s output; ``on_warning`` hears what cannot be restored."""
        ...

    def close(self) -> None:
        """Release what the runner allocated (buffers); the envs belong to whoever made them."""
        ...


class RunnerBase:
    """What both runner families share: the iteration's frame (time the collection and the update,
    check for divergence, count, turn the metrics into host floats with the episodes' means),
    evaluation and the update hooks. A subclass calls :meth:`_init_run` first, sets ``policies``
    and ``batch_steps`` (env steps per iteration), and implements :meth:`_collect_phase`,
    :meth:`_update_phase` and :meth:`modules`."""

    cfg: ExperimentConfig
    eval_env: VectorMultiAgentEnv | None
    policies: list[nn.Module]
    batch_steps: int

    def _init_run(
        self,
        cfg: ExperimentConfig,
        env: VectorMultiAgentEnv,
        eval_env: VectorMultiAgentEnv | None,
        sequential: bool | None,
    ) -> EnvSpec:
        """The state every runner starts with: the config, its registry entry, the update scheme
        (``sequential`` overrides the entry's), the envs, the device and zeroed counters; returns
        the env's spec."""
        self.cfg = cfg
        self.spec = algo_spec(cfg.algo_name)
        self.sequential = self.spec.sequential if sequential is None else bool(sequential)
        self.env = env
        self.eval_env = eval_env
        self.device = torch.device(cfg.train.device)
        # Rollout workers step envs of their own: ``env`` then only gives the spec.
        if env.num_envs != cfg.train.num_envs and cfg.train.rollout_workers == 0:
            raise ValueError(
                f"the env has {env.num_envs} copies but train.num_envs is {cfg.train.num_envs}"
            )
        self.n_agents = env.spec.n_agents
        self.iteration = 0
        self.env_steps = 0
        self.last_eval: EvalResult | None = None
        self.last_timing: dict[str, float] = {}
        self._hooks: list[UpdateHook] = []
        self._step: EnvStep | None = None
        return env.spec

    def _collect_phase(self) -> tuple[Any, list[EpisodeStats]]:
        """Act in the envs: ``(what the update needs, the episodes that ended)``."""
        raise NotImplementedError

    def _update_phase(self, collected: Any) -> dict[str, torch.Tensor]:
        """Learn from it: detached metrics under the fixed names (no host sync)."""
        raise NotImplementedError

    def modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def add_update_hook(self, hook: UpdateHook) -> None:
        """Call ``hook`` with an :class:`AgentUpdate` after every actor update."""
        if not callable(hook):
            raise TypeError(f"add_update_hook: 'hook' must be callable, got {type(hook).__name__}")
        self._hooks.append(hook)

    def _notify(self, update: AgentUpdate) -> None:
        for hook in self._hooks:
            hook(update)

    def check_finite(self, metrics: dict[str, torch.Tensor]) -> None:
        """:func:`~haml.runners.guards.check_finite` of this iteration's metrics and modules."""
        check_finite(metrics, self.modules(), self.iteration + 1)

    def iterate(self) -> dict[str, float]:
        """One whole iteration; returns host-side metrics (this is where the host syncs)."""
        start = time.perf_counter()
        collected, episodes = self._collect_phase()
        mid = time.perf_counter()
        metrics = self._update_phase(collected)
        self.check_finite(metrics)
        self.iteration += 1
        end = time.perf_counter()
        out = {k: float(v) for k, v in metrics.items()}
        out[M.STEPS_PER_SECOND] = self.batch_steps / (end - start)
        self.last_timing = {"collect_seconds": mid - start, "update_seconds": end - mid}
        out.update(_episode_metrics(episodes))
        return out

    def _common_state(self) -> dict[str, Any]:
        """The part of :meth:`state_dict` every runner has: its algorithm, counters, policies,
        and where its envs are (:mod:`~haml.runners.env_position`)."""
        env_state, position = save_env_position(self.env, self._step)
        return {
            "algo": self.spec.name,
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "policies": policy_state_dicts(self.policies),
            "env": env_state,
            "env_step": position,
        }

    def _load_common_state(self, state: dict[str, Any]) -> None:
        """Check that ``state`` is of this algorithm; load its policies and counters."""
        if state["algo"] != self.spec.name:
            raise ValueError(
                f"the checkpoint is of algorithm {state['algo']!r}, not {self.spec.name!r}"
            )
        load_policy_weights(self.policies, state["policies"])
        self.iteration = int(state["iteration"])
        self.env_steps = int(state["env_steps"])

    def _restore_envs(self, state: dict[str, Any], on_warning: Callable[[str], None]) -> dict[str, Any] | None:
        """Reset the envs, then put them where ``state`` left them; returns the saved position
        (None when the envs stay freshly reset, which ``on_warning`` is told where it matters)."""
        self.reset_envs()
        saved = state["env_step"]
        step = restore_env_position(self.env, state["env"], saved, self.device, on_warning)
        if step is None:
            return None
        self._step = step
        return saved

    def run_eval(self, episodes: int, seed: int) -> EvalResult:
        if self.eval_env is None:
            raise RuntimeError("this runner has no evaluation env")
        self.last_eval = evaluate(self.policies, self.eval_env, episodes, seed=seed)
        return self.last_eval


def _episode_metrics(episodes: Sequence[EpisodeStats]) -> dict[str, float]:
    """The training episodes' means under the fixed names (none when no episode ended)."""
    if not episodes:
        return {}
    means = episode_means(episodes)
    out = {M.TRAIN_RETURN: means.ret, M.TRAIN_EPISODE_LENGTH: means.length}
    for key, value in means.metrics.items():
        out[f"{M.ENV_PREFIX}{key}"] = value
    if WIN_METRIC in means.metrics:
        out[M.TRAIN_WIN_RATE] = means.metrics[WIN_METRIC]
    return out
