"""Training the V critic: clipped Huber value loss on (optionally) normalised returns.

Per minibatch, with V_old the prediction recorded at collection and R̂ = Â + V the GAE returns
(paper 000, Algorithm 2 line 15 and the papers' code)::

    V_clip = V_old + clip(V_φ(s) − V_old, −ε_v, ε_v)
    L(φ)   = mean( max( huber(norm(R̂) − V_φ(s)), huber(norm(R̂) − V_clip) ) )

``norm`` is the running :class:`~haml.models.value.ValueNorm` (updated with each minibatch's raw
returns before it is used, as HARL) or the identity.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from haml.algorithms.base import minibatch_indices, schedule_lr
from haml.config.schema import CriticConfig
from haml.models.value import ValueNorm, VCritic, huber

__all__ = ["CriticLearner"]


class CriticLearner:
    """A :class:`VCritic`, its optimiser and its value normaliser."""

    def __init__(self, critic: VCritic, cfg: CriticConfig) -> None:
        self.critic = critic
        self.cfg = cfg
        self.value_norm = ValueNorm() if cfg.value_norm else None
        self.optimizer = torch.optim.Adam(critic.parameters(), lr=cfg.lr, eps=cfg.adam_eps)

    @property
    def lr(self) -> float:
        """The current learning rate (after the schedule)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def set_progress(self, fraction: float) -> None:
        schedule_lr(self.optimizer, self.cfg.lr, self.cfg.lr_schedule, fraction)

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(raw, value)``: the network's output (normalised space) and V in return units."""
        raw = self.critic(inputs)
        value = self.value_norm.denormalize(raw) if self.value_norm is not None else raw
        return raw, value

    def update(
        self,
        inputs: torch.Tensor,
        returns: torch.Tensor,
        old_raw: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``epochs`` × ``num_minibatches`` steps on ``inputs [N, in]``, ``returns [N]`` and the
        collection-time outputs ``old_raw [N]``; ``mask [N]`` weights samples (None: all)."""
        cfg = self.cfg
        n = returns.shape[0]
        total = torch.zeros((), device=returns.device)
        steps = 0
        for _ in range(cfg.epochs):
            for idx in minibatch_indices(n, cfg.num_minibatches, returns.device):
                target = returns[idx]
                if self.value_norm is not None:
                    self.value_norm.update(target)
                    target = self.value_norm.normalize(target)
                value = self.critic(inputs[idx])
                error = huber(target - value, cfg.huber_delta)
                if cfg.value_clip > 0:
                    old = old_raw[idx]
                    clipped = old + (value - old).clamp(-cfg.value_clip, cfg.value_clip)
                    error = torch.max(error, huber(target - clipped, cfg.huber_delta))
                if mask is None:
                    loss = error.mean()
                else:
                    weight = mask[idx].to(error.dtype)
                    loss = (error * weight).sum() / weight.sum().clamp(min=1.0)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm > 0:
                    nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                total = total + loss.detach()
                steps += 1
        return {"value_loss": total / steps}

    def state_dict(self) -> dict[str, Any]:
        return {
            "critic": self.critic.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "value_norm": None if self.value_norm is None else self.value_norm.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.value_norm is not None:
            self.value_norm.load_state_dict(state["value_norm"])
