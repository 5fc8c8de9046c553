"""Dry run (issue 16 phase 2): ``Installer.preview`` and ``--dry-run`` for every writer.

Each preview is compared with what the real operation then does, and the
observable state (registry, links, tables, ledger, history, trust state) is
the same before and after the preview. Tables to drop are read from the
migrations with the databases' own parsers and checked against the database,
on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest
from db_fixtures import execute, query

from atomicplug.errors import UsageError
from atomicplug.history import read_history
from atomicplug.preview import Preview
from atomicplug.testing import snapshot

CONTACTS = {
    "0001_contacts": (
        "CREATE TABLE crm_contacts (id INTEGER PRIMARY KEY, name TEXT);\n"
        "CREATE TABLE crm_scratch (id INTEGER);\n"
        "CREATE TABLE crm_notes (id INTEGER PRIMARY KEY, body TEXT);\n"
        "DROP TABLE crm_scratch;\n",
        "DROP TABLE crm_notes;\nDROP TABLE crm_contacts;\n",
    ),
}
CONTACTS_2 = {
    **CONTACTS,
    "0002_tags": (
        "CREATE TABLE crm_tag_list (id INTEGER);\n"
        "ALTER TABLE crm_tag_list RENAME TO crm_tags;\n"
        "ALTER TABLE crm_contacts ADD COLUMN email TEXT;\n"
        "ALTER TABLE customers ADD COLUMN crm_id INTEGER;\n",
        "ALTER TABLE customers DROP COLUMN crm_id;\nALTER TABLE crm_contacts DROP COLUMN email;\nDROP TABLE crm_tags;\n",
    ),
}


def observable(home: Any) -> dict[str, Any]:
    """Everything a preview must leave as it was."""
    state = snapshot(home.config)
    ledger = []
    if (home.config.home / "app.db").exists() or not home.config.database_url.startswith("sqlite"):
        try:
            ledger = query(home.config.database_url, "SELECT txid, migration, direction FROM atomicplug_migrations ORDER BY id")
        except Exception:  # noqa: BLE001 - no ledger yet
            ledger = []
    trust = home.config.home / "repository_state.json"
    return {
        **state,
        "ledger": ledger,
        "history": read_history(home.config.home),
        "trust": trust.read_bytes() if trust.exists() else None,
        "journals": sorted(p.name for p in home.config.journal_dir.glob("*")) if home.config.journal_dir.exists() else [],
    }


def previewed(home: Any, operation: str, *args: Any, **options: Any) -> Preview:
    before = observable(home)
    result = home.installer.preview(operation, *args, **options)
    assert observable(home) == before, "a preview changed the state"
    return result


def by_id(preview: Preview) -> dict[str, Any]:
    return {p.plugin_id: p for p in preview.plugins}


def with_customers(home: Any) -> None:
    """A host table the plugin's second migration adds a column to."""
    execute(home.config.database_url, "CREATE TABLE customers (id INTEGER PRIMARY KEY)")


def test_install_preview_lists_versions_migrations_and_settings_and_changes_nothing(any_db_home: Any) -> None:
    home = any_db_home
    zip_path = home.package(
        "crm", migrations=CONTACTS,
        metadata_extra={"settings": {"properties": {"api_key": {"type": "string", "secret": True}}}},
    )
    preview = previewed(home, "install_file", zip_path)
    assert preview.refusal is None and preview.operation == "install"
    (crm,) = preview.plugins
    assert (crm.change.action, crm.change.old_version, crm.change.new_version) == ("install", None, "1.0.0")
    assert (crm.migrations_down, crm.migrations_up, crm.tables_dropped) == ((), ("0001_contacts",), ())
    assert crm.settings is not None and [f.name for f in crm.settings.fields] == ["api_key"]
    assert preview.lines() == ["install crm 1.0.0", "  migrations up: 0001_contacts"]
    assert home.installer.install_file(zip_path).changes == ("install crm 1.0.0",)


def test_upgrade_preview_runs_only_the_new_migration(any_db_home: Any) -> None:
    home = any_db_home
    with_customers(home)
    home.installer.install_file(home.package("crm", migrations=CONTACTS))
    crm = by_id(previewed(home, "install_file", home.package("crm", "2.0.0", migrations=CONTACTS_2)))["crm"]
    assert (crm.change.action, crm.migrations_up, crm.migrations_down) == ("upgrade", ("0002_tags",), ())


