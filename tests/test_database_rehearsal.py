"""The reversibility rehearsal: downs must put the schema back, checked before COMMIT."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import attrs
import pytest
from db_fixtures import change_of, execute, make_tree, table_names

from atomicplug.config import Config
from atomicplug.database import schema
from atomicplug.errors import MigrationError
from atomicplug.stages.migrate import committed, run

LEDGER = {"atomicplug_migrations", "atomicplug_transactions"}


def change(tree: Path) -> list[Any]:
    return [change_of("p1", "install", new_tree=tree, new_version="1.0.0")]


def _install_refused(tmp_path: Path, database_url: str, up: str, down: str, match: str) -> None:
    """Installing a plugin with ``up``/``down`` is refused with ``match``, and nothing is committed."""
    config = Config.for_directory(tmp_path, database_url=database_url)
    tree = make_tree(tmp_path, files={"migrations/up.sql": up, "migrations/down.sql": down})
    with pytest.raises(MigrationError, match=match):
        run(config, "tx-1", "install", change(tree))
    assert table_names(database_url) == set()
    assert committed(config, "tx-1") is False


def test_down_that_leaves_a_table_behind_is_refused(tmp_path: Path, database_url: str) -> None:
    _install_refused(
        tmp_path, database_url, "CREATE TABLE kept (id INTEGER);\nCREATE TABLE leftover (id INTEGER);", "DROP TABLE kept;",
        r"^plugin p1: down migrations do not restore the schema: table 'leftover' left behind",
    )  # fmt: skip


def _installed_then_upgrade(config: Config, root: Path, v1_files: dict[str, str], up: str, down: str) -> list[Any]:
    """Install 1.0.0 (``v1_files``); the upgrade to 2.0.0, which adds migration 0002_b (``up``, ``down``)."""
    v1 = make_tree(root, files=v1_files)
    run(config, "tx-1", "install", change(v1))
    v2 = make_tree(root, version="2.0.0", files={**v1_files, "migrations/0002_b.up.sql": up, "migrations/0002_b.down.sql": down})
    return [change_of("p1", "upgrade", v1, v2, "1.0.0", "2.0.0")]


def test_down_that_forgets_a_column_or_index_is_refused(tmp_path: Path, database_url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    v1 = {"migrations/0001_a.up.sql": "CREATE TABLE a (id INTEGER);", "migrations/0001_a.down.sql": "DROP TABLE a;"}
    upgrade = _installed_then_upgrade(config, tmp_path, v1, "ALTER TABLE a ADD COLUMN extra INTEGER;\nCREATE INDEX ix_a_id ON a (id);", "SELECT 1;")
    with pytest.raises(MigrationError) as info:
        run(config, "tx-2", "upgrade", upgrade)
    assert "column 'a.extra' left behind" in str(info.value)
    assert "index 'ix_a_id' on 'a' left behind" in str(info.value)


def test_down_that_fails_is_refused_naming_the_statement(tmp_path: Path, database_url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    tree = make_tree(
        tmp_path,
        files={"migrations/0001_a.up.sql": "CREATE TABLE a (id INTEGER);", "migrations/0001_a.down.sql": "DROP TABLE a;\nDROP TABLE not_there;"},
    )
    with pytest.raises(MigrationError) as info:
        run(config, "tx-1", "install", change(tree))
    message = str(info.value)
    assert message.startswith("plugin p1: down migrations fail in the reversibility rehearsal: migrations/0001_a.down.sql statement 2 failed: ")
    assert "not_there" in message
    assert table_names(database_url) == set()


@pytest.mark.parametrize(
    "down", ["DROP TABLE kept;", "DROP TABLE kept;\nDROP TABLE not_there;"], ids=["leaves-table", "fails"]
)
def test_no_rehearse_lets_an_irreversible_plugin_through(tmp_path: Path, database_url: str, down: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    tree = make_tree(
        tmp_path,
        files={"migrations/up.sql": "CREATE TABLE kept (id INTEGER);\nCREATE TABLE leftover (id INTEGER);", "migrations/down.sql": down},
    )
    run(config, "tx-1", "install", change(tree), rehearse=False)
    assert table_names(database_url) == {"kept", "leftover"} | LEDGER
    assert committed(config, "tx-1")


def test_rehearsal_leaves_the_applied_schema_and_data_in_place(tmp_path: Path, database_url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    tree = make_tree(
        tmp_path,
        files={
            "migrations/up.sql": "CREATE TABLE a (id INTEGER PRIMARY KEY, v VARCHAR(10));\nCREATE INDEX ix_v ON a (v);\nINSERT INTO a VALUES (1, 'x');",
            "migrations/down.sql": "DROP INDEX ix_v;\nDROP TABLE a;",
        },
    )
    run(config, "tx-1", "install", change(tree))
    from db_fixtures import query

    assert query(database_url, "SELECT id, v FROM a") == [(1, "x")]


def _other_table(database_url: str) -> None:
    """A table the plugin never created (another plugin's, the host's), with an index."""
    execute(database_url, "CREATE TABLE other (id INTEGER PRIMARY KEY, name VARCHAR(20))")
    execute(database_url, "CREATE INDEX ix_other_name ON other (name)")


@pytest.mark.parametrize(
    "down, found",
    [
        ("DROP TABLE a;\nDROP TABLE other;", "table 'other' missing"),
        ("DROP TABLE a;\nALTER TABLE other ADD COLUMN extra INTEGER;", "column 'other.extra' left behind"),
        ("DROP TABLE a;\nDROP INDEX ix_other_name;", "index 'ix_other_name' on 'other' missing or changed"),
    ],
    ids=["drops", "adds-a-column", "drops-an-index"],
)
def test_down_that_touches_a_table_it_never_created_is_refused(tmp_path: Path, database_url: str, down: str, found: str) -> None:
    """Issue 14: the snapshot reads SQLite's schema texts in one query, and still covers every table."""
    _other_table(database_url)
    config = Config.for_directory(tmp_path, database_url=database_url)
    tree = make_tree(tmp_path, files={"migrations/up.sql": "CREATE TABLE a (id INTEGER);", "migrations/down.sql": down})
    with pytest.raises(MigrationError) as info:
        run(config, "tx-1", "install", change(tree))
    assert str(info.value).startswith(f"plugin p1: down migrations do not restore the schema: {found}")
    assert table_names(database_url) == {"other"}


