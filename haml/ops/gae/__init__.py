"""``haml.ops.gae``: batched GAE, native on CPU and CUDA, reference elsewhere."""

from __future__ import annotations

import torch

from haml.ops import _backend, _validate
from haml.ops.gae import reference

__all__ = ["gae"]

_OP = "gae"


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(γ, λ) advantages and returns of time-major ``[T, *batch]`` tensors.

    ``next_values[t]`` is V(s_{t+1}) of the true next state (the final observation where the
    episode was truncated at t). ``terminated`` and ``truncated`` are bool tensors (floating
    tensors are read as nonzero = True). Float32 and float64 run natively; other floating dtypes,
    and inputs that require grad, run the differentiable reference. The formula is in
    :func:`haml.ops.gae.reference.gae`.

    Returns ``(advantages, returns)`` shaped like ``rewards``.
    """
    rewards = _validate.require_tensor(_OP, "rewards", rewards)
    _validate.require_float(_OP, "rewards", rewards)
    if rewards.dim() < 1:
        raise ValueError(f"{_OP}: 'rewards' must be time-major [T, *batch], got a 0-d tensor")
    if rewards.shape[0] == 0:
        raise ValueError(f"{_OP}: 'rewards' is empty along time (shape {tuple(rewards.shape)}); T >= 1")
    shape = rewards.shape
    for name, value in (("values", values), ("next_values", next_values)):
        _validate.require_tensor(_OP, name, value)
        _validate.require_same_dtype(_OP, name, value, "rewards", rewards)
        _validate.require_shape(_OP, name, value, shape, "the shape of 'rewards'")
        _validate.require_same_device(_OP, name, value, "rewards", rewards)
    terminated = _validate.require_flag(_OP, "terminated", terminated)
    truncated = _validate.require_flag(_OP, "truncated", truncated)
    for name, value in (("terminated", terminated), ("truncated", truncated)):
        _validate.require_shape(_OP, name, value, shape, "the shape of 'rewards'")
        _validate.require_same_device(_OP, name, value, "rewards", rewards)
    gamma = _validate.require_number(_OP, "gamma", gamma, 0.0, 1.0)
    lam = _validate.require_number(_OP, "lam", lam, 0.0, 1.0)

    if (
        _backend.has_native(_OP, rewards.device)
        and rewards.dtype in _validate.NATIVE_DTYPES
        and not _validate.needs_autograd(rewards, values, next_values)
    ):
        advantages, returns = torch.ops.haml.gae(
            rewards, values, next_values, terminated, truncated, gamma, lam
        )
        return advantages, returns
    return reference.gae(rewards, values, next_values, terminated, truncated, gamma, lam)
