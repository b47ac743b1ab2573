"""HATRPO's actor update (paper 000, Algorithm 2, eqs. (8)–(10)): one trust-region step per agent
per iteration on the whole batch,

    max_θ  E[ r(θ) M^{i_{1:m}}(s, a) Â(s, a) ]   s.t.   E_s[ KL(π_θk(·|o), π_θ(·|o)) ] ≤ δ,

solved by :func:`haml.ops.trust_region_step` (conjugate gradient on the Fisher matrix, step scale
sqrt(2δ / xᵀHx), backtracking line search with acceptance ratio κ). No optimiser state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from haml.algorithms.base import ActorBatch
from haml.config.schema import TRPOConfig
from haml.models import joint_entropy
from haml.ops import trust_region_step
from haml.ops.masked import masked_mean

__all__ = ["TRPOActorLearner"]


class TRPOActorLearner:
    def __init__(self, policy: nn.Module, cfg: TRPOConfig) -> None:
        self.policy = policy
        self.cfg = cfg

    lr = None
    """No learning rate: the step size comes from δ."""

    def set_progress(self, fraction: float) -> None:
        """The KL radius δ does not decay."""

    def update(self, batch: ActorBatch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        policy = batch.view(self.policy)
        info = trust_region_step(
            policy,
            batch.obs,
            batch.actions,
            batch.logp_old,
            batch.advantages,
            batch.factor,
            batch.mask,
            cfg.max_kl,
            cg_iters=cfg.cg_iters,
            damping=cfg.damping,
            backtrack_coef=cfg.backtrack_coef,
            max_backtracks=cfg.max_backtracks,
            accept_ratio=cfg.accept_ratio,
            action_mask=batch.action_mask,
            kl=cfg.kl,
        )
        as_tensor = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731
        with torch.no_grad():
            entropy = masked_mean(
                joint_entropy(policy.distribution(batch.obs, batch.action_mask)), batch.mask
            )
        return {
            "kl": as_tensor(info.kl),
            "accepted": as_tensor(float(info.accepted)),
            "step_fraction": as_tensor(info.step_fraction),
            "improvement": as_tensor(info.improvement),
            "expected_improvement": as_tensor(info.expected_improvement),
            "entropy": entropy,
        }

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
