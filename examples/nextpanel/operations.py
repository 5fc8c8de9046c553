"""In-memory status of marketplace operations, for a progress view (issue 7 design hook).

POST endpoints still wait for completion; this lets a web page poll
``GET /api/v1/marketplace/operations/{id}`` meanwhile. The installer's
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

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["messages"] = list(self.messages)
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
