"""Means over the samples a mask keeps, shared by the ops' references and the algorithms.

A ``mask`` is bool, or floating weights, one entry per sample along the first dimension; a sample
of weight 0 takes no part in a result even where its values are inf or NaN. This module holds the
one definition of that rule; it is not a kernel, so it sits beside them rather than in one.
"""

from __future__ import annotations

import torch

__all__ = ["masked_mean"]


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
