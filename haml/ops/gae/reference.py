"""Generalized advantage estimation, the readable specification (Schulman et al., 2016).

This loop is the definition that the native kernels are tested against.
"""

from __future__ import annotations

import torch


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(γ, λ) advantages and λ-returns over time-major tensors.

    All tensors are ``[T, *batch]`` (for example ``[T, E]`` or ``[T, E, A]``); ``terminated`` and
    ``truncated`` are bool. ``next_values[t]`` is V(s_{t+1}) of the true next state, that is the
    final observation when the episode was truncated at t, so a time limit bootstraps while a
    termination does not::

        δ_t = r_t + γ (1 - terminated_t) V(s_{t+1}) - V(s_t)
        Â_t = δ_t + γ λ (1 - done_t) Â_{t+1},   done_t = terminated_t ∨ truncated_t,  Â_T = 0
        R_t = Â_t + V(s_t)

    Returns ``(advantages, returns)``, each shaped like ``rewards``.
    """
    done = terminated | truncated
    zero = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    advantages = torch.empty_like(rewards)
    next_advantage: torch.Tensor | float = 0.0  # Â_T
    for t in reversed(range(rewards.shape[0])):
        # torch.where rather than a product with (1 - flag) or with γλ = 0: a NaN or inf that Â_t
        # does not depend on (beyond the episode's end, or any later step when λ = 0) must not
        # leak into it through 0 · NaN.
        bootstrap = torch.where(terminated[t], zero, gamma * next_values[t])
        delta = rewards[t] + bootstrap - values[t]
        if gamma * lam == 0:
            next_advantage = delta
        else:
            next_advantage = torch.where(done[t], delta, delta + gamma * lam * next_advantage)
        advantages[t] = next_advantage
    return advantages, advantages + values
