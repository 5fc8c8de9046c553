"""Hash-checked pycs, compiled in a worker process while the package is still being unpacked.

Why a process: compiling a backend is pure CPU, about as long as unpacking a
10 MB plugin (issue 8), while unpacking mostly waits on the file system. The
extractor hands each backend source to :class:`BackgroundCompiler` as soon as
it is written; a worker interpreter compiles it on the other core (a thread
would fight the extracting thread for the GIL). Only bytes travel: the worker
writes no file, so a kill leaves nothing of it behind, and the staging stage
writes the pycs itself.

The pyc is the layout py_compile writes for ``PycInvalidationMode.CHECKED_HASH``
(PEP 552): magic number, flags "hash-based, check the source", the source's
hash, the marshalled code. Hash-based pycs stay valid whatever the mtimes, and
a syntax error refuses the package before COMMIT.
"""

from __future__ import annotations

import importlib.util
import marshal
import struct
import subprocess
import sys
from pathlib import Path
from typing import IO

from atomicplug.errors import OperationError, PackageError

__all__ = ["BackgroundCompiler", "build_pyc", "pyc_path", "serve"]

_HEADER = importlib.util.MAGIC_NUMBER + (0b11).to_bytes(4, "little")
_REQUEST = struct.Struct(">II")  # path length, source length
_REPLY = struct.Struct(">IBI")  # path length, 0 compiled / 1 refused, payload length

# The worker: this module, imported from the package's own folder (no site, no user env).
_WORKER = "import sys; sys.path.insert(0, sys.argv[1]); from atomicplug.pycs import serve; serve()"


def build_pyc(source_path: str, data: bytes) -> bytes:
    """The checked-hash pyc of ``data``; raises SyntaxError/ValueError when it does not compile."""
    code = compile(data, source_path, "exec", dont_inherit=True)
    return _HEADER + importlib.util.source_hash(data) + marshal.dumps(code)


def pyc_path(source: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(source)))


class BackgroundCompiler:
    """A sink for :func:`atomicplug.safezip.extract`: backend sources go to a worker process.

    The worker starts with the first source (none for a plugin without a
    Python backend) and answers once, after :meth:`finish` closes its input,
    so neither side can block the other on a full pipe.
    """

    def __init__(self, tree: Path) -> None:
        self.tree = tree
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def wants(relative: str) -> bool:
        return relative.startswith("backend/") and relative.endswith(".py")

    def take(self, path: Path, data: bytes) -> None:
        if self._proc is None:
            package_parent = str(Path(__file__).resolve().parent.parent)
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WORKER, package_parent],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        encoded = str(path).encode("utf-8", "surrogateescape")
        stdin: IO[bytes] = self._proc.stdin  # type: ignore[assignment]
        try:
            stdin.write(_REQUEST.pack(len(encoded), len(data)) + encoded + data)
        except BrokenPipeError:
            pass  # the worker died; finish() reports it

    def finish(self) -> list[tuple[Path, bytes]]:
        """(pyc path, pyc bytes) for every source taken; PackageError names one that does not compile."""
        if self._proc is None:
            return []
        out, err = self._proc.communicate()
        if self._proc.returncode != 0:
            lines = err.decode("utf-8", "replace").strip().splitlines()
            raise OperationError(f"compiling the backend failed: {lines[-1] if lines else f'exit code {self._proc.returncode}'}")
        compiled = []
        for source, refused, payload in _replies(out):
            if refused:
                relative = Path(source).relative_to(self.tree)
                raise PackageError(f"{relative} does not compile: {payload.decode('utf-8', 'replace')}")
            compiled.append((pyc_path(Path(source)), payload))
        return compiled

    def close(self) -> None:
        """Stop the worker if :meth:`finish` was never reached (extraction refused the package)."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            self._proc.communicate()


def _replies(out: bytes) -> list[tuple[str, bool, bytes]]:
    replies, offset = [], 0
    while offset < len(out):
        path_len, refused, size = _REPLY.unpack_from(out, offset)
        offset += _REPLY.size
        path = out[offset : offset + path_len].decode("utf-8", "surrogateescape")
        offset += path_len
        replies.append((path, bool(refused), out[offset : offset + size]))
        offset += size
    return replies


def serve() -> None:
    """The worker's loop: compile every source read from stdin, answer all at end of input."""
    read = sys.stdin.buffer.read
    replies = []
    while head := read(_REQUEST.size):
        path_len, size = _REQUEST.unpack(head)
        path = read(path_len).decode("utf-8", "surrogateescape")
        data = read(size)
        try:
            replies.append((path, 0, build_pyc(path, data)))
        except (SyntaxError, ValueError) as exc:  # ValueError: source with NUL bytes
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            replies.append((path, 1, text.encode()))
    out = sys.stdout.buffer
    for path, refused, payload in replies:
        encoded = path.encode("utf-8", "surrogateescape")
        out.write(_REPLY.pack(len(encoded), refused, len(payload)) + encoded + payload)
    out.flush()
