"""Running a sweep's runs: as Ray tasks, or one after another in this process without Ray.

Both drivers hand each run to :func:`haml.sweeps.runs.run_one` (``haml.train`` or
``haml.resume``) and report to a :class:`~haml.sweeps.progress.SweepProgress`. They return the
status of every run they were given: ``done``, ``failed`` (with the error), ``interrupted``
(Ctrl-C, the run keeps its checkpoint) or ``not started``.

With Ray each run is a task of ``num_cpus=cpus_per_run``, so Ray packs the runs onto the CPUs of
the machine or cluster. A task whose worker process dies (killed, out of memory, node lost) is
run again by Ray up to ``max_retries`` times, and the new attempt resumes from the run's latest
checkpoint (:func:`~haml.sweeps.runs.run_one` reads it from the run directory). An exception
raised by the training itself (a diverged run, a bad config) is not retried: it would fail
again; the run is reported failed and the others go on.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from haml.sweeps.progress import SweepProgress
from haml.sweeps.runs import RunOutcome, RunPlan, finished_steps, read_record, run_one

__all__ = ["RunStatus", "run_in_process", "run_on_ray"]


@dataclass
class RunStatus:
    """How one run of the sweep ended (``outcome`` is that of its last session, when it has one)."""

    plan: RunPlan
    status: str
    outcome: RunOutcome | None = None
    error: str | None = None


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0]


def _ended(progress: SweepProgress, plan: RunPlan, outcome: RunOutcome) -> RunStatus:
    status = "interrupted" if outcome.interrupted else "done"
    progress.set_status(plan, status)
    return RunStatus(plan, status, outcome)


def _failed(progress: SweepProgress, plan: RunPlan, err: BaseException) -> RunStatus:
    text = _error_text(err)
    progress.set_status(plan, "failed", text)
    return RunStatus(plan, "failed", error=text)


def _not_started(progress: SweepProgress, plans: Sequence[RunPlan]) -> list[RunStatus]:
    for plan in plans:
        progress.set_status(plan, "not started")
    return [RunStatus(plan, "not started") for plan in plans]


def run_in_process(plans: Sequence[RunPlan], progress: SweepProgress) -> list[RunStatus]:
    """Each run in turn in this process; Ctrl-C stops the current run at its next checkpoint
    (``haml.train``'s own handling) and starts no other."""
    statuses: list[RunStatus] = []
    for i, plan in enumerate(plans):
        progress.set_status(plan, "running")
        try:
            statuses.append(_ended(progress, plan, run_one(plan)))
        except KeyboardInterrupt:  # a second Ctrl-C: the run stopped at once
            progress.set_status(plan, "interrupted")
            statuses.append(RunStatus(plan, "interrupted"))
        except Exception as err:  # this run failed; the others may still run
            statuses.append(_failed(progress, plan, err))
        if statuses[-1].status == "interrupted":
            return statuses + _not_started(progress, plans[i + 1:])
    return statuses


def _running_pid(plan: RunPlan, since: float) -> int | None:
    """The pid of the process on this host that runs ``plan``'s current session, started since
    ``since`` (this sweep's start), or None (queued, ended, or on another node)."""
    sessions = read_record(plan.run_dir).get("sessions") or []
    last = sessions[-1] if sessions else {}
    if "wall_seconds" in last or last.get("host") != socket.gethostname():
        return None
    if float(last.get("started", 0.0)) < since or not isinstance(last.get("pid"), int):
        return None
    return last["pid"]


def _sent_sigterm(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):  # ended meanwhile, or not ours
        return False
    return True


def _stop(ray, refs: dict, pending: list, grace_s: float, since: float) -> None:
    """Stop the ``pending`` tasks. A running run on this host gets SIGTERM in its worker process,
    which ``haml train`` takes as its first Ctrl-C: it finishes the iteration and writes a
    checkpoint. (Ray workers have their own process group, so a terminal's Ctrl-C does not reach
    them, and they block SIGINT.) Queued tasks, runs on other nodes, and whatever still runs after
    ``grace_s`` seconds or at a second Ctrl-C are cancelled by killing the worker (a run keeps its
    previous checkpoint).

    ``ray.cancel`` without force is not used for the graceful stop: a task it interrupts that then
    returns normally can crash Ray's task manager (seen with Ray 2.60)."""
    signalled = []
    for ref in pending:
        pid = _running_pid(refs[ref], since)
        if pid is not None and _sent_sigterm(pid):
            signalled.append(ref)
        else:
            ray.cancel(ref, force=True)
    try:
        if signalled:
            ray.wait(signalled, num_returns=len(signalled), timeout=grace_s)
    except KeyboardInterrupt:
        pass
    if signalled:
        _, running = ray.wait(signalled, num_returns=len(signalled), timeout=0)
        for ref in running:
            ray.cancel(ref, force=True)


def run_on_ray(plans: Sequence[RunPlan], progress: SweepProgress, *, cpus_per_run: float,
               gpus_per_run: float, max_retries: int, wait_s: float = 1.0,
               stop_grace_s: float = 120.0) -> list[RunStatus]:
    """Every run as a Ray task on the Ray instance this process is connected to; returns when
    all have ended. Ctrl-C (or SIGTERM under ``haml sweep``) stops the running tasks as Ctrl-C stops
    ``haml train``: each finishes its iteration and writes a checkpoint, within ``stop_grace_s``
    seconds; a task still running then, or at a second Ctrl-C, is killed and its run keeps its
    previous checkpoint. Ray hides the GPUs from a task that reserves none, so runs on ``cuda``
    need ``gpus_per_run > 0``."""
    import ray
    from ray.exceptions import RayError, RayTaskError

    task = ray.remote(run_one).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run,
                                       max_retries=max_retries, retry_exceptions=False,
                                       name="haml-sweep-run")
    since = time.time()
    refs = {task.remote(plan): plan for plan in plans}
    statuses: dict[str, RunStatus] = {}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=wait_s)
            for ref in ready:
                plan = refs[ref]
                try:
                    statuses[plan.label] = _ended(progress, plan, ray.get(ref))
                except RayTaskError as err:  # raised by the training: not retried
                    statuses[plan.label] = _failed(progress, plan, err.cause or err)
                except RayError as err:  # workers lost more than max_retries times, ...
                    statuses[plan.label] = _failed(progress, plan, err)
    except KeyboardInterrupt:
        _stop(ray, refs, pending, stop_grace_s, since)
        for ref in pending:
            plan = refs[ref]
            # A run may have finished between the last wait and the cancel.
            done = finished_steps(read_record(plan.run_dir))
            status = "done" if done is not None and done >= plan.steps else "interrupted"
            progress.set_status(plan, status)
            statuses[plan.label] = RunStatus(plan, status)
    return [statuses[plan.label] for plan in plans]
