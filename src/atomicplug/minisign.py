"""minisign-compatible keys and detached signatures (docs/design.md "Package format").

Why our own code and not the binary: the installer is a library and must verify
without a subprocess. The formats are minisign's byte for byte, so a package signed
with ``minisign -S`` installs, and keys we make work in ``minisign``:

* public key:  ``"Ed" + keyid(8) + pk(32)``, base64, after an untrusted comment line;
* secret key:  ``"Ed" + kdf("Sc"|"\\0\\0") + "B2" + salt(32) + opslimit + memlimit (u64 LE)
  + keynum_sk``, where ``keynum_sk = keyid(8) + sk(64) + BLAKE2b-256 checksum(32)`` is
  XORed with a scrypt stream (libsodium ``crypto_pwhash_scryptsalsa208sha256``) when encrypted;
* signature:   untrusted comment, ``base64(alg + keyid + sig)``, trusted comment,
  ``base64(Ed25519(sig + trusted_comment))`` (the "global signature").

``"ED"`` signs the BLAKE2b-512 hash of the file (streamed, minisign's default);
legacy ``"Ed"`` signs the file itself and is accepted for verification only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import mmap
import os
import secrets
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from atomicplug.errors import ConfigError, SignatureError

__all__ = [
    "PublicKey",
    "SecretKey",
    "Signature",
    "sign_file",
    "verify_file",
    "verify_digest",
    "signer_of",
    "parse_signature",
    "load_trusted_keys",
    "DEFAULT_OPSLIMIT",
    "DEFAULT_MEMLIMIT",
]

#: minisign's scrypt cost (OPSLIMIT / MEMLIMIT in minisign.h): N=2^20, r=8, p=1, 1 GiB.
DEFAULT_OPSLIMIT = 33_554_432
DEFAULT_MEMLIMIT = 1_073_741_824

_ALG_PUBKEY = b"Ed"
_ALG_PREHASHED = b"ED"
_ALG_LEGACY = b"Ed"
_KDF_SCRYPT = b"Sc"
_KDF_NONE = b"\0\0"
_CHK_BLAKE2B = b"B2"
_UNTRUSTED = b"untrusted comment: "
_TRUSTED = b"trusted comment: "
_SECKEY_LEN = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32
_MAX_TEXT = 64 * 1024  # key and signature files are a few hundred bytes
_CHUNK = 1 << 20

Password = str | bytes | Callable[[], str | bytes] | None


def _key_id_hex(key_id: bytes) -> str:
    """The key id as minisign prints it: the little-endian u64 in upper-case hex."""
    return key_id[::-1].hex().upper()


def _b64(line: bytes, what: str) -> bytes:
    try:
        return base64.b64decode(line.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{what}: expected a base64 line, got {line[:40]!r}") from None


def _lines(data: str | bytes, what: str) -> list[bytes]:
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    if len(raw) > _MAX_TEXT:
        raise SignatureError(f"{what}: expected a small minisign file, got {len(raw)} bytes")
    return [line.rstrip(b"\r") for line in raw.split(b"\n")]


def _read_small(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(_MAX_TEXT + 1)
    except FileNotFoundError:
        raise SignatureError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise SignatureError(f"cannot read {what} {path}: {exc.strerror}") from None


def _comment(text: str, what: str) -> bytes:
    if "\n" in text or "\r" in text:
        raise SignatureError(f"{what} must be one line (got {text!r})")
    return text.encode("utf-8")


@attrs.frozen
class PublicKey:
    """A minisign public key: 8-byte key id and 32-byte Ed25519 key."""

    key_id: bytes = attrs.field(validator=attrs.validators.instance_of(bytes))
    key: bytes = attrs.field(validator=attrs.validators.instance_of(bytes))
    comment: str = attrs.field(default="atomicplug public key", eq=False)

    @property
    def key_id_hex(self) -> str:
        return _key_id_hex(self.key_id)

    @classmethod
    def from_text(cls, text: str | bytes, source: str = "public key") -> PublicKey:
        """Parse a ``.pub`` file's text, or the bare base64 line (``minisign -P``)."""
        lines = [line for line in _lines(text, source) if line.strip()]
        comment = b""
        if lines and lines[0].startswith(_UNTRUSTED):
            comment = lines.pop(0)[len(_UNTRUSTED) :]
        if not lines:
            raise SignatureError(f"{source} is not a minisign public key: no key line")
        raw = _b64(lines[0], f"{source} is not a minisign public key")
        if len(raw) != 42:
            raise SignatureError(f"{source} is not a minisign public key: expected 42 bytes, got {len(raw)}")
        if raw[:2] != _ALG_PUBKEY:
            raise SignatureError(f"{source} uses unknown key algorithm {raw[:2]!r} (expected 'Ed')")
        return cls(raw[2:10], raw[10:], comment.decode("utf-8", "replace"))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> PublicKey:
        return cls.from_text(_read_small(Path(path), "public key"), source=f"public key {path}")

    def to_text(self) -> str:
        body = base64.b64encode(_ALG_PUBKEY + self.key_id + self.key).decode("ascii")
        return f"untrusted comment: {self.comment} {self.key_id_hex}\n{body}\n"

    def _verify(self, signature: bytes, data: bytes | mmap.mmap) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.key).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True


