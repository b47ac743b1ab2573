"""Argument checks shared by the op façades: each raises an exception that names the argument."""

from __future__ import annotations

import math

import torch
from torch import nn

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
NATIVE_DTYPES = (torch.float32, torch.float64)


def require_tensor(op: str, name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: '{name}' must be a torch.Tensor, got {type(value).__name__}")
    return value


def require_float(op: str, name: str, value: torch.Tensor) -> None:
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: '{name}' must be a floating-point tensor, got dtype {value.dtype}")


def require_same_dtype(op: str, name: str, value: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if value.dtype != ref.dtype:
        raise TypeError(
            f"{op}: '{name}' has dtype {value.dtype} but '{ref_name}' has dtype {ref.dtype}"
        )


def require_same_device(op: str, name: str, value: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if value.device != ref.device:
        raise ValueError(f"{op}: '{name}' is on {value.device} but '{ref_name}' is on {ref.device}")


def require_shape(op: str, name: str, value: torch.Tensor, shape: torch.Size, what: str) -> None:
    if value.shape != shape:
        raise ValueError(
            f"{op}: '{name}' must have shape {tuple(shape)} ({what}), got {tuple(value.shape)}"
        )


def require_flag(op: str, name: str, value: object) -> torch.Tensor:
    """A done-style flag: a bool tensor, or a floating one read as nonzero = True."""
    value = require_tensor(op, name, value)
    if value.dtype == torch.bool:
        return value
    if value.dtype in FLOAT_DTYPES:
        return value != 0
    raise TypeError(
        f"{op}: '{name}' must be a bool (or floating 0/1) tensor, got dtype {value.dtype}; "
        f"convert it with .bool()"
    )


def require_number(op: str, name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: '{name}' must be a number, got {type(value).__name__}")
    value = float(value)
    if not low <= value <= high:
        raise ValueError(f"{op}: '{name}' must lie in [{low}, {high}], got {value}")
    return value


def require_finite_number(op: str, name: str, value: object, low: float, high: float) -> float:
    """A finite number in [low, high] (the bounds may be infinite: only the value may not)."""
    value = require_number(op, name, value, low, high)
    if not math.isfinite(value):
        raise ValueError(f"{op}: '{name}' must be finite, got {value}")
    return value


def needs_autograd(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def require_differentiable_scalar(op: str, name: str, value: object, depends_on: str) -> torch.Tensor:
    """What a user's callable ``name`` returned: a 0-d floating tensor with a gradient in
    ``depends_on`` (an objective of a distribution, a loss of values)."""
    if not isinstance(value, torch.Tensor) or value.dim() != 0 or not value.is_floating_point():
        got = (
            f"shape {tuple(value.shape)}, {value.dtype}" if isinstance(value, torch.Tensor)
            else type(value).__name__
        )
        raise TypeError(f"{op}: '{name}' must return a 0-d floating tensor, got {got}")
    if not value.requires_grad:
        raise ValueError(
            f"{op}: the {name}'s value does not depend on {depends_on} (it has no gradient)"
        )
    return value


def warn_once(said: set[str], message: str, stacklevel: int = 2) -> None:
    """A ``RuntimeWarning`` with ``message`` unless ``said`` (the caller's record) has it already:
    the ops' one warning per reason to fall back to their reference. ``stacklevel`` as
    ``warnings.warn``'s, counted from the caller."""
    if message not in said:
        said.add(message)
        import warnings

        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)


def require_int(op: str, name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{op}: '{name}' must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{op}: '{name}' must be >= {low}, got {value}")
    return value


def require_choice(op: str, name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{op}: '{name}' must be one of {choices}, got {value!r}")
    return value  # type: ignore[return-value]


def require_mask_dtype(op: str, name: str, value: torch.Tensor) -> None:
    """A sample mask: bool, or floating weights."""
    if value.dtype != torch.bool and value.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{op}: '{name}' must be a bool or floating-point tensor, got dtype {value.dtype}"
        )


# -- policies and their per-sample inputs (haml.ops.fvp, haml.ops.line_search) -------------------


def require_policy(op: str, policy: object) -> list[nn.Parameter]:
    """An ``nn.Module`` with a ``distribution`` method and trainable parameters of one dtype and
    device; returns those parameters (``requires_grad`` ones, ``parameters()`` order)."""
    if not isinstance(policy, nn.Module) or not callable(getattr(policy, "distribution", None)):
        raise TypeError(
            f"{op}: 'policy' must be an nn.Module with a distribution(obs, action_mask) method, "
            f"got {type(policy).__name__}"
        )
    params = [p for p in policy.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{op}: 'policy' has no trainable parameter (requires_grad=True)")
    first = params[0]
    for p in params[1:]:
        if p.dtype != first.dtype or p.device != first.device:
            raise ValueError(
                f"{op}: 'policy' mixes parameter dtypes/devices ({first.dtype} on {first.device} "
                f"and {p.dtype} on {p.device}); a flat parameter vector needs one of each"
            )
    if first.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: 'policy' parameters must be floating point, got {first.dtype}")
    return params


def require_obs(op: str, obs: object, ref: torch.Tensor) -> int:
    """``obs`` ``[N, ...]`` with N ≥ 1, of the policy's dtype and device; returns N."""
    obs = require_tensor(op, "obs", obs)
    require_float(op, "obs", obs)
    if obs.dim() < 2:
        raise ValueError(f"{op}: 'obs' must be [N, obs_dim] (samples first), got {tuple(obs.shape)}")
    if obs.shape[0] == 0:
        raise ValueError(f"{op}: 'obs' is empty (shape {tuple(obs.shape)}): no sample to average")
    if obs.dtype != ref.dtype:
        raise TypeError(f"{op}: 'obs' has dtype {obs.dtype} but the policy's parameters {ref.dtype}")
    if obs.device != ref.device:
        raise ValueError(f"{op}: 'obs' is on {obs.device} but the policy's parameters on {ref.device}")
    return obs.shape[0]


def require_per_sample(
    op: str, name: str, value: object, n: int, ref: torch.Tensor, is_mask: bool = False
) -> torch.Tensor | None:
    """None, or a tensor ``[N]`` (``[N, 1]`` is squeezed) of ``ref``'s dtype (a mask: bool or
    floating) and device."""
    if value is None:
        return None
    value = require_tensor(op, name, value)
    if is_mask:
        require_mask_dtype(op, name, value)
    else:
        require_same_dtype(op, name, value, "obs", ref)
    if value.shape == (n, 1):
        value = value.squeeze(-1)
    require_shape(op, name, value, torch.Size([n]), "one entry per sample of 'obs'")
    require_same_device(op, name, value, "obs", ref)
    return value


def require_flat_vector(
    op: str, name: str, vector: object, params: list[nn.Parameter]
) -> torch.Tensor:
    """A flat vector over the trainable parameters: ``[num_params]``, their dtype and device."""
    vector = require_tensor(op, name, vector)
    ref = params[0]
    num_params = sum(p.numel() for p in params)
    if vector.dtype != ref.dtype:
        raise TypeError(
            f"{op}: '{name}' has dtype {vector.dtype} but the policy's parameters {ref.dtype}"
        )
    if vector.shape != (num_params,):
        raise ValueError(
            f"{op}: '{name}' must be flat with one entry per trainable parameter, shape "
            f"({num_params},), got {tuple(vector.shape)}"
        )
    if vector.device != ref.device:
        raise ValueError(
            f"{op}: '{name}' is on {vector.device} but the policy's parameters on {ref.device}"
        )
    return vector


def declared_action_space(policy: nn.Module) -> tuple[str, int, int] | None:
    """``(head, obs_dim, action_dim)`` of a policy that declares them (haml's ``MLPPolicy`` and
    ``GRUPolicy``, or a module wrapping one as ``.policy``), else None: then only the policy's own
    checks apply."""
    for candidate in (policy, getattr(policy, "policy", None)):
        head = getattr(candidate, "head_type", None)
        obs_dim = getattr(candidate, "obs_dim", None)
        action_dim = getattr(candidate, "action_dim", None)
        if head in ("gaussian", "categorical") and isinstance(obs_dim, int) and isinstance(action_dim, int):
            return head, obs_dim, action_dim
    return None


def require_obs_width(op: str, obs: torch.Tensor, policy: nn.Module) -> None:
    """``obs``'s last dimension is the width the policy declares (when it declares one)."""
    declared = declared_action_space(policy)
    if declared is not None and obs.shape[-1] != declared[1]:
        raise ValueError(
            f"{op}: 'obs' has {obs.shape[-1]} features per sample but the policy takes "
            f"{declared[1]} (shape {tuple(obs.shape)})"
        )


def require_action_mask(
    op: str, action_mask: object, n: int, obs: torch.Tensor, policy: nn.Module
) -> torch.Tensor | None:
    """None, or the available actions ``[N, n_actions]`` (bool, or floating with nonzero =
    available) of a categorical policy, on ``obs``'s device."""
    if action_mask is None:
        return None
    action_mask = require_tensor(op, "action_mask", action_mask)
    require_mask_dtype(op, "action_mask", action_mask)
    declared = declared_action_space(policy)
    if declared is not None and declared[0] != "categorical":
        raise ValueError(f"{op}: 'action_mask' applies only to a categorical policy")
    width = "n_actions" if declared is None else declared[2]
    if (
        action_mask.dim() != 2
        or action_mask.shape[0] != n
        or (declared is not None and action_mask.shape[1] != declared[2])
    ):
        raise ValueError(
            f"{op}: 'action_mask' must have shape [N, {width}] with N = {n} (one row per sample "
            f"of 'obs'), got {tuple(action_mask.shape)}"
        )
    require_same_device(op, "action_mask", action_mask, "obs", obs)
    return action_mask


def require_actions(op: str, actions: object, n: int, obs: torch.Tensor, policy: nn.Module) -> torch.Tensor:
    """The taken actions, one row per sample: ``[N, d]`` floating (Gaussian) or integer indices
    ``[N]`` / ``[N, 1]`` (categorical), checked against what the policy declares. The range of
    categorical indices is checked by the caller, with its other host-side checks."""
    actions = require_tensor(op, "actions", actions)
    if actions.dim() < 1 or actions.shape[0] != n:
        raise ValueError(
            f"{op}: 'actions' must have one row per sample of 'obs' ({n}), got {tuple(actions.shape)}"
        )
    require_same_device(op, "actions", actions, "obs", obs)
    declared = declared_action_space(policy)
    if declared is None:
        return actions
    head, _, action_dim = declared
    if head == "gaussian":
        require_float(op, "actions", actions)
        if actions.shape != (n, action_dim):
            raise ValueError(
                f"{op}: 'actions' of a Gaussian policy must have shape [N, {action_dim}] = "
                f"{(n, action_dim)}, got {tuple(actions.shape)}"
            )
    else:
        if actions.is_floating_point() or actions.is_complex() or actions.dtype == torch.bool:
            raise TypeError(
                f"{op}: 'actions' of a categorical policy must be integer indices, got dtype "
                f"{actions.dtype}"
            )
        if actions.shape not in ((n,), (n, 1)):
            raise ValueError(
                f"{op}: 'actions' of a categorical policy must have shape [N] or [N, 1] with "
                f"N = {n}, got {tuple(actions.shape)}"
            )
    return actions
