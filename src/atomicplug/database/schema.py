"""Schema snapshots for the reversibility rehearsal (docs/design.md "Migrations").

A snapshot is what the downs must put back: tables, views and sequences of
the target schema (``db.schema``, captured before the first migration
statement: a migration that empties ``search_path`` must not make the
rehearsal compare nothing), each table's columns (name and type) and
indexes. atomicplug's own tables (ledger, installations) are left out. Each snapshot queries
the catalog on the transaction's own connection, so it sees the uncommitted
DDL of this very transaction; a few queries in all, not a few per table (with
hundreds of plugins installed, per-table catalog calls dominated an install).

On SQLite a table is snapshotted as the text of its ``CREATE TABLE`` and of its
``CREATE INDEX`` statements, one query over ``sqlite_master``: SQLite builds its
schema from exactly these texts whenever it opens a database, so two equal texts
are the same columns and indexes. Only a table whose texts differ after the downs
is described column by column, from its texts (:func:`_sqlite_shape`), so the
answer is the one a column-by-column snapshot of every table gives, for the cost
of one query (issue 14: two snapshots of 1000 tables took ~25 ms of every install).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Hashable, Mapping
from contextlib import closing
from typing import TYPE_CHECKING

import attrs

from atomicplug.database.ledger import LEDGER_TABLES
from atomicplug.settings.records import INSTALLATIONS_TABLE

#: atomicplug's own tables: never part of a plugin's schema.
_OWN_TABLES = LEDGER_TABLES | {INSTALLATIONS_TABLE}

if TYPE_CHECKING:
    from atomicplug.database.engine import Database

__all__ = ["Snapshot", "TableShape", "snapshot", "differences"]


@attrs.frozen
class TableShape:
    """One table as the downs must put it back: its columns and its indexes."""

    columns: frozenset[tuple[str, str]]  # (column, TYPE)
    indexes: frozenset[tuple[str, tuple[str, ...], bool]]  # (index, columns, unique)


@attrs.frozen
class Snapshot:
    """The schema's relations, and per table a definition: equal definitions are equal shapes.

    ``definitions`` are :class:`TableShape` values (PostgreSQL), or the texts SQLite
    keeps of a table and its indexes (``backend == "sqlite"``), described only when asked.
    """

    tables: frozenset[str]
    views: frozenset[str]
    sequences: frozenset[str]
    definitions: Mapping[str, Hashable] = attrs.field(repr=False)
    backend: str = "postgresql"

    def shape(self, table: str) -> TableShape:
        """``table``'s columns and indexes; raises sqlite3.Error when SQLite cannot read its texts."""
        definition = self.definitions[table]
        if isinstance(definition, TableShape):
            return definition
        sql, indexes = definition  # type: ignore[misc]
        return _sqlite_shape(table, sql, indexes)


def snapshot(db: Database) -> Snapshot:
    return _sqlite_snapshot(db) if db.backend == "sqlite" else _postgresql_snapshot(db)


def _sqlite_snapshot(db: Database) -> Snapshot:
    """One query: every table's and view's name, and the texts of each table and its indexes."""
    tables: dict[str, str] = {}
    views = set()
    indexes: dict[str, list[tuple[str, str]]] = {}
    for kind, name, table, sql in db.execute(
        "SELECT type, name, tbl_name, sql FROM main.sqlite_master WHERE name NOT LIKE 'sqlite_%'"
    ):
        if kind == "table":
            tables[name] = sql
        elif kind == "view":
            views.add(name)
        elif kind == "index" and sql is not None:  # CREATE INDEX; a constraint's index comes with its table's text
            indexes.setdefault(table, []).append((name, sql))
    names = frozenset(tables) - _OWN_TABLES
    definitions = {name: (tables[name], tuple(sorted(indexes.get(name, ())))) for name in names}
    return Snapshot(names, frozenset(views), frozenset(), definitions, "sqlite")


