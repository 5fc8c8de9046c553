"""Where the resident server listens, and which code it serves (standard library only).

The socket belongs to one user and one Python environment: its folder is the
user's (``$XDG_RUNTIME_DIR/atomicplug``, else ``/tmp/atomicplug-<uid>``, mode 0700,
checked before use), and its name carries a key of the interpreter, its flags and its
``sys.path``, so a client from another virtualenv never reaches a server that
would import other code. The code stamp (every source file's path, size and
mtime) tells a server that its modules were edited or upgraded since it started.
"""

from __future__ import annotations

import os
import stat
import sys
import zlib

__all__ = ["SOCKET_ENV", "code_stamp", "private_folder", "socket_path"]

#: Overrides the socket's path (tests; a service manager's own runtime folder).
SOCKET_ENV = "ATOMICPLUG_RESIDENT_SOCKET"
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def socket_path() -> str:
    """The socket this interpreter's server listens on (it may not exist)."""
    explicit = os.environ.get(SOCKET_ENV)
    if explicit:
        return explicit
    base = os.environ.get("XDG_RUNTIME_DIR")
    folder = os.path.join(base, "atomicplug") if base else f"/tmp/atomicplug-{os.getuid()}"
    # sys.path[0] is the caller's folder (python -m) or the script's: not what is imported.
    # -O, -X dev, -W: a child must run under the flags and warning filters its client has.
    key = "\0".join([sys.executable, sys.version, repr(sys.flags), *sys.warnoptions, _PACKAGE, *sys.path[1:]])
    return os.path.join(folder, f"resident-{_digest(key)}.sock")


def private_folder(path: str, *, create: bool) -> bool:
    """Whether ``path``'s folder is a real folder of this user that nobody else can enter.

    ``create`` makes it first (mode 0700). A shared ``/tmp`` lets anyone make a folder
    of that name first; then this is False and the caller neither listens nor connects.
    """
    folder = os.path.dirname(path) or "."
    if create:
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        except OSError:
            return False
    try:
        info = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


def code_stamp() -> str:
    """A digest of atomicplug's source files (path, size, mtime): changes when the code does."""
    entries: list[str] = []
    pending = [_PACKAGE]
    while pending:
        with os.scandir(pending.pop()) as listing:
            for entry in listing:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        pending.append(entry.path)
                elif entry.name.endswith(".py"):
                    info = entry.stat(follow_symlinks=False)
                    entries.append(f"{entry.path}\0{info.st_size}\0{info.st_mtime_ns}")
    entries.sort()
    return _digest("\n".join(entries))


def _digest(text: str) -> str:
    """64 bits telling texts apart: crc32 and adler32 (zlib is a small C module; hashlib loads OpenSSL, ~3 ms).

    Both sides are the same user's processes: this tells accidental changes apart, it is not a defence.
    """
    data = text.encode()
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"
