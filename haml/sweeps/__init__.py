"""``haml sweep`` / :func:`haml.sweep`: a grid of algorithms × tasks × seeds × override sets, each
run an ordinary ``haml.train`` run, in parallel on Ray when it is installed.

- :mod:`haml.sweeps.grid`: the grid, from arguments or a sweep file, and override-set names;
- :mod:`haml.sweeps.runs`: where each run goes, skip / resume / train, the task that runs one;
- :mod:`haml.sweeps.execute`: the Ray driver and the in-process one;
- :mod:`haml.sweeps.progress`: the live table, read from the run directories;
- :mod:`haml.sweeps.summary`: the final CSV and the per-task plots.

docs/SWEEPS.md describes the commands, the directory layout and what resumes after which failure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from haml.sweeps.execute import RunStatus
from haml.sweeps.grid import SweepGrid, Variant, grid_from_file, make_variants, parse_overrides, parse_seeds

__all__ = ["SweepResult", "SweepGrid", "Variant", "RunStatus", "sweep", "ray_available"]

NO_RAY_HINT = ("Ray is not installed: running the runs one at a time in this process "
               "(pip install 'haml[ray]' to run them in parallel)")


@dataclass
class SweepResult:
    """What :func:`sweep` did: every run's status, the summary CSV and the per-task plots."""

    runs: list[RunStatus]
    summary: Path
    plots: list[Path]
    used_ray: bool

    def count(self, status: str) -> int:
        """How many runs ended with ``status`` (done, skipped, failed, interrupted, not started)."""
        return sum(run.status == status for run in self.runs)

    @property
    def ok(self) -> bool:
        """Every run finished (now or before)."""
        return all(run.status in ("done", "skipped") for run in self.runs)


def ray_available() -> bool:
    """Whether the ``ray`` package can be imported here (``pip install 'haml[ray]'``)."""
    return importlib.util.find_spec("ray") is not None


