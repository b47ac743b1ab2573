"""``haml.ops.fvp``: the Fisher-vector product of HATRPO and conjugate gradient.

- :class:`FisherOperator` ``(policy, obs, mask=None, damping=0.1, action_mask=None, kl="exact")``:
  a reusable operator, ``op(v) = (H + damping·I) v`` with H the Hessian of the mean
  KL(π_old ‖ π_θ) at θ = θ_old (the policy's Fisher matrix), v flat over the policy's trainable
  parameters;
- :func:`fisher_vector_product`: one product;
- :func:`conjugate_gradient` ``(matvec, b, iters=10, residual_tol=1e-10)``.

Two implementations serve the operator:

- **native** (``torch.classes.haml.FisherOperator``, ``csrc/fvp/``): for a
  :class:`haml.models.MLPPolicy` with ``kl="exact"``, float32/float64 and every parameter
  trainable. The exact Gauss–Newton form JᵀMJ, activations cached once per operator, one tangent
  and one transposed pass per product into buffers allocated once. On the CPU each thread takes
  blocks of 256 samples through both passes while they stay in cache, with the GEMMs calling
  torch's BLAS directly; on other devices a product is a sequence of ATen operations over all
  samples. :func:`conjugate_gradient` on
  such an operator runs the whole loop natively in one call, and
  :meth:`FisherOperator.objective_gradient` (HATRPO's surrogate gradient) takes π_θ from the
  cached forward and the gradient from one transposed pass.
- **reference** (:class:`haml.ops.fvp.reference.FisherOperator`): double backward through the mean
  KL, the first-order graph built once per operator. It works for any ``nn.Module`` whose
  ``distribution(obs, action_mask)`` returns a torch ``Normal`` or ``Categorical`` (RNN policies
  included), and for ``kl="harl"``. Other policies fall back to it, with one warning per reason.

The definitions, the ``kl="harl"`` option and the two other reference forms (recomputed per
product; ``torch.func`` Gauss–Newton) are documented in :mod:`haml.ops.fvp.reference`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.distributions import Distribution

from haml.models.policies import head_distribution
from haml.ops import _backend, _validate
from haml.ops.fvp import reference
from haml.ops.fvp.cg import conjugate_gradient as _conjugate_gradient
from haml.ops.fvp.reference import KL_KINDS

__all__ = ["FisherOperator", "fisher_vector_product", "conjugate_gradient", "serves_natively"]

_NAME = "FisherOperator"


# -- which implementation -----------------------------------------------------------------------

_FALLBACKS_SAID: set[str] = set()


def _native_unsupported(policy: nn.Module, obs: torch.Tensor, kl: str) -> str | None:
    """Why the native operator cannot serve this call, or None when it can."""
    from haml.models.policies import MLPPolicy

    if not _backend.has_native_class("FisherOperator"):
        return ""  # the extension is off or missing: said once at import, not again here
    if not isinstance(policy, MLPPolicy):
        return (
            f"{type(policy).__name__} has no native Fisher product (only haml.models.MLPPolicy "
            "has); it runs the double-backward reference"
        )
    if kl != "exact":
        return f"kl={kl!r} runs the double-backward reference (the native product is the exact Fisher)"
    if obs.dim() != 2:
        return f"obs of shape {tuple(obs.shape)} (not [N, obs_dim]) runs the double-backward reference"
    if obs.dtype not in _validate.NATIVE_DTYPES:
        return f"{obs.dtype} runs the double-backward reference (native: float32, float64)"
    if any(not p.requires_grad for p in policy.parameters()):
        return "a policy with frozen parameters runs the double-backward reference"
    return None


def serves_natively(policy: nn.Module, obs: torch.Tensor) -> bool:
    """Whether a :class:`FisherOperator` of ``policy`` on ``obs`` (exact KL) runs the native
    operator, so that its :meth:`~FisherOperator.objective_gradient` skips the network's autograd
    forward and backward. Says nothing and warns nothing: for callers that pick their own path."""
    return _native_unsupported(policy, obs, "exact") is None


def _say_fallback_once(reason: str) -> None:
    if reason:
        _validate.warn_once(_FALLBACKS_SAID, f"haml.ops.FisherOperator: {reason}", stacklevel=3)


def _scalar_valued(
    objective: Callable[[Distribution], torch.Tensor],
) -> Callable[[Distribution], torch.Tensor]:
    """``objective``, checked to return a 0-d floating tensor that depends on the distribution."""

    def checked(dist: Distribution) -> torch.Tensor:
        return _validate.require_differentiable_scalar(
            f"{_NAME}.objective_gradient", "objective", objective(dist),
            "the distribution's parameters",
        )

    return checked


# -- public API ---------------------------------------------------------------------------------


class FisherOperator:
    """The operator v ↦ (H + damping·I) v of one agent's policy at its current parameters.

    Args:
        policy: an ``nn.Module`` with ``distribution(obs, action_mask=None)`` (for example
            :class:`haml.models.MLPPolicy`); its parameters with ``requires_grad`` define the flat
            layout of vectors (``policy.parameters()`` order).
        obs: observations ``[N, ...]`` of the policy's dtype and device.
        mask: which samples enter the mean KL: bool, or float weights, ``[N]``; None = all. A
            sample of weight 0 takes no part even where its observation is inf or NaN.
        damping: the ≥ 0 multiple of the identity added to H (HARL: 0.1).
        action_mask: available actions ``[N, n]`` for a categorical policy. A row with no
            available action is uniform over all actions whatever θ is (the policy's rule,
            :func:`haml.models.policies.masked_logits`), so it adds nothing to H.
        kl: ``"exact"`` (the Fisher matrix) or ``"harl"`` (the reference code's divergence; see
            :mod:`haml.ops.fvp.reference`).

    H is the Hessian of (Σ_n w_n KL(π_old(·|o_n) ‖ π_θ(·|o_n)) / Σ_n w_n) at θ = θ_old ([HATRPO],
    eq. (8); Algorithm 2, line 11). The first-order graph is built once, here; each call is one
    backward through it. Calling the operator after the policy's parameters were changed in place
    raises autograd's error: build a new operator.
    """

    backend: str
    """``"native"`` or ``"reference"``: which implementation serves this operator."""

    def __init__(
        self,
        policy: nn.Module,
        obs: torch.Tensor,
        mask: torch.Tensor | None = None,
        damping: float = 0.1,
        action_mask: torch.Tensor | None = None,
        kl: str = "exact",
    ) -> None:
        self._params = _validate.require_policy(_NAME, policy)
        n = _validate.require_obs(_NAME, obs, self._params[0])
        _validate.require_obs_width(_NAME, obs, policy)
        mask = _validate.require_per_sample(_NAME, "mask", mask, n, obs, is_mask=True)
        action_mask = _validate.require_action_mask(_NAME, action_mask, n, obs, policy)
        self.damping = _validate.require_finite_number(_NAME, "damping", damping, 0.0, float("inf"))
        self.kl = _validate.require_choice(_NAME, "kl", kl, KL_KINDS)
        self.num_params = sum(p.numel() for p in self._params)
        self.dtype = self._params[0].dtype
        self.device = self._params[0].device
        self._policy, self._action_mask = policy, action_mask
        reason = _native_unsupported(policy, obs, self.kl)
        if reason is None:
            spec = policy.spec()
            self._impl = torch.classes.haml.FisherOperator(
                obs, self._params, mask, action_mask, spec.head, spec.activation,
                spec.input_norm, spec.layer_norm, spec.layer_norm_eps, self.damping,
            )
            self.backend = "native"
            self._last_solution: torch.Tensor | None = None
            self._last_solution_version = -1
        else:
            _say_fallback_once(reason)
            self._impl = reference.FisherOperator(
                policy, obs, mask, self.damping, action_mask, self.kl
            )
            self.backend = "reference"

    def __call__(self, vector: torch.Tensor) -> torch.Tensor:
        """(H + damping·I) v for a flat ``vector`` ``[num_params]``."""
        vector = _validate.require_flat_vector(_NAME, "vector", vector, self._params)
        if self.backend == "native":
            return self._impl.apply(vector)
        return self._impl(vector)

    def quadratic_form(self, vector: torch.Tensor) -> torch.Tensor:
        """vᵀ(H + damping·I)v. For the solution that :func:`conjugate_gradient` last returned on
        a native operator it is read off the CG recurrence (xᵀ(b − r)) instead of one more
        product; the two agree to rounding."""
        vector = _validate.require_flat_vector(_NAME, "vector", vector, self._params)
        if (
            self.backend == "native"
            and vector is self._last_solution
            and vector._version == self._last_solution_version  # not modified since
        ):
            return self._impl.last_solution_quadratic_form()
        return torch.dot(vector, self(vector))

    def objective_gradient(
        self, objective: Callable[[Distribution], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, Distribution]:
        """``(J(π_θ), ∇_θ J(π_θ), π_θ)`` at the operator's parameters θ = θ_old, for a scalar
        ``objective`` of the policy's action distribution on ``obs`` (HATRPO: the surrogate).

        The gradient is flat over the trainable parameters; value and distribution are detached.
        Native operators take π_θ from their cached forward pass and the gradient from one
        transposed pass (autograd runs through the head's distribution only), saving the forward
        and backward of the whole network; the reference runs autograd through the policy.
        """
        if not callable(objective):
            raise TypeError(
                f"{_NAME}.objective_gradient: 'objective' must be callable (distribution -> "
                f"scalar tensor), got {type(objective).__name__}"
            )
        objective = _scalar_valued(objective)
        if self.backend == "native":
            out = self._impl.head_output().detach().requires_grad_()
            log_std_param = getattr(self._policy, "log_std", None)
            log_std = None if log_std_param is None else log_std_param.detach().requires_grad_()
            leaves = [out] if log_std is None else [out, log_std]
            with torch.enable_grad():
                dist = head_distribution(out, log_std, self._action_mask)
                value = objective(dist)
                grads = torch.autograd.grad(value, leaves, allow_unused=True, materialize_grads=True)
            gradient = self._impl.output_vjp(grads[0])  # its log-std block is 0
            if log_std is not None:
                offset = self._flat_offset(log_std_param)
                gradient[offset : offset + log_std.numel()] = grads[1]
            old = reference.detached_distribution(dist)  # a Normal or Categorical: never None
            return value.detach(), gradient, old
        return self._impl.objective_gradient(objective)

    def _flat_offset(self, param: torch.Tensor) -> int:
        """Where ``param`` starts in the flat layout of vectors."""
        offset = 0
        for p in self._params:
            if p is param:
                return offset
            offset += p.numel()
        raise ValueError("FisherOperator: the parameter is not one of the policy's trainable ones")


def fisher_vector_product(
    policy: nn.Module,
    obs: torch.Tensor,
    vector: torch.Tensor,
    damping: float = 0.1,
    mask: torch.Tensor | None = None,
    action_mask: torch.Tensor | None = None,
    kl: str = "exact",
) -> torch.Tensor:
    """One product (H + damping·I) v; see :class:`FisherOperator` (build one to reuse the graph)."""
    params = _validate.require_policy("fisher_vector_product", policy)
    _validate.require_flat_vector("fisher_vector_product", "vector", vector, params)
    return FisherOperator(policy, obs, mask, damping, action_mask, kl)(vector)


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
) -> torch.Tensor:
    """x ≈ A⁻¹ b by at most ``iters`` conjugate-gradient steps, stopping once r·r < residual_tol.

    ``matvec(p)`` returns A p for a symmetric positive-definite A (a :class:`FisherOperator`);
    ``b`` is a flat floating vector. The iteration is in :func:`haml.ops.fvp.cg.conjugate_gradient`.
    """
    op = "conjugate_gradient"
    if not callable(matvec):
        raise TypeError(f"{op}: 'matvec' must be callable (v -> A v), got {type(matvec).__name__}")
    b = _validate.require_tensor(op, "b", b)
    _validate.require_float(op, "b", b)
    if b.dim() != 1:
        raise ValueError(f"{op}: 'b' must be a flat vector, got shape {tuple(b.shape)}")
    iters = _validate.require_int(op, "iters", iters, 0)
    residual_tol = _validate.require_number(op, "residual_tol", residual_tol, 0.0, float("inf"))
    if isinstance(matvec, FisherOperator) and matvec.backend == "native":
        # The whole loop in one native call, on the operator's preallocated vectors.
        b = _validate.require_flat_vector(op, "b", b, matvec._params)
        x = matvec._impl.conjugate_gradient(b, iters, residual_tol)
        matvec._last_solution, matvec._last_solution_version = x, x._version
        return x
    return _conjugate_gradient(matvec, b, iters, residual_tol)
