"""Hash-checked pycs, compiled in a worker process while the package is still being unpacked.

Why a process: compiling a backend is pure CPU, about as long as unpacking a
10 MB plugin (issue 8), while unpacking mostly waits on the file system. The
extractor hands each backend source to :class:`SourceCompiler` as soon as it
is inflated; a worker interpreter compiles it on the other core (a thread
would fight the extracting thread for the GIL). Only bytes travel: the worker
writes no file, so a kill leaves nothing of it behind, and the staging stage
stores the pycs as objects itself.

The pyc is the layout py_compile writes for ``PycInvalidationMode.CHECKED_HASH``
(PEP 552): magic number, flags "hash-based, check the source", the source's
hash, the marshalled code. Hash-based pycs stay valid whatever the mtimes, and
a syntax error refuses the package before COMMIT. For the object store
(:class:`SourceCompiler`) the code is compiled under the fixed name
:data:`PYC_FILENAME`, so a pyc is a function of its source and the interpreter
alone and an unchanged source is one pyc object across versions and plugins.
"""

from __future__ import annotations

import importlib.util
import os
import select
import subprocess
import sys
from collections.abc import Callable, Container, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from atomicplug.errors import OperationError, PackageError
from atomicplug.layout import is_backend_source as wants_source
from atomicplug.pyc_worker import PYC_FILENAME, REPLY, REQUEST, build_pyc, compile_source

if TYPE_CHECKING:
    from atomicplug.package_record import RecordEntry

__all__ = ["PYC_FILENAME", "SourceCompiler", "build_pyc", "is_plain_pyc", "pyc_name", "pyc_path", "pyc_sources"]


#: Up to this many bytes of source a SourceCompiler compiles in this process at finish()
#: (compiling runs at ~10 MB/s here, so at most ~25 ms: what starting the worker costs), e.g.
#: an upgrade changing a few modules starts no process.
IN_PROCESS_BYTES = 256 * 1024

def pyc_path(source: Path) -> Path:
    return Path(pyc_name(str(source)))


def pyc_name(relative: str) -> str:
    """Where this interpreter looks for the plain (optimization level 0) pyc of a tree's
    ``relative`` source (posix, relative).

    Level 0 whatever the level atomicplug runs at: the application importing the tree may
    run at another, and a tree staged by ``python -O`` held optimized code (asserts gone) that
    a later plain upgrade reused as the plain pyc (docs/design.md "Portable pycs").
    ``cache_from_source`` works on strings with os.path, which is posixpath on the
    systems atomicplug runs on; no Path round trip (called for every source of every tree).
    """
    return importlib.util.cache_from_source(relative, optimization="")


def is_plain_pyc(path: str) -> bool:
    """``path`` is this interpreter's level-0 pyc of some source: what staging builds and reuses."""
    try:
        return pyc_name(importlib.util.source_from_cache(path)) == path
    except ValueError:  # another interpreter's cache tag, or no pyc path
        return False


#: Bytes each pipe to and from the compile worker holds (Linux; the kernel's default is 64 KiB).
PIPE_BYTES = 1 << 20


