"""The reversibility rehearsal: downs must put the schema back, checked before COMMIT."""

from __future__ import annotations

from pathlib import Path

import pytest
from db_fixtures import make_tree, table_names, change_of

from atomicplug.config import Config
from atomicplug.errors import MigrationError
from atomicplug.stages.migrate import committed, run

LEDGER = {"atomicplug_migrations", "atomicplug_transactions"}


def change(tree: Path) -> list[Any]:
    return [change_of("p1", "install", new_tree=tree, new_version="1.0.0")]


def test_down_that_leaves_a_table_behind_is_refused(tmp_path: Path, database_url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    tree = make_tree(
        tmp_path,
        files={
            "migrations/up.sql": "CREATE TABLE kept (id INTEGER);\nCREATE TABLE leftover (id INTEGER);",
            "migrations/down.sql": "DROP TABLE kept;",
        },
    )
    with pytest.raises(MigrationError, match=r"^plugin p1: down migrations do not restore the schema: table 'leftover' left behind"):
        run(config, "tx-1", "install", change(tree))
    assert table_names(database_url) == set()
    assert committed(config, "tx-1") is False


def test_down_that_forgets_a_column_or_index_is_refused(tmp_path: Path, database_url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    v1 = make_tree(tmp_path, files={"migrations/0001_a.up.sql": "CREATE TABLE a (id INTEGER);", "migrations/0001_a.down.sql": "DROP TABLE a;"})
    run(config, "tx-1", "install", change(v1))
    v2 = make_tree(
        tmp_path,
        version="2.0.0",
        files={
            "migrations/0001_a.up.sql": "CREATE TABLE a (id INTEGER);",
            "migrations/0001_a.down.sql": "DROP TABLE a;",
            "migrations/0002_b.up.sql": "ALTER TABLE a ADD COLUMN extra INTEGER;\nCREATE INDEX ix_a_id ON a (id);",
            "migrations/0002_b.down.sql": "SELECT 1;",
        },
    )
    upgrade = [change_of("p1", "upgrade", v1, v2, "1.0.0", "2.0.0")]
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
