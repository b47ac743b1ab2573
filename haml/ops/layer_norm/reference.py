"""Layer normalisation over the last dimension, the readable specification (Ba et al., 2016).

The native kernels (and ``torch.nn.functional.layer_norm``, which they replace where they are
faster) are tested against this.
"""

from __future__ import annotations

import torch


def layer_norm(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """LayerNorm of each row ``x`` (the last dimension, of width H) of ``input``, with the
    elementwise affine ``weight`` γ and ``bias`` β (both ``[H]``); Ba et al. (2016), eq. 4, with
    the biased variance (as ``torch.nn.LayerNorm``)::

        μ = (1/H) Σ_j x_j,   σ² = (1/H) Σ_j (x_j − μ)²,   y = γ ⊙ (x − μ) / √(σ² + eps) + β
    """
    mean = input.mean(dim=-1, keepdim=True)
    centred = input - mean
    variance = (centred * centred).mean(dim=-1, keepdim=True)
    return centred * torch.rsqrt(variance + eps) * weight + bias
