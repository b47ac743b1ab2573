"""HATRPO's trust-region step for one agent, readable form ([HATRPO], eq. (8), Algorithm 2 lines 11–13).

Given the batch of agent i_m, with r = π_θ(a|o) / π_θk(a|o) and M the sequential factor of the
agents already updated ([HATRPO], eq. (10)):

1. surrogate L(θ) = mean over active samples of r · M · Â, and its gradient g = ∇_θ L at θk
   ([HATRPO], Algorithm 2, line 11; at θk, ∇r = ∇ log π, so this is the paper's ĝ);
2. direction x ≈ (H + damping·I)⁻¹ g by conjugate gradient, H the Hessian of the mean KL
   (:mod:`haml.ops.fvp.reference`);
3. step size β = sqrt(2δ / xᵀ(H + damping·I)x) ([HATRPO], Algorithm 2, line 12), full step s = β x,
   expected improvement gᵀs (the first-order prediction of L(θk + s) − L(θk));
4. backtracking line search ([HATRPO], eq. (8) and Algorithm 2, line 13): for j = 0, 1, …,
   max_backtracks − 1 and α = backtrack_coef^j, the first θ = θk + α s with
       mean KL(π_θk ‖ π_θ) ≤ δ,  L(θ) − L(θk) > 0  and  L(θ) − L(θk) ≥ accept_ratio · α · gᵀs
   is kept; if none qualifies, θk is restored bit for bit.

Which samples enter the KL: by default the same ``mask`` as the surrogate and the Fisher matrix,
since the step size β is derived from the quadratic model ½ sᵀHs of that very KL; measuring the
constraint on other samples than H would make β answer a different question. HARL does not mask
the KL (nor its Fisher): it averages over all samples, padded or dead ones included.
``mask_kl=False`` does the same here (surrogate masked, KL and H over the whole batch).

Differences from HARL: the KL test is ``≤ δ`` (HARL: ``< δ``) and the ratio test
``improvement ≥ accept_ratio · α · gᵀs`` (HARL: ``improvement / expected > accept_ratio``), as
docs/DESIGN.md states them; the Gaussian KL is computed in the policy's dtype (HARL: float64; use
``kl="harl"`` for that). Candidates are evaluated one by one with early exit, one host sync per
candidate for the accept decision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import Distribution

from haml.models.policies import joint_log_prob
from haml.ops.fvp.cg import conjugate_gradient
from haml.ops.fvp.reference import (
    FisherOperator,
    assign_flat_parameters_,
    flat_parameters,
    per_sample_kl,
    trainable_parameters,
)
from haml.ops.masked import masked_mean, zero_nonfinite_inactive

__all__ = ["TrustRegionInfo", "surrogate", "backtracking_line_search", "trust_region_step"]


class TrustRegionInfo(NamedTuple):
    """What one trust-region step (or line search) did. Tensors are detached 0-d."""

    accepted: bool
    """Whether a candidate was accepted (otherwise the parameters are unchanged)."""
    step_fraction: float
    """α = backtrack_coef^j of the accepted candidate; 0.0 when none was accepted."""
    kl: torch.Tensor
    """Mean KL(π_before ‖ π_after) of the step taken (0 when none was accepted)."""
    improvement: torch.Tensor
    """L(θ_after) − L(θ_before) of the step taken (0 when none was accepted)."""
    expected_improvement: torch.Tensor
    """gᵀs, the first-order prediction for the full step s (α = 1)."""


def surrogate(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    factor: torch.Tensor | None,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """L = Σ w · r · M · Â / Σ w with r = exp(logp_new − logp_old) ([HATRPO], eq. (10), Algorithm 2).

    ``factor`` is M (None means 1), ``mask`` the weights w (None means all samples, weight 1).
    All tensors are ``[N]``. To be maximised.
    """
    ratio = torch.exp(logp_new - logp_old)
    weighted_adv = advantages if factor is None else factor * advantages  # M Â
    return masked_mean(ratio * weighted_adv, mask)


def backtracking_line_search(
    params: nn.Module | Sequence[torch.Tensor],
    full_step: torch.Tensor,
    expected_improvement: torch.Tensor | float,
    evaluate: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    surrogate_before: torch.Tensor | float,
    max_kl: float,
    backtrack_coef: float = 0.8,
    max_backtracks: int = 10,
    accept_ratio: float = 0.5,
) -> TrustRegionInfo:
    """Find the first acceptable θ = θk + α s, α = backtrack_coef^j ([HATRPO], Algorithm 2, line 13).

    ``params`` (a module's trainable parameters, or a sequence of tensors) hold θk on entry and
    are updated in place. ``evaluate()`` returns ``(L(θ), mean KL(π_θk ‖ π_θ))`` at their current
    values. A candidate is accepted iff::

        kl ≤ max_kl  and  improvement > 0  and  improvement ≥ accept_ratio · α · expected_improvement

    with improvement = L(θ) − ``surrogate_before``. If none of the ``max_backtracks`` candidates
    is accepted, θk is copied back (bitwise: a saved copy, not θ − α s).
    """
    if isinstance(params, nn.Module):
        params = trainable_parameters(params)
    params = list(params)
    theta_old = flat_parameters(params)
    for j in range(max_backtracks):
        alpha = backtrack_coef**j
        assign_flat_parameters_(params, theta_old + alpha * full_step)
        surrogate_new, kl = evaluate()
        improvement = surrogate_new - surrogate_before
        accept = (
            (kl <= max_kl)
            & (improvement > 0)
            & (improvement >= accept_ratio * alpha * expected_improvement)
        )
        if bool(accept):  # host sync: the accept decision
            return TrustRegionInfo(
                True,
                alpha,
                kl.detach(),
                improvement.detach(),
                torch.as_tensor(expected_improvement).detach(),
            )
    assign_flat_parameters_(params, theta_old)
    zero = torch.zeros((), dtype=theta_old.dtype, device=theta_old.device)
    return TrustRegionInfo(
        False, 0.0, zero, zero.clone(), torch.as_tensor(expected_improvement).detach()
    )


def trust_region_step(
    policy: nn.Module,
    obs: torch.Tensor,
    actions: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    factor: torch.Tensor | None,
    mask: torch.Tensor | None,
    max_kl: float,
    cg_iters: int = 10,
    damping: float = 0.1,
    backtrack_coef: float = 0.8,
    max_backtracks: int = 10,
    accept_ratio: float = 0.5,
    action_mask: torch.Tensor | None = None,
    kl: str = "exact",
    residual_tol: float = 1e-10,
    mask_kl: bool = True,
    operator: Callable[..., FisherOperator] = FisherOperator,
    solver: Callable[..., torch.Tensor] = conjugate_gradient,
) -> TrustRegionInfo:
    """One HATRPO update of ``policy`` in place (see the module doc for the four stages).

    ``obs`` ``[N, ...]``, ``actions`` (``[N, d]`` or ``[N]``), ``logp_old`` (joint log-probs at
    collection), ``advantages``, ``factor`` (M; None = 1) and ``mask`` (None = all) are per-sample
    ``[N]``; ``max_kl`` is δ. Non-finite inputs of samples of weight 0 are read as 0, so they
    cannot reach the step through 0 · NaN. ``kl`` picks the divergence of H and of the KL test
    (:mod:`haml.ops.fvp.reference`); ``mask_kl=False`` averages them over all samples as HARL does.

    ``operator(policy, obs, mask, damping, action_mask, kl)`` builds the Fisher operator at θk: a
    matvec with ``quadratic_form(x)`` and ``objective_gradient(objective)`` (the surrogate's value,
    gradient and π_θk, stage 1); ``solver(operator, g, cg_iters, residual_tol)`` returns x.
    """
    # A sample of weight 0 takes no part even where its inputs are not finite (read as 0 there).
    obs, actions, logp_old, advantages = (
        zero_nonfinite_inactive(t, mask) for t in (obs, actions, logp_old, advantages)
    )
    factor = None if factor is None else zero_nonfinite_inactive(factor, mask)
    params = trainable_parameters(policy)
    kl_mask = mask if mask_kl else None
    fisher = operator(policy, obs, kl_mask, damping, action_mask, kl)

    # 1. L(θk), g = ∇_θ L(θk), and π_θk for the KL test
    def objective(dist: Distribution) -> torch.Tensor:
        return surrogate(joint_log_prob(dist, actions), logp_old, advantages, factor, mask)

    surrogate_before, g, dist_before = fisher.objective_gradient(objective)

    # 2. x ≈ (H + damping I)⁻¹ g;  3. β = sqrt(2δ / xᵀ(H + damping I)x), s = β x
    x = solver(fisher, g, cg_iters, residual_tol)
    x_h_x = fisher.quadratic_form(x)
    del fisher  # it caches θk's activations or graph, which the line search overwrites
    positive = x_h_x > 0
    beta = torch.where(
        positive, torch.sqrt(2.0 * max_kl / torch.where(positive, x_h_x, 1.0)), 0.0
    )  # no step when g = 0 (x = 0)
    full_step = beta * x
    expected_improvement = torch.dot(g, full_step)

    # 4. backtracking line search
    def evaluate() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            dist_new = policy.distribution(obs, action_mask)
            surrogate_new = surrogate(
                joint_log_prob(dist_new, actions), logp_old, advantages, factor, mask
            )
            kl_value = masked_mean(per_sample_kl(dist_before, dist_new, kl), kl_mask)
        return surrogate_new, kl_value

    return backtracking_line_search(
        params,
        full_step,
        expected_improvement,
        evaluate,
        surrogate_before,
        max_kl,
        backtrack_coef,
        max_backtracks,
        accept_ratio,
    )
