"""The repository manifest: its model, its signature, and the client's trust state.

docs/design.md "Repository": ``manifest.json`` lists every package with its sha256
and size and is signed (``manifest.json.minisig``). The client accepts a
manifest only when its signature verifies with a trusted key, it has not
expired (freeze attack) and its ``version`` is not lower than the last one
accepted from the same repository (rollback attack). Packages are then
checked against the manifest's sha256/size (mix-and-match attack).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from packaging.version import InvalidVersion, Version

from atomicplug import fsutil
from atomicplug.errors import SignatureError, TrustError
from atomicplug.lock import writer_lock
from atomicplug.metadata import PluginRequirement

__all__ = [
    "SCHEMA",
    "ID_RE",
    "ManifestEntry",
    "Manifest",
    "TrustedState",
    "STATE_LOCK_TIMEOUT",
    "utcnow",
    "format_time",
    "verify_manifest",
    "load_trusted_keys",
    "verify_bytes",
    "valid_version",
    "download_path",
]

SCHEMA = 1
ID_RE = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
#: Characters a PEP 440 version string may contain; anything else never reaches a path.
_VERSION_CHARS_RE = re.compile(r"^[0-9A-Za-z.!+_-]{1,64}$")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def format_time(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix, seconds precision."""
    return moment.astimezone(dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: object) -> dt.datetime:
    if not isinstance(value, str):
        raise TrustError(f"manifest 'expires' must be an ISO 8601 string (got {value!r})")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise TrustError(f"manifest 'expires' must be ISO 8601 (got {value!r})") from exc
    if moment.tzinfo is None:
        raise TrustError(f"manifest 'expires' must carry a time zone, e.g. 'Z' (got {value!r})")
    return moment.astimezone(dt.timezone.utc)


def valid_version(value: str) -> bool:
    """A PEP 440 version made only of characters that are safe in a file name."""
    if not _VERSION_CHARS_RE.match(value) or ".." in value:
        return False
    try:
        Version(value)
    except InvalidVersion:
        return False
    return True


def download_path(plugin_id: str, version: str) -> str:
    """Where a package lies in the repository folder, and so its ``download_url``: the file's own
    path, which any static web server or CDN serves (docs/design.md "Repository")."""
    return f"/plugins/{plugin_id}/v{version}.zip"


@attrs.frozen
class ManifestEntry:
    """One package the repository offers (one id at one version)."""

    id: str
    version: str
    download_url: str
    sha256: str
    size: int
    requires: tuple[str, ...] = ()
    name: str = ""
    description: str = ""
    category: str = ""
    price: Any = None

    @property
    def parsed_version(self) -> Version:
        return Version(self.version)

    @property
    def requirements(self) -> tuple[PluginRequirement, ...]:
        return tuple(PluginRequirement.parse(r) for r in self.requires)

    @classmethod
    def from_dict(cls, data: object) -> ManifestEntry:
        """Validate one ``plugins[]`` item; every field that reaches a path or URL is checked."""
        if not isinstance(data, dict):
            raise TrustError(f"manifest plugin entries must be objects (got {type(data).__name__})")
        pid = data.get("id")
        if not isinstance(pid, str) or not ID_RE.match(pid):
            raise TrustError(f"manifest entry 'id' must match {ID_RE.pattern} (got {pid!r})")
        version = data.get("version")
        if not isinstance(version, str) or not valid_version(version):
            raise TrustError(f"manifest entry {pid}: 'version' must be PEP 440 (got {version!r})")
        url = data.get("download_url", download_path(pid, version))
        if not isinstance(url, str) or not (url.startswith(("/", "http://", "https://"))) or "\\" in url:
            raise TrustError(f"manifest entry {pid}: 'download_url' must be a path or http(s) URL (got {url!r})")
        sha = data.get("sha256")
        if not isinstance(sha, str) or not _SHA256_RE.match(sha):
            raise TrustError(f"manifest entry {pid}: 'sha256' must be 64 lowercase hex digits (got {sha!r})")
        size = data.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise TrustError(f"manifest entry {pid}: 'size' must be a non-negative integer (got {size!r})")
        requires = data.get("requires", [])
        if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
            raise TrustError(f"manifest entry {pid}: 'requires' must be a list of strings (got {requires!r})")
        for req in requires:
            try:
                PluginRequirement.parse(req)
            except ValueError:
                raise TrustError(f"manifest entry {pid}: requirement must be 'id' or 'id<specifier>' (got {req!r})") from None
        texts = {k: data.get(k, "") for k in ("name", "description", "category")}
        for key, value in texts.items():
            if not isinstance(value, str):
                raise TrustError(f"manifest entry {pid}: '{key}' must be a string (got {value!r})")
        return cls(
            id=pid,
            version=version,
            download_url=url,
            sha256=sha,
            size=size,
            requires=tuple(requires),
            price=data.get("price"),
            **texts,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "download_url": self.download_url,
            "sha256": self.sha256,
            "size": self.size,
            "requires": list(self.requires),
            "name": self.name,
            "description": self.description,
            "category": self.category,
            "price": self.price,
        }


