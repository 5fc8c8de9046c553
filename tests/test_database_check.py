"""check(): plan-time refusals, before any file or row changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from db_fixtures import make_tree, table_names

from atomicplug.config import Config
from atomicplug.errors import ConfigError, MigrationError, PermissionRefusedError
from atomicplug.stages.migrate import PluginChange, check, run


def install_change(tree: Path, plugin: str = "p1") -> list[PluginChange]:
    return [PluginChange(plugin, "install", new_tree=tree, new_version="1.0.0")]


@pytest.mark.parametrize(
    "url",
    ["mysql://u:p@localhost/app", "mysql+pymysql://u:p@localhost/app", "mariadb+mariadbconnector://u@h/app"],
)
def test_mysql_and_mariadb_are_refused_because_their_ddl_autocommits(tmp_path: Path, url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=url)
    with pytest.raises(ConfigError, match="DDL commits implicitly") as info:
        check(config, install_change(make_tree(tmp_path)))
    assert info.value.exit_code == 2


def test_in_memory_sqlite_is_refused(tmp_path: Path) -> None:
    config = Config.for_directory(tmp_path, database_url="sqlite://")
    with pytest.raises(ConfigError, match="in-memory"):
        check(config, [])


@pytest.mark.parametrize(
    ("statement", "where"),
    [
        ("CREATE INDEX CONCURRENTLY ix ON a (id)", "up"),
        ("VACUUM", "up"),
        ("CREATE DATABASE other", "up"),
        ("ALTER SYSTEM SET work_mem = '1MB'", "up"),
        ("CREATE TABLESPACE ts LOCATION '/tmp/ts'", "up"),
        ("REINDEX TABLE CONCURRENTLY a", "down"),
        ("COMMIT", "up"),
    ],
)
def test_non_transactional_statement_is_refused_at_check_naming_plugin_and_file(
    tmp_path: Path, database_url: str, statement: str, where: str
) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    up = "CREATE TABLE a (id INTEGER);\n"
    down = "DROP TABLE a;\n"
    if where == "up":
        up += f"{statement};\n"
    else:
        down = f"{statement};\n" + down
    tree = make_tree(tmp_path, files={"migrations/0001_a.up.sql": up, "migrations/0001_a.down.sql": down})
    line = 2 if where == "up" else 1
    with pytest.raises(MigrationError, match=rf"^plugin p1: migrations/0001_a\.{where}\.sql statement {line}: "):
        check(config, install_change(tree))
    # nothing changed: check() never writes (on SQLite it does not even create the file)
    if database_url.startswith("sqlite"):
        assert not (tmp_path / "app.db").exists()
    assert table_names(database_url) == set()


def test_missing_down_is_refused_at_check(tmp_path: Path, database_url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    tree = make_tree(tmp_path, files={"migrations/0001_a.up.sql": "CREATE TABLE a (id INTEGER);"})
    with pytest.raises(MigrationError, match="has no 0001_a.down.sql"):
        check(config, install_change(tree))


def test_migrations_without_database_permission_are_refused(tmp_path: Path, database_url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    tree = make_tree(
        tmp_path,
        files={"migrations/up.sql": "CREATE TABLE a (id INTEGER);", "migrations/down.sql": "DROP TABLE a;"},
        permissions=["api.routes"],
    )
    with pytest.raises(PermissionRefusedError, match="'database.create_tables'") as info:
        check(config, install_change(tree))
    assert info.value.exit_code == 3
    assert "plugin p1" in str(info.value)


def test_install_hook_without_database_permission_is_refused(tmp_path: Path) -> None:
    config = Config.for_directory(tmp_path)
    tree = make_tree(tmp_path, files={"backend/install.py": "def install(conn, ctx):\n    pass\n"}, permissions=[])
    with pytest.raises(PermissionRefusedError, match="database.create_tables"):
        check(config, install_change(tree))


def test_declared_permission_that_is_not_granted_is_refused(tmp_path: Path) -> None:
    config = Config.for_directory(tmp_path, granted_permissions=["database.create_tables", "api.routes"])
    tree = make_tree(
        tmp_path,
        files={"migrations/up.sql": "CREATE TABLE a (id INTEGER);", "migrations/down.sql": "DROP TABLE a;"},
        permissions=["database.create_tables", "network.outbound"],
    )
    with pytest.raises(PermissionRefusedError, match="'network.outbound'") as info:
        check(config, install_change(tree))
    assert info.value.exit_code == 3


def test_database_permission_itself_must_be_granted(tmp_path: Path) -> None:
    config = Config.for_directory(tmp_path, granted_permissions=["api.routes"])
    tree = make_tree(
        tmp_path, files={"migrations/up.sql": "CREATE TABLE a (id INTEGER);", "migrations/down.sql": "DROP TABLE a;"}
    )
    with pytest.raises(PermissionRefusedError, match="'database.create_tables', which is not granted"):
        check(config, install_change(tree))


def test_plugin_without_migrations_needs_no_database_permission(tmp_path: Path, database_url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    tree = make_tree(tmp_path, files={"backend/__init__.py": ""}, permissions=[])
    check(config, install_change(tree))
    if database_url.startswith("sqlite"):
        assert not (tmp_path / "app.db").exists()


def test_uninstall_of_migration_missing_from_installed_tree_is_refused(tmp_path: Path, database_url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    files = {
        "migrations/0001_a.up.sql": "CREATE TABLE a (id INTEGER);",
        "migrations/0001_a.down.sql": "DROP TABLE a;",
        "migrations/0002_b.up.sql": "CREATE TABLE b (id INTEGER);",
        "migrations/0002_b.down.sql": "DROP TABLE b;",
    }
    v2 = make_tree(tmp_path, version="2.0.0", files=files)
    run(config, "tx-1", "install", install_change(v2))
    v1 = make_tree(tmp_path, files={k: v for k, v in files.items() if "0001" in k})
    with pytest.raises(MigrationError, match="applied migration 0002_b is not in the installed tree"):
        check(config, [PluginChange("p1", "uninstall", old_tree=v1, old_version="1.0.0")])
