"""The download cache: ``<home>/downloads/<sha256>.zip`` (+ ``.minisig``).

DESIGN.md "State" and "Repository": packages are cached by content hash, so a
cached file is valid exactly when its bytes still hash to its name. Nothing
enters the cache before it was verified; it is written to a temp file in the
same folder and ``os.replace``-d into place, signature first, zip last (the
zip's presence marks a complete entry).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import attrs

from atomicplug import fsutil

__all__ = ["DownloadCache", "CachedFile", "sha256_file"]

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 16


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex sha256, size) of a file, streamed."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@attrs.frozen
class CachedFile:
    zip_path: Path
    sig_path: Path | None


@attrs.frozen
class DownloadCache:
    """A folder of verified packages named by sha256."""

    folder: Path

    def _paths(self, sha256: str) -> tuple[Path, Path]:
        if not _SHA256_RE.match(sha256):  # the name becomes a path: never trust it blindly
            raise ValueError(f"expected 64 lowercase hex digits, got {sha256!r}")
        zip_path = self.folder / f"{sha256}.zip"
        return zip_path, zip_path.with_name(zip_path.name + ".minisig")

    def lookup(self, sha256: str, size: int) -> CachedFile | None:
        """A cached entry whose bytes still match ``sha256``/``size``; a damaged one is removed."""
        zip_path, sig_path = self._paths(sha256)
        if not zip_path.is_file():
            return None
        actual, actual_size = sha256_file(zip_path)
        if actual != sha256 or actual_size != size:
            self.remove(sha256)
            return None
        return CachedFile(zip_path, sig_path if sig_path.is_file() else None)

    def temp_file(self) -> Path:
        """A new empty temp file inside the cache folder (same file system as the target)."""
        fsutil.make_dirs(self.folder)
        fd, name = tempfile.mkstemp(prefix=".part-", suffix=".zip", dir=self.folder)
        os.close(fd)
        return Path(name)

    def commit(self, sha256: str, temp_zip: Path, sig_text: str | None) -> CachedFile:
        """Move a verified download into place: signature first, then the zip."""
        zip_path, sig_path = self._paths(sha256)
        fsutil.make_dirs(self.folder)
        if sig_text is not None:
            fsutil.atomic_write_bytes(sig_path, sig_text.encode("utf-8"))
        else:
            fsutil.remove_file(sig_path)
        fsutil.fsync_file(temp_zip)
        fsutil.replace(temp_zip, zip_path)
        return CachedFile(zip_path, sig_path if sig_text is not None else None)

    def remove(self, sha256: str) -> None:
        zip_path, sig_path = self._paths(sha256)
        fsutil.remove_file(zip_path)
        fsutil.remove_file(sig_path)
