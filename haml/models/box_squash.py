"""The tanh squash of an actor's unbounded output into a gymnasium Box: HADDPG/HATD3's
deterministic actors and HASAC's tanh-Gaussian ones share it.

:class:`BoxSquash` is a base class rather than a submodule, so that its buffers stay at the
actor's top level (``action_low``, ``action_high``, ``action_center``, ``action_scale``,
``bounded``) and checkpoints keep their keys.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BoxSquash"]


class BoxSquash(nn.Module):
    """A module whose actions live in a Box: ``a = c + h·tanh(x)`` on the bounded dimensions
    (centre c, half-width h), ``a = x`` on the unbounded ones."""

    def _register_box(self, low: torch.Tensor, high: torch.Tensor, dtype: torch.dtype) -> None:
        """Keep the Box ``[low, high]`` (1-D, validated by the caller; a dimension is bounded when
        both its bounds are finite) as buffers of ``dtype``."""
        bounded = torch.isfinite(low) & torch.isfinite(high)
        # 0 and 1 for an unbounded dimension, so that no inf ever meets a zero gradient
        # (0 · inf = NaN) in the squash's backward; h is also the unit of exploration noise.
        center = torch.where(bounded, (low + high) / 2, torch.zeros_like(low))
        scale = torch.where(bounded, (high - low) / 2, torch.ones_like(low))
        self.register_buffer("action_low", low.to(dtype))
        self.register_buffer("action_high", high.to(dtype))
        self.register_buffer("action_center", center.to(dtype))
        self.register_buffer("action_scale", scale.to(dtype))
        self.register_buffer("bounded", bounded)
        # "all", "none" or "some" dimensions squashed: the first two skip the torch.where.
        self._squash = "all" if bool(bounded.all()) else "none" if not bool(bounded.any()) else "some"

    def squash(self, x: torch.Tensor) -> torch.Tensor:
        """``x [*B, d]`` mapped into the Box: ``c + h·tanh(x)`` on the bounded dimensions
        (clipped to the bounds against rounding), ``x`` on the unbounded ones."""
        if self._squash == "none":
            return x
        squashed = torch.addcmul(self.action_center, self.action_scale, torch.tanh(x))
        # c ± h can round past a bound (float32: -2.2 + 5.1 > 2.9).
        squashed = torch.clamp(squashed, self.action_low, self.action_high)
        return squashed if self._squash == "all" else torch.where(self.bounded, squashed, x)
