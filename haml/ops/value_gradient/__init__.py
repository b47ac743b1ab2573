"""``haml.ops.value_gradient``: the gradient of a value network's loss without autograd through
the network.

- :func:`value_loss_gradient` ``(network, inputs, loss)``: ``(ℓ, ∇_φ ℓ, V)`` for a scalar loss ℓ
  of the values V_φ(x) ``[N]``, the gradient flat over the network's trainable parameters;
- :func:`serves_natively`: whether the native form serves a network and inputs.

The **native** form serves a :class:`haml.models.value.VCritic` (an MLP with a one-output Linear
head; input and hidden LayerNorms, tanh or ReLU) on float32/float64 inputs ``[N, in_dim]``. It is
the native Fisher operator's machinery (``csrc/fvp/``) with a ``"linear"`` head, which has no
Fisher metric: one forward with the activations cached (on the CPU in blocks of samples that stay
in cache, GEMMs straight to BLAS), autograd through ℓ alone, then one transposed pass for
Σ_n (∂ℓ/∂V_n) ∇_φ V_φ(x_n). It saves autograd's graph over the network: about the
native-gradient saving of the actor update (docs/BENCHMARKS.md, ``haml bench happo``).

The **reference** (:mod:`haml.ops.value_gradient.reference`) is autograd through the network.
Other networks, dtypes and shapes run it, with one warning per reason where the native extension
is built.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from haml.ops import _backend, _validate
from haml.ops.value_gradient import reference

__all__ = ["value_loss_gradient", "serves_natively"]

_OP = "value_loss_gradient"
_FALLBACKS_SAID: set[str] = set()


def _native_unsupported(network: nn.Module, inputs: torch.Tensor) -> str | None:
    """Why the native form cannot serve this call ("" when the extension is missing: said once at
    import), or None when it can."""
    from haml.models.value import VCritic

    if not _backend.has_native_class("FisherOperator"):
        return ""
    if type(network) is not VCritic:
        return (
            f"{type(network).__name__} has no native value gradient (only haml.models.VCritic has); "
            "it runs autograd"
        )
    if inputs.dim() != 2:
        return f"inputs of shape {tuple(inputs.shape)} (not [N, in_dim]) run autograd"
    if inputs.dtype not in (torch.float32, torch.float64):
        return f"{inputs.dtype} inputs run autograd (native: float32, float64)"
    if any(not p.requires_grad for p in network.parameters()):
        return "a network with frozen parameters runs autograd"
    return None


def serves_natively(network: nn.Module, inputs: torch.Tensor) -> bool:
    """Whether :func:`value_loss_gradient` of ``network`` on ``inputs`` runs the native form. Says
    nothing and warns nothing: for callers that pick their own path."""
    return _native_unsupported(network, inputs) is None


def _check(network: object, inputs: object, loss: object) -> list[nn.Parameter]:
    from haml.models.value import VCritic

    if not isinstance(network, nn.Module):
        raise TypeError(f"{_OP}: 'network' must be an nn.Module, got {type(network).__name__}")
    if not callable(loss):
        raise TypeError(f"{_OP}: 'loss' must be callable (values [N] -> 0-d tensor), got {type(loss).__name__}")
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"{_OP}: 'inputs' must be a torch.Tensor, got {type(inputs).__name__}")
    params = [p for p in network.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{_OP}: 'network' has no trainable parameter (requires_grad=True)")
    ref = params[0]
    if inputs.dim() < 1 or inputs.shape[0] < 1:
        raise ValueError(f"{_OP}: 'inputs' must be [N, ...] with N >= 1, got shape {tuple(inputs.shape)}")
    if inputs.dtype != ref.dtype or inputs.device != ref.device:
        raise ValueError(
            f"{_OP}: 'inputs' are {inputs.dtype} on {inputs.device} but the network's parameters "
            f"are {ref.dtype} on {ref.device}"
        )
    if isinstance(network, VCritic) and inputs.shape[-1] != network.body.in_dim:
        raise ValueError(
            f"{_OP}: 'inputs' have {inputs.shape[-1]} features but the network takes "
            f"{network.body.in_dim}"
        )
    return params


def _scalar(value: object) -> torch.Tensor:
    return _validate.require_differentiable_scalar(_OP, "loss", value, "the values")


def value_loss_gradient(
    network: nn.Module,
    inputs: torch.Tensor,
    loss: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ℓ, ∇_φ ℓ, V)`` for a scalar ``loss`` of the network's values ``V = network(inputs)``
    ``[N]``: the loss's value, its gradient flat over the trainable parameters (``parameters()``
    order, as :func:`torch.nn.utils.parameters_to_vector`) and the values, each detached.

    ``loss`` receives the values as a tensor that requires grad and must return a 0-d floating
    tensor that depends on them. The native form serves a :class:`~haml.models.value.VCritic`
    (:func:`serves_natively`); the gradient is autograd's to rounding (≤ 1e-10 relative at
    float64, ``python_tests/ops/test_value_gradient.py``).
    """
    _check(network, inputs, loss)
    reason = _native_unsupported(network, inputs)
    if reason is not None:
        if reason:
            _validate.warn_once(_FALLBACKS_SAID, f"haml.ops.value_loss_gradient: {reason}")
        return reference.value_loss_gradient(network, inputs, lambda v: _scalar(loss(v)))
    body = network.body
    with torch.no_grad():
        operator = torch.classes.haml.FisherOperator(
            inputs, list(network.parameters()), None, None, "linear", body.activation,
            body.input_norm, body.layer_norm, body.layer_norm_eps, 0.0,
        )
    out = operator.head_output()  # [N, 1]
    values = out.detach().squeeze(-1).requires_grad_()
    with torch.enable_grad():
        value = _scalar(loss(values))
        (grad_values,) = torch.autograd.grad(value, values)
    gradient = operator.output_vjp(grad_values.unsqueeze(-1).contiguous())
    return value.detach(), gradient, values.detach()
