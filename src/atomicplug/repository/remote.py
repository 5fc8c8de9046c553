"""What the installer calls: trusted manifest, resolved plan, verified packages.

DESIGN.md "Repository", in order: fetch the manifest and its signature, verify
the signature with a trusted key, refuse an expired manifest (freeze) or one
older than the last accepted (rollback), record it; resolve the requested
plugins; download each package at most ``size`` bytes, check its sha256
against the manifest (mix-and-match) and its own signature, then cache it.
Verification always comes before anything is written to the cache.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from packaging.version import Version

from atomicplug.config import Config
from atomicplug.errors import ConfigError, SignatureError, TrustError
from atomicplug.repository.cache import DownloadCache
from atomicplug.repository.fetcher import Fetcher, Timeouts
from atomicplug.repository.manifest import (
    Manifest,
    ManifestEntry,
    TrustedState,
    load_trusted_keys,
    verify_manifest,
)
from atomicplug.repository.resolver import resolve

__all__ = [
    "FetchedPackage",
    "make_fetcher",
    "load_manifest",
    "fetch_package",
    "plan_remote",
    "installed_versions",
    "state_path",
]

MAX_MANIFEST_BYTES = 32 * 1024 * 1024
MAX_SIGNATURE_BYTES = 64 * 1024


@attrs.frozen
class FetchedPackage:
    """A downloaded package whose bytes match the manifest and whose signature verified."""

    entry: ManifestEntry
    zip_path: Path
    sig_path: Path | None


def state_path(config: Config) -> Path:
    return config.home / "repository_state.json"


def _repository_url(config: Config) -> str:
    if not config.repository:
        raise ConfigError("no repository configured: set 'repository' in the config (e.g. \"http://127.0.0.1:8002\")")
    return config.repository.rstrip("/")


def make_fetcher(config: Config, timeouts: Timeouts | None = None) -> Fetcher:
    """A Fetcher for ``config.repository`` whose deadline is ``config.download_timeout``."""
    return Fetcher(_repository_url(config), timeouts or Timeouts(deadline=config.download_timeout))


def load_manifest(config: Config, *, fetcher: Fetcher | None = None, now: dt.datetime | None = None) -> Manifest:
    """Fetch, verify and record the repository's manifest.

    Raises ConfigError (no repository/keys), DownloadError, TrustError
    (bad signature, expired, rollback, malformed).
    """
    url = _repository_url(config)
    fetcher = fetcher or make_fetcher(config)
    keys = load_trusted_keys(config.trusted_keys)
    if not keys:
        raise TrustError("cannot trust the repository: no trusted_keys are configured")
    data = fetcher.fetch_bytes("/manifest.json", MAX_MANIFEST_BYTES)
    sig = fetcher.fetch_bytes("/manifest.json.minisig", MAX_SIGNATURE_BYTES, missing_ok=True)
    assert data is not None
    if sig is None:
        raise TrustError(f"repository {url} has no manifest.json.minisig: refusing an unsigned manifest")
    manifest = verify_manifest(data, sig.decode("utf-8", "replace"), keys, now=now)
    TrustedState.load(state_path(config)).accept(url, manifest, data)
    return manifest


def _verify_package(config: Config, entry: ManifestEntry, zip_path: Path, sig_text: str | None, keys: Sequence[Any]) -> None:
    from atomicplug import minisign

    if sig_text is None:
        if config.allow_unsigned:
            return  # its sha256 is still vouched for by the signed manifest
        raise TrustError(f"{entry.id} {entry.version} has no signature in the repository: refusing it")
    try:
        minisign.verify_file(zip_path, sig_text, keys)
    except SignatureError as exc:
        raise TrustError(f"{entry.id} {entry.version}: package signature refused: {exc}") from exc


def fetch_package(config: Config, entry: ManifestEntry, *, fetcher: Fetcher | None = None) -> FetchedPackage:
    """The package for ``entry``, from the cache or downloaded, verified either way.

    Raises DownloadError, TrustError (size/sha256 mismatch, bad signature).
    """
    fetcher = fetcher or make_fetcher(config)
    keys = load_trusted_keys(config.trusted_keys)
    cache = DownloadCache(config.downloads_dir)
    sig_url = entry.download_url + ".minisig"
    cached = cache.lookup(entry.sha256, entry.size)
    if cached is not None:
        sig_text = cached.sig_path.read_text(encoding="utf-8") if cached.sig_path else None
        try:
            _verify_package(config, entry, cached.zip_path, sig_text, keys)
            return FetchedPackage(entry, cached.zip_path, cached.sig_path)
        except TrustError:
            pass  # e.g. a key was rotated: fetch the signature again below
    temp = cache.temp_file()
    try:
        if cached is None:
            digest = fetcher.download(entry.download_url, temp, entry.size, label=f"{entry.id} {entry.version}")
            if digest != entry.sha256:
                raise TrustError(
                    f"{entry.id} {entry.version}: downloaded bytes have sha256 {digest}, the manifest says "
                    f"{entry.sha256}: refusing a possible mix-and-match attack"
                )
        else:
            temp.write_bytes(cached.zip_path.read_bytes())
        raw_sig = fetcher.fetch_bytes(sig_url, MAX_SIGNATURE_BYTES, missing_ok=True)
        sig_text = raw_sig.decode("utf-8", "replace") if raw_sig is not None else None
        _verify_package(config, entry, temp, sig_text, keys)
        stored = cache.commit(entry.sha256, temp, sig_text)
    finally:
        temp.unlink(missing_ok=True)
    return FetchedPackage(entry, stored.zip_path, stored.sig_path)


def installed_versions(config: Config) -> dict[str, Version]:
    """Installed plugin versions from ``<home>/addon_registry.json`` (empty when absent or unreadable)."""
    try:
        raw = json.loads(config.registry_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    plugins = raw.get("plugins") if isinstance(raw, dict) else None
    result: dict[str, Version] = {}
    if isinstance(plugins, dict):
        for pid, info in plugins.items():
            try:
                result[pid] = Version(str(info["version"]))
            except (KeyError, TypeError, ValueError):
                continue
    return result


def plan_remote(
    config: Config,
    specs: Sequence[str],
    installed: Mapping[str, Version | str],
    upgrade: bool = False,
    *,
    fetcher: Fetcher | None = None,
) -> list[FetchedPackage]:
    """Manifest, resolve and fetch in one call; packages in install order (dependencies first).

    Raises ConfigError, DownloadError, TrustError, DependencyError, UsageError.
    """
    fetcher = fetcher or make_fetcher(config)
    manifest = load_manifest(config, fetcher=fetcher)
    entries = resolve(manifest, specs, installed, upgrade=upgrade)
    return [fetch_package(config, entry, fetcher=fetcher) for entry in entries]
