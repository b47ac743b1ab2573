"""``haml bench``: native kernels against their PyTorch references, measured in the same run.

``haml bench ops`` (or ``python -m haml.bench [ops]``) times every op of :data:`haml.bench.ops.REGISTRY`
natively, as its eager reference and as ``torch.compile`` of the reference, prints a table of times
and ratios, and writes the numbers with the device and versions to JSON. From Python::

    from haml.bench import bench_ops
    document = bench_ops(device="cpu", quick=True)

``haml bench train`` (or ``python -m haml.bench train``) measures training steps/s against the
same vector env stepped with random actions, in one run (:mod:`haml.bench.train`).
``python -m haml.bench haddpg`` times one HADDPG update against its plain PyTorch reference
(:mod:`haml.bench.haddpg`); ``python -m haml.bench happo`` one HAPPO actor update against its GEMM
floor (:mod:`haml.bench.happo`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from haml.bench import report
from haml.bench.ops import ALLOCATOR_WARMUP_BYTES, REGISTRY, Options, cases_for, run_ops
from haml.bench.timing import others_busy

__all__ = ["BenchUsageError", "bench_ops", "add_ops_arguments", "run_ops_command", "main"]

DEVICE_CHOICES = ("cpu", "cuda", "all")
DEFAULT_OUT_DIR = Path("bench-results")


class BenchUsageError(ValueError):
    """A benchmark was asked for something this machine or haml cannot do (exit status 2)."""


def resolve_devices(name: str) -> list[torch.device]:
    """``cpu``, ``cuda`` (an error without CUDA) or ``all`` (the CPU, plus CUDA where present)."""
    if name == "cpu":
        return [torch.device("cpu")]
    if name == "cuda":
        if not torch.cuda.is_available():
            why = (
                f"this torch ({torch.__version__}) is a CPU-only build"
                if torch.version.cuda is None
                else f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no CUDA device"
            )
            raise BenchUsageError(f"--device cuda: CUDA is not available: {why}; use --device cpu")
        return [torch.device("cuda", torch.cuda.current_device())]
    if name == "all":
        cuda = resolve_devices("cuda") if torch.cuda.is_available() else []
        return [torch.device("cpu"), *cuda]
    raise BenchUsageError(f"--device {name!r}: choose from {', '.join(DEVICE_CHOICES)}")


def parse_ops(text: str | Sequence[str] | None) -> list[str]:
    """``"gae,clip_surrogate"`` (or a list) -> validated op names; None -> every registered op."""
    if text is None:
        return list(REGISTRY)
    names = [n.strip() for n in text.split(",")] if isinstance(text, str) else list(text)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown or not names:
        raise BenchUsageError(
            f"--ops {','.join(names) or repr(text)}: "
            f"unknown op(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(REGISTRY)}"
        )
    return names


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def bench_ops(
    ops: str | Sequence[str] | None = None,
    device: str = "cpu",
    quick: bool = False,
    compile: bool = True,
    compile_max_t: int = 200,
    allocator_warmup: bool = True,
    isa_levels: bool = False,
    out: str | Path | None = None,
    show: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the op benchmark; return the JSON document, also written to ``out``.

    ``out`` defaults to ``bench-results/ops-<device>.json``. ``show`` prints the table to stdout,
    ``progress`` one line per finished case to stderr. Raises :class:`BenchUsageError` for an
    unknown op or an unavailable device.
    """
    names = parse_ops(ops)
    devices = resolve_devices(device)
    options = Options.make(
        quick=quick,
        compile=compile,
        compile_max_t=compile_max_t,
        allocator_warmup=allocator_warmup,
        isa_levels=isa_levels,
    )
    path = Path(out) if out is not None else DEFAULT_OUT_DIR / f"ops-{device}.json"
    log = _stderr if progress else (lambda _: None)

    env = report.environment(devices)
    n_cases = len(cases_for(names, devices, options))
    log(
        f"haml bench ops: {n_cases} cases ({', '.join(names)}) on "
        + ", ".join(f"{d.type} ({env['device_names'][d.type]})" for d in devices)
        + f", {env['num_threads']} threads" + (", quick" if quick else "")
    )
    warning = report.busy_warning(env["other_load_before_run"], "when the run started")
    if warning:
        log(warning)
    start = time.perf_counter()
    records = run_ops(names, devices, options, log)
    total = time.perf_counter() - start
    env["other_load_after_run"] = others_busy()

    document = {
        "benchmark": "haml bench ops",
        "schema_version": 1,
        "environment": env,
        "settings": {
            "ops": names,
            "device": device,
            "quick": quick,
            "compile": compile,
            "compile_max_t": compile_max_t,
            "allocator_warmup_bytes": ALLOCATOR_WARMUP_BYTES if allocator_warmup else None,
            "isa_levels": isa_levels,
            "retries_under_load": options.retries,
            "timer": dataclasses.asdict(options.timer),
        },
        "cases": records,
        "total_seconds": total,
    }
    report.write_json(document, path)
    if show:
        report.print_table(records, env, settings=document["settings"])
    log(f"wrote {path} ({total:.1f} s)")
    return document


