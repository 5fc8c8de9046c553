"""run() and committed(): one database transaction per operation, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from db_fixtures import execute, make_tree, query, table_names, change_of

from atomicplug.config import Config
from atomicplug.errors import MigrationError
from atomicplug.stages.migrate import check, committed, run

LEDGER = {"atomicplug_migrations", "atomicplug_transactions"}


def versioned(*stems: str, tables: dict[str, str] | None = None) -> dict[str, str]:
    """Migrations creating table <stem's label> each, with the matching drop as down."""
    files = {}
    for stem in stems:
        table = stem.split("_", 1)[1]
        files[f"migrations/{stem}.up.sql"] = f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, note VARCHAR(40));"
        files[f"migrations/{stem}.down.sql"] = f"DROP TABLE {table};"
    return files


def config_for(tmp_path: Path, url: str) -> Config:
    return Config.for_directory(tmp_path, database_url=url)


def ledger_rows(url: str, plugin: str = "p1") -> list[tuple[str, str]]:
    return query(
        url, f"SELECT migration, direction FROM atomicplug_migrations WHERE plugin_id = '{plugin}' ORDER BY id"
    )


def install(config: Config, tree: Path, txid: str, plugin: str = "p1", version: str = "1.0.0", **kw: object) -> None:
    changes = [change_of(plugin, "install", new_tree=tree, new_version=version)]
    check(config, changes)
    run(config, txid, "install", changes, **kw)  # type: ignore[arg-type]


def test_install_creates_tables_and_ledger_rows(tmp_path: Path, database_url: str) -> None:
    config = config_for(tmp_path, database_url)
    tree = make_tree(tmp_path, files=versioned("0001_alpha", "0002_beta"))
    install(config, tree, "tx-install")
    assert table_names(database_url) == {"alpha", "beta"} | LEDGER
    assert ledger_rows(database_url) == [("0001_alpha", "up"), ("0002_beta", "up")]
    ((operation, plugins),) = query(database_url, "SELECT operation, plugins FROM atomicplug_transactions WHERE txid = 'tx-install'")
    assert operation == "install"
    assert json.loads(plugins) == [{"id": "p1", "action": "install", "from": None, "to": "1.0.0", "enabled": True, "keep_data": False}]


def test_single_up_down_layout_installs_and_uninstalls(tmp_path: Path, database_url: str) -> None:
    config = config_for(tmp_path, database_url)
    tree = make_tree(tmp_path, files={"migrations/up.sql": "CREATE TABLE solo (id INTEGER);", "migrations/down.sql": "DROP TABLE solo;"})
    install(config, tree, "tx-1")
    assert "solo" in table_names(database_url)
    run(config, "tx-2", "uninstall", [change_of("p1", "uninstall", old_tree=tree, old_version="1.0.0")])
    assert "solo" not in table_names(database_url)
    assert ledger_rows(database_url) == [("0001_initial", "up"), ("0001_initial", "down")]


def test_failing_statement_rolls_back_every_earlier_ddl(tmp_path: Path, database_url: str) -> None:
    config = config_for(tmp_path, database_url)
    up = (
        "CREATE TABLE first_t (id INTEGER PRIMARY KEY);\n"
        "CREATE TABLE second_t (id INTEGER PRIMARY KEY);\n"
        "CREATE INDEX ix_second ON second_t (id);\n"
        "INSERT INTO first_t (id) VALUES (1);\n"
        "INSERT INTO no_such_table VALUES (1);\n"
    )
    tree = make_tree(tmp_path, files={"migrations/0001_x.up.sql": up, "migrations/0001_x.down.sql": "SELECT 1;"})
    with pytest.raises(MigrationError) as info:
        install(config, tree, "tx-fail")
    message = str(info.value)
    assert message.startswith("plugin p1: migrations/0001_x.up.sql statement 5 failed: ")
    assert "no_such_table" in message and "\n" not in message
    assert info.value.exit_code == 1
    assert table_names(database_url) == set()  # not even the ledger tables
    assert committed(config, "tx-fail") is False


def test_upgrade_runs_only_the_new_ups(tmp_path: Path, database_url: str) -> None:
    config = config_for(tmp_path, database_url)
    v1 = make_tree(tmp_path, version="1.0.0", files=versioned("0001_alpha"))
    install(config, v1, "tx-1")
    v2 = make_tree(tmp_path, version="2.0.0", files=versioned("0001_alpha", "0002_beta"))
    changes = [change_of("p1", "upgrade", old_tree=v1, new_tree=v2, old_version="1.0.0", new_version="2.0.0")]
    check(config, changes)
    run(config, "tx-2", "upgrade", changes)  # re-running 0001 would fail: alpha exists
    assert {"alpha", "beta"} <= table_names(database_url)
    assert ledger_rows(database_url) == [("0001_alpha", "up"), ("0002_beta", "up")]


