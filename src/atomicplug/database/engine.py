"""Connections whose DDL is transactional (docs/design.md "Migrations"), on the DB-API drivers.

Both drivers are put in the same explicit mode and atomicplug sends ``BEGIN``,
``COMMIT``, ``ROLLBACK`` and ``SAVEPOINT`` itself:

- sqlite3 with ``isolation_level=None``: the module neither begins nor commits
  on its own (by default it commits before DDL), so every statement up to
  COMMIT, DDL included, rolls back together; writers ``BEGIN IMMEDIATE``, so
  the write lock is taken at BEGIN and a second installer waits there instead
  of failing half-way with "database is locked". This is the same recipe
  SQLAlchemy documents for pysqlite.
- psycopg2 with ``autocommit=True``: PostgreSQL has transactional DDL;
  ``pg_advisory_xact_lock`` makes two installers on one database take turns.

MySQL/MariaDB commit implicitly at each DDL statement and are refused.

Why not SQLAlchemy here (the first design ran migrations through it):
importing it costs about 0.25 s, a third of installing a 10 MB plugin
(issue 8), and atomicplug needs only the statements above. Install hooks
still get a SQLAlchemy Connection, built over this same connection when a
hook runs (:mod:`atomicplug.database.hooks`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from atomicplug.errors import ConfigError, DatabaseError, LockBusyError

__all__ = [
    "ADVISORY_LOCK_KEY",
    "Database",
    "backend_name",
    "check_url",
    "open_database",
    "connect",
    "sqlite_file_missing",
    "first_line",
    "quote_identifier",
    "with_driver",
]

#: Key of the transaction-scoped advisory lock every atomicplug migration takes on PostgreSQL.
ADVISORY_LOCK_KEY = 0x61746F6D69637067  # b"atomicpg"

_AUTOCOMMIT_DDL = {"mysql", "mariadb"}
_SUPPORTED = {"sqlite", "postgresql"}


def backend_name(url: str) -> str:
    """``"postgresql"`` for ``postgresql+psycopg2://…``."""
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
        database, _ = _sqlite_target(url)
        if not database or database == ":memory:" or database.startswith("file::memory:") or "mode=memory" in database:
            raise ConfigError("database_url: an in-memory SQLite database would forget every migration; give a file path")


def _sqlite_target(url: str) -> tuple[str, bool]:
    """(database argument for sqlite3.connect, uri flag), as SQLAlchemy reads the URL.

    ``sqlite:///relative.db``, ``sqlite:////abs/path.db``; query parameters only
    together with ``uri=true`` (then they are SQLite URI parameters such as ``mode=ro``).
    """
    _scheme, _, rest = url.partition("://")
    if not rest.startswith("/"):
        return "", False  # sqlite:// is SQLAlchemy's in-memory database
    path, _, query = rest[1:].partition("?")
    path = unquote(path)
    if not query:
        return path, False
    params = dict(parse_qsl(query, keep_blank_values=True))
    if params.pop("uri", "").lower() not in {"true", "1"}:
        raise ConfigError(
            f"database_url: SQLite query parameters need uri=true (got '?{query}'); "
            "without them give only the file path"
        )
    rest_query = "&".join(f"{key}={value}" for key, value in params.items())
    return f"file:{path}" + (f"?{rest_query}" if rest_query else ""), True


def sqlite_file_missing(url: str) -> bool:
    """True for a SQLite URL whose file does not exist yet (so nothing was ever applied)."""
    if backend_name(url) != "sqlite":
        return False
    database, uri = _sqlite_target(url)
    if uri:
        database = database.removeprefix("file:").split("?", 1)[0]
    return bool(database) and not Path(database).exists()


