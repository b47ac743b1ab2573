"""Fake kernels of the clip_surrogate ops and the autograd formula of the forward op.

The backward is the native op ``haml::clip_surrogate_bwd``: gradients flow to ``logp_new`` and
``entropy``. ``logp_old``, ``advantages``, ``factor`` and ``mask`` are constants of the objective:
the forward op refuses them when they require grad (the façade sends such inputs to the
reference instead). A backward that must itself be differentiable (``create_graph=True``)
differentiates the reference's loss, which is the same function, so higher derivatives are exact.
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


_CONSTANTS = ("logp_old", "advantages", "factor", "mask")


def _setup_context(ctx, inputs, output):
    logp_new, logp_old, advantages, factor, mask, entropy, clip, entropy_coef = inputs
    for name, value in zip(_CONSTANTS, (logp_old, advantages, factor, mask)):
        if value is not None and value.requires_grad:
            raise RuntimeError(  # as the ops' C++ checks raise
                f"torch.ops.haml.clip_surrogate_fwd: '{name}' requires grad, but the native op "
                "differentiates only 'logp_new' and 'entropy'; call haml.ops.clipped_surrogate "
                f"(it runs the differentiable reference when '{name}' requires grad) or detach it"
            )
    ratio, weight_sum = output[5], output[4]
    ctx.save_for_backward(
        ratio, advantages, factor, mask, weight_sum, logp_new, logp_old, entropy
    )
    ctx.clip = clip
    ctx.entropy_coef = entropy_coef
    ctx.entropy_grad = entropy is not None


def _differentiable_backward(ctx, grad_loss):
    """The gradients as a function of ``logp_new``, ``entropy`` and ``grad_loss`` with a graph:
    the reference's loss differentiated with ``create_graph=True``."""
    from haml.ops.clip_surrogate import reference

    _, advantages, factor, mask, _, logp_new, logp_old, entropy = ctx.saved_tensors
    leaves = [t for t in (logp_new, entropy) if t is not None and t.requires_grad]
    with torch.enable_grad():
        loss = reference.clipped_surrogate(
            logp_new, logp_old, advantages, ctx.clip, factor, mask, entropy, ctx.entropy_coef
        ).loss
        grads = torch.autograd.grad(loss, leaves, grad_loss, create_graph=True, allow_unused=True)
    by_input = {id(t): g for t, g in zip(leaves, grads)}
    return by_input.get(id(logp_new)), by_input.get(id(entropy)) if entropy is not None else None


def _backward(ctx, grad_loss, *_unused_grads):
    # Only the loss is differentiable: the statistics and the saved ratio are detached outputs.
    if torch.is_grad_enabled():
        # create_graph=True: the native backward op has no derivative of its own.
        grad_logp_new, grad_entropy = _differentiable_backward(ctx, grad_loss)
        return grad_logp_new, None, None, None, None, grad_entropy, None, None
    ratio, advantages, factor, mask, weight_sum, *_ = ctx.saved_tensors
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