def test_uninstall_preview_names_the_downs_and_the_tables_and_columns_it_drops(any_db_home: Any) -> None:
    home = any_db_home
    with_customers(home)
    home.installer.install_file(home.package("crm", "2.0.0", migrations=CONTACTS_2))
    crm = by_id(previewed(home, "uninstall", "crm"))["crm"]
    assert crm.migrations_down == ("0002_tags", "0001_contacts")
    # crm_scratch was dropped again by its own up; crm_tag_list was renamed to crm_tags; crm_contacts.email goes with
    # its table; the host's customers table stays and loses the column the plugin added.
    assert crm.tables_dropped == ("crm_contacts", "crm_notes", "crm_tags")
    assert crm.columns_dropped == ("customers.crm_id",)
    assert crm.tables_kept == ()
    assert "  drops tables: crm_contacts, crm_notes, crm_tags" in previewed(home, "uninstall", "crm").lines()
    home.installer.uninstall("crm")
    tables = {row[0] for row in query(home.config.database_url, _TABLES[home.config.database_url.split(":")[0]])}
    assert not tables & {"crm_contacts", "crm_notes", "crm_tags"} and "customers" in tables


_TABLES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
    "postgresql": "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()",
}


def test_uninstall_preview_with_keep_data_lists_the_tables_that_stay(any_db_home: Any) -> None:
    home = any_db_home
    home.installer.install_file(home.package("crm", migrations=CONTACTS))
    crm = by_id(previewed(home, "uninstall", "crm", keep_data=True))["crm"]
    assert (crm.migrations_down, crm.tables_dropped, crm.tables_kept) == ((), (), ("crm_contacts", "crm_notes"))


def test_uninstalling_a_required_plugin_is_refused_with_the_cascade_offered(home: Any) -> None:
    home.installer.install_file(home.package("crm", migrations=CONTACTS))
    home.installer.install_file(home.package("reports", requires=("crm",)))
    preview = previewed(home, "uninstall", "crm")
    assert preview.plugins == () and preview.refusal is not None
    refusal = preview.refusal
    assert (refusal.error, refusal.option, refusal.plugins, refusal.exit_code) == ("DependencyError", "cascade", ("reports",), 1)
    assert refusal.title == "Plugin dependencies not met" and "reports require(s) crm" in refusal.message
    assert preview.resolved is not None and preview.resolved.refusal is None
    assert [(p.plugin_id, p.change.action) for p in preview.resolved.plugins] == [("reports", "uninstall"), ("crm", "uninstall")]
    assert by_id(preview.resolved)["crm"].tables_dropped == ("crm_contacts", "crm_notes")
    assert previewed(home, "uninstall", "crm", cascade=True) == preview.resolved


def test_rollback_previews_per_plugin_and_by_generation(any_db_home: Any) -> None:
    home = any_db_home
    with_customers(home)
    home.installer.install_file(home.package("crm", migrations=CONTACTS))
    first = home.installer.install_file(home.package("quiet"))
    home.installer.install_file(home.package("crm", "2.0.0", migrations=CONTACTS_2))
    crm = by_id(previewed(home, "rollback", "crm"))["crm"]
    assert (crm.change.action, crm.change.new_version, crm.migrations_down) == ("downgrade", "1.0.0", ("0002_tags",))
    assert (crm.tables_dropped, crm.columns_dropped) == (("crm_tags",), ("crm_contacts.email", "customers.crm_id"))
    generation = previewed(home, "rollback", transaction=home.installer.history()[-1]["txid"])
    assert [(p.plugin_id, p.change.action) for p in generation.plugins] == [("crm", "downgrade")]
    back = previewed(home, "rollback", generation=1)  # crm 1.0.0 only
    assert first.txid and {p.plugin_id: p.change.action for p in back.plugins} == {"crm": "downgrade", "quiet": "uninstall"}
    refused = previewed(home, "rollback", generation=99)
    assert refused.refusal is not None and refused.refusal.exit_code == 2 and "not kept" in refused.refusal.message


