"""backend/install.py hooks run inside the one transaction."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from db_fixtures import make_tree, query, table_names, change_of

from atomicplug.config import Config
from atomicplug.errors import MigrationError
from atomicplug.stages.migrate import committed, run

MIGRATION = {
    "migrations/0001_items.up.sql": "CREATE TABLE items (id INTEGER PRIMARY KEY, note VARCHAR(80));",
    "migrations/0001_items.down.sql": "DROP TABLE items;",
}

HOOKS = '''
from sqlalchemy import text

def install(conn, ctx):
    conn.execute(text("INSERT INTO items (id, note) VALUES (1, :n)"), {"n": f"install {ctx.plugin_id} {ctx.version} {ctx.txid} {ctx.operation}"})

def upgrade(conn, ctx, from_version):
    conn.execute(text("INSERT INTO items (id, note) VALUES (2, :n)"), {"n": f"upgrade from {from_version} to {ctx.version}"})

def uninstall(conn, ctx):
    # runs before the downs: the table is still there
    count = conn.execute(text("SELECT COUNT(*) FROM items")).scalar_one()
    conn.execute(text("CREATE TABLE farewell (n INTEGER)"))
    conn.execute(text("INSERT INTO farewell VALUES (:n)"), {"n": count})
'''


def tree_with(tmp_path: Path, hooks: str, version: str = "1.0.0", files: dict[str, str] | None = None) -> Path:
    return make_tree(tmp_path, version=version, files={**MIGRATION, **(files or {}), "backend/install.py": hooks})


def test_install_hook_runs_after_the_ups_with_context(tmp_path: Path, database_url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    before = set(sys.modules)
    run(config, "tx-1", "install", [change_of("p1", "install", new_tree=tree_with(tmp_path, HOOKS), new_version="1.0.0")])
    assert query(database_url, "SELECT note FROM items") == [("install p1 1.0.0 tx-1 install",)]
    assert not [m for m in set(sys.modules) - before if "atomicplug_hook" in m]


def test_upgrade_hook_gets_the_previous_version(tmp_path: Path, database_url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    v1 = tree_with(tmp_path, HOOKS)
    run(config, "tx-1", "install", [change_of("p1", "install", new_tree=v1, new_version="1.0.0")])
    v2 = tree_with(tmp_path, HOOKS, version="1.1.0")
    run(config, "tx-2", "upgrade", [change_of("p1", "upgrade", v1, v2, "1.0.0", "1.1.0")])
    assert ("upgrade from 1.0.0 to 1.1.0",) in query(database_url, "SELECT note FROM items")


def test_uninstall_hook_runs_before_the_downs(tmp_path: Path, database_url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    tree = tree_with(tmp_path, HOOKS)
    run(config, "tx-1", "install", [change_of("p1", "install", new_tree=tree, new_version="1.0.0")])
    run(config, "tx-2", "uninstall", [change_of("p1", "uninstall", old_tree=tree, old_version="1.0.0")])
    assert "items" not in table_names(database_url)
    assert query(database_url, "SELECT n FROM farewell") == [(1,)]


def test_failing_hook_rolls_everything_back_and_its_message_surfaces(tmp_path: Path, database_url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    hooks = (
        "from sqlalchemy import text\n"
        "def install(conn, ctx):\n"
        "    conn.execute(text(\"INSERT INTO items (id, note) VALUES (1, 'x')\"))\n"
        "    raise ValueError('licence server said no\\nsecond line')\n"
    )
    changes = [change_of("p1", "install", new_tree=tree_with(tmp_path, hooks), new_version="1.0.0")]
    with pytest.raises(MigrationError) as info:
        run(config, "tx-1", "install", changes)
    assert str(info.value) == "plugin p1: install hook failed: licence server said no"
    assert info.value.exit_code == 1
    assert table_names(database_url) == set()
    assert committed(config, "tx-1") is False


def test_hook_that_fails_to_import_is_reported(tmp_path: Path, database_url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    changes = [change_of("p1", "install", new_tree=tree_with(tmp_path, "import no_such_module_xyz\n"), new_version="1.0.0")]
    with pytest.raises(MigrationError, match="plugin p1: install hook failed: No module named 'no_such_module_xyz'"):
        run(config, "tx-1", "install", changes)
    assert table_names(database_url) == set()


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        ("    conn.commit()\n", "install hooks must not commit"),
        # A rollback from inside would undo the migrations and leave the rest running unprotected.
        ("    conn.execute(text('SELECT 1'))\n    conn.rollback()\n", "install hooks must not roll back"),
    ],
    ids=["commit", "rollback"],
)
def test_hook_may_not_end_the_transaction(tmp_path: Path, database_url: str, body: str, refusal: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    hooks = "from sqlalchemy import text\ndef install(conn, ctx):\n" + body
    changes = [change_of("p1", "install", new_tree=tree_with(tmp_path, hooks), new_version="1.0.0")]
    with pytest.raises(MigrationError, match=f"install hook failed: {refusal}"):
        run(config, "tx-1", "install", changes)
    assert table_names(database_url) == set()
    assert committed(config, "tx-1") is False


def test_hook_that_sends_commit_itself_is_caught_by_the_open_transaction_check(tmp_path: Path, database_url: str) -> None:
    """SQL sent by a hook is not parsed (it is Python): the transaction must still be open after it."""
    config = Config.for_directory(tmp_path, database_url=database_url)
    hooks = "def install(conn, ctx):\n    conn.exec_driver_sql('COMMIT')\n"
    changes = [change_of("p1", "install", new_tree=tree_with(tmp_path, hooks), new_version="1.0.0")]
    with pytest.raises(MigrationError, match="^plugin p1: the install hook ended atomicplug's database transaction$"):
        run(config, "tx-1", "install", changes)
    assert committed(config, "tx-1") is False  # the ledger row of tx-1 was never written
