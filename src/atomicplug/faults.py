"""Crash and failure points for tests: die, or fail, at the Nth durable step.

Every mutating helper in :mod:`atomicplug.fsutil` (and the database commit)
calls :func:`crash_point`. When ``ATOMICPLUG_CRASH_AT=N`` is set in the
environment (or :func:`arm` is called, e.g. in a forked child), the Nth call
sends SIGKILL to the process itself: no ``finally`` block, no atexit handler,
exactly as a power cut or OOM kill. Armed with a failure instead, the Nth call
raises it (``OSError(ENOSPC)``: a full disk; a driver error: a failing
database), and with ``then`` every later call raises too: a disk that stays
broken, so the rollback fails as well. With nothing armed the cost is one
integer comparison.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

__all__ = ["Failure", "arm", "crash_point", "count"]

#: What an armed point raises: an errno (``OSError(errno, strerror)``, with no file name,
#: as ``os.fsync(fd)`` raises it) or a function making the exception (a driver's error).
Failure = int | Callable[[], BaseException]


class _Armed:
    at = int(os.environ.get("ATOMICPLUG_CRASH_AT", "0") or 0)
    seen = 0
    fail: Failure | None = None
    then: Failure | None = None


def arm(at: int, fail: Failure | None = None, *, then: Failure | None = None) -> None:
    """Act at the ``at``-th crash point from now (0 disarms, counting goes on).

    Without ``fail`` the process SIGKILLs itself there; with it that point raises
    ``fail``, and every later point raises ``then`` (None: they pass).
    """
    _Armed.at, _Armed.seen, _Armed.fail, _Armed.then = at, 0, fail, then


def count() -> int:
    """How many crash points were passed since the last :func:`arm` (or start)."""
    return _Armed.seen


def crash_point() -> None:
    """Mark a durable step about to happen; die (or fail) here if this is the armed one."""
    _Armed.seen += 1
    if _Armed.at and _Armed.seen >= _Armed.at:
        if _Armed.seen == _Armed.at:
            if _Armed.fail is None:
                os.kill(os.getpid(), signal.SIGKILL)
            raise _error(_Armed.fail)
        if _Armed.then is not None:
            raise _error(_Armed.then)


def _error(failure: Failure) -> BaseException:
    if isinstance(failure, int):
        return OSError(failure, os.strerror(failure))
    return failure()
