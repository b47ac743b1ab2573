"""``haml sweep``: :func:`haml.sweep` from the command line.

:func:`add_sweep_parser` declares the subcommand on the ``haml`` command's subparsers (its handler
follows :mod:`haml.cli`'s convention: ``handler(args, parser) -> exit status``). The exit status
is 0 when every run finished (now or before), 1 when one failed, 130 after Ctrl-C or SIGTERM, 2 on
bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["add_sweep_parser", "run_sweep"]

_GRID_FLAGS = ("algo", "env", "task", "seeds", "steps", "tuned", "variant", "overrides")


def add_sweep_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``sweep`` to ``subparsers`` and return its parser."""
    parser = subparsers.add_parser(
        "sweep",
        help="a grid of algorithms x tasks x seeds x override sets, in parallel on Ray",
        description="Train every algorithm x task x seed x override set, each run an ordinary "
        "`haml train` run in <out>/<env>/<task>/<algo>[/<override set>]/seed-<n>/, as Ray tasks "
        "(local Ray by default, --address for a cluster) or, without Ray, one after another. "
        "Finished runs are skipped and unfinished ones resume from their latest checkpoint, so "
        "the same command continues an interrupted sweep. Writes <out>/sweep-summary.csv and "
        "<out>/<env>/<task>/curves.png. Give the grid by flags or by --file (docs/SWEEPS.md).",
    )
    parser.add_argument("--algo", action="append", help="an algorithm; repeat for several")
    parser.add_argument("--env", help="the environment family, e.g. mamujoco, toy")
    parser.add_argument("--task", action="append",
                        help="a task of the family; repeat for several (default: its default task)")
    parser.add_argument("--seeds", help="seeds: 0,1,2 or 0-4 (default 0)")
    parser.add_argument("--steps", type=int, help="total environment steps of every run (train.steps)")
    parser.add_argument("--tuned", action="store_true",
                        help="start from the tuned settings of haml/config/tuned/<env>/<task>/<algo>.yaml")
    parser.add_argument("--variant", action="append", metavar="'KEY=VALUE ...'",
                        help="an override set, run as its own runs in <algo>/<its name>/; repeat "
                        "for several")
    parser.add_argument("--file", help="a sweep file (YAML) holding the grid instead of the flags")
    parser.add_argument("--out", help="root of the run directories (default runs, or the file's out)")
    parser.add_argument("--cpus-per-run", type=float, default=1.0,
                        help="CPUs Ray reserves for each run, and its train.torch_threads unless "
                        "an override sets it (default 1)")
    parser.add_argument("--gpus-per-run", type=float, default=0.0,
                        help="GPUs Ray reserves for each run; needed for train.device=cuda on Ray "
                        "(default 0)")
    parser.add_argument("--address", help="join this running Ray cluster (default: a local Ray)")
    parser.add_argument("--max-retries", type=int, default=3,
                        help="times Ray restarts a run whose worker died (default 3)")
    parser.add_argument("--no-ray", action="store_true",
                        help="run the runs one at a time in this process even if Ray is installed")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides for every run")
    parser.set_defaults(handler=run_sweep, command_parser=parser)
    return parser


def run_sweep(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The handler of ``haml sweep``."""
    from haml.config.loader import ConfigError
    from haml.sweeps import sweep

    if args.file is not None:
        given = [f for f in _GRID_FLAGS if getattr(args, f) not in (None, False, [])]
        if given:
            parser.error(f"--file holds the grid: drop {', '.join('--' + f for f in given)}")
    elif not args.algo or args.env is None:
        parser.error("--algo and --env are required (or --file)")
    if args.no_ray and args.address is not None:
        parser.error("--address joins a Ray cluster: drop --no-ray")
    try:
        with _sigterm_as_ctrl_c():
            result = sweep(
                args.algo, args.env, args.task, args.seeds, args.steps, tuned=args.tuned,
                out=args.out, overrides=args.overrides, variants=args.variant or (),
                file=args.file, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                address=args.address, max_retries=args.max_retries,
                use_ray=False if args.no_ray else None, quiet=args.quiet,
            )
    except (ValueError, TypeError, FileNotFoundError, ImportError, ConfigError) as err:
        print(f"haml sweep: error: {err}", file=sys.stderr)
        return 2
    if result.count("interrupted") or result.count("not started"):
        return 130
    return 0 if result.ok else 1


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (what ``kill`` and job schedulers send; a sweep started in the background with
    ``&`` does not even receive Ctrl-C) ends the sweep as Ctrl-C does: runs keep their
    checkpoints and the same command continues them."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except (ValueError, AttributeError):  # not the main thread, or no SIGTERM here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
