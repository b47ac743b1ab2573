"""One logger per training run: ``config.yaml``, ``metrics.csv``, TensorBoard, and progress.

What a run directory receives from :class:`RunLogger`:

- ``config.yaml``: the resolved config, written (atomically) when the logger opens;
- ``metrics.csv``: one row per :meth:`RunLogger.log` call, with the fixed header
  :data:`haml.logging.metrics.CSV_COLUMNS`, flushed after every row so that a crash loses nothing
  already logged;
- ``events.out.tfevents.*``: TensorBoard scalars for every logged value, per-agent ones included
  (skipped, with one warning per process, when the ``tensorboard`` package is missing);
- on stdout: a live progress bar (steps, steps/s, last eval return, ETA) when stdout is a
  terminal, and otherwise, as in CI logs, one plain line every ``line_interval_s`` seconds.

Resuming. ``start_step > 0`` means the run continues from a checkpoint taken at that step: rows of
``metrics.csv`` with ``step > start_step`` (logged after that checkpoint, before the run stopped)
are dropped and new rows are appended, and TensorBoard purges its events after that step, so a
resumed run has neither duplicate nor orphaned rows. The runner must therefore log an
iteration's row *before* saving that iteration's checkpoint. ``start_step == 0`` starts a fresh
``metrics.csv``.

Values may be Python numbers or one-element tensors: tensors are read to the host here, the
logging point, in one transfer per device per call.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import io
import math
import numbers
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import torch

from haml.logging import metrics as M
from haml.utils.files import atomic_write_text

__all__ = [
    "CONFIG_FILE",
    "METRICS_FILE",
    "RunLogger",
    "plain_config",
]

CONFIG_FILE = "config.yaml"
"""The resolved config of a run, in its run directory."""
METRICS_FILE = "metrics.csv"
"""The metrics table of a run, in its run directory."""

_warned_no_tensorboard = False


class RunLogger:
    """Writes one run's config, metrics and progress; see the module docstring.

    Args:
        run_dir: the run directory (created if missing).
        config: the resolved config, a dict (dataclasses, paths, enums, tuples are converted).
        total_steps: the run's step budget, for the progress bar and ETA.
        start_step: the step of the checkpoint the run resumes from; 0 for a fresh run.
        quiet: print nothing (files are still written).
        tensorboard: write TensorBoard events (if the package is installed).
        stream: where progress goes; ``sys.stdout`` by default.
        line_interval_s: seconds between plain progress lines when ``stream`` is not a terminal.
        clock: a monotonic clock in seconds, for steps/s and ETA (replaceable in tests).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        config: Mapping[str, Any],
        total_steps: int,
        start_step: int = 0,
        quiet: bool = False,
        *,
        tensorboard: bool = True,
        stream: TextIO | None = None,
        line_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_count("total_steps", total_steps)
        _check_count("start_step", start_step)
        # start_step may exceed total_steps: the last iteration can overshoot the budget, and a
        # finished run may be reopened.
        if line_interval_s < 0:
            raise ValueError(f"RunLogger: 'line_interval_s' must be >= 0, got {line_interval_s}")

        self.run_dir = Path(run_dir)
        self.total_steps = int(total_steps)
        self.start_step = int(start_step)
        self.last_step = self.start_step
        self._clock = clock
        self._t0 = clock()
        self._last_time = self._t0
        self._closed = False

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config = plain_config(config)
        self.config_path = write_config(self.run_dir / CONFIG_FILE, self.config)

        self.metrics_path = self.run_dir / METRICS_FILE
        # A resumed run starts from the evaluation its kept rows end with.
        self.last_eval_return: float | None = _prepare_csv(self.metrics_path, self.start_step)
        self._csv_file = open(self.metrics_path, "a", newline="", encoding="utf-8")
        self._csv = csv.writer(self._csv_file, lineterminator=_LINE_END)

        self._tb = _open_tensorboard(self.run_dir, self.start_step) if tensorboard else None
        if self._tb is not None and self.start_step == 0:
            self._tb.add_text("config", _indent(config_yaml(self.config)), 0)

        stream = sys.stdout if stream is None else stream
        if quiet:
            self._progress: _Progress = _Silent()
        elif _is_terminal(stream):
            self._progress = _RichProgress(stream, _describe(self.run_dir), self.total_steps, self.start_step)
        else:
            self._progress = _PlainLines(stream, line_interval_s, clock)

    # ------------------------------------------------------------------------------------------

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append one row at ``step`` (env steps so far) and update TensorBoard and progress.

        ``metrics`` maps names from :mod:`haml.logging.metrics` (or their :func:`agent_metric`
        variants, or ``env/<name>``) to numbers or one-element tensors. An unknown name is an
        error. ``charts/steps_per_second`` is measured here when not given. Steps must not go
        backwards.
        """
        if self._closed:
            raise RuntimeError("RunLogger.log: the logger is closed")
        _check_count("step", step)
        step = int(step)
        if step < self.last_step:
            raise ValueError(f"RunLogger.log: step {step} is before the previous step {self.last_step}")
        for key in metrics:
            M.validate_name(key)
        values = _to_floats(metrics)

        now = self._clock()
        if M.STEPS_PER_SECOND not in values:
            elapsed = now - self._last_time
            if elapsed > 0:
                values[M.STEPS_PER_SECOND] = (step - self.last_step) / elapsed
        self._last_time = now
        self.last_step = step
        if M.EVAL_RETURN in values:
            self.last_eval_return = values[M.EVAL_RETURN]

        row = M.csv_row(step, time.time(), values)
        self._csv.writerow([row[column] for column in M.CSV_COLUMNS])
        self._csv_file.flush()

        if self._tb is not None:
            # Every value as logged, plus the CSV's cross-agent means of per-agent metrics.
            scalars = {k: v for k, v in row.items() if k in M.METRICS and v != ""}
            scalars.update(values)
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)

        self._progress.update(self._status(step, now))

    def info(self, message: str) -> None:
        """Print a message (above the progress bar when there is one); silent when quiet."""
        self._progress.message(message)

    def close(self) -> None:
        """Flush and close the files and stop the progress display; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._progress.close(self._status(self.last_step, self._clock()))
        finally:
            self._csv_file.close()
            if self._tb is not None:
                self._tb.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------

    def _status(self, step: int, now: float) -> _Status:
        elapsed = now - self._t0
        done = step - self.start_step
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        eta = (self.total_steps - step) / rate if rate else None
        return _Status(step, self.total_steps, rate, self.last_eval_return, eta, elapsed)