def test_enable_and_disable_previews_touch_no_table(home: Any) -> None:
    home.installer.install_file(home.package("crm", migrations=CONTACTS))
    home.installer.install_file(home.package("reports", requires=("crm",)))
    refused = previewed(home, "disable", "crm")
    assert refused.refusal is not None and refused.refusal.plugins == ("reports",) and refused.resolved is None
    disable = previewed(home, "disable", "reports")
    (reports,) = disable.plugins
    assert (reports.change.action, reports.change.after.enabled, reports.migrations_down, reports.tables_dropped) == ("none", False, (), ())
    assert disable.lines() == ["disable reports"]
    home.installer.disable("reports")
    home.installer.disable("crm")
    needs = previewed(home, "enable", "reports")
    assert needs.refusal is not None and needs.refusal.option == "with_requirements"
    assert needs.resolved is not None and [p.change.describe() for p in needs.resolved.plugins] == ["enable crm", "enable reports"]
    assert previewed(home, "enable", "quiet_missing").refusal.error == "NotInstalledError"  # type: ignore[union-attr]


def test_a_downgrade_preview_is_refused_with_allow_downgrade_offered(home: Any) -> None:
    old = home.package("crm", migrations=CONTACTS)
    home.installer.install_file(home.package("crm", "2.0.0", migrations=CONTACTS))
    preview = previewed(home, "install_file", old)
    assert preview.refusal is not None and preview.refusal.option == "allow_downgrade"
    assert preview.resolved is not None and by_id(preview.resolved)["crm"].change.action == "downgrade"


def test_a_preview_refuses_what_the_transaction_would_refuse(home: Any) -> None:
    vacuum = home.package("vac", migrations={"0001_v": ("VACUUM;", "SELECT 1;")})
    refusal = previewed(home, "install_file", vacuum).refusal
    assert refusal is not None and refusal.error == "MigrationError" and "VACUUM" in refusal.message
    greedy = home.package("greedy", permissions=("filesystem.write",))
    home_config = home.config.home.parent / "atomicplug.toml"
    home_config.write_text(home_config.read_text() + 'granted_permissions = ["database.create_tables"]\n')
    from atomicplug.config import Config
    from atomicplug.installer import Installer

    refusal = Installer(Config.load(home_config)).preview("install_file", greedy).refusal
    assert refusal is not None and refusal.error == "PermissionRefusedError" and refusal.exit_code == 3


def test_preview_takes_the_writers_arguments_only(home: Any) -> None:
    with pytest.raises(UsageError, match="expected one of install"):
        home.installer.preview("gc")
    with pytest.raises(UsageError, match="uninstall: "):
        home.installer.preview("uninstall", "crm", cascades=True)


# -- repairs ----------------------------------------------------------------------------------


def damage(home: Any, plugin_id: str) -> None:
    """A file of the installed tree changed by hand and one added: what reinstalling repairs."""
    [tree] = (home.config.home / "store" / plugin_id).iterdir()
    changed = next(p for p in sorted(tree.rglob("*.py")) if p.is_file())
    os.chmod(changed, 0o644)
    changed.write_text(changed.read_text() + "# changed by hand\n")
    (tree / "backend" / "added.py").write_text("raise SystemExit('nobody signed this')\n")


def test_a_preview_of_reinstalling_a_damaged_plugin_names_the_repair_and_repairs_nothing(home: Any) -> None:
    """Left open since stop 25: the dry run said "nothing to do" where the install repairs files."""
    crm = home.package("crm", migrations=CONTACTS)
    home.installer.install_file(crm)
    damage(home, "crm")
    preview = previewed(home, "install_file", crm)
    assert (preview.refusal, preview.plugins, preview.repairs) == (None, (), ("repair crm 1.0.0: 2 files damaged",))
    assert preview.lines() == ["repair crm 1.0.0: 2 files damaged"]
    assert preview.to_dict()["repairs"] == ["repair crm 1.0.0: 2 files damaged"]
    assert len(home.installer.verify("crm")[0].changed + home.installer.verify("crm")[0].extra) == 2  # still damaged
    assert home.installer.install_file(crm).changes == ("repair crm 1.0.0: 2 files",)
    assert home.installer.preview("install_file", crm).lines() == ["nothing to do"]
    [tree] = (home.config.home / "store" / "crm").iterdir()
    shutil.rmtree(tree)  # removed whole: staged again from the package
    assert previewed(home, "install_file", crm).lines() == ["repair crm 1.0.0: its store tree is missing"]
    assert not tree.exists()


def test_a_preview_shows_the_repair_before_the_changes_of_the_same_transaction(home: Any) -> None:
    crm = home.package("crm", migrations=CONTACTS)
    home.installer.install_file(crm)
    damage(home, "crm")
    [tree] = (home.config.home / "store" / "crm").iterdir()
    both = previewed(home, "install_packages", [home.installer.take_in(crm), home.installer.take_in(home.package("reports"))])
    assert both.lines() == ["repair crm 1.0.0: 2 files damaged", "install reports 1.0.0"]
    assert (tree / "backend" / "added.py").exists()  # nothing repaired


