"""The writer lock: one transaction at a time per home (docs/design.md "State").

``flock(2)`` on ``<home>/lock``, polled until the timeout: the kernel drops it
when the holder dies, however it dies. The standard library's ``fcntl`` rather
than the ``filelock`` package, whose import cost ~20-30 ms of every command's
start-up (bench/README.md); both take the same ``flock``, so either excludes
the other.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from atomicplug.errors import LockBusyError
from atomicplug.fsutil import make_dirs
from atomicplug.progress import Progress, ProgressEvent

__all__ = ["writer_lock", "writer_active"]

#: Seconds between two attempts while another operation holds the lock.
POLL_SECONDS = 0.05


@contextmanager
def writer_lock(path: Path, timeout: float, progress: Progress | None = None) -> Iterator[None]:
    """Hold ``<home>/lock``; wait up to ``timeout`` seconds, then LockBusyError (exit 75).

    ``progress`` hears once that we wait, when another operation holds the lock.
    """
    make_dirs(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _acquire(fd, path, timeout, progress)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, timeout: float, progress: Progress | None) -> None:
    deadline = time.monotonic() + timeout
    waiting = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LockBusyError(
                f"another atomicplug operation holds {path} (waited {timeout:g}s); try again when it has finished"
            )
        if not waiting and progress is not None:
            progress(ProgressEvent("lock", f"waiting up to {timeout:g}s for another atomicplug operation to finish"))
        waiting = True
        time.sleep(min(POLL_SECONDS, remaining))


def writer_active(path: Path) -> bool:
    """Whether a writer holds ``<home>/lock`` now: for readers that take no lock (``verify``,
    ``doctor``), to tell a transaction in progress from unfinished work or damage.

    A shared ``flock`` tried without waiting: refused while a writer holds the lock. Held for
    an instant when granted, so a writer starting just then polls once more (50 ms).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock it was granted
    return False