def with_driver(url: str) -> Any:
    """The URL for SQLAlchemy (install hooks): a bare ``postgresql://`` means psycopg2, the
    driver atomicplug uses; SQLAlchemy 2.1 would pick psycopg 3."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        return parsed.set(drivername="postgresql+psycopg2")
    return parsed


class Database:
    """One connection in explicit-transaction mode; atomicplug's own SQL uses ``?`` placeholders.

    atomicplug's own statements name their tables through :meth:`qualified` (the
    schema captured before any migration ran) and PostgreSQL's functions as
    ``pg_catalog.*``: a migration may change the session (pg_dump files set
    ``search_path`` to ''), and our statements must mean the same regardless.
    """

    def __init__(self, raw: Any, backend: str, url: str) -> None:
        self.raw = raw
        self.backend = backend
        self.url = url
        self._schema: str | None = None
        self._search_path: str | None = None

    @property
    def schema(self) -> str:
        """The schema of atomicplug's tables and of the rehearsal's snapshots: ``current_schema()``
        when first asked, which :func:`capture_session` does before any migration statement."""
        if self._schema is None:
            self.capture_session()
        assert self._schema is not None
        return self._schema

    def capture_session(self) -> None:
        """Remember the target schema and ``search_path`` as the connection starts out.

        Raises DatabaseError when the search_path names no existing schema.
        """
        if self.backend == "sqlite":
            self._schema = "main"
            return
        ((schema, search_path),) = self.execute(
            "SELECT pg_catalog.current_schema(), pg_catalog.current_setting('search_path')"
        )
        if schema is None:
            raise DatabaseError(
                f"the database user's search_path ({search_path!r}) names no existing schema; "
                "expected one to hold the plugins' tables (e.g. public)"
            )
        self._schema, self._search_path = schema, search_path

    def qualified(self, name: str) -> str:
        """``"schema"."name"``: one of atomicplug's own tables, wherever search_path points."""
        return f"{quote_identifier(self.schema)}.{quote_identifier(name)}"

    def restore_session(self) -> None:
        """Put the session back as the connection started it (a migration may have changed any
        setting, its role included) and the captured ``search_path``: before each migration file,
        hook and our own statements, so each starts from the same session (docs/design.md
        "A migration's session is its own"). ``RESET ALL`` leaves the role alone, hence its own RESETs."""
        if self.backend == "postgresql" and self._search_path is not None:
            self.execute(
                "RESET ALL; RESET ROLE; RESET SESSION AUTHORIZATION; SELECT pg_catalog.set_config('search_path', ?, false)",
                [self._search_path],
            )

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement; returns its rows (empty for statements that return none).

        Without ``params`` the SQL goes to the driver untouched (psycopg2 then leaves
        ``%`` alone), which is how migration scripts run.
        """
        cursor = self.raw.cursor()
        try:
            if params:
                cursor.execute(sql if self.backend == "sqlite" else sql.replace("?", "%s"), tuple(params))
            else:
                cursor.execute(sql)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        finally:
            cursor.close()

    def begin(self) -> None:
        """Start the transaction; on SQLite take the write lock now (BEGIN IMMEDIATE)."""
        self.execute("BEGIN IMMEDIATE" if self.backend == "sqlite" else "BEGIN")
        if self.backend == "postgresql":
            # Installers on one database take turns, for as long as this transaction lasts.
            self.execute(f"SELECT pg_catalog.pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")

    def prepare_commit(self) -> int | None:
        """Last statement before COMMIT: the transaction's xid (None on SQLite), and on
        PostgreSQL a durable COMMIT.

        ``txid_current()`` (epoch-extended) is what ``txid_status`` is later asked
        about (docs/design.md "No COMMIT is ambiguous"). ``synchronous_commit =
        off`` would let COMMIT return before its WAL is flushed, so a database
        crash could forget a transaction we already built on: it is raised to
        ``on`` for this transaction only (the same as ``SET LOCAL``); stronger
        settings (``remote_apply``…) and ``local`` are left alone.
        """
        if self.backend == "sqlite":
            return None
        ((xid, _),) = self.execute(
            "SELECT pg_catalog.txid_current(), CASE WHEN pg_catalog.current_setting('synchronous_commit') = 'off' "
            "THEN pg_catalog.set_config('synchronous_commit', 'on', true) END"
        )
        return int(xid)

    def commit(self) -> None:
        self.execute("COMMIT")

    @property
    def transaction_open(self) -> bool:
        """True while our transaction is open and usable (PostgreSQL: INTRANS, not failed)."""
        if self.backend == "sqlite":
            return bool(self.raw.in_transaction)
        return bool(self.raw.info.transaction_status == 2)  # psycopg2 TRANSACTION_STATUS_INTRANS

    @property
    def in_transaction(self) -> bool:
        if self.backend == "sqlite":
            return bool(self.raw.in_transaction)
        return bool(self.raw.info.transaction_status != 0)  # 0: idle, outside a transaction

    def rollback_quietly(self) -> None:
        """Roll back if a transaction is open; a broken connection rolls back on its own."""
        try:
            if self.in_transaction:
                self.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - the server rolls back when the connection goes
            pass

    @contextmanager
    def savepoint(self, name: str) -> Iterator[None]:
        """Everything inside is undone when it ends, however it ends (``ROLLBACK TO``).

        When what failed inside ended the whole transaction (SQLite's ``OR ROLLBACK``, a full
        disk, a lost connection), rolling back to the savepoint fails too: the error in flight is
        the one reported, not "no such savepoint" (the caller rolls the transaction back anyway).
        """
        self.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            try:
                self._undo_savepoint(name)
            except Exception:  # noqa: BLE001 - the transaction is gone: the error in flight says why
                pass
            raise
        self._undo_savepoint(name)

    def _undo_savepoint(self, name: str) -> None:
        self.execute(f"ROLLBACK TO SAVEPOINT {name}")
        self.execute(f"RELEASE SAVEPOINT {name}")

    def close(self) -> None:
        try:
            self.raw.close()
        except Exception:  # noqa: BLE001 - already broken; nothing left to release
            pass


def open_database(url: str, busy_timeout: float = 30.0) -> Database:
    """A new connection for ``url``, in explicit-transaction mode.

    Raises ConfigError for unsupported URLs, DatabaseError "cannot connect to the
    database: …" when it cannot be reached or the driver is missing.
    """
    check_url(url)
    name = backend_name(url)
    try:
        if name == "sqlite":
            raw = _connect_sqlite(url, busy_timeout)
        else:
            raw = _connect_postgresql(url, busy_timeout)
    except DatabaseError:
        raise
    except Exception as exc:
        raise DatabaseError(f"cannot connect to the database: {first_line(exc)}") from exc
    return Database(raw, name, url)


def _connect_sqlite(url: str, busy_timeout: float) -> Any:
    import sqlite3

    database, uri = _sqlite_target(url)
    # timeout: sqlite3's busy handler waits this long for another writer's lock.
    raw = sqlite3.connect(database, timeout=max(busy_timeout, 1.0), isolation_level=None, uri=uri)
    raw.execute("PRAGMA foreign_keys=ON")
    return raw


def _connect_postgresql(url: str, busy_timeout: float) -> Any:
    try:
        import psycopg2
    except ImportError:
        raise DatabaseError(
            "cannot connect to the database: PostgreSQL needs the psycopg2 driver (pip install 'atomicplug[postgresql]')"
        ) from None
    # libpq reads postgresql:// URIs itself; only SQLAlchemy's "+driver" suffix must go.
    dsn = "postgresql://" + url.split("://", 1)[1]
    raw = psycopg2.connect(dsn, connect_timeout=max(int(busy_timeout), 1))
    raw.autocommit = True  # atomicplug sends BEGIN/COMMIT itself, as on SQLite
    return raw


@contextmanager
def connect(url: str, busy_timeout: float = 30.0) -> Iterator[Database]:
    """A connection for the length of the block (reads run in autocommit, one statement each)."""
    database = open_database(url, busy_timeout)
    try:
        yield database
    finally:
        database.rollback_quietly()
        database.close()


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (the same rule on SQLite and PostgreSQL)."""
    return '"' + name.replace('"', '""') + '"'


def is_busy(exc: BaseException) -> bool:
    """SQLite's "database is locked": another connection (the application's own write, a backup)
    held its lock past the busy timeout. A busy resource to retry, not a failed migration."""
    import sqlite3

    cause = getattr(exc, "orig", None) or exc
    return isinstance(cause, sqlite3.OperationalError) and getattr(cause, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def busy_error(waited: float) -> LockBusyError:
    return LockBusyError(f"the database is busy: another connection held its lock for {waited:g}s; nothing changed, try again later")


def first_line(exc: BaseException) -> str:
    """The first line of a (DBAPI) error's message, without SQLAlchemy's decorations."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    line = text.splitlines()[0].strip() if text else ""
    return line or type(exc).__name__
