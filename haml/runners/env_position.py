"""Where the training envs are, saved and restored with a runner's checkpoint.

A runner acts on the observation of its last env step; to continue exactly after a restart it
needs the envs' own state (simulators, RNGs, episode counters: the adapter's ``state_dict``) and
that observation. Both runners save and restore them here, so a checkpoint's ``env`` and
``env_step`` entries have one layout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from haml.envs.base import EnvStep, VectorMultiAgentEnv

__all__ = ["NO_ENV_STATE_WARNING", "restore_env_position", "save_env_position"]

NO_ENV_STATE_WARNING = (
    "this environment cannot save its state: the resumed run starts from freshly reset envs (the "
    "result will differ from an uninterrupted run)"
)


def save_env_position(env: VectorMultiAgentEnv, step: EnvStep | None) -> tuple[Any, dict[str, Any] | None]:
    """``(env state, the observation to act on next)``; ``(None, None)`` for an env that cannot
    save its state (``NotImplementedError``), and no observation before the first reset."""
    try:
        env_state = env.state_dict()
    except NotImplementedError:
        return None, None
    if step is None:
        return env_state, None
    return env_state, {
        "obs": list(step.obs),
        "state": step.state,
        "action_masks": None if step.action_masks is None else list(step.action_masks),
        "active_masks": None if step.active_masks is None else list(step.active_masks),
    }


def restore_env_position(
    env: VectorMultiAgentEnv,
    env_state: Any,
    saved: dict[str, Any] | None,
    device: torch.device,
    on_warning: Callable[[str], None] = print,
) -> EnvStep | None:
    """Load :func:`save_env_position`'s output into ``env`` (already reset by the caller); returns
    the step to act on next, or None when the caller should keep its freshly reset step."""
    if env_state is None:
        on_warning(NO_ENV_STATE_WARNING)
        return None
    env.load_state_dict(env_state)
    if saved is None:
        return None
    E = env.num_envs
    return EnvStep(
        obs=tuple(o.to(device) for o in saved["obs"]),
        state=saved["state"].to(device),
        reward=torch.zeros(E, device=device),
        terminated=torch.zeros(E, dtype=torch.bool, device=device),
        truncated=torch.zeros(E, dtype=torch.bool, device=device),
        final_obs=tuple(o.to(device) for o in saved["obs"]),
        final_state=saved["state"].to(device),
        action_masks=None if saved["action_masks"] is None
        else tuple(m.to(device) for m in saved["action_masks"]),
        active_masks=None if saved["active_masks"] is None
        else tuple(m.to(device) for m in saved["active_masks"]),
    )