def add_ops_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``haml bench ops``, shared by ``haml`` and ``python -m haml.bench``."""
    parser.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default="cpu",
        help="where to run: cpu (default), cuda, or all (the CPU, plus CUDA where available)",
    )
    parser.add_argument(
        "--ops",
        default=None,
        metavar="LIST",
        help=f"comma-separated ops to run (default: all of {','.join(REGISTRY)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only the smallest shape of each op, with short timings (smoke test)",
    )
    parser.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        help="do not time torch.compile of the references",
    )
    parser.add_argument(
        "--compile-max-t",
        type=int,
        default=200,
        metavar="T",
        help="compile GAE's reference (a loop over T that torch.compile unrolls) only up to this T "
        "(default: 200)",
    )
    parser.add_argument(
        "--no-allocator-warmup",
        dest="allocator_warmup",
        action="store_false",
        help="skip freeing one 32 MiB block before each case (see haml.bench.ops.warm_up_allocator): "
        "CPU ops that return multi-MB tensors may then pay a page fault per 4 KiB on every call",
    )
    parser.add_argument(
        "--isa-levels",
        action="store_true",
        help="also time each native CPU kernel at every instruction-set level this CPU runs "
        "(baseline, x86-64-v3, x86-64-v4), interleaved with the rest",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="PATH",
        help="JSON file to write (default: bench-results/ops-<device>.json)",
    )


def run_ops_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``haml bench ops`` from parsed arguments; usage errors exit 2 through ``parser``."""
    try:
        bench_ops(
            ops=args.ops,
            device=args.device,
            quick=args.quick,
            compile=args.compile,
            compile_max_t=args.compile_max_t,
            allocator_warmup=args.allocator_warmup,
            isa_levels=args.isa_levels,
            out=args.out,
        )
    except BenchUsageError as err:
        parser.error(str(err))
    return 0


OWN_PARSER_BENCHMARKS = {
    "haddpg": "haml.bench.haddpg",
    "happo": "haml.bench.happo",
    "rollout-workers": "haml.bench.rollout_workers",
}
"""Benchmarks whose module parses its own options (``main(argv)``): name -> module."""


def add_threads_and_out_arguments(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` and ``--out PATH`` of the update benchmarks (``haddpg``, ``happo``)."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--out", type=Path, default=None, metavar="PATH",
                        help="also write the records as JSON")


def apply_threads(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Set torch's CPU threads from ``--threads``; a usage error (exit 2) below 1."""
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m haml.bench [ops] [options]``, ``python -m haml.bench train [options]`` or
    ``python -m haml.bench haddpg [options]`` (:mod:`haml.bench.haddpg`) or
    ``python -m haml.bench happo [options]`` (:mod:`haml.bench.happo`)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["train"]:
        from haml.bench.train import main as train_main

        return train_main(arguments[1:])
    if arguments[:1] and arguments[0] in OWN_PARSER_BENCHMARKS:
        import importlib

        return importlib.import_module(OWN_PARSER_BENCHMARKS[arguments[0]]).main(arguments[1:])
    parser = argparse.ArgumentParser(
        prog="python -m haml.bench",
        description="Time haml's native kernels against their PyTorch references (ops, the "
        "default), or training throughput against the env's own (train: see "
        "`python -m haml.bench train --help`).",
    )
    parser.add_argument(
        "benchmark",
        nargs="?",
        choices=("ops", "train"),
        default="ops",
        help="what to benchmark (default: ops)",
    )
    add_ops_arguments(parser)
    args = parser.parse_args(arguments)
    if args.benchmark == "train":
        parser.error("train takes its own options, after it: python -m haml.bench train [options]")
    return run_ops_command(args, parser)
