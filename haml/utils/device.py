"""Devices a run names: a clear error for one this torch cannot use, before any work starts."""

from __future__ import annotations

import torch

__all__ = ["usable_device"]


def usable_device(name: str, key: str = "train.device") -> torch.device:
    """``torch.device(name)`` once a tensor could be made there; a ``ValueError`` naming ``key``
    otherwise (a misspelt device, ``cuda`` on a CPU-only torch build, a GPU index that is not
    there)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{key} must be a torch device such as cpu, cuda or cuda:1, got {name!r}") from None
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as err:
        build = "a CPU-only build" if not torch.backends.cuda.is_built() else "this build"
        raise ValueError(
            f"{key}={name!r} cannot be used here: torch {torch.__version__} ({build}) answered "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    return device
