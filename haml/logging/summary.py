"""The final numbers of runs, per (env, task, algo): the table that ``haml plot`` prints.

A learning curve shows how runs got somewhere; a results table says where they ended and what it
cost. For each group of runs that :func:`haml.logging.plot.plot_runs` draws as one curve, this
module reads, per run (seed):

- the last value of the metric and the step it was logged at (runs still going end earlier);
- the training time, hours in collection and updates summed over resumed sessions
  (:data:`haml.logging.plot.TRAINING_HOURS`), and the median of the logged steps/s;

and across the group the mean and the population std (``ddof=0``, as the band of the plot) of the
final values. :func:`format_table` writes them as a Markdown table, ready for a results page.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from haml.logging import metrics as M
from haml.logging.plot import (
    TRAINING_HOURS,
    NoDataError,
    RunKey,
    compact_number,
    find_run_dirs,
    metric_label,
    read_curve,
)

__all__ = ["GroupFinal", "RunFinal", "final_values", "format_table"]


@dataclass(frozen=True)
class RunFinal:
    """Where one run ended: its last ``value`` of the metric, logged at ``step``."""

    run_dir: Path
    key: RunKey
    step: float
    value: float
    training_hours: float
    """nan where the run logged no steps/s."""
    median_steps_per_second: float
    """nan where the run logged no steps/s."""


@dataclass(frozen=True)
class GroupFinal:
    """The runs of one curve of ``haml plot`` (same env, task, algo and override set)."""

    env: str
    task: str
    label: str
    runs: tuple[RunFinal, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(run.value for run in self.runs)

    @property
    def std(self) -> float:
        """Population std of the runs' final values, the band ``haml plot`` draws."""
        return statistics.pstdev(run.value for run in self.runs)


def _run_final(run_dir: Path, metric: str) -> RunFinal:
    curve = read_curve(run_dir, metric)
    try:
        # One reading gives both: the rates are its values, the hours summed up to them its x.
        rates = read_curve(run_dir, M.STEPS_PER_SECOND, x=TRAINING_HOURS)
    except (NoDataError, ValueError):  # an old or hand-made metrics.csv without the rate column
        hours, median_rate = math.nan, math.nan
    else:
        hours = float(rates.x[-1])
        median_rate = float(statistics.median(rates.y))
    return RunFinal(run_dir, curve.key, float(curve.x[-1]), float(curve.y[-1]), hours, median_rate)


def final_values(
    run_dirs: Iterable[str | os.PathLike[str]], metric: str = M.EVAL_RETURN
) -> list[GroupFinal]:
    """The final ``metric`` of every run in or below ``run_dirs``, grouped as ``haml plot``
    groups them, sorted by (env, task, label) and within a group by seed.

    Runs with no row of the metric yet are left out (``haml plot`` warns about them); raises
    :class:`NoDataError` when none has any.
    """
    runs: list[RunFinal] = []
    for run_dir in find_run_dirs(run_dirs):
        try:
            runs.append(_run_final(run_dir, metric))
        except NoDataError:
            continue
    if not runs:
        raise NoDataError(f"summary: no run has {metric} rows yet")
    groups: dict[tuple[str, str, str], list[RunFinal]] = {}
    for run in runs:
        groups.setdefault((run.key.env, run.key.task, run.key.label), []).append(run)

    def seed_order(run: RunFinal) -> tuple[int, str]:
        seed = run.key.seed or ""
        return (int(seed), "") if seed.isdigit() else (1 << 30, seed)

    return [
        GroupFinal(env, task, label, tuple(sorted(members, key=seed_order)))
        for (env, task, label), members in sorted(groups.items())
    ]


def _number(value: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.0f}"


def _seed(run: RunFinal) -> str:
    return "" if run.key.seed is None else f"seed {run.key.seed}, "


def format_table(groups: list[GroupFinal], metric: str = M.EVAL_RETURN) -> str:
    """A Markdown table: a row per group, its seeds' final values (with the step where a seed
    ended), mean ± std, and per seed the training hours and median steps/s."""
    lines = [
        f"| env/task | algo | final {metric_label(metric)} (seed, step) | mean ± std | "
        "training time (h), per seed | steps/s (median), per seed |",
        "|---|---|---|---|---|---|",
    ]
    for group in groups:
        finals = ", ".join(
            f"{_number(run.value)} ({_seed(run)}{compact_number(run.step)})" for run in group.runs
        )
        spread = f"{_number(group.mean)} ± {_number(group.std)}" if len(group.runs) > 1 else "1 seed"
        hours = ", ".join(_number(r.training_hours) for r in group.runs)
        rates = ", ".join(_number(r.median_steps_per_second) for r in group.runs)
        lines.append(f"| {group.env}/{group.task} | {group.label} | {finals} | {spread} | {hours} | {rates} |")
    return "\n".join(lines)