def _pickparams(opslimit: int, memlimit: int) -> tuple[int, int, int]:
    """(N, r, p) exactly as libsodium's ``pickparams`` (pwhash_scryptsalsa208sha256.c)."""
    opslimit = max(opslimit, 32768)
    r = 8
    if opslimit < memlimit // 32:
        p = 1
        max_n = opslimit // (r * 4)
    else:
        max_n = memlimit // (r * 128)
    n_log2 = 1
    while n_log2 < 63 and (1 << n_log2) <= max_n // 2:
        n_log2 += 1
    if not opslimit < memlimit // 32:
        maxrp = min((opslimit // 4) // (1 << n_log2), 0x3FFFFFFF)
        p = maxrp // r
    return 1 << n_log2, r, p


def _scrypt_stream(password: bytes, salt: bytes, opslimit: int, memlimit: int, length: int) -> bytes:
    n, r, p = _pickparams(opslimit, memlimit)
    if p < 1 or n.bit_length() > 33 or r * p >= 1 << 30:
        raise SignatureError(f"secret key has unusable scrypt limits (opslimit={opslimit}, memlimit={memlimit})")
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt  # only secret keys need it, not verifying

    return Scrypt(salt=salt, length=length, n=n, r=r, p=p).derive(password)


def _checksum(key_id: bytes, sk: bytes) -> bytes:
    return hashlib.blake2b(_ALG_PUBKEY + key_id + sk, digest_size=32).digest()


def _password_bytes(password: Password) -> bytes | None:
    if callable(password):
        password = password()
    if isinstance(password, str):
        return password.encode("utf-8")
    return password


@attrs.frozen(repr=False)
class SecretKey:
    """A minisign secret key; ``seed`` is the 32-byte Ed25519 private key."""

    key_id: bytes
    seed: bytes

    def __repr__(self) -> str:  # never print key material
        return f"SecretKey(key_id={self.key_id_hex})"

    @property
    def key_id_hex(self) -> str:
        return _key_id_hex(self.key_id)

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(self.key_id, self._private().public_key().public_bytes_raw())

    def _private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @classmethod
    def generate(cls) -> SecretKey:
        return cls(secrets.token_bytes(8), secrets.token_bytes(32))

    @staticmethod
    def is_encrypted_text(text: str | bytes, source: str = "secret key") -> bool:
        """Whether loading needs a password (so a CLI asks only when it must)."""
        return _split_secret(text, source)[1] == _KDF_SCRYPT

    @classmethod
    def from_text(cls, text: str | bytes, password: Password = None, source: str = "secret key") -> SecretKey:
        """Parse a minisign secret key; ``password`` may be a callable asked only if encrypted."""
        raw, kdf = _split_secret(text, source)
        keynum = raw[54:]
        if kdf == _KDF_SCRYPT:
            secret = _password_bytes(password)
            if secret is None:
                raise SignatureError(f"{source} is encrypted: a password is needed")
            ops, mem = struct.unpack("<QQ", raw[38:54])
            stream = _scrypt_stream(secret, raw[6:38], ops, mem, len(keynum))
            keynum = bytes(a ^ b for a, b in zip(keynum, stream, strict=True))
        key_id, sk, chk = keynum[:8], keynum[8:72], keynum[72:]
        # minisign 0.11 `-G -W` leaves the checksum zero and never checks it when unencrypted.
        unchecked = kdf == _KDF_NONE and chk == bytes(32)
        if not unchecked and not hmac.compare_digest(chk, _checksum(key_id, sk)):
            problem = "wrong password or corrupted" if kdf == _KDF_SCRYPT else "corrupted"
            raise SignatureError(f"{problem} secret key {source}: checksum mismatch")
        key = cls(key_id, sk[:32])
        if key._private().public_key().public_bytes_raw() != sk[32:]:
            raise SignatureError(f"corrupted secret key {source}: its public half does not match")
        return key

    @classmethod
    def load(cls, path: str | os.PathLike[str], password: Password = None) -> SecretKey:
        return cls.from_text(_read_small(Path(path), "secret key"), password, source=str(path))

    def to_text(
        self,
        password: str | bytes | None,
        *,
        opslimit: int = DEFAULT_OPSLIMIT,
        memlimit: int = DEFAULT_MEMLIMIT,
    ) -> str:
        """minisign's secret key file; encrypted with scrypt unless ``password`` is None."""
        sk = self.seed + self.public_key.key
        keynum = self.key_id + sk + _checksum(self.key_id, sk)
        secret = _password_bytes(password)
        if secret is None:
            head = _KDF_NONE + _CHK_BLAKE2B + bytes(32) + struct.pack("<QQ", 0, 0)
            comment = "atomicplug secret key (not encrypted)"
        else:
            salt = secrets.token_bytes(32)
            stream = _scrypt_stream(secret, salt, opslimit, memlimit, len(keynum))
            keynum = bytes(a ^ b for a, b in zip(keynum, stream, strict=True))
            head = _KDF_SCRYPT + _CHK_BLAKE2B + salt + struct.pack("<QQ", opslimit, memlimit)
            comment = "atomicplug encrypted secret key"
        body = base64.b64encode(_ALG_PUBKEY + head + keynum).decode("ascii")
        return f"untrusted comment: {comment}\n{body}\n"

    def _sign(self, data: bytes) -> bytes:
        return self._private().sign(data)


def _split_secret(text: str | bytes, source: str) -> tuple[bytes, bytes]:
    lines = [line for line in _lines(text, source) if line.strip()]
    if len(lines) < 2 or not lines[0].startswith(_UNTRUSTED):
        raise SignatureError(f"{source} is not a minisign secret key: expected a comment line and a key line")
    raw = _b64(lines[1], f"{source} is not a minisign secret key")
    if len(raw) != _SECKEY_LEN:
        raise SignatureError(f"{source} is not a minisign secret key: expected {_SECKEY_LEN} bytes, got {len(raw)}")
    if raw[:2] != _ALG_PUBKEY:
        raise SignatureError(f"{source} uses unknown key algorithm {raw[:2]!r} (expected 'Ed')")
    if raw[2:4] not in (_KDF_SCRYPT, _KDF_NONE):
        raise SignatureError(f"{source} uses unknown key derivation {raw[2:4]!r} (expected 'Sc' or none)")
    if raw[4:6] != _CHK_BLAKE2B:
        raise SignatureError(f"{source} uses unknown checksum {raw[4:6]!r} (expected 'B2')")
    return raw, raw[2:4]


@attrs.frozen
class Signature:
    """A parsed ``.minisig`` file. Parsing checks shape only; :func:`verify_file` checks trust."""

    algorithm: bytes
    key_id: bytes
    signature: bytes
    trusted_comment: str
    global_signature: bytes
    untrusted_comment: str = "signature from atomicplug secret key"

    @property
    def key_id_hex(self) -> str:
        return _key_id_hex(self.key_id)

    @property
    def prehashed(self) -> bool:
        return self.algorithm == _ALG_PREHASHED

    @classmethod
    def from_text(cls, text: str | bytes, source: str = "signature") -> Signature:
        lines = _lines(text, source)
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines or not lines[0].startswith(_UNTRUSTED):
            raise SignatureError(f"{source} is not a minisign signature: expected 'untrusted comment:' on line 1")
        if len(lines) < 4:
            raise SignatureError(f"{source} is truncated: expected 4 lines, got {len(lines)}")
        if not lines[2].startswith(_TRUSTED):
            raise SignatureError(f"{source} is not a minisign signature: expected 'trusted comment:' on line 3")
        what = f"{source} is not a minisign signature"
        raw, global_sig = _b64(lines[1], what), _b64(lines[3], what)
        if len(raw) < 2 or raw[:2] not in (_ALG_PREHASHED, _ALG_LEGACY):
            raise SignatureError(f"{source} uses unknown signature algorithm {raw[:2]!r} (expected 'ED' or 'Ed')")
        if len(raw) != 74 or len(global_sig) != 64:
            raise SignatureError(f"{source} is truncated: expected 74 + 64 signature bytes, got {len(raw)} + {len(global_sig)}")
        return cls(
            algorithm=raw[:2],
            key_id=raw[2:10],
            signature=raw[10:],
            trusted_comment=lines[2][len(_TRUSTED) :].decode("utf-8", "surrogateescape"),
            global_signature=global_sig,
            untrusted_comment=lines[0][len(_UNTRUSTED) :].decode("utf-8", "surrogateescape"),
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Signature:
        return cls.from_text(_read_small(Path(path), "signature"), source=f"signature {path}")

    def to_text(self) -> str:
        body = base64.b64encode(self.algorithm + self.key_id + self.signature).decode("ascii")
        glob = base64.b64encode(self.global_signature).decode("ascii")
        return f"untrusted comment: {self.untrusted_comment}\n{body}\ntrusted comment: {self.trusted_comment}\n{glob}\n"

    def _trusted_bytes(self) -> bytes:
        return self.trusted_comment.encode("utf-8", "surrogateescape")


def _blake2b_file(path: Path, also: Sequence[Any] = ()) -> bytes:
    """BLAKE2b-512 of a file, streamed: packages may be large.

    ``also``: more hashlib objects fed the same bytes in the same pass (the
    installer's sha256 of the package), so the file is read once.
    """
    digest = hashlib.blake2b(digest_size=64)
    updates = [digest.update, *(h.update for h in also)]
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            for update in updates:
                update(chunk)
    return digest.digest()


def sign_file(
    path: str | os.PathLike[str],
    secret_key: SecretKey,
    trusted_comment: str | None = None,
    untrusted_comment: str = "signature from atomicplug secret key",
) -> str:
    """Sign like ``minisign -S`` (prehashed "ED"); returns the ``.minisig`` text."""
    path = Path(path)
    if trusted_comment is None:
        trusted_comment = f"timestamp:{int(time.time())}\tfile:{path.name}\thashed"
    _comment(untrusted_comment, "untrusted comment")
    comment = _comment(trusted_comment, "trusted comment")
    sig = secret_key._sign(_blake2b_file(path))
    return Signature(
        algorithm=_ALG_PREHASHED,
        key_id=secret_key.key_id,
        signature=sig,
        trusted_comment=trusted_comment,
        global_signature=secret_key._sign(sig + comment),
        untrusted_comment=untrusted_comment,
    ).to_text()


@contextmanager
def _mapped(path: Path) -> Iterator[bytes | mmap.mmap]:
    """The whole file, memory-mapped (legacy "Ed" signs the file itself; the OS pages it in)."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            yield b""
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            yield view


def signer_of(signature: Signature, trusted_keys: Sequence[PublicKey], name: str) -> PublicKey:
    """The trusted key that made ``signature``; SignatureError naming ``name`` when none did."""
    key = next((k for k in trusted_keys if hmac.compare_digest(k.key_id, signature.key_id)), None)
    if key is None:
        trusted = ", ".join(k.key_id_hex for k in trusted_keys) or "none"
        raise SignatureError(
            f"{name} is signed by untrusted key {signature.key_id_hex} (key id mismatch; trusted keys: {trusted})"
        )
    return key


def parse_signature(signature: Signature | str | bytes | os.PathLike[str]) -> Signature:
    """A parsed Signature from itself, a ``.minisig`` path (``os.PathLike``) or its text."""
    if isinstance(signature, Signature):
        return signature
    if isinstance(signature, os.PathLike):
        return Signature.from_file(signature)
    return Signature.from_text(signature)


def verify_digest(
    signature: Signature,
    trusted_keys: Sequence[PublicKey],
    name: str,
    *,
    blake2b512: bytes | None,
    message: Callable[[], bytes | mmap.mmap] | None = None,
) -> Signature:
    """Check ``signature`` against digests the caller computed while reading the file once.

    ``blake2b512`` is the BLAKE2b-512 of the file (minisign's prehash, what ``ED``
    signatures sign); ``message`` gives the whole file for a legacy ``Ed``
    signature (asked only then). ``name`` is what messages call the file.
    Raises SignatureError.
    """
    key = signer_of(signature, trusted_keys, name)
    if signature.prehashed:
        if blake2b512 is None:
            raise SignatureError(f"{name}: a prehashed signature needs the file's BLAKE2b-512")
        ok = key._verify(signature.signature, blake2b512)
    else:
        if message is None:
            raise SignatureError(f"{name} has a legacy (non-prehashed) signature, which needs the whole file")
        ok = key._verify(signature.signature, message())
    if not ok:
        raise SignatureError(f"signature verification failed for {name}: the file was modified or the signature is not for it")
    if not key._verify(signature.global_signature, signature.signature + signature._trusted_bytes()):
        raise SignatureError(f"trusted comment of the signature for {name} was tampered with: global signature does not verify")
    return signature


def verify_file(
    path: str | os.PathLike[str],
    signature: Signature | str | bytes | os.PathLike[str],
    trusted_keys: Sequence[PublicKey],
    *,
    also_hash: Sequence[Any] = (),
) -> Signature:
    """Verify ``path`` like ``minisign -V``; returns the signature (its trusted comment is now authentic).

    ``signature`` is a parsed Signature, a path (``os.PathLike``) to a ``.minisig`` file,
    or the signature text itself (``str``/``bytes``). Raises SignatureError.
    ``also_hash``: hashlib objects (e.g. ``hashlib.sha256()``) updated with the very
    bytes that were verified, in the same read of the file; they hold the whole
    file's digest once this returns (they are untouched when the key is untrusted).
    """
    path = Path(path)
    sig = parse_signature(signature)
    signer_of(sig, trusted_keys, path.name)  # an untrusted key is refused before the file is read
    try:
        if sig.prehashed:
            return verify_digest(sig, trusted_keys, path.name, blake2b512=_blake2b_file(path, also_hash))
        with _mapped(path) as view:
            verified = verify_digest(sig, trusted_keys, path.name, blake2b512=None, message=lambda: view)
            for extra in also_hash:
                extra.update(view)
            return verified
    except OSError as exc:
        raise SignatureError(f"cannot read {path}: {exc.strerror}") from None


def load_trusted_keys(paths: Iterable[str | os.PathLike[str]]) -> tuple[PublicKey, ...]:
    """Every key in ``config.trusted_keys``; a missing file is a config error, garbage a signature error."""
    keys = []
    for path in paths:
        if not Path(path).is_file():
            what = "is not a file" if Path(path).exists() else "does not exist"
            raise ConfigError(f"trusted key file {path} {what} (config 'trusted_keys')")
        keys.append(PublicKey.from_file(path))
    return tuple(keys)
