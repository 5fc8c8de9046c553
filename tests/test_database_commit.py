"""No COMMIT is ever ambiguous, and a COMMIT that returned is durable (issue 13, items 2 and 4).

The transaction's xid is journaled (``committing``) before COMMIT is sent; whether
it committed is then asked with ``txid_status(xid)`` on a fresh connection:
committed → forward, aborted → back, in progress → wait, then exit 75. The
reproductions are real: a TCP proxy that loses the client's connection right
after forwarding COMMIT while the server's COMMIT is held back by a deferred
constraint trigger, and a database server killed with ``synchronous_commit = off``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import pytest
from db_fixtures import query, table_names
from pg_cluster import throwaway_cluster
from pg_proxy import CommitDroppingProxy

from atomicplug.errors import CommitInDoubtError, DatabaseError, OperationError
from atomicplug.installer import Installer
from atomicplug.journal.reader import all_journals, pending_journals
from atomicplug.journal.records import RecordType
from atomicplug.registry import Registry
from atomicplug.stages import migrate
from atomicplug.testing import crash_at

PG = [pytest.param("postgresql", marks=pytest.mark.postgres)]


def slow_commit(seconds: float) -> dict[str, tuple[str, str]]:
    """A migration whose COMMIT takes ``seconds``: a deferred constraint trigger sleeps at COMMIT.

    Installed with ``rehearse=False``: its down cannot drop a table with pending trigger events.
    """
    up = (
        "CREATE TABLE slow_items (id INTEGER PRIMARY KEY);\n"
        "CREATE FUNCTION slow_items_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$;\n"
        "CREATE CONSTRAINT TRIGGER slow_items_commit AFTER INSERT ON slow_items\n"
        "  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_items_at_commit();\n"
        "INSERT INTO slow_items VALUES (1);\n"
    )
    down = "DROP TABLE slow_items;\nDROP FUNCTION slow_items_at_commit();\n"
    return {"0001_slow": (up, down)}


def through_proxy(home_factory: Callable[..., Any], database_url: str, proxy: CommitDroppingProxy) -> Any:
    return home_factory(database_url=proxy.url(database_url), health_check=False)


def proxy_for(database_url: str) -> CommitDroppingProxy:
    parts = urlsplit(database_url)
    return CommitDroppingProxy(parts.hostname or "127.0.0.1", parts.port or 5432)


def installed(home: Any) -> dict[str, str]:
    return {pid: e.version for pid, e in Registry.load(home.config.registry_path).plugins.items()}


def records(home: Any) -> list[dict[str, Any]]:
    (journal,) = all_journals(home.config.journal_dir)
    return list(journal.records)


# -- the xid is journaled before COMMIT ------------------------------------------------


def test_committing_record_with_the_xid_comes_before_committed(any_db_home: Any) -> None:
    home = any_db_home
    home.installer.install_file(home.package("shop", migrations={"0001_t": ("CREATE TABLE shop_t (id INTEGER);", "DROP TABLE shop_t;")}))
    kinds = [r["type"] for r in records(home)]
    assert kinds.index(RecordType.COMMITTING) == kinds.index(RecordType.COMMITTED) - 1
    (committing,) = [r for r in records(home) if r["type"] is RecordType.COMMITTING]
    if home.config.database_url.startswith("postgresql"):
        assert isinstance(committing["xid"], int) and committing["xid"] > 0
        ((status,),) = query(home.config.database_url, f"SELECT txid_status({committing['xid']})")
        assert status == "committed"
    else:
        assert committing["xid"] is None


@pytest.mark.slow
def test_recovery_of_a_transaction_that_never_sent_commit_needs_no_database(
    home_factory: Callable[..., Any], database_factory: Callable[[], str]
) -> None:
    """No ``committing`` record: COMMIT never went out, so recovery rolls back without asking
    (before, it asked the ledger and stopped when the database was unreachable)."""
    migrations = {"0001_t": ("CREATE TABLE shop_t (id INTEGER);", "DROP TABLE shop_t;")}
    for point in range(1, 200):
        home = home_factory(name=f"crash-{point}", database_url=database_factory(), health_check=False)
        package = home.package("shop", migrations=migrations)
        assert crash_at(lambda: Installer(home.config).install_file(package), point), "finished before `committing`"
        pending = pending_journals(home.config.journal_dir)
        if pending and RecordType.STAGED in pending[0].types:
            break
    assert RecordType.COMMITTING not in pending[0].types
    unreachable = attrs.evolve(home.config, database_url="postgresql://nobody@127.0.0.1:9/nothing")
    assert Installer(unreachable).recover() == [(pending[0].txid, "back")]
    assert installed(home) == {} and not pending_journals(home.config.journal_dir)
    assert "shop_t" not in table_names(home.config.database_url)


# -- a COMMIT whose connection is lost: ask txid_status, never guess -------------------


@pytest.mark.parametrize("database_factory", PG, indirect=True)
def test_commit_lost_with_its_connection_is_asked_and_the_install_rolls_forward(
    home_factory: Callable[..., Any], database_url: str
) -> None:
    """Before: install reported failure and removed the files, then the server committed
    the tables and the ledger row. Now the install waits for the server's decision."""
    with proxy_for(database_url) as proxy:
        home = through_proxy(home_factory, database_url, proxy)
        result = home.installer.install_file(home.package("slow", migrations=slow_commit(2)), rehearse=False)
        assert proxy.dropped.is_set(), "the proxy never saw the COMMIT"
    assert result.changes == ("install slow 1.0.0",)
    assert installed(home) == {"slow": "1.0.0"}
    assert (home.config.backend_addons / "slow").is_symlink()
    assert "slow_items" in table_names(database_url)
    assert query(database_url, f"SELECT txid FROM atomicplug_transactions WHERE txid = '{result.txid}'") == [(result.txid,)]
    assert not pending_journals(home.config.journal_dir)
    assert all(report.ok for report in home.installer.verify())


