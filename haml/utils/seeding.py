"""Seeding and the global random-number-generator states a checkpoint carries.

A resumed run reproduces an uninterrupted one only if every generator it draws from continues
where it stopped. :func:`rng_state` captures the process-global generators: Python's ``random``,
NumPy's legacy global generator (``np.random.*``), torch's CPU generator, and torch's CUDA
generators when CUDA is available. :func:`set_rng_state` puts them back. Generators that a
component owns (a ``torch.Generator`` of an environment, say) are that component's to save.

The captured state holds only tensors, ints, floats, strings and Python containers, so a
checkpoint that contains it loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["RNG_KEYS", "SeedError", "check_seed", "rng_state", "seed_everything", "set_rng_state"]

RNG_KEYS = ("python", "numpy", "torch", "torch_cuda")
"""The keys of :func:`rng_state`'s dict; ``torch_cuda`` is present only when CUDA is available."""

_MAX_SEED = 2**32 - 1  # NumPy's legacy seeding accepts [0, 2**32)


class SeedError(TypeError, ValueError):
    """A seed that is not an integer, or not in the range asked for. Both a ``TypeError`` and a
    ``ValueError``, so that a caller's ``except`` of either kind catches it."""


def check_seed(seed: object, owner: str, *, optional: bool = True, bounded: bool = False) -> int | None:
    """``seed`` as a Python int (NumPy integers accepted; ``bool`` refused), or None where
    ``optional``; else a :class:`SeedError` naming ``owner`` (the function or class given it).

    ``bounded``: the seed must also lie in ``[0, 2**32 - 1]``, what NumPy's global generator
    takes. Env seeds are not bounded: each family maps ``seed + e`` onto its own generator.
    """
    if seed is None and optional:
        return None
    is_int = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
    if not is_int or (bounded and not 0 <= seed <= _MAX_SEED):
        wanted = "an int in [0, 2**32 - 1]" if bounded else "an int"
        raise SeedError(f"{owner}: 'seed' must be {wanted}{' or None' if optional else ''}, got {seed!r}")
    return int(seed)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device).

    ``deterministic=True`` also asks torch for deterministic kernels (an error where an op has
    none) and sets the cuBLAS workspace variable that CUDA determinism needs; CPU training is
    deterministic without it.
    """
    seed = check_seed(seed, "seed_everything", optional=False, bounded=True)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device as well
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict[str, Any]:
    """The current states of the global generators, keyed by :data:`RNG_KEYS`."""
    version, internal, gauss_next = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            # a list of ints rather than an ndarray: weights_only loading refuses numpy arrays
            "key": numpy_state["state"]["key"].tolist(),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators from a dict returned by :func:`rng_state`.

    ``python``, ``numpy`` and ``torch`` are required. CUDA states are restored for the devices
    present; a checkpoint from a CUDA machine resumes on a CPU-only one with a warning (its CUDA
    streams of random numbers cannot continue there).
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"set_rng_state: 'state' must be a dict from rng_state(), got {type(state).__name__}")
    unknown = set(state) - set(RNG_KEYS)
    missing = {"python", "numpy", "torch"} - set(state)
    if unknown or missing:
        raise ValueError(
            f"set_rng_state: bad keys (unknown: {sorted(unknown)}, missing: {sorted(missing)}); "
            f"valid keys are {list(RNG_KEYS)}"
        )

    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["internal"]), py["gauss_next"]))

    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np.asarray(np_state["key"], dtype=np.uint32), "pos": int(np_state["pos"])},
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        }
    )

    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())

    cuda_states = state.get("torch_cuda")
    if cuda_states is None:
        return
    if not torch.cuda.is_available():
        warnings.warn(
            "set_rng_state: the state holds CUDA generator states but CUDA is not available; "
            "they are not restored",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    n_devices = torch.cuda.device_count()
    if len(cuda_states) != n_devices:
        warnings.warn(
            f"set_rng_state: the state holds {len(cuda_states)} CUDA generator states and this "
            f"machine has {n_devices} devices; restoring the first {min(len(cuda_states), n_devices)}",
            RuntimeWarning,
            stacklevel=2,
        )
    for device, cuda_state in enumerate(cuda_states[:n_devices]):
        torch.cuda.set_rng_state(torch.as_tensor(cuda_state, dtype=torch.uint8).cpu(), device)
