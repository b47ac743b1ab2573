"""Checkpoints of a training run: atomic writes, clear load errors, and where they live.

Layout inside a run directory::

    checkpoints/iter-000120.pt
    checkpoints/iter-000130.pt      <- latest_checkpoint(run_dir)

One file per saved iteration, named by the iteration number (zero-padded to six digits, wider
when needed). The latest checkpoint is the one with the highest number; there is no separate
``last.pt``, so there is one source of truth and nothing to get out of step after a crash. At most
``keep`` files are kept; older ones are deleted only after the new one is safely on disk, so a run
stopped for a NaN loss or killed mid-write always keeps its last good checkpoint.

A training run's payload (:func:`run_checkpoint`) is a plain dict with one version number,
:data:`RUN_CHECKPOINT_FORMAT`::

    {"format": 2, "config": <resolved config>, "runner": <the runner's state_dict()>,
     "rng": <haml.utils.seeding.rng_state()>, "eval_return": <float or None>}

:func:`load_run_checkpoint` reads it back and upgrades older formats step by step (format 1 kept
its number inside ``runner``). :func:`load_checkpoint` loads with
``weights_only=True`` by default (no arbitrary code runs from a checkpoint file), so payloads should
hold only tensors, state dicts, and Python containers of numbers and strings, which is what
:func:`~haml.utils.seeding.rng_state` returns.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from haml.utils.files import TEMP_SUFFIX, atomic_write

__all__ = [
    "CHECKPOINT_DIR",
    "CheckpointError",
    "RUN_CHECKPOINT_FORMAT",
    "checkpoint_iteration",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest_run_checkpoint",
    "load_run_checkpoint",
    "run_checkpoint",
    "save_checkpoint",
    "save_run_checkpoint",
]

CHECKPOINT_DIR = "checkpoints"
"""Sub-directory of a run directory that holds its checkpoints."""

_MAGIC = b"HAMLCKPT1\n"
"""A checkpoint file is this line, the SHA-256 of the rest as 64 hex digits and a newline, then
``torch.save``'s bytes (a zip archive). Files of earlier haml versions are the bare archive."""

_ZIP_SIGNATURE = b"PK\x03\x04"

RUN_CHECKPOINT_FORMAT = 2
"""The version of a training run's checkpoint layout (see the module doc)."""

_NAME = re.compile(r"^iter-(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read (truncated, corrupt, or not a haml checkpoint)."""


def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically with ``torch.save``, behind a SHA-256 of its bytes
    that :func:`load_checkpoint` verifies; returns ``path``.

    The bytes go to a temporary file in the same directory, are fsynced, and replace ``path`` in
    one rename: if saving fails or is interrupted, the previous file at ``path`` is intact and no
    temporary file is left behind.
    """
    if not isinstance(payload, Mapping):
        raise TypeError(f"save_checkpoint: 'payload' must be a dict, got {type(payload).__name__}")
    buffer = io.BytesIO()
    torch.save(dict(payload), buffer)
    body = buffer.getvalue()
    header = _MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n"
    return atomic_write(path, lambda file: (file.write(header), file.write(body)))


def _verified_body(path: Path) -> bytes:
    """The ``torch.save`` bytes of ``path`` after checking their SHA-256 (see :data:`_MAGIC`)."""
    data = path.read_bytes()
    if data.startswith(_MAGIC):
        digest, body = data[len(_MAGIC):len(_MAGIC) + 64], data[len(_MAGIC) + 65:]
        if data[len(_MAGIC) + 64:len(_MAGIC) + 65] != b"\n" or (
            hashlib.sha256(body).hexdigest().encode() != digest
        ):
            raise CheckpointError(
                f"load_checkpoint: {path} is damaged: its content does not match the checksum "
                f"stored with it"
            )
        return body
    if data.startswith(_ZIP_SIGNATURE):  # written before checkpoints carried a checksum
        return data
    raise CheckpointError(f"load_checkpoint: {path} is not a haml checkpoint (unknown header)")


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device | None = "cpu",
    weights_only: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    The file's checksum is verified first: a file changed after it was written (one flipped byte
    is enough) is a :class:`CheckpointError`, never a silently different payload.
    ``map_location`` as in ``torch.load`` (CPU by default: a GPU run resumes on any machine).
    ``weights_only=False`` allows arbitrary pickled objects; use it only for files you trust.
    Raises ``FileNotFoundError`` (listing the checkpoints that do exist nearby) or
    :class:`CheckpointError` naming the file and the cause.
    """
    path = Path(path)
    if not path.is_file():
        nearby = list_checkpoints(path.parent.parent) if path.parent.name == CHECKPOINT_DIR else []
        hint = f"; checkpoints there: {', '.join(p.name for p in nearby)}" if nearby else ""
        raise FileNotFoundError(f"load_checkpoint: no checkpoint file at {path}{hint}")
    body = _verified_body(path)
    try:
        payload = torch.load(io.BytesIO(body), map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as err:
        if weights_only:
            raise CheckpointError(
                f"load_checkpoint: {path} is corrupt or holds objects that weights_only loading "
                f"refuses ({err}); if you trust the file, pass weights_only=False"
            ) from err
        raise CheckpointError(f"load_checkpoint: {path} is corrupt ({err})") from err
    except Exception as err:
        # Damaged files fail in many ways: a truncated zip archive as RuntimeError, an empty file
        # as EOFError, stray bytes read as a legacy pickle as IndexError or KeyError, ...
        raise CheckpointError(f"load_checkpoint: {path} is not a readable checkpoint ({err})") from err
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"load_checkpoint: {path} holds a {type(payload).__name__}, not a checkpoint dict"
        )
    return payload


def checkpoint_path(run_dir: str | os.PathLike[str], iteration: int) -> Path:
    """``<run_dir>/checkpoints/iter-<iteration, six digits at least>.pt``."""
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise ValueError(f"checkpoint_path: 'iteration' must be a non-negative int, got {iteration!r}")
    return Path(run_dir) / CHECKPOINT_DIR / f"iter-{iteration:06d}.pt"


def checkpoint_iteration(path: str | os.PathLike[str]) -> int:
    """The iteration number in a checkpoint file name (``iter-000123.pt`` -> 123)."""
    match = _NAME.match(Path(path).name)
    if match is None:
        raise ValueError(f"checkpoint_iteration: {path} is not named iter-<number>.pt")
    return int(match[1])


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The run's checkpoint files, oldest iteration first (temporary files are not listed)."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_file() and _NAME.match(p.name)]
    return sorted(found, key=checkpoint_iteration)


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest iteration number in ``run_dir``, or ``None`` if none."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_run_checkpoint(
    run_dir: str | os.PathLike[str],
    iteration: int,
    payload: Mapping[str, Any],
    keep: int | None = 3,
) -> Path:
    """Save ``payload`` as iteration ``iteration`` of the run, then prune; returns the file written.

    Saving the same iteration twice (a periodic save, then Ctrl-C before the next iteration)
    replaces the file atomically. Afterwards only the ``keep`` highest-numbered checkpoints remain
    (``None``: keep all), and temporary files left by a process killed mid-write are removed.
    """
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"save_run_checkpoint: 'keep' must be a positive int or None, got {keep!r}")
    path = save_checkpoint(checkpoint_path(run_dir, iteration), payload)
    _prune(Path(run_dir), keep, written=path)
    return path


