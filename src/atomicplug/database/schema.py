"""Schema snapshots for the reversibility rehearsal (docs/design.md "Migrations").

A snapshot is what the downs must put back: tables, views and sequences of
the target schema (``db.schema``, captured before the first migration
statement: a migration that empties ``search_path`` must not make the
rehearsal compare nothing), each table's columns (name and type) and
indexes. atomicplug's own tables (ledger, installations) are left out. Each snapshot queries
the catalog on the transaction's own connection, so it sees the uncommitted
DDL of this very transaction; a few queries in all, not a few per table (with
hundreds of plugins installed, per-table catalog calls dominated an install).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from atomicplug.database.ledger import LEDGER_TABLES
from atomicplug.settings.records import INSTALLATIONS_TABLE

#: atomicplug's own tables: never part of a plugin's schema.
_OWN_TABLES = LEDGER_TABLES | {INSTALLATIONS_TABLE}

if TYPE_CHECKING:
    from atomicplug.database.engine import Database

__all__ = ["Snapshot", "snapshot", "differences"]


@attrs.frozen
class Snapshot:
    tables: frozenset[str]
    views: frozenset[str]
    sequences: frozenset[str]
    columns: frozenset[tuple[str, str, str]]  # (table, column, type)
    indexes: frozenset[tuple[str, str, tuple[str, ...], bool]]  # (table, index, columns, unique)


def snapshot(db: Database) -> Snapshot:
    return _sqlite_snapshot(db) if db.backend == "sqlite" else _postgresql_snapshot(db)


def _columns(db: Database, sql: str, tables: frozenset[str], params: list[str] | None = None) -> frozenset[tuple[str, str, str]]:
    """(table, column, TYPE) rows of ``sql`` for the snapshot's tables (types upper-cased)."""
    rows = db.execute(sql, params or [])
    return frozenset((table, column, str(declared).upper()) for table, column, declared in rows if table in tables)


def _sqlite_snapshot(db: Database) -> Snapshot:
    """Three queries, with the pragma table-valued functions."""
    rows = db.execute("SELECT type, name FROM main.sqlite_master WHERE name NOT LIKE 'sqlite_%'")
    tables = frozenset(name for kind, name in rows if kind == "table") - _OWN_TABLES
    views = frozenset(name for kind, name in rows if kind == "view")
    columns = _columns(
        db,
        "SELECT m.name, p.name, p.type FROM main.sqlite_master AS m JOIN pragma_table_info(m.name, 'main') AS p "
        "WHERE m.type = 'table'",
        tables,
    )
    index_columns: dict[tuple[str, str], list[tuple[int, str]]] = {}
    unique: dict[tuple[str, str], bool] = {}
    for table, index, is_unique, seqno, column in db.execute(
        "SELECT m.name, il.name, il.\"unique\", ii.seqno, ii.name FROM main.sqlite_master AS m "
        "JOIN pragma_index_list(m.name, 'main') AS il JOIN pragma_index_info(il.name, 'main') AS ii "
        "WHERE m.type = 'table' AND il.origin = 'c'"
    ):
        if table in tables:
            index_columns.setdefault((table, index), []).append((seqno, str(column)))
            unique[(table, index)] = bool(is_unique)
    indexes = frozenset(
        (table, index, tuple(name for _, name in sorted(cols)), unique[(table, index)])
        for (table, index), cols in index_columns.items()
    )
    return Snapshot(tables, views, frozenset(), columns, indexes)


def _postgresql_snapshot(db: Database) -> Snapshot:
    """Three catalog queries on the captured schema; an index is compared by its full definition."""
    schema = [db.schema]
    relations = db.execute(
        "SELECT c.relname, c.relkind FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ? AND c.relkind IN ('r', 'p', 'v', 'm', 'S')",
        schema,
    )
    tables = frozenset(name for name, kind in relations if kind in ("r", "p")) - _OWN_TABLES
    views = frozenset(name for name, kind in relations if kind in ("v", "m"))
    sequences = frozenset(name for name, kind in relations if kind == "S")
    columns = _columns(
        db,
        "SELECT c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute AS a "
        "JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ? AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped",
        tables,
        schema,
    )
    indexes = frozenset(
        (table, index, (definition,), bool(is_unique))
        for table, index, definition, is_unique in db.execute(
            "SELECT t.relname, i.relname, pg_catalog.pg_get_indexdef(x.indexrelid), x.indisunique "
            "FROM pg_catalog.pg_index AS x JOIN pg_catalog.pg_class AS t ON t.oid = x.indrelid "
            "JOIN pg_catalog.pg_class AS i ON i.oid = x.indexrelid JOIN pg_catalog.pg_namespace AS n ON n.oid = t.relnamespace "
            "WHERE n.nspname = ? AND NOT x.indisprimary",
            schema,
        )
        if table in tables
    )
    return Snapshot(tables, views, sequences, columns, indexes)


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    """How ``after`` differs from ``before``, one short phrase each, stable order."""
    found: list[str] = []
    for kind, was, now in (
        ("table", before.tables, after.tables),
        ("view", before.views, after.views),
        ("sequence", before.sequences, after.sequences),
    ):
        found += [f"{kind} '{name}' left behind" for name in sorted(now - was)]
        found += [f"{kind} '{name}' missing" for name in sorted(was - now)]
    gone_tables = before.tables - after.tables
    new_tables = after.tables - before.tables
    old_cols = {(t, c): ty for t, c, ty in before.columns if t not in gone_tables}
    new_cols = {(t, c): ty for t, c, ty in after.columns if t not in new_tables}
    for key in sorted(new_cols.keys() - old_cols.keys()):
        found.append(f"column '{key[0]}.{key[1]}' left behind")
    for key in sorted(old_cols.keys() - new_cols.keys()):
        found.append(f"column '{key[0]}.{key[1]}' missing")
    for key in sorted(old_cols.keys() & new_cols.keys()):
        if old_cols[key] != new_cols[key]:
            found.append(f"column '{key[0]}.{key[1]}' is {new_cols[key]}, was {old_cols[key]}")
    old_idx = {i for i in before.indexes if i[0] not in gone_tables}
    new_idx = {i for i in after.indexes if i[0] not in new_tables}
    for table, name, _cols, _unique in sorted(new_idx - old_idx):
        found.append(f"index '{name}' on '{table}' left behind or changed")
    for table, name, _cols, _unique in sorted(old_idx - new_idx):
        found.append(f"index '{name}' on '{table}' missing or changed")
    return found
