"""``haml.ops.layer_norm``: LayerNorm over the last dimension with a native forward kernel.

PyTorch's CPU LayerNorm forward spends about 45 ns on each row of 64 entries (torch 2.13), more
than the product that produced the row; haml's networks normalise every hidden layer on SMAX,
SMAC and MPE, and a discrete HASAC update evaluates its critic on every candidate action. The backward stays PyTorch's ``native_layer_norm_backward``
(faster than its forward): it takes the mean and 1/σ that the native forward returns.
"""

from __future__ import annotations

import torch

from haml.ops import _backend, _validate
from haml.ops.layer_norm import reference

__all__ = ["layer_norm"]

_OP = "layer_norm_fwd"
_NAME = "layer_norm"


def layer_norm(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """``γ ⊙ (x − μ)/√(σ² + eps) + β`` over the last dimension of ``input`` (the formula is in
    :func:`haml.ops.layer_norm.reference.layer_norm`); ``weight`` and ``bias`` are ``[H]``, H the
    last dimension. The same function as ``torch.nn.functional.layer_norm(input, (H,), weight,
    bias, eps)``, differentiable in all three tensors (to any order).

    Float32 and float64 run the native forward where the extension has a kernel for the device;
    other floating dtypes run PyTorch's. An input with no row returns an empty result.
    """
    input = _validate.require_tensor(_NAME, "input", input)
    _validate.require_float(_NAME, "input", input)
    if input.dim() < 1:
        raise ValueError(f"{_NAME}: 'input' must have at least one dimension, got a 0-d tensor")
    width = input.shape[-1]
    if width == 0:
        raise ValueError(
            f"{_NAME}: 'input' has an empty last dimension (shape {tuple(input.shape)}); the "
            "normalised dimension needs at least one entry"
        )
    for name, value in (("weight", weight), ("bias", bias)):
        _validate.require_tensor(_NAME, name, value)
        _validate.require_same_dtype(_NAME, name, value, "input", input)
        _validate.require_shape(_NAME, name, value, torch.Size([width]),
                                "the last dimension of 'input'")
        _validate.require_same_device(_NAME, name, value, "input", input)
    eps = _validate.require_finite_number(_NAME, "eps", eps, 0.0, float("inf"))
    if _backend.has_native(_OP, input.device) and input.dtype in _validate.NATIVE_DTYPES:
        out, _, _ = torch.ops.haml.layer_norm_fwd(input, weight, bias, eps)
        return out
    return torch.nn.functional.layer_norm(input, (width,), weight, bias, eps)

