"""The runners: one per algorithm family, all behind one protocol (:class:`Runner`).

:func:`make_runner` is how every entry point gets a runner: the algorithm's registry entry says
which family trains it. Only this package names a runner class.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from haml.runners.base import AgentUpdate, Runner, UpdateHook
from haml.runners.evaluate import EvalResult, evaluate
from haml.runners.guards import TrainingDiverged

if TYPE_CHECKING:
    from haml.config.schema import ExperimentConfig
    from haml.envs.base import EnvSpec, VectorMultiAgentEnv

__all__ = [
    "AgentUpdate",
    "EvalResult",
    "Runner",
    "TrainingDiverged",
    "UpdateHook",
    "action_kinds",
    "acting_policies",
    "evaluate",
    "make_runner",
]

_RUNNER_CLASSES = {
    "on_policy": "haml.runners.on_policy:OnPolicyRunner",
    "off_policy": "haml.runners.off_policy:OffPolicyRunner",
}
"""Runner kind (``AlgoSpec.runner``) → ``module:class``, imported when first used."""


def action_kinds(espec: EnvSpec) -> set[str]:
    """The kinds of the agents' action spaces: ``"discrete"`` for ``Discrete``, else
    ``"continuous"`` (a ``Box``)."""
    from gymnasium.spaces import Discrete

    return {"discrete" if isinstance(s, Discrete) else "continuous" for s in espec.action_spaces}


def _runner_class(algo: str) -> type:
    from haml.algorithms.registry import algo_spec

    module, name = _RUNNER_CLASSES[algo_spec(algo).runner].split(":")
    return getattr(importlib.import_module(module), name)


def acting_policies(cfg: ExperimentConfig, espec: EnvSpec, device: Any) -> list[Any]:
    """The policies ``cfg``'s runner acts with (one per agent, untrained): what a checkpoint's
    ``policies`` entry loads into (``haml eval``)."""
    return _runner_class(cfg.algo_name).build_acting_policies(cfg, espec, device)


def _other_action_kind_hint(family: str, kinds: Any) -> str:
    """``"; or ..."``: the env family's option that gives actions of a kind in ``kinds``, where its
    ``action_kind_option`` hook has one (nothing for an env that is not a registered family)."""
    from haml.envs.registry import env_names, family_hook

    if family not in env_names():
        return ""
    hook = family_hook(family, "action_kind_option")
    options = [option for option in map(hook, sorted(kinds)) if option] if hook else []
    return f"; or switch the env's actions with {' or '.join(options)}" if options else ""


def make_runner(
    cfg: ExperimentConfig,
    env: VectorMultiAgentEnv,
    eval_env: VectorMultiAgentEnv | None = None,
    **options: Any,
) -> Runner:
    """The runner that trains ``cfg.algo_name`` on ``env`` (evaluating on ``eval_env``).

    ``options`` go to the runner class (e.g. the on-policy runner's ``sequential`` override).
    An algorithm that cannot act in the env's action spaces is an error naming the algorithms
    that can."""
    from haml.algorithms.registry import algo_spec, algos_for_action_kind

    spec = algo_spec(cfg.algo_name)
    if cfg.train.rollout_workers > 0 and spec.runner != "on_policy":
        raise ValueError(
            f"train.rollout_workers: only on-policy algorithms collect with rollout workers; "
            f"{spec.name} is {spec.runner.replace('_', '-')}"
        )
    for kind in sorted(action_kinds(env.spec)):
        if kind not in spec.action_kinds:
            raise ValueError(
                f"{spec.name} cannot act in {kind} action spaces ({env.spec.env} {env.spec.task}); "
                f"algorithms that can: {', '.join(algos_for_action_kind(kind))}"
                + _other_action_kind_hint(env.spec.env, spec.action_kinds)
            )
    return _runner_class(spec.name)(cfg, env, eval_env, **options)
