"""Connections and the transaction around everything: the SQLite recipe, locking, URLs, the COMMIT crash points."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from db_fixtures import make_tree, table_names, change_of

from atomicplug.config import Config
from atomicplug.database.engine import connect, open_database
from atomicplug.errors import ConfigError, DatabaseError, MigrationError
from atomicplug.stages.migrate import committed, run

LEDGER = {"atomicplug_migrations", "atomicplug_transactions"}


def test_sqlite_recipe_rolls_back_ddl(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'recipe.db'}"
    with connect(url) as db:
        db.begin()
        db.execute("CREATE TABLE a (id INTEGER)")
        db.execute("CREATE INDEX ix_a ON a (id)")
        db.execute("ROLLBACK")
    assert table_names(url) == set()


def test_sqlite_recipe_turns_on_foreign_keys(tmp_path: Path) -> None:
    with connect(f"sqlite:///{tmp_path / 'fk.db'}") as db:
        assert db.execute("PRAGMA foreign_keys") == [(1,)]


def test_sqlite_begin_is_immediate_so_a_second_writer_waits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    with connect(url, busy_timeout=1.0) as holder, connect(url, busy_timeout=1.0) as waiter:
        holder.begin()
        holder.execute("SELECT 1")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            waiter.begin()  # BEGIN IMMEDIATE itself waits for the write lock, then gives up


def test_default_sqlite3_mode_would_not_roll_back_ddl(tmp_path: Path) -> None:
    """Why the recipe exists: sqlite3's default transaction handling (before Python 3.12's
    autocommit attribute) does not make DDL part of a transaction it can roll back."""
    path = tmp_path / "plain.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE a (id INTEGER)")
    raw.rollback()
    raw.close()
    if "a" not in table_names(f"sqlite:///{path}"):  # pragma: no cover - a sqlite3 that got this right
        pytest.skip("this Python's sqlite3 already makes DDL transactional")
    assert "a" in table_names(f"sqlite:///{path}")


def test_savepoint_undoes_everything_inside_it(tmp_path: Path, database_url: str) -> None:
    with connect(database_url) as db:
        db.begin()
        db.execute("CREATE TABLE kept (id INTEGER)")
        with db.savepoint("probe"):
            db.execute("CREATE TABLE undone (id INTEGER)")
        db.commit()
    assert table_names(database_url) == {"kept"}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///relative.db", ("relative.db", False)),
        ("sqlite:////abs/app%20data.db", ("/abs/app data.db", False)),
        ("sqlite+pysqlite:////abs/app.db?mode=ro&uri=true", ("file:/abs/app.db?mode=ro", True)),
    ],
)
def test_sqlite_urls_read_as_sqlalchemy_reads_them(url: str, expected: tuple[str, bool]) -> None:
    from atomicplug.database.engine import _sqlite_target

    assert _sqlite_target(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite:////abs/app.db?timeout=3", "need uri=true"),
        ("mysql://u:p@h/db", "commits implicitly"),
        ("oracle://u:p@h/db", "expected a sqlite:// or postgresql://"),
    ],
)
def test_unusable_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_database(url)


def test_importing_the_database_step_does_not_import_sqlalchemy(tmp_path: Path) -> None:
    """Issue 8: SQLAlchemy costs ~0.25 s to import; only install hooks need it."""
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from atomicplug.config import Config
        from atomicplug.stages.migrate import check, committed, run
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from db_fixtures import change_of, make_tree
        tree = make_tree(Path({str(tmp_path)!r}), files={{"migrations/up.sql": "CREATE TABLE a (id INTEGER);", "migrations/down.sql": "DROP TABLE a;"}})
        config = Config.for_directory(Path({str(tmp_path)!r}), database_url="sqlite:///" + {str(tmp_path / "app.db")!r})
        changes = [change_of("p1", "install", new_tree=tree, new_version="1.0.0")]
        check(config, changes)
        run(config, "tx-1", "install", changes)
        assert committed(config, "tx-1")
        print(sorted(m for m in sys.modules if m.startswith("sqlalchemy")))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_unreachable_database_is_a_database_error_for_committed(tmp_path: Path) -> None:
    config = Config.for_directory(tmp_path, database_url="postgresql://u:p@127.0.0.1:1/nowhere")
    with pytest.raises(DatabaseError, match="cannot connect to the database"):
        committed(config, "tx-1")


def test_unreachable_database_is_a_migration_error_for_run(tmp_path: Path) -> None:
    config = Config.for_directory(tmp_path, database_url="postgresql://u:p@127.0.0.1:1/nowhere")
    with pytest.raises(MigrationError, match="cannot connect to the database"):
        run(config, "tx-1", "install", [])


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
        import sys
        from pathlib import Path
        from atomicplug.config import Config
        from atomicplug.stages.migrate import run
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from db_fixtures import change_of
        config = Config.for_directory(Path({str(tmp_path)!r}), database_url={database_url!r})
        run(config, "tx-kill", "install", [change_of("p1", "install", new_tree=Path({str(tree)!r}))])
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
            run(config, f"tx-{pid}", "install", [change_of(pid, "install", new_tree=trees[pid], new_version="1.0.0")])
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
