"""Fake (meta) kernel of haml::gae, so that torch.compile and opcheck can trace the native op, and
its autograd registration: the native op has no gradient, so asking it for one is an error (the
façade :func:`haml.ops.gae` sends inputs that require grad to the differentiable reference)."""

from __future__ import annotations

import torch


@torch.library.register_fake("haml::gae")
def _gae_fake(rewards, values, next_values, terminated, truncated, gamma, lam):
    # The kernels return contiguous tensors whatever the input strides (empty_like would not).
    return rewards.new_empty(rewards.shape), rewards.new_empty(rewards.shape)


def _setup_context(ctx, inputs, output):
    # Runs only when grad mode is on and an input requires grad: refuse rather than return a
    # result whose gradient would silently be None.
    for name, value in zip(("rewards", "values", "next_values"), inputs[:3]):
        if value.requires_grad:
            raise RuntimeError(  # as the ops' C++ checks raise
                f"torch.ops.haml.gae: '{name}' requires grad, but the native op has no gradient; "
                "call haml.ops.gae (it runs the differentiable reference for such inputs) or "
                "detach the inputs"
            )


def _backward(ctx, *grads):  # unreachable: _setup_context refuses every differentiable call
    raise RuntimeError("torch.ops.haml.gae has no gradient")


torch.library.register_autograd("haml::gae", _backward, setup_context=_setup_context)