def sweep(
    algos: str | Sequence[str] | None = None,
    env: str | None = None,
    tasks: str | None | Sequence[str | None] = None,
    seeds: str | int | Sequence[int] | None = None,
    steps: int | None = None,
    *,
    tuned: bool = False,
    out: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    variants: Sequence[Any] | Mapping[str, Any] = (),
    file: str | os.PathLike[str] | None = None,
    cpus_per_run: float = 1,
    gpus_per_run: float = 0,
    address: str | None = None,
    max_retries: int = 3,
    use_ray: bool | None = None,
    quiet: bool = False,
    stream: TextIO | None = None,
) -> SweepResult:
    """Run every algorithm × task × seed × override set, skipping finished runs and resuming
    unfinished ones from their latest checkpoint; then write the summary CSV and the plots.

    Args:
        algos, env, tasks, seeds, steps, tuned: the grid (``tasks`` None: the env's default
            task; ``seeds`` as a list or ``"0,1,2"``/``"0-4"``, default 0), or give ``file``.
        out: the root of the run directories (default ``runs``, or the file's ``out``).
        overrides: for every run (``["train.num_envs=10"]`` or ``{"train.num_envs": 10}``).
        variants: override sets, each a separate set of runs in ``<algo>/<name>/seed-<n>``: a
            list (named after their overrides) or a mapping name → overrides.
        file: a sweep file (:mod:`haml.sweeps.grid`) instead of the grid arguments.
        cpus_per_run: Ray's ``num_cpus`` of each run, and its ``train.torch_threads`` (rounded
            down, at least 1) unless an override sets that.
        gpus_per_run: Ray's ``num_gpus`` of each run (Ray hides the GPUs from a task that
            reserves none: give this for runs with ``train.device=cuda``).
        address: a running Ray cluster to join (``ray.init(address=...)``); default a local
            Ray instance on this machine, or the one this process is already connected to.
        max_retries: how many times Ray runs a run again whose worker died.
        use_ray: None: Ray when installed; False: one run at a time in this process.
        quiet: print nothing; stream: where progress goes (``sys.stdout``).
    """
    from haml.sweeps.execute import run_in_process, run_on_ray
    from haml.sweeps.progress import SweepProgress
    from haml.sweeps.runs import plan_runs
    from haml.sweeps.summary import write_plots, write_summary

    if file is not None:
        if algos or env or tasks or seeds is not None or steps is not None or tuned \
                or overrides or variants:
            raise ValueError("sweep: give the grid either in the sweep file or as arguments, not both")
        grid, file_out = grid_from_file(file)
        out = out if out is not None else file_out
    else:
        if not algos or not env:
            raise ValueError("sweep: the algorithms and the env are needed (or a sweep file)")
        grid = SweepGrid(
            env=env,
            algos=(algos,) if isinstance(algos, str) else tuple(algos),
            tasks=(tasks,) if tasks is None or isinstance(tasks, str) else tuple(tasks),
            seeds=parse_seeds(0 if seeds is None else seeds),
            variants=make_variants(variants),
            overrides=parse_overrides(overrides, "overrides"),
            steps=steps,
            tuned=tuned,
        )
    out = Path("runs" if out is None else out)
    if not cpus_per_run > 0 or not math.isfinite(cpus_per_run):
        raise ValueError(f"sweep: cpus_per_run must be > 0, got {cpus_per_run}")
    if not gpus_per_run >= 0 or not math.isfinite(gpus_per_run):
        raise ValueError(f"sweep: gpus_per_run must be >= 0, got {gpus_per_run}")
    stream = sys.stdout if stream is None else stream
    plans = plan_runs(grid, out, threads=max(1, int(cpus_per_run)))

    if use_ray is None:
        use_ray = ray_available()
        if not use_ray and not quiet:
            print(f"sweep: {NO_RAY_HINT}", file=stream, flush=True)
    if use_ray and not ray_available():
        raise ImportError("sweep: use_ray=True needs Ray: pip install 'haml[ray]'")
    to_run = [plan for plan in plans if plan.action != "skip"]
    if not quiet:
        actions = [plan.action for plan in plans]
        print(f"sweep: {len(plans)} run{'' if len(plans) == 1 else 's'} under {out}: {actions.count('train')} to train, "
              f"{actions.count('resume')} to resume, {actions.count('skip')} finished (skipped)",
              file=stream, flush=True)

    with SweepProgress(plans, stream=stream, quiet=quiet) as progress:
        if not to_run:
            ran = []
        elif use_ray:
            ran = _on_ray(to_run, progress, address, cpus_per_run=cpus_per_run,
                          gpus_per_run=gpus_per_run, max_retries=max_retries)
        else:
            ran = run_in_process(to_run, progress)
    by_label = {status.plan.label: status for status in ran}
    runs = [by_label.get(plan.label, RunStatus(plan, "skipped")) for plan in plans]

    finished = {run.plan.label for run in runs if run.status in ("done", "skipped")}
    summary = write_summary(plans, finished, out)
    plots = write_plots(plans, out)
    result = SweepResult(runs, summary, plots, used_ray=use_ray)
    if not quiet:
        _print_end(result, stream)
    return result


def _print_end(result: SweepResult, stream: TextIO) -> None:
    """The counts, where the summary and the curves are, every failure, and how to continue."""
    counts = ", ".join(f"{result.count(s)} {s}" for s in
                       ("done", "skipped", "failed", "interrupted", "not started") if result.count(s))
    print(f"sweep: {counts}; summary: {result.summary}", file=stream)
    for path in result.plots:
        print(f"sweep: curves: {path}", file=stream)
    for run in result.runs:
        if run.status == "failed":
            print(f"sweep: failed: {run.plan.label}: {run.error}", file=stream)
    if result.count("interrupted") or result.count("not started"):
        print("sweep: run the same command again to continue (finished runs are skipped, "
              "stopped ones resume from their latest checkpoint)", file=stream)


@contextlib.contextmanager
def _keeping_sigterm_handler() -> Iterator[None]:
    """Puts back the SIGTERM handler the block found (where this thread can set one)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _on_ray(plans, progress, address: str | None, **options: Any):
    """:func:`haml.sweeps.execute.run_on_ray` on the Ray instance this process is connected to,
    or else on one it starts (``address``: joins that cluster) and shuts down at the end."""
    import ray

    from haml.sweeps.execute import run_on_ray

    started_here = not ray.is_initialized()
    if started_here:
        # ray.init replaces the driver's SIGTERM handler with one that exits at once; keep the
        # caller's (`haml sweep` turns SIGTERM into Ctrl-C, which stops the runs with checkpoints).
        with _keeping_sigterm_handler():
            ray.init(address=address)
    try:
        return run_on_ray(plans, progress, **options)
    finally:
        if started_here:
            ray.shutdown()
