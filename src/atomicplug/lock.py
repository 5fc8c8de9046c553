"""The writer lock: one transaction at a time per home (DESIGN.md "State")."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from atomicplug.errors import LockBusyError
from atomicplug.fsutil import make_dirs

__all__ = ["writer_lock"]


@contextmanager
def writer_lock(path: Path, timeout: float) -> Iterator[None]:
    """Hold ``<home>/lock``; wait up to ``timeout`` seconds, then LockBusyError (exit 75)."""
    import filelock

    make_dirs(path.parent)
    lock = filelock.FileLock(str(path), timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout as exc:
        raise LockBusyError(
            f"another atomicplug operation holds {path} (waited {timeout:g}s); try again when it has finished"
        ) from exc
    try:
        yield
    finally:
        lock.release()
