"""Node rows, liveness and the fleet's status (docs/design.md "Beyond one machine").

A node writes its row only when something happens (it applied or staged a
generation, or failed to): an idle node sends no query at all. Whether a
node is *live* is asked of PostgreSQL itself: a listening node's connection
is named ``atomicplug:<node_id>`` (``pg_stat_activity.application_name``, which
every role may read), and a connection that dies takes the name with it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from atomicplug.cluster import CHANNEL, tables
from atomicplug.cluster.desired import read_desired

if TYPE_CHECKING:
    from atomicplug.database.engine import Database

__all__ = ["NodeState", "ClusterStatus", "report", "notify", "live_nodes", "read_status"]

_UNSET: Any = object()
#: Longest error text kept on a node's row.
_MAX_ERROR = 2000


def notify(db: Database, event: str, **fields: Any) -> None:
    """``NOTIFY atomicplug`` with a small JSON payload (inside a transaction: sent at COMMIT)."""
    payload = json.dumps({"event": event, **fields}, sort_keys=True, separators=(",", ":"))
    db.execute("SELECT pg_catalog.pg_notify(?, ?)", [CHANNEL, payload])


def report(
    db: Database,
    node_id: str,
    *,
    generation: int | None = _UNSET,
    staged: int | None = _UNSET,
    staged_txid: str | None = _UNSET,
    error: str | None = _UNSET,
    error_generation: int | None = _UNSET,
) -> None:
    """Update this node's row (created on first report), then NOTIFY so a waiting writer looks."""
    values = {
        "generation": generation,
        "staged": staged,
        "staged_txid": staged_txid,
        "error": error[:_MAX_ERROR] if isinstance(error, str) else error,
        "error_generation": error_generation,
    }
    given = {k: v for k, v in values.items() if v is not _UNSET}
    columns = ["node_id", "last_seen", *given]
    marks = ", ".join(["?", "pg_catalog.clock_timestamp()", *("?" for _ in given)])
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[1:])
    db.execute(
        f"INSERT INTO {db.qualified(tables.NODES)} ({', '.join(columns)}) VALUES ({marks}) "
        f"ON CONFLICT (node_id) DO UPDATE SET {updates}",
        [node_id, *given.values()],
    )
    notify(db, "node", node_id=node_id, **{k: v for k, v in given.items() if k != "error"})


def live_nodes(db: Database) -> set[str]:
    """Node ids with a listening connection to this database right now."""
    rows = db.execute(
        "SELECT DISTINCT application_name FROM pg_catalog.pg_stat_activity "
        "WHERE datname = pg_catalog.current_database() AND application_name LIKE ?",
        [tables.LISTENER_PREFIX + "%"],
    )
    return {str(row[0])[len(tables.LISTENER_PREFIX) :] for row in rows}


@attrs.frozen
class NodeState:
    """One row of ``atomicplug_cluster_nodes``, with its liveness and lag behind the desired generation."""

    node_id: str
    generation: int | None
    staged: int | None
    last_seen: datetime | None
    error: str | None
    error_generation: int | None
    live: bool
    lag: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "generation": self.generation,
            "staged": self.staged,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "error": self.error,
            "error_generation": self.error_generation,
            "live": self.live,
            "lag": self.lag,
        }


@attrs.frozen
class ClusterStatus:
    """The desired generation and every node known to the cluster."""

    generation: int
    txid: str
    nodes: tuple[NodeState, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"generation": self.generation, "txid": self.txid, "nodes": [node.to_dict() for node in self.nodes]}

    def converged(self, generation: int | None = None) -> bool:
        """Has every live node switched to ``generation`` (default: the desired one) or later?"""
        wanted = self.generation if generation is None else generation
        return all(node.generation is not None and node.generation >= wanted for node in self.nodes if node.live)


def read_status(db: Database) -> ClusterStatus:
    desired = read_desired(db)
    generation = desired.generation if desired else 0
    live = live_nodes(db)
    rows = db.execute(
        f"SELECT node_id, generation, staged, last_seen, error, error_generation FROM {db.qualified(tables.NODES)} ORDER BY node_id"
    )
    known = {str(row[0]) for row in rows}
    rows += [(node_id, None, None, None, None, None) for node_id in sorted(live - known)]
    nodes = tuple(
        NodeState(
            node_id=str(node_id),
            generation=applied,
            staged=staged,
            last_seen=last_seen,
            error=error,
            error_generation=error_generation,
            live=str(node_id) in live,
            lag=None if applied is None else max(generation - int(applied), 0),
        )
        for node_id, applied, staged, last_seen, error, error_generation in rows
    )
    return ClusterStatus(generation=generation, txid=desired.txid if desired else "", nodes=nodes)
