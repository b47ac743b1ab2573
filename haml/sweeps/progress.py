"""The sweep's progress on the terminal, read from the run directories.

The driver learns how each run is doing only from the files the run writes anyway: the last rows
of its ``metrics.csv`` (steps, the latest evaluation return, the step rate for the ETA) and the
sessions in its sweep record (whether it has started, how many times). There is no channel from
the runs to the driver, so the same display works for runs in this process, in local Ray workers
or on other machines of a cluster (whose run directories the driver must see: a shared disk).

On a terminal the display is a table redrawn every second (``rich``); elsewhere, as in CI logs,
it is plain lines: one when a run changes state, and every ``line_interval_s`` seconds one per
running run.
"""

from __future__ import annotations

import csv
import math
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TextIO

from haml.logging import metrics as M
from haml.logging.logger import METRICS_FILE
from haml.sweeps.runs import RunPlan, read_record

__all__ = ["RunView", "SweepProgress", "read_progress"]

_TAIL_BYTES = 1 << 16
"""How much of the end of a metrics.csv is read for the latest rows."""


@dataclass
class RunView:
    """What the display shows of one run."""

    plan: RunPlan
    status: str
    """queued, running, retry <n>, done, skipped, failed, interrupted, not started."""
    step: int = 0
    eval_return: float | None = None
    eta_s: float | None = None
    error: str | None = None
    sessions_before: int = 0


def _tail_rows(path: Path) -> list[dict[str, str]]:
    """The last complete rows of a metrics.csv (within its last 64 KiB), as dicts."""
    with open(path, "rb") as file:
        header = file.readline().decode()
        size = file.seek(0, 2)
        start = max(len(header), size - _TAIL_BYTES)
        file.seek(start)
        body = file.read().decode(errors="replace")
    if start > len(header):
        body = body.partition("\n")[2]  # the first line may be cut
    names = next(csv.reader([header]), [])
    rows = [dict(zip(names, cells)) for cells in csv.reader(body.splitlines())
            if len(cells) == len(names)]
    return rows


def _number(text: str | None) -> float | None:
    """A metrics.csv cell as a finite float, or None."""
    value = M.csv_cell_value(text)
    return value if math.isfinite(value) else None


