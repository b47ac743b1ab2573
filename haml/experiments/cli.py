"""``haml reproduce <name>|all [--seeds N] [--out DIR] [--quick]``.

:func:`add_reproduce_parser` declares the subcommand on the ``haml`` command's subparsers (its
handler follows :mod:`haml.cli`'s convention: ``handler(args, parser) -> exit status``). The exit
status is 0 when every experiment run reproduced its claim (on ≥ 90 % of the seeds), 1 when one
did not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from haml.experiments import (
    DEFAULT_OUT_DIR,
    REQUIRED_FRACTION,
    experiment_names,
    run_experiment,
)

__all__ = ["add_reproduce_parser", "run_reproduce", "main"]

ALL = "all"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def add_reproduce_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``reproduce`` to ``subparsers`` and return its parser."""
    names = experiment_names()
    parser = subparsers.add_parser(
        "reproduce",
        help="reproduce a claim of the papers on its toy game (figure + JSON)",
        description="Run one of the papers' small examples with haml's algorithms on seeds "
        "0..N-1, check the paper's claim on each seed, and write OUT/<name>.json (claim, "
        "settings, per-seed numbers) and OUT/<name>.png. Experiments: "
        + ", ".join(names)
        + f". Exit status 0 when every claim held on at least {REQUIRED_FRACTION:.0%} of the "
        "seeds, 1 otherwise.",
    )
    parser.add_argument("name", choices=[*names, ALL], metavar="NAME",
                        help=f"one of {', '.join(names)}, or {ALL}")
    parser.add_argument("--seeds", type=_positive_int, default=10, help="number of seeds (default 10)")
    parser.add_argument("--out", default=DEFAULT_OUT_DIR,
                        help=f"directory for the JSON and PNG files (default {DEFAULT_OUT_DIR})")
    parser.add_argument("--quick", action="store_true", help="numbers only: skip the figures")
    parser.set_defaults(handler=run_reproduce, command_parser=parser)
    return parser


def run_reproduce(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the chosen experiment(s) and print one line each; returns the exit status."""
    names = experiment_names() if args.name == ALL else [args.name]
    status = 0
    for name in names:
        try:
            result = run_experiment(name, seeds=args.seeds, out_dir=args.out, quick=args.quick)
        except (ValueError, TypeError, OSError) as err:
            print(f"haml reproduce: error: {name}: {err}", file=sys.stderr)
            return 2
        verdict = "reproduced" if result["reproduced"] else "NOT reproduced"
        files = ", ".join(path for path in (result["json"], result["figure"]) if path)
        print(
            f"{name}: claim held on {result['held_count']}/{result['num_seeds']} seeds "
            f"(needs {result['required_count']}): {verdict} in {result['seconds']:.1f} s; wrote {files}"
        )
        if not result["reproduced"]:
            status = 1
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m haml.experiments NAME ...``: the same as ``haml reproduce NAME ...``."""
    parser = argparse.ArgumentParser(prog="python -m haml.experiments")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    reproduce = add_reproduce_parser(subparsers)
    reproduce.prog = parser.prog  # usage and errors name this command, not "... reproduce"
    args = reproduce.parse_args(argv)
    return run_reproduce(args, reproduce)
