"""Argument checks shared by the op façades: each raises an exception that names the argument."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
NATIVE_DTYPES = (torch.float32, torch.float64)


def require_tensor(op: str, name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: '{name}' must be a torch.Tensor, got {type(value).__name__}")
    return value


def require_float(op: str, name: str, value: torch.Tensor) -> None:
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: '{name}' must be a floating-point tensor, got dtype {value.dtype}")


def require_same_dtype(op: str, name: str, value: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if value.dtype != ref.dtype:
        raise TypeError(
            f"{op}: '{name}' has dtype {value.dtype} but '{ref_name}' has dtype {ref.dtype}"
        )


def require_same_device(op: str, name: str, value: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if value.device != ref.device:
        raise ValueError(f"{op}: '{name}' is on {value.device} but '{ref_name}' is on {ref.device}")


def require_shape(op: str, name: str, value: torch.Tensor, shape: torch.Size, what: str) -> None:
    if value.shape != shape:
        raise ValueError(
            f"{op}: '{name}' must have shape {tuple(shape)} ({what}), got {tuple(value.shape)}"
        )


def require_flag(op: str, name: str, value: object) -> torch.Tensor:
    """A done-style flag: a bool tensor, or a floating one read as nonzero = True."""
    value = require_tensor(op, name, value)
    if value.dtype == torch.bool:
        return value
    if value.dtype in FLOAT_DTYPES:
        return value != 0
    raise TypeError(
        f"{op}: '{name}' must be a bool (or floating 0/1) tensor, got dtype {value.dtype}; "
        f"convert it with .bool()"
    )


def require_number(op: str, name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: '{name}' must be a number, got {type(value).__name__}")
    value = float(value)
    if not low <= value <= high:
        raise ValueError(f"{op}: '{name}' must lie in [{low}, {high}], got {value}")
    return value


def needs_autograd(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
