"""The repository as the marketplace lists it: the verified manifest, cached with a bounded age.

Listing plugins must not fetch the repository per request (issue 16: ~47 ms
each even idle, seconds under load). :class:`ManifestView` keeps the last
verified manifest for ``max_age`` seconds; a list request past that age is
answered from what is cached while one background refresh runs (single
flight). Only the very first listing, or an explicit ``refresh``, waits for
the fetch. A failed fetch is cached too (state ``unreachable`` or
``untrusted``), so a repository that is down costs one attempt per
``max_age``, not one per request.

:func:`read_manifest` is today's read-only load (the library's ``load_manifest``
records what it accepts; a listing must not); the library's own read-only
load with an ETag cache replaces it later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from atomicplug.errors import AtomicplugError, TrustError

from .audit import now

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.repository.manifest import Manifest

__all__ = ["DEFAULT_MAX_AGE", "ManifestSnapshot", "ManifestView", "read_manifest"]

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


def read_manifest(config: Config) -> Manifest:
    """The repository's manifest, verified (trusted signature, expiry, not older than accepted), recording nothing."""
    from atomicplug.repository.manifest import TrustedState, load_trusted_keys, verify_manifest
    from atomicplug.repository.remote import MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, make_fetcher, state_path

    fetcher = make_fetcher(config)
    keys = load_trusted_keys(config.trusted_keys)
    if not keys:
        raise TrustError("cannot trust the repository: no trusted_keys are configured")
    data = fetcher.fetch_bytes("/manifest.json", MAX_MANIFEST_BYTES)
    sig = fetcher.fetch_bytes("/manifest.json.minisig", MAX_SIGNATURE_BYTES, missing_ok=True)
    assert data is not None
    if sig is None:
        raise TrustError(f"repository {fetcher.base_url} has no manifest.json.minisig: refusing an unsigned manifest")
    manifest = verify_manifest(data, sig.decode("utf-8", "replace"), keys)
    TrustedState.load(state_path(config)).check(fetcher.base_url, manifest, data)
    return manifest


class ManifestView:
    """The last verified manifest (or fetch error), refreshed in the background once older than ``max_age``."""

    def __init__(self, config: Config, max_age: float = DEFAULT_MAX_AGE, load: Callable[[Config], Manifest] = read_manifest) -> None:
        self.config = config
        self.max_age = max_age
        self._load = load
        self._lock = threading.Lock()
        self._snapshot = ManifestSnapshot.loading()
        self._refreshing: threading.Event | None = None

    def current(self, *, refresh: bool = False) -> ManifestSnapshot:
        """The cached snapshot; blocking only for the first fetch or when ``refresh`` asks for a new one."""
        with self._lock:
            snapshot = self._snapshot
            first = snapshot.checked_at is None
            stale = time.monotonic() - snapshot.fetched > self.max_age
            done = self._start_refresh() if (stale or refresh) else self._refreshing
        if (first or refresh) and done is not None:
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
            manifest, error = self._load(self.config), None
        except AtomicplugError as exc:
            manifest, error = None, exc
        snapshot = ManifestSnapshot(manifest=manifest, error=error, checked_at=now(), fetched=time.monotonic())
        with self._lock:
            self._snapshot = snapshot
            self._refreshing = None
        done.set()
