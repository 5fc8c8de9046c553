"""``atomicplug sync --watch`` and the loader's thread: LISTEN, and sync on every notification.

docs/design.md "Beyond one machine". On start (and after every reconnect)
the node converges to the committed desired generation, so a node that was
down catches up. Then it waits in ``select()`` on its listening connection,
sending nothing while the cluster is idle:

- ``staged N`` (a writer announced generation N): stage it now and switch as
  soon as its writer commits (:func:`~atomicplug.cluster.sync.prepare`);
- ``generation N`` / ``withdrawn N``: converge to the committed state.

Events that the node already reflects are skipped. A lost connection (the
database restarted, the network cut) is retried with a growing pause, then
the node converges again: notifications sent while it was away are not
replayed, the desired state is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from atomicplug.cluster.sync import Reporter, SyncResult, converge, prepare
from atomicplug.errors import AtomicplugError, LockBusyError

if TYPE_CHECKING:
    from atomicplug.cluster.listener import Listener
    from atomicplug.config import Config

__all__ = ["Watcher"]

log = logging.getLogger("atomicplug.cluster")

#: Pauses between reconnection attempts, then the last one repeated.
_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)


class Watcher:
    """Keep this node converged until :meth:`stop`; ``on_switched()`` runs after each switch."""

    def __init__(
        self,
        config: Config,
        progress: Callable[[str], None] | None = None,
        on_switched: Callable[[], None] | None = None,
        on_result: Callable[[SyncResult], None] | None = None,
    ) -> None:
        self.config = config
        self.progress = progress or log.info
        self.on_switched = on_switched
        self.on_result = on_result
        self.reporter = Reporter(config.node_id)
        self.applied = -1  # the committed generation this node last converged to
        self._listener: Listener | None = None
        self._stopping = threading.Event()
        self.connected = threading.Event()

    # -- control ------------------------------------------------------------------------------
    def start(self) -> threading.Thread:
        """Run in a daemon thread (the loader's way)."""
        thread = threading.Thread(target=self.run, name=f"atomicplug-watch-{self.config.node_id}", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stopping.set()
        listener = self._listener
        if listener is not None:
            listener.stop()

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        from atomicplug.cluster.listener import Listener

        failures = 0
        while not self._stopping.is_set():
            try:
                self._listener = Listener(self.config)
                if self._stopping.is_set():
                    break
                self.connected.set()
                failures = 0
                self._converge()
                self._listen(self._listener)
            except Exception as exc:  # noqa: BLE001 - a watcher keeps going whatever the database does
                self.connected.clear()
                pause = _BACKOFF[min(failures, len(_BACKOFF) - 1)]
                failures += 1
                self.progress(f"cluster watch: {_line(exc)}; reconnecting in {pause:g}s")
                self._stopping.wait(pause)
            finally:
                if self._listener is not None:
                    self._listener.close()
                    self._listener = None

    def _listen(self, listener: Listener) -> None:
        while not self._stopping.is_set():
            events = listener.wait(None)
            staged = [e["generation"] for e in events if e.get("event") == "staged" and _is_int(e.get("generation"))]
            later = any(e.get("event") in ("generation", "withdrawn") for e in events)
            for number in sorted(set(staged)):
                if number > self.applied:
                    self._prepare(listener, number)
            if later or staged:
                self._converge()

    def _prepare(self, listener: Listener, number: int) -> None:
        try:
            result = prepare(self.config, listener, number, self.reporter, self.progress)
        except LockBusyError:
            return  # this node's own writer (or a sync) holds it: it stages the generation itself
        if result is not None:
            self._done(result)

    def _converge(self) -> None:
        listener = self._listener
        assert listener is not None
        try:
            result = converge(self.config, listener.db, self.reporter, self.progress)
        except LockBusyError as exc:
            self.progress(f"cluster watch: {exc}")
            return
        self._done(result)

    def _done(self, result: SyncResult) -> None:
        if result.error is not None:
            self.progress(f"{result.failure}; this node stays on its last good generation")
        else:
            self.applied = max(self.applied, result.generation)
        if self.on_result is not None:
            self.on_result(result)
        if result.changes and self.on_switched is not None:
            self.on_switched()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _line(exc: BaseException) -> str:
    if isinstance(exc, AtomicplugError):
        return str(exc)
    from atomicplug.database.engine import first_line

    return first_line(exc)
