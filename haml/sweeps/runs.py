"""The runs of a sweep on disk: where each goes, what state it is in, and the task that runs one.

Every run of a sweep is an ordinary run directory (:mod:`haml.training`) at
``<out>/<env>/<task>/<algo>[/<variant>]/seed-<n>/``, plus :data:`RECORD_FILE`, which the sweep
keeps there::

    variant: algo.clip-0.1          # the override set ('' for none) and its overrides
    overrides: {algo.clip: 0.1}
    sessions:                       # one per start of the run: a fresh start or a resume
    - {from_iteration: 0, pid: 4242, host: node-1, started: 1767225600.0, wall_seconds: 61.2}
    - {from_iteration: 50, pid: 4310, host: node-2, started: 1767225700.0, wall_seconds: 40.3}
    finished: {env_steps: 200000, iterations: 50, eval_return: 711.2, eval_std: 11.0, wall_seconds: 101.5}

What a run does when the sweep reaches it is decided from its directory alone, so a sweep that
is launched again, or a Ray task that is retried after its worker died, continues where the run
stopped:

- ``finished`` records at least the steps asked for: the run is skipped;
- it has a checkpoint: :func:`haml.resume` from the latest one (to the steps asked for);
- otherwise: :func:`haml.train` afresh (anything a run left before its first checkpoint is
  cleared).

``finished`` is written only when ``haml.train``/``haml.resume`` returned without an interrupt,
after the run's final checkpoint, so a run killed at any moment is never taken for finished.
A session's ``wall_seconds`` is written when it ends; one killed outright has none, and the run's
wall time (the sum) leaves it out.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haml.logging.plot import SWEEP_RUN_FILE
from haml.sweeps.grid import Cell, Override, SweepGrid

__all__ = [
    "RECORD_FILE",
    "RunOutcome",
    "RunPlan",
    "finished_steps",
    "plan_runs",
    "read_record",
    "run_one",
    "wall_seconds",
]

RECORD_FILE = SWEEP_RUN_FILE
"""The sweep's record in each run directory (see the module docstring)."""

_MAY_DIFFER = ("train.steps", "train.torch_threads")
"""Config keys a run may change between launches of a sweep (more steps, other CPUs per run)."""


@dataclass(frozen=True)
class RunPlan:
    """One run of a sweep: what :func:`run_one` needs, picklable for a Ray task."""

    cell: Cell
    env: str
    task: str
    run_dir: Path
    """Absolute, so that a worker with another working directory writes to the same place."""
    steps: int
    tuned: bool
    overrides: tuple[Override, ...]
    """Everything ``haml.train`` gets: the common overrides, then the variant's, then the threads."""
    resume_overrides: tuple[str, ...]
    """What ``haml.resume`` gets on top of the run's saved config (the threads per run)."""
    action: str
    """``"skip"`` (finished), ``"resume"`` or ``"train"``: what the run's directory called for
    when the sweep was planned; :func:`run_one` decides again when it starts."""

    @property
    def label(self) -> str:
        """``<env>/<task>/<algo>[/<variant>]/seed-<n>``: the run directory below the sweep's root."""
        parts = [self.env, self.task, self.cell.algo, self.cell.variant.name, f"seed-{self.cell.seed}"]
        return "/".join(p for p in parts if p)


@dataclass(frozen=True)
class RunOutcome:
    """What one session of a run returned."""

    env_steps: int
    iterations: int
    eval_return: float | None
    eval_std: float | None
    wall_seconds: float
    interrupted: bool


# ----------------------------------------------------------------------------------------------
# the record


def read_record(run_dir: Path) -> dict[str, Any]:
    """The run's :data:`RECORD_FILE` as a dict ({} when there is none)."""
    import yaml

    path = Path(run_dir) / RECORD_FILE
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as file:
        data = yaml.safe_load(file)
    return data if isinstance(data, dict) else {}


def _write_record(run_dir: Path, record: Mapping[str, Any]) -> None:
    import yaml

    from haml.utils.files import atomic_write_text

    header = "# haml sweep's record of this run: its override set, each (re)start, and the result.\n"
    atomic_write_text(run_dir / RECORD_FILE,
                      header + yaml.safe_dump(dict(record), sort_keys=False, default_flow_style=None))


def finished_steps(record: Mapping[str, Any]) -> int | None:
    """The env steps of the run's finished training, or None if it has not finished."""
    finished = record.get("finished")
    return int(finished["env_steps"]) if isinstance(finished, dict) else None


def wall_seconds(record: Mapping[str, Any]) -> float:
    """The run's training time: the sum over the sessions that ended."""
    return float(sum(s.get("wall_seconds") or 0.0 for s in record.get("sessions", [])))


