#!/usr/bin/env python3
"""Copies the curves of finished runs into the repository, so that a results figure can be redrawn
after the runs themselves (checkpoints, replay buffers, TensorBoard files) are gone.

For each run directory below the given paths it writes ``<to>/<algo>/seed-<n>/`` with the run's
``config.yaml`` (and ``sweep-run.yaml`` if any, which names an override set) and a
``metrics.csv`` cut down to the columns a results figure or table reads: the step, the wall time,
the training and evaluation returns, the evaluation win rate, the steps per second (which
``haml plot --x training_hours`` integrates) and the critic's mean Q. Every row is kept, so
``haml plot <to>`` draws the same curves as ``haml plot <runs>``.

    python scripts/keep_curves.py runs/results/offpolicy/mamujoco/HalfCheetah-2x3 \
        --to docs/results/curves/halfcheetah-2x3-offpolicy
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

from haml.logging import metrics as M
from haml.logging.logger import CONFIG_FILE, METRICS_FILE
from haml.logging.plot import SWEEP_RUN_FILE, read_run_config, find_run_dirs, run_key

KEPT_COLUMNS = (
    M.STEP,
    M.WALL_TIME,
    M.TRAIN_RETURN,
    M.EVAL_RETURN,
    M.EVAL_RETURN_STD,
    M.EVAL_WIN_RATE,
    M.STEPS_PER_SECOND,
    M.Q_MEAN,
)


def keep_curves(run_dir: Path, to: Path) -> tuple[Path, int]:
    """Writes the cut-down copy of one run below ``to``; returns the copy's directory and the
    last step it holds."""
    key = run_key(run_dir)
    target = to / key.algo
    if key.variant:
        target = target / key.variant
    target = target / f"seed-{key.seed}"
    target.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, SWEEP_RUN_FILE):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, target / name)
    with open(run_dir / METRICS_FILE, newline="", encoding="utf-8") as src:
        reader = csv.reader(src)
        header = next(reader)
        kept = [header.index(c) for c in KEPT_COLUMNS if c in header]
        i_step = header.index(M.STEP)
        # Written beside the target and renamed, so that an interrupted copy leaves the old one.
        partial = target / (METRICS_FILE + ".partial")
        with open(partial, "w", newline="", encoding="utf-8") as dst:
            writer = csv.writer(dst)
            writer.writerow([header[i] for i in kept])
            last_step = 0
            for cells in reader:
                # A line cut short by a crash is skipped, as haml plot skips it.
                if len(cells) == len(header):
                    writer.writerow([cells[i] for i in kept])
                    last_step = max(last_step, int(float(cells[i_step])))
        partial.replace(target / METRICS_FILE)
    return target, last_step


def _planned_steps(run_dir: Path) -> int | None:
    """``train.steps`` of a run's config.yaml, None where it is not there."""
    try:
        steps = read_run_config(run_dir)["train"]["steps"]
    except (KeyError, TypeError):
        return None
    return steps if isinstance(steps, int) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run directories, or directories holding runs")
    parser.add_argument("--to", required=True, type=Path, help="where the copies go")
    args = parser.parse_args(argv)
    try:
        runs = find_run_dirs(args.paths)
    except (FileNotFoundError, ValueError) as err:
        print(err, file=sys.stderr)
        return 2
    for run_dir in runs:
        target, last_step = keep_curves(run_dir, args.to)
        planned = _planned_steps(run_dir)
        unfinished = f" (unfinished: {last_step:,} of {planned:,} steps)" if (
            planned is not None and last_step < planned) else ""
        print(f"{run_dir} -> {target}{unfinished}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
