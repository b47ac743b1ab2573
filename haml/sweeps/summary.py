"""What a sweep leaves at the end: the final numbers per (task, algo, override set) and the plots.

``<out>/sweep-summary.csv`` has one row per (env, task, algo, variant) with

- ``runs``: how many of its seeds finished; ``missing_seeds``: those that did not, or that
  have no evaluation (``eval.every=0``);
- ``eval_return_mean`` and ``eval_return_std``: over the finished seeds, of each run's final
  evaluation return (the last ``charts/eval_return`` of its ``metrics.csv``); the std is the
  population std (``ddof=0``), as the band of ``haml plot``;
- ``seeds``, ``eval_returns``, ``env_steps``, ``wall_seconds``: per seed, space-separated, in
  the same order (``env_steps`` where the final evaluation was taken, ``wall_seconds`` the run's
  training time summed over its sessions).

Each task's learning curves, mean ± std over seeds per algorithm and override set
(:func:`haml.logging.plot.plot_runs`), go to ``<out>/<env>/<task>/curves.png``.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

from haml.logging.logger import METRICS_FILE
from haml.sweeps.runs import RunPlan, read_record, wall_seconds

__all__ = ["CURVES_FILE", "SUMMARY_FILE", "SUMMARY_COLUMNS", "write_plots", "write_summary"]

SUMMARY_FILE = "sweep-summary.csv"
"""The summary of the last sweep run with this ``out``, in ``out``."""

CURVES_FILE = "curves.png"
"""Each task's curves, in ``<out>/<env>/<task>/``."""

SUMMARY_COLUMNS = (
    "env", "task", "algo", "variant", "overrides", "runs", "eval_return_mean", "eval_return_std",
    "seeds", "eval_returns", "env_steps", "wall_seconds", "missing_seeds",
)


def _final_eval(run_dir: Path) -> tuple[float, float] | None:
    """``(env steps, return)`` of the run's last evaluation, or None if it has none."""
    from haml.logging.plot import NoDataError, read_curve

    try:
        curve = read_curve(run_dir)
    except (NoDataError, FileNotFoundError):
        return None
    return float(curve.x[-1]), float(curve.y[-1])


def _group_key(plan: RunPlan) -> tuple[str, str, str, str]:
    return plan.env, plan.task, plan.cell.algo, plan.cell.variant.name


def write_summary(plans: Sequence[RunPlan], finished: set[str], out: Path) -> Path:
    """Write :data:`SUMMARY_FILE` for ``plans``, counting the runs whose label is in
    ``finished``; returns its path."""
    groups: dict[tuple[str, str, str, str], list[RunPlan]] = {}
    for plan in plans:
        groups.setdefault(_group_key(plan), []).append(plan)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for (env, task, algo, variant), members in groups.items():
        seeds, returns, steps, walls, missing = [], [], [], [], []
        for plan in members:
            final = _final_eval(plan.run_dir) if plan.label in finished else None
            if final is None:
                missing.append(str(plan.cell.seed))
                continue
            seeds.append(str(plan.cell.seed))
            steps.append(f"{final[0]:.0f}")
            returns.append(final[1])
            walls.append(f"{wall_seconds(read_record(plan.run_dir)):.1f}")
        mean = sum(returns) / len(returns) if returns else math.nan
        std = math.sqrt(sum((r - mean) ** 2 for r in returns) / len(returns)) if returns else math.nan
        overrides = " ".join(f"{k}={v}" for k, v in members[0].cell.variant.overrides)
        writer.writerow([
            env, task, algo, variant, overrides, len(returns),
            "" if not returns else repr(mean), "" if not returns else repr(std),
            " ".join(seeds), " ".join(map(repr, returns)), " ".join(steps), " ".join(walls),
            " ".join(missing),
        ])
    from haml.utils.files import atomic_write_text

    return atomic_write_text(Path(out) / SUMMARY_FILE, text.getvalue())


def write_plots(plans: Sequence[RunPlan], out: Path) -> list[Path]:
    """One ``haml plot`` per task of the sweep, of this sweep's runs only; returns the images.

    A task none of whose runs has evaluated yet is left out with a warning."""
    from haml.logging.plot import NoDataError, plot_runs

    root = Path(out).resolve()
    tasks: dict[Path, list[Path]] = {}  # <out>/<env>/<task> -> its runs
    for plan in plans:
        if (plan.run_dir / METRICS_FILE).is_file():
            env_dir, task_dir = plan.run_dir.relative_to(root).parts[:2]
            tasks.setdefault(root / env_dir / task_dir, []).append(plan.run_dir)
    written = []
    for task_dir, run_dirs in tasks.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # runs without evaluation rows: said per task below
                written.append(plot_runs(run_dirs, task_dir / CURVES_FILE))
        except NoDataError as err:
            warnings.warn(f"sweep: no curves for {task_dir}: {err}", stacklevel=2)
    return written
