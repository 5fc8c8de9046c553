"""The compile worker of :mod:`atomicplug.pycs`, and the pyc format both sides build.

Run as a script (``python -I -S pyc_worker.py``), not through the package: it
imports only what compiling needs, so the worker interpreter costs ~5 MiB
instead of the ~8 MiB it took importing ``atomicplug`` (typing, pathlib,
subprocess) beside a large install (issue 14, memory flat in size).
"""

from __future__ import annotations

import importlib.util
import marshal
import struct
import sys
import warnings

__all__ = ["PYC_FILENAME", "REQUEST", "REPLY", "build_pyc", "compile_source", "serve"]

#: co_filename of the pycs built for the object store: the same for every path, so a pyc
#: depends only on its source and the interpreter (SourceLoader fixes co_filename up to
#: the real path at import, through ``_imp._fix_co_filename``).
PYC_FILENAME = "<atomicplug>"
_HEADER = importlib.util.MAGIC_NUMBER + (0b11).to_bytes(4, "little")
REQUEST = struct.Struct(">III")  # key length, filename length, source length
REPLY = struct.Struct(">IBI")  # key length, 0 compiled / 1 refused, payload length


def _intern_the_shared_strings() -> None:
    """Intern the empty string and every one-character Latin-1 string, in every process that builds pycs.

    Each of them is one shared object, and marshal writes it as interned when anything in the
    process has interned it (a module, a pyc loaded with it interned), so the same source gave
    other pyc bytes in the billing backend than in the CLI. Interned in every process alike,
    they make a pyc depend only on its source and the interpreter again, as ``verify --deep``
    and a repair need (docs/design.md "Portable pycs").
    """
    for code in range(256):
        sys.intern(chr(code))
    sys.intern("")


_intern_the_shared_strings()


def build_pyc(data: bytes, filename: str = PYC_FILENAME) -> bytes:
    """The checked-hash pyc of ``data``; raises SyntaxError/ValueError when it does not compile.

    With the default ``filename`` the result is the same for the same source
    and interpreter wherever the source lies; with the source's own path it is
    byte-identical to ``py_compile``'s ``CHECKED_HASH`` pyc.
    """
    code = compile(data, filename, "exec", dont_inherit=True, optimize=0)  # level 0 under -O too (pycs.pyc_name)
    return _HEADER + importlib.util.source_hash(data) + marshal.dumps(code)


def compile_source(key: str, filename: str, data: bytes) -> tuple[str, bool, bytes]:
    """(key, refused, pyc or the reason it does not compile).

    Compile warnings (SyntaxWarning) are dropped: in the worker they went to
    its stderr, which nobody reads before the end, so a backend full of them
    filled the pipe and hung the worker and the installer feeding it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return key, False, build_pyc(data, filename)
    except SyntaxError as exc:
        return key, True, f"{exc.msg} (line {exc.lineno})".encode()
    except ValueError as exc:  # source with NUL bytes
        return key, True, (str(exc).splitlines()[0] if str(exc) else type(exc).__name__).encode()


def serve() -> None:
    """The worker's loop: compile every source read from stdin and answer it at once."""
    read, out = sys.stdin.buffer.read, sys.stdout.buffer
    while head := read(REQUEST.size):
        key_len, name_len, size = REQUEST.unpack(head)
        key = read(key_len).decode("utf-8", "surrogateescape")
        filename = read(name_len).decode("utf-8", "surrogateescape")
        key, refused, payload = compile_source(key, filename, read(size))
        encoded = key.encode("utf-8", "surrogateescape")
        out.write(REPLY.pack(len(encoded), refused, len(payload)) + encoded + payload)
        out.flush()


if __name__ == "__main__":
    serve()
