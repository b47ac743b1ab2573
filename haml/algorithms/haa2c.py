"""HAA2C's actor update (paper 001, §4 and Appendix F): agent i_m ascends the factor-weighted,
unclipped objective

    E[ r(θ) M^{i_{1:m}}(s, a) Â(s, a) ],     r(θ) = π_θ(a|o) / π_θk(a|o),

for several mini-epochs (5 in the paper). At θ = θk its gradient is the A2C policy gradient
E[M Â ∇ log π]; the later mini-epochs keep the importance ratio, as the papers' code does.
It is :class:`~haml.algorithms.happo.PPOActorLearner` with ``clip = 0``
(:class:`~haml.config.schema.A2CConfig` enforces it).
"""

from __future__ import annotations

from torch import nn

from haml.algorithms.happo import PPOActorLearner
from haml.config.schema import A2CConfig

__all__ = ["A2CActorLearner"]


class A2CActorLearner(PPOActorLearner):
    def __init__(self, policy: nn.Module, cfg: A2CConfig) -> None:
        if cfg.clip != 0:
            raise ValueError(f"A2CActorLearner: the A2C objective is unclipped, got clip={cfg.clip}")
        super().__init__(policy, cfg)
