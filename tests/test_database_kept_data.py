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


def test_gc_keeps_the_store_tree_whose_downs_the_kept_data_needs(any_db_home: Any) -> None:
    """gc removed 1.1's tree once no kept generation showed it, although the database still held
    1.1's tables: the downgrade that needs 0002_b's down was then refused. The ledger says whose
    tables stay, so gc keeps those plugins' trees (and their objects) until the data goes."""
    home = any_db_home
    v10, _ = kept_1_1(home)
    # Two more generations: none that gc keeps shows kd any more.
    home.installer.install_file(home.package("other"))
    home.installer.install_file(home.package("other", "1.1.0"))
    trees = sorted(p.name for p in (home.config.store_dir / "kd").iterdir())
    assert home.installer.gc()["generations"] >= 1  # the ones that showed kd go; its trees stay
    assert sorted(p.name for p in (home.config.store_dir / "kd").iterdir()) == trees
    assert all(report.ok for report in home.installer.verify())
    home.installer.install_file(v10, allow_downgrade=True)
    assert installed(home) == {"kd": "1.0.0", "other": "1.1.0"}
    assert {name for name in table_names(home.config.database_url) if name.startswith("kd")} == {"kd_a"}
    assert ledger(home)[-1] == ("0002_b", "down")
    # Once no table is kept any more, gc removes the trees no kept generation shows.
    home.installer.uninstall("kd")
    for version in ("1.2.0", "1.3.0"):
        home.installer.install_file(home.package("other", version))
    home.installer.gc()
    assert not (home.config.store_dir / "kd").exists()


def test_gc_that_cannot_read_the_ledger_removes_nothing_and_says_why(home: Any) -> None:
    from atomicplug.errors import OperationError
    from atomicplug.testing import snapshot

    v10, _ = kept_1_1(home)
    home.installer.install_file(home.package("other"))
    home.installer.install_file(home.package("other", "1.1.0"))
    database = Path(home.config.database_url.removeprefix("sqlite:///"))
    good = database.read_bytes()
    database.write_bytes(b"not a database" * 100)
    files = sorted(p.relative_to(home.config.home) for p in home.config.home.rglob("*"))
    for dry_run in (True, False):
        with pytest.raises(OperationError) as info:
            home.installer.gc(dry_run=dry_run)
        message = str(info.value)
        assert message.startswith("gc: cannot read the migration ledger: ") and message.endswith("nothing was removed")
        assert "\n" not in message
    assert sorted(p.relative_to(home.config.home) for p in home.config.home.rglob("*")) == files
    database.write_bytes(good)  # the database back: gc goes on, and keeps kd's trees
    before = snapshot(home.config)
    home.installer.gc()
    assert snapshot(home.config) == before and (home.config.store_dir / "kd").is_dir()
    home.installer.install_file(v10, allow_downgrade=True)


def test_allow_downgrade_refuses_clearly_when_no_store_tree_has_the_down(any_db_home: Any) -> None:
    import shutil

    home = any_db_home
    v10, _ = kept_1_1(home)
    home.installer.install_file(home.package("other"))
    home.installer.install_file(home.package("other", "1.1.0"))
    for tree in (home.config.store_dir / "kd").iterdir():
        shutil.rmtree(tree)  # gone by hand (gc keeps it while the database keeps its tables)
    with pytest.raises(MigrationError, match=r"^plugin kd: no store tree of kd has the down of applied migration 0002_b") as info:
        home.installer.install_file(v10, allow_downgrade=True)
    assert "install a version that has it" in str(info.value)
    assert installed(home) == {"other": "1.1.0"}
    assert {"kd_a", "kd_b"} <= table_names(home.config.database_url)


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

def test_a_rollback_over_kept_data_names_the_install_that_downgrades_it(any_db_home: Any) -> None:
    """Found from outside: `rollback --generation` to a generation with kd 1.0.0 over data kept from
    1.1 said "use --allow-downgrade", which rollback does not take."""
    home = any_db_home
    home.installer.install_file(home.package("kd", "1.0.0", migrations=A))  # generation 1
    home.installer.install_file(home.package("kd", "1.1.0", migrations=AB))
    home.installer.uninstall("kd", keep_data=True)
    with pytest.raises(UsageError) as info:
        home.installer.rollback(generation=1)
    assert str(info.value).endswith(
        "install a version that has it, or install kd 1.0.0 with --allow-downgrade (its zip, or "
        "`atomicplug install kd==1.0.0`), which runs its down from the store"
    )
