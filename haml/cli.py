"""The ``haml`` command.

Each subcommand is one ``_add_<name>`` function that declares its parser and sets ``handler``
(called with the parsed arguments and that parser, whose ``error`` exits 2 with its usage):

- ``haml info``: versions, whether the native extension loaded (and why not), and which
  implementation each op runs on each device;
- ``haml bench ops``: native kernels against their PyTorch references (see :mod:`haml.bench`).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pkgutil
import platform
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

import torch

__all__ = ["main", "build_parser"]

Handler = Callable[[argparse.Namespace, argparse.ArgumentParser], int]


# ----------------------------------------------------------------------------------------------
# haml info


def _kernels() -> list[tuple[str, str, str]]:
    """(kernel, public functions, dispatcher op) for every op package under haml/ops."""
    import haml.ops

    kernels = []
    for module in pkgutil.iter_modules(haml.ops.__path__):
        if not module.ispkg:
            continue
        package = importlib.import_module(f"haml.ops.{module.name}")
        functions = [
            name for name in getattr(package, "__all__", ())
            if inspect.isfunction(getattr(package, name, None))
        ]
        # The façade's _OP is the haml::<op> it calls (clip_surrogate -> clip_surrogate_fwd).
        kernels.append((module.name, ", ".join(functions), getattr(package, "_OP", module.name)))
    return kernels


def _cuda_line() -> str:
    if torch.version.cuda is None:
        return "not in this torch build (CPU-only)"
    if not torch.cuda.is_available():
        return f"CUDA {torch.version.cuda} build, no device found"
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return f"CUDA {torch.version.cuda}: {names}"


def info(out: TextIO | None = None) -> int:
    """Print what haml is running with; returns 0."""
    import haml
    from haml.ops import _backend

    out = out if out is not None else sys.stdout

    def say(line: str = "") -> None:
        print(line, file=out)

    say(f"haml {haml.__version__}")
    say(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    say(f"python {platform.python_version()}")
    say(f"cuda: {_cuda_line()}")
    say(f"HAML_BACKEND: {_backend.REQUESTED}")
    if _backend.BUILD_INFO is not None:
        say("native extension haml._C: loaded")
        for key, value in _backend.BUILD_INFO.items():
            say(f"  {key}: {value}")
    else:
        say(f"native extension haml._C: not loaded: {_backend.UNAVAILABLE_REASON}")

    devices = ("cpu", "cuda")
    say()
    say("ops (implementation each runs for tensors on each device):")
    rows = [("kernel", "haml.ops.", "torch.ops.haml.", *devices)]
    for kernel, functions, native_op in _kernels():
        rows.append(
            (
                kernel,
                functions,
                native_op,
                *("native" if _backend.has_native(native_op, d) else "reference" for d in devices),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        say("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for device in devices:
        say(f"backend({device}): {_backend.backend(device)}")
    if _backend.REQUESTED == "reference":
        say("(HAML_BACKEND=reference forces the references everywhere)")
    elif torch.version.cuda is None or not torch.cuda.is_available():
        say("(cuda tensors cannot be created here; the cuda column says what the build provides)")
    return 0


def _add_info(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="versions, native extension status, and which backend each op uses",
        description="Print haml's and torch's versions, whether the native extension haml._C "
        "loaded (and why not), its build info, and which implementation each op runs per device.",
    )
    parser.set_defaults(handler=lambda args, parser: info(), command_parser=parser)


# ----------------------------------------------------------------------------------------------
# haml bench


def _add_bench(subparsers: argparse._SubParsersAction) -> None:
    from haml import bench

    parser = subparsers.add_parser(
        "bench",
        help="benchmarks (haml bench ops)",
        description="Benchmarks of haml's native kernels.",
    )
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    ops = benchmarks.add_parser(
        "ops",
        help="native kernels vs their PyTorch references and torch.compile of them",
        description="Time each op's native kernel against its eager reference and torch.compile "
        "of the reference, in one run; print a table and write JSON.",
    )
    bench.add_ops_arguments(ops)
    ops.set_defaults(handler=bench.run_ops_command, command_parser=ops)


# ----------------------------------------------------------------------------------------------


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_info, _add_bench)
"""One function per subcommand; later: train, eval, plot."""


def build_parser() -> argparse.ArgumentParser:
    import haml

    parser = argparse.ArgumentParser(
        prog="haml",
        description="Heterogeneous-Agent Mirror Learning (HATRPO, HAPPO, HAA2C, HADDPG) for PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"haml {haml.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``haml`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args, args.command_parser)
    except BrokenPipeError:  # `haml info | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
