"""The ``haml`` command.

Each subcommand is one ``_add_<name>`` function that declares its parser and sets ``handler``
(called with the parsed arguments and that parser, whose ``error`` exits 2 with its usage):

- ``haml info``: versions, whether the native extension loaded (and why not), and which
  implementation each op runs on each device;
- ``haml bench ops``: native kernels against their PyTorch references (see :mod:`haml.bench`);
- ``haml bench train``: training steps/s against the env's own, in one run (:mod:`haml.bench.train`);
- ``haml train``: a training run (:func:`haml.train` (:mod:`haml.training`)), or ``--resume RUN_DIR``;
- ``haml eval RUN_DIR``: deterministic evaluation of a run's checkpoint (:mod:`haml.evaluation`);
- ``haml plot RUN_DIR ...``: learning curves, mean ± std across seeds;
- ``haml reproduce NAME|all``: the papers' toy-game experiments (:mod:`haml.experiments`);
- ``haml sweep``: a grid of runs, in parallel on Ray when installed (:mod:`haml.sweeps`).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pkgutil
import platform
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import TextIO

import torch

__all__ = ["main", "build_parser"]

Handler = Callable[[argparse.Namespace, argparse.ArgumentParser], int]


# ----------------------------------------------------------------------------------------------
# haml info


def _kernels() -> list[tuple[str, str, str]]:
    """(kernel, public names, native implementation) for every op package under haml/ops."""
    import haml.ops
    from haml.ops import _backend

    kernels = []
    for module in pkgutil.iter_modules(haml.ops.__path__):
        if not module.ispkg:
            continue
        package = importlib.import_module(f"haml.ops.{module.name}")
        public = [
            name for name in getattr(package, "__all__", ())
            if inspect.isfunction(getattr(package, name, None))
            or inspect.isclass(getattr(package, name, None))
            and not issubclass(getattr(package, name), tuple)  # result records are not entry points
        ]
        # What the façade dispatches to: a native class (fvp, line_search), or the haml::<op> in
        # its _OP (clip_surrogate -> clip_surrogate_fwd).
        if module.name in _backend.NATIVE_CLASS_KERNELS:
            native = "torch.classes.haml." + _backend.NATIVE_CLASS_KERNELS[module.name][0]
        else:
            native = "torch.ops.haml." + getattr(package, "_OP", module.name)
        kernels.append((module.name, ", ".join(public), native))
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
        say(f"  CPU kernels run at: {_backend.cpu_isa()} (this CPU runs: "
            f"{', '.join(_backend.supported_cpu_isas())}; HAML_CPU_ISA caps it)")
    else:
        say(f"native extension haml._C: not loaded: {_backend.UNAVAILABLE_REASON}")

    devices = ("cpu", "cuda")
    say()
    say("ops (what runs for tensors on each device; reference = haml/ops/<kernel>/reference.py):")
    rows = [("kernel", "haml.ops.", "native implementation", *devices)]
    notes = []
    for kernel, public, native in _kernels():
        cells = ["native" if _backend.has_native_kernel(kernel, d) else "reference" for d in devices]
        if kernel in _backend.NATIVE_CLASS_KERNELS and "native" in cells:
            # A class serves some calls only: say which, once per distinct note.
            scope = _backend.NATIVE_CLASS_KERNELS[kernel][1]
            if scope not in notes:
                notes.append(scope)
            mark = f" [{notes.index(scope) + 1}]"
            cells = [cell + mark if cell == "native" else cell for cell in cells]
        rows.append((kernel, public, native, *cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        say("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for number, note in enumerate(notes, 1):
        say(textwrap.fill(note, width=100, initial_indent=f"  [{number}] native for: ",
                          subsequent_indent="      "))
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
    from haml.bench import train as bench_train

    parser = subparsers.add_parser(
        "bench",
        help="benchmarks (haml bench ops, train, haddpg, happo, rollout-workers)",
        description="Benchmarks of haml's native kernels and of training throughput.",
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
    train = benchmarks.add_parser(
        "train",
        help="training steps/s vs the same vector env stepped with random actions",
        description="Measure, in one run, the steps/s of the training env stepped with random "
        "actions and of training iterations (collect + update, no evaluation) on the same kind "
        "of env; print the ratio (goal: >= 0.7), the collect/update split, and write JSON.",
    )
    bench_train.add_train_arguments(train)
    train.set_defaults(handler=bench_train.run_train_command, command_parser=train)
    # These benchmarks own their options (each module's main() parses them): the parsed command
    # hands them over unparsed.
    for name, (summary, description) in _OWN_PARSER_BENCHMARKS.items():
        sub = benchmarks.add_parser(name, help=summary, add_help=False, description=(
            f"{description}; options as `python -m {bench.OWN_PARSER_BENCHMARKS[name]} --help`."))
        sub.set_defaults(handler=_run_own_parser_bench, command_parser=sub, passthrough=[],
                         bench_module=bench.OWN_PARSER_BENCHMARKS[name])


_OWN_PARSER_BENCHMARKS = {
    "haddpg": (
        "one HADDPG update against its plain PyTorch reference",
        "Time one HADDPG update (batch 1000, [256, 256], 2 and 6 agents) against the plain "
        "PyTorch reference update",
    ),
    "happo": (
        "one HAPPO actor update against the GEMM floor and the faster routes",
        "Time one HAPPO actor update (N 4000, [128]x3 + LayerNorm): autograd, the native-gradient "
        "and compiled routes, and its matrix products alone",
    ),
    "rollout-workers": (
        "training steps/s with Ray rollout workers against in-process collection",
        "Training steps/s with 0 (in-process), 1, 2, ... Ray rollout workers, and what the weight "
        "broadcast and the rollout transfer cost",
    ),
}
"""haml bench subcommands whose options belong to their module's own parser: (help, description)."""


