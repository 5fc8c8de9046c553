"""``LISTEN atomicplug`` on one named connection, and waiting for its events (or a stop).

An idle node sits in ``select()`` on this connection's socket: no query is
sent until a notification arrives (docs/design.md "Beyond one machine"). The
same connection answers the node's queries while it syncs, so a node holds
one connection to the database, and its name (``atomicplug:<node_id>``) is
what makes it count as live.
"""

from __future__ import annotations

import json
import os
import select
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from atomicplug.cluster import CHANNEL
from atomicplug.cluster.tables import cluster_database

if TYPE_CHECKING:
    from atomicplug.config import Config

__all__ = ["Listener"]


class Listener:
    """This node's listening connection (``db``) and its queue of events."""

    def __init__(self, config: Config) -> None:
        self._stack = ExitStack()
        self.db = self._stack.enter_context(cluster_database(config, listening=True))
        self.db.execute(f"LISTEN {CHANNEL}")
        self._wake_read, self._wake_write = os.pipe()
        self._stack.callback(os.close, self._wake_read)
        self._stack.callback(os.close, self._wake_write)
        self.stopped = False

    def wait(self, timeout: float | None) -> list[dict[str, Any]]:
        """Events received so far, else those that arrive within ``timeout`` (None: until one does).

        Raises the driver's OperationalError when the connection is lost.
        """
        events = self._drain()
        if events or self.stopped:
            return events
        ready, _, _ = select.select([self.db.raw, self._wake_read], [], [], timeout)
        if self._wake_read in ready:
            os.read(self._wake_read, 64)
        self.db.raw.poll()
        return self._drain()

    def stop(self) -> None:
        """Make a waiting :meth:`wait` return (from another thread or a signal handler)."""
        self.stopped = True
        os.write(self._wake_write, b"x")

    def _drain(self) -> list[dict[str, Any]]:
        events = []
        notifies = self.db.raw.notifies
        while notifies:
            note = notifies.pop(0)
            try:
                event = json.loads(note.payload)
            except ValueError:
                continue  # not ours: someone else NOTIFYing the channel
            if isinstance(event, dict):
                events.append(event)
        return events

    def close(self) -> None:
        self._stack.close()