_V1 = {
    "migrations/0001_a.up.sql": "CREATE TABLE a (id INTEGER PRIMARY KEY, v VARCHAR(10));\nCREATE INDEX ix_a_v ON a (v);",
    "migrations/0001_a.down.sql": "DROP TABLE a;",
}


def _rebuilding_down(v_type: str) -> str:
    """A down that rebuilds ``a`` under another name and renames it back: SQLite then keeps other texts for it."""
    return (
        f'CREATE TABLE a_old ("id" INTEGER PRIMARY KEY,   "v" {v_type});\n'
        "INSERT INTO a_old (id, v) SELECT id, v FROM a;\n"
        "DROP TABLE a;\n"
        "ALTER TABLE a_old RENAME TO a;\n"
        "CREATE INDEX ix_a_v ON a(v);"
    )


@pytest.mark.parametrize("v_type, found", [("VARCHAR(10)", None), ("TEXT", "column 'a.v' is TEXT, was ")], ids=["same", "other-type"])
def test_a_table_rebuilt_by_a_down_is_compared_by_its_columns_not_its_text(
    tmp_path: Path, database_url: str, v_type: str, found: str | None
) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    upgrade = _installed_then_upgrade(config, tmp_path, _V1, "ALTER TABLE a ADD COLUMN extra INTEGER;", _rebuilding_down(v_type))
    if found is None:
        run(config, "tx-2", "upgrade", upgrade)
        assert committed(config, "tx-2")
        return
    with pytest.raises(MigrationError) as info:
        run(config, "tx-2", "upgrade", upgrade)
    assert f"do not restore the schema: {found}" in str(info.value)


