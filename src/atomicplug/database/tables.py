"""Which tables and columns migrations create, read with the databases' own parsers, and which still exist.

The dry run (docs/design.md "Dry run") tells an admin what an uninstall or a
downgrade would drop: the tables the reverted migrations' ups created (and the
columns they added to other tables) that exist in the database now. The ups
are read the way the database reads them, never with a regex:

- PostgreSQL: each statement's libpg_query parse tree (pglast): CreateStmt,
  CREATE TABLE … AS, SELECT … INTO, DROP TABLE, ALTER TABLE … RENAME TO,
  ADD/DROP COLUMN. Temporary tables do not count.
- SQLite: the words of SQLite's tokenizer (:func:`atomicplug.database.scripts.sqlite_tokens`):
  ``CREATE [VIRTUAL] TABLE [IF NOT EXISTS] name``, ``DROP TABLE``,
  ``ALTER TABLE … RENAME TO / ADD / DROP / RENAME COLUMN``.

A table created and dropped again by the same migrations is no table of
theirs; a renamed one counts under its new name. SQLite names compare without
case, as SQLite does; PostgreSQL's parser has already folded unquoted names.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from atomicplug.database.scripts import Statement, sqlite_tokens

if TYPE_CHECKING:
    from atomicplug.database.discovery import Migration
    from atomicplug.database.engine import Database

__all__ = ["Created", "TableName", "created_by", "existing_tables", "existing_columns"]

#: (schema, table): schema None when the script does not name one (the captured schema).
TableName = tuple[str | None, str]


@attrs.frozen
class Created:
    """What some migrations' ups created: tables (in creation order) and columns added to other tables."""

    tables: tuple[TableName, ...] = ()
    columns: tuple[tuple[TableName, str], ...] = ()


class _Tracker:
    """Tables and added columns, net of drops and renames, as statements are read in order."""

    def __init__(self, dialect: str) -> None:
        self.folds = dialect == "sqlite"  # SQLite compares names without case
        self.tables: dict[tuple[str | None, str], TableName] = {}
        self.columns: dict[tuple[tuple[str | None, str], str], tuple[TableName, str]] = {}

    def fold(self, name: str) -> str:
        return name.lower() if self.folds else name

    def key(self, table: TableName) -> tuple[str | None, str]:
        schema, name = table
        return (self.fold(schema) if schema else None, self.fold(name))

    def create(self, table: TableName) -> None:
        self.tables.setdefault(self.key(table), table)

    def drop(self, table: TableName) -> None:
        self.tables.pop(self.key(table), None)
        for key in [k for k in self.columns if k[0] == self.key(table)]:
            del self.columns[key]

    def rename(self, table: TableName, new: str) -> None:
        renamed = (table[0], new)
        if self.tables.pop(self.key(table), None) is not None:
            self.tables[self.key(renamed)] = renamed
        for key in [k for k in self.columns if k[0] == self.key(table)]:
            _, column = self.columns.pop(key)
            self.columns[(self.key(renamed), key[1])] = (renamed, column)

    def add_column(self, table: TableName, column: str) -> None:
        if self.key(table) not in self.tables:  # a column of a table these scripts made goes with it
            self.columns.setdefault((self.key(table), self.fold(column)), (table, column))

    def drop_column(self, table: TableName, column: str) -> None:
        self.columns.pop((self.key(table), self.fold(column)), None)

    def result(self) -> Created:
        return Created(tables=tuple(self.tables.values()), columns=tuple(self.columns.values()))


def created_by(migrations: Sequence[Migration], dialect: str) -> Created:
    """The tables and columns the ups of ``migrations`` (in the order they ran) created.

    Raises MigrationError when an up script does not parse (as the transaction would).
    """
    tracker = _Tracker(dialect)
    read = _read_postgresql if dialect == "postgresql" else _read_sqlite
    for migration in migrations:
        for statement in migration.statements("up", dialect):
            read(tracker, statement)
    return tracker.result()


# -- PostgreSQL: the parse tree ------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _pg_tree(sql: str) -> dict[str, Any]:
    from pglast.parser import parse_sql_json

    stmts = json.loads(parse_sql_json(sql)).get("stmts", [])
    return stmts[0]["stmt"] if stmts else {}


def _relation(rel: dict[str, Any]) -> TableName:
    return (rel.get("schemaname"), rel["relname"])