# -- the command line ---------------------------------------------------------------------


def run_cli(home: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atomicplug", "--config", str(home.config_path), *args], capture_output=True, text=True, timeout=120
    )


def test_dry_run_on_the_command_line_prints_the_preview_and_exits_with_the_refusals_code(home: Any) -> None:
    crm = home.package("crm", migrations=CONTACTS)
    assert run_cli(home, "install", str(crm)).returncode == 0
    assert run_cli(home, "install", str(home.package("reports", requires=("crm",)))).returncode == 0
    before = observable(home)
    dry = run_cli(home, "uninstall", "crm", "--dry-run")
    assert dry.returncode == 1 and dry.stderr.strip().startswith("atomicplug: error: reports require(s) crm")
    assert dry.stdout.splitlines() == [
        "with --cascade it would:",
        "  uninstall reports 1.0.0",
        "  uninstall crm 1.0.0",
        "    migrations down: 0001_contacts",
        "    drops tables: crm_contacts, crm_notes",
    ]
    cascade = run_cli(home, "uninstall", "crm", "--cascade", "--dry-run")
    assert cascade.returncode == 0 and cascade.stdout.splitlines()[-1] == "(dry run: nothing was changed)"
    assert run_cli(home, "disable", "reports", "--dry-run").stdout.splitlines() == ["disable reports", "(dry run: nothing was changed)"]
    assert run_cli(home, "rollback", "crm", "--dry-run").returncode == 1  # no previous version
    assert run_cli(home, "enable", "crm", "--dry-run").stdout.startswith("nothing to do")
    assert observable(home) == before
    assert json.loads(run_cli(home, "list", "--json").stdout)[0]["id"] == "crm"
    damage(home, "crm")
    verified = run_cli(home, "verify", "crm")
    assert verified.returncode == 1 and verified.stdout.splitlines()[0] == "crm 1.0.0: MODIFIED"
    assert verified.stdout.splitlines()[-1] == (  # what to do about it, with the dry run that shows it first
        "  repair: install its package again (its zip, or `atomicplug install crm` from the repository; --dry-run shows the repair)"
    )
    repair = run_cli(home, "install", str(crm), "--dry-run")
    assert (repair.returncode, repair.stdout.splitlines()) == (0, ["repair crm 1.0.0: 2 files damaged", "(dry run: nothing was changed)"])
    assert not home.installer.verify("crm")[0].ok


def test_settings_the_install_lacks_are_a_refusal_that_still_shows_the_plan(home: Any) -> None:
    schema = {"properties": {"api_key": {"type": "string", "secret": True}}, "required": ["api_key"]}
    zip_path = home.package("chat", migrations=CONTACTS, metadata_extra={"settings": schema})
    preview = previewed(home, "install_file", zip_path)
    assert preview.refusal is not None and preview.refusal.error == "SettingsError" and preview.resolved is None
    assert preview.refusal.problems == ("chat: setting 'api_key' is required",) and preview.refusal.exit_code == 2
    (chat,) = preview.plugins
    assert chat.change.action == "install" and chat.settings is not None and chat.settings.fields[0].secret
    given = previewed(home, "install_file", zip_path, settings={"chat": {"api_key": "sk-1"}})
    assert given.refusal is None and given.plugins[0].migrations_up == ("0001_contacts",)


@pytest.mark.parametrize("operation", ["uninstall", "disable"])
def test_a_busy_database_is_a_refusal_of_the_preview_not_a_driver_error(home_factory: Any, operation: str) -> None:
    """Found from outside (the billing app holding its own write lock): for a plugin without
    migrations the preview let `sqlite3.OperationalError: database is locked` escape, which the
    panel shows as an unexpected error; with migrations it was a DatabaseError refusal already."""
    import sqlite3

    home = home_factory(lock_timeout=1)
    home.installer.install_file(home.package("shop"))
    before = observable(home)
    app = sqlite3.connect(home.config.database_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        app.execute("BEGIN EXCLUSIVE")
        refusal = home.installer.preview(operation, "shop").refusal
    finally:
        app.close()
    assert observable(home) == before
    assert refusal is not None and refusal.error == "DatabaseError" and "locked" in refusal.message, refusal
