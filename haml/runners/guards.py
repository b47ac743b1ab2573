"""What every runner's training loop guards against: divergence, Ctrl-C, and thread oversubscription.

- :func:`check_finite` stops a run whose losses or parameters stopped being finite
  (:class:`TrainingDiverged`), before that iteration is checkpointed;
- :class:`InterruptFlag` turns the first Ctrl-C into "stop after this iteration and checkpoint";
- :func:`single_thread` runs a block (acting in the envs) on one intra-op thread.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["InterruptFlag", "TrainingDiverged", "check_finite", "single_thread"]


class TrainingDiverged(RuntimeError):
    """A loss or a parameter became NaN/inf; the run stops and keeps its last good checkpoint."""


def check_finite(metrics: Mapping[str, Any], modules: Iterable[nn.Module], iteration: int) -> None:
    """Raise :class:`TrainingDiverged` naming ``iteration`` when a metric or a parameter of
    ``modules`` is not finite. One host sync: call it where the metrics are read anyway. (The
    training loop adds which checkpoint the run keeps.)"""
    finite = [torch.isfinite(torch.as_tensor(v)).all() for v in metrics.values()]
    params = [torch.isfinite(p).all() for m in modules for p in m.parameters()]
    if bool(torch.stack([*finite, *params]).all()):
        return
    bad = [k for k, ok in zip(metrics, finite) if not bool(ok)]
    what = f"non-finite {', '.join(bad)}" if bad else "non-finite parameters"
    raise TrainingDiverged(f"training diverged at iteration {iteration}: {what}")


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the block on one intra-op thread, then restore the count.

    Acting runs the policies on ``num_envs`` rows per env step: work too small to split, so
    more threads only add synchronisation (docs/BENCHMARKS.md has the measurement). The update,
    on whole batches, keeps the configured count."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class InterruptFlag:
    """SIGINT and SIGTERM handling during training: the first Ctrl-C (or a SIGTERM, as a job
    scheduler or ``kill`` sends) asks the loop to stop after the current iteration, which then
    writes a checkpoint; a second one interrupts at once."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptFlag:
        try:
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread: leave the signals alone
            self._previous = {}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\ninterrupt ({name}): finishing this iteration, then writing a checkpoint "
              "(again to stop at once)", flush=True)

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
