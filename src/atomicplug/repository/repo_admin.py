"""The publisher's side of a repository folder: ``repo init``, ``repo add``, ``repo sign``, ``repo list``.

Layout (docs/design.md "Repository")::

    manifest.json, manifest.json.minisig
    plugins/<id>/v<version>.zip (+ .minisig)
    keys/<KEYID>.pub        the repository's public keys (packages must verify with one)

``add`` verifies everything before it writes anything: each zip's signature
(against ``keys/`` plus any extra trusted keys) and its metadata (via the safe
zip reader). Packages are copied temp-then-replace; the manifest is rewritten,
re-signed and its ``version`` bumped last. A client that fetches during the
two final renames may see a new manifest with the old signature and refuse it
once; the next fetch succeeds.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
from filelock import FileLock

from atomicplug import fsutil
from atomicplug.config import ExtractLimits
from atomicplug.errors import OperationError, SignatureError, UsageError
from atomicplug.store import sha256_file
from atomicplug.repository.manifest import Manifest, ManifestEntry, download_path, format_time, utcnow, verify_bytes

__all__ = [
    "DEFAULT_EXPIRES_DAYS",
    "AddResult",
    "init_repository",
    "add_packages",
    "resign_repository",
    "read_manifest",
    "repository_keys",
    "package_path",
]

DEFAULT_EXPIRES_DAYS = 30.0
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.minisig"


@attrs.frozen
class AddResult:
    manifest: Manifest
    added: tuple[ManifestEntry, ...]
    unchanged: tuple[ManifestEntry, ...]


def package_path(repo: Path, plugin_id: str, version: str) -> Path:
    return Path(repo) / download_path(plugin_id, version).lstrip("/")


def repository_keys(repo: Path) -> list[Any]:
    from atomicplug.minisign import PublicKey

    folder = Path(repo) / "keys"
    return [PublicKey.from_file(p) for p in sorted(folder.glob("*.pub"))] if folder.is_dir() else []


def read_manifest(repo: Path, verify: bool = True) -> Manifest:
    """The repository's current manifest; verified with ``keys/`` when ``verify``."""
    repo = Path(repo)
    try:
        data = (repo / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{repo} is not a repository (no {MANIFEST}); run `atomicplug repo init {repo} --key KEY`") from None
    if verify:
        sig = (repo / SIGNATURE).read_text(encoding="utf-8") if (repo / SIGNATURE).is_file() else ""
        verify_bytes(data, sig, repository_keys(repo), f"{repo / MANIFEST}")
    return Manifest.from_json_bytes(data)


def _expiry(days: float, now: dt.datetime | None) -> dt.datetime:
    if days <= 0:
        raise UsageError(f"expected a positive number of days for the manifest expiry, got {days:g}")
    return (now or utcnow()) + dt.timedelta(days=days)


def _write_manifest(repo: Path, manifest: Manifest, secret_key: Any) -> None:
    """Write manifest.json and its signature, each atomically (temp in the same folder, then replace)."""
    from atomicplug.minisign import sign_file

    data = manifest.to_json_bytes()
    tmp = repo / f".{MANIFEST}.tmp-{os.getpid()}"
    try:
        tmp.write_bytes(data)
        comment = f"atomicplug manifest version {manifest.version} expires {format_time(manifest.expires)}"
        signature = sign_file(tmp, secret_key, trusted_comment=comment)
        fsutil.fsync_file(tmp)
        fsutil.replace(tmp, repo / MANIFEST)
    finally:
        tmp.unlink(missing_ok=True)
    fsutil.atomic_write_bytes(repo / SIGNATURE, signature.encode("utf-8"))


def _check_signing_key(repo: Path, secret_key: Any) -> None:
    ids = {k.key_id for k in repository_keys(repo)}
    if secret_key.public_key.key_id not in ids:
        raise SignatureError(
            f"key {secret_key.key_id_hex} is not one of {repo}'s keys (keys/*.pub); "
            "put its public key in keys/ to rotate keys"
        )


def init_repository(repo: Path, secret_key: Any, *, expires_days: float = DEFAULT_EXPIRES_DAYS, now: dt.datetime | None = None) -> Manifest:
    """Create an empty, signed repository in ``repo`` (new or empty folder)."""
    repo = Path(repo)
    if (repo / MANIFEST).exists():
        raise UsageError(f"{repo} already holds a repository ({MANIFEST} exists)")
    fsutil.make_dirs(repo / "plugins")
    fsutil.make_dirs(repo / "keys")
    public = secret_key.public_key
    fsutil.atomic_write_bytes(repo / "keys" / f"{public.key_id_hex}.pub", public.to_text().encode("ascii"))
    manifest = Manifest.empty(_expiry(expires_days, now))
    _write_manifest(repo, manifest, secret_key)
    return manifest


def _lock(repo: Path) -> FileLock:
    return FileLock(str(repo / ".repo.lock"), timeout=30)


def resign_repository(repo: Path, secret_key: Any, *, expires_days: float = DEFAULT_EXPIRES_DAYS, now: dt.datetime | None = None) -> Manifest:
    """Bump the manifest version, refresh ``expires`` and sign again (e.g. before it expires)."""
    repo = Path(repo)
    with _lock(repo):
        _check_signing_key(repo, secret_key)
        current = read_manifest(repo)
        manifest = attrs.evolve(current, version=current.version + 1, expires=_expiry(expires_days, now))
        _write_manifest(repo, manifest, secret_key)
    return manifest


def _inspect(zip_path: Path, keys: Sequence[Any], limits: ExtractLimits) -> tuple[ManifestEntry, Path]:
    """Verify one zip's signature and metadata; returns its entry and signature path."""
    from atomicplug import minisign
    from atomicplug.safezip import read_metadata

    sig_path = zip_path.with_name(zip_path.name + ".minisig")
    if not zip_path.is_file():
        raise UsageError(f"{zip_path} does not exist")
    if not sig_path.is_file():
        raise SignatureError(f"{zip_path.name} has no signature ({sig_path.name} is missing)")
    minisign.verify_file(zip_path, sig_path, keys)
    meta = read_metadata(zip_path, limits)
    sha, size = sha256_file(zip_path), zip_path.stat().st_size
    entry = ManifestEntry(
        id=meta.id,
        version=meta.version,
        download_url=download_path(meta.id, meta.version),
        sha256=sha,
        size=size,
        requires=tuple(str(r) for r in meta.requires),
        name=meta.name,
        description=meta.description,
        category=meta.category,
        price=meta.price,
    )
    return entry, sig_path


def _copy_in(src: Path, dst: Path) -> None:
    fsutil.make_dirs(dst.parent)
    fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as source:
            shutil.copyfileobj(source, out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        fsutil.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def add_packages(
    repo: Path,
    zips: Sequence[Path],
    secret_key: Any,
    *,
    trusted_keys: Sequence[Any] = (),
    limits: ExtractLimits | None = None,
    expires_days: float = DEFAULT_EXPIRES_DAYS,
    now: dt.datetime | None = None,
) -> AddResult:
    """Verify ``zips``, copy them in, and publish a new signed manifest (version + 1).

    All or nothing: every zip is checked before anything is written. An
    identical id+version already present is a no-op; a different zip for it
    is refused (OperationError). Raises SignatureError, PackageError,
    MetadataError, UsageError, OperationError.
    """
    repo = Path(repo)
    with _lock(repo):
        _check_signing_key(repo, secret_key)
        current = read_manifest(repo)
        keys = [*repository_keys(repo), *trusted_keys]
        added: list[tuple[ManifestEntry, Path, Path]] = []
        unchanged: list[ManifestEntry] = []
        for zip_path in map(Path, zips):
            entry, sig_path = _inspect(zip_path, keys, limits or ExtractLimits())
            existing = current.find(entry.id, entry.version) or next(
                (e for e, _, _ in added if e.id == entry.id and e.parsed_version == entry.parsed_version), None
            )
            if existing is None:
                added.append((entry, zip_path, sig_path))
            elif existing.sha256 == entry.sha256:
                unchanged.append(existing)
            else:
                raise OperationError(
                    f"{repo} already has {entry.id} {existing.version} with sha256 {existing.sha256[:12]}…, "
                    f"{zip_path.name} differs ({entry.sha256[:12]}…): publish a new version instead"
                )
        if not added:
            return AddResult(current, (), tuple(unchanged))
        for entry, zip_path, sig_path in added:
            target = package_path(repo, entry.id, entry.version)
            _copy_in(sig_path, target.with_name(target.name + ".minisig"))
            _copy_in(zip_path, target)
        manifest = attrs.evolve(
            current,
            version=current.version + 1,
            expires=_expiry(expires_days, now),
            plugins=(*current.plugins, *(e for e, _, _ in added)),
        )
        _write_manifest(repo, manifest, secret_key)
    return AddResult(manifest, tuple(e for e, _, _ in added), tuple(unchanged))
