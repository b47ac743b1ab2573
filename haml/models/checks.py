"""Argument checks every model shares, with one wording: the owner (a class name) and the
argument are named in each error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["check_agent_sizes", "check_obs", "check_positive_int"]


def check_obs(owner: str, obs: Any, obs_dim: int) -> None:
    """``obs`` must be a tensor ``[*B, obs_dim]``."""
    if not isinstance(obs, torch.Tensor):
        raise TypeError(f"{owner}: 'obs' must be a torch.Tensor, got {type(obs).__name__}")
    if obs.dim() < 1 or obs.shape[-1] != obs_dim:
        raise ValueError(f"{owner}: 'obs' must have shape [*B, {obs_dim}], got {tuple(obs.shape)}")


def check_positive_int(owner: str, name: str, value: Any) -> None:
    """``value`` must be an int ≥ 1 (a bool is refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: '{name}' must be a positive integer, got {value!r}")


def check_agent_sizes(owner: str, name: str, values: Any, what: str) -> None:
    """``values`` must be a non-empty sequence of ints ≥ 1, one per agent (``what`` says what
    each one is, for the message)."""
    if (
        isinstance(values, (str, bytes))
        or not isinstance(values, Sequence)
        or len(values) == 0
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values)
    ):
        raise ValueError(
            f"{owner}: '{name}' must be a non-empty sequence of positive integers ({what}), "
            f"got {values!r}"
        )
