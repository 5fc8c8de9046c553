"""A loopback HTTP server that misbehaves on demand, plus repository builders for the tests.

``MisbehavingServer`` serves in-memory files (with Range support) on 127.0.0.1
at a free port. ``queue(path, *faults)`` makes the next requests for ``path``
misbehave, one fault per request, then it behaves again; ``always(path, fault)``
makes every request misbehave. Every request is logged as (path, Range header).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs

from atomicplug.minisign import SecretKey, sign_file
from atomicplug.repository.server import parse_range

# -- faults ----------------------------------------------------------------------


@attrs.frozen
class Status:
    """Answer with this HTTP status and a tiny body."""

    code: int


@attrs.frozen
class Drop:
    """Announce the full length, send ``after`` bytes, close the connection."""

    after: int


@attrs.frozen
class Extra:
    """Send ``n`` more bytes than the file; ``announce`` puts them in Content-Length, else no length at all."""

    n: int
    announce: bool = True


@attrs.frozen
class Endless:
    """No Content-Length, an endless body (until the client hangs up)."""


@attrs.frozen
class Redirect:
    """A 302 to ``location``; with ``endless``, an endless body after it (that a client following
    redirects reads whole, to release the connection)."""

    location: str
    endless: bool = False


@attrs.frozen
class Wrong:
    """The right length, the wrong bytes."""


@attrs.frozen
class Stall:
    """Send ``after`` bytes, then go silent for ``seconds``."""

    seconds: float
    after: int = 0


@attrs.frozen
class TrickleHeaders:
    """Send the status line and headers one byte every ``interval`` seconds, never finishing them."""

    interval: float


@attrs.frozen
class TrickleBody:
    """Announce the full length, then send ``step`` bytes every ``interval`` seconds."""

    interval: float
    step: int = 1


@attrs.frozen
class Silent:
    """Read the request and never answer (until the client hangs up or the server stops)."""


@attrs.frozen
class IgnoreRange:
    """Answer 200 with the whole file even when a Range was asked for."""


@attrs.frozen
class BadRangeStart:
    """Answer a Range request with a 206 that starts at byte 0 anyway."""


Fault = Status | Drop | Extra | Endless | Redirect | Wrong | Stall | TrickleHeaders | TrickleBody | Silent | IgnoreRange | BadRangeStart


# -- server ----------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str], length: int | None) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if length is not None:
            self.send_header("Content-Length", str(length))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        owner = self.server.owner
        path = self.path.split("?")[0]
        range_header = self.headers.get("Range")
        fault = owner._next_fault(path, range_header)
        data = owner.files.get(path)
        try:
            if isinstance(fault, Status):
                self._send(fault.code, b"nope\n", {}, 5)
                return
            if isinstance(fault, Redirect):
                self._redirect(fault)
                return
            if isinstance(fault, Silent):
                self.close_connection = True
                owner.closing.wait()
                return
            if isinstance(fault, TrickleHeaders):
                self.close_connection = True
                self._trickle(b"HTTP/1.1 200 OK\r\nX-Trickle: " + b"a" * 1_000_000, fault.interval, 1)
                return
            if data is None:
                self._send(404, b"not found\n", {}, 10)
                return
            self._answer(data, range_header, fault)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _redirect(self, fault: Redirect) -> None:
        if not fault.endless:
            self._send(302, b"", {"Location": fault.location}, 0)
            return
        self._send(302, b"", {"Location": fault.location}, None)
        for _ in range(2000):  # ~128 MiB at most, so a broken client cannot hang the suite
            self.wfile.write(b"R" * 65536)

    def _answer(self, data: bytes, range_header: str | None, fault: Fault | None) -> None:
        wanted = None if isinstance(fault, IgnoreRange) else parse_range(range_header, len(data))
        if wanted is False:
            self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, 0)
            return
        if isinstance(fault, BadRangeStart) and isinstance(wanted, tuple):
            wanted = (0, len(data) - 1)
            body = data
            self._send(206, body, {"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"}, len(body))
            return
        status, headers = 200, {"Accept-Ranges": "bytes"}
        first, last = 0, len(data) - 1
        if isinstance(wanted, tuple):
            first, last = wanted
            status = 206
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        body = data[first : last + 1]
        if isinstance(fault, Wrong):
            body = bytes(b ^ 0xFF for b in body)
        if isinstance(fault, (Drop, Stall)):
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: fault.after])
            self.wfile.flush()
            if isinstance(fault, Stall):  # the rest after a pause; a Drop never sends it
                time.sleep(fault.seconds)
                self.wfile.write(body[fault.after :])
            self.close_connection = True
            return
        if isinstance(fault, TrickleBody):
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.close_connection = True
            self._trickle(body, fault.interval, fault.step)
            return
        if isinstance(fault, Extra):
            body += b"X" * fault.n
            self._send(status, body, headers, len(body) if fault.announce else None)
            return
        if isinstance(fault, Endless):
            self.send_response(status)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            chunk = b"Z" * 65536
            for _ in range(2000):  # ~128 MiB at most, so a broken client cannot hang the suite
                self.wfile.write(chunk)
            return
        self._send(status, body, headers, len(body))


    def _trickle(self, data: bytes, interval: float, step: int) -> None:
        """``step`` bytes of ``data`` every ``interval`` seconds until done, the client leaves or the server stops."""
        closing = self.server.owner.closing
        for start in range(0, len(data), step):
            if closing.is_set():
                return
            self.wfile.write(data[start : start + step])
            self.wfile.flush()
            closing.wait(interval)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: MisbehavingServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up on a misbehaving server is the point


class MisbehavingServer:
    """Serve ``files`` (URL path -> bytes) on loopback, misbehaving when told to."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str | None]] = []
        self._queued: dict[str, deque[Fault]] = {}
        self._always: dict[str, Fault] = {}
        self._lock = threading.Lock()
        self.closing = threading.Event()  # set on exit: ends Silent and Trickle* answers
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def put(self, path: str, data: bytes) -> None:
        self.files[path] = data

    def queue(self, path: str, *faults: Fault) -> None:
        with self._lock:
            self._queued.setdefault(path, deque()).extend(faults)

    def always(self, path: str, fault: Fault) -> None:
        self._always[path] = fault

    def requests_for(self, path: str) -> list[str | None]:
        """The Range header of each request for ``path`` so far."""
        return [r for p, r in self.log if p == path]

    def _next_fault(self, path: str, range_header: str | None) -> Fault | None:
        with self._lock:
            self.log.append((path, range_header))
            if path in self._always:
                return self._always[path]
            queued = self._queued.get(path)
            return queued.popleft() if queued else None

    def __enter__(self) -> MisbehavingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()


