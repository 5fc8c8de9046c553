"""The writers' turn: one PostgreSQL advisory lock every node's writer (and the cluster's gc) takes.

docs/design.md "Beyond one machine". Taken with ``pg_advisory_xact_lock`` inside
the caller's transaction, so it ends with that transaction's COMMIT or ROLLBACK
(or its connection), never later; waiting is bounded by ``lock_timeout``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from atomicplug.errors import LockBusyError

if TYPE_CHECKING:
    from atomicplug.database.engine import Database

__all__ = ["take_turn"]


def take_turn(db: Database, lock_timeout: float) -> None:
    """BEGIN, then the writers' advisory lock within ``lock_timeout`` seconds (LockBusyError, exit 75)."""
    from atomicplug.database.engine import ADVISORY_LOCK_KEY

    db.execute("BEGIN")
    ((original,),) = db.execute("SELECT pg_catalog.current_setting('lock_timeout')")
    wait_ms = max(int(lock_timeout * 1000), 1)  # 0 would mean "wait for ever"
    db.execute("SELECT pg_catalog.set_config('lock_timeout', ?, true)", [f"{wait_ms}ms"])
    try:
        db.execute("SELECT pg_catalog.pg_advisory_xact_lock(?)", [ADVISORY_LOCK_KEY])
    except Exception as exc:
        if getattr(exc, "pgcode", None) != "55P03":  # lock_not_available
            raise
        raise LockBusyError(
            f"another node's atomicplug writer holds the cluster lock (waited {lock_timeout:g}s); try again when it has finished"
        ) from None
    db.execute("SELECT pg_catalog.set_config('lock_timeout', ?, true)", [original])
