"""The fleet view of cluster mode: which node runs which generation, and waiting for all of them.

docs/design.md "Beyond one machine": in cluster mode an operation of this
panel commits the cluster's next generation and switches this node; it is
*done* when every live node has switched too (their rows say so). Nodes that
cannot apply it report an error on their row and keep their last good
generation: the operation then ends with them named.
"""

from __future__ import annotations

import time
from typing import Any

from atomicplug.config import Config

__all__ = ["FLEET_WAIT", "fleet_status", "wait_for_fleet"]

#: How long an operation waits for the live nodes to switch before it reports the laggards.
FLEET_WAIT = 60.0


def fleet_status(config: Config) -> dict[str, Any] | None:
    """``{"generation", "nodes": [...], "converged"}``, or None outside cluster mode; blocking."""
    if not config.cluster:
        return None
    from atomicplug.cluster.nodes import read_status
    from atomicplug.cluster.sync import database_errors
    from atomicplug.cluster.tables import cluster_database

    with database_errors(), cluster_database(config) as db:
        status = read_status(db)
    return status.to_dict() | {"converged": status.converged()}


def wait_for_fleet(config: Config, generation: int | None, timeout: float = FLEET_WAIT) -> dict[str, Any] | None:
    """Poll the node rows until every live node runs ``generation`` (or later), failed it, or ``timeout``; blocking."""
    deadline = time.monotonic() + timeout
    while True:
        fleet = fleet_status(config)
        if fleet is None:
            return None
        wanted = fleet["generation"] if generation is None else generation
        waiting = [
            n for n in fleet["nodes"]
            if n["live"] and (n["generation"] or 0) < wanted and n["error_generation"] != wanted
        ]  # fmt: skip
        if not waiting or time.monotonic() >= deadline:
            fleet["waiting"] = [n["node_id"] for n in waiting]
            fleet["converged"] = not waiting and all(n["error_generation"] != wanted for n in fleet["nodes"] if n["live"])
            return fleet
        time.sleep(0.1)
