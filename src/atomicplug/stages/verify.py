"""Stage 3a, verify: trust nothing in a zip before its signature checks out.

A package is verified before the transaction begins, so a wrong signature or
a hostile archive is refused with nothing written at all (exit 3).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from atomicplug.errors import SignatureError, UsageError
from atomicplug.store import sha256_file

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.metadata import Metadata

__all__ = ["VerifiedPackage", "verify_package", "signature_path_for"]


@attrs.frozen
class VerifiedPackage:
    """A zip whose signature verified and whose metadata.json is valid."""

    zip_path: Path
    sha256: str
    metadata: Metadata
    signed_by: str | None  # key id (hex) or None for an allowed unsigned package


def signature_path_for(zip_path: Path) -> Path:
    return zip_path.with_name(zip_path.name + ".minisig")


def verify_package(config: Config, zip_path: Path, signature_path: Path | None = None) -> VerifiedPackage:
    """Check signature, then archive structure and metadata; raise SecurityError subclasses."""
    from atomicplug import minisign, safezip

    zip_path = Path(zip_path).resolve()
    if not zip_path.is_file():
        raise UsageError(f"package {zip_path} does not exist")
    signature_path = Path(signature_path) if signature_path else signature_path_for(zip_path)
    signed_by = None
    sha256: str | None = None
    if signature_path.is_file():
        keys = minisign.load_trusted_keys(config.trusted_keys)
        if not keys and not config.allow_unsigned:
            raise SignatureError("no trusted keys are configured (trusted_keys in the config); cannot verify any package")
        if keys:
            # One read of the zip feeds both the signature's BLAKE2b and the sha256 we record,
            # so both digests are of the same bytes.
            digest = hashlib.sha256()
            signature = minisign.verify_file(zip_path, signature_path, keys, also_hash=(digest,))
            signed_by = signature.key_id_hex
            sha256 = digest.hexdigest()
    elif not config.allow_unsigned:
        raise SignatureError(f"{zip_path.name} has no signature ({signature_path.name} not found) and allow_unsigned is false")
    metadata = safezip.read_metadata(zip_path, config.limits)
    if sha256 is None:
        sha256 = sha256_file(zip_path)
    return VerifiedPackage(zip_path=zip_path, sha256=sha256, metadata=metadata, signed_by=signed_by)
