"""Engines whose DDL is transactional (DESIGN.md "Migrations").

SQLite through pysqlite needs SQLAlchemy's "serializable isolation / savepoints /
transactional DDL" recipe: pysqlite's own transaction handling is switched off
(``isolation_level = None``, which also stops it committing before DDL) and we
emit ``BEGIN IMMEDIATE`` ourselves, so every statement up to COMMIT, DDL
included, is rolled back together, and the write lock is taken at BEGIN.
PostgreSQL has transactional DDL; ``pg_advisory_xact_lock`` makes two
installers on one database take turns. MySQL/MariaDB commit implicitly at
each DDL statement and are refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atomicplug.errors import ConfigError, DatabaseError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

__all__ = [
    "ADVISORY_LOCK_KEY",
    "backend_name",
    "check_url",
    "make_engine",
    "connect",
    "commit_forbidden",
    "take_advisory_lock",
    "sqlite_file_missing",
    "first_line",
    "with_driver",
]

#: Key of the transaction-scoped advisory lock every atomicplug migration takes on PostgreSQL.
ADVISORY_LOCK_KEY = 0x61746F6D69637067  # b"atomicpg"

#: Execution option asking the SQLite "begin" hook for a plain (deferred, read) BEGIN.
READ_ONLY = "atomicplug_read_only"

_AUTOCOMMIT_DDL = {"mysql", "mariadb"}
_SUPPORTED = {"sqlite", "postgresql"}
_HOOK_GUARD = "atomicplug_commit_forbidden"


def backend_name(url: str) -> str:
    """``"postgresql"`` for ``postgresql+psycopg2://…`` (no SQLAlchemy import)."""
    scheme = url.split(":", 1)[0].lower()
    name = scheme.split("+", 1)[0]
    return "postgresql" if name in {"postgres", "pgsql"} else name


def check_url(url: str) -> None:
    """Refuse databases whose DDL cannot be rolled back, or that atomicplug cannot use.

    Raises ConfigError (exit 2).
    """
    name = backend_name(url)
    if name in _AUTOCOMMIT_DDL:
        raise ConfigError(
            f"database_url: {name} is not supported: its DDL commits implicitly, so a failed "
            "migration could not be rolled back (expected sqlite:// or postgresql://)"
        )
    if name not in _SUPPORTED:
        raise ConfigError(f"database_url: expected a sqlite:// or postgresql:// URL (got scheme '{name}')")
    if name == "sqlite":
        database = _sqlite_database(url)
        if not database or database == ":memory:" or database.startswith("file::memory:"):
            raise ConfigError("database_url: an in-memory SQLite database would forget every migration; give a file path")


def _sqlite_database(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    return make_url(url).database


def sqlite_file_missing(url: str) -> bool:
    """True for a SQLite URL whose file does not exist yet (so nothing was ever applied)."""
    if backend_name(url) != "sqlite":
        return False
    database = _sqlite_database(url)
    return bool(database) and not Path(database).exists()


def make_engine(url: str, busy_timeout: float = 30.0) -> Engine:
    """An engine for ``url`` with transactional DDL; one connection, no pooling.

    Raises ConfigError for unsupported URLs, DatabaseError when SQLAlchemy refuses it.
    """
    check_url(url)
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    name = backend_name(url)
    connect_args: dict[str, Any] = {}
    if name == "sqlite":
        # pysqlite's busy handler: wait this long for another writer's lock.
        connect_args["timeout"] = max(busy_timeout, 1.0)
    else:
        connect_args["connect_timeout"] = max(int(busy_timeout), 1)
    try:
        engine = create_engine(with_driver(url), poolclass=NullPool, connect_args=connect_args)
    except Exception as exc:  # bad driver name, missing DBAPI module, malformed URL
        raise DatabaseError(f"database_url: cannot use {name} database: {first_line(exc)}") from exc

    if name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
            # The recipe, part 1: pysqlite must neither BEGIN nor COMMIT on its own.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(max(busy_timeout, 1.0) * 1000)}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # The recipe, part 2: our own BEGIN; IMMEDIATE takes the write lock now, so a
            # second installer waits here instead of failing half-way with "database is locked".
            if conn.get_execution_options().get(READ_ONLY):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

    @event.listens_for(engine, "commit")
    def _guard_commit(conn: Connection) -> None:
        # Install hooks get the live connection; a COMMIT from inside one would
        # break the one-transaction rule, so it is refused before it happens.
        if conn.info.get(_HOOK_GUARD):
            raise RuntimeError("install hooks must not commit: atomicplug commits the whole transaction")

    return engine


def with_driver(url: str) -> Any:
    """A bare ``postgresql://`` means psycopg2 (DESIGN.md's driver); SQLAlchemy 2.1 would pick psycopg 3."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        import importlib.util

        if importlib.util.find_spec("psycopg2") is not None:
            return parsed.set(drivername="postgresql+psycopg2")
    return parsed


@contextmanager
def commit_forbidden(conn: Connection) -> Iterator[None]:
    """While inside, ``conn.commit()`` raises (used around install hooks)."""
    conn.info[_HOOK_GUARD] = True
    try:
        yield
    finally:
        conn.info.pop(_HOOK_GUARD, None)


@contextmanager
def connect(url: str, busy_timeout: float = 30.0, read_only: bool = False) -> Iterator[Connection]:
    """A connection on a fresh engine, disposed afterwards.

    Raises DatabaseError when the database cannot be reached.
    """
    engine = make_engine(url, busy_timeout)
    try:
        try:
            conn = engine.connect()
        except Exception as exc:
            raise DatabaseError(f"cannot connect to the database: {first_line(exc)}") from exc
        try:
            if read_only:
                conn = conn.execution_options(**{READ_ONLY: True})
            yield conn
        finally:
            conn.close()
    finally:
        engine.dispose()


def take_advisory_lock(conn: Connection) -> None:
    """First statement of a PostgreSQL migration transaction: installers take turns."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")


def first_line(exc: BaseException) -> str:
    """The first line of a (DBAPI) error's message, without SQLAlchemy's decorations."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    line = text.splitlines()[0].strip() if text else ""
    return line or type(exc).__name__
