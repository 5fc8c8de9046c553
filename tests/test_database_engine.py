"""Engines and the transaction around everything: the SQLite recipe, locking, the COMMIT crash points."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from db_fixtures import make_tree, table_names

from atomicplug.config import Config
from atomicplug.database.engine import make_engine
from atomicplug.errors import DatabaseError, MigrationError
from atomicplug.stages.migrate import PluginChange, committed, run

LEDGER = {"atomicplug_migrations", "atomicplug_transactions"}


def test_sqlite_recipe_rolls_back_ddl(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'recipe.db'}"
    engine = make_engine(url)
    with engine.connect() as conn:
        transaction = conn.begin()
        conn.exec_driver_sql("CREATE TABLE a (id INTEGER)")
        conn.exec_driver_sql("CREATE INDEX ix_a ON a (id)")
        transaction.rollback()
    engine.dispose()
    assert table_names(url) == set()


def test_sqlite_recipe_turns_on_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fk.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_sqlite_begin_is_immediate_so_a_second_writer_waits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    first, second = make_engine(url, busy_timeout=1.0), make_engine(url, busy_timeout=1.0)
    with first.connect() as holder:
        holder.begin()
        holder.exec_driver_sql("SELECT 1")
        with second.connect() as waiter:
            with pytest.raises(Exception, match="locked"):
                waiter.begin()  # BEGIN IMMEDIATE itself waits for the write lock, then gives up
    first.dispose()
    second.dispose()


def test_plain_pysqlite_engine_would_not_roll_back_ddl_after_a_commit_by_pysqlite(tmp_path: Path) -> None:
    """Why the recipe exists: without it, SQLAlchemy's begin is not a real BEGIN for DDL
    (legacy pysqlite transaction handling), so a CREATE TABLE survives a rollback here."""
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'plain.db'}"
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        conn.begin()
        conn.exec_driver_sql("CREATE TABLE a (id INTEGER)")
        conn.rollback()
    engine.dispose()
    if "a" not in table_names(url):  # pragma: no cover - a Python whose sqlite3 got this right
        pytest.skip("this Python's sqlite3 already makes DDL transactional")
    assert "a" in table_names(url)


def test_postgres_url_without_driver_uses_psycopg2() -> None:
    engine = make_engine("postgresql://u:p@127.0.0.1:1/db")
    assert engine.dialect.driver == "psycopg2"
    engine.dispose()


def test_unreachable_database_is_a_database_error_for_committed(tmp_path: Path) -> None:
    config = Config.for_directory(tmp_path, database_url="postgresql://u:p@127.0.0.1:1/nowhere")
    with pytest.raises(DatabaseError, match="cannot connect to the database"):
        committed(config, "tx-1")


def test_unreachable_database_is_a_migration_error_for_run(tmp_path: Path) -> None:
    config = Config.for_directory(tmp_path, database_url="postgresql://u:p@127.0.0.1:1/nowhere")
    with pytest.raises(MigrationError, match="cannot connect to the database"):
        run(config, "tx-1", "install", [])


def test_importing_the_seam_does_not_import_sqlalchemy() -> None:
    code = "import sys, atomicplug.stages.migrate; print(any(m.startswith('sqlalchemy') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_crash_points_sit_right_before_and_right_after_commit(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import atomicplug.stages.migrate as migrate

    config = Config.for_directory(tmp_path, database_url=database_url)
    seen: list[bool] = []
    monkeypatch.setattr(migrate, "crash_point", lambda: seen.append(committed(config, "tx-1")))
    run(config, "tx-1", "install", [])
    assert seen == [False, True]


@pytest.mark.parametrize(("crash_at", "expect_committed"), [(1, False), (2, True)], ids=["before-commit", "after-commit"])
def test_sigkill_at_the_commit_crash_points(tmp_path: Path, database_url: str, crash_at: int, expect_committed: bool) -> None:
    tree = make_tree(tmp_path, files={"migrations/up.sql": "CREATE TABLE a (id INTEGER);", "migrations/down.sql": "DROP TABLE a;"})
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from atomicplug.config import Config
        from atomicplug.stages.migrate import PluginChange, run
        config = Config.for_directory(Path({str(tmp_path)!r}), database_url={database_url!r})
        run(config, "tx-kill", "install", [PluginChange("p1", "install", new_tree=Path({str(tree)!r}))])
        print("survived")
        """
    )
    env = {**os.environ, "ATOMICPLUG_CRASH_AT": str(crash_at)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    config = Config.for_directory(tmp_path, database_url=database_url)
    assert committed(config, "tx-kill") is expect_committed
    assert ("a" in table_names(database_url)) is expect_committed


def test_two_concurrent_runs_take_turns(tmp_path: Path, database_url: str) -> None:
    """SQLite: BEGIN IMMEDIATE; PostgreSQL: pg_advisory_xact_lock. Each hook records when it
    ran inside its transaction; the two intervals must not overlap and both must commit."""
    log = tmp_path / "intervals.log"
    hook = textwrap.dedent(
        f"""
        import time
        def install(conn, ctx):
            start = time.monotonic()
            time.sleep(0.6)
            with open({str(log)!r}, "a") as f:
                f.write(f"{{ctx.plugin_id}} {{start}} {{time.monotonic()}}\\n")
        """
    )
    config = Config.for_directory(tmp_path, database_url=database_url)
    trees = {
        pid: make_tree(
            tmp_path,
            pid,
            files={
                f"migrations/0001_{pid}.up.sql": f"CREATE TABLE {pid}_t (id INTEGER);",
                f"migrations/0001_{pid}.down.sql": f"DROP TABLE {pid}_t;",
                "backend/install.py": hook,
            },
        )
        for pid in ("one", "two")
    }
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker(pid: str) -> None:
        try:
            barrier.wait()
            run(config, f"tx-{pid}", "install", [PluginChange(pid, "install", new_tree=trees[pid], new_version="1.0.0")])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(pid,)) for pid in trees]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    intervals = sorted(tuple(map(float, line.split()[1:])) for line in log.read_text().splitlines())
    assert len(intervals) == 2
    (_, first_end), (second_start, _) = intervals
    assert first_end <= second_start, f"transactions overlapped: {intervals}"
    assert committed(config, "tx-one") and committed(config, "tx-two")
    assert {"one_t", "two_t"} | LEDGER <= table_names(database_url)
