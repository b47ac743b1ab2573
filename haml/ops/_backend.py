"""Which implementation each op runs: the native kernel in ``haml._C`` or the PyTorch reference.

``HAML_BACKEND`` selects it:

- ``auto`` (default): native where the extension is loaded and has a kernel for the input's
  device, the reference otherwise;
- ``native``: like ``auto``, but an error if the extension cannot be loaded;
- ``reference``: the reference everywhere.

This module is the only place that branches on devices; the C++ side leaves that to torch's
dispatcher. Which ops have native kernels on which device is read once at import into a plain
dict, so that ``torch.compile`` traces the choice as a constant.

``HAML_CPU_ISA`` (``baseline``, ``x86-64-v3`` or ``x86-64-v4``) caps the instruction-set level the
native CPU kernels are run at; by default they run at the highest level the CPU supports.
:func:`cpu_isa` says which one runs and :func:`set_cpu_isa` changes it.
"""

from __future__ import annotations

import importlib
import os
import warnings
from typing import Any

import torch

_VALID_BACKENDS = ("auto", "native", "reference")
CPU_ISAS = ("baseline", "x86-64-v3", "x86-64-v4")
"""The instruction-set levels of the native CPU kernels, lowest first (see csrc/include/haml/cpu_isa.h)."""
_DEVICE_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


class NativeExtensionError(ImportError):
    """``HAML_BACKEND=native`` was asked for but ``haml._C`` could not be used."""


def _requested_backend() -> str:
    requested = os.environ.get("HAML_BACKEND", "auto").strip().lower() or "auto"
    if requested not in _VALID_BACKENDS:
        raise ValueError(
            f"HAML_BACKEND={requested!r} is not one of {', '.join(_VALID_BACKENDS)}"
        )
    return requested


def _check_cpu_isa_variable() -> None:
    # The C++ side ignores a bad value (it cannot raise while the library loads); say so here.
    cap = os.environ.get("HAML_CPU_ISA", "").strip()
    if cap and cap not in CPU_ISAS:
        raise ValueError(f"HAML_CPU_ISA={cap!r} is not one of {', '.join(CPU_ISAS)}")


def _torch_release(version: str) -> str:
    # "2.13.0+cpu" and "2.13.0+cu128" share one C++ ABI; only the release must match.
    return version.split("+")[0]


def _load_extension() -> tuple[Any | None, str | None]:
    """Import haml._C; return (module, None) or (None, why it cannot be used)."""
    try:
        module = importlib.import_module("haml._C")
    except ImportError as err:
        text = str(err)
        if "undefined symbol" in text:
            return None, (
                f"haml._C does not match the installed torch {torch.__version__} ({text}); "
                "it was probably built against another torch. Rebuild it with "
                "`pip install --no-build-isolation -e .`"
            )
        return None, (
            f"haml._C is not built ({text}); build it with "
            "`pip install --no-build-isolation -e .`"
        )
    except OSError as err:  # a shared library that cannot be loaded at all
        return None, f"haml._C could not be loaded: {err}"
    info = module.build_info()
    if _torch_release(info["torch_version"]) != _torch_release(torch.__version__):
        return None, (
            f"haml._C was built against torch {info['torch_version']} but torch "
            f"{torch.__version__} is installed; rebuild it with "
            "`pip install --no-build-isolation -e .`"
        )
    return module, None


def _native_kernels(ops: list[str]) -> dict[tuple[str, str], bool]:
    """(op, device type) -> whether the dispatcher has a native kernel for it."""
    table = {}
    for op in ops:
        for device, key in _DEVICE_KEYS.items():
            table[(op, device)] = torch._C._dispatch_has_kernel_for_dispatch_key(
                f"haml::{op}", key
            )
    return table


REQUESTED = _requested_backend()
_check_cpu_isa_variable()
_extension, UNAVAILABLE_REASON = (None, "HAML_BACKEND=reference")
if REQUESTED != "reference":
    _extension, UNAVAILABLE_REASON = _load_extension()
    if _extension is None:
        if REQUESTED == "native":
            raise NativeExtensionError(f"HAML_BACKEND=native, but {UNAVAILABLE_REASON}")
        warnings.warn(
            f"{UNAVAILABLE_REASON}. haml.ops falls back to the pure-PyTorch reference "
            "implementations (correct, slower).",
            RuntimeWarning,
            stacklevel=2,
        )

