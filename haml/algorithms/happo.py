"""HAPPO's actor update ([HATRPO], Algorithm 3, eq. (11)); also MAPPO/IPPO (M = 1) and, with
``clip = 0``, the A2C objective of HAA2C / MAA2C ([HAML]).

Agent i_m maximises, over ``epochs`` passes of ``num_minibatches`` minibatches,

    E[ min( r(θ) M Â,  clip(r(θ), 1 ± ε) M Â ) ] + c_ent · H[π],     r(θ) = π_θ(a|o) / π_θk(a|o)

through :func:`haml.ops.clipped_surrogate` (native fused forward/backward where built), with Adam
(ε 1e-5) and gradient-norm clipping, as in the papers' code.

The gradient of each step: for an :class:`~haml.models.MLPPolicy` that the native Fisher operator
serves (:func:`haml.ops.fvp.serves_natively`), from that operator's cached blocked forward and one
transposed pass (:meth:`haml.ops.FisherOperator.objective_gradient`; autograd runs through the
distribution head only), 1.1–1.3× faster than autograd through the network
(docs/BENCHMARKS.md, ``haml bench happo``); otherwise, or with ``native_gradient: false``,
autograd, which is the reference the native path is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from haml.algorithms.base import ActorBatch, minibatch_indices, schedule_lr, set_flat_grad
from haml.config.schema import LR_SCHEDULES, check_choice, check_positive
from haml.models import joint_entropy, joint_log_prob
from haml.ops import FisherOperator, SurrogateOut, clipped_surrogate
from haml.ops.fvp import serves_natively
from haml.ops.masked import masked_mean

__all__ = ["PPOActorLearner", "PPOConfig"]


@dataclass
class PPOConfig:
    """First-order actor updates: HAPPO / MAPPO / IPPO (clipped) and HAA2C / MAA2C (``clip`` 0).

    [HATRPO], Table 4 (MaMuJoCo): lr 5e-6, 5 epochs, clip 0.3; [HAML]: HAA2C 5 mini-epochs,
    no clipping.
    """

    lr: float = 5e-6
    """Actor learning rate (Adam)."""
    epochs: int = 5
    """PPO epochs / A2C mini-epochs per iteration."""
    num_minibatches: int = 1
    clip: float = 0.3
    """PPO ε; 0 gives the unclipped factor-weighted objective (HAA2C)."""
    entropy_coef: float = 0.0
    adam_eps: float = 1e-5
    max_grad_norm: float = 10.0
    """Gradient-norm clip; 0 turns it off."""
    lr_schedule: str = "constant"
    """``constant`` or ``linear`` decay to 0 over the run."""
    native_gradient: bool = True
    """Take the gradient from the native Fisher operator's forward and transposed pass where it
    serves the policy (see the module doc); false: autograd always."""

    def __post_init__(self) -> None:
        check_positive("algo", "lr", self.lr)
        check_positive("algo", "epochs", self.epochs)
        check_positive("algo", "num_minibatches", self.num_minibatches)
        for name in ("clip", "entropy_coef", "max_grad_norm"):
            check_positive("algo", name, getattr(self, name), allow_zero=True)
        check_choice("algo", "lr_schedule", self.lr_schedule, LR_SCHEDULES)


class PPOActorLearner:
    """The clipped (or, with ``cfg.clip == 0``, unclipped) factor-weighted policy update."""

    def __init__(self, policy: nn.Module, cfg: PPOConfig) -> None:
        self.policy = policy
        self.cfg = cfg
        # foreach: one multi-tensor op per Adam stage instead of one per parameter (torch picks
        # it on CUDA only); the same numbers, faster on a CPU too (docs/BENCHMARKS.md).
        self.optimizer = torch.optim.Adam(
            policy.parameters(), lr=cfg.lr, eps=cfg.adam_eps, foreach=True
        )

    @property
    def lr(self) -> float:
        """The current learning rate (after the schedule)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def set_progress(self, fraction: float) -> None:
        schedule_lr(self.optimizer, self.cfg.lr, self.cfg.lr_schedule, fraction)

    def update(self, batch: ActorBatch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        clip = cfg.clip if cfg.clip > 0 else None
        sums: dict[str, torch.Tensor] = {}
        steps = 0
        for _ in range(cfg.epochs):
            for idx in minibatch_indices(batch.units, cfg.num_minibatches, batch.logp_old.device):
                mb = batch.subset(idx)
                self.optimizer.zero_grad(set_to_none=True)
                out = self._surrogate_and_gradient(mb, clip)
                if cfg.max_grad_norm > 0:
                    grad_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                else:
                    grad_norm = _grad_norm(self.policy)
                self.optimizer.step()
                for key, value in (
                    ("policy_loss", out.loss.detach()),
                    ("clip_fraction", out.clip_fraction),
                    ("approx_kl", out.approx_kl),
                    ("ratio_mean", out.ratio_mean),
                    ("grad_norm", grad_norm.detach()),
                ):
                    sums[key] = sums.get(key, 0.0) + value
                steps += 1
        metrics = {key: value / steps for key, value in sums.items()}
        with torch.no_grad():
            dist = batch.view(self.policy).distribution(batch.obs, batch.action_mask)
            metrics["entropy"] = masked_mean(joint_entropy(dist), batch.mask)
        return metrics

    def _surrogate(self, dist: Any, mb: ActorBatch, clip: float | None) -> SurrogateOut:
        cfg = self.cfg
        return clipped_surrogate(
            joint_log_prob(dist, mb.actions),
            mb.logp_old,
            mb.advantages,
            clip,
            factor=mb.factor,
            mask=mb.mask,
            entropy=joint_entropy(dist) if cfg.entropy_coef > 0 else None,
            entropy_coef=cfg.entropy_coef,
        )

    def _surrogate_and_gradient(self, mb: ActorBatch, clip: float | None) -> SurrogateOut:
        """The minibatch's surrogate, with its loss's gradient in the parameters' ``.grad``."""
        if self.cfg.native_gradient and mb.sequences is None and serves_natively(self.policy, mb.obs):
            with torch.no_grad():
                operator = FisherOperator(self.policy, mb.obs, None, 0.0, mb.action_mask)
            outs: list[SurrogateOut] = []

            def loss(dist: Any) -> torch.Tensor:
                outs.append(self._surrogate(dist, mb, clip))
                return outs[-1].loss

            _, flat, _ = operator.objective_gradient(loss)
            set_flat_grad(self.policy, flat)
            return outs[-1]
        out = self._surrogate(mb.view(self.policy).distribution(mb.obs, mb.action_mask), mb, clip)
        out.loss.backward()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def _grad_norm(module: nn.Module) -> torch.Tensor:
    grads = [p.grad.detach().norm() for p in module.parameters() if p.grad is not None]
    return torch.stack(grads).norm() if grads else torch.zeros(())
