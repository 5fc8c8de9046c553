"""What the installer calls: trusted manifest, resolved plan, verified packages.

docs/design.md "Repository", in order: fetch the manifest and its signature, verify
the signature with a trusted key, refuse an expired manifest (freeze) or one
older than the last accepted (rollback), record it; resolve the requested
plugins; download each package at most ``size`` bytes, check its sha256
against the manifest (mix-and-match) and its own signature, through the same
intake as a local file (:mod:`atomicplug.intake`): verified once, kept as
``downloads/<sha256>.zip``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.version import Version

from atomicplug.config import Config
from atomicplug.errors import SignatureError, TrustError
from atomicplug.intake import Package
from atomicplug.repository.fetcher import Fetcher, ProgressCallback, make_fetcher
from atomicplug.repository.manifest import ManifestEntry
from atomicplug.repository.manifest_cache import (  # load_manifest and state_path are re-exported
    MAX_MANIFEST_BYTES,  # noqa: F401 - examples/nextpanel imports it from here
    MAX_SIGNATURE_BYTES,
    load_manifest,
    state_path,
)
from atomicplug.repository.resolver import parse_request, resolve

if TYPE_CHECKING:
    from atomicplug.progress import Progress

__all__ = [
    "make_fetcher",
    "load_manifest",
    "fetch_package",
    "plan_remote",
    "installed_versions",
    "state_path",
]


def fetch_package(
    config: Config, entry: ManifestEntry, *, fetcher: Fetcher | None = None, progress: ProgressCallback | None = None
) -> Package:
    """The package for ``entry`` through intake: from ``downloads/`` when already there, else downloaded.

    The download is read once, like a local file (docs/design.md "Intake"): its
    sha256 must be the manifest's (mix-and-match), its signature must verify,
    and its metadata.json must name the entry's id and version. ``progress``
    gets ``(received, total)`` as the download advances (not called for a
    package already in ``downloads/``). Raises DownloadError, TrustError,
    SignatureError, PackageError.
    """
    from atomicplug.intake import take_in_cached, take_in_download

    label = f"{entry.id} {entry.version}"
    package = take_in_cached(config, entry.sha256, entry.size)
    if package is None:
        fetcher = fetcher or make_fetcher(config)
        raw_sig = fetcher.fetch_bytes(entry.download_url + ".minisig", MAX_SIGNATURE_BYTES, missing_ok=True)
        sig_text = raw_sig.decode("utf-8", "replace") if raw_sig is not None else None

        def fill(temp: Path) -> None:
            fetcher.download(entry.download_url, temp, entry.size, label=label, progress=progress)  # type: ignore[union-attr]

        try:
            package = take_in_download(config, fill, sig_text, sha256=entry.sha256, name=label)
        except SignatureError as exc:
            raise TrustError(f"{label}: package signature refused: {exc}") from exc
    meta = package.metadata
    if meta.id != entry.id or meta.parsed_version != entry.parsed_version:
        raise TrustError(
            f"{label}: the package's metadata.json says {meta.id} {meta.version}: refusing a possible mix-and-match attack"
        )
    return package


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
    record: bool = True,
    progress: Progress | None = None,
    repair: Callable[[str], tuple[str, str] | None] | None = None,
) -> list[Package]:
    """Manifest, resolve and fetch in one call; packages in install order (dependencies first).

    ``record=False`` leaves the trust state unwritten (a dry run). ``progress``
    gets a ``download`` event per package as its bytes arrive (the first with
    0, the last with the size, also for a package already downloaded) and a
    ``verify`` event once it passed intake. ``repair(id)``: asked for each requested
    installed id the resolution leaves as it is, gives (version, sha256) of a damaged
    tree to repair (None: intact); that very package is fetched too when the manifest
    lists it (else nothing is).
    Raises ConfigError, DownloadError, TrustError, DependencyError, UsageError.
    """
    fetcher = fetcher or make_fetcher(config)
    manifest = load_manifest(config, fetcher=fetcher, record=record)
    entries = resolve(manifest, specs, installed, upgrade=upgrade)
    if repair is not None:
        chosen = {entry.id for entry in entries}
        for pid in dict.fromkeys(parse_request(spec).id for spec in specs):
            damaged = repair(pid) if pid in installed and pid not in chosen else None
            listed = manifest.find(pid, damaged[0]) if damaged else None
            if damaged and listed is not None and listed.sha256 == damaged[1]:
                entries.append(listed)  # its requirements are installed: it is installed
    if progress is None:
        return [fetch_package(config, entry, fetcher=fetcher) for entry in entries]
    return [_fetch_reporting(config, entry, fetcher, progress) for entry in entries]


def _fetch_reporting(config: Config, entry: ManifestEntry, fetcher: Fetcher, progress: Progress) -> Package:
    from atomicplug.progress import ProgressEvent

    def received(done: int, total: int) -> None:
        progress(ProgressEvent.download(entry.id, entry.version, done, total))

    received(0, entry.size)
    package = fetch_package(config, entry, fetcher=fetcher, progress=received)
    received(entry.size, entry.size)
    progress(ProgressEvent("verify", plugin_id=entry.id, version=entry.version))
    return package