@pytest.mark.parametrize(
    "table, sql, indexes",
    [
        ("plain", "CREATE TABLE plain (id INTEGER PRIMARY KEY, v VARCHAR(10) UNIQUE, w)", ["CREATE INDEX ix_plain ON plain (w DESC, v)"]),
        ("odd name", 'CREATE TABLE "odd name" ("a b" text NOT NULL, c INTEGER, PRIMARY KEY ("a b")) WITHOUT ROWID', []),
        ("counted", "CREATE TABLE counted (id INTEGER PRIMARY KEY AUTOINCREMENT, n INT, doubled INT GENERATED ALWAYS AS (n * 2))", []),
        ("exprs", "CREATE TABLE exprs (v TEXT, n INTEGER) STRICT", ["CREATE UNIQUE INDEX ix_exprs ON exprs (lower(v), n) WHERE n > 0"]),
    ],
)
def test_a_sqlite_tables_shape_read_from_its_texts_is_the_one_the_database_describes(
    tmp_path: Path, table: str, sql: str, indexes: list[str]
) -> None:
    """What the rehearsal rests on: SQLite builds a table from its texts, so describing them afresh
    gives the columns and indexes the database itself lists."""
    db = sqlite3.connect(tmp_path / "app.db")
    for statement in [sql, *indexes]:
        db.execute(statement)
    columns = {(str(name), str(declared).upper()) for name, declared in db.execute("SELECT name, type FROM pragma_table_info(?)", [table])}
    listed = {
        (name, bool(unique)): tuple(str(column) for _, column in sorted(db.execute("SELECT seqno, name FROM pragma_index_info(?)", [name])))
        for name, unique in db.execute("SELECT name, \"unique\" FROM pragma_index_list(?) WHERE origin = 'c'", [table])
    }
    stored = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL", [table]))
    db.close()
    shape = schema._sqlite_shape(table, stored.pop(table), tuple(sorted(stored.items())))
    assert shape.columns == columns
    assert shape.indexes == {(name, cols, unique) for (name, unique), cols in listed.items()}


def test_a_table_whose_texts_sqlite_cannot_run_afresh_counts_as_changed() -> None:
    """A collation only the host registers: its texts cannot be described in a scratch database,
    so a down that changed them is refused rather than passed unchecked."""
    text = "CREATE TABLE t (v TEXT COLLATE host_only)"
    before = schema.Snapshot(frozenset({"t"}), frozenset(), frozenset(), {"t": (text, ())}, "sqlite")
    assert schema.differences(before, before) == []  # equal texts: nothing to describe
    after = attrs.evolve(before, definitions={"t": (text[:-1] + ", w INTEGER)", ())})
    assert schema.differences(before, after) == [
        "table 't' is defined differently and cannot be compared (no such collation sequence: host_only)"
    ]


def test_a_down_that_ends_the_whole_transaction_is_reported_for_itself(tmp_path: Path) -> None:
    """Found from outside: a down statement that makes SQLite drop the whole transaction (`OR ROLLBACK`,
    and likewise a full disk or a lost connection) was reported as "no such savepoint:
    atomicplug_rehearsal": rolling back to the savepoint failed too, and its error replaced the real one."""
    _install_refused(
        tmp_path, f"sqlite:///{tmp_path / 'app.db'}",
        "CREATE TABLE u (id INTEGER PRIMARY KEY);\nINSERT INTO u VALUES (1);", "INSERT OR ROLLBACK INTO u VALUES (1);\nDROP TABLE u;",
        r"down migrations fail in the reversibility rehearsal: .*UNIQUE constraint failed: u\.id",
    )  # fmt: skip
