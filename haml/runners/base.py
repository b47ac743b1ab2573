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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from haml.config.schema import ExperimentConfig
from haml.envs.base import VectorMultiAgentEnv
from haml.runners.evaluate import EvalResult

__all__ = ["AgentUpdate", "Runner", "UpdateHook"]


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
