"""Fake kernels of the clip_surrogate ops and the autograd formula of the forward op.

The backward is the native op ``haml::clip_surrogate_bwd``: gradients flow to ``logp_new`` and
``entropy``. ``logp_old``, ``advantages``, ``factor`` and ``mask`` are constants of the objective
(the façade sends inputs that require grad there to the reference instead).
"""

from __future__ import annotations

import torch


@torch.library.register_fake("haml::clip_surrogate_fwd")
def _fwd_fake(logp_new, logp_old, advantages, factor, mask, entropy, clip, entropy_coef):
    scalar = logp_new.new_empty(())
    return (
        scalar,
        scalar.new_empty(()),
        scalar.new_empty(()),
        scalar.new_empty(()),
        scalar.new_empty(()),
        logp_new.new_empty(logp_new.shape),  # contiguous, as the kernels return it
    )


@torch.library.register_fake("haml::clip_surrogate_bwd")
def _bwd_fake(grad_loss, ratio, advantages, factor, mask, weight_sum, clip, entropy_coef, entropy_grad):
    grad_entropy = ratio.new_empty(ratio.shape) if entropy_grad else ratio.new_empty((0,))
    return ratio.new_empty(ratio.shape), grad_entropy


def _setup_context(ctx, inputs, output):
    logp_new, logp_old, advantages, factor, mask, entropy, clip, entropy_coef = inputs
    ratio, weight_sum = output[5], output[4]
    ctx.save_for_backward(ratio, advantages, factor, mask, weight_sum)
    ctx.clip = clip
    ctx.entropy_coef = entropy_coef
    ctx.entropy_grad = entropy is not None


def _backward(ctx, grad_loss, *_unused_grads):
    # Only the loss is differentiable: the statistics and the saved ratio are detached outputs.
    ratio, advantages, factor, mask, weight_sum = ctx.saved_tensors
    grad_logp_new, grad_entropy = torch.ops.haml.clip_surrogate_bwd(
        grad_loss.contiguous(), ratio, advantages, factor, mask, weight_sum,
        ctx.clip, ctx.entropy_coef, ctx.entropy_grad,
    )
    return (
        grad_logp_new,
        None,
        None,
        None,
        None,
        grad_entropy if ctx.entropy_grad else None,
        None,
        None,
    )


torch.library.register_autograd(
    "haml::clip_surrogate_fwd", _backward, setup_context=_setup_context
)
