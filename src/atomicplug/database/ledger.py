"""The ledger: what was migrated, and which transactions committed (DESIGN.md step 4).

``atomicplug_migrations`` is append-only: one row per migration applied
(``direction = 'up'``) or reverted (``'down'``); a migration is applied when
its latest row is an up. ``atomicplug_transactions`` holds one row per txid,
written in the same database transaction as the migrations, so "its row
exists" is exactly "its COMMIT happened" — recovery's forward/back decision.
The tables are created inside the migration transaction (after the advisory
lock on PostgreSQL), so they too appear only with a commit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = [
    "MIGRATIONS_TABLE",
    "TRANSACTIONS_TABLE",
    "LEDGER_TABLES",
    "ensure_tables",
    "tables_exist",
    "applied_migrations",
    "record_migration",
    "record_transaction",
    "transaction_committed",
    "now",
]

MIGRATIONS_TABLE = "atomicplug_migrations"
TRANSACTIONS_TABLE = "atomicplug_transactions"
LEDGER_TABLES = frozenset({MIGRATIONS_TABLE, TRANSACTIONS_TABLE})

_metadata = sa.MetaData()
migrations = sa.Table(
    MIGRATIONS_TABLE,
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("txid", sa.String(64), nullable=False),
    sa.Column("plugin_id", sa.String(64), nullable=False),
    sa.Column("migration", sa.String(255), nullable=False),
    sa.Column("direction", sa.String(4), nullable=False),
    sa.Column("checksum", sa.String(64), nullable=False),
    sa.Column("plugin_version", sa.String(64), nullable=True),
    sa.Column("recorded_at", sa.String(40), nullable=False),
    sa.Index("ix_atomicplug_migrations_plugin", "plugin_id", "migration"),
)
transactions = sa.Table(
    TRANSACTIONS_TABLE,
    _metadata,
    sa.Column("txid", sa.String(64), primary_key=True),
    sa.Column("operation", sa.String(32), nullable=False),
    sa.Column("plugins", sa.Text, nullable=False),
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("committed_at", sa.String(40), nullable=False),
)


def now() -> str:
    """UTC timestamp as ISO 8601 text (sorts correctly on every backend)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def tables_exist(conn: Connection) -> bool:
    names = set(sa.inspect(conn).get_table_names())
    return LEDGER_TABLES <= names


def ensure_tables(conn: Connection) -> None:
    """Create the ledger tables if missing, inside the caller's transaction."""
    _metadata.create_all(conn, checkfirst=True)


def applied_migrations(conn: Connection, plugin_id: str) -> dict[str, str]:
    """Applied migrations of ``plugin_id``: name → checksum of the applied up.

    Empty when the ledger does not exist yet.
    """
    if not sa.inspect(conn).has_table(MIGRATIONS_TABLE):
        return {}
    rows = conn.execute(
        sa.select(migrations.c.migration, migrations.c.direction, migrations.c.checksum)
        .where(migrations.c.plugin_id == plugin_id)
        .order_by(migrations.c.id)
    )
    applied: dict[str, str] = {}
    for name, direction, checksum in rows:
        if direction == "up":
            applied[name] = checksum
        else:
            applied.pop(name, None)
    return applied


def record_migration(
    conn: Connection, *, txid: str, plugin_id: str, migration: str, direction: str, checksum: str, version: str | None
) -> None:
    conn.execute(
        migrations.insert().values(
            txid=txid,
            plugin_id=plugin_id,
            migration=migration,
            direction=direction,
            checksum=checksum,
            plugin_version=version,
            recorded_at=now(),
        )
    )


def record_transaction(
    conn: Connection, *, txid: str, operation: str, plugins: Sequence[dict[str, Any]], started_at: str
) -> None:
    conn.execute(
        transactions.insert().values(
            txid=txid,
            operation=operation,
            plugins=json.dumps(list(plugins), sort_keys=True),
            started_at=started_at,
            committed_at=now(),
        )
    )


def transaction_committed(conn: Connection, txid: str) -> bool:
    """Is there a (necessarily committed) ledger row for ``txid``? False without a ledger."""
    if not sa.inspect(conn).has_table(TRANSACTIONS_TABLE):
        return False
    found = conn.execute(sa.select(transactions.c.txid).where(transactions.c.txid == txid)).first()
    return found is not None
