"""Schema snapshots for the reversibility rehearsal (DESIGN.md "Migrations").

A snapshot is what the downs must put back: tables, views and sequences of
the connection's default schema, each table's columns (name and type) and
indexes. atomicplug's own ledger tables are left out. Each snapshot takes a
fresh inspector on the transaction's connection: an inspector caches, and it
must see the uncommitted DDL of this very transaction.
"""

from __future__ import annotations

from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from atomicplug.database.ledger import LEDGER_TABLES

__all__ = ["Snapshot", "snapshot", "differences"]


@attrs.frozen
class Snapshot:
    tables: frozenset[str]
    views: frozenset[str]
    sequences: frozenset[str]
    columns: frozenset[tuple[str, str, str]]  # (table, column, type)
    indexes: frozenset[tuple[str, str, tuple[str, ...], bool]]  # (table, index, columns, unique)


def snapshot(conn: Connection) -> Snapshot:
    if conn.dialect.name == "sqlite":
        return _sqlite_snapshot(conn)
    insp: Any = sa.inspect(conn)  # a new Inspector each call: no stale cache
    tables = frozenset(insp.get_table_names()) - LEDGER_TABLES
    views = frozenset(insp.get_view_names())
    try:
        sequences = frozenset(insp.get_sequence_names())
    except NotImplementedError:  # SQLite
        sequences = frozenset()
    columns = set()
    indexes = set()
    if tables:
        for (_schema, table), cols in insp.get_multi_columns(filter_names=sorted(tables)).items():
            for col in cols:
                columns.add((table, col["name"], str(col["type"])))
        for (_schema, table), idxs in insp.get_multi_indexes(filter_names=sorted(tables)).items():
            for idx in idxs:
                names = tuple(str(c) for c in idx.get("column_names") or ())
                indexes.add((table, str(idx.get("name")), names, bool(idx.get("unique"))))
    return Snapshot(tables, views, sequences, frozenset(columns), frozenset(indexes))


def _sqlite_snapshot(conn: Connection) -> Snapshot:
    """The same snapshot in three queries (pragma table-valued functions), not two per table.

    Why: the inspector issues PRAGMA calls per table, twice per transaction;
    with hundreds of plugins installed that dominated an install.
    """
    rows = conn.exec_driver_sql("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
    tables = frozenset(name for kind, name in rows if kind == "table") - LEDGER_TABLES
    views = frozenset(name for kind, name in rows if kind == "view")
    columns = frozenset(
        (table, column, str(declared).upper())
        for table, column, declared in conn.exec_driver_sql(
            "SELECT m.name, p.name, p.type FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p "
            "WHERE m.type = 'table'"
        )
        if table in tables
    )
    index_columns: dict[tuple[str, str], list[tuple[int, str]]] = {}
    unique: dict[tuple[str, str], bool] = {}
    for table, index, is_unique, seqno, column in conn.exec_driver_sql(
        "SELECT m.name, il.name, il.\"unique\", ii.seqno, ii.name FROM sqlite_master AS m "
        "JOIN pragma_index_list(m.name) AS il JOIN pragma_index_info(il.name) AS ii "
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
