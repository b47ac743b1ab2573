"""``haml bench train``: training throughput against the vector env's own speed, in one run.

The goal it checks: *training steps/s, learning included, at least 70 % of
the steps/s of the same vector env stepped with random actions*. Both are measured in one
process, from one resolved config (:func:`haml.config.loader.load_config`, as ``haml train``
builds it):

- **env only**: the vector env built exactly as training builds it (``train.num_envs``, the
  family's options, vectorization included), stepped with random actions drawn from the action
  spaces as torch tensors on the env's device. The numpy→torch boundary is inside ``env.step``,
  so it is counted: it is the env's own cost, which training pays as well.
- **training**: the algorithm's runner's iterations (:func:`haml.runners.make_runner`) (collect ``T`` steps
  of ``E`` envs, then the update: GAE, actor and critic updates) on a second env built the same
  way. Evaluation, logging and checkpoints are left out: they are not learning.

- **JAX only** (families whose simulator is JAX, i.e. SMAX, whose module provides
  ``jax_random_steps_per_second``): the same jitted, vmapped program the env runs, stepped
  ``T`` times with random available actions drawn in JAX: no host copy, no torch. It is the
  simulator's own speed for this batch; training / JAX only says what the adapter and learning
  leave of it.

After one warm-up of each (a rollout's worth of random steps; one whole training iteration),
the phases alternate, ``T`` random steps (and ``T`` JAX-only steps) then one iteration, ``N``
times, so that a change in the machine's load during the run falls on all of them. Steps/s are
totals over the ``N`` rounds; the ratio is training / env only (and training / JAX only). Each iteration is split into collection and update
(``runner.last_timing``), and the share of the CPUs other processes used during each phase is
recorded beside it (:class:`haml.bench.timing.OtherLoad`).

From Python::

    from haml.bench.train import bench_train
    document = bench_train("happo", "toy", iterations=2, overrides=["train.num_envs=64"])
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from haml.bench.timing import OtherLoad, others_busy, synchronizer

__all__ = [
    "TARGET_RATIO",
    "BenchTrainError",
    "DEFAULT_ALGO",
    "DEFAULT_ENV",
    "bench_train",
    "random_action_sampler",
    "add_train_arguments",
    "run_train_command",
    "print_train_table",
    "main",
]

TARGET_RATIO = 0.7
"""Training steps/s must reach at least this share of the env-only steps/s."""
DEFAULT_ALGO = "happo"
DEFAULT_ENV = "mamujoco"
DEFAULT_ITERATIONS = 3
DEFAULT_OUT_DIR = Path("bench-results")
VERSIONED_PACKAGES = (
    "haml", "torch", "numpy", "gymnasium", "gymnasium_robotics", "mujoco", "pettingzoo", "jax", "jaxmarl",
)
"""Distributions whose versions the JSON records (None where one is not installed)."""


class BenchTrainError(ValueError):
    """A bad argument to the training benchmark (exit status 2 from the command line)."""


# ----------------------------------------------------------------------------------------------
# random actions


def random_action_sampler(
    action_spaces: Sequence[Any], num_envs: int, device: torch.device, seed: int = 0
) -> Callable[[tuple[torch.Tensor, ...] | None], list[torch.Tensor]]:
    """A function ``masks -> actions``: one uniformly random action per agent per env, as the
    tensors a policy would hand to ``env.step``, drawn as the off-policy warm-up draws them
    (:func:`haml.envs.random_actions.random_action_sampler`) from an own generator seeded with
    ``seed``."""
    from haml.envs.random_actions import random_action_sampler as env_sampler

    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    try:
        return env_sampler(action_spaces, num_envs, device, generator=generator)
    except TypeError as error:
        raise BenchTrainError(str(error)) from None


# ----------------------------------------------------------------------------------------------
# measurement


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    import haml

    found["haml"] = haml.__version__  # the source in use, even if the installed metadata lags
    return found


def _resolve_tuned(
    algo: str, env: str, task: str | None, tuned: bool | None, overrides: Sequence[str]
) -> tuple[str | None, bool]:
    """``tuned`` None: the tuned settings where haml ships them for (env, task, algo), else not."""
    from haml.config.loader import load_config, tuned_configs

    if tuned is not None:
        return task, tuned
    if task is None:  # the family's default task, or the one an override names
        task = load_config(algo, env, overrides=list(overrides)).env.task
    return task, (env, task, algo) in set(tuned_configs(env))


def _config_summary(cfg: Any, env: Any) -> dict[str, Any]:
    from haml.config.loader import config_to_dict

    algo = config_to_dict(cfg)["algo"]
    asynchronous = getattr(env, "asynchronous", None)
    return {
        "algo": cfg.algo_name,
        "env": cfg.env.name,
        "task": cfg.env.task,
        "n_agents": env.spec.n_agents,
        "num_envs": cfg.train.num_envs,
        "rollout_length": cfg.train.rollout_length,
        "batch_steps": cfg.train.num_envs * cfg.train.rollout_length,  # the runner's, once built
        "vectorization": (
            type(env).__name__ if asynchronous is None else ("async" if asynchronous else "sync")
        ),
        "env_options": dict(cfg.env.options),
        "device": cfg.train.device,
        "torch_threads": torch.get_num_threads(),
        "actor_hidden": list(cfg.actor.hidden),
        "critic_hidden": list(cfg.critic.network.hidden),
        "algo_settings": algo,
        "critic_epochs": cfg.critic.epochs,
        "critic_num_minibatches": cfg.critic.num_minibatches,
        "seed": cfg.seed,
    }


def _step_randomly(env: Any, sample: Callable, step: Any, steps: int, sync: Callable[[], None]) -> tuple[Any, float]:
    """``steps`` steps of ``env`` with random actions; returns the last EnvStep and the seconds."""
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step = env.step(sample(step.action_masks))
    sync()
    return step, time.perf_counter() - start


def _phase(seconds: float, steps: int, load: float | None) -> dict[str, Any]:
    return {
        "steps": steps,
        "seconds": seconds,
        "steps_per_second": steps / seconds if seconds > 0 else None,
        "other_load": load,
    }


def _jax_only_stepper(cfg: Any) -> Callable[[], dict[str, Any]] | None:
    """Where the env family has the ``jax_random_steps_per_second`` hook
    (:mod:`haml.envs.registry`): a function timing ``T`` JAX-only steps of the training batch;
    None for the other families."""
    from haml.envs.registry import family_hook

    measure = family_hook(cfg.env.name, "jax_random_steps_per_second")
    if measure is None:
        return None
    T, E = cfg.train.rollout_length, cfg.train.num_envs

    def phase() -> dict[str, Any]:
        load = OtherLoad()
        rate = measure(cfg.env.task, E, T, seed=cfg.seed, options=dict(cfg.env.options))
        return _phase(T * E / rate, T * E, load.share())

    return phase


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class _Measured:
    """What one benchmark run recorded: the measured rounds of each phase and its warm-ups."""

    config: dict[str, Any]
    build_seconds: float
    env_rounds: list[dict[str, Any]] = field(default_factory=list)
    jax_rounds: list[dict[str, Any]] = field(default_factory=list)
    train_rounds: list[dict[str, Any]] = field(default_factory=list)
    warm_env: float = 0.0
    warm_jax: float | None = None
    warm_train: float = 0.0
    total_seconds: float = 0.0
    batch_steps: int = 0
    """Env steps of one training iteration (the runner's: T × E on-policy, ``train_every`` × E
    off-policy), and of each random phase."""


def bench_train(
    algo: str = DEFAULT_ALGO,
    env: str = DEFAULT_ENV,
    task: str | None = None,
    *,
    tuned: bool | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    show: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure env-only and training steps/s in one run; return the JSON document (also written
    to ``out``, default ``bench-results/train-<env>-<task>-<algo>.json``).

    Args:
        algo, env, task: as for ``haml train`` (``task`` None: the family's default task).
        tuned: the tuned settings of ``haml/config/tuned/<env>/<task>/<algo>.yaml``; None (the
            default) uses them where haml ships them for this (env, task, algo), else the defaults.
        iterations: N, the measured training iterations (each after ``T`` random env steps).
        overrides: ``KEY=VALUE`` config overrides (e.g. ``train.num_envs=8``).
        show: print the table to stdout; ``progress``: one line per phase to stderr.
    """
    from haml.bench import report
    from haml.config.loader import load_config
    from haml.utils.seeding import seed_everything

    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise BenchTrainError(f"--iterations must be an integer >= 1, got {iterations!r}")
    task, use_tuned = _resolve_tuned(algo, env, task, tuned, overrides)
    cfg = load_config(algo, env, task, overrides=list(overrides), tuned=use_tuned)
    log = _stderr if progress else (lambda _: None)
    path = Path(out) if out is not None else DEFAULT_OUT_DIR / _file_name(
        f"train-{cfg.env.name}-{cfg.env.task}-{cfg.algo_name}.json"
    )
    with _torch_threads(cfg.train.torch_threads):
        seed_everything(cfg.seed)
        environment = report.environment([torch.device(cfg.train.device)])
        environment["versions"] = _versions()
        measured = _measure(cfg, iterations, use_tuned, environment, log)
    environment["other_load_after_run"] = others_busy()
    document = _document(cfg, use_tuned, iterations, overrides, environment, measured)
    report.write_json(document, path)
    if show:
        print_train_table(document)
    log(f"wrote {path} ({measured.total_seconds:.1f} s)")
    return document


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` (0: left as they are), restored afterwards."""
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _build_env(cfg: Any) -> Any:
    """The vector env exactly as training builds it."""
    from haml.envs.registry import make_env

    return make_env(
        cfg.env.name, cfg.env.task, num_envs=cfg.train.num_envs, seed=cfg.seed,
        device=cfg.train.device, **cfg.env.options,
    )


def _measure(
    cfg: Any, iterations: int, use_tuned: bool, environment: dict[str, Any], log: Callable[[str], None]
) -> _Measured:
    """Build the two envs and the runner, warm up, then alternate the phases ``iterations`` times."""
    from haml.bench import report
    from haml.runners import make_runner

    device = torch.device(cfg.train.device)
    E = cfg.train.num_envs
    built = time.perf_counter()
    random_env = _build_env(cfg)
    train_env = None
    try:
        train_env = _build_env(cfg)
        runner = make_runner(cfg, train_env)
        # The random phases take as many steps as one training iteration.
        T = runner.batch_steps // E
        measured = _Measured(config=_config_summary(cfg, train_env), build_seconds=time.perf_counter() - built,
                             batch_steps=T * E)
        measured.config["batch_steps"] = T * E
        log(
            f"haml bench train: {cfg.algo_name} on {cfg.env.name}/{cfg.env.task}"
            f"{' (tuned)' if use_tuned else ''}: {E} envs ({measured.config['vectorization']}) × {T} steps "
            f"= {E * T} steps per iteration, {iterations} iteration(s) after a warm-up, "
            f"{torch.get_num_threads()} torch threads"
        )
        warning = report.busy_warning(environment["other_load_before_run"], "when the run started")
        if warning:
            log(warning)
        phases = _Phases(
            env=random_env,
            sample=random_action_sampler(random_env.spec.action_spaces, E, device, seed=cfg.seed),
            runner=runner,
            jax_only=_jax_only_stepper(cfg),
            sync=synchronizer(device),
            steps=T,
            batch_steps=T * E,
        )
        started = time.perf_counter()
        phases.warm_up(measured, seed=cfg.seed)
        log(
            f"  warm-up: {T} random steps in {measured.warm_env:.2f} s, one iteration in "
            f"{measured.warm_train:.2f} s"
        )
        for r in range(iterations):
            phases.round(measured)
            log(f"  round {r + 1}/{iterations}: {_round_line(measured)}")
        measured.total_seconds = time.perf_counter() - started
        return measured
    finally:
        random_env.close()
        if train_env is not None:
            train_env.close()


@dataclass
class _Phases:
    """The three timed phases on their objects: random env steps, JAX-only steps, iterations."""

    env: Any
    sample: Callable[[tuple[torch.Tensor, ...] | None], list[torch.Tensor]]
    runner: Any
    jax_only: Callable[[], dict[str, Any]] | None
    sync: Callable[[], None]
    steps: int
    """T, the random steps of a phase (one rollout)."""
    batch_steps: int
    """T * E, the env steps of a phase."""
    last: Any = None
    """The random env's last EnvStep (its action masks choose the next random actions)."""

    def warm_up(self, measured: _Measured, seed: int) -> None:
        """A rollout's worth of random steps, then one whole training iteration (after an
        off-policy runner's warm-up of random actions, untimed: its iterations update only after
        it, and those are the ones training spends its time in)."""
        self.last = self.env.reset(seed=seed)
        self.last, measured.warm_env = _step_randomly(self.env, self.sample, self.last, self.steps, self.sync)
        measured.warm_jax = None if self.jax_only is None else self.jax_only()["seconds"]
        while getattr(self.runner, "warming_up", False):
            self.runner.iterate()
        measured.warm_train = self._iterate()

    def round(self, measured: _Measured) -> None:
        """``T`` random steps (and ``T`` JAX-only steps), then one training iteration."""
        load = OtherLoad()
        self.last, seconds = _step_randomly(self.env, self.sample, self.last, self.steps, self.sync)
        measured.env_rounds.append(_phase(seconds, self.batch_steps, load.share()))
        if self.jax_only is not None:
            measured.jax_rounds.append(self.jax_only())
        load = OtherLoad()
        seconds = self._iterate()
        record = _phase(seconds, self.batch_steps, load.share())
        record.update(self.runner.last_timing)
        measured.train_rounds.append(record)

    def _iterate(self) -> float:
        """One training iteration; its seconds."""
        self.sync()
        start = time.perf_counter()
        self.runner.iterate()
        self.sync()
        return time.perf_counter() - start


def _round_line(measured: _Measured) -> str:
    """The progress line of the last round."""
    record = measured.train_rounds[-1]
    jax_note = (
        f", JAX only {measured.jax_rounds[-1]['steps_per_second']:,.0f} steps/s"
        if measured.jax_rounds else ""
    )
    return (
        f"env only {measured.env_rounds[-1]['steps_per_second']:,.0f} steps/s{jax_note}, "
        f"training {record['steps_per_second']:,.0f} steps/s "
        f"(collect {record['collect_seconds']:.2f} s, update {record['update_seconds']:.2f} s)"
    )


def _document(
    cfg: Any,
    use_tuned: bool,
    iterations: int,
    overrides: Sequence[str],
    environment: dict[str, Any],
    measured: _Measured,
) -> dict[str, Any]:
    """The JSON document of a run: settings, config, each phase's totals, the ratios, the target."""
    batch_steps = measured.batch_steps
    env_only = _summarise(measured.env_rounds)
    env_only["warmup"] = {"steps": batch_steps, "seconds": measured.warm_env}
    training = _training_summary(measured, iterations)
    ratio = training["steps_per_second"] / env_only["steps_per_second"]
    jax_part: dict[str, Any] = {}
    if measured.jax_rounds:
        jax_summary = _summarise(measured.jax_rounds)
        jax_summary["warmup"] = {"steps": batch_steps, "seconds": measured.warm_jax}
        jax_part = {
            "jax_only": jax_summary,
            "ratio_jax_only": training["steps_per_second"] / jax_summary["steps_per_second"],
        }
    return {
        "benchmark": "haml bench train",
        "schema_version": 1,
        "environment": environment,
        "settings": {
            "algo": cfg.algo_name,
            "env": cfg.env.name,
            "task": cfg.env.task,
            "tuned": use_tuned,
            "iterations": iterations,
            "overrides": list(overrides),
        },
        "config": measured.config,
        "env_only": env_only,
        **jax_part,
        "training": training,
        "ratio": ratio,
        "target": {
            "ratio": "training/env_only",
            "relation": ">=",
            "bound": TARGET_RATIO,
            "measured": ratio,
            "met": ratio >= TARGET_RATIO,
        },
        "build_seconds": measured.build_seconds,
        "total_seconds": measured.total_seconds,
    }


def _training_summary(measured: _Measured, iterations: int) -> dict[str, Any]:
    """The training rounds' totals, split into collection and update."""
    rounds = measured.train_rounds
    training = _summarise(rounds)
    collect = sum(r["collect_seconds"] for r in rounds)
    update = sum(r["update_seconds"] for r in rounds)
    training.update(
        {
            "iterations": iterations,
            "collect_seconds": collect,
            "update_seconds": update,
            "collect_share": collect / (collect + update),
            "update_share": update / (collect + update),
            "collect_steps_per_second": training["steps"] / collect,
            "warmup": {"iterations": 1, "seconds": measured.warm_train},
        }
    )
    return training


def _summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the rounds (steps/s = all steps / all seconds) and the mean other load."""
    steps = sum(r["steps"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    loads = [r["other_load"] for r in rounds if r["other_load"] is not None]
    return {
        "steps": steps,
        "seconds": seconds,
        "steps_per_second": steps / seconds,
        "other_load": sum(loads) / len(loads) if loads else None,
        "rounds": rounds,
    }


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)


# ----------------------------------------------------------------------------------------------
# output


def print_train_table(document: dict[str, Any], file: TextIO | None = None) -> None:
    """The two measurements, the split of an iteration, the ratio and the target, as one table."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from haml.bench.report import busy_warning
    from haml.bench.timing import format_seconds

    stream = file if file is not None else sys.stdout
    console = Console(
        file=stream, width=None if stream.isatty() else 200, highlight=False, markup=False, emoji=False
    )
    cfg, env_only, training = document["config"], document["env_only"], document["training"]
    iterations = training["iterations"]
    table = Table(
        box=box.SIMPLE_HEAVY,
        title=(
            f"haml bench train: {cfg['algo']} on {cfg['env']}/{cfg['task']}, {cfg['num_envs']} envs "
            f"({cfg['vectorization']}) × {cfg['batch_steps'] // cfg['num_envs']} steps, {iterations} iteration(s)"
        ),
    )
    for header in ("phase", "steps", "time", "steps/s", "share", "other load"):
        table.add_column(header, justify="left" if header == "phase" else "right", no_wrap=True)

    def load_cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    table.add_row(
        "env only (random actions)", f"{env_only['steps']:,}", format_seconds(env_only["seconds"]),
        f"{env_only['steps_per_second']:,.0f}", "", load_cell(env_only["other_load"]),
    )
    jax_only = document.get("jax_only")
    if jax_only is not None:
        table.add_row(
            "JAX only (random actions, no torch)", f"{jax_only['steps']:,}",
            format_seconds(jax_only["seconds"]), f"{jax_only['steps_per_second']:,.0f}", "",
            load_cell(jax_only["other_load"]),
        )
    table.add_row(
        "training (collect + update)", f"{training['steps']:,}", format_seconds(training["seconds"]),
        f"{training['steps_per_second']:,.0f}", "100%", load_cell(training["other_load"]),
    )
    table.add_row(
        "  collect", "", format_seconds(training["collect_seconds"]),
        f"{training['collect_steps_per_second']:,.0f}", f"{training['collect_share']:.0%}", "",
    )
    table.add_row(
        "  update", "", format_seconds(training["update_seconds"]), "",
        f"{training['update_share']:.0%}", "",
    )
    console.print(table)

    env = document["environment"]
    versions = env["versions"]
    console.print(
        "haml {haml}, torch {torch}, mujoco {mujoco}, gymnasium_robotics {gymnasium_robotics}; ".format(
            **{k: versions.get(k) or "-" for k in ("haml", "torch", "mujoco", "gymnasium_robotics")}
        )
        + f"{cfg['torch_threads']} torch threads, {env['cpu_count']} CPUs; "
        + ", ".join(f"{kind}: {name}" for kind, name in env["device_names"].items())
    )
    target = document["target"]
    mark = "met" if target["met"] else "NOT MET"
    console.print(
        f"training / env only = {document['ratio']:.3g} "
        f"(goal >= {target['bound']:g}: {mark})"
    )
    if jax_only is not None:
        console.print(f"training / JAX only = {document['ratio_jax_only']:.3g}")
    for busy, when in (
        (env.get("other_load_before_run"), "when the run started"),
        (env_only.get("other_load"), "during the env-only phases"),
        (None if jax_only is None else jax_only.get("other_load"), "during the JAX-only phases"),
        (training.get("other_load"), "during the training iterations"),
        (env.get("other_load_after_run"), "when it ended"),
    ):
        warning = busy_warning(busy, when)
        if warning:
            console.print(warning)


# ----------------------------------------------------------------------------------------------
# command line


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``haml bench train``, shared by ``haml`` and ``python -m haml.bench``."""
    parser.add_argument("--env", default=DEFAULT_ENV, help=f"environment family (default: {DEFAULT_ENV})")
    parser.add_argument("--task", default=None, help="task of the family (default: the family's default task)")
    parser.add_argument("--algo", default=DEFAULT_ALGO, help=f"algorithm (default: {DEFAULT_ALGO})")
    parser.add_argument(
        "--tuned",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start from haml/config/tuned/<env>/<task>/<algo>.yaml (default: where haml ships "
        "one for this task and algorithm; --no-tuned: the family's defaults)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=DEFAULT_ITERATIONS,
        metavar="N",
        help=f"measured training iterations, each after a rollout of random env steps "
        f"(default: {DEFAULT_ITERATIONS}; one more of each warms up)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="JSON file to write (default: bench-results/train-<env>-<task>-<algo>.json)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="config overrides, as for haml train (e.g. train.num_envs=8 train.torch_threads=1)",
    )


def run_train_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``haml bench train`` from parsed arguments; bad arguments exit 2 through ``parser``."""
    try:
        bench_train(
            args.algo,
            args.env,
            args.task,
            tuned=args.tuned,
            iterations=args.iterations,
            overrides=args.overrides,
            out=args.json,
        )
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        parser.error(str(err))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m haml.bench train [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m haml.bench train",
        description="Training steps/s (learning included) against the same vector env stepped "
        "with random actions, measured in one run; prints a table and writes JSON.",
    )
    add_train_arguments(parser)
    return run_train_command(parser.parse_args(argv), parser)
