"""A small wall-clock timer for steady-state calls: warm-up, then blocks of calls until enough time.

``torch.utils.benchmark.Timer.blocked_autorange`` is close to this, but it runs on one thread by
default and has no minimum number of blocks, so a 100 ms reference call would get two or three
samples and a meaningless spread. This timer runs on the threads torch is set to use (recorded in the
results), and synchronises CUDA at the edges of each block so that asynchronous kernels are counted.

:func:`measure_interleaved` times several callables (a kernel, its reference, a floor) with their
blocks interleaved, so that a machine whose speed drifts slows them alike and their ratio holds.

Each timing also records how much of the machine other processes used meanwhile (``other_load``):
on a shared machine a busy neighbour stalls multi-threaded kernels at every parallel region, so a
number measured beside one is marked rather than silently trusted.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = [
    "Timing",
    "TimerSettings",
    "OtherLoad",
    "others_busy",
    "measure",
    "measure_interleaved",
    "synchronizer",
    "format_seconds",
]


@dataclass(frozen=True)
class TimerSettings:
    """How long to measure each callable."""

    min_time: float = 0.5
    """Measure at least this many seconds of calls (after warm-up)..."""
    min_blocks: int = 10
    """...and at least this many blocks, unless ``max_time`` runs out first."""
    max_time: float = 5.0
    """Stop after this many seconds of measured calls even if ``min_blocks`` is not reached."""
    warmup_time: float = 0.1
    """Warm up for at least this many seconds..."""
    warmup_calls: int = 3
    """...and at least this many calls (caches, allocator, CUDA context, lazy init)."""


QUICK = TimerSettings(min_time=0.02, min_blocks=3, max_time=0.5, warmup_time=0.0, warmup_calls=1)


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the measured blocks."""

    median: float
    iqr: float
    """Interquartile range of the per-call times of the blocks (75th - 25th percentile)."""
    blocks: int
    calls_per_block: int
    other_load: float | None = None
    """Share of all CPUs' time that other processes used while the blocks ran (None: unknown)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class OtherLoad:
    """Share of the machine's CPU time used by *other* processes between two points in time.

    Reads the busy and total jiffies of all CPUs from /proc/stat and subtracts this process's own
    CPU time (all its threads, including OpenMP workers that spin after a parallel region).
    ``share()`` is None where /proc/stat does not exist.
    """

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat", encoding="utf-8") as stat:
                fields = [int(x) for x in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        total = sum(fields[:8])  # user .. steal; guest time is already inside user
        own = os.times()
        return (total - idle) / ticks, total / ticks, own.user + own.system

    def share(self) -> float | None:
        end = self._sample()
        if self._start is None or end is None or end[1] <= self._start[1]:
            return None
        busy, total, own = (b - a for a, b in zip(self._start, end))
        return min(max((busy - own) / total, 0.0), 1.0)


def others_busy(interval: float = 0.25) -> float | None:
    """:class:`OtherLoad` over ``interval`` seconds of sleep: how busy the machine is right now."""
    load = OtherLoad()
    time.sleep(interval)
    return load.share()


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _quantile(sorted_values: list[float], q: float) -> float:
    # Linear interpolation between closest ranks (numpy's default), without numpy.
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def _calls_per_block(
    fn: Callable[[], object], sync: Callable[[], None], settings: TimerSettings
) -> int:
    """Warm ``fn`` up; from the warm-up calls, the number of calls that lasts about
    ``min_time / 50`` (so that the timer and the synchronisation are negligible even for calls of
    a few microseconds)."""
    clock = time.perf_counter
    sync()
    calls = 0
    start = clock()
    while True:
        fn()
        calls += 1
        sync()
        elapsed = clock() - start
        if calls >= settings.warmup_calls and elapsed >= settings.warmup_time:
            break
    per_call = max(elapsed / calls, 1e-9)
    block_target = max(1e-3, settings.min_time / 50)
    return max(1, round(block_target / per_call))


def measure_interleaved(
    fns: Mapping[str, Callable[[], object]],
    device: torch.device,
    settings: TimerSettings = TimerSettings(),
) -> dict[str, Timing]:
    """Time steady-state calls of several callables with their blocks interleaved.

    On a machine whose speed drifts (the shared VM of docs/BENCHMARKS.md: ±30 % between minutes),
    timing one callable after the other lets the drift into their ratio. Here each round runs one
    block of every callable, in an order rotated by one each round, so that slow and fast
    moments hit them all alike. Each callable is warmed up first and gets its own block size (about
    ``min_time / 50``). Rounds go on until every callable has ``min_time`` of blocks and
    ``min_blocks`` blocks, or one of them has spent ``max_time``. Returns each callable's median
    and IQR of seconds per call; ``other_load`` covers the whole interleaved run.
    """
    if not fns:
        raise ValueError("measure_interleaved: no callable to time")
    sync = synchronizer(device)
    clock = time.perf_counter
    names = list(fns)
    number = {name: _calls_per_block(fns[name], sync, settings) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    total = dict.fromkeys(names, 0.0)

    def enough(name: str) -> bool:
        return total[name] >= settings.min_time and len(samples[name]) >= settings.min_blocks

    load = OtherLoad()
    rounds = 0
    while True:
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            fn, calls = fns[name], number[name]
            sync()
            start = clock()
            for _ in range(calls):
                fn()
            sync()
            block = clock() - start
            samples[name].append(block / calls)
            total[name] += block
        rounds += 1
        if all(enough(name) for name in names) or max(total.values()) >= settings.max_time:
            break
    other_load = load.share()

    timings = {}
    for name in names:
        ordered = sorted(samples[name])
        timings[name] = Timing(
            median=statistics.median(ordered),
            iqr=_quantile(ordered, 0.75) - _quantile(ordered, 0.25),
            blocks=len(ordered),
            calls_per_block=number[name],
            other_load=other_load,
        )
    return timings


def measure(
    fn: Callable[[], object],
    device: torch.device,
    settings: TimerSettings = TimerSettings(),
) -> Timing:
    """Time steady-state calls of ``fn()`` on ``device``: :func:`measure_interleaved` of one.

    Warm-up calls also estimate the cost of one call, which fixes how many calls make up a block.
    Blocks then run until ``min_time`` and ``min_blocks`` are both reached, or ``max_time`` is
    spent. Returns the median and IQR of seconds per call.
    """
    return measure_interleaved({"fn": fn}, device, settings)["fn"]


def format_seconds(seconds: float | None) -> str:
    """``1.23 ms`` style: three significant digits and a unit from ns to s."""
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale or unit == "ns":
            return f"{_three_digits(seconds / scale)} {unit}"
    raise AssertionError("unreachable")


def _three_digits(value: float) -> str:
    text = f"{value:.3g}"
    return f"{value:.0f}" if "e" in text else text  # 999.7 -> "1000", not "1e+03"
