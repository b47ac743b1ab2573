"""``haml.ops.clipped_surrogate``: the HAPPO / HAA2C policy loss with a fused native backward."""

from __future__ import annotations

import torch

from haml.ops import _backend, _validate
from haml.ops.clip_surrogate import reference
from haml.ops.clip_surrogate.reference import SurrogateOut

__all__ = ["clipped_surrogate", "SurrogateOut"]

_OP = "clip_surrogate_fwd"
_NAME = "clipped_surrogate"


def clipped_surrogate(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    clip: float | None,
    factor: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
) -> SurrogateOut:
    """The factor-weighted clipped surrogate loss and its statistics.

    ``logp_new`` (carrying the gradient) and ``logp_old`` are the log-probabilities of the taken
    actions under the policy being updated and the one that collected them. ``advantages``,
    ``factor`` (the sequential factor M; None means 1), ``mask`` (bool or float weights; None
    means all active) and ``entropy`` must broadcast to ``logp_new``'s shape. ``clip`` is ε, or
    None for the unclipped HAA2C objective. The formula is in
    :func:`haml.ops.clip_surrogate.reference.clipped_surrogate`.

    Returns :class:`SurrogateOut` ``(loss, clip_fraction, approx_kl, ratio_mean)``; ``loss``
    carries the gradient to ``logp_new`` and ``entropy``, the rest are detached statistics.
    The native path runs for float32/float64 when only ``logp_new`` and ``entropy`` require grad;
    otherwise the differentiable reference runs.
    """
    logp_new = _validate.require_tensor(_NAME, "logp_new", logp_new)
    _validate.require_float(_NAME, "logp_new", logp_new)
    if logp_new.numel() == 0:
        raise ValueError(
            f"{_NAME}: 'logp_new' is empty (shape {tuple(logp_new.shape)}): no sample to average"
        )
    shape = logp_new.shape
    logp_old = _validate.require_tensor(_NAME, "logp_old", logp_old)
    _validate.require_same_dtype(_NAME, "logp_old", logp_old, "logp_new", logp_new)
    _validate.require_shape(_NAME, "logp_old", logp_old, shape, "the shape of 'logp_new'")
    broadcast = {}
    for name, value in (
        ("advantages", advantages),
        ("factor", factor),
        ("mask", mask),
        ("entropy", entropy),
    ):
        if value is None and name != "advantages":
            broadcast[name] = None
            continue
        _validate.require_tensor(_NAME, name, value)
        if name == "mask":
            _validate.require_mask_dtype(_NAME, name, value)
            value = value.to(logp_new.dtype)
        else:
            _validate.require_same_dtype(_NAME, name, value, "logp_new", logp_new)
        _validate.require_same_device(_NAME, name, value, "logp_new", logp_new)
        try:
            broadcast[name] = value.expand(shape)
        except RuntimeError:
            raise ValueError(
                f"{_NAME}: '{name}' of shape {tuple(value.shape)} does not broadcast to the "
                f"shape of 'logp_new' {tuple(shape)}"
            ) from None
    _validate.require_same_device(_NAME, "logp_old", logp_old, "logp_new", logp_new)
    if clip is not None:
        clip = _validate.require_number(_NAME, "clip", clip, 0.0, float("inf"))
    entropy_coef = _validate.require_finite_number(
        _NAME, "entropy_coef", entropy_coef, float("-inf"), float("inf")
    )
    advantages, factor, mask, entropy = (
        broadcast["advantages"], broadcast["factor"], broadcast["mask"], broadcast["entropy"]
    )

    if (
        _backend.has_native(_OP, logp_new.device)
        and logp_new.dtype in _validate.NATIVE_DTYPES
        and not _validate.needs_autograd(logp_old, advantages, factor, mask)
    ):
        loss, clip_fraction, approx_kl, ratio_mean, _, _ = torch.ops.haml.clip_surrogate_fwd(
            logp_new.contiguous(),
            logp_old.contiguous(),
            advantages.contiguous(),
            None if factor is None else factor.contiguous(),
            None if mask is None else mask.contiguous(),
            None if entropy is None else entropy.contiguous(),
            clip,
            entropy_coef,
        )
        # Outputs of an op with an autograd formula all require grad; only the loss has one.
        return SurrogateOut(loss, clip_fraction.detach(), approx_kl.detach(), ratio_mean.detach())
    return reference.clipped_surrogate(
        logp_new, logp_old, advantages, clip, factor, mask, entropy, entropy_coef
    )
