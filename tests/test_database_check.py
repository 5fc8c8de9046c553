"""check(): the database step's refusals, before any row changes; a package's permissions before the transaction."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import pytest
from db_fixtures import make_tree, query, table_names, change_of

from atomicplug.config import Config
from atomicplug.errors import ConfigError, MigrationError, PermissionRefusedError
from atomicplug.stages.migrate import check, committed, run


def install_change(tree: Path, plugin: str = "p1") -> list[Any]:
    return [change_of(plugin, "install", new_tree=tree, new_version="1.0.0")]


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


_PG = pytest.mark.postgres
REFUSED = [
    pytest.param("postgresql", "CREATE INDEX CONCURRENTLY ix ON a (id)", "up", marks=_PG),
    pytest.param("postgresql", "VACUUM", "up", marks=_PG),
    pytest.param("postgresql", "CREATE DATABASE other", "up", marks=_PG),
    pytest.param("postgresql", "ALTER SYSTEM SET work_mem = '1MB'", "up", marks=_PG),
    pytest.param("postgresql", "CREATE TABLESPACE ts LOCATION '/tmp/ts'", "up", marks=_PG),
    pytest.param("postgresql", "REINDEX TABLE CONCURRENTLY a", "down", marks=_PG),
    pytest.param("postgresql", "COMMIT", "up", marks=_PG),
    pytest.param("postgresql", "SET synchronous_commit = off", "up", marks=_PG),
    ("sqlite", "VACUUM", "up"),
    ("sqlite", "ATTACH DATABASE 'other.db' AS other", "up"),
    ("sqlite", "PRAGMA journal_mode = WAL", "up"),
    ("sqlite", "RELEASE sp", "down"),
    ("sqlite", "COMMIT", "up"),
]


@pytest.mark.parametrize(("database_factory", "statement", "where"), REFUSED, indirect=["database_factory"])
def test_non_transactional_statement_is_refused_at_check_naming_plugin_file_and_statement(
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
    quoted = re.escape(f"`{statement}` is refused: ")
    with pytest.raises(MigrationError, match=rf"^plugin p1: migrations/0001_a\.{where}\.sql statement {line} {quoted}"):
        check(config, install_change(tree))
    # nothing changed: check() never writes (on SQLite it does not even create the file)
    if database_url.startswith("sqlite"):
        assert not (tmp_path / "app.db").exists()
    assert table_names(database_url) == set()


BYPASS = "CREATE TABLE shifts (id INTEGER, begin TIMESTAMP); COMMIT; CREATE TABLE later (id INTEGER);"


def test_commit_hidden_after_a_column_named_begin_is_refused_at_check(tmp_path: Path, database_url: str) -> None:
    """The reported bypass: sqlparse kept it as one chunk, psycopg2 ran it whole, the COMMIT escaped."""
    config = Config.for_directory(tmp_path, database_url=database_url)
    tree = make_tree(tmp_path, files={"migrations/up.sql": BYPASS, "migrations/down.sql": "DROP TABLE later;\nDROP TABLE shifts;"})
    with pytest.raises(MigrationError, match=r"^plugin p1: migrations/up\.sql statement 2 `COMMIT` is refused: transaction control"):
        check(config, install_change(tree))
    assert table_names(database_url) == set()


def test_commit_hidden_after_a_column_named_begin_is_refused_by_run_and_nothing_commits(
    tmp_path: Path, database_url: str
) -> None:
    """run() refuses it too (without check first), before any statement of it runs."""
    config = Config.for_directory(tmp_path, database_url=database_url)
    tree = make_tree(tmp_path, files={"migrations/up.sql": BYPASS, "migrations/down.sql": "DROP TABLE later;\nDROP TABLE shifts;"})
    with pytest.raises(MigrationError, match="statement 2 `COMMIT` is refused"):
        run(config, "tx-bypass", "install", install_change(tree))
    assert table_names(database_url) == set()
    assert committed(config, "tx-bypass") is False


def test_a_column_named_begin_installs(tmp_path: Path, database_url: str) -> None:
    """SQLite's tokenizer, not a regex: ``begin`` is just a column (refused or mis-split before)."""
    config = Config.for_directory(tmp_path, database_url=database_url)
    up = "CREATE TABLE shifts (id INTEGER, begin TIMESTAMP);\nINSERT INTO shifts (id, begin) VALUES (1, NULL);\nCREATE INDEX ix_begin ON shifts (begin);"
    tree = make_tree(tmp_path, files={"migrations/up.sql": up, "migrations/down.sql": "DROP INDEX ix_begin;\nDROP TABLE shifts;"})
    check(config, install_change(tree))
    run(config, "tx-begin", "install", install_change(tree))
    assert "shifts" in table_names(database_url)
    assert query(database_url, "SELECT id FROM shifts") == [(1,)]


