"""HAA2C's actor update ([HAML], §4 and Appendix F): agent i_m ascends the factor-weighted,
unclipped objective

    E[ r(θ) M^{i_{1:m}}(s, a) Â(s, a) ],     r(θ) = π_θ(a|o) / π_θk(a|o),

for several mini-epochs (5 in the paper). At θ = θk its gradient is the A2C policy gradient
E[M Â ∇ log π]; the later mini-epochs keep the importance ratio, as the papers' code does.
It is :class:`~haml.algorithms.happo.PPOActorLearner` with ``clip = 0``
(:class:`A2CConfig` enforces it).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from haml.algorithms.happo import PPOActorLearner, PPOConfig

__all__ = ["A2CActorLearner", "A2CConfig"]


@dataclass
class A2CConfig(PPOConfig):
    """HAA2C / MAA2C: the factor-weighted A2C objective, several mini-epochs, no clipping.

    [HAML], Appendix F.2: 5 mini-epochs; actor lr 2e-4 (HalfCheetah, Ant), 1e-4 (Walker2d).
    """

    lr: float = 2e-4
    clip: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.clip != 0.0:
            raise ValueError(f"algo.clip must be 0 for A2C-style algorithms, got {self.clip}")


class A2CActorLearner(PPOActorLearner):
    def __init__(self, policy: nn.Module, cfg: A2CConfig) -> None:
        if cfg.clip != 0:
            raise ValueError(f"A2CActorLearner: the A2C objective is unclipped, got clip={cfg.clip}")
        super().__init__(policy, cfg)
