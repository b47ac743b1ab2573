"""Conjugate gradient, readable form: x ≈ A⁻¹b from products A·p only ([HATRPO], Algorithm 2, line 11).

HATRPO solves (H + damping·I) x = g for the search direction x ≈ H⁻¹g without forming H; the
matrix enters only through ``matvec`` (a :class:`~haml.ops.fvp.FisherOperator`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["conjugate_gradient"]


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
) -> torch.Tensor:
    """The standard conjugate-gradient iteration for a symmetric positive-definite A, from x₀ = 0::

        r₀ = p₀ = b
        for k = 0, 1, ..., iters − 1, while rₖ·rₖ > residual_tol:
            αₖ = rₖ·rₖ / pₖ·A pₖ
            xₖ₊₁ = xₖ + αₖ pₖ
            rₖ₊₁ = rₖ − αₖ A pₖ
            pₖ₊₁ = rₖ₊₁ + (rₖ₊₁·rₖ₊₁ / rₖ·rₖ) pₖ

    At most ``iters`` products; it stops as soon as the squared residual norm r·r is at most
    ``residual_tol`` (checked before each product, so b = 0 returns 0 without a product, and an
    exactly solved system stops instead of dividing 0 by 0 with ``residual_tol = 0``). That
    check reads r·r on the host once per iteration: the stopping rule of TRPO and HARL.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    r_dot_r = torch.dot(r, r)
    for _ in range(iters):
        if r_dot_r <= residual_tol:  # host sync: the stopping rule
            break
        a_p = matvec(p)
        alpha = r_dot_r / torch.dot(p, a_p)
        x = x + alpha * p
        r = r - alpha * a_p
        new_r_dot_r = torch.dot(r, r)
        p = r + (new_r_dot_r / r_dot_r) * p
        r_dot_r = new_r_dot_r
    return x