def test_downgrade_runs_installed_tree_downs_of_what_target_lacks_newest_first(tmp_path: Path, database_url: str) -> None:
    config = config_for(tmp_path, database_url)
    execute(database_url, "CREATE TABLE log (seq INTEGER, name VARCHAR(20))")
    files = versioned("0001_alpha", "0002_beta", "0003_gamma")
    for stem in ("0002_beta", "0003_gamma"):
        files[f"migrations/{stem}.down.sql"] += f"\nINSERT INTO log SELECT COUNT(*) + 1, '{stem}' FROM log;"
    v2 = make_tree(tmp_path, version="2.0.0", files=files)
    install(config, v2, "tx-1")
    v1 = make_tree(tmp_path, version="1.0.0", files=versioned("0001_alpha"))
    changes = [change_of("p1", "downgrade", old_tree=v2, new_tree=v1, old_version="2.0.0", new_version="1.0.0")]
    check(config, changes)
    run(config, "tx-2", "rollback", changes)
    assert table_names(database_url) == {"alpha", "log"} | LEDGER
    assert query(database_url, "SELECT seq, name FROM log ORDER BY seq") == [(1, "0003_gamma"), (2, "0002_beta")]
    assert ledger_rows(database_url)[-2:] == [("0003_gamma", "down"), ("0002_beta", "down")]


def test_uninstall_runs_every_down_in_reverse_order(tmp_path: Path, database_url: str) -> None:
    config = config_for(tmp_path, database_url)
    files = {
        "migrations/0001_parent.up.sql": "CREATE TABLE parent (id INTEGER PRIMARY KEY);",
        "migrations/0001_parent.down.sql": "DROP TABLE parent;",
        # child references parent: dropping parent first would fail on PostgreSQL
        "migrations/0002_child.up.sql": "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent (id));",
        "migrations/0002_child.down.sql": "DROP TABLE child;",
    }
    tree = make_tree(tmp_path, files=files)
    install(config, tree, "tx-1")
    changes = [change_of("p1", "uninstall", old_tree=tree, old_version="1.0.0")]
    check(config, changes)
    run(config, "tx-2", "uninstall", changes)
    assert table_names(database_url) == LEDGER
    assert ledger_rows(database_url)[2:] == [("0002_child", "down"), ("0001_parent", "down")]
    assert committed(config, "tx-2")


def test_uninstall_keep_data_keeps_tables_and_ledger_and_reinstall_skips_applied_ups(
    tmp_path: Path, database_url: str
) -> None:
    config = config_for(tmp_path, database_url)
    v1 = make_tree(tmp_path, version="1.0.0", files=versioned("0001_alpha"))
    install(config, v1, "tx-1")
    execute(database_url, "INSERT INTO alpha (id, note) VALUES (1, 'kept')")
    keep = [change_of("p1", "uninstall", old_tree=v1, old_version="1.0.0", keep_data=True)]
    check(config, keep)
    run(config, "tx-2", "uninstall", keep)
    assert "alpha" in table_names(database_url)
    assert ledger_rows(database_url) == [("0001_alpha", "up")]
    assert committed(config, "tx-2")
    # reinstall (a newer version): the applied up is skipped, the new one runs, data survives
    v2 = make_tree(tmp_path, version="2.0.0", files=versioned("0001_alpha", "0002_beta"))
    install(config, v2, "tx-3", version="2.0.0")
    assert query(database_url, "SELECT note FROM alpha") == [("kept",)]
    assert ledger_rows(database_url) == [("0001_alpha", "up"), ("0002_beta", "up")]


def test_changed_checksum_of_an_applied_migration_fails_naming_it(tmp_path: Path, database_url: str) -> None:
    config = config_for(tmp_path, database_url)
    v1 = make_tree(tmp_path, version="1.0.0", files=versioned("0001_alpha"))
    install(config, v1, "tx-1")
    files = versioned("0001_alpha", "0002_beta")
    files["migrations/0001_alpha.up.sql"] = "CREATE TABLE alpha (id INTEGER PRIMARY KEY, other INTEGER);"
    v2 = make_tree(tmp_path, version="2.0.0", files=files)
    changes = [change_of("p1", "upgrade", old_tree=v1, new_tree=v2, old_version="1.0.0", new_version="2.0.0")]
    with pytest.raises(MigrationError, match=r"plugin p1: applied migration 0001_alpha changed since it ran"):
        check(config, changes)
    with pytest.raises(MigrationError, match="0001_alpha"):
        run(config, "tx-2", "upgrade", changes)
    assert "beta" not in table_names(database_url)
    assert committed(config, "tx-2") is False