@pytest.mark.parametrize("database_factory", [pytest.param("postgresql", marks=_PG)], indirect=True)
def test_postgresql_script_that_does_not_parse_is_refused_at_check_naming_the_line(tmp_path: Path, database_url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    tree = make_tree(tmp_path, files={"migrations/up.sql": "CREATE TABLE a (id INTEGER);\nCREATE TABLE (;", "migrations/down.sql": "DROP TABLE a;"})
    with pytest.raises(MigrationError, match=r'^plugin p1: migrations/up\.sql is not valid PostgreSQL: syntax error at or near "\(" \(line 2\)$'):
        check(config, install_change(tree))


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
        check(config, [change_of("p1", "uninstall", old_tree=v1, old_version="1.0.0")])


@pytest.mark.parametrize(
    ("fields", "config", "expected"),
    [
        ({"migrations": {"0001_init": ("CREATE TABLE a (id INTEGER);", "DROP TABLE a;")}, "permissions": ()}, {}, "does not declare"),
        ({"install_hook": "def install(conn, ctx):\n    pass\n", "permissions": ()}, {}, "does not declare"),
        ({"permissions": ("api.routes",)}, {"granted_permissions": ["database.create_tables"]}, "'api.routes', which is not granted"),
    ],
)
def test_a_permission_refusal_comes_before_the_transaction(home_factory: Any, fields: dict[str, Any], config: dict[str, Any], expected: str) -> None:
    """What a package may do is known from its metadata and its entry names: refused at plan time,
    the home gets no journal, no history line and no objects (only the package's intake)."""
    home = home_factory(**config)
    package = home.package("shop", **fields)
    with pytest.raises(PermissionRefusedError, match=expected) as info:
        home.installer.install_file(package)
    assert info.value.exit_code == 3
    state = home.config.home
    assert not (state / "history.jsonl").exists()
    assert not list(state.glob("journal/**/*.jsonl"))
    assert not (state / "objects").exists() or not any(p.is_file() for p in (state / "objects").rglob("*"))


def test_a_package_whose_blob_another_install_released_is_not_refused_for_it(home_factory: Any) -> None:
    """Two installs of one package: the first releases the blob the second took in. The second's
    permission check reads what it can (its metadata); installing what is installed changes nothing."""
    from atomicplug.intake import blob_path

    home = home_factory()
    installer = home.installer
    first, second = installer.take_in(home.package("shop")), installer.take_in(home.package("shop"))
    installer.install_packages([first])
    assert not blob_path(home.config, second.sha256).exists()
    assert installer.install_packages([second]).changes == ()


def test_a_repair_of_what_is_installed_is_not_refused_for_a_permission_no_longer_granted(home_factory: Any) -> None:
    """Found in review: the plan-time check refused a package already installed from those very
    bytes, so a damaged tree could not be repaired once a permission was revoked; a repair grants
    nothing new (the transaction's check of the trees still stands for real changes)."""
    import os

    from atomicplug.installer import Installer

    home = home_factory()
    package = home.package("shop", migrations={"0001_t": ("CREATE TABLE shop_t (id INTEGER);", "DROP TABLE shop_t;")})
    home.installer.install_file(package)
    [tree] = list((home.config.store_dir / "shop").iterdir())
    damaged = tree / "backend" / "__init__.py"
    os.chmod(damaged, 0o644)
    damaged.write_text("BROKEN = 1\n")
    revoked = Installer(attrs.evolve(home.config, granted_permissions=frozenset({"api.routes"})))
    assert revoked.install_file(package).changes == ("repair shop 1.0.0: 1 file",)
