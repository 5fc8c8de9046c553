"""The repository as the marketplace lists it: the verified manifest, cached with a bounded age.

Listing plugins must not fetch the repository per request (issue 16: ~47 ms
each even idle, seconds under load). :class:`ManifestView` keeps the last
verified manifest in memory for ``max_age`` seconds; a list request past that
age is answered from what is held while one background refresh runs (single
flight). Only the very first listing waits for the fetch; an explicit
``refresh`` asks the repository at once, in the caller's thread. A failed
fetch is kept too (state ``unreachable`` or ``untrusted``), so a repository
that is down costs one attempt per ``max_age``, not one per request.

The loads are the library's read-only ones, which record nothing in the trust
state: :func:`atomicplug.repository.cached_manifest` (its verified copy on disk,
revalidated with ETag after ``manifest_max_age``) for the background refresh,
:func:`atomicplug.repository.load_manifest` with ``record=False`` for ``refresh``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from atomicplug.errors import AtomicplugError

from .audit import now

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.repository.manifest import Manifest

__all__ = ["DEFAULT_MAX_AGE", "ManifestSnapshot", "ManifestView"]

#: How old a listed manifest may be before a listing starts a refresh (seconds).
DEFAULT_MAX_AGE = 30.0
#: How long the first listing waits for the first fetch before answering without it.
FIRST_FETCH_WAIT = 15.0


@attrs.frozen
class ManifestSnapshot:
    """One fetch's outcome: a verified manifest, or the error that prevented it."""

    manifest: Manifest | None
    error: AtomicplugError | None
    checked_at: str | None  # wall-clock ISO time, for people
    fetched: float  # time.monotonic() of the fetch, for the age

    @classmethod
    def loading(cls) -> ManifestSnapshot:
        return cls(manifest=None, error=None, checked_at=None, fetched=float("-inf"))


def _cached(config: Config) -> Manifest:
    from atomicplug.repository import cached_manifest

    return cached_manifest(config)


def _fresh(config: Config) -> Manifest:
    from atomicplug.repository import load_manifest

    return load_manifest(config, record=False)


class ManifestView:
    """The last verified manifest (or fetch error), refreshed in the background once older than ``max_age``."""

    def __init__(
        self, config: Config, max_age: float = DEFAULT_MAX_AGE, load: Callable[[Config], Manifest] = _cached,
        fresh: Callable[[Config], Manifest] = _fresh,
    ) -> None:
        self.config = config
        self.max_age = max_age
        self._load = load
        self._fresh = fresh
        self._lock = threading.Lock()
        self._snapshot = ManifestSnapshot.loading()
        self._refreshing: threading.Event | None = None

    def current(self, *, refresh: bool = False) -> ManifestSnapshot:
        """The held snapshot; blocking only for the first fetch, or with ``refresh``, which asks the repository now."""
        if refresh:
            return self._fetch(self._fresh)
        with self._lock:
            snapshot = self._snapshot
            first = snapshot.checked_at is None
            stale = time.monotonic() - snapshot.fetched > self.max_age
            done = self._start_refresh() if stale else self._refreshing
        if first and done is not None:
            done.wait(FIRST_FETCH_WAIT)
            with self._lock:
                return self._snapshot
        return snapshot

    def peek(self) -> ManifestSnapshot:
        """The cached snapshot, starting no fetch."""
        with self._lock:
            return self._snapshot

    def refresh_soon(self) -> None:
        """Fetch again in the background (after an operation, which may have seen a newer manifest)."""
        with self._lock:
            self._start_refresh()

    def _start_refresh(self) -> threading.Event:
        """Start one background fetch unless one runs; the event is set when it ends. Holds ``_lock``."""
        if self._refreshing is not None:
            return self._refreshing
        done = self._refreshing = threading.Event()
        threading.Thread(target=self._refresh, args=(done,), name="nextpanel-manifest", daemon=True).start()
        return done

    def _refresh(self, done: threading.Event) -> None:
        try:
            self._fetch(self._load)
        finally:
            with self._lock:
                self._refreshing = None
            done.set()

    def _fetch(self, load: Callable[[Config], Manifest]) -> ManifestSnapshot:
        started = time.monotonic()
        try:
            manifest, error = load(self.config), None
        except AtomicplugError as exc:
            manifest, error = None, exc
        snapshot = ManifestSnapshot(manifest=manifest, error=error, checked_at=now(), fetched=started)
        with self._lock:
            if started >= self._snapshot.fetched:  # a fetch that began earlier never replaces a later one's answer
                self._snapshot = snapshot
        return snapshot
