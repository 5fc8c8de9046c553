"""Integer ids chosen by the application: ``INTEGER PRIMARY KEY`` auto-increments on SQLite
but not on PostgreSQL, so the tables take explicit ids (max + 1, retried on a collision)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

ATTEMPTS = 5


def insert_with_next_id(
    engine: Engine,
    table: Table,
    values: Mapping[str, Any],
    after: Callable[[Connection, int], None] | None = None,
) -> int:
    """Insert ``values`` with the next free id, in one transaction (``after`` runs in it too)."""
    for attempt in range(ATTEMPTS):
        try:
            with engine.begin() as conn:
                new_id = int(conn.scalar(select(func.coalesce(func.max(table.c.id), 0) + 1)))
                conn.execute(table.insert().values(id=new_id, **values))
                if after is not None:
                    after(conn, new_id)
                return new_id
        except IntegrityError:
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")
