"""In-memory status of marketplace operations, for a progress view (issue 7 design hook).

POST endpoints wait for completion by default (``?wait=false`` answers 202 at
once); either way a web page polls ``GET /api/v1/marketplace/operations/{id}``
meanwhile: stage messages and package download bytes. The installer's
``progress`` callback runs in a worker thread, hence the lock. Nothing here
is durable: the journal and history are the record; this is only a view.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs

__all__ = ["Operation", "OperationTracker"]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@attrs.define
class Operation:
    """One marketplace operation as a page would show it."""

    id: str
    kind: str
    plugin_id: str
    status: str = "running"  # running | done | failed
    messages: list[str] = attrs.field(factory=list)
    started: str = attrs.field(factory=_now)
    finished: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    exit_code: int | None = None
    #: Package downloads of this operation, in order: {plugin_id, version, received, total} (bytes).
    downloads: list[dict[str, Any]] = attrs.field(factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["messages"] = list(self.messages)
        data["downloads"] = [dict(d) for d in self.downloads]
        return data


class OperationTracker:
    """The last ``keep`` operations by id, and which one is running."""

    def __init__(self, keep: int = 100) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._operations: OrderedDict[str, Operation] = OrderedDict()

    def start(self, kind: str, plugin_id: str) -> Operation:
        operation = Operation(id=secrets.token_hex(8), kind=kind, plugin_id=plugin_id)
        with self._lock:
            self._operations[operation.id] = operation
            while len(self._operations) > self._keep:
                self._operations.popitem(last=False)
        return operation

    def progress(self, operation: Operation) -> Callable[[str], None]:
        """An ``Installer(progress=...)`` callback that records stage messages."""

        def record(message: str) -> None:
            with self._lock:
                operation.messages.append(message)

        return record

    def download(self, operation: Operation) -> Callable[[str, str, int, int], None]:
        """A callback ``(plugin_id, version, received, total)`` recording a package download's bytes."""

        def record(plugin_id: str, version: str, received: int, total: int) -> None:
            with self._lock:
                for item in operation.downloads:
                    if (item["plugin_id"], item["version"]) == (plugin_id, version):
                        item["received"], item["total"] = received, total
                        return
                operation.downloads.append({"plugin_id": plugin_id, "version": version, "received": received, "total": total})

        return record

    def running(self) -> dict[str, Any] | None:
        """The newest operation still running, if any."""
        with self._lock:
            for op in reversed(self._operations.values()):
                if op.status == "running":
                    return op.to_dict()
        return None

    def finish(self, operation: Operation, result: dict[str, Any]) -> None:
        with self._lock:
            operation.status, operation.result, operation.finished = "done", result, _now()

    def fail(self, operation: Operation, error: BaseException, exit_code: int | None) -> None:
        with self._lock:
            operation.status, operation.finished = "failed", _now()
            operation.error = str(error) or type(error).__name__
            operation.exit_code = exit_code

    def get(self, operation_id: str) -> dict[str, Any] | None:
        with self._lock:
            operation = self._operations.get(operation_id)
            return operation.to_dict() if operation else None

    def overview(self) -> dict[str, Any]:
        """The running operation (newest, if any) and recent ones, newest first."""
        with self._lock:
            recent = [op.to_dict() for op in reversed(self._operations.values())]
        running = [op for op in recent if op["status"] == "running"]
        return {"current": running[0]["id"] if running else None, "recent": recent}