def read_progress(run_dir: Path, total_steps: int) -> tuple[int, float | None, float | None]:
    """``(step, latest eval return, ETA in seconds)`` of a run from its metrics.csv; the ETA from
    the step rate of its last few rows (None before there are two rows of one session)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return 0, None, None
    rows = _tail_rows(path)
    if not rows:
        return 0, None, None
    step = int(_number(rows[-1].get(M.STEP)) or 0)
    evals = [v for v in (_number(r.get(M.EVAL_RETURN)) for r in rows) if v is not None]
    eta = None
    recent = rows[-6:]
    steps = [_number(r.get(M.STEP)) for r in recent]
    times = [_number(r.get(M.WALL_TIME)) for r in recent]
    if len(recent) >= 2 and None not in steps and None not in times and times[-1] > times[0]:
        rate = (steps[-1] - steps[0]) / (times[-1] - times[0])
        if rate > 0:
            eta = max(0.0, (total_steps - step) / rate)
    return step, evals[-1] if evals else None, eta


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return str(timedelta(seconds=round(seconds)))


class SweepProgress:
    """The live view of a sweep; the driver sets statuses, a thread reads the runs' files.

    Use as a context manager around the sweep's execution."""

    FINAL = ("done", "skipped", "failed", "interrupted", "not started")

    def __init__(self, plans: list[RunPlan], *, stream: TextIO | None = None, quiet: bool = False,
                 refresh_s: float = 1.0, line_interval_s: float = 30.0) -> None:
        self.stream = sys.stdout if stream is None else stream
        self.quiet = quiet
        self.refresh_s = refresh_s
        self.line_interval_s = line_interval_s
        self.runs = {}
        for plan in plans:
            view = RunView(plan, "skipped" if plan.action == "skip" else "queued",
                           sessions_before=len(read_record(plan.run_dir).get("sessions", [])))
            view.step, view.eval_return, _ = read_progress(plan.run_dir, plan.steps)
            self.runs[plan.label] = view
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live = None
        self._last_lines = time.monotonic()

    # ------------------------------------------------------------------------------------------

    def set_status(self, plan: RunPlan, status: str, error: str | None = None) -> None:
        """Record a run's new state (from the driver) and say so in plain mode."""
        with self._lock:
            view = self.runs[plan.label]
            self._read(view)
            view.status, view.error = status, error
            if status in self.FINAL:
                view.eta_s = None
        if self._live is None and not self.quiet:
            self._line(view)

    def poll(self) -> None:
        """Read the files of every run that is not finished (the thread calls this); in plain
        mode, say which runs started (or started again after their worker died)."""
        changed = []
        with self._lock:
            for view in self.runs.values():
                if view.status in self.FINAL:
                    continue
                sessions = len(read_record(view.plan.run_dir).get("sessions", []))
                started = sessions - view.sessions_before
                status = view.status
                if started >= 1:
                    status = "running" if started == 1 else f"retry {started - 1}"
                self._read(view)
                if status != view.status:
                    view.status = status
                    changed.append(view)
        if self._live is None and not self.quiet:
            for view in changed:
                self._line(view)

    def _read(self, view: RunView) -> None:
        try:
            view.step, eval_return, view.eta_s = read_progress(view.plan.run_dir, view.plan.steps)
        except (OSError, ValueError):  # a file being replaced: the next poll reads it
            return
        if eval_return is not None:
            view.eval_return = eval_return

    # ------------------------------------------------------------------------------------------

    def counts(self) -> str:
        """``"2 done, 1 running, 3 queued"``, in the order runs move through."""
        with self._lock:
            statuses = [v.status.split()[0] for v in self.runs.values()]
        order = ("done", "skipped", "running", "retry", "queued", "failed", "interrupted", "not")
        names = {"retry": "retrying", "not": "not started"}
        return ", ".join(f"{statuses.count(s)} {names.get(s, s)}" for s in order if s in statuses)

    def _line(self, view: RunView) -> None:
        steps = f"{view.step}/{view.plan.steps} steps"
        ret = "" if view.eval_return is None else f", eval return {view.eval_return:.4g}"
        eta = f", ETA {_duration(view.eta_s)}" if view.eta_s is not None else ""
        why = f": {view.error}" if view.error else ""
        print(f"sweep: {view.plan.label}: {view.status} ({steps}{ret}{eta}){why}",
              file=self.stream, flush=True)

    def table(self):  # -> rich.table.Table
        """The table of every run: run, status, steps, latest eval return, ETA."""
        from rich.table import Table

        table = Table(title=f"haml sweep: {self.counts()}", title_justify="left")
        for column, justify in (("run", "left"), ("status", "left"), ("steps", "right"),
                                ("eval return", "right"), ("ETA", "right")):
            table.add_column(column, justify=justify)
        colors = {"done": "green", "skipped": "green", "failed": "red", "interrupted": "yellow"}
        with self._lock:
            for label, view in self.runs.items():
                color = colors.get(view.status, "")
                status = f"[{color}]{view.status}[/]" if color else view.status
                table.add_row(
                    label, status, f"{view.step}/{view.plan.steps}",
                    "" if view.eval_return is None else f"{view.eval_return:.4g}",
                    _duration(view.eta_s),
                )
        return table

    # ------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.poll()
            if self._live is not None:
                self._live.update(self.table(), refresh=True)
            elif time.monotonic() - self._last_lines >= self.line_interval_s:
                self._last_lines = time.monotonic()
                with self._lock:
                    running = [v for v in self.runs.values() if v.status not in self.FINAL + ("queued",)]
                for view in running:
                    self._line(view)

    def __enter__(self) -> SweepProgress:
        if self.quiet:
            return self
        if self.stream.isatty():
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self.table(), console=Console(file=self.stream), auto_refresh=False)
            self._live.start()
        self._thread = threading.Thread(target=self._loop, name="haml-sweep-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._live is not None:
            self.poll()
            self._live.update(self.table(), refresh=True)
            self._live.stop()
            self._live = None
