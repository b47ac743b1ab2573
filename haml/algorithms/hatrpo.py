"""HATRPO's actor update ([HATRPO], Algorithm 2, eqs. (8)–(10)): one trust-region step per agent
per iteration on the whole batch,

    max_θ  E[ r(θ) M^{i_{1:m}}(s, a) Â(s, a) ]   s.t.   E_s[ KL(π_θk(·|o), π_θ(·|o)) ] ≤ δ,

solved by :func:`haml.ops.trust_region_step` (conjugate gradient on the Fisher matrix, step scale
sqrt(2δ / xᵀHx), backtracking line search with acceptance ratio κ). No optimiser state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from haml.algorithms.base import ActorBatch
from haml.config.schema import check_choice, check_positive
from haml.models import joint_entropy
from haml.ops import trust_region_step
from haml.ops.fvp.reference import KL_KINDS
from haml.ops.masked import masked_mean

__all__ = ["TRPOActorLearner", "TRPOConfig"]


@dataclass
class TRPOConfig:
    """HATRPO: one trust-region step per agent per iteration ([HATRPO], Algorithm 2)."""

    max_kl: float = 1e-4
    """δ, the mean-KL radius ([HATRPO], Table 6: per task)."""
    cg_iters: int = 10
    damping: float = 0.1
    backtrack_coef: float = 0.8
    max_backtracks: int = 10
    accept_ratio: float = 0.5
    """Accept a step when improvement ≥ this × the expected improvement ([HATRPO], Table 4)."""
    kl: str = "exact"
    """``exact`` (the true KL) or ``harl`` (the reference code's discrete approximation)."""

    def __post_init__(self) -> None:
        check_positive("algo", "max_kl", self.max_kl)
        check_positive("algo", "cg_iters", self.cg_iters)
        check_positive("algo", "damping", self.damping, allow_zero=True)
        if not 0.0 < self.backtrack_coef < 1.0:
            raise ValueError(f"algo.backtrack_coef must lie in (0, 1), got {self.backtrack_coef}")
        check_positive("algo", "max_backtracks", self.max_backtracks)
        check_positive("algo", "accept_ratio", self.accept_ratio, allow_zero=True)
        check_choice("algo", "kl", self.kl, KL_KINDS)


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
