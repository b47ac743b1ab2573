"""What every off-policy learner (HADDPG, HATD3, HASAC, HAD3QN and their MA forms) shares: the
checks of the replay-schedule keys every one of their configs has, and the sequential update's
frame (the agents' order, one optimiser step with gradients for one network only)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from haml.config.schema import check_positive

__all__ = ["OffPolicyLearnerBase", "check_replay_keys"]

_POSITIVE = ("actor_lr", "critic_lr", "tau", "n_step", "batch_size", "buffer_size",
             "updates_per_step", "train_every")
_NON_NEGATIVE = ("warmup_steps", "max_grad_norm")


def check_replay_keys(cfg: Any, positive: tuple[str, ...] = (),
                      non_negative: tuple[str, ...] = ()) -> None:
    """The checks of an off-policy ``algo:`` section's common keys (learning rates, τ in (0, 1],
    n-step, batch, buffer ≥ batch, warm-up, update rate, gradient clip), plus ``positive`` and
    ``non_negative`` of its own; each error names its key."""
    for name in (*_POSITIVE, *positive):
        check_positive("algo", name, getattr(cfg, name))
    for name in (*_NON_NEGATIVE, *non_negative):
        check_positive("algo", name, getattr(cfg, name), allow_zero=True)
    if cfg.tau > 1:
        raise ValueError(f"algo.tau must be in (0, 1], got {cfg.tau!r}")
    if cfg.buffer_size < cfg.batch_size:
        raise ValueError(
            f"algo.buffer_size must be >= algo.batch_size ({cfg.batch_size}), "
            f"got {cfg.buffer_size!r}"
        )


class OffPolicyLearnerBase:
    """The frame of an off-policy learner: ``policies`` (one module per agent), ``cfg`` (its
    ``algo:`` section, with ``max_grad_norm``) and ``sequential`` (HA) are set by the subclass."""

    policies: list[nn.Module]
    cfg: Any
    sequential: bool

    @property
    def n_agents(self) -> int:
        return len(self.policies)

    def set_progress(self, fraction: float) -> None:
        """No schedule over the run (fixed learning rates and exploration): nothing to do."""

    def agent_order(self) -> list[int]:
        """``i_{1:n}``: a fresh random permutation (global torch RNG) for HA, ``0..n-1`` for MA."""
        if self.sequential:
            return torch.randperm(self.n_agents).tolist()
        return list(range(self.n_agents))

    def _step(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
              loss: torch.Tensor) -> None:
        """One optimiser step on ``loss``, with gradients for ``params`` only (clipped to
        ``max_grad_norm`` when it is positive)."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        if self.cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm, foreach=True)
        optimizer.step()
