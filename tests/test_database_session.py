"""A migration's session settings never leak into atomicplug's own statements (issue 13, item 10).

The fixture is real ``pg_dump --schema-only`` output (15.18): it empties
``search_path`` for itself with ``SELECT pg_catalog.set_config('search_path',
'', false)`` and wraps the dump in psql's ``\\restrict``/``\\unrestrict``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from db_fixtures import make_tree, query, table_names, change_of

from atomicplug.config import Config
from atomicplug.errors import MigrationError
from atomicplug.stages.migrate import check, committed, run

DUMP = (Path(__file__).parent / "sql" / "pg_dump_invoices.sql").read_text(encoding="utf-8")
DOWN = (
    "DROP VIEW public.invoice_totals;\nDROP TABLE public.invoice_lines;\n"
    "DROP TABLE public.invoices;\nDROP FUNCTION public.invoice_touch();\n"
)
DUMP_TABLES = {"invoices", "invoice_lines"}
LEDGER = {"atomicplug_migrations", "atomicplug_transactions"}

pytestmark = pytest.mark.parametrize(
    "database_factory", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


def dump_plugin(root: Path, down: str = DOWN, plugin_id: str = "billing") -> Path:
    return make_tree(root, plugin_id, files={"migrations/up.sql": DUMP, "migrations/down.sql": down})


def install(config: Config, changes: list[Any], txid: str) -> None:
    check(config, changes)
    run(config, txid, "install", changes)


def test_psql_runs_the_dump_file(tmp_path: Path, database_url: str) -> None:
    """The fixture is a file psql accepts as it is: atomicplug must too."""
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is not installed")
    script = tmp_path / "dump.sql"
    script.write_text(DUMP, encoding="utf-8")
    subprocess.run([psql, database_url, "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script)], check=True, capture_output=True)
    assert DUMP_TABLES <= table_names(database_url)


def test_pg_dump_schema_file_installs_with_the_ledger_in_the_captured_schema(tmp_path: Path, database_url: str) -> None:
    """Before: the dump emptied search_path and our INSERT INTO atomicplug_migrations failed."""
    config = Config.for_directory(tmp_path, database_url=database_url)
    install(config, [change_of("billing", "install", new_tree=dump_plugin(tmp_path), new_version="1.0.0")], "tx-dump")
    assert table_names(database_url) == DUMP_TABLES | LEDGER
    assert query(database_url, "SELECT migration, direction FROM public.atomicplug_migrations") == [("0001_initial", "up")]
    assert committed(config, "tx-dump")


def test_rehearsal_compares_the_captured_schema_not_the_emptied_search_path(tmp_path: Path, database_url: str) -> None:
    """With search_path '' current_schema() is NULL: a snapshot of it would compare nothing."""
    config = Config.for_directory(tmp_path, database_url=database_url)
    forgetful = "DROP VIEW public.invoice_totals;\nDROP TABLE public.invoice_lines;\nDROP FUNCTION public.invoice_touch() CASCADE;\n"
    change = change_of("billing", "install", new_tree=dump_plugin(tmp_path, down=forgetful), new_version="1.0.0")
    with pytest.raises(MigrationError, match=r"down migrations do not restore the schema: table 'invoices' left behind"):
        install(config, [change], "tx-forgetful")
    assert table_names(database_url) == set()


def test_next_plugin_starts_from_the_captured_search_path(tmp_path: Path, database_url: str) -> None:
    """Two plugins in one transaction: the second one's unqualified names still land in public."""
    config = Config.for_directory(tmp_path, database_url=database_url)
    plain = make_tree(
        tmp_path,
        "notes",
        files={
            "migrations/up.sql": "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);\nINSERT INTO notes VALUES (1, 'x');",
            "migrations/down.sql": "DROP TABLE notes;",
        },
    )
    changes = [
        change_of("billing", "install", new_tree=dump_plugin(tmp_path), new_version="1.0.0"),
        change_of("notes", "install", new_tree=plain, new_version="1.0.0"),
    ]
    install(config, changes, "tx-two")
    assert table_names(database_url) == DUMP_TABLES | {"notes"} | LEDGER
    assert query(database_url, "SELECT body FROM public.notes") == [("x",)]


def test_uninstall_of_the_dump_plugin_runs_its_downs_and_records_them(tmp_path: Path, database_url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    tree = dump_plugin(tmp_path)
    install(config, [change_of("billing", "install", new_tree=tree, new_version="1.0.0")], "tx-1")
    uninstall = [change_of("billing", "uninstall", old_tree=tree, old_version="1.0.0")]
    check(config, uninstall)
    run(config, "tx-2", "uninstall", uninstall)
    assert table_names(database_url) == LEDGER
    rows = query(database_url, "SELECT direction FROM public.atomicplug_migrations ORDER BY id")
    assert rows == [("up",), ("down",)]


def test_psql_meta_commands_other_than_pg_dumps_are_refused_naming_the_line(tmp_path: Path, database_url: str) -> None:
    config = Config.for_directory(tmp_path, database_url=database_url)
    tree = make_tree(
        tmp_path,
        files={"migrations/up.sql": "CREATE TABLE a (id INTEGER);\n\\connect other\n", "migrations/down.sql": "DROP TABLE a;"},
    )
    with pytest.raises(MigrationError, match=r"^plugin p1: migrations/up\.sql is not valid PostgreSQL: psql meta-command \\connect on line 2 is not SQL"):
        check(config, [change_of("p1", "install", new_tree=tree, new_version="1.0.0")])


@pytest.mark.postgres
def test_a_search_path_naming_no_existing_schema_is_one_line_and_nothing_is_installed(home_factory, database_factory) -> None:
    """docs/design.md "A migration's session is its own": the tables would land nowhere expected."""
    import json

    from test_cli_transactions import assert_one_line_error, run_cli

    url = database_factory()
    if not url.startswith("postgresql"):
        pytest.skip("PostgreSQL's search_path")
    home = home_factory(database_url=url + "?options=-csearch_path%3Dnosuch")
    migrations = {"0001_t": ("CREATE TABLE shop_t (id INTEGER);", "DROP TABLE shop_t;")}
    refused = run_cli(home, "install", str(home.package("shop", migrations=migrations)))
    assert_one_line_error(refused, 1, "the database user's search_path ('nosuch') names no existing schema")
    assert json.loads(run_cli(home, "list", "--json").stdout) == []
    assert table_names(url) == set()


@pytest.mark.postgres
def test_a_setting_one_plugins_migration_changes_does_not_reach_the_next_plugins(home_factory, database_factory) -> None:
    """docs/design.md "A migration's session is its own": each file gets the session it would get in a
    transaction of its own. Only search_path was put back: a pg_dump file's settings carried over."""
    url = database_factory()
    if not url.startswith("postgresql"):
        pytest.skip("PostgreSQL's session settings")
    home = home_factory(database_url=url)
    legacy = {"0001_legacy": ("SET standard_conforming_strings = off;\nCREATE TABLE alpha_t (v TEXT);", "DROP TABLE alpha_t;")}
    literal = {"0001_text": ("CREATE TABLE beta_t (v TEXT);\nINSERT INTO beta_t VALUES ('x\\\\y');", "DROP TABLE beta_t;")}
    installer = home.installer
    installer.install_packages([installer.take_in(home.package("alpha", migrations=legacy)), installer.take_in(home.package("beta", migrations=literal))])
    assert query(url, "SELECT v FROM beta_t") == [("x\\\\y",)]  # the backslash kept, as with the server's default
