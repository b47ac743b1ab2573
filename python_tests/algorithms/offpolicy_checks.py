"""What the off-policy learners' tests share: a hand-built replay batch of Box actions, and the
check that a learner's target critic moves by τ.

Imported by name from the test modules of this folder (pytest puts the folder on the path)."""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence

import torch


def box_batch(
    obs_dims: Sequence[int],
    action_dims: Sequence[int],
    state_dim: int,
    *,
    n_step: int,
    B: int = 32,
    dtype: torch.dtype = torch.float32,
    seed: int = 1,
    active: bool = False,
) -> types.SimpleNamespace:
    """A batch with the fields of haml.buffers.replay.ReplaySample for agents with Box actions in
    [-1, 1]: every sample an ``n_step`` return (discount γ^n, 0 where terminated, 1 in 5), and
    with ``active`` an active mask per agent (7 in 10 samples active)."""
    gen = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=dtype)

    terminated = torch.rand(B, generator=gen) < 0.2
    active_masks = None
    if active:
        active_masks = tuple(torch.rand(B, generator=gen) < 0.7 for _ in obs_dims)
    return types.SimpleNamespace(
        obs=tuple(draw(B, o) for o in obs_dims),
        state=draw(B, state_dim),
        actions=tuple(draw(B, d).clamp(-1, 1) for d in action_dims),
        action_masks=None,
        active_masks=active_masks,
        reward=draw(B),
        discount=0.99**n_step * (~terminated).to(dtype),
        next_obs=tuple(draw(B, o) for o in obs_dims),
        next_state=draw(B, state_dim),
        next_action_masks=None,
        steps=torch.full((B,), n_step, dtype=torch.int64),
    )


def assert_target_critic_moves_by_tau(make_learner: Callable[..., object],
                                      batch: types.SimpleNamespace) -> None:
    """One update with τ = 0.25 leaves every target-critic parameter at 0.75 φ' + 0.25 φ."""
    learner = make_learner(tau=0.25)
    targets_before = [p.detach().clone() for p in learner.target_critic.parameters()]
    learner.update(batch)
    pairs = zip(learner.target_critic.parameters(), learner.critic.parameters())
    for (t, s), t0 in zip(pairs, targets_before):
        torch.testing.assert_close(t, 0.75 * t0 + 0.25 * s.detach(), rtol=1e-6, atol=1e-6)