def _run_own_parser_bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import importlib

    return importlib.import_module(args.bench_module).main(list(args.passthrough))


# ----------------------------------------------------------------------------------------------
# haml train / eval / plot


def _train_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from haml.training import resume, train

    if args.resume is not None:
        for name in ("algo", "env", "task", "out", "config", "seed"):
            if getattr(args, name) is not None:
                parser.error(f"--resume continues a run with its saved config: drop --{name}")
        for name in ("tuned", "overwrite"):
            if getattr(args, name):
                parser.error(f"--resume continues a run with its saved config: drop --{name}")
        result = resume(args.resume, steps=args.steps, overrides=args.overrides, quiet=args.quiet)
    else:
        if args.algo is None or args.env is None:
            parser.error("--algo and --env are required (or --resume RUN_DIR)")
        result = train(
            args.algo,
            args.env,
            task=args.task,
            steps=args.steps,
            seed=0 if args.seed is None else args.seed,
            out=args.out,
            tuned=args.tuned,
            config_file=args.config,
            overrides=args.overrides,
            quiet=args.quiet,
            overwrite=args.overwrite,
        )
    if result.interrupted:
        return 130
    final = "off" if result.eval_return is None else f"{result.eval_return:.2f} ± {result.eval_std:.2f}"
    print(
        f"done: {result.env_steps} steps, {result.iterations} iterations in "
        f"{result.wall_seconds:.0f} s; final eval return {final}; run: {result.run_dir}"
    )
    return 0


def _checkpoint_hint(args: argparse.Namespace) -> str:
    """Where a stopped ``haml train`` run's latest checkpoint is and how to continue from it."""
    from pathlib import Path

    from haml.utils.checkpoint import latest_checkpoint

    run_dir = args.resume or args.out
    if run_dir is None and args.algo is not None and args.env is not None:
        try:  # the default run directory, as haml.training.train resolves it
            from haml.config.loader import load_config
            from haml.training import default_run_dir

            seed = 0 if args.seed is None else args.seed
            cfg = load_config(args.algo, args.env, args.task, tuned=args.tuned,
                              config_file=args.config, overrides=[*args.overrides, ("seed", seed)])
            run_dir = str(default_run_dir(cfg))
        except Exception:
            run_dir = None
    last = latest_checkpoint(Path(run_dir)) if run_dir is not None else None
    if last is not None:
        return f"its latest checkpoint is {last}; continue with `haml train --resume {run_dir}`"
    if run_dir is not None:
        return f"{run_dir} holds no checkpoint yet"
    return "continue from the latest checkpoint, if any, with `haml train --resume RUN_DIR`"