# ----------------------------------------------------------------------------------------------
# planning


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted keys (``{"train": {"steps": 1}}`` → ``train.steps``)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_same_config(run_dir: Path, cfg: Any) -> None:
    """Refuse a run directory that holds a run of another config than this sweep's cell."""
    import yaml

    from haml.config.loader import config_to_dict
    from haml.logging.logger import CONFIG_FILE, config_yaml

    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as file:
        there = _flat(yaml.safe_load(file) or {})
    here = _flat(yaml.safe_load(config_yaml(config_to_dict(cfg))))
    # A key the saved config lacks was added to haml after that run started: resuming it takes
    # the key's default, so it is no difference of the run's own.
    differ = sorted(k for k in there.keys() | here.keys()
                    if k not in _MAY_DIFFER and k in there and there.get(k) != here.get(k))
    if differ:
        shown = "; ".join(f"{k}: {there.get(k)!r} there, {here.get(k)!r} here" for k in differ[:3])
        more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
        raise ValueError(
            f"sweep: {run_dir} holds a run of another config ({shown}{more}); give this sweep "
            "another --out, make the change an override set (--variant), or remove that run"
        )


def _action(run_dir: Path, steps: int) -> str:
    from haml.utils.checkpoint import latest_checkpoint

    done = finished_steps(read_record(run_dir))
    if done is not None and done >= steps:
        return "skip"
    return "resume" if latest_checkpoint(run_dir) is not None else "train"


def plan_runs(grid: SweepGrid, out: str | os.PathLike[str], threads: int | None) -> list[RunPlan]:
    """Resolve every cell's config (all errors come out here, before anything runs), place it
    and decide what it needs; ``threads`` becomes ``train.torch_threads`` of every run unless an
    override sets it."""
    from haml.config.loader import load_config
    from haml.training import default_run_dir

    root = Path(out).resolve()
    plans = []
    for cell in grid.cells():
        overrides = [*grid.overrides, *cell.variant.overrides]
        resume_overrides: tuple[str, ...] = ()
        if threads is not None and not any(key == "train.torch_threads" for key, _ in overrides):
            overrides.append(("train.torch_threads", threads))
            resume_overrides = (f"train.torch_threads={threads}",)
        if grid.steps is not None:
            overrides.append(("train.steps", grid.steps))
        cfg = load_config(cell.algo, grid.env, cell.task, overrides=[*overrides, ("seed", cell.seed)],
                          tuned=grid.tuned)
        base = default_run_dir(cfg, root)  # <root>/<env>/<task>/<algo>/seed-<n>
        run_dir = base.parent / cell.variant.name / base.name if cell.variant.name else base
        _check_same_config(run_dir, cfg)
        plans.append(RunPlan(
            cell=cell, env=cfg.env.name, task=cfg.env.task, run_dir=run_dir,
            steps=cfg.train.steps, tuned=grid.tuned, overrides=tuple(overrides),
            resume_overrides=resume_overrides, action=_action(run_dir, cfg.train.steps),
        ))
    return plans


# ----------------------------------------------------------------------------------------------
# the task


def _start_session(plan: RunPlan, from_iteration: int) -> None:
    record = read_record(plan.run_dir)
    record["variant"] = plan.cell.variant.name
    record["overrides"] = dict(plan.cell.variant.overrides)
    record.pop("finished", None)  # more steps asked for than it finished with
    record.setdefault("sessions", []).append({
        "from_iteration": from_iteration, "pid": os.getpid(), "host": socket.gethostname(),
        "started": time.time(),
    })
    _write_record(plan.run_dir, record)


def _end_session(plan: RunPlan, seconds: float, outcome: RunOutcome | None) -> None:
    record = read_record(plan.run_dir)
    sessions = record.get("sessions") or [{}]
    sessions[-1]["wall_seconds"] = round(seconds, 3)
    if outcome is not None and not outcome.interrupted:
        record["finished"] = {
            "env_steps": outcome.env_steps, "iterations": outcome.iterations,
            "eval_return": outcome.eval_return, "eval_std": outcome.eval_std,
            "wall_seconds": round(wall_seconds(record), 3),
        }
    _write_record(plan.run_dir, record)


def run_one(plan: RunPlan) -> RunOutcome:
    """Run (or continue) one run of a sweep to its steps with :func:`haml.train` or
    :func:`haml.resume`, keeping its record; the body of each Ray task.

    What to do is read from the run directory now, not from ``plan.action``: a retried task
    resumes from the checkpoint its killed predecessor wrote."""
    from haml.training import resume, train
    from haml.utils.checkpoint import checkpoint_iteration, latest_checkpoint

    run_dir = plan.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    done = finished_steps(read_record(run_dir))
    if done is not None and done >= plan.steps:
        record = read_record(run_dir)["finished"]
        return RunOutcome(done, int(record["iterations"]), record["eval_return"],
                          record["eval_std"], 0.0, False)
    latest = latest_checkpoint(run_dir)
    _start_session(plan, 0 if latest is None else checkpoint_iteration(latest))
    started = time.perf_counter()
    outcome = None
    try:
        if latest is None:
            result = train(plan.cell.algo, plan.env, plan.task, steps=plan.steps, seed=plan.cell.seed,
                           out=run_dir, tuned=plan.tuned, overrides=dict(plan.overrides), quiet=True,
                           overwrite=True)
        else:
            result = resume(run_dir, steps=plan.steps, overrides=plan.resume_overrides, quiet=True)
        outcome = RunOutcome(result.env_steps, result.iterations, result.eval_return,
                             result.eval_std, result.wall_seconds, result.interrupted)
    finally:
        _end_session(plan, time.perf_counter() - started, outcome)
    return outcome
