"""Uniformly random actions for any agent's action space: the off-policy warm-up and the
random-action baseline of ``haml bench train`` draw them the same way.

- ``Box``: uniform between the bounds. A dimension with an infinite bound has no uniform law, so
  it draws from an interval of width 2 inside the box: ``U(-1, 1)`` when both bounds are
  infinite (the unit the exploration noise and the unbounded policies use), ``U(low, low + 2)``
  or ``U(high - 2, high)`` when one is finite. float32 ``[E, d]``.
- ``Discrete``: uniform over the actions, or over the available ones when the env gives masks;
  int64 ``[E]`` (``start`` added).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["ActionSampler", "random_action_sampler"]

ActionSampler = Callable[[Sequence[torch.Tensor | None] | None], list[torch.Tensor]]
"""``masks -> actions``: one random action per agent per env (``masks`` per agent, or None)."""

UNBOUNDED_WIDTH = 2.0
"""Width of the interval an unbounded dimension draws from."""


def _box_interval(space: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, width)`` of the interval each dimension of a Box draws from."""
    low = torch.as_tensor(space.low, dtype=torch.float64).reshape(-1)
    high = torch.as_tensor(space.high, dtype=torch.float64).reshape(-1)
    has_low, has_high = torch.isfinite(low), torch.isfinite(high)
    start = torch.where(
        has_low, low, torch.where(has_high, high - UNBOUNDED_WIDTH, torch.full_like(low, -1.0))
    )
    width = torch.where(has_low & has_high, high - low, torch.full_like(low, UNBOUNDED_WIDTH))
    return start.to(torch.float32).to(device), width.to(torch.float32).to(device)


def random_action_sampler(
    action_spaces: Sequence[Any],
    num_envs: int,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> ActionSampler:
    """A function ``masks -> actions`` drawing per the module doc, for ``num_envs`` envs.

    ``generator`` (on ``device``): the draws' own stream; None uses the global torch RNG (what a
    run's checkpoint saves, so a resumed warm-up draws the same actions). A space that is neither
    ``Box`` nor ``Discrete`` is a ``TypeError``.
    """
    from gymnasium import spaces

    device = torch.device(device)
    draws: list[Callable[[torch.Tensor | None], torch.Tensor]] = []
    for agent, space in enumerate(action_spaces):
        if isinstance(space, spaces.Box):
            low, width = _box_interval(space, device)
            shape = (num_envs, *low.shape)

            def draw_box(mask: torch.Tensor | None, low=low, width=width, shape=shape) -> torch.Tensor:
                return low + width * torch.rand(shape, generator=generator, device=device)

            draws.append(draw_box)
        elif isinstance(space, spaces.Discrete):
            n, start = int(space.n), int(space.start)

            def draw_discrete(mask: torch.Tensor | None, n=n, start=start) -> torch.Tensor:
                if mask is None:
                    index = torch.randint(n, (num_envs,), generator=generator, device=device)
                else:
                    index = torch.multinomial(
                        mask.to(torch.float32), 1, generator=generator
                    ).squeeze(-1)
                return index + start

            draws.append(draw_discrete)
        else:
            raise TypeError(
                f"agent {agent}'s action space {space} is neither Box nor Discrete (the only kinds "
                "haml's envs have)"
            )

    def sample(masks: Sequence[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
        return [draw(None if masks is None else masks[i]) for i, draw in enumerate(draws)]

    return sample