# ----------------------------------------------------------------------------------------------
# config.yaml


def plain_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as plain YAML-safe data: dataclasses and mappings become dicts, tuples lists,
    paths/devices/dtypes strings, enums their values. Anything else raises ``TypeError`` naming
    the key path."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"RunLogger: 'config' must be a dict or dataclass, got {type(config).__name__}")
    return _plain(config, "config")


def _plain(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, enum.Enum):
        return _plain(value.value, where)
    if isinstance(value, (os.PathLike, torch.device, torch.dtype)):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"RunLogger: {where} has a {type(value).__name__}, which config.yaml cannot hold")


def config_yaml(config: Mapping[str, Any]) -> str:
    """The YAML text of a plain config, keys in their given order."""
    import yaml

    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False, allow_unicode=True)


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    """Write ``config.yaml`` atomically with a header comment; returns the path."""
    header = "# The resolved config of this run, written by haml when the run (re)started.\n"
    return atomic_write_text(path, header + config_yaml(config))


def _indent(text: str) -> str:
    """Markdown code block by indentation (how TensorBoard's text plugin shows verbatim text)."""
    return "\n".join("    " + line for line in text.splitlines())


# ----------------------------------------------------------------------------------------------
# metrics.csv


def _prepare_csv(path: Path, start_step: int) -> float | None:
    """Leave ``path`` holding the header and the rows a run starting at ``start_step`` keeps;
    returns the latest evaluation return among the kept rows (None: none), so that a resumed
    run's progress shows it before its next evaluation."""
    if start_step == 0 or not path.exists():
        atomic_write_text(path, _csv_text([M.CSV_COLUMNS]))
        return None

    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    if not rows:
        atomic_write_text(path, _csv_text([M.CSV_COLUMNS]))
        return None
    old_header, body = rows[0], rows[1:]
    if M.STEP not in old_header:
        raise ValueError(f"RunLogger: {path} has no '{M.STEP}' column; it is not a haml metrics file")
    dropped = [c for c in old_header if c not in M.CSV_COLUMNS]
    if dropped:
        warnings.warn(
            f"RunLogger: resuming drops the columns {dropped} of {path}, no longer metrics",
            RuntimeWarning,
            stacklevel=3,
        )

    kept = []
    last_eval: float | None = None
    for cells in body:
        if len(cells) != len(old_header):  # a line cut short by a crash
            continue
        row = dict(zip(old_header, cells))
        try:
            step = float(row[M.STEP])
        except ValueError:
            continue
        if step <= start_step:
            kept.append([row.get(column, "") for column in M.CSV_COLUMNS])
            evaluated = M.csv_cell_value(row.get(M.EVAL_RETURN))
            if math.isfinite(evaluated):
                last_eval = evaluated

    # Atomic: a crash while truncating must not lose the rows being kept.
    atomic_write_text(path, _csv_text([M.CSV_COLUMNS, *kept]))
    return last_eval


_LINE_END = "\n"


