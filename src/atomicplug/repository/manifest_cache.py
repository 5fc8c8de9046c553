"""The repository's manifest, trusted: fetched or revalidated, verified, checked, recorded, cached.

docs/design.md "Repository manifest": the client accepts a manifest only when
its signature verifies with a trusted key, it has not expired (freeze attack)
and its version is not below the last one accepted (rollback attack).

Two entry points:

* :func:`load_manifest` asks the repository every time (installs, upgrades):
  a conditional GET, so an unchanged manifest costs a 304; with ``record``
  (the default) the manifest is recorded in the trust state, else the state
  is only read (a read-only load).
* :func:`cached_manifest` is for listings that run often: it never records,
  and it reuses the copy under ``<home>/manifest_cache/`` for up to
  ``max_age`` seconds (``manifest_max_age``) before revalidating it.

The cache holds the manifest's bytes, its signature and the server's
validators (ETag, Last-Modified). Every use verifies the bytes again
(signature, expiry, trust state) — they are small — so a cached manifest is
never trusted beyond its expiry, its max age, or a newer version accepted
since; and a 304 answer yields only a manifest that verifies.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from atomicplug import fsutil
from atomicplug.config import Config
from atomicplug.errors import TrustError
from atomicplug.repository.fetcher import Fetcher, make_fetcher, repository_url
from atomicplug.repository.manifest import Manifest, TrustedState, load_trusted_keys, verify_manifest

__all__ = ["MAX_MANIFEST_BYTES", "MAX_SIGNATURE_BYTES", "cached_manifest", "load_manifest", "state_path", "cache_path"]

MAX_MANIFEST_BYTES = 32 * 1024 * 1024
MAX_SIGNATURE_BYTES = 64 * 1024


def state_path(config: Config) -> Path:
    """``<home>/repository_state.json``: the highest manifest version accepted per repository."""
    return config.home / "repository_state.json"


def cache_path(config: Config, url: str) -> Path:
    """``<home>/manifest_cache/<sha256(url)[:16]>.json``: the last verified copy of ``url``'s manifest."""
    return config.manifest_cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.json"


def load_manifest(
    config: Config, *, fetcher: Fetcher | None = None, now: dt.datetime | None = None, record: bool = True
) -> Manifest:
    """The repository's current manifest, verified; recorded in the trust state when ``record``.

    Always asks the repository (a 304 reuses the verified cached copy).
    ``record=False`` is the read-only load: the same checks, rollback
    included, but ``repository_state.json`` is not written.
    Raises ConfigError (no repository), DownloadError, TrustError (no trusted
    keys, bad signature, expired, rollback, malformed), LockBusyError.
    """
    return _trusted_manifest(config, fetcher, max_age=0.0, record=record, now=now)


def cached_manifest(
    config: Config, *, max_age: float | None = None, fetcher: Fetcher | None = None, now: dt.datetime | None = None
) -> Manifest:
    """A verified manifest for listings, from the cache when it is younger than ``max_age`` seconds.

    ``max_age`` defaults to ``config.manifest_max_age``; an older copy is
    revalidated (If-None-Match / If-Modified-Since). Never records the
    manifest in the trust state, but refuses one older than it.
    Raises as :func:`load_manifest`.
    """
    age = config.manifest_max_age if max_age is None else max_age
    return _trusted_manifest(config, fetcher, max_age=age, record=False, now=now)


# -- internals -------------------------------------------------------------------------


@attrs.frozen
class _CachedCopy:
    """What ``<home>/manifest_cache/<key>.json`` holds: verified bytes and how to revalidate them."""

    url: str
    data: bytes
    signature: str
    etag: str | None
    last_modified: str | None
    fetched_at: float  # time.time() of the last 200 or 304

    @classmethod
    def read(cls, path: Path, url: str) -> _CachedCopy | None:
        """The copy for ``url``; None when missing, unreadable or for another URL (it is only a cache)."""
        try:
            raw = json.loads(path.read_bytes())
            copy = cls(
                url=raw["url"],
                data=base64.b64decode(raw["manifest"], validate=True),
                signature=raw["signature"],
                etag=raw.get("etag"),
                last_modified=raw.get("last_modified"),
                fetched_at=float(raw["fetched_at"]),
            )
        except (OSError, ValueError, KeyError, TypeError, binascii.Error):
            return None
        return copy if copy.url == url and isinstance(copy.signature, str) else None

    def write(self, path: Path) -> None:
        body = {
            "url": self.url,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "fetched_at": self.fetched_at,
            "signature": self.signature,
            "manifest": base64.b64encode(self.data).decode("ascii"),
        }
        try:
            fsutil.make_dirs(path.parent)
            fsutil.atomic_write_bytes(path, json.dumps(body).encode("utf-8"))
        except OSError:
            pass  # only a cache: the manifest in hand is verified, the next call fetches again


def _trusted_manifest(config: Config, fetcher: Fetcher | None, *, max_age: float, record: bool, now: dt.datetime | None) -> Manifest:
    url = repository_url(config)
    keys = load_trusted_keys(config.trusted_keys)
    if not keys:
        raise TrustError("cannot trust the repository: no trusted_keys are configured")
    state = TrustedState.load(state_path(config))
    path = cache_path(config, url)
    cached = _CachedCopy.read(path, url)
    manifest: Manifest | None = None
    if cached is not None:
        try:
            manifest = _verified(cached.data, cached.signature, keys, state, url, now)
        except TrustError:
            cached = None  # expired, superseded by a newer accepted version, or damaged: ask afresh
        else:
            if 0 <= time.time() - cached.fetched_at < max_age:
                return manifest
    fetcher = fetcher or make_fetcher(config)
    answer = fetcher.fetch_if_changed(
        "/manifest.json",
        MAX_MANIFEST_BYTES,
        etag=cached.etag if cached else None,
        last_modified=cached.last_modified if cached else None,
    )
    etag, last_modified = answer.etag, answer.last_modified
    if answer.data is None:  # 304 (only asked for with a cached copy, verified above): that copy is current
        assert cached is not None and manifest is not None
        data, signature = cached.data, cached.signature
        etag, last_modified = etag or cached.etag, last_modified or cached.last_modified
    else:
        data = answer.data or b""
        raw_sig = fetcher.fetch_bytes("/manifest.json.minisig", MAX_SIGNATURE_BYTES, missing_ok=True)
        if raw_sig is None:
            raise TrustError(f"repository {url} has no manifest.json.minisig: refusing an unsigned manifest")
        signature = raw_sig.decode("utf-8", "replace")
        manifest = _verified(data, signature, keys, state, url, now)
    if record:
        state.accept(url, manifest, data)
    _CachedCopy(url, data, signature, etag, last_modified, time.time()).write(path)
    return manifest


def _verified(data: bytes, signature: str, keys: Sequence[Any], state: TrustedState, url: str, now: dt.datetime | None) -> Manifest:
    """Signature, then shape and expiry, then the trust state's rollback rule. Raises TrustError."""
    manifest = verify_manifest(data, signature, keys, now=now)
    state.check(url, manifest, data)
    return manifest
