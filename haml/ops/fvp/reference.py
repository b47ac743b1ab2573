"""The Fisher-vector product of HATRPO, readable form ([HATRPO], eq. (8) and Algorithm 2, line 11).

HATRPO's step for agent i_m is x ≈ H⁻¹g with

    H = ∇²_θ (1/|B|) Σ_s D_KL(π_θk(·|s) ‖ π_θ(·|s)) |_{θ = θk}        ([HATRPO], eq. (8); Alg. 2, line 11)

the Hessian of the mean KL at the old policy, that is the Fisher information matrix of the policy
averaged over the batch. Conjugate gradient needs only products (H + damping·I)v. This module gives
three independent ways to compute them, all pure PyTorch:

- :class:`FisherOperator`: double backward through the mean KL, the first-order graph ∇_θ KL built
  **once** per operator and differentiated again for every product (``retain_graph``). This is
  the fallback for any ``nn.Module`` whose ``distribution(obs, action_mask)`` returns a torch
  distribution, and the oracle the native product is tested against.
- :func:`recomputed_fisher_operator`: the same double backward, but the KL and its gradient are
  rebuilt for every product, as the authors' code does (a benchmark baseline).
- :class:`GaussNewtonFisherOperator`: the Gauss–Newton form H = Jᵀ M J with ``torch.func``: J is
  the Jacobian of the distribution parameters z(θ) (Gaussian (μ, σ), categorical log-softmax
  logits), applied with one ``jvp``, and Jᵀ with a ``vjp`` taken once per operator; M is the
  closed-form Hessian of the KL in z at z_old (diag(1/σ²) on μ, diag(2/σ²) on σ, diag(p) − ppᵀ on
  the logits). At θ = θk the term Σ (∂KL/∂z) ∂²z vanishes because ∂KL/∂z = 0 there, so both forms
  are the same matrix; this one is a second oracle, built without second derivatives.

Sample masks: the mean is Σ_n w_n KL_n / Σ_n w_n with w the ``mask`` (bool or float weights [N]);
samples of weight 0 drop out even where their observations are inf or NaN (such entries are read
as 0, :func:`haml.ops.masked.zero_nonfinite_inactive`); with no active sample F = 0.

Action masks: a categorical row with no available action is uniform over all actions whatever θ
is (:func:`haml.models.policies.masked_logits`), so its KL is 0 for every θ and it adds nothing
to H.

``kl="exact"`` (default) uses the true KL, so H is the Fisher matrix. ``kl="harl"`` reproduces the
divergence of the papers' reference code (HARL), for parity studies only:

- Categorical: Σ_a [e^Δ_a − 1 − Δ_a] with Δ = log π_θ(a|s) − log π_θk(a|s) over the log-softmax
  logits of **all** actions (masked ones included, as HARL does), unweighted by π_θk. It is zero
  with zero gradient at θ = θk like a KL, but it is not a KL, and its Hessian is Jᵀ J over the
  log-probabilities (M = I) instead of the Fisher Jᵀ (diag(p) − ppᵀ) J: it gives every action,
  likely or not, the same weight, so the step is not the natural-gradient step and "KL ≤ δ" does
  not bound the policy change the theory ([HATRPO], Theorem 1) is about. Hence not the default.
- Gaussian: HARL's KL is the exact Gaussian KL computed in float64; ``"harl"`` does the same (the
  result is cast back to the policy's dtype).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Normal, kl_divergence

from haml.ops.masked import masked_mean, zero_nonfinite_inactive

__all__ = [
    "KL_KINDS",
    "FisherOperator",
    "GaussNewtonFisherOperator",
    "fisher_vector_product",
    "fisher_vector_product_func",
    "recomputed_fisher_operator",
    "per_sample_kl",
    "trainable_parameters",
    "flat_parameters",
    "assign_flat_parameters_",
]

KL_KINDS = ("exact", "harl")


# -- parameters as one flat vector ---------------------------------------------------------------


def trainable_parameters(policy: nn.Module) -> list[nn.Parameter]:
    """The parameters with ``requires_grad``, in ``policy.parameters()`` order: the flat layout."""
    return [p for p in policy.parameters() if p.requires_grad]


def flat_parameters(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """A detached copy of ``params`` as one flat vector."""
    return torch.cat([p.detach().reshape(-1) for p in params])


def assign_flat_parameters_(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    """Copy the flat vector ``flat`` into ``params`` in place (bitwise; no autograd record)."""
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(flat[offset : offset + n].view_as(p))
            offset += n


def _flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


# -- the divergence -------------------------------------------------------------------------------


def per_sample_kl(old: Distribution, new: Distribution, kl: str = "exact") -> torch.Tensor:
    """D(π_old(·|s) ‖ π_new(·|s)) per sample ``[N]``; see the module doc for ``kl``.

    ``exact``: ``torch.distributions.kl_divergence`` (any registered pair), summed over the action
    dimensions of a Gaussian. Categorical: Σ_a p_old (log p_old − log p_new), where masked actions
    (p_old = p_new = 0) contribute 0.
    """
    if kl == "exact":
        value = kl_divergence(old, new)
        return value.sum(-1) if isinstance(old, Normal) else value
    if kl == "harl":
        if isinstance(old, Normal) and isinstance(new, Normal):
            dtype = new.loc.dtype
            mu0, sigma0 = old.loc.double(), old.scale.double()
            mu1, sigma1 = new.loc.double(), new.scale.double()
            value = (
                torch.log(sigma1 / sigma0)
                + (sigma0.pow(2) + (mu0 - mu1).pow(2)) / (2.0 * sigma1.pow(2))
                - 0.5
            )
            return value.sum(-1).to(dtype)
        if isinstance(old, Categorical) and isinstance(new, Categorical):
            delta = new.logits - old.logits  # Δ = log π_new − log π_old, all actions
            return (torch.exp(delta) - 1.0 - delta).sum(-1)
        raise ValueError(
            f"kl='harl' is defined for Normal and Categorical policies, got {type(new).__name__}"
        )
    raise ValueError(f"'kl' must be one of {KL_KINDS}, got {kl!r}")


# -- double backward, graph built once ----------------------------------------------------------


def detached_distribution(dist: Distribution) -> Distribution | None:
    """The same Normal or Categorical without its graph; None for other distributions."""
    if isinstance(dist, Normal):
        return Normal(dist.loc.detach(), dist.scale.detach(), validate_args=False)
    if isinstance(dist, Categorical):
        return Categorical(logits=dist.logits.detach(), validate_args=False)
    return None


def objective_gradient(
    policy: nn.Module,
    obs: torch.Tensor,
    action_mask: torch.Tensor | None,
    objective: Callable[[Distribution], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, Distribution]:
    """``(J(π_θ), ∇_θ J(π_θ), π_θ)`` for a scalar ``objective`` of ``policy.distribution(obs)``,
    by autograd through the policy: the value and π_θ detached, the gradient flat over the
    trainable parameters (HATRPO: the surrogate L(θk) and ĝ, [HATRPO], Algorithm 2, line 11)."""
    params = trainable_parameters(policy)
    with torch.enable_grad():
        dist = policy.distribution(obs, action_mask)
        value = objective(dist)
        grads = torch.autograd.grad(value, params, allow_unused=True, materialize_grads=True)
    old = detached_distribution(dist)
    if old is None:
        with torch.no_grad():
            old = policy.distribution(obs, action_mask)
    return value.detach(), _flatten(grads), old


class FisherOperator:
    """v ↦ (H + damping·I) v with H the Hessian of the mean KL at the current parameters θk.

    Construction runs the policy twice on ``obs`` (once without gradient for π_θk, once with it
    for π_θ), forms the masked mean KL(π_θk ‖ π_θ) and its gradient ∇_θ KL with
    ``create_graph=True``: that first-order graph is built here, once. Each call then computes
    ∇_θ (∇_θ KL · v) = H v with one backward through the retained graph, so a product runs no
    forward pass. Vectors and results are flat, in :func:`trainable_parameters` order.

    The operator is valid for the parameters it was built at: after an in-place change of them,
    autograd refuses to use the saved graph (build a new operator instead).
    """

    def __init__(
        self,
        policy: nn.Module,
        obs: torch.Tensor,
        mask: torch.Tensor | None = None,
        damping: float = 0.1,
        action_mask: torch.Tensor | None = None,
        kl: str = "exact",
    ) -> None:
        self.params = trainable_parameters(policy)
        self.damping = float(damping)
        self.num_params = sum(p.numel() for p in self.params)
        obs = zero_nonfinite_inactive(obs, mask)  # weight-0 samples cannot reach H through 0 · NaN
        self._policy, self._obs, self._action_mask = policy, obs, action_mask
        with torch.enable_grad():
            with torch.no_grad():
                old = policy.distribution(obs, action_mask)  # π_θk, a constant
            new = policy.distribution(obs, action_mask)  # π_θ, differentiable in θ
            self.kl = masked_mean(per_sample_kl(old, new, kl), mask)  # = 0 at θ = θk
            grads = torch.autograd.grad(
                self.kl, self.params, create_graph=True, allow_unused=True, materialize_grads=True
            )
            self._grad_kl = _flatten(grads)  # ∇_θ KL, with its graph

    def __call__(self, vector: torch.Tensor) -> torch.Tensor:
        """(H + damping·I) v for a flat ``vector`` ``[num_params]``; the result carries no graph."""
        vector = vector.detach()
        with torch.enable_grad():
            grad_dot_v = torch.dot(self._grad_kl, vector)  # ∇KL · v
            hv = torch.autograd.grad(
                grad_dot_v, self.params, retain_graph=True, allow_unused=True, materialize_grads=True
            )
        return _flatten(hv) + self.damping * vector

    def quadratic_form(self, vector: torch.Tensor) -> torch.Tensor:
        """vᵀ(H + damping·I)v, by one product."""
        return torch.dot(vector, self(vector))

    def objective_gradient(
        self, objective: Callable[[Distribution], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, Distribution]:
        """:func:`objective_gradient` of the operator's policy and observations."""
        return objective_gradient(self._policy, self._obs, self._action_mask, objective)