def _prune(run_dir: Path, keep: int | None, written: Path) -> None:
    directory = run_dir / CHECKPOINT_DIR
    # Only one process writes a run's checkpoints, and its own write has finished by now, so any
    # temporary file still here was left by a process that was killed mid-write.
    for stray in directory.glob(f".iter-*{TEMP_SUFFIX}"):
        stray.unlink(missing_ok=True)
    if keep is None:
        return
    for old in list_checkpoints(run_dir)[:-keep]:
        if old != written:  # the file just written is never pruned, whatever its number
            old.unlink(missing_ok=True)


def run_checkpoint(
    config: Mapping[str, Any],
    runner_state: Mapping[str, Any],
    rng: Mapping[str, Any],
    eval_return: float | None,
) -> dict[str, Any]:
    """A training run's checkpoint payload, at :data:`RUN_CHECKPOINT_FORMAT`."""
    return {
        "format": RUN_CHECKPOINT_FORMAT,
        "config": dict(config),
        "runner": dict(runner_state),
        "rng": dict(rng),
        "eval_return": eval_return,
    }


def _from_format_1(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    """Format 1 kept its version inside ``runner``; its first files (before recurrent policies)
    also lacked the acting state that resuming needs."""
    runner = dict(payload["runner"])
    del runner["format"]
    step = runner.get("env_step")
    if step is not None and not {"actor", "critic_states", "active_masks"} <= step.keys():
        raise CheckpointError(
            f"load_run_checkpoint: {path} was written by a haml older than recurrent policies and "
            f"lacks the acting state this haml restores; its weights are under ['runner']['policies']"
        )
    return {**payload, "runner": runner, "format": 2}


_UPGRADES = {1: _from_format_1}
"""format → the function that turns a payload of that format into the next one."""


def load_run_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A training run's checkpoint (:func:`run_checkpoint`), upgraded to
    :data:`RUN_CHECKPOINT_FORMAT`; :class:`CheckpointError` names the file when it is not one."""
    path = Path(path)
    payload = load_checkpoint(path)
    runner = payload.get("runner")
    version = payload.get("format", runner.get("format") if isinstance(runner, dict) else None)
    if not isinstance(version, int) or not 1 <= version <= RUN_CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"load_run_checkpoint: {path} is not a haml run checkpoint of a known format "
            f"(format {version!r}; this haml reads 1 to {RUN_CHECKPOINT_FORMAT})"
        )
    while version < RUN_CHECKPOINT_FORMAT:
        payload = _UPGRADES[version](payload, path)
        version = payload["format"]
    missing = {"config", "runner", "rng"} - payload.keys()
    if missing:
        raise CheckpointError(f"load_run_checkpoint: {path} lacks {', '.join(sorted(missing))}")
    return payload


def load_latest_run_checkpoint(
    run_dir: str | os.PathLike[str],
) -> tuple[Path, dict[str, Any], list[tuple[Path, CheckpointError]]]:
    """The newest checkpoint of ``run_dir`` that verifies and reads: ``(path, payload, skipped)``,
    ``skipped`` holding each newer file that did not, with why (damaged, truncated, ...).

    Raises ``FileNotFoundError`` when the run has no checkpoint, and the newest file's
    :class:`CheckpointError` (naming every file tried) when none of them reads."""
    found = list_checkpoints(run_dir)
    if not found:
        raise FileNotFoundError(f"{run_dir} holds no checkpoint ({CHECKPOINT_DIR}/iter-*.pt)")
    skipped: list[tuple[Path, CheckpointError]] = []
    for path in reversed(found):
        try:
            return path, load_run_checkpoint(path), skipped
        except CheckpointError as err:
            skipped.append((path, err))
    tried = "; ".join(str(err) for _, err in skipped)
    raise CheckpointError(f"no checkpoint of {run_dir} could be read: {tried}")