def _widen(fd: int) -> None:
    """Let a pipe hold :data:`PIPE_BYTES`: the sources sent while the worker still boots (~25 ms)
    wait in the kernel instead of stopping the extraction (the medium bench plugin waited ~80 ms
    in ``poll``). Bounded, and kernel memory: the process trees' peak stays where it was."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass  # another system, or a lower pipe-max-size: the default buffer still works


def pyc_sources(files: Iterable[RecordEntry]) -> dict[str, str]:
    """Pyc path → its source's sha256, for each backend source with this interpreter's pyc beside it in ``files``.

    Any such pyc serves the same source anywhere else: the import system fixes
    ``co_filename`` up at load time, and the pycs built here with
    :data:`PYC_FILENAME` are even byte-identical across paths and plugins.
    """
    by_path = {f.path: f for f in files}
    sources = {}
    for path, source in by_path.items():
        if wants_source(path):
            name = pyc_name(path)
            if name in by_path:
                sources[name] = source.sha256
    return sources


class _Worker:
    """One worker interpreter, started with the first source, answering each source as it is compiled.

    Neither side can block the other on a full pipe: this side writes without
    blocking and reads whatever answers are ready while a request waits for
    room (the worker may block on its full stdout meanwhile: it is drained).
    Each answer goes to ``on_reply`` as soon as it is whole, so no answer waits
    here for the others (the pycs of a large backend were ~6 MiB held at once).
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._poll = select.poll()
        self._unread = bytearray()  # the start of an answer not yet whole
        self._eof = self._broken = False

    def on_reply(self, key: str, refused: bool, payload: bytes) -> None:
        raise NotImplementedError

    def _start(self) -> subprocess.Popen[bytes]:
        worker = Path(__file__).resolve().with_name("pyc_worker.py")  # a script: no site, no user env, not the package
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(worker)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        os.set_blocking(proc.stdin.fileno(), False)  # type: ignore[union-attr]
        for pipe in (proc.stdin, proc.stdout):
            _widen(pipe.fileno())  # type: ignore[union-attr]
        self._poll.register(proc.stdin.fileno(), select.POLLOUT)  # type: ignore[union-attr]
        self._poll.register(proc.stdout.fileno(), select.POLLIN)  # type: ignore[union-attr]
        return proc

    def _send(self, key: str, filename: str, data: bytes) -> None:
        if self._proc is None:
            self._proc = self._start()
        encoded_key, encoded_name = (text.encode("utf-8", "surrogateescape") for text in (key, filename))
        request = memoryview(REQUEST.pack(len(encoded_key), len(encoded_name), len(data)) + encoded_key + encoded_name + data)
        stdin, stdout = self._proc.stdin.fileno(), self._proc.stdout.fileno()  # type: ignore[union-attr]
        while request and not self._broken:
            for fd, _ in self._poll.poll():
                if fd == stdout:
                    self._read_some(stdout)
                elif fd == stdin:
                    try:
                        request = request[os.write(stdin, request) :]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        self._broken = True  # the worker died; _finish_worker() reports it

    def _read_some(self, stdout: int) -> None:
        chunk = os.read(stdout, 1 << 16)
        if not chunk:
            self._eof = True
            self._poll.unregister(stdout)
            return
        self._unread += chunk
        while len(self._unread) >= REPLY.size:
            key_len, refused, size = REPLY.unpack_from(self._unread)
            end = REPLY.size + key_len + size
            if len(self._unread) < end:
                return
            key = self._unread[REPLY.size : REPLY.size + key_len].decode("utf-8", "surrogateescape")
            payload = bytes(self._unread[REPLY.size + key_len : end])
            del self._unread[:end]
            self.on_reply(key, bool(refused), payload)

    def _finish_worker(self) -> None:
        """Read the answers still to come; OperationError when the worker died before answering all."""
        if self._proc is None:
            return
        self._proc.stdin.close()  # type: ignore[union-attr]
        stdout = self._proc.stdout.fileno()  # type: ignore[union-attr]
        while not self._eof:
            self._read_some(stdout)
        err = self._proc.stderr.read()  # type: ignore[union-attr]  # only a crash writes there: it cannot fill the pipe first
        if self._proc.wait() != 0 or self._unread:
            lines = err.decode("utf-8", "replace").strip().splitlines()
            raise OperationError(f"compiling the backend failed: {lines[-1] if lines else f'exit code {self._proc.returncode}'}")

    def close(self) -> None:
        """Stop the worker if ``finish`` was never reached (extraction refused the package)."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            self._proc.wait()
        if self._proc is not None:
            for pipe in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
                try:
                    pipe.close()  # type: ignore[union-attr]
                except OSError:  # stdin's unflushed bytes, to a worker that is gone (EPIPE, or ENOSPC again)
                    pass


def _refused(source: str, payload: bytes) -> PackageError:
    return PackageError(f"{source} does not compile: {payload.decode('utf-8', 'replace')}")


class SourceCompiler(_Worker):
    """A sink for :func:`atomicplug.safezip.extract_to_objects`: backend sources by sha256, compiled once each.

    ``keep(source_sha256, pyc)`` receives each pyc as soon as it is compiled
    (the staging stage stores it as an object then), so only one pyc at a time
    is in this process. ``known`` holds the source sha256s whose pycs the
    caller already has (e.g. those the installed trees' records list); those
    are neither kept nor read back by the extractor. The pycs use
    :data:`PYC_FILENAME`, so an unchanged source gives the same pyc object in
    every version and plugin. Sources are held back until they exceed
    :data:`IN_PROCESS_BYTES` (or :meth:`expect` says more will come); below that
    no worker starts and :meth:`finish` compiles them here. ``before_worker`` is called once, just before the worker starts;
    ``after_worker`` once it has answered everything and exited (so the caller's other
    helper can start again while staging goes on).
    """

    def __init__(
        self,
        keep: Callable[[str, bytes], object],
        known: Container[str] = frozenset(),
        before_worker: Callable[[], None] | None = None,
        after_worker: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._before_worker = before_worker
        self._after_worker = after_worker
        self._keep = keep
        self._known = known
        self._sources: dict[str, str] = {}  # sha256 -> the first path it came from (for messages)
        self._held: list[tuple[str, bytes]] = []  # not sent yet: see IN_PROCESS_BYTES
        self._held_bytes = 0
        self._refusal: PackageError | None = None  # the first source that does not compile

    wants = staticmethod(wants_source)

    def known(self, sha256: str) -> bool:
        return sha256 in self._known or sha256 in self._sources

    def expect(self, size: int) -> None:
        """More than :data:`IN_PROCESS_BYTES` of sources to come: the worker starts now, its start-up
        overlapping the extraction, instead of once the first 256 KiB were held (a medium plugin's
        install then waited ~14 ms at its end for the worker's last compiles; bench/README.md)."""
        if size > IN_PROCESS_BYTES and self._proc is None:
            self._start_worker()

    def take(self, relative: str, sha256: str, data: bytes) -> None:
        if self.known(sha256):
            return
        self._sources[sha256] = relative
        if self._proc is None and self._held_bytes + len(data) <= IN_PROCESS_BYTES:
            self._held.append((sha256, data))
            self._held_bytes += len(data)
            return
        if self._proc is None:
            self._start_worker()
        for key, held in self._held:
            self._send(key, PYC_FILENAME, held)
        self._held.clear()
        self._send(sha256, PYC_FILENAME, data)

    def _start_worker(self) -> None:
        """``before_worker`` (the caller's other helper makes room), then the worker."""
        if self._before_worker is not None:
            self._before_worker()
        self._proc = self._start()

    def on_reply(self, key: str, refused: bool, payload: bytes) -> None:
        if refused:
            self._refusal = self._refusal or _refused(self._sources[key], payload)
        elif self._refusal is None:  # a refused package keeps nothing more
            self._keep(key, payload)

    def finish(self) -> None:
        """Hand every source taken to ``keep`` as its pyc; PackageError names the first that does not compile."""
        self._finish_worker()
        if self._proc is not None and self._after_worker is not None:
            self._after_worker()
        for key, data in self._held:
            self.on_reply(*compile_source(key, PYC_FILENAME, data))
        self._held.clear()
        if self._refusal is not None:
            raise self._refusal
