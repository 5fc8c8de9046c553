"""A watchdog for one transfer: a wall-clock deadline and a minimum rate, enforced from outside.

docs/design.md "Download deadlines": a read timeout bounds one socket read, so
a server that sends one byte every half second (in the headers or the body)
keeps a transfer alive for ever, and a check between chunks only runs when a
chunk completes. The watchdog is a thread that watches the clock and the bytes
received; when the deadline passes, or fewer than ``min_rate * window`` bytes
arrived in the last ``window`` seconds, it records why and shuts the socket
down, which ends a read blocked anywhere: in the status line, the headers, the
body, or a server that accepted and never answered. (A connect in progress is
bounded by its own timeout, which the fetcher caps at the time remaining; the
socket is shut down as soon as it exists.)

Connections report themselves: :func:`watch_session` mounts an adapter whose
connections tell the watchdog current in this thread (a context variable), on
connect and on every request, so a kept-alive connection reused from the pool
is watched as well as a new one.
"""

from __future__ import annotations

import contextvars
import socket
import threading
import time
from collections import deque
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["TransferWatchdog", "watch_session"]

_current: contextvars.ContextVar[TransferWatchdog | None] = contextvars.ContextVar("atomicplug_watchdog", default=None)


class TransferWatchdog:
    """Enforce ``deadline`` seconds and ``min_rate`` bytes/s (over ``window`` s) on one transfer.

    Use as a context manager around the whole transfer, retries included; call
    :meth:`received` with each chunk's size. :attr:`broken` says which rule was
    broken (None while all hold). ``min_rate`` 0 turns the rate rule off.
    """

    def __init__(self, deadline: float, min_rate: float = 0.0, window: float = 30.0) -> None:
        self.deadline_seconds = deadline
        self.min_rate = min_rate
        self.window = window
        self.started = time.monotonic()
        self.deadline = self.started + deadline
        self._total = 0
        self._samples: deque[tuple[float, int]] = deque([(self.started, 0)])
        self._lock = threading.Lock()
        self._connection: Any = None
        self._broken: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="atomicplug-watchdog", daemon=True)
        self._token: contextvars.Token[TransferWatchdog | None] | None = None

    # -- the transfer's side ----------------------------------------------------

    def __enter__(self) -> TransferWatchdog:
        self._token = _current.set(self)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with self._lock:
            self._connection = None
        if self._token is not None:
            _current.reset(self._token)
        self._thread.join()

    def received(self, count: int) -> None:
        """``count`` more bytes arrived (of any attempt: the rate is about the wire, not the file)."""
        now = time.monotonic()
        with self._lock:
            self._total += count
            if self.min_rate > 0:  # pruned as the window slides (in _verdict)
                self._samples.append((now, self._total))

    def remaining(self) -> float:
        """Seconds left before the deadline (0 when past it)."""
        return max(0.0, self.deadline - time.monotonic())

    @property
    def broken(self) -> str | None:
        """Why the transfer was stopped, as the end of a one-line message; None while every rule holds."""
        return self._broken

    # -- the watchdog's side ----------------------------------------------------

    def _watch(self, connection: Any) -> None:
        """``connection`` now carries this transfer (called by the connection itself)."""
        with self._lock:
            self._connection = connection
            broken = self._broken
        if broken is not None:
            _shut_down(connection)

    def check(self) -> str | None:
        """:attr:`broken`, or the rule broken right now if the watchdog has not ticked since."""
        with self._lock:
            if self._broken is None:
                self._broken = self._verdict(time.monotonic())
            return self._broken

    def _run(self) -> None:
        tick = min(0.25, self.window / 5) if self.min_rate > 0 else 0.25
        while True:
            wait = tick if self._broken else min(tick, self.deadline - time.monotonic())
            if self._stop.wait(max(0.0, wait)):
                return
            broken = self.check()
            with self._lock:
                connection = self._connection
            if broken is not None and connection is not None:
                _shut_down(connection)  # again at every tick: a retry may have opened another

    def _verdict(self, now: float) -> str | None:
        """Which rule is broken at ``now`` (caller holds the lock)."""
        if now >= self.deadline:
            return f"not complete within the {self.deadline_seconds:g}s download deadline ({self._total} bytes received)"
        if self.min_rate <= 0 or now - self.started < self.window:
            return None
        cutoff = now - self.window
        while len(self._samples) > 1 and self._samples[1][0] <= cutoff:
            self._samples.popleft()  # the first sample stays the last one at or before the cutoff
        moved = self._total - self._samples[0][1]
        if moved < self.min_rate * self.window:
            return (
                f"slower than the minimum rate of {self.min_rate:g} bytes/s: "
                f"{moved} bytes in the last {self.window:g}s"
            )
        return None


def _shut_down(connection: Any) -> None:
    """Shut the connection's socket down: a read blocked on it returns at once."""
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed or never connected


def _report(connection: Any) -> None:
    watchdog = _current.get()
    if watchdog is not None:
        watchdog._watch(connection)


class _Reporting:
    """Connection mix-in: tell the current watchdog before connecting and before each request."""

    def connect(self) -> None:
        _report(self)
        super().connect()  # type: ignore[misc]

    def request(self, *args: Any, **kwargs: Any) -> None:
        _report(self)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Reporting, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Reporting, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter with connections that report to the current watchdog."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, urllib3.ProxyManager):  # a SOCKS proxy keeps its own pools
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def watch_session(session: requests.Session) -> requests.Session:
    """Mount the watched adapter on ``session`` for http:// and https://; returns it."""
    for prefix in ("http://", "https://"):
        if not isinstance(session.adapters.get(prefix), _WatchedAdapter):
            session.mount(prefix, _WatchedAdapter())
    return session
