"""The sequential update scheme of the HA algorithms ([HATRPO] §4, Algorithms 2–3; [HAML] §4).

Each iteration draws a fresh uniformly random permutation i_{1:n} of the agents. Agent i_m is
updated with its objective weighted by

    M^{i_{1:m}}(s, a) = Π_{j<m}  π^{i_j}_{θ_{k+1}}(a^{i_j}|o^{i_j}) / π^{i_j}_{θ_k}(a^{i_j}|o^{i_j}),

computed per sample and detached ([HATRPO], eq. (10)); after its update its own ratio is folded
into M for the next agent. Simultaneous (MA) algorithms keep M = 1 and any order.
"""

from __future__ import annotations

import torch

__all__ = ["agent_order", "fold_factor"]


def agent_order(n: int, sequential: bool) -> list[int]:
    """A fresh uniformly random permutation of ``range(n)`` (global torch RNG) when
    ``sequential``, else ``0..n-1`` (the order is irrelevant when M stays 1)."""
    if not sequential:
        return list(range(n))
    return torch.randperm(n).tolist()


def fold_factor(
    factor: torch.Tensor,
    logp_before: torch.Tensor,
    logp_after: torch.Tensor,
    active: torch.Tensor | None = None,
) -> torch.Tensor:
    """M ← M · π_new(a|o) / π_old(a|o), with the joint log-probabilities of the agent just updated
    (summed over its action dimensions); detached, never clipped (as the papers' code).

    Where the agent is not ``active`` (dead: its only available action is the no-op) M is left
    as it is: its action did not take part in the joint action."""
    folded = (factor * torch.exp(logp_after - logp_before)).detach()
    return folded if active is None else torch.where(active, folded, factor)