def fisher_vector_product(
    policy: nn.Module,
    obs: torch.Tensor,
    vector: torch.Tensor,
    damping: float = 0.1,
    mask: torch.Tensor | None = None,
    action_mask: torch.Tensor | None = None,
    kl: str = "exact",
) -> torch.Tensor:
    """One product (H + damping·I) v; builds a :class:`FisherOperator` and calls it once."""
    return FisherOperator(policy, obs, mask, damping, action_mask, kl)(vector)


def recomputed_fisher_operator(
    policy: nn.Module,
    obs: torch.Tensor,
    mask: torch.Tensor | None = None,
    damping: float = 0.1,
    action_mask: torch.Tensor | None = None,
    kl: str = "exact",
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The authors' way: a matvec that rebuilds the KL and its gradient graph on every product.

    Same result as :class:`FisherOperator`; two forward passes, one double-backward graph and its
    backward per product. Kept as the benchmark baseline; it has ``quadratic_form`` too, so that
    the reference ``trust_region_step`` can run on it (``operator=recomputed_fisher_operator``).
    """
    return _RecomputedFisherOperator(policy, obs, mask, damping, action_mask, kl)


class _RecomputedFisherOperator:
    """A :class:`FisherOperator` built anew for every product (see :func:`recomputed_fisher_operator`)."""

    def __init__(
        self,
        policy: nn.Module,
        obs: torch.Tensor,
        mask: torch.Tensor | None,
        damping: float,
        action_mask: torch.Tensor | None,
        kl: str,
    ) -> None:
        self._operator_args = (policy, obs, mask, damping, action_mask, kl)

    def __call__(self, vector: torch.Tensor) -> torch.Tensor:
        return FisherOperator(*self._operator_args)(vector)

    def quadratic_form(self, vector: torch.Tensor) -> torch.Tensor:
        """vᵀ(H + damping·I)v, by one product."""
        return torch.dot(vector, self(vector))

    def objective_gradient(
        self, objective: Callable[[Distribution], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, Distribution]:
        """:func:`objective_gradient` of the operator's policy and observations."""
        policy, obs, _, _, action_mask, _ = self._operator_args
        return objective_gradient(policy, obs, action_mask, objective)


# -- Gauss–Newton form with torch.func ------------------------------------------------------------


class _DistributionCall(nn.Module):
    """Makes ``policy.distribution`` the forward of a module, for ``torch.func.functional_call``."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor, action_mask: torch.Tensor | None) -> Distribution:
        return self.policy.distribution(obs, action_mask)


def _distribution_params(dist: Distribution) -> tuple[torch.Tensor, ...]:
    """z: the distribution parameters the Gauss–Newton form differentiates through."""
    if isinstance(dist, Normal):
        return dist.loc, dist.scale
    if isinstance(dist, Categorical):
        return (dist.logits,)  # log-softmax logits, [N, n]
    raise TypeError(
        f"the Gauss-Newton Fisher product supports Normal and Categorical policies, "
        f"got {type(dist).__name__}"
    )


class GaussNewtonFisherOperator:
    """v ↦ (Jᵀ M J + damping·I) v with ``torch.func`` (see the module doc).

    J v is one ``torch.func.jvp`` of θ ↦ z(θ) (a forward pass with tangents); Jᵀ(·) is the
    ``vjp`` function of z, taken once at construction. M at z_old, per sample n, scaled by
    w_n / Σ w:

    - Normal (μ, σ):           M = diag(1/σ²) on μ and diag(2/σ²) on σ (both kinds of KL);
    - Categorical, ``exact``:  M = diag(p) − ppᵀ on the log-softmax logits (the Fisher of softmax);
    - Categorical, ``harl``:   M = I on the log-softmax logits (the Hessian of Σ_a e^Δ − 1 − Δ).
    """

    def __init__(
        self,
        policy: nn.Module,
        obs: torch.Tensor,
        mask: torch.Tensor | None = None,
        damping: float = 0.1,
        action_mask: torch.Tensor | None = None,
        kl: str = "exact",
    ) -> None:
        if kl not in KL_KINDS:
            raise ValueError(f"'kl' must be one of {KL_KINDS}, got {kl!r}")
        self.damping = float(damping)
        self.kl = kl
        obs = zero_nonfinite_inactive(obs, mask)
        call = _DistributionCall(policy)
        self._names = [n for n, p in call.named_parameters() if p.requires_grad]
        self._primals = {n: p.detach() for n, p in call.named_parameters() if p.requires_grad}
        self.num_params = sum(p.numel() for p in self._primals.values())

        def z_of(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
            dist = torch.func.functional_call(call, params, (obs, action_mask))
            return _distribution_params(dist)

        self._z_of = z_of
        with torch.no_grad():
            dist_old = call(obs, action_mask)
        self._kind = "normal" if isinstance(dist_old, Normal) else "categorical"
        z_old, self._vjp = torch.func.vjp(z_of, self._primals)
        n = z_old[0].shape[0]
        if mask is None:
            weight = torch.full((n,), 1.0 / n, dtype=z_old[0].dtype, device=z_old[0].device)
        else:
            w = mask.to(z_old[0].dtype)
            total = w.sum()
            weight = w / torch.where(total != 0, total, torch.ones_like(total))
        self._weight = weight  # w_n / Σ w
        if self._kind == "normal":
            self._inv_var = dist_old.scale.detach().pow(-2)  # 1/σ², [N, d]
        else:
            self._probs = dist_old.probs.detach()  # p, [N, n]

    def _apply_m(self, u: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        w = self._weight
        if self._kind == "normal":
            u_loc, u_scale = u
            wv = w[:, None] * self._inv_var
            return wv * u_loc, 2.0 * wv * u_scale
        (u_logits,) = u
        if self.kl == "harl":
            return (w[:, None] * u_logits,)
        p = self._probs
        # (diag(p) − ppᵀ) u, with 0 · u where p = 0 (masked actions) even if u is huge. On
        # log-softmax logits p·u = 0 for every tangent u (Σ_a e^{y_a} = 1 is preserved), so this
        # equals diag(p) u; the − ppᵀ term keeps M the textbook Hessian of the softmax KL.
        pu = torch.where(p != 0, p * u_logits, torch.zeros_like(u_logits))
        return (w[:, None] * (pu - p * pu.sum(-1, keepdim=True)),)

    def __call__(self, vector: torch.Tensor) -> torch.Tensor:
        vector = vector.detach()
        tangents, offset = {}, 0
        for name in self._names:
            primal = self._primals[name]
            tangents[name] = vector[offset : offset + primal.numel()].view_as(primal)
            offset += primal.numel()
        _, jv = torch.func.jvp(self._z_of, (self._primals,), (tangents,))  # J v
        (jt_mjv,) = self._vjp(self._apply_m(jv))  # Jᵀ M J v
        return _flatten([jt_mjv[name] for name in self._names]) + self.damping * vector


def fisher_vector_product_func(
    policy: nn.Module,
    obs: torch.Tensor,
    vector: torch.Tensor,
    damping: float = 0.1,
    mask: torch.Tensor | None = None,
    action_mask: torch.Tensor | None = None,
    kl: str = "exact",
) -> torch.Tensor:
    """One product (Jᵀ M J + damping·I) v with :class:`GaussNewtonFisherOperator`."""
    return GaussNewtonFisherOperator(policy, obs, mask, damping, action_mask, kl)(vector)
