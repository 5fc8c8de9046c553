"""The cluster's tables and connections (docs/design.md "Beyond one machine").

Created on first use, in a short transaction of their own under an advisory
lock of their own (:data:`SCHEMA_LOCK_KEY`), so two nodes starting together
do not race on ``CREATE TABLE`` and no node waits for a writer's long
transaction just to find the tables. Every statement names the tables in the
schema the connection starts in (``db.qualified``), like the ledger.

``atomicplug_cluster``            one row: the desired generation and the txid that made it
``atomicplug_cluster_plugins``    the desired plugins: id, version, package sha256, enabled, ...
``atomicplug_cluster_generations`` each generation announced (staged), committed or withdrawn
``atomicplug_cluster_nodes``      node id, applied and staged generation, last seen, last error
``atomicplug_cluster_packages``   verified packages by sha256 (+ signature), in 1 MiB chunks
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlencode

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.database.engine import Database

__all__ = [
    "STATE",
    "PLUGINS",
    "GENERATIONS",
    "NODES",
    "PACKAGES",
    "CHUNKS",
    "SCHEMA_LOCK_KEY",
    "LISTENER_PREFIX",
    "ensure_tables",
    "cluster_database",
    "database_errors",
    "listener_url",
]

STATE = "atomicplug_cluster"
PLUGINS = "atomicplug_cluster_plugins"
GENERATIONS = "atomicplug_cluster_generations"
NODES = "atomicplug_cluster_nodes"
PACKAGES = "atomicplug_cluster_packages"
CHUNKS = "atomicplug_cluster_package_chunks"

#: Held (transaction-scoped) while the tables are created; not the writers' key.
SCHEMA_LOCK_KEY = 0x61746F6D69637363  # b"atomicsc"
#: A listening node's connections carry ``application_name = atomicplug:<node_id>``:
#: ``pg_stat_activity`` then tells which nodes are live, without any heartbeat query.
LISTENER_PREFIX = "atomicplug:"

_DDL = (
    """CREATE TABLE IF NOT EXISTS {STATE} (
        id SMALLINT PRIMARY KEY CHECK (id = 1),
        generation BIGINT NOT NULL,
        txid VARCHAR(64) NOT NULL,
        committed_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS {PLUGINS} (
        plugin_id VARCHAR(64) PRIMARY KEY,
        version VARCHAR(64) NOT NULL,
        sha256 CHAR(64) NOT NULL,
        enabled BOOLEAN NOT NULL,
        previous_version VARCHAR(64),
        previous_sha256 CHAR(64),
        txid VARCHAR(64) NOT NULL,
        installed_at VARCHAR(40) NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS {GENERATIONS} (
        generation BIGINT PRIMARY KEY,
        txid VARCHAR(64) NOT NULL,
        xid BIGINT,
        state VARCHAR(16) NOT NULL,
        plugins TEXT NOT NULL,
        announced_at TIMESTAMPTZ NOT NULL,
        committed_at TIMESTAMPTZ
    )""",
    """CREATE TABLE IF NOT EXISTS {NODES} (
        node_id VARCHAR(48) PRIMARY KEY,
        generation BIGINT,
        staged BIGINT,
        staged_txid VARCHAR(64),
        last_seen TIMESTAMPTZ NOT NULL,
        error TEXT,
        error_generation BIGINT
    )""",
    """CREATE TABLE IF NOT EXISTS {PACKAGES} (
        sha256 CHAR(64) PRIMARY KEY,
        plugin_id VARCHAR(64) NOT NULL,
        version VARCHAR(64) NOT NULL,
        size BIGINT NOT NULL,
        signature TEXT,
        stored_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS {CHUNKS} (
        sha256 CHAR(64) NOT NULL REFERENCES {PACKAGES} (sha256) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (sha256, seq)
    )""",
    # Zips are compressed already: store the chunks as they are, out of line.
    "ALTER TABLE {CHUNKS} ALTER COLUMN data SET STORAGE EXTERNAL",
)
_NAMES = {"STATE": STATE, "PLUGINS": PLUGINS, "GENERATIONS": GENERATIONS, "NODES": NODES, "PACKAGES": PACKAGES, "CHUNKS": CHUNKS}
_ALL = tuple(_NAMES.values())


def _missing(db: Database) -> bool:
    from atomicplug.database.ledger import existing_tables

    return existing_tables(db, list(_ALL)) != set(_ALL)


def ensure_tables(db: Database) -> None:
    """Create the cluster's tables if any is missing (autocommit connection; one short transaction)."""
    if not _missing(db):
        return
    db.execute("BEGIN")
    try:
        db.execute("SELECT pg_catalog.pg_advisory_xact_lock(?)", [SCHEMA_LOCK_KEY])
        names = {key: db.qualified(table) for key, table in _NAMES.items()}
        for statement in _DDL:
            db.execute(statement.format(**names))
        db.execute("COMMIT")
    except BaseException:
        db.rollback_quietly()
        raise


def listener_url(url: str, node_id: str) -> str:
    """``url`` with libpq keepalives (a dead server is noticed by an idle listener) and the node's name."""
    params = {
        "application_name": f"{LISTENER_PREFIX}{node_id}",
        "keepalives": "1",
        "keepalives_idle": "10",
        "keepalives_interval": "5",
        "keepalives_count": "3",
    }
    return url + ("&" if "?" in url else "?") + urlencode(params)


@contextmanager
def cluster_database(config: Config, *, listening: bool = False) -> Iterator[Database]:
    """An autocommit connection to the cluster's database, closed at the end; tables ensured.

    ``listening``: named ``atomicplug:<node_id>`` (liveness) and with keepalives.
    Raises DatabaseError when it cannot connect.
    """
    from atomicplug.database.engine import connect, first_line
    from atomicplug.errors import DatabaseError

    url = listener_url(config.database_url, config.node_id) if listening else config.database_url
    with connect(url, max(config.lock_timeout, 10.0)) as db:
        try:
            ensure_tables(db)
        except Exception as exc:
            raise DatabaseError(f"cannot create the cluster tables: {first_line(exc)}") from exc
        yield db


@contextmanager
def database_errors() -> Iterator[None]:
    """The driver's errors (a lost connection, a restarted server) as one-line DatabaseErrors."""
    from atomicplug.database.engine import first_line
    from atomicplug.errors import AtomicplugError, DatabaseError

    try:
        yield
    except AtomicplugError:
        raise
    except Exception as exc:
        if type(exc).__module__.split(".")[0] != "psycopg2":
            raise
        raise DatabaseError(f"cluster database: {first_line(exc)}") from exc
