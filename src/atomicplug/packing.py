"""Build a plugin zip deterministically and sign it (``atomicplug pack``).

Why deterministic: the same source tree must give the same bytes, so a package
can be rebuilt and compared (reproducible builds) and its sha256 in a manifest
means something. Entries are sorted, timestamps and modes fixed, no directory
entries, one deflate level; the last entry is RECORD, every file's size and
sha256 (atomicplug.package_record), hashed while the file is zipped so each
source file is read once. Why the refusals: what the installer would refuse
(docs/design.md "Package format", "Safe extraction") is better refused at pack time.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
import unicodedata
import zipfile
from collections.abc import Callable
from pathlib import Path

import attrs

from atomicplug import fsutil
from atomicplug.config import ExtractLimits
from atomicplug.errors import PackageError, UsageError
from atomicplug.layout import ALLOWED_TOP_LEVEL, RECORD_NAME, top_level_allowed
from atomicplug.metadata import Metadata, refuse_new
from atomicplug.minisign import SecretKey, sign_file
from atomicplug.package_record import PackageRecord, RecordEntry
from atomicplug.safezip import escaped, name_problem

__all__ = ["Packed", "collect_files", "output_path", "write_zip", "pack"]

_SKIPPED_DIRS = {"__pycache__"}
_SKIPPED_SUFFIXES = (".pyc", ".pyo")
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)
_FILE_MODE = 0o100644
_COMPRESS_LEVEL = 9
_CHUNK = 1 << 20


@attrs.frozen
class Packed:
    """What :func:`pack` wrote."""

    metadata: Metadata
    zip_path: Path
    signature_path: Path | None


def _refuse(rel: str, why: str) -> PackageError:
    return PackageError(f"cannot pack {rel}: {why}")


def _check_top_level(name: str, is_dir: bool) -> None:
    if name == RECORD_NAME and not is_dir:
        raise _refuse(name, "pack writes the package's RECORD itself; remove this file from the source tree")
    if not top_level_allowed(name, is_dir):
        raise _refuse(name, f"not allowed at the top level of a plugin (allowed: {ALLOWED_TOP_LEVEL})")


def _check_name(rel: str, is_dir: bool) -> None:
    """The installer's rules on names (safezip.name_problem, at the default limits): a name that is
    not UTF-8 (os.walk gives its bytes as surrogates) or that the installer refuses is refused here."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise _refuse(shown, "is not valid UTF-8 (the installer refuses it)") from None
    problem = name_problem(rel + ("/" if is_dir else ""), ExtractLimits())
    if problem is not None:
        raise _refuse(escaped(rel), f"{problem} (the installer refuses it)")


def collect_files(src_dir: Path) -> list[tuple[str, Path]]:
    """(archive name, path) for every file to pack, sorted by name; refuses what cannot be packed."""
    src_dir = Path(src_dir)
    found: list[tuple[str, Path]] = []
    folded: dict[str, str] = {}
    for root, dirs, files in os.walk(src_dir):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        for name in [*dirs, *sorted(files)]:
            path = here / name
            rel = path.relative_to(src_dir).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                raise _refuse(rel, "symlinks are not allowed in a plugin")
            is_dir = stat.S_ISDIR(info.st_mode)
            if not is_dir and not stat.S_ISREG(info.st_mode):
                raise _refuse(rel, "only regular files and folders can be packed")
            if here == src_dir:
                _check_top_level(name, is_dir)
            _check_name(rel, is_dir)
            key = unicodedata.normalize("NFC", rel).casefold()
            if key in folded:
                raise _refuse(rel, f"its name clashes with {folded[key]} after case-folding")
            folded[key] = rel
            if not is_dir and not name.endswith(_SKIPPED_SUFFIXES):
                found.append((rel, path))
    return sorted(found)


def _zip_info(name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
    info.create_system = 3  # unix, so external_attr means a mode
    info.external_attr = _FILE_MODE << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    info._compresslevel = _COMPRESS_LEVEL  # type: ignore[attr-defined]  # public only from 3.13
    info.file_size = size
    return info


def _add_file(archive: zipfile.ZipFile, name: str, path: Path) -> RecordEntry:
    """Deflate one file into the archive, hashing it on the way (one read)."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    written = 0
    with open(path, "rb") as source, archive.open(_zip_info(name, size), "w", force_zip64=size >= zipfile.ZIP64_LIMIT) as sink:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            written += len(chunk)
            sink.write(chunk)
    if written != size:
        raise _refuse(name, f"changed while being packed (expected {size} bytes, read {written})")
    return RecordEntry(path=name, size=size, sha256=digest.hexdigest())


def write_zip(files: list[tuple[str, Path]], out: Path) -> None:
    """Write a reproducible zip ending with its RECORD, temp-then-replace so a failed pack leaves no half file."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            record = PackageRecord.from_entries(_add_file(archive, name, path) for name, path in files)
            data = record.to_bytes()
            with archive.open(_zip_info(RECORD_NAME, len(data)), "w") as sink:
                sink.write(data)
        fsutil.fsync_file(tmp)
        fsutil.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_metadata(src_dir: Path) -> Metadata:
    path = Path(src_dir) / "metadata.json"
    if not Path(src_dir).is_dir():
        raise PackageError(f"cannot pack {src_dir}: not a folder")
    if not path.is_file() or path.is_symlink():
        raise PackageError(f"cannot pack {src_dir}: expected a metadata.json file in it")
    metadata = Metadata.from_json_bytes(path.read_bytes())
    refuse_new(metadata)
    return metadata


def output_path(out: str | os.PathLike[str] | None, metadata: Metadata) -> Path:
    """Where ``pack`` writes: ``out``, or ``<id>-<version>.zip`` in it when it is a folder (the
    working folder without one). UsageError when ``out`` or its ``.minisig`` exists and is not a
    regular file: the zip is renamed over its path (a FIFO, or as root /dev/null, would be replaced)."""
    default = f"{metadata.id}-{metadata.version}.zip"
    if out is None:
        return Path.cwd() / default
    path = Path(out)
    if os.fspath(out).endswith(os.sep) or path.is_dir():
        path = path / default
    for target in (path, path.with_name(path.name + ".minisig")):
        try:
            mode = os.stat(target).st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(mode):
            raise UsageError(f"cannot write {target}: it exists and is not a regular file")
    return path


def pack(
    src_dir: str | os.PathLike[str],
    secret_key: SecretKey | Callable[[], SecretKey] | None,
    out: str | os.PathLike[str] | None = None,
) -> Packed:
    """Validate, zip and sign ``src_dir``; ``out`` defaults to ``./<id>-<version>.zip``.

    ``secret_key`` may be a callable (e.g. one asking a password): it is called only
    once the tree is valid, so nobody types a password for a tree that will be refused.
    The ``.minisig`` carries a timestamp, so only the zip is byte-for-byte reproducible.
    Raises MetadataError, PackageError, SignatureError (from the key loader).
    """
    src = Path(src_dir)
    metadata = read_metadata(src)
    files = collect_files(src)
    if callable(secret_key):
        secret_key = secret_key()
    zip_path = output_path(out, metadata)
    write_zip(files, zip_path)
    if secret_key is None:
        return Packed(metadata, zip_path, None)
    trusted = f"timestamp:{int(time.time())}\tfile:{zip_path.name}\thashed"
    signature = sign_file(zip_path, secret_key, trusted_comment=trusted)
    sig_path = zip_path.with_name(zip_path.name + ".minisig")
    fsutil.atomic_write_bytes(sig_path, signature.encode("utf-8"))
    return Packed(metadata, zip_path, sig_path)
