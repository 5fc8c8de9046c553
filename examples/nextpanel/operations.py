"""In-memory status of marketplace operations, for the progress view.

POST endpoints wait for completion by default (``?wait=false`` answers 202 at
once); either way a page polls ``GET /api/v1/marketplace/operations/{id}``:
queued, then running with stages (in words) and package download bytes, then
done or failed. The installer's ``progress`` callback runs in a worker
thread, hence the lock. Nothing here is durable: the journal, the installer's
history and the panel's audit log are the record; this is only a view.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs

from atomicplug.progress import ProgressEvent

from .audit import now
from .models import ErrorBody, OperationBody, OperationsOverview
from .stage_text import StageContext, stage_text

__all__ = ["Operation", "OperationTracker"]


@attrs.define
class Operation:
    """One marketplace operation as a page would show it."""

    id: str
    kind: str
    plugin_id: str
    context: StageContext
    status: str = "queued"  # queued | running | done | failed
    messages: list[str] = attrs.field(factory=list)
    stages: list[str] = attrs.field(factory=list)
    started: str = attrs.field(factory=now)
    finished: str | None = None
    result: dict[str, Any] = attrs.field(factory=dict)
    error: ErrorBody | None = None
    #: Package downloads of this operation, in order: {plugin_id, version, received, total} (bytes).
    downloads: list[dict[str, Any]] = attrs.field(factory=list)

    def body(self) -> OperationBody:
        return OperationBody(
            id=self.id,
            kind=self.kind,
            plugin_id=self.plugin_id,
            status=self.status,  # type: ignore[arg-type]
            started=self.started,
            finished=self.finished,
            stages=list(self.stages),
            messages=list(self.messages),
            downloads=[dict(d) for d in self.downloads],  # type: ignore[misc]
            error=self.error,
            **self.result,
        )


def _count(downloads: list[dict[str, Any]], plugin_id: str, version: str, received: int, total: int) -> None:
    for item in downloads:
        if (item["plugin_id"], item["version"]) == (plugin_id, version):
            item["received"], item["total"] = received, total
            return
    downloads.append({"plugin_id": plugin_id, "version": version, "received": received, "total": total})


class OperationTracker:
    """The last ``keep`` operations by id, and which ones are queued or running."""

    def __init__(self, keep: int = 100) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._operations: OrderedDict[str, Operation] = OrderedDict()
        self._changes = 0  # bumped by every change, so an overview is rebuilt only after one
        self._overview: tuple[int, bytes] | None = None

    def start(self, kind: str, plugin_id: str, context: StageContext) -> Operation:
        operation = Operation(id=secrets.token_hex(8), kind=kind, plugin_id=plugin_id, context=context)
        with self._lock:
            self._operations[operation.id] = operation
            self._changes += 1
            while len(self._operations) > self._keep:
                oldest = next(iter(self._operations.values()))
                if oldest.status in ("queued", "running"):
                    break  # never forget one a page may still poll
                self._operations.popitem(last=False)
        return operation

    def running(self, operation: Operation) -> None:
        with self._lock:
            operation.status = "running"
            self._changes += 1

    def progress(self, operation: Operation) -> Callable[[ProgressEvent], None]:
        """An ``Installer(progress=...)`` callback: the library's lines, their words, and download bytes."""

        def record(event: ProgressEvent) -> None:
            text = stage_text(event, operation.context)
            with self._lock:
                if event.stage == "download" and event.plugin_id and event.version:
                    _count(operation.downloads, event.plugin_id, event.version, event.received or 0, event.total or 0)
                if event.text:
                    operation.messages.append(event.text)
                if text:
                    operation.stages.append(text)
                self._changes += 1

        return record

    def finish(self, operation: Operation, result: dict[str, Any]) -> None:
        with self._lock:
            operation.status, operation.result, operation.finished = "done", result, now()
            self._changes += 1

    def fail(self, operation: Operation, error: ErrorBody) -> None:
        with self._lock:
            operation.status, operation.error, operation.finished = "failed", error, now()
            self._changes += 1

    def get(self, operation_id: str) -> OperationBody | None:
        with self._lock:
            operation = self._operations.get(operation_id)
            return operation.body() if operation else None

    def active(self) -> list[Operation]:
        """Queued and running operations, oldest first."""
        with self._lock:
            return [op for op in self._operations.values() if op.status in ("queued", "running")]

    def overview(self, limit: int = 20) -> OperationsOverview:
        """The running operation (if any), how many wait, and recent ones, newest first."""
        with self._lock:
            operations = list(reversed(self._operations.values()))
            running = next((op.id for op in operations if op.status == "running"), None)
            queued = sum(op.status == "queued" for op in operations)
            recent = [op.body() for op in operations[:limit]]
        return OperationsOverview(current=running, queued=queued, recent=recent)

    def overview_json(self) -> bytes:
        """:meth:`overview` as JSON, built again only after an operation changed (pollers ask often)."""
        cached, changes = self._overview, self._changes
        if cached is not None and cached[0] == changes:
            return cached[1]
        data = self.overview().model_dump_json().encode()
        self._overview = (changes, data)
        return data