# -- repository builders -------------------------------------------------------


def make_key(folder: Path, name: str = "publisher") -> tuple[Path, SecretKey]:
    """An unencrypted key pair; returns (public key path, secret key)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = SecretKey.generate()
    pub = folder / f"{name}.pub"
    pub.write_text(key.public_key.to_text())
    (folder / f"{name}.key").write_text(key.to_text(None))
    return pub, key


def build_plugin(
    folder: Path,
    key: SecretKey | None,
    plugin_id: str,
    version: str = "1.0.0",
    requires: Sequence[str] = (),
    filler: int = 2000,
) -> Path:
    """A signed plugin zip ``folder/<id>-<version>.zip`` (+ .minisig) built with atomicplug.packing."""
    from atomicplug.packing import pack

    src = folder / "src" / f"{plugin_id}-{version}"
    (src / "backend").mkdir(parents=True, exist_ok=True)
    meta = {
        "id": plugin_id,
        "name": plugin_id.replace("_", " ").title(),
        "version": version,
        "description": f"the {plugin_id} plugin",
        "category": "testing",
        "requires": list(requires),
    }
    (src / "metadata.json").write_text(json.dumps(meta))
    # Incompressible-ish filler so downloads span several chunks.
    import random

    rng = random.Random(f"{plugin_id}{version}")
    (src / "backend" / "__init__.py").write_text("DATA = %r\n" % "".join(rng.choice("abcdefgh0123") for _ in range(filler)))
    return pack(src, key, folder / f"{plugin_id}-{version}.zip").zip_path


def sign_bytes(data: bytes, key: SecretKey, folder: Path) -> str:
    tmp = folder / ".to-sign"
    tmp.write_bytes(data)
    try:
        return sign_file(tmp, key)
    finally:
        tmp.unlink()


def manifest_bytes(entries: Iterable[dict[str, Any]], version: int, expires: dt.datetime | None = None) -> bytes:
    expires = expires or dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)
    body = {
        "schema": 1,
        "version": version,
        "expires": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "plugins": list(entries),
    }
    return json.dumps(body).encode()


def publish_repo_folder(server: MisbehavingServer, repo: Path) -> None:
    """Load a repository folder (made by ``repo add``) into the server's files under its URLs."""
    server.put("/manifest.json", (repo / "manifest.json").read_bytes())
    server.put("/manifest.json.minisig", (repo / "manifest.json.minisig").read_bytes())
    for zip_path in (repo / "plugins").glob("*/v*.zip"):
        url = "/" + zip_path.relative_to(repo).as_posix()  # the manifest's download_url: the file's own path
        server.put(url, zip_path.read_bytes())
        server.put(f"{url}.minisig", zip_path.with_name(zip_path.name + ".minisig").read_bytes())