def test_three_plugins_in_one_transaction_third_fails_leaves_nothing(tmp_path: Path, database_url: str) -> None:
    config = config_for(tmp_path, database_url)
    good1 = make_tree(tmp_path, "one", files=versioned("0001_one_t"))
    good2 = make_tree(tmp_path, "two", files=versioned("0001_two_t"))
    bad = make_tree(
        tmp_path,
        "three",
        files={"migrations/0001_x.up.sql": "CREATE TABLE three_t (id INTEGER);\nSELECT * FROM missing_table;", "migrations/0001_x.down.sql": "DROP TABLE three_t;"},
    )
    changes = [change_of(pid, "install", new_tree=tree, new_version="1.0.0") for pid, tree in (("one", good1), ("two", good2), ("three", bad))]
    check(config, changes)
    with pytest.raises(MigrationError, match=r"^plugin three: migrations/0001_x.up.sql statement 2 failed: "):
        run(config, "tx-multi", "install", changes)
    assert table_names(database_url) == set()
    assert committed(config, "tx-multi") is False


def test_committed_is_false_before_the_ledger_exists_and_for_unknown_txids(tmp_path: Path, database_url: str) -> None:
    config = config_for(tmp_path, database_url)
    assert committed(config, "tx-nothing-yet") is False
    if database_url.startswith("sqlite"):
        assert not (tmp_path / "app.db").exists()  # asking does not create the database
    install(config, make_tree(tmp_path, files=versioned("0001_alpha")), "tx-1")
    assert committed(config, "tx-1") is True
    assert committed(config, "tx-unknown") is False


def test_txid_row_is_written_even_without_migrations(tmp_path: Path, database_url: str) -> None:
    config = config_for(tmp_path, database_url)
    plain = make_tree(tmp_path, files={"backend/__init__.py": ""}, permissions=())
    run(config, "tx-files", "install", [change_of("p1", "install", new_tree=plain, new_version="1.0.0")])
    run(config, "tx-enable", "enable", [change_of("p1", "none", old_tree=plain, new_tree=plain)])
    assert committed(config, "tx-files") and committed(config, "tx-enable")
    assert table_names(database_url) == LEDGER
    rows = query(database_url, "SELECT txid, operation FROM atomicplug_transactions ORDER BY started_at")
    assert rows == [("tx-files", "install"), ("tx-enable", "enable")]


def test_a_txid_cannot_commit_twice(tmp_path: Path, database_url: str) -> None:
    config = config_for(tmp_path, database_url)
    tree = make_tree(tmp_path, permissions=())
    run(config, "tx-1", "install", [change_of("p1", "install", new_tree=tree)])
    with pytest.raises(MigrationError, match="tx-1"):
        run(config, "tx-1", "install", [change_of("p1", "install", new_tree=tree)])


def test_percent_signs_and_dollar_quoting_reach_the_database_intact(tmp_path: Path, database_url: str) -> None:
    config = config_for(tmp_path, database_url)
    up = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR(40));\n" "INSERT INTO notes VALUES (1, '100%; done -- not a comment');\n"
    if database_url.startswith("postgresql"):
        up += (
            "CREATE FUNCTION notes_count() RETURNS integer AS $fn$\n"
            "DECLARE n integer;\nBEGIN\n  SELECT COUNT(*) INTO n FROM notes; -- semicolons; inside\n  RETURN n;\nEND;\n$fn$ LANGUAGE plpgsql;\n"
        )
        down = "DROP FUNCTION notes_count();\nDROP TABLE notes;"
    else:
        up += "CREATE TRIGGER notes_tr AFTER INSERT ON notes BEGIN UPDATE notes SET body = body || ';'; END;\n"
        down = "DROP TRIGGER notes_tr;\nDROP TABLE notes;"
    tree = make_tree(tmp_path, files={"migrations/0001_n.up.sql": up, "migrations/0001_n.down.sql": down})
    install(config, tree, "tx-1")
    assert query(database_url, "SELECT body FROM notes") == [("100%; done -- not a comment",)]
    if database_url.startswith("postgresql"):
        assert query(database_url, "SELECT notes_count()") == [(1,)]
