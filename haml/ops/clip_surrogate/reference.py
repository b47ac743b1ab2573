"""The clipped surrogate of HAPPO ([HATRPO], eq. 11) and HAA2C ([HAML]), readable form.

This is the definition that the native kernels are tested against.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class SurrogateOut(NamedTuple):
    """Result of :func:`clipped_surrogate`. Only ``loss`` carries a gradient."""

    loss: torch.Tensor
    """-mean(min(r M Â, clip(r, 1 ± ε) M Â)) - entropy_coef · mean(H), a 0-d tensor to minimise."""
    clip_fraction: torch.Tensor
    """Share of active samples with |r - 1| > ε (0 when unclipped)."""
    approx_kl: torch.Tensor
    """mean((r - 1) - log r), a non-negative estimate of KL(π_old ‖ π_new)."""
    ratio_mean: torch.Tensor
    """mean(r) over active samples."""


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
    """The factor-weighted clipped objective, as a loss.

    With r = exp(logp_new - logp_old), M the sequential factor (``factor``; 1 when None) and Â the
    advantage, per sample::

        L = min(r M Â, clip(r, 1 - ε, 1 + ε) M Â)        (clip = ε; HAPPO, [HATRPO] eq. 11)
        L = r M Â                                        (clip = None; HAA2C, [HAML])

    ``loss = -Σ w L / Σ w - entropy_coef · Σ w H / Σ w`` with w the ``mask`` weights (1 when None).
    A sample of weight 0 is excluded even where its terms are inf or NaN; with no active sample
    every mean is 0. All tensors have the shape of ``logp_new``.
    """
    weight = torch.ones_like(logp_new) if mask is None else mask.to(logp_new.dtype)
    active = weight != 0
    weight_sum = weight.sum()
    denom = torch.where(weight_sum != 0, weight_sum, torch.ones_like(weight_sum))

    def masked_mean(x: torch.Tensor) -> torch.Tensor:
        return torch.where(active, weight * x, torch.zeros_like(x)).sum() / denom

    # Inactive samples get log-ratio 0 before exp, so that their (possibly inf or NaN) terms reach
    # neither the loss nor, through 0 · NaN in a backward, the gradient.
    log_ratio = torch.where(active, logp_new - logp_old, torch.zeros_like(logp_new))
    ratio = torch.exp(log_ratio)
    weighted_adv = advantages if factor is None else factor * advantages  # M Â
    surr1 = ratio * weighted_adv
    if clip is None:
        objective = surr1
    else:
        surr2 = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * weighted_adv
        objective = torch.min(surr1, surr2)
    loss = -masked_mean(objective)
    if entropy is not None:
        loss = loss - entropy_coef * masked_mean(entropy)

    with torch.no_grad():
        ratio_d = ratio.detach()
        if clip is None:
            clip_fraction = torch.zeros_like(loss)
        else:
            clip_fraction = masked_mean(((ratio_d - 1.0).abs() > clip).to(ratio_d.dtype))
        approx_kl = masked_mean((ratio_d - 1.0) - log_ratio.detach())
        ratio_mean = masked_mean(ratio_d)
    return SurrogateOut(loss, clip_fraction.detach(), approx_kl, ratio_mean)