BUILD_INFO: dict[str, Any] | None = _extension.build_info() if _extension else None
_NATIVE: dict[tuple[str, str], bool] = _native_kernels(BUILD_INFO["ops"]) if BUILD_INFO else {}


_NATIVE_CLASSES: frozenset[str] = frozenset(BUILD_INFO.get("classes", ())) if BUILD_INFO else frozenset()


def has_native_class(name: str) -> bool:
    """Whether ``torch.classes.haml.<name>`` is built and in use. The classes are written with
    ATen operations only, so they run on every device torch runs on."""
    return name in _NATIVE_CLASSES


# The kernels whose native code is a class, not a dispatcher op: kernel package -> (the class
# in torch.classes.haml, which calls it serves). Where it does not serve a call, that call runs the
# reference. haml.ops.fvp decides per call (_native_unsupported there); `haml info` prints this;
# python_tests/test_cli.py checks the two against each other. The dispatcher-op kernels name
# their op in their package's _OP instead.
FISHER_NATIVE_SCOPE = (
    "haml.models.MLPPolicy with kl='exact', float32/float64 observations [N, obs_dim] and every "
    "parameter trainable; other policies (RNN policies, any other nn.Module) run the "
    "double-backward reference"
)
NATIVE_CLASS_KERNELS: dict[str, tuple[str, str]] = {
    "fvp": ("FisherOperator", FISHER_NATIVE_SCOPE),
    "line_search": (
        "FisherOperator",
        "trust_region_step's surrogate gradient, conjugate gradient and xᵀHx, through "
        "haml.ops.FisherOperator, so native for the same policies as fvp; the backtracking line search "
        "itself is PyTorch",
    ),
    "value_gradient": (
        "FisherOperator",
        "haml.models.VCritic on float32/float64 inputs [N, in_dim] with every parameter trainable "
        "(the operator's forward and transposed pass, with a linear head); other networks run "
        "autograd",
    ),
}


def has_native_kernel(kernel: str, device: torch.device | str) -> bool:
    """Whether the native code of op package ``kernel`` (``"gae"``, ``"fvp"``, ...) serves tensors
    on ``device``: its dispatcher op (``_OP`` of the package) has a kernel there, or its native
    class is built (the classes use ATen operations only, so they run on any device)."""
    if kernel in NATIVE_CLASS_KERNELS:
        return has_native_class(NATIVE_CLASS_KERNELS[kernel][0])
    op = getattr(importlib.import_module(f"haml.ops.{kernel}"), "_OP", kernel)
    return has_native(op, device)


def has_native(op: str, device: torch.device | str) -> bool:
    """Whether ``op`` runs natively for tensors on ``device`` under the current backend."""
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    return _NATIVE.get((op, device_type), False)


def backend(device: torch.device | str = "cpu") -> str:
    """``"native"`` if the native kernels serve ``device``, else ``"reference"``."""
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    return "native" if any(d == device_type and ok for (_, d), ok in _NATIVE.items()) else "reference"


def cpu_isa() -> str | None:
    """The instruction-set level the native CPU kernels run at now (one of :data:`CPU_ISAS`), or
    None when the native extension is not in use."""
    return _extension.cpu_isa() if _extension is not None else None


def supported_cpu_isas() -> tuple[str, ...]:
    """The levels compiled into the native extension that this CPU can run, lowest first (empty
    without the extension)."""
    return tuple(_extension.supported_cpu_isas()) if _extension is not None else ()


def set_cpu_isa(level: str) -> None:
    """Run the native CPU kernels at ``level`` from now on (process-wide); an error if it is not
    one of :func:`supported_cpu_isas`. For comparisons and tests: the default, the highest level
    the CPU supports, is the fastest."""
    if level not in CPU_ISAS:
        raise ValueError(
            f"unknown CPU instruction-set level {level!r}; expected one of {', '.join(CPU_ISAS)}"
        )
    if _extension is None:
        raise RuntimeError(f"set_cpu_isa needs the native extension: {UNAVAILABLE_REASON}")
    supported = supported_cpu_isas()
    if level not in supported:
        raise ValueError(
            f"this CPU or build cannot run the {level!r} kernels; it runs: {', '.join(supported)}"
        )
    _extension.set_cpu_isa(level)
