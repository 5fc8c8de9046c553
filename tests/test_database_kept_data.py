"""The ledger is the truth about kept data (issue 13, item 7).

``uninstall --keep-data`` of 1.1 leaves 1.1's tables and ledger rows. Installing
the 1.0 zip then is a downgrade of that data: refused (exit 2) unless
``--allow-downgrade``, which runs the kept downs from a store tree that still
has them, or refuses clearly when none does. Before, 1.0 installed silently on
top of 1.1's tables and a later plain uninstall failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from db_fixtures import make_tree, query, table_names, change_of

from atomicplug.errors import MigrationError, UsageError
from atomicplug.journal.reader import pending_journals
from atomicplug.registry import Registry
from atomicplug.database.plan import plan_change

A = {"0001_a": ("CREATE TABLE kd_a (id INTEGER);", "DROP TABLE kd_a;")}
AB = {**A, "0002_b": ("CREATE TABLE kd_b (id INTEGER);", "DROP TABLE kd_b;")}
LEDGER = {"atomicplug_migrations", "atomicplug_transactions"}


def installed(home: Any) -> dict[str, str]:
    return {pid: e.version for pid, e in Registry.load(home.config.registry_path).plugins.items()}


def ledger(home: Any) -> list[tuple[str, str]]:
    return query(home.config.database_url, "SELECT migration, direction FROM atomicplug_migrations ORDER BY id")


def kept_1_1(home: Any) -> tuple[Path, Path]:
    """1.1 installed, then uninstalled with --keep-data; returns the 1.0 and 1.1 zips."""
    v10, v11 = home.package("kd", "1.0.0", migrations=A), home.package("kd", "1.1.0", migrations=AB)
    home.installer.install_file(v11)
    home.installer.uninstall("kd", keep_data=True)
    return v10, v11


def test_installing_an_older_version_over_kept_data_is_a_refused_downgrade(any_db_home: Any) -> None:
    home = any_db_home
    v10, _ = kept_1_1(home)
    rows = ledger(home)
    with pytest.raises(UsageError) as info:
        home.installer.install_file(v10)
    message = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in message
    assert message.startswith("plugin kd: the database keeps migration 0002_b, which kd 1.0.0 lacks")
    assert "--allow-downgrade" in message
    assert installed(home) == {}
    assert table_names(home.config.database_url) == {"kd_a", "kd_b"} | LEDGER
    assert ledger(home) == rows
    assert not pending_journals(home.config.journal_dir)


def test_allow_downgrade_runs_the_kept_down_from_the_store_and_a_plain_uninstall_then_works(any_db_home: Any) -> None:
    home = any_db_home
    v10, _ = kept_1_1(home)
    home.installer.install_file(v10, allow_downgrade=True)
    assert installed(home) == {"kd": "1.0.0"}
    assert table_names(home.config.database_url) == {"kd_a"} | LEDGER
    assert ledger(home)[-1] == ("0002_b", "down")
    home.installer.uninstall("kd")  # failed before: "applied migration 0002_b is not in the installed tree"
    assert table_names(home.config.database_url) == LEDGER


def test_allow_downgrade_refuses_clearly_when_no_store_tree_has_the_down(any_db_home: Any) -> None:
    home = any_db_home
    v10, _ = kept_1_1(home)
    # One more generation, so the one that still showed 1.1 is no longer kept: gc removes 1.1's tree.
    home.installer.install_file(home.package("other"))
    home.installer.gc()
    with pytest.raises(MigrationError, match=r"^plugin kd: no store tree of kd has the down of applied migration 0002_b") as info:
        home.installer.install_file(v10, allow_downgrade=True)
    assert "install a version that has it" in str(info.value)
    assert installed(home) == {"other": "1.0.0"}
    assert table_names(home.config.database_url) == {"kd_a", "kd_b"} | LEDGER


def test_reinstalling_the_kept_version_or_a_newer_one_is_no_downgrade(any_db_home: Any) -> None:
    home = any_db_home
    _, v11 = kept_1_1(home)
    home.installer.install_file(v11)
    assert installed(home) == {"kd": "1.1.0"}
    assert ledger(home)[-1] == ("0002_b", "up")  # nothing re-ran


def test_cli_install_of_the_older_zip_exits_2_and_with_allow_downgrade_succeeds(any_db_home: Any, capsys: Any) -> None:
    from atomicplug.cli import main

    home = any_db_home
    v10, _ = kept_1_1(home)
    assert main(["--config", str(home.config_path), "install", str(v10)]) == 2
    assert "--allow-downgrade" in capsys.readouterr().err
    assert main(["--config", str(home.config_path), "install", "--allow-downgrade", str(v10)]) == 0
    assert installed(home) == {"kd": "1.0.0"}


# -- the rule itself: which down is taken ----------------------------------------------


def _files(migrations: dict[str, tuple[str, str]]) -> dict[str, str]:
    files = {}
    for stem, (up, down) in migrations.items():
        files[f"migrations/{stem}.up.sql"], files[f"migrations/{stem}.down.sql"] = up, down
    return files


def test_kept_down_must_match_the_applied_checksum_and_newest_first(tmp_path: Path) -> None:
    abc = {**AB, "0003_c": ("CREATE TABLE kd_c (id INTEGER);", "DROP TABLE kd_c;")}
    applied_tree = make_tree(tmp_path / "elsewhere", "kd", "1.2.0", files=_files(abc))
    from atomicplug.database.discovery import discover

    applied = {m.name: m.checksum for m in discover(applied_tree, "kd")}
    home = tmp_path / "home"
    v10 = make_tree(home, "kd", "1.0.0", files=_files(A))
    # A newer tree whose 0002_b differs from what ran: its down is no source for 0002_b, but its 0003_c is.
    other = make_tree(home, "kd", "1.3.0", files=_files({**abc, "0002_b": ("CREATE TABLE kd_b (x TEXT);", "DROP TABLE kd_b;")}))
    change = change_of("kd", "install", new_tree=v10, new_version="1.0.0", allow_downgrade=True)
    with pytest.raises(MigrationError, match="no store tree of kd has the down of applied migration 0002_b"):
        plan_change(change, applied, home)
    v12 = make_tree(home, "kd", "1.2.0", files=_files(abc))
    plan = plan_change(change, applied, home)
    assert [(m.name, m.up_path.parents[1]) for m in plan.reverts] == [("0003_c", other), ("0002_b", v12)]