"""Intake: a package enters atomicplug once, as verified bytes named by their sha256.

docs/design.md "Intake". Verifying a *path* and extracting the same path later
let anyone who could write that file swap it while the install waited for the
lock (issue 13 item 1). So a package is read exactly once: the same read feeds
minisign's BLAKE2b-512 prehash, the sha256 that names it, and the copy into a
private temp file inside ``<home>/downloads/``. Only when the signature and
metadata.json check out is that copy renamed to ``<sha256>.zip`` (read-only,
its ``.minisig`` beside it). From then on the plan and the journal carry the
sha256, never the user's path; extraction opens the blob and checks its sha256
again (:func:`open_blob`). Local files and repository downloads both end here,
verified once.

A refused package leaves nothing behind: the temp file is removed, and folders
this intake had to create are removed again.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

import attrs

from atomicplug import fsutil, ioerrors
from atomicplug.errors import OperationError, PackageError, SignatureError, TrustError, UsageError

if TYPE_CHECKING:
    from atomicplug.config import Config, ExtractLimits
    from atomicplug.metadata import Metadata
    from atomicplug.minisign import PublicKey, Signature

__all__ = [
    "Package",
    "blob_path",
    "signature_path_for",
    "size_cap",
    "take_in_file",
    "take_in_download",
    "take_in_cached",
    "open_blob",
    "release",
    "release_used",
]

_CHUNK = 1 << 20
#: Chunks read ahead of the BLAKE2b thread, at most (see _Digests): ~2 MiB held, not the package.
_IN_FLIGHT = 1
#: Blobs larger than this are checked again on another core while extraction reads them (open_blob).
_RECHECK_ALONGSIDE_BYTES = 4 * _CHUNK
#: What that check reads at a time: it runs during staging, the top of an install's memory, where
#: two 1 MiB chunks (the next read before the last is freed) were the largest part (issue 14).
_RECHECK_CHUNK = 1 << 18
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MAX_SIGNATURE_BYTES = 64 * 1024


@attrs.frozen
class Package:
    """A package that passed intake: its blob is ``<home>/downloads/<sha256>.zip``."""

    sha256: str
    size: int
    metadata: Metadata
    signed_by: str | None  # key id (hex) or None for an allowed unsigned package


def signature_path_for(zip_path: Path) -> Path:
    return zip_path.with_name(zip_path.name + ".minisig")


def blob_path(config: Config, sha256: str) -> Path:
    """Where the verified bytes of ``sha256`` live; the name is checked before it becomes a path."""
    if not _SHA256.match(sha256):
        raise PackageError(f"expected a package sha256 of 64 lowercase hex digits, got {sha256!r}")
    return config.downloads_dir / f"{sha256}.zip"


class _Digests:
    """sha256, BLAKE2b-512 and size of the bytes seen, fed in one pass.

    Past the first chunk the BLAKE2b is fed in a thread of its own: hashlib releases
    the GIL while it hashes a large buffer, so on two cores the two hashes of a
    67 MB package take the time of the slower one (~0.1 s here) instead of the sum
    (bench/README.md). At most :data:`_IN_FLIGHT` chunks wait for it (memory stays flat).
    Use as a context manager (or call :meth:`finish`) before reading a digest: the
    thread is joined however the reading ends.
    """

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.blake2b = hashlib.blake2b(digest_size=64)
        self.size = 0
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None

    def update(self, chunk: bytes) -> None:
        if self.size == 0:  # a one-chunk package (the usual small plugin) starts no thread
            self.blake2b.update(chunk)
        else:
            self._other_core().put(chunk)
        self.sha256.update(chunk)
        self.size += len(chunk)

    def __enter__(self) -> _Digests:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def finish(self) -> _Digests:
        """Wait for the BLAKE2b thread (if one started); the digests are final after this."""
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = self._thread = None
        return self

    def _other_core(self) -> queue.Queue[bytes | None]:
        if self._queue is None:
            self._queue = queue.Queue(maxsize=_IN_FLIGHT)
            self._thread = threading.Thread(target=self._feed_blake2b, args=(self._queue,), name="atomicplug-blake2b", daemon=True)
            self._thread.start()
        return self._queue

    def _feed_blake2b(self, chunks: queue.Queue[bytes | None]) -> None:
        while (chunk := chunks.get()) is not None:
            self.blake2b.update(chunk)


@contextmanager
def _private_temp(config: Config) -> Iterator[tuple[Path, IO[bytes]]]:
    """A new temp file in ``downloads/`` (named like fsutil's temps, so recovery sweeps it after a kill).

    Removed on any exit unless the caller renamed it away; so are the folders
    created for it when the intake fails.
    """
    created = fsutil.make_dirs(config.downloads_dir)
    temp = config.downloads_dir / f".intake.{os.getpid()}-{secrets.token_hex(4)}{fsutil.TEMP_SUFFIX}"
    ok = False
    try:
        with open(temp, "xb") as handle:
            yield temp, handle
        ok = True
    finally:
        try:
            if not ok or temp.exists():
                temp.unlink(missing_ok=True)
            if not ok:
                fsutil.remove_empty_dirs(created)
        except OSError:
            if ok:
                raise  # nothing else in flight: the cleanup's failure is the one to report
            # the error in flight is the one to report; a temp the disk keeps is swept by recovery


def size_cap(limits: ExtractLimits) -> int:
    """The largest zip the extraction caps leave room for: ``max_unpacked_bytes``, deflate's
    overhead on data it cannot shrink (under 1/256), and 4 KiB of headers, name and extras for
    each of ``max_entries`` entries. A larger file is refused while it is read, not copied whole."""
    return limits.max_unpacked_bytes + limits.max_unpacked_bytes // 256 + limits.max_entries * 4096


def _copy_hashing(source: IO[bytes], sink: IO[bytes], cap: int, name: str) -> _Digests:
    with _Digests() as digests:
        while True:
            with ioerrors.doing("read", source.name):
                chunk = source.read(_CHUNK)
            if not chunk:
                break
            if digests.size + len(chunk) > cap:
                raise PackageError(
                    f"package {name} is larger than {cap} bytes, more than any zip within max_unpacked_bytes "
                    "and max_entries can be"
                )
            digests.update(chunk)
            with ioerrors.doing("write", sink.name):
                sink.write(chunk)
        with ioerrors.doing("write", sink.name):
            sink.flush()
    return digests


def _hash_file(path: Path) -> _Digests:
    with _Digests() as digests, open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digests.update(chunk)
    return digests


def _read_signature(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_SIGNATURE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SignatureError(f"cannot read signature {path}: {exc.strerror or exc}") from exc
    if len(data) > _MAX_SIGNATURE_BYTES:
        raise SignatureError(f"signature {path} is {len(data)}+ bytes; expected a small minisign file")
    return data.decode("utf-8", "surrogateescape")


@attrs.frozen
class _Wanted:
    """The signature a package must carry, parsed, and the keys that may have made it."""

    signature: Signature
    keys: Sequence[PublicKey]


def _wanted_signature(config: Config, sig_text: str | None, name: str) -> _Wanted | None:
    """Before a byte of the package is read: what its signature must be, None for an allowed
    unsigned package; SignatureError for a missing or malformed one, or no trusted keys."""
    from atomicplug import minisign

    if sig_text is None:
        if config.allow_unsigned:
            return None
        raise SignatureError(f"{name} has no signature ({name}.minisig not found) and allow_unsigned is false")
    keys = minisign.load_trusted_keys(config.trusted_keys)
    if not keys:
        if config.allow_unsigned:
            return None
        raise SignatureError("no trusted keys are configured (trusted_keys in the config); cannot verify any package")
    return _Wanted(minisign.Signature.from_text(sig_text, source=f"signature of {name}"), keys)


def _check_signature(temp: Path, digests: _Digests, wanted: _Wanted | None, name: str) -> str | None:
    """The signer's key id, None for an allowed unsigned package; SignatureError otherwise."""
    from atomicplug import minisign

    if wanted is None:
        return None
    with minisign._mapped(temp) as whole:
        minisign.verify_digest(wanted.signature, wanted.keys, name, blake2b512=digests.blake2b.digest(), message=lambda: whole)
    return wanted.signature.key_id_hex


def _adopt(config: Config, temp: Path, digests: _Digests, wanted: _Wanted | None, sig_text: str | None, name: str) -> Package:
    """Verify the private copy, read its metadata, then publish it as the blob of its sha256."""
    from atomicplug import safezip

    from atomicplug.metadata import refuse_new

    signed_by = _check_signature(temp, digests, wanted, name)
    sha256 = digests.sha256.hexdigest()
    metadata = safezip.read_metadata(temp, config.limits, sha256=sha256)
    refuse_new(metadata)
    blob = blob_path(config, sha256)
    os.chmod(temp, 0o444)
    if sig_text is not None:
        fsutil.atomic_write_bytes(signature_path_for(blob), sig_text.encode("utf-8", "surrogateescape"))
    # No fsync: nothing after COMMIT needs the blob (the store trees are durable), and a blob
    # damaged by a power cut is caught by open_blob's sha256 check before it is used.
    fsutil.replace(temp, blob, durable=False)
    return Package(sha256=sha256, size=digests.size, metadata=metadata, signed_by=signed_by)


def take_in_file(config: Config, zip_path: str | os.PathLike[str], signature_path: str | os.PathLike[str] | None = None) -> Package:
    """Take a local zip in: one read copies, hashes and feeds the signature check.

    Raises UsageError (missing file, a folder), SignatureError, PackageError/MetadataError.
    """
    if not os.fspath(zip_path):
        raise UsageError("the package path is empty")
    path = Path(zip_path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder, not a package (pack it first: atomicplug pack {path} --key KEY)")
    sig_path = Path(signature_path) if signature_path else signature_path_for(path)
    sig_text = _read_signature(sig_path)
    if sig_text is None and signature_path:  # the one named, not the default beside the zip
        raise UsageError(f"signature {sig_path} does not exist")
    if not path.exists():
        raise UsageError(f"package {path} does not exist")
    wanted = _wanted_signature(config, sig_text, path.name)  # refused before a byte is read (/dev/zero has no .minisig)
    try:
        source = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise UsageError(f"package {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read package {path}: {exc.strerror or exc}") from None
    with _taking_in(config, path.name), source, _private_temp(config) as (temp, sink):
        digests = _copy_hashing(source, sink, size_cap(config.limits), path.name)
        return _adopt(config, temp, digests, wanted, sig_text, path.name)


def _taking_in(config: Config, name: str) -> AbstractContextManager[None]:
    """A disk failure while a package is taken in: one line, nothing kept (docs/design.md "A failing disk is one line")."""
    return ioerrors.reported(f"taking in package {name}", site=config)


def take_in_download(
    config: Config,
    fill: Callable[[Path], None],
    sig_text: str | None,
    *,
    sha256: str,
    name: str,
) -> Package:
    """Take a downloaded package in: ``fill(temp)`` writes it into a private temp file in downloads/.

    The downloaded bytes must hash to ``sha256`` (what the signed manifest says),
    else TrustError (mix-and-match); then the same checks as a local file.
    """
    wanted = _wanted_signature(config, sig_text, name)
    with _taking_in(config, name), _private_temp(config) as (temp, _handle):
        fill(temp)
        digests = _hash_file(temp)
        if digests.sha256.hexdigest() != sha256:
            raise TrustError(
                f"{name}: downloaded bytes have sha256 {digests.sha256.hexdigest()}, the manifest says "
                f"{sha256}: refusing a possible mix-and-match attack"
            )
        return _adopt(config, temp, digests, wanted, sig_text, name)


def take_in_cached(config: Config, sha256: str, size: int | None = None) -> Package | None:
    """A blob already taken in, when its bytes still hash to its name and its signer is still trusted.

    Its signature was verified at intake; only the key is asked again (it may have
    been removed from trusted_keys since). A damaged blob is removed (the caller
    downloads it again). None when absent, damaged or no longer trusted.
    ``size``: what the source that names the package says it weighs (a cheap check first).
    """
    from atomicplug import minisign, safezip
    from atomicplug.store import sha256_file

    blob = blob_path(config, sha256)
    try:
        if size not in (None, blob.stat().st_size) or sha256_file(blob) != sha256:  # its name only: no BLAKE2b
            _discard(blob)
            return None
    except FileNotFoundError:
        return None
    sig_text = _read_signature(signature_path_for(blob))
    signed_by = None
    if sig_text is not None:
        keys = minisign.load_trusted_keys(config.trusted_keys)
        try:
            signature = minisign.Signature.from_text(sig_text)
            minisign.signer_of(signature, keys, blob.name)
        except SignatureError:
            return None
        signed_by = signature.key_id_hex
    elif not config.allow_unsigned:
        return None
    return Package(sha256=sha256, size=blob.stat().st_size, metadata=safezip.read_metadata(blob, config.limits, sha256=sha256), signed_by=signed_by)


def release(config: Config, sha256: str) -> None:
    """Drop the blob of a package whose store tree is made: nothing needs its bytes any more.

    Its files live on as objects; a reinstall takes the zip in again. Not durable
    on purpose: a blob that reappears after a power cut is only disk for gc.
    """
    blob = blob_path(config, sha256)
    fsutil.remove_file(signature_path_for(blob), durable=False)
    fsutil.remove_file(blob, durable=False)


def release_used(config: Config, sha256s: Iterable[str]) -> None:
    """:func:`release` the blobs of packages whose files are objects now (staged, reused, or found
    installed already), except on a cluster node: its blobs are what it publishes to the others."""
    if not config.cluster:
        for sha256 in sha256s:
            release(config, sha256)


def _discard(blob: Path) -> None:
    """Remove a damaged blob (and its signature) so the next intake stores the verified bytes again."""
    fsutil.remove_file(blob)
    fsutil.remove_file(signature_path_for(blob))


@contextmanager
def open_blob(config: Config, sha256: str) -> Iterator[IO[bytes]]:
    """The blob of ``sha256``, opened once and checked to still hash to its name.

    The caller reads (extracts) from the very file object that is checked. A
    small blob is checked before the block runs; a large one is hashed on another
    core (``pread`` on the same open file) while the block extracts, and checked
    when the block ends: the caller publishes nothing it made from the bytes
    inside the block (staging renames its tree into the store after it), so a
    damaged blob still refuses the install, at the cost of its unreferenced objects.
    Raises OperationError when the blob is missing, PackageError when it is damaged, also in place of the
    block's own error, which damaged bytes explain.
    """
    blob = blob_path(config, sha256)
    try:
        handle = open(blob, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        # Not the package's fault (exit 3 is a security refusal): another process dropped its blob.
        raise OperationError(f"package {sha256[:12]} is no longer in {config.downloads_dir} (gc ran?); install it again") from None
    with handle:
        check = _Recheck(handle.fileno(), sha256)
        if os.fstat(handle.fileno()).st_size <= _RECHECK_ALONGSIDE_BYTES:
            check.run()
            _refuse_damaged(config, check)
            yield handle
            return
        check.start()
        try:
            yield handle
        except Exception as exc:  # damaged bytes explain it: their refusal goes first
            _refuse_damaged(config, check, cause=exc)
            raise
        _refuse_damaged(config, check)


class _Recheck:
    """sha256 of a blob read by ``pread`` (the file offset the extractor uses is not moved)."""

    def __init__(self, fd: int, sha256: str) -> None:
        self.fd = fd
        self.sha256 = sha256
        self.digest = hashlib.sha256()
        self.error: OSError | None = None
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        offset = 0
        try:
            while chunk := os.pread(self.fd, _RECHECK_CHUNK, offset):
                self.digest.update(chunk)
                offset += len(chunk)
        except OSError as exc:
            self.error = exc

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="atomicplug-recheck", daemon=True)
        self._thread.start()

    def matches(self) -> bool:
        """Wait for the hash; raises the OSError that stopped it (a failing disk)."""
        if self._thread is not None:
            self._thread.join()
        if self.error is not None:
            raise self.error
        return self.digest.hexdigest() == self.sha256


def _refuse_damaged(config: Config, check: _Recheck, cause: BaseException | None = None) -> None:
    if check.matches():
        return
    blob = blob_path(config, check.sha256)
    _discard(blob)
    raise PackageError(f"package blob {blob} was damaged (its sha256 changed since intake) and is removed; install it again") from cause
