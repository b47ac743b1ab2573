"""``haml.ops.line_search``: HATRPO's trust-region step and its backtracking line search.

- :func:`trust_region_step` ``(policy, obs, actions, logp_old, advantages, factor, mask, max_kl,
  cg_iters=10, damping=0.1, backtrack_coef=0.8, max_backtracks=10, accept_ratio=0.5, ...)
  -> TrustRegionInfo``: the whole step of one agent ([HATRPO], eq. (8), Algorithm 2 lines 11–13);
- :func:`backtracking_line_search`: its last stage, for any parameters and objective.

Both run the algorithm of :mod:`haml.ops.line_search.reference`, where the definitions (surrogate,
step size, acceptance rule, which samples enter the KL) are documented. :func:`trust_region_step`
runs it on :class:`haml.ops.FisherOperator`, so with an ``MLPPolicy`` the surrogate's gradient, the
conjugate-gradient solve and xᵀHx are native; the line search tries candidates one by one with
early exit (measured faster on the CPU than one batched forward of all of them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from haml.ops import _validate
from haml.ops.fvp import FisherOperator, conjugate_gradient
from haml.ops.fvp.reference import KL_KINDS
from haml.ops.line_search import reference
from haml.ops.line_search.reference import TrustRegionInfo

__all__ = ["trust_region_step", "backtracking_line_search", "TrustRegionInfo"]

_INF = float("inf")


def _require_max_kl(op: str, max_kl: object) -> float:
    max_kl = _validate.require_number(op, "max_kl", max_kl, -_INF, _INF)
    if not (max_kl > 0 and math.isfinite(max_kl)):
        raise ValueError(f"{op}: 'max_kl' (δ) must be a positive finite number, got {max_kl}")
    return max_kl


def _require_search_settings(
    op: str, backtrack_coef: object, max_backtracks: object, accept_ratio: object
) -> tuple[float, int, float]:
    backtrack_coef = _validate.require_number(op, "backtrack_coef", backtrack_coef, 0.0, 1.0)
    if not 0.0 < backtrack_coef < 1.0:
        raise ValueError(f"{op}: 'backtrack_coef' must lie in (0, 1), got {backtrack_coef}")
    max_backtracks = _validate.require_int(op, "max_backtracks", max_backtracks, 1)
    accept_ratio = _validate.require_finite_number(op, "accept_ratio", accept_ratio, 0.0, _INF)
    return backtrack_coef, max_backtracks, accept_ratio


def _require_finite_advantages_and_indices(
    op: str,
    advantages: torch.Tensor,
    mask: torch.Tensor | None,
    actions: torch.Tensor,
    policy: nn.Module,
) -> None:
    """No NaN advantage in an active sample, and categorical indices in range: one host sync,
    before any work. (Samples of weight 0 may hold anything: they take no part.)"""
    nan = torch.isnan(advantages)
    if mask is not None:
        nan = nan & (mask if mask.dtype == torch.bool else mask != 0)
    flags = [nan.any()]
    declared = _validate.declared_action_space(policy)
    categorical = declared is not None and declared[0] == "categorical"
    if categorical:
        flags.append(((actions < 0) | (actions >= declared[2])).any())
    found = torch.stack(flags).tolist()
    if found[0]:
        raise ValueError(f"{op}: 'advantages' contains NaN (in a sample of nonzero mask weight)")
    if categorical and found[1]:
        raise ValueError(
            f"{op}: 'actions' must be indices in [0, {declared[2]}) for the categorical policy, "
            f"got values from {int(actions.min())} to {int(actions.max())}"
        )


def backtracking_line_search(
    params: nn.Module | Sequence[torch.Tensor],
    full_step: torch.Tensor,
    expected_improvement: torch.Tensor | float,
    evaluate: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    surrogate_before: torch.Tensor | float,
    max_kl: float,
    backtrack_coef: float = 0.8,
    max_backtracks: int = 10,
    accept_ratio: float = 0.5,
) -> TrustRegionInfo:
    """Set ``params`` to the first acceptable θk + α·``full_step``, α = backtrack_coef^j.

    ``params``: an ``nn.Module`` (its trainable parameters) or a sequence of tensors, updated in
    place; ``full_step`` is flat over them (their dtype and device). ``evaluate()`` returns
    ``(surrogate, mean KL from θk)`` at the current parameters. Accepts the first j with
    KL ≤ max_kl, improvement > 0 and improvement ≥ accept_ratio · α · expected_improvement;
    restores θk bitwise when none qualifies. See
    :func:`haml.ops.line_search.reference.backtracking_line_search`.
    """
    op = "backtracking_line_search"
    if isinstance(params, nn.Module):
        tensors = [p for p in params.parameters() if p.requires_grad]
    elif isinstance(params, Sequence) and all(isinstance(p, torch.Tensor) for p in params):
        tensors = list(params)
    else:
        raise TypeError(f"{op}: 'params' must be an nn.Module or a sequence of tensors")
    if not tensors:
        raise ValueError(f"{op}: 'params' holds no tensor to update")
    ref = tensors[0]
    for t in tensors[1:]:
        if t.dtype != ref.dtype or t.device != ref.device:
            raise ValueError(f"{op}: 'params' mix dtypes/devices ({ref.dtype}, {t.dtype})")
    full_step = _validate.require_tensor(op, "full_step", full_step)
    num = sum(t.numel() for t in tensors)
    if full_step.dtype != ref.dtype:
        raise TypeError(f"{op}: 'full_step' has dtype {full_step.dtype} but 'params' {ref.dtype}")
    if full_step.shape != (num,):
        raise ValueError(
            f"{op}: 'full_step' must be flat over 'params', shape ({num},), got {tuple(full_step.shape)}"
        )
    _validate.require_same_device(op, "full_step", full_step, "params", ref)
    if not callable(evaluate):
        raise TypeError(f"{op}: 'evaluate' must be callable () -> (surrogate, kl)")
    max_kl = _require_max_kl(op, max_kl)
    backtrack_coef, max_backtracks, accept_ratio = _require_search_settings(
        op, backtrack_coef, max_backtracks, accept_ratio
    )
    return reference.backtracking_line_search(
        tensors,
        full_step,
        expected_improvement,
        evaluate,
        surrogate_before,
        max_kl,
        backtrack_coef,
        max_backtracks,
        accept_ratio,
    )


def trust_region_step(
    policy: nn.Module,
    obs: torch.Tensor,
    actions: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    factor: torch.Tensor | None,
    mask: torch.Tensor | None,
    max_kl: float,
    cg_iters: int = 10,
    damping: float = 0.1,
    backtrack_coef: float = 0.8,
    max_backtracks: int = 10,
    accept_ratio: float = 0.5,
    action_mask: torch.Tensor | None = None,
    kl: str = "exact",
    residual_tol: float = 1e-10,
    mask_kl: bool = True,
) -> TrustRegionInfo:
    """One HATRPO step of one agent's ``policy``, updating its parameters in place.

    Args:
        policy: an ``nn.Module`` with ``distribution(obs, action_mask=None)`` (e.g.
            :class:`haml.models.MLPPolicy`).
        obs: ``[N, ...]``, the policy's dtype and device.
        actions: the taken actions, ``[N, d]`` (Gaussian) or ``[N]`` / ``[N, 1]`` (categorical).
        logp_old: joint log π_θk(a|o) recorded at collection, ``[N]``.
        advantages: Â, ``[N]``; must not contain NaN where ``mask`` is nonzero.
        factor: the sequential factor M ``[N]`` (detached); None means 1.
        mask: active samples, bool or float weights ``[N]``; None means all. The inputs of a
            sample of weight 0 may be inf or NaN: they take no part in the step.
        max_kl: δ > 0, the trust-region radius (mean KL).
        cg_iters, residual_tol: conjugate-gradient settings (10 and 1e-10 in HARL).
        damping: added to the Fisher matrix (0.1 in HARL).
        backtrack_coef, max_backtracks, accept_ratio: the line search (0.8, 10, 0.5 in HARL).
        action_mask: available actions ``[N, n]`` (categorical policies).
        kl: ``"exact"`` or ``"harl"`` (see :mod:`haml.ops.fvp.reference`).
        mask_kl: average the KL (and the Fisher) over ``mask`` (default) or over all samples.

    Returns :class:`TrustRegionInfo` ``(accepted, step_fraction, kl, improvement,
    expected_improvement)``. The algorithm is :func:`haml.ops.line_search.reference.trust_region_step`.
    """
    op = "trust_region_step"
    params = _validate.require_policy(op, policy)
    n = _validate.require_obs(op, obs, params[0])
    _validate.require_obs_width(op, obs, policy)
    actions = _validate.require_actions(op, actions, n, obs, policy)
    action_mask = _validate.require_action_mask(op, action_mask, n, obs, policy)
    logp_old = _validate.require_per_sample(op, "logp_old", logp_old, n, obs)
    if logp_old is None:
        raise TypeError(f"{op}: 'logp_old' must be a torch.Tensor, got None")
    advantages = _validate.require_per_sample(op, "advantages", advantages, n, obs)
    if advantages is None:
        raise TypeError(f"{op}: 'advantages' must be a torch.Tensor, got None")
    factor = _validate.require_per_sample(op, "factor", factor, n, obs)
    mask = _validate.require_per_sample(op, "mask", mask, n, obs, is_mask=True)
    max_kl = _require_max_kl(op, max_kl)
    cg_iters = _validate.require_int(op, "cg_iters", cg_iters, 1)
    damping = _validate.require_finite_number(op, "damping", damping, 0.0, _INF)
    backtrack_coef, max_backtracks, accept_ratio = _require_search_settings(
        op, backtrack_coef, max_backtracks, accept_ratio
    )
    kl = _validate.require_choice(op, "kl", kl, KL_KINDS)
    residual_tol = _validate.require_number(op, "residual_tol", residual_tol, 0.0, _INF)
    if not isinstance(mask_kl, bool):
        raise TypeError(f"{op}: 'mask_kl' must be a bool, got {type(mask_kl).__name__}")
    _require_finite_advantages_and_indices(op, advantages, mask, actions, policy)
    return reference.trust_region_step(
        policy,
        obs,
        actions,
        logp_old,
        advantages,
        factor,
        mask,
        max_kl,
        cg_iters,
        damping,
        backtrack_coef,
        max_backtracks,
        accept_ratio,
        action_mask,
        kl,
        residual_tol,
        mask_kl,
        operator=FisherOperator,  # native where the policy allows, with its native CG loop
        solver=conjugate_gradient,
    )