@attrs.frozen
class Manifest:
    """A parsed manifest. Parsing checks shape only; trust is :func:`verify_manifest`'s job."""

    version: int
    expires: dt.datetime
    plugins: tuple[ManifestEntry, ...] = ()
    schema: int = SCHEMA

    @classmethod
    def empty(cls, expires: dt.datetime, version: int = 1) -> Manifest:
        return cls(version=version, expires=expires)

    @classmethod
    def from_json_bytes(cls, data: bytes) -> Manifest:
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TrustError(f"manifest is not valid UTF-8 JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise TrustError(f"manifest must be a JSON object (got {type(raw).__name__})")
        if raw.get("schema") != SCHEMA:
            raise TrustError(f"manifest 'schema' must be {SCHEMA} (got {raw.get('schema')!r})")
        version = raw.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise TrustError(f"manifest 'version' must be a positive integer (got {version!r})")
        plugins = raw.get("plugins", [])
        if not isinstance(plugins, list):
            raise TrustError(f"manifest 'plugins' must be a list (got {type(plugins).__name__})")
        entries = tuple(ManifestEntry.from_dict(p) for p in plugins)
        seen: set[tuple[str, Version]] = set()
        for entry in entries:
            key = (entry.id, entry.parsed_version)
            if key in seen:
                raise TrustError(f"manifest lists {entry.id} {entry.version} twice")
            seen.add(key)
        return cls(version=version, expires=_parse_time(raw.get("expires")), plugins=entries)

    def to_json_bytes(self) -> bytes:
        body = {
            "schema": self.schema,
            "version": self.version,
            "expires": format_time(self.expires),
            "plugins": [p.to_dict() for p in sorted(self.plugins, key=lambda e: (e.id, e.parsed_version))],
        }
        return (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    def versions_of(self, plugin_id: str) -> list[ManifestEntry]:
        """Every entry for ``plugin_id``, lowest version first."""
        return sorted((p for p in self.plugins if p.id == plugin_id), key=lambda e: e.parsed_version)

    def find(self, plugin_id: str, version: str | Version) -> ManifestEntry | None:
        wanted = Version(str(version))
        for entry in self.plugins:
            if entry.id == plugin_id and entry.parsed_version == wanted:
                return entry
        return None

    def latest(self) -> list[ManifestEntry]:
        """The highest version of each id, sorted by id."""
        best: dict[str, ManifestEntry] = {}
        for entry in self.plugins:
            if entry.id not in best or entry.parsed_version > best[entry.id].parsed_version:
                best[entry.id] = entry
        return [best[k] for k in sorted(best)]


# -- signatures ---------------------------------------------------------------


def load_trusted_keys(paths: Iterable[Path]) -> list[Any]:
    """minisign public keys from files (ConfigError if missing, SignatureError if garbage)."""
    from atomicplug import minisign

    return list(minisign.load_trusted_keys(paths))


def verify_bytes(data: bytes, sig_text: str, trusted_keys: Sequence[Any], what: str) -> None:
    """Verify a detached minisign signature over ``data``; TrustError when it does not.

    The bytes are written to ``<temp folder>/<what>`` for the file verifier, so
    its messages name ``what`` (e.g. manifest.json), not a temp file.
    """
    from atomicplug import minisign

    if not trusted_keys:
        raise TrustError(f"cannot verify {what}: no trusted_keys are configured")
    with tempfile.TemporaryDirectory(prefix=".atomicplug-verify-") as folder:
        path = Path(folder) / Path(what).name
        path.write_bytes(data)
        try:
            minisign.verify_file(path, sig_text, list(trusted_keys))
        except SignatureError as exc:
            raise TrustError(f"{what}: signature does not verify with a trusted key ({exc})") from exc


def verify_manifest(data: bytes, sig_text: str, trusted_keys: Sequence[Any], now: dt.datetime | None = None) -> Manifest:
    """Signature first, then parse, then expiry (docs/design.md "Repository").

    Raises TrustError for a bad signature, a malformed manifest, or an
    expired one (freeze attack). Rollback is :class:`TrustedState`'s job.
    """
    verify_bytes(data, sig_text, trusted_keys, "manifest.json")
    manifest = Manifest.from_json_bytes(data)
    now = now or utcnow()
    if manifest.expires <= now:
        raise TrustError(
            f"manifest version {manifest.version} expired at {format_time(manifest.expires)} "
            f"(now {format_time(now)}): refusing a possible freeze attack"
        )
    return manifest


# -- trust state ------------------------------------------------------------------

#: Seconds to wait for another process's state update (each holds the lock for one read and one write).
STATE_LOCK_TIMEOUT = 10.0


@attrs.frozen
class TrustedState:
    """The last manifest accepted per repository URL, as read from ``<home>/repository_state.json``.

    A value: :meth:`check` only ever raises for untrustworthy data, and
    :meth:`accept` is a compare-and-swap on the file (docs/design.md
    "Repository trust state"): under ``repository_state.lock`` it reads the
    file again, checks against what it holds *now*, writes, and returns the
    new value. So the recorded version never decreases, whatever processes
    race; this value itself may be stale, and is never written back.
    """

    path: Path
    repositories: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)

    @classmethod
    def load(cls, path: Path) -> TrustedState:
        """The state as the file holds it (empty when there is none). Raises TrustError when unreadable."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path=Path(path))
        except (OSError, ValueError) as exc:
            raise TrustError(f"repository state {path} is unreadable ({exc}); refusing to forget what was trusted") from exc
        repos = raw.get("repositories") if isinstance(raw, dict) else None
        if not isinstance(repos, dict) or not all(isinstance(v, dict) for v in repos.values()):
            raise TrustError(f"repository state {path} is malformed: expected an object with 'repositories'")
        return cls(path=Path(path), repositories=repos)

    @property
    def lock_path(self) -> Path:
        """``repository_state.lock`` beside the state; not the writer lock, which whole transactions hold."""
        return self.path.with_name(self.path.stem + ".lock")

    def check(self, url: str, manifest: Manifest, manifest_bytes: bytes) -> None:
        """Refuse a manifest older than (or different at the same version from) the last accepted."""
        last = self.repositories.get(url)
        if not last:
            return
        last_version = int(last.get("version", 0))
        if manifest.version < last_version:
            raise TrustError(
                f"repository {url} served manifest version {manifest.version}, lower than the "
                f"version {last_version} already accepted: refusing a possible rollback attack"
            )
        digest = hashlib.sha256(manifest_bytes).hexdigest()
        if manifest.version == last_version and last.get("sha256") not in (None, digest):
            raise TrustError(
                f"repository {url} served different content for manifest version {manifest.version} "
                "than was accepted before: refusing it"
            )

    def accept(self, url: str, manifest: Manifest, manifest_bytes: bytes, lock_timeout: float = STATE_LOCK_TIMEOUT) -> TrustedState:
        """Record ``manifest`` as the newest trusted one for ``url``; returns the state as now written.

        Compare-and-swap under the state lock: re-read, :meth:`check`, write
        atomically, release. Writes nothing when that exact manifest is
        already recorded. Raises TrustError (rollback, unreadable state),
        LockBusyError (another process held the lock ``lock_timeout`` seconds).
        """
        digest = hashlib.sha256(manifest_bytes).hexdigest()
        with writer_lock(self.lock_path, lock_timeout):
            current = TrustedState.load(self.path)
            current.check(url, manifest, manifest_bytes)
            last = current.repositories.get(url) or {}
            if last.get("version") == manifest.version and last.get("sha256") == digest:
                return current
            record = {
                "version": manifest.version,
                "sha256": digest,
                "expires": format_time(manifest.expires),
                "accepted_at": format_time(utcnow()),
            }
            updated = TrustedState(self.path, {**current.repositories, url: record})
            body = json.dumps({"repositories": updated.repositories}, indent=2, sort_keys=True) + "\n"
            fsutil.atomic_write_bytes(self.path, body.encode("utf-8"))
        return updated
