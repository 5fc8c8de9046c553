"""The Python floor: the least a Python program that verifies and unpacks a signed zip does.

    python bench/python_floor.py PLUGIN.zip publisher.pub TARGET_FOLDER

The sha256 of the zip, its minisign signature checked (BLAKE2b-512 prehash, Ed25519 over
it and over the trusted comment, as ``minisign -V`` does), then ``ZipFile.extractall``:
what the floor (``unzip`` + ``sha256sum`` + ``minisign -V``) does, in one interpreter,
its start-up included. Neither atomicplug nor anything it imports beyond ``cryptography``:
set beside the floor and atomicplug, it says how much of atomicplug's time over the
floor any Python program pays (the interpreter, its imports) and how much is atomicplug's
own (its imports, and what it does besides unpacking: bench/README.md).
"""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def main(zip_path: str, public_key_path: str, target: str) -> int:
    sha256, blake2b = hashlib.sha256(), hashlib.blake2b(digest_size=64)
    with open(zip_path, "rb") as package:
        while chunk := package.read(1 << 20):
            sha256.update(chunk)
            blake2b.update(chunk)
    with open(public_key_path, encoding="utf-8") as file:
        public = base64.b64decode(file.read().splitlines()[1])
    with open(zip_path + ".minisig", encoding="utf-8") as file:
        _, signature_line, trusted_line, global_line = file.read().splitlines()[:4]
    signature, trusted = base64.b64decode(signature_line), trusted_line.removeprefix("trusted comment: ").encode()
    if signature[:2] != b"ED" or signature[2:10] != public[2:10]:
        print("python_floor: not a prehashed signature by this key", file=sys.stderr)
        return 1
    key = Ed25519PublicKey.from_public_bytes(public[10:])
    key.verify(signature[10:], blake2b.digest())  # InvalidSignature: a traceback and exit 1
    key.verify(base64.b64decode(global_line), signature[10:] + trusted)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(target)
    print(sha256.hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
