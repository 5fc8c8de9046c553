"""``atomicplug keygen`` and ``atomicplug pack``: the publisher's side of signing."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from atomicplug.errors import UsageError

__all__ = ["register", "read_password"]

PASSWORD_ENV = "ATOMICPLUG_KEY_PASSWORD"
_PASSWORD_HELP = (
    f"The password comes from ${PASSWORD_ENV} if set, else is asked on the terminal, "
    "else is read as one line from stdin."
)


def read_password(confirm: bool) -> str:
    """A key password: the env variable, a tty prompt (twice if ``confirm``), or one stdin line.

    Why stdin: scripts and tests pipe it, like ``minisign`` itself accepts.
    """
    env = os.environ.get(PASSWORD_ENV)
    if env:
        return env
    if sys.stdin is not None and sys.stdin.isatty():
        import getpass  # here: this module is registered on every command line, prompts are rare

        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Password (again): ") != password:
            raise UsageError("the two passwords do not match")
    else:
        line = sys.stdin.readline() if sys.stdin is not None else ""
        password = line.rstrip("\r\n")
    if not password:
        raise UsageError(f"empty password (set ${PASSWORD_ENV}, pipe it on stdin, or use --no-password with keygen)")
    return password


def _write_private(path: Path, text: str, force: bool) -> None:
    """Create ``path`` with mode 0600 from the start: a secret key is never world-readable, not even briefly."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _keygen(args: argparse.Namespace) -> int:
    from atomicplug.minisign import SecretKey

    pub, sec = Path(args.public_key), Path(args.secret_key)
    if pub.resolve() == sec.resolve():
        raise UsageError("the public and secret key files must differ")
    if not args.force:
        for path in (pub, sec):
            if os.path.lexists(path):
                raise UsageError(f"{path} already exists; pass --force to overwrite it")
    password = None if args.no_password else read_password(confirm=True)
    key = SecretKey.generate()
    try:
        for path in (pub, sec):
            path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(sec, key.to_text(password), args.force)
        pub.write_text(key.public_key.to_text(), encoding="ascii")
    except FileExistsError as exc:  # a folder on the way is something else
        raise UsageError(f"cannot write a key file inside {exc.filename}: it is not a folder") from None
    except OSError as exc:
        raise UsageError(f"cannot write key file {exc.filename}: {exc.strerror}") from None
    print(f"secret key written to {sec} (keep it secret)")
    print(f"public key {key.key_id_hex} written to {pub} (list it in trusted_keys)")
    return 0


def _pack(args: argparse.Namespace) -> int:
    from atomicplug.minisign import SecretKey
    from atomicplug.packing import pack

    if not Path(args.key).is_file():
        raise UsageError(f"secret key {args.key} does not exist")
    if not Path(args.src_dir).is_dir():
        what = "is not a folder" if Path(args.src_dir).exists() else "does not exist"
        raise UsageError(f"cannot pack {args.src_dir}: it {what} (expected a plugin source folder with metadata.json)")
    if args.output == "":
        raise UsageError("-o needs a file name")
    if args.output:
        folder = Path(args.output) if args.output.endswith(os.sep) else Path(args.output).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the output folder {folder}: {exc.strerror or exc}") from None

    def load_key() -> SecretKey:
        return SecretKey.load(args.key, lambda: read_password(confirm=False))

    packed = pack(args.src_dir, load_key, args.output)
    print(f"{packed.zip_path}")
    print(f"{packed.signature_path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keygen = subparsers.add_parser(
        "keygen",
        help="create a minisign-compatible key pair",
        description="Create a minisign-compatible Ed25519 key pair. " + _PASSWORD_HELP,
    )
    keygen.add_argument("-p", "--public-key", metavar="PUB", default="atomicplug.pub",
                        help="public key file to write (default: ./atomicplug.pub)")
    keygen.add_argument("-s", "--secret-key", metavar="SEC", default="atomicplug.key",
                        help="secret key file to write, mode 0600 (default: ./atomicplug.key)")
    keygen.add_argument("--no-password", action="store_true", help="do not encrypt the secret key (like minisign -W)")
    keygen.add_argument("--force", action="store_true", help="overwrite existing key files")
    keygen.set_defaults(handler=_keygen)

    pack = subparsers.add_parser(
        "pack",
        help="build a deterministic, signed plugin zip",
        description="Validate SRC_DIR/metadata.json, zip the tree reproducibly and write OUT.zip.minisig. "
        "The key may be made by `atomicplug keygen` or `minisign -G`. " + _PASSWORD_HELP,
    )
    pack.add_argument("src_dir", metavar="SRC_DIR", help="plugin source folder")
    pack.add_argument("--key", "-k", metavar="K", required=True, help="minisign secret key file")
    pack.add_argument("-o", "--output", metavar="OUT.zip", help="zip to write (default: ./<id>-<version>.zip)")
    pack.set_defaults(handler=_pack)
