"""How a rollout ``[T, E, ...]`` is laid out as the ``N = T·E`` samples of an update.

- :class:`FlatLayout` (feed-forward networks): sample ``n = t·E + e``; minibatches pick samples.
- :class:`ChunkLayout` (recurrent networks): the rollout is cut into chunks of ``L`` consecutive
  steps of one env, ``C = (T/L)·E`` chunks, chunk ``c = k·E + e`` holding steps ``kL .. kL+L-1`` of
  env ``e``; samples are flattened time-major, ``n = j·C + c`` for step ``j`` of chunk ``c``, so
  ``x.view(L, C, ...)`` gives the sequences a GRU runs over. Minibatches pick whole chunks.

Both map back (:meth:`from_samples`) so per-sample results (the HA factor M) return to the
rollout's shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ChunkLayout", "FlatLayout", "SampleLayout", "select_units"]


@dataclass(frozen=True)
class FlatLayout:
    """One unit per sample."""

    length = 1

    def to_samples(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, E, ...] -> [T·E, ...]``."""
        return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])

    def from_samples(self, x: torch.Tensor, T: int, E: int) -> torch.Tensor:
        return x.reshape(T, E, *x.shape[1:])

    def chunk_starts(self, x: torch.Tensor) -> torch.Tensor:
        """The value of ``x [T, E, ...]`` at each unit's first step, ``[T·E, ...]``."""
        return self.to_samples(x)

    def concat(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Samples of several agents as one batch (their units side by side)."""
        return parts[0] if len(parts) == 1 else torch.cat(parts, 0)


@dataclass(frozen=True)
class ChunkLayout:
    """Chunks of ``length`` steps (truncated BPTT)."""

    length: int

    def _check(self, T: int) -> None:
        if T % self.length:
            raise ValueError(
                f"recurrent training cuts the rollout into chunks of train.chunk_length="
                f"{self.length} steps, but train.rollout_length={T} is not a multiple of it"
            )

    def to_samples(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, E, ...] -> [L·C, ...]`` time-major within chunks."""
        T, E = x.shape[:2]
        self._check(T)
        L = self.length
        chunked = x.reshape(T // L, L, E, *x.shape[2:]).transpose(0, 1)  # [L, T/L, E, ...]
        return chunked.reshape(L * (T // L) * E, *x.shape[2:])

    def from_samples(self, x: torch.Tensor, T: int, E: int) -> torch.Tensor:
        L = self.length
        chunked = x.reshape(L, T // L, E, *x.shape[1:]).transpose(0, 1)  # [T/L, L, E, ...]
        return chunked.reshape(T, E, *x.shape[1:])

    def chunk_starts(self, x: torch.Tensor) -> torch.Tensor:
        """``x [T, E, ...]`` at the first step of each chunk, ``[C, ...]`` (the stored hidden
        states a chunk restarts from)."""
        T, E = x.shape[:2]
        self._check(T)
        return x[:: self.length].reshape((T // self.length) * E, *x.shape[2:])

    def concat(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Samples of several agents as one batch: chunks side by side, still time-major."""
        if len(parts) == 1:
            return parts[0]
        L = self.length
        return torch.cat([p.view(L, -1, *p.shape[1:]) for p in parts], 1).flatten(0, 1)


SampleLayout = FlatLayout | ChunkLayout


def select_units(x: torch.Tensor, idx: torch.Tensor | None, length: int) -> torch.Tensor:
    """The samples of units ``idx`` from ``x [length·U, ...]`` laid out time-major over ``U``
    units (``length`` 1: plain indexing), still time-major over the selected units; ``idx``
    ``None`` selects every unit (``x`` itself)."""
    if idx is None:
        return x
    if length == 1:
        return x[idx]
    return x.view(length, -1, *x.shape[1:])[:, idx].reshape(length * idx.numel(), *x.shape[1:])
