"""The LayerNorm module of haml's networks: ``torch.nn.LayerNorm`` whose CPU forward runs haml's
native kernel (:func:`haml.ops.layer_norm`) on large inputs that need no gradient.

PyTorch's CPU LayerNorm forward costs about 45 ns per row of 64 entries (torch 2.13); the native
kernel normalises 8 rows at a time and takes 40 % of that on large inputs. Two costs decide where
it is used. A call through the dispatcher from Python costs about 6 µs more than
``F.layer_norm``'s, so small inputs (a rollout step's few rows) keep PyTorch's. And where a
gradient is wanted (in grad mode, the module's own weights want one), the native op's autograd
formula is a Python function whose node costs 50-90 µs per call, more than the forward saves:
those calls keep PyTorch's too. What is left are the evaluations without a gradient (targets,
acting, a critic's values at every candidate action).

The module is an ``nn.LayerNorm``, with the same parameters and state-dict keys, so checkpoints
and code that inspects a network's layers are unaffected. On CUDA it runs PyTorch's kernel.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LayerNorm", "NATIVE_MIN_ELEMENTS"]

NATIVE_MIN_ELEMENTS = 16384
"""Inputs of at least this many entries take the native kernel on the CPU. Measured on a 2-core
AMD EPYC (torch 2.13, one thread): at [128, 64] PyTorch's forward takes 8.4 µs and the native op
10.0 µs, at [1000, 64] 46 µs and 24 µs."""

_NATIVE_DTYPES = (torch.float32, torch.float64)
"""haml.ops._validate.NATIVE_DTYPES, which this module cannot import at load time (see
:func:`_native_cpu`); python_tests/ops/test_layer_norm.py checks that the two agree."""


def _native_cpu() -> bool:
    # Imported here: haml.ops imports haml.models (the Fisher product reads policies), which
    # imports this module.
    from haml.ops import has_native

    return has_native("layer_norm_fwd", "cpu")


def _needs_gradient(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm(normalized_shape, eps)`` (with its elementwise affine) whose forward over
    the last dimension takes the native CPU kernel where it is faster: large inputs that need no
    gradient; see the module doc."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if (
            input.device.type == "cpu"
            and input.numel() >= NATIVE_MIN_ELEMENTS
            and not _needs_gradient(input, self.weight, self.bias)
            and len(self.normalized_shape) == 1
            and self.weight is not None
            and self.bias is not None
            and input.dtype in _NATIVE_DTYPES
            and input.dtype == self.weight.dtype
            and input.shape[-1] == self.normalized_shape[0]
            and _native_cpu()
        ):
            out, _, _ = torch.ops.haml.layer_norm_fwd(input, self.weight, self.bias, self.eps)
            return out
        return super().forward(input)