def _read_postgresql(tracker: _Tracker, statement: Statement) -> None:
    tree = _pg_tree(statement.sql)
    if not tree:
        return
    ((kind, node),) = tree.items()
    if kind == "CreateStmt" and node["relation"].get("relpersistence") != "t":
        tracker.create(_relation(node["relation"]))
    elif kind == "CreateTableAsStmt" and node.get("objtype") == "OBJECT_TABLE" and node["into"]["rel"].get("relpersistence") != "t":
        tracker.create(_relation(node["into"]["rel"]))
    elif kind == "SelectStmt" and "intoClause" in node and node["intoClause"]["rel"].get("relpersistence") != "t":
        tracker.create(_relation(node["intoClause"]["rel"]))
    elif kind == "DropStmt" and node.get("removeType") == "OBJECT_TABLE":
        for item in node.get("objects", []):
            names = [part["String"]["sval"] for part in item.get("List", {}).get("items", [])]
            if names:
                tracker.drop((names[-2] if len(names) > 1 else None, names[-1]))
    elif kind == "RenameStmt" and node.get("renameType") == "OBJECT_TABLE":
        tracker.rename(_relation(node["relation"]), node["newname"])
    elif kind == "RenameStmt" and node.get("renameType") == "OBJECT_COLUMN":
        table = _relation(node["relation"])
        tracker.drop_column(table, node["subname"])
        tracker.add_column(table, node["newname"])
    elif kind == "AlterTableStmt" and node.get("objtype", "OBJECT_TABLE") == "OBJECT_TABLE":
        table = _relation(node["relation"])
        for command in node.get("cmds", []):
            cmd = command.get("AlterTableCmd", {})
            if cmd.get("subtype") == "AT_AddColumn":
                tracker.add_column(table, cmd["def"]["ColumnDef"]["colname"])
            elif cmd.get("subtype") == "AT_DropColumn":
                tracker.drop_column(table, cmd["name"])


# -- SQLite: the tokenizer's words -----------------------------------------------------------


def _unquote(text: str) -> str:
    if text[:1] in "\"'`" and len(text) >= 2:
        return text[1:-1].replace(text[0] * 2, text[0])
    if text[:1] == "[":
        return text[1:-1]
    return text


def _read_sqlite(tracker: _Tracker, statement: Statement) -> None:
    sql = statement.sql
    tokens = [(word, _unquote(sql[start:end])) for start, end, word in sqlite_tokens(sql)]
    words = [word for word, _ in tokens]

    def name_at(i: int) -> tuple[TableName | None, int]:
        """The (schema, table) starting at token ``i`` and the index after it; None for a temp table."""
        if i + 2 < len(tokens) and words[i + 1] == ".":
            schema = tokens[i][1]
            if schema.lower() == "temp":
                return None, i + 3
            return (None if schema.lower() == "main" else schema, tokens[i + 2][1]), i + 3
        return ((None, tokens[i][1]) if i < len(tokens) else None), i + 1

    def skip(i: int, *sequence: str) -> int:
        return i + len(sequence) if words[i : i + len(sequence)] == list(sequence) else i

    if words[:1] == ["CREATE"]:
        i = 1
        if words[i : i + 1] in (["TEMP"], ["TEMPORARY"]):
            return
        i = skip(i, "VIRTUAL")
        if words[i : i + 1] == ["TABLE"]:
            table, _ = name_at(skip(i + 1, "IF", "NOT", "EXISTS"))
            if table is not None:
                tracker.create(table)
    elif words[:2] == ["DROP", "TABLE"]:
        table, _ = name_at(skip(2, "IF", "EXISTS"))
        if table is not None:
            tracker.drop(table)
    elif words[:2] == ["ALTER", "TABLE"]:
        table, i = name_at(2)
        if table is None:
            return
        rest = words[i:]
        if rest[:2] == ["RENAME", "TO"] and len(tokens) > i + 2:
            tracker.rename(table, tokens[i + 2][1])
        elif rest[:1] == ["ADD"]:
            j = skip(i + 1, "COLUMN")
            if j < len(tokens):
                tracker.add_column(table, tokens[j][1])
        elif rest[:1] == ["DROP"]:
            j = skip(i + 1, "COLUMN")
            if j < len(tokens):
                tracker.drop_column(table, tokens[j][1])
        elif rest[:1] == ["RENAME"]:
            j = skip(i + 1, "COLUMN")
            if j + 2 < len(tokens) and words[j + 1] == "TO":
                tracker.drop_column(table, tokens[j][1])
                tracker.add_column(table, tokens[j + 2][1])


# -- what the database holds now ------------------------------------------------------------


def existing_tables(db: Database, tables: Iterable[TableName]) -> set[TableName]:
    """Which of ``tables`` exist (an unnamed schema is the captured one; SQLite: ``main``)."""
    wanted = list(dict.fromkeys(tables))
    if not wanted:
        return set()
    if db.backend == "sqlite":
        present = {name.lower() for (name,) in db.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'")}
        return {t for t in wanted if t[1].lower() in present}
    names = sorted({name for _, name in wanted})
    rows = db.execute(
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p') AND c.relname IN ({', '.join('?' for _ in names)})",
        names,
    )
    present_pg = {(schema, name) for schema, name in rows}
    return {t for t in wanted if ((t[0] or db.schema), t[1]) in present_pg}


def existing_columns(db: Database, table: TableName) -> set[str]:
    """The columns ``table`` has now (SQLite: lower-cased, as SQLite compares them)."""
    if db.backend == "sqlite":
        return {name.lower() for (name,) in db.execute("SELECT name FROM pragma_table_info(?)", [table[1]])}
    rows = db.execute(
        "SELECT a.attname FROM pg_catalog.pg_attribute AS a JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid "
        "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ? AND c.relname = ? AND a.attnum > 0 AND NOT a.attisdropped",
        [table[0] or db.schema, table[1]],
    )
    return {name for (name,) in rows}
