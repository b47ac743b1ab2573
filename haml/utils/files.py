"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

The new content goes to a temporary file in the destination's own directory (so that the final
rename stays on one filesystem), is flushed and fsynced, and then replaces the destination with
``os.replace``, which POSIX and Windows both perform atomically. If writing fails, for any
reason including ``KeyboardInterrupt``, the temporary file is removed and the destination is left
as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["TEMP_SUFFIX", "atomic_write", "atomic_write_text"]

TEMP_SUFFIX = ".tmp"
"""Temporary files are named ``.<destination name>.<random>.tmp`` beside the destination."""


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(file)`` on a temporary binary file, then move it onto ``path``; returns ``path``.

    The parent directory is created if needed. On any exception the destination is untouched, the
    temporary file is deleted and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as file:
            # mkstemp creates the file as 0600; give it the mode an ordinary open() would have.
            os.chmod(tmp, 0o666 & ~_umask())
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        # BaseException: a Ctrl-C in the middle of a write must not leave a stray temp file.
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`); returns ``path``."""
    data = text.encode(encoding)
    return atomic_write(path, lambda file: file.write(data))


_UMASK: int | None = None


def _umask() -> int:
    """The process umask, read once (reading it means setting it, so not on every write)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable on POSIX; a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows: directories cannot be opened; the rename is durable already
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