@pytest.mark.parametrize("database_factory", PG, indirect=True)
def test_commit_lost_while_the_database_is_unreachable_is_finished_by_recover(
    home_factory: Callable[..., Any], database_url: str
) -> None:
    """The outcome cannot be asked (the connection stays cut): nothing is guessed, the journal
    stays pending, and `recover` rolls forward once the database answers."""
    with proxy_for(database_url) as proxy:
        proxy.refuse_after_drop = True
        home = through_proxy(home_factory, database_url, proxy)
        with pytest.raises(OperationError, match="run `atomicplug recover`") as info:
            home.installer.install_file(home.package("slow", migrations=slow_commit(1)), rehearse=False)
        assert "\n" not in str(info.value)
        (state,) = pending_journals(home.config.journal_dir)
        assert RecordType.COMMITTING in state.types and RecordType.COMMITTED not in state.types
        assert installed(home) == {}
        proxy.refuse_after_drop = False  # the network is back
        assert home.installer.recover() == [(state.txid, "forward")]
    assert installed(home) == {"slow": "1.0.0"}
    assert "slow_items" in table_names(database_url)
    assert all(report.ok for report in home.installer.verify())


@pytest.mark.parametrize("database_factory", PG, indirect=True)
def test_commit_still_undecided_stops_with_exit_75_and_recover_finishes_it_later(
    home_factory: Callable[..., Any], database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``txid_status`` says "in progress" for longer than the wait: exit 75, one line, no guess."""
    from atomicplug.cli import main

    monkeypatch.setattr(migrate, "MIN_COMMIT_WAIT", 0.5)
    with proxy_for(database_url) as proxy:
        home = home_factory(database_url=proxy.url(database_url), health_check=False, lock_timeout=0)
        package = home.package("slow", migrations=slow_commit(4))
        code = main(["--config", str(home.config_path), "install", "--no-rehearse", str(package)])
        assert proxy.dropped.is_set()
    err = capsys.readouterr().err.strip()
    assert code == 75
    assert len(err.splitlines()) == 1 and "outcome is not known yet" in err and "atomicplug recover" in err
    (state,) = pending_journals(home.config.journal_dir)
    assert installed(home) == {}
    direct = attrs.evolve(home.config, database_url=database_url)
    while "slow_items" not in table_names(database_url):  # the server finishes its COMMIT
        time.sleep(0.2)
    assert Installer(direct).recover() == [(state.txid, "forward")]
    assert installed(home) == {"slow": "1.0.0"}


@pytest.mark.parametrize("database_factory", PG, indirect=True)
def test_committed_asks_txid_status_and_waits_for_an_open_transaction(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule itself, on a transaction held open by another connection."""
    import psycopg2

    from atomicplug.config import Config

    monkeypatch.setattr(migrate, "MIN_COMMIT_WAIT", 0.3)
    config = Config.for_directory(tmp_path, database_url=database_url, lock_timeout=0)
    other = psycopg2.connect(database_url)
    try:
        with other.cursor() as cursor:
            cursor.execute("CREATE TABLE held (id INTEGER)")
            cursor.execute("SELECT txid_current()")
            (xid,) = cursor.fetchone()
        with pytest.raises(CommitInDoubtError, match=rf"xid {xid} is still in progress") as info:
            migrate.committed(config, "tx-held", xid)
        assert info.value.exit_code == 75
        other.commit()
        assert migrate.committed(config, "tx-held", xid) is True  # no ledger row needed
    finally:
        other.close()
    aborted = psycopg2.connect(database_url)
    try:
        with aborted.cursor() as cursor:
            cursor.execute("SELECT txid_current()")
            (xid,) = cursor.fetchone()
        aborted.rollback()
    finally:
        aborted.close()
    assert migrate.committed(config, "tx-aborted", xid) is False
    with pytest.raises(DatabaseError, match="cannot ask the database whether transaction tx-future"):
        migrate.committed(config, "tx-future", xid + 10**9)


# -- a COMMIT that returned survives a database crash ------------------------------------


@pytest.mark.postgres
def test_install_survives_a_database_crash_with_synchronous_commit_off(home_factory: Callable[..., Any]) -> None:
    """Before: with synchronous_commit = off the COMMIT returned before its WAL was flushed;
    killing the server right after the install lost the tables and the ledger row while the
    registry said installed. atomicplug now raises it to on for its own COMMIT."""
    settings = {"synchronous_commit": "off", "wal_writer_delay": "10s", "checkpoint_timeout": "1h"}
    with throwaway_cluster(settings) as cluster:
        url = cluster.create_database("app")
        home = home_factory(database_url=url, health_check=False)
        package = home.package("durable", migrations={"0001_t": ("CREATE TABLE durable_t (id INTEGER);", "DROP TABLE durable_t;")})
        result = home.installer.install_file(package)
        cluster.kill_all()
        cluster.start()
        assert installed(home) == {"durable": "1.0.0"}
        assert "durable_t" in table_names(url)
        assert query(url, "SELECT txid FROM atomicplug_transactions") == [(result.txid,)]


def test_recover_with_nothing_pending_imports_no_parser_or_driver(home: Any) -> None:
    """Every app start runs recover: it stays cheap (no pglast, psycopg2 or SQLAlchemy import)."""
    import subprocess
    import sys

    home.installer.install_file(home.package("shop"))
    code = (
        "import sys; from atomicplug.cli import main; "
        f"assert main(['--config', {str(home.config_path)!r}, 'recover']) == 0; "
        "print(sorted(m for m in ('pglast', 'psycopg2', 'sqlalchemy', 'sqlite3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
