"""The ``database_url`` fixture: every database test runs on SQLite and on real PostgreSQL.

PostgreSQL comes from ``$ATOMICPLUG_TEST_POSTGRES_URL`` (start one with
``eval "$(.ci/start-postgres.sh)"``); its role needs CREATEDB: each test gets
a database of its own, dropped afterwards. Without the variable the
PostgreSQL half is skipped, except under ``CI=true``, where it fails.

Load with ``pytest_plugins = ["db_fixtures"]`` in tests/conftest.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["POSTGRES_ENV", "database_factory", "database_url", "postgres_url", "table_names", "query", "execute", "make_tree", "sqlalchemy_url"]

POSTGRES_ENV = "ATOMICPLUG_TEST_POSTGRES_URL"


def sqlalchemy_url(url: str) -> Any:
    """``url`` for a plain SQLAlchemy engine (a bare postgresql:// means psycopg2), as atomicplug does it."""
    from atomicplug.database.engine import with_driver

    return with_driver(url)


def _engine(url: str, **kwargs: Any) -> Any:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(sqlalchemy_url(url), poolclass=NullPool, **kwargs)


def postgres_url() -> str:
    """The server URL from the environment, or skip (fail under CI=true)."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        message = f"{POSTGRES_ENV} is not set (start a server: eval \"$(.ci/start-postgres.sh)\")"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_factory(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    """A function returning the URL of a new, empty database at each call (SQLite file or PG database).

    Databases made this way are dropped when the test ends.
    """
    made: list[str] = []
    if request.param == "sqlite":
        yield lambda: f"sqlite:///{tmp_path / f'app-{len(made)}-{uuid.uuid4().hex[:8]}.db'}"
        return
    from sqlalchemy.engine import make_url

    server = postgres_url()
    admin = _engine(server, isolation_level="AUTOCOMMIT")

    def new() -> str:
        name = f"atomicplug_test_{uuid.uuid4().hex[:16]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        made.append(name)
        return make_url(server).set(database=name).render_as_string(hide_password=False)

    try:
        yield new
    finally:
        admin.dispose()
        _DROPPER.drop(server, made)


class _Dropper:
    """Drops the tests' databases on a thread of its own, so no test waits for them.

    DROP DATABASE costs about 0.35 s here (the crash suites make one database per
    crash point: a few hundred); the drops overlap the next tests instead. At exit
    the queue is drained (bounded), so a run leaves no database behind.
    """

    def __init__(self) -> None:
        import queue
        import threading

        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def drop(self, server: str, names: list[str]) -> None:
        import atexit
        import threading

        for name in names:
            self._queue.put((server, name))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="drop-test-databases", daemon=True)
                self._thread.start()
                atexit.register(self._drain)

    def _run(self) -> None:
        while True:
            server, name = self._queue.get()
            admin = _engine(server, isolation_level="AUTOCOMMIT")
            try:
                _drop_database(admin, name)
            except Exception:  # noqa: BLE001 - a database left behind costs disk, not correctness
                pass
            finally:
                admin.dispose()
                self._queue.task_done()

    def _drain(self) -> None:
        import time

        deadline = time.monotonic() + 120
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.1)


_DROPPER = _Dropper()


def _drop_database(admin: Any, name: str) -> None:
    """DROP DATABASE … WITH (FORCE); retried, since an autovacuum worker (a superuser
    process this role may not terminate) can be attached to the database for a moment."""
    import time

    for attempt in range(20):
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except Exception:
            if attempt == 19:
                raise
            time.sleep(0.25)


@pytest.fixture
def database_url(database_factory: Any) -> str:
    """A URL to an empty database of its own: a SQLite file in tmp_path, or a fresh PG database."""
    return database_factory()


def table_names(url: str) -> set[str]:
    """Tables of the database's default schema, ledger included, as committed."""
    from atomicplug.testing import table_names as committed_tables

    return committed_tables(url, include_ledger=True)


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` from a new connection."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def execute(url: str, sql: str) -> None:
    """Run and commit one statement from a new connection."""
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def make_tree(
    root: Any,
    plugin_id: str = "p1",
    version: str = "1.0.0",
    files: dict[str, str] | None = None,
    permissions: tuple[str, ...] | list[str] = ("database.create_tables",),
) -> Any:
    """A store tree ``root/store/<id>/<version>-<random>`` with metadata.json and ``files``."""
    import json
    from pathlib import Path

    tree = Path(root) / "store" / plugin_id / f"{version}-{uuid.uuid4().hex[:12]}"
    tree.mkdir(parents=True)
    metadata = {"id": plugin_id, "name": plugin_id, "version": version, "permissions": list(permissions)}
    (tree / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    for rel, text in (files or {}).items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tree


def change_of(
    plugin_id: str,
    action: str,
    old_tree: Any = None,
    new_tree: Any = None,
    old_version: str | None = None,
    new_version: str | None = None,
    *,
    keep_data: bool = False,
    allow_downgrade: bool = False,
) -> Any:
    """A :class:`~atomicplug.change.Change` over trees anywhere (an absolute tree path stays itself under home)."""
    from atomicplug.change import Change
    from atomicplug.registry import InstalledPlugin, TreeRef

    def entry(tree: Any, version: str | None) -> InstalledPlugin | None:
        if tree is None:
            return None
        ref = TreeRef(version=version or "0", tree=str(tree), sha256="0" * 64)
        return InstalledPlugin(id=plugin_id, name=plugin_id, current=ref, enabled=True)

    return Change(
        plugin_id=plugin_id,
        action=action,  # type: ignore[arg-type]
        before=entry(old_tree, old_version),
        after=entry(new_tree, new_version),
        keep_data=keep_data,
        allow_downgrade=allow_downgrade,
    )
