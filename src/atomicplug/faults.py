"""Crash points for tests: kill this very process at the Nth durable step.

Every mutating helper in :mod:`atomicplug.fsutil` (and the database commit)
calls :func:`crash_point`. When ``ATOMICPLUG_CRASH_AT=N`` is set in the
environment (or :func:`arm` is called, e.g. in a forked child), the Nth call
sends SIGKILL to the process itself: no ``finally`` block, no atexit handler,
exactly as a power cut or OOM kill. With nothing armed the cost is one
integer comparison.
"""

from __future__ import annotations

import os
import signal

__all__ = ["arm", "crash_point", "count"]

_state = {"armed_at": int(os.environ.get("ATOMICPLUG_CRASH_AT", "0") or 0), "seen": 0}


def arm(at: int) -> None:
    """Kill the process at the ``at``-th crash point from now (0 disarms, counting goes on)."""
    _state["armed_at"] = at
    _state["seen"] = 0


def count() -> int:
    """How many crash points were passed since the last :func:`arm` (or start)."""
    return _state["seen"]


def crash_point() -> None:
    """Mark a durable step about to happen; die here if this is the armed one."""
    _state["seen"] += 1
    if _state["armed_at"] and _state["seen"] == _state["armed_at"]:
        os.kill(os.getpid(), signal.SIGKILL)