def _sqlite_shape(table: str, sql: str, indexes: tuple[tuple[str, str], ...]) -> TableShape:
    """The columns and indexes SQLite makes of these texts: they are run in an empty in-memory
    database and described there, as the full snapshot described them in the real one."""
    with closing(sqlite3.connect(":memory:")) as scratch:
        scratch.execute(sql)
        for _name, index_sql in indexes:
            scratch.execute(index_sql)
        columns = frozenset(
            (str(column), str(declared).upper())
            for column, declared in scratch.execute("SELECT name, type FROM pragma_table_info(?)", [table])
        )
        index_columns: dict[str, list[tuple[int, str]]] = {}
        unique: dict[str, bool] = {}
        for index, is_unique, seqno, column in scratch.execute(
            "SELECT il.name, il.\"unique\", ii.seqno, ii.name FROM pragma_index_list(?) AS il "
            "JOIN pragma_index_info(il.name) AS ii WHERE il.origin = 'c'",
            [table],
        ):
            index_columns.setdefault(index, []).append((seqno, str(column)))
            unique[index] = bool(is_unique)
    shaped = frozenset((index, tuple(name for _, name in sorted(cols)), unique[index]) for index, cols in index_columns.items())
    return TableShape(columns, shaped)


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
    columns: dict[str, set[tuple[str, str]]] = {name: set() for name in tables}
    for table, column, declared in db.execute(
        "SELECT c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute AS a "
        "JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ? AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped",
        schema,
    ):
        if table in columns:
            columns[table].add((column, str(declared).upper()))
    indexes: dict[str, set[tuple[str, tuple[str, ...], bool]]] = {name: set() for name in tables}
    for table, index, definition, is_unique in db.execute(
        "SELECT t.relname, i.relname, pg_catalog.pg_get_indexdef(x.indexrelid), x.indisunique "
        "FROM pg_catalog.pg_index AS x JOIN pg_catalog.pg_class AS t ON t.oid = x.indrelid "
        "JOIN pg_catalog.pg_class AS i ON i.oid = x.indexrelid JOIN pg_catalog.pg_namespace AS n ON n.oid = t.relnamespace "
        "WHERE n.nspname = ? AND NOT x.indisprimary",
        schema,
    ):
        if table in indexes:
            indexes[table].add((index, (definition,), bool(is_unique)))
    definitions = {name: TableShape(frozenset(columns[name]), frozenset(indexes[name])) for name in tables}
    return Snapshot(tables, views, sequences, definitions)


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    """How ``after`` differs from ``before``, one short phrase each, stable order.

    Columns and indexes are compared for the tables in both whose definitions differ
    (the others are the same tables: they add nothing to either side).
    """
    found: list[str] = []
    for kind, was, now in (
        ("table", before.tables, after.tables),
        ("view", before.views, after.views),
        ("sequence", before.sequences, after.sequences),
    ):
        found += [f"{kind} '{name}' left behind" for name in sorted(now - was)]
        found += [f"{kind} '{name}' missing" for name in sorted(was - now)]
    old_cols: dict[tuple[str, str], str] = {}
    new_cols: dict[tuple[str, str], str] = {}
    old_idx: set[tuple[str, str, tuple[str, ...], bool]] = set()
    new_idx: set[tuple[str, str, tuple[str, ...], bool]] = set()
    unreadable = []
    for table in sorted(before.tables & after.tables):
        if before.definitions[table] == after.definitions[table]:
            continue
        try:
            old, new = before.shape(table), after.shape(table)
        except sqlite3.Error as exc:  # texts SQLite keeps but will not run afresh (a collation only the host has)
            unreadable.append(f"table '{table}' is defined differently and cannot be compared ({exc})")
            continue
        old_cols.update(((table, column), declared) for column, declared in old.columns)
        new_cols.update(((table, column), declared) for column, declared in new.columns)
        old_idx.update((table, *index) for index in old.indexes)
        new_idx.update((table, *index) for index in new.indexes)
    for key in sorted(new_cols.keys() - old_cols.keys()):
        found.append(f"column '{key[0]}.{key[1]}' left behind")
    for key in sorted(old_cols.keys() - new_cols.keys()):
        found.append(f"column '{key[0]}.{key[1]}' missing")
    for key in sorted(old_cols.keys() & new_cols.keys()):
        if old_cols[key] != new_cols[key]:
            found.append(f"column '{key[0]}.{key[1]}' is {new_cols[key]}, was {old_cols[key]}")
    for table, name, _cols, _unique in sorted(new_idx - old_idx):
        found.append(f"index '{name}' on '{table}' left behind or changed")
    for table, name, _cols, _unique in sorted(old_idx - new_idx):
        found.append(f"index '{name}' on '{table}' missing or changed")
    return found + unreadable
