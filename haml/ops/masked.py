"""Sample masks, shared by the ops' references and the algorithms.

A ``mask`` is bool, or floating weights, one entry per sample along the first dimension; a sample
of weight 0 takes no part in a result even where its values are inf or NaN. This module holds the
definitions of that rule (:func:`masked_mean`, :func:`zero_nonfinite_inactive`); it is not a
kernel, so it sits beside them rather than in one.
"""

from __future__ import annotations

import torch

__all__ = ["masked_mean", "zero_nonfinite_inactive"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Σ w x / Σ w over the first dimension with w the mask weights (1 when None); 0 if Σ w = 0.

    Samples of weight 0 are excluded even where x is inf or NaN (as in ``clipped_surrogate``).
    """
    if mask is None:
        return x.mean()
    weight = mask.to(x.dtype)
    active = weight != 0
    weight_sum = weight.sum()
    denom = torch.where(weight_sum != 0, weight_sum, torch.ones_like(weight_sum))
    return torch.where(active, weight * x, torch.zeros_like(x)).sum() / denom


def zero_nonfinite_inactive(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x`` ``[N, ...]`` with the non-finite entries of weight-0 samples replaced by 0.

    The inputs of a sample that a mask leaves out may be inf or NaN (padding, dead agents); they
    must not reach a result through 0 · NaN in a sum or a gradient. Finite entries are kept as
    they are, so for finite inputs this returns ``x`` unchanged. ``mask`` is bool or floating
    ``[N]``; None keeps every sample.
    """
    if mask is None:
        return x
    active = mask if mask.dtype == torch.bool else mask != 0
    active = active.view(-1, *([1] * (x.dim() - 1)))
    return torch.where(active | torch.isfinite(x), x, torch.zeros((), dtype=x.dtype, device=x.device))
