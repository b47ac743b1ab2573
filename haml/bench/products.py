"""The matrix products a callable runs, recorded once and replayed alone.

A benchmark that asks how fast an update *could* be, with its mathematics fixed, needs the
update's matrix products by themselves: their FLOPs, and the time the machine takes for exactly
those products at exactly those shapes and memory layouts. :func:`record_products` runs a
callable under a dispatch mode that notes every ``mm``, ``addmm``, ``bmm`` and ``baddbmm``
reaching the backend (the forward and the autograd backward passes alike);
:meth:`Products.replay` returns a callable that runs only those products, on fresh tensors of the
same sizes and strides. No update that does these products can be faster than their replay: it is
the update's floor.

Only products dispatched through PyTorch are seen: a native kernel that calls BLAS itself (an op
of ``haml._C``) shows up as its own op, not as products, so record the plain PyTorch form of an
update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["Products", "record_products"]

_aten = torch.ops.aten
_PRODUCTS = (_aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default)


@dataclass(frozen=True)
class _Operand:
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    def materialise(self) -> torch.Tensor:
        # Through a flat buffer, since a recorded operand may be a broadcast view (stride 0, as
        # the gradient of a sum), which cannot be written element by element.
        extent = 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride)) if all(self.size) else 0
        flat = torch.empty(extent, dtype=self.dtype, device=self.device).normal_()
        return flat.as_strided(self.size, self.stride)


@dataclass(frozen=True)
class _Call:
    op: Any
    args: tuple[Any, ...]  # _Operand for each tensor argument, the value itself otherwise
    kwargs: dict[str, Any]

    @property
    def flops(self) -> int:
        """2 m k n for an (m x k) by (k x n) product, times the batch for the batched ones."""
        a, b = (self.args[1], self.args[2]) if self.op in (_aten.addmm.default,
                                                          _aten.baddbmm.default) else self.args[:2]
        *batch, m, k = a.size
        n = b.size[-1]
        return 2 * m * k * n * (batch[0] if batch else 1)


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[_Call] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _PRODUCTS:
            self.calls.append(_Call(func, tuple(
                _Operand(tuple(a.shape), tuple(a.stride()), a.dtype, a.device)
                if isinstance(a, torch.Tensor) else a for a in args
            ), dict(kwargs)))
        return func(*args, **kwargs)


@dataclass(frozen=True)
class Products:
    """The matrix products of ``calls`` runs of a callable."""

    calls: tuple[_Call, ...]
    runs: int

    @property
    def flops_per_run(self) -> float:
        return sum(call.flops for call in self.calls) / self.runs

    def replay(self) -> Callable[[], None]:
        """A callable that runs every recorded product once, on tensors allocated now (the
        products' outputs are allocated per call, as in the recorded code)."""
        prepared = [
            (call.op, tuple(a.materialise() if isinstance(a, _Operand) else a for a in call.args),
             call.kwargs)
            for call in self.calls
        ]

        def run() -> None:
            for op, args, kwargs in prepared:
                op(*args, **kwargs)

        return run


def record_products(fn: Callable[[], object], runs: int = 1) -> Products:
    """Call ``fn`` ``runs`` times and note every matrix product it dispatches."""
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    recorder = _Recorder()
    with recorder:
        for _ in range(runs):
            fn()
    return Products(tuple(recorder.calls), runs)