def _run_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from haml.envs.base import EnvError
    from haml.runners import TrainingDiverged
    from haml.utils.checkpoint import CheckpointError

    try:
        return _train_command(args, parser)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, ImportError,
            CheckpointError) as err:
        print(f"haml train: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"haml train: {err}", file=sys.stderr)
        return 1
    except EnvError as err:
        # An env raised, its worker died or was stuck (and was stopped): one line, not a traceback.
        print(f"haml train: error: {err}; {_checkpoint_hint(args)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # A second Ctrl-C during training (the first one stops after the iteration and writes a
        # checkpoint), or one before the training loop started.
        print(f"\nhaml train: stopped at once by Ctrl-C; {_checkpoint_hint(args)}", file=sys.stderr)
        return 130


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    from haml.algorithms import algo_names

    parser = subparsers.add_parser(
        "train",
        help="train an algorithm on an environment task",
        description=f"Train an algorithm ({', '.join(algo_names())}) on a task. The defaults are the papers' hyperparameters for the "
        "environment family; KEY=VALUE overrides any config field (e.g. algo.clip=0.1 "
        "actor.hidden=[128,128]). Writes runs/<env>/<task>/<algo>/seed-<n>/ (or --out).",
    )
    parser.add_argument("--algo", help=f"registered algorithm: {', '.join(algo_names())}")
    parser.add_argument("--env", help="registered environment family, e.g. mamujoco, toy")
    parser.add_argument("--task", help="task of the family (default: the family's default task)")
    parser.add_argument("--steps", type=int, help="total environment steps (train.steps)")
    parser.add_argument("--seed", type=int, help="seed of torch, numpy, Python and the envs (default 0)")
    parser.add_argument("--out", help="run directory")
    parser.add_argument("--config", help="a YAML file of overrides, applied after the defaults")
    parser.add_argument("--tuned", action="store_true",
                        help="start from the tuned settings of haml/config/tuned/<env>/<task>/<algo>.yaml")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="start afresh in a directory that holds a run (deletes its checkpoints)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.set_defaults(handler=_run_train, command_parser=parser)


def _run_eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from haml.envs.base import EnvError
    from haml.evaluation import evaluate_run
    from haml.utils.checkpoint import CheckpointError

    try:
        report = evaluate_run(
            args.run_dir, episodes=args.episodes, render=args.render, seed=args.seed,
            checkpoint=args.checkpoint, progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except (ValueError, TypeError, FileNotFoundError, ImportError, CheckpointError) as err:
        print(f"haml eval: error: {err}", file=sys.stderr)
        return 2
    except EnvError as err:  # an env raised, its worker died or was stuck: one line
        print(f"haml eval: error: {err}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a trained run with deterministic actions",
        description="Load a run's latest checkpoint (or --checkpoint) and report the mean and std "
        "of the return over --episodes episodes with deterministic actions (the Gaussian's mean, "
        "the categorical's mode). --render writes a video where MuJoCo's offscreen renderer works.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation envs")
    parser.add_argument("--checkpoint", help="a checkpoint file (default: the run's latest)")
    parser.add_argument("--render", action="store_true",
                        help="write RUN_DIR/videos/eval-iter-<iteration>.mp4 of one episode "
                        "(the iteration in six digits, e.g. eval-iter-000050.mp4)")
    parser.set_defaults(handler=_run_eval, command_parser=parser)


def _run_plot(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from haml.logging.plot import plot_runs
    from haml.logging.summary import final_values, format_table

    try:
        path = plot_runs(args.run_dirs, args.out, metric=args.metric, x=args.x)
        table = format_table(final_values(args.run_dirs, args.metric), args.metric)
    except (ValueError, FileNotFoundError) as err:
        print(f"haml plot: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    print(table)
    return 0


def _add_plot(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="learning curves of runs (mean ± std across seeds)",
        description="Plot the evaluation return against environment steps (or training time) for "
        "the given run directories (or directories holding runs), mean ± std across seeds per "
        "algorithm, one PNG; then print where each run ended (its last value, training hours, "
        "median steps/s) and each algorithm's mean ± std, as a Markdown table.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--out", default="curves.png", help="the PNG to write")
    parser.add_argument("--metric", default="charts/eval_return", help="the metrics.csv column")
    parser.add_argument(
        "--x", default="step", choices=["step", "training_hours"],
        help="the horizontal axis: environment steps (default), or hours spent in training "
        "iterations (collection and updates, evaluation excluded, summed across resumes)",
    )
    parser.set_defaults(handler=_run_plot, command_parser=parser)


# ----------------------------------------------------------------------------------------------


def _add_reproduce(subparsers: argparse._SubParsersAction) -> None:
    from haml.experiments.cli import add_reproduce_parser

    add_reproduce_parser(subparsers)


def _add_sweep(subparsers: argparse._SubParsersAction) -> None:
    from haml.sweeps.cli import add_sweep_parser

    add_sweep_parser(subparsers)


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_train,
    _add_sweep,
    _add_eval,
    _add_plot,
    _add_reproduce,
    _add_info,
    _add_bench,
)
"""One function per subcommand."""


def build_parser() -> argparse.ArgumentParser:
    import haml
    from haml.algorithms import algo_names

    parser = argparse.ArgumentParser(
        prog="haml",
        description="Heterogeneous-Agent Mirror Learning for PyTorch. Algorithms: "
        f"{', '.join(algo_names())}.",
    )
    parser.add_argument("--version", action="version", version=f"haml {haml.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``haml`` console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "passthrough"):
        args.passthrough = [*args.passthrough, *extra]
    elif extra:
        # KEY=VALUE overrides may follow options (`haml train ... --seed 1 algo.clip=0.1`):
        # argparse gives the positional list only the run before the first option.
        if hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler: Handler = args.handler
    try:
        return handler(args, args.command_parser)
    except BrokenPipeError:  # `haml info | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