def _csv_text(rows: list[Any]) -> str:
    text = io.StringIO()
    csv.writer(text, lineterminator=_LINE_END).writerows(rows)
    return text.getvalue()


# ----------------------------------------------------------------------------------------------
# values


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"RunLogger: '{name}' must be a non-negative int, got {value!r}")


def _to_float(key: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"metric {key!r}: expected a number or a one-element tensor, got shape {tuple(value.shape)}"
            )
        return float(value.detach().reshape(()).item())
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"metric {key!r}: expected a number or a one-element tensor, got {type(value).__name__}")


def _to_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Floats for every value; the tensors of each device come to the host in one transfer."""
    values: dict[str, float] = {}
    tensors: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            tensors.setdefault(value.device, []).append((key, value))
        else:
            values[key] = _to_float(key, value)
    for group in tensors.values():
        stacked = torch.stack([t.detach().reshape(()).to(torch.float64) for _, t in group])
        for (key, _), number in zip(group, stacked.tolist()):
            values[key] = number
    return {key: values[key] for key in metrics}  # the caller's order


# ----------------------------------------------------------------------------------------------
# TensorBoard


def _open_tensorboard(run_dir: Path, start_step: int) -> Any:
    global _warned_no_tensorboard
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        if not _warned_no_tensorboard:
            _warned_no_tensorboard = True
            warnings.warn(
                f"TensorBoard logging is off ({err}); metrics still go to {METRICS_FILE}. "
                "Install the 'tensorboard' package for event files.",
                RuntimeWarning,
                stacklevel=3,
            )
        return None
    # purge_step: TensorBoard discards the events of the earlier session at steps >= purge_step.
    purge_step = start_step + 1 if start_step > 0 else None
    return SummaryWriter(log_dir=str(run_dir), purge_step=purge_step, flush_secs=30)


# ----------------------------------------------------------------------------------------------
# progress display


@dataclasses.dataclass(frozen=True)
class _Status:
    step: int
    total: int
    steps_per_second: float | None  # mean since the logger opened
    eval_return: float | None
    eta_s: float | None
    elapsed_s: float

    def fields(self) -> dict[str, str]:
        return {
            "sps": "-" if self.steps_per_second is None else f"{self.steps_per_second:,.0f}",
            "eval_return": "-" if self.eval_return is None else f"{self.eval_return:.2f}",
            "eta": "-" if self.eta_s is None else _duration(self.eta_s),
        }

    def line(self) -> str:
        f = self.fields()
        percent = 100.0 * self.step / self.total if self.total else 100.0
        return (
            f"step {self.step:,}/{self.total:,} ({percent:.1f}%) | {f['sps']} steps/s | "
            f"eval return {f['eval_return']} | ETA {f['eta']}"
        )


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=max(0, round(seconds))))


def _describe(run_dir: Path) -> str:
    """The run's last path components (``<env>/<task>/<algo>/seed-<n>``): the bar's label."""
    return "/".join(run_dir.resolve().parts[1:][-4:])


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


class _Progress:
    def update(self, status: _Status) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self, status: _Status) -> None: ...


class _Silent(_Progress):
    pass


class _PlainLines(_Progress):
    """CI logs: a line at the first row, then at most one per ``interval`` seconds, and at close."""

    def __init__(self, stream: TextIO, interval: float, clock: Callable[[], float]) -> None:
        self._stream = stream
        self._interval = interval
        self._clock = clock
        self._last_line: float | None = None

    def _print(self, text: str) -> None:
        print(f"[haml] {text}", file=self._stream, flush=True)

    def update(self, status: _Status) -> None:
        now = self._clock()
        if self._last_line is None or now - self._last_line >= self._interval:
            self._last_line = now
            self._print(status.line())

    def message(self, text: str) -> None:
        self._print(text)

    def close(self, status: _Status) -> None:
        self._print(f"{status.line()} | elapsed {_duration(status.elapsed_s)}")


class _RichProgress(_Progress):
    """A terminal: a live rich progress bar."""

    def __init__(self, stream: TextIO, label: str, total: int, start: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
            TextColumn("{task.fields[sps]} steps/s"),
            TextColumn("eval return {task.fields[eval_return]}"),
            TextColumn("ETA {task.fields[eta]}"),
            TimeElapsedColumn(),
            console=Console(file=stream),
            refresh_per_second=2,
        )
        self._task = self._progress.add_task(
            label, total=total, completed=start, sps="-", eval_return="-", eta="-"
        )
        self._progress.start()

    def update(self, status: _Status) -> None:
        self._progress.update(self._task, completed=status.step, **status.fields())

    def message(self, text: str) -> None:
        self._progress.console.print(text)

    def close(self, status: _Status) -> None:
        self.update(status)
        self._progress.stop()
