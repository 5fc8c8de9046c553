"""The writer lock: one transaction at a time per home (docs/design.md "State")."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from atomicplug.errors import LockBusyError
from atomicplug.fsutil import make_dirs

__all__ = ["writer_lock"]


@contextmanager
def writer_lock(path: Path, timeout: float, progress: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold ``<home>/lock``; wait up to ``timeout`` seconds, then LockBusyError (exit 75).

    ``progress`` hears once that we wait, when another operation holds the lock.
    """
    import filelock

    make_dirs(path.parent)
    lock = filelock.FileLock(str(path), timeout=timeout)
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            if progress is not None:
                progress(f"waiting up to {timeout:g}s for another atomicplug operation to finish")
            lock.acquire()
    except filelock.Timeout as exc:
        raise LockBusyError(
            f"another atomicplug operation holds {path} (waited {timeout:g}s); try again when it has finished"
        ) from exc
    try:
        yield
    finally:
        lock.release()
