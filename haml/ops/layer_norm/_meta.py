"""Fake kernel of haml::layer_norm_fwd, and its autograd formula: PyTorch's own LayerNorm
backward kernel, fed the mean and 1/σ that the native forward returns (the same statistics that
``native_layer_norm`` saves). A backward that must itself be differentiable (``create_graph=True``)
differentiates the reference instead, which is the same function, so higher derivatives are exact.
"""

from __future__ import annotations

import torch


def _stat_shape(input: torch.Tensor) -> tuple[int, ...]:
    return (*input.shape[:-1], 1)


@torch.library.register_fake("haml::layer_norm_fwd")
def _fwd_fake(input, weight, bias, eps):
    # The kernels return contiguous tensors whatever the input strides (empty_like would not).
    stats = _stat_shape(input)
    return input.new_empty(input.shape), input.new_empty(stats), input.new_empty(stats)


def _setup_context(ctx, inputs, output):
    input, weight, bias, eps = inputs
    _, mean, rstd = output
    ctx.save_for_backward(input, weight, bias, mean, rstd)
    ctx.eps = eps


def _differentiable_backward(ctx, grad_out):
    from haml.ops.layer_norm import reference

    input, weight, bias, _, _ = ctx.saved_tensors
    wanted = ctx.needs_input_grad[:3]
    leaves = [t for t, want in zip((input, weight, bias), wanted) if want]
    with torch.enable_grad():
        # The reference's output as a function of the saved inputs (which carry the caller's
        # graph), differentiated with a graph so that the gradient is differentiable too.
        out = reference.layer_norm(input, weight, bias, ctx.eps)
        grads = iter(torch.autograd.grad(out, leaves, grad_out, create_graph=True))
    return tuple(next(grads) if want else None for want in wanted)


def _backward(ctx, grad_out, _grad_mean, _grad_rstd):
    # Only the output is differentiable: mean and 1/σ are statistics the backward reads.
    if grad_out is None:
        return None, None, None, None
    if torch.is_grad_enabled():
        grad_input, grad_weight, grad_bias = _differentiable_backward(ctx, grad_out)
        return grad_input, grad_weight, grad_bias, None
    input, weight, bias, mean, rstd = ctx.saved_tensors
    grad_input, grad_weight, grad_bias = torch.ops.aten.native_layer_norm_backward(
        grad_out.contiguous(), input, [input.shape[-1]], mean, rstd, weight, bias,
        list(ctx.needs_input_grad[:3]),
    )
    return grad_input, grad_weight, grad_bias, None


torch.library.register_autograd("haml::layer_norm_fwd", _backward, setup_context=_setup_context)
