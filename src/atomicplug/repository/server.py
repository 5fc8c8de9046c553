"""``atomicplug serve``: a small development server for a repository folder.

Routes (docs/design.md "Repository")::

    /manifest.json, /manifest.json.minisig
    /plugins/<id>/v<version>.zip[.minisig]   the files themselves (what ``repo add`` writes)
    /download/<id>/<version>[.minisig]       the same files (the URLs of manifests made before)

Nothing else is reachable: ids and versions are validated before they become
a path, and the resolved path must still lie inside the repository. Bodies
are streamed; single ``Range: bytes=`` requests get 206 (or 416). Every file
carries an ``ETag`` (a content hash for small files such as the manifest, size
+ mtime + inode for packages) and ``Last-Modified``; ``If-None-Match`` (or,
without it, ``If-Modified-Since``) gets 304, so a client revalidates its cached
manifest cheaply. Each answer leaves in one write where it fits 64 KiB
(headers and body buffered together, TCP_NODELAY), and the listen backlog is
1024, not socketserver's 5 (docs/design.md "Development server"). Any static
web server or CDN serves the folder as well (manifests made before named
/download/ URLs: those need it mapped the same way).
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import re
import sys
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from atomicplug.errors import OperationError
from atomicplug.repository.manifest import ID_RE, download_path, valid_version

__all__ = ["RepositoryServer", "make_server", "serve", "parse_range"]

_CHUNK = 1 << 16
#: Files up to this size are read whole: their ETag is a content hash, their body one write.
_SMALL = 1 << 20
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_STATIC = {"/manifest.json": "application/json", "/manifest.json.minisig": "text/plain; charset=utf-8"}


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """The inclusive byte range a ``Range`` header asks for.

    Returns None when there is no usable single range (serve everything, as
    RFC 9110 allows), False when it is unsatisfiable (416), else (first, last).
    """
    if not header:
        return None
    match = _RANGE_RE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first_text, last_text = match.groups()
    if not first_text:  # suffix range: the last N bytes
        length = int(last_text)
        if length == 0 or size == 0:
            return False
        return max(0, size - length), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None
    if first >= size:
        return False
    last = int(last_text) if last_text else size - 1
    return first, min(last, size - 1)


def _etag(stat: os.stat_result, content: bytes | None) -> str:
    """A strong entity tag: the content's hash when read whole, else size, mtime and inode (as nginx)."""
    if content is not None:
        return f'"{hashlib.sha256(content).hexdigest()[:32]}"'
    return f'"{stat.st_size:x}-{stat.st_mtime_ns:x}-{stat.st_ino:x}"'


def _not_modified(headers: Message, etag: str, mtime: float) -> bool:
    """RFC 9110 section 13.2.2 for GET/HEAD: If-None-Match decides when present, else If-Modified-Since."""
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
        return "*" in tags or etag in tags
    if_modified_since = headers.get("If-Modified-Since")
    if not if_modified_since:
        return False
    try:
        since = email.utils.parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError):
        return False
    if since.tzinfo is None:
        return False
    return int(mtime) <= since.timestamp()


class _Handler(BaseHTTPRequestHandler):
    server: RepositoryServer
    protocol_version = "HTTP/1.1"
    server_version = "atomicplug-serve"
    timeout = 60  # seconds a silent client may hold a connection (and a thread)
    # Headers and body leave together: buffered up to 64 KiB (flushed after each request by
    # BaseHTTPRequestHandler), and without Nagle's algorithm holding a small last segment back.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        if not self.server.quiet:
            super().log_message(format, *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        self._serve(body=False)

    def _target(self) -> tuple[Path, str] | int:
        """The file a request path names, or an HTTP error status."""
        raw = urlsplit(self.path).path
        if not raw.startswith("/") or "\\" in raw or "\x00" in raw:
            return HTTPStatus.BAD_REQUEST
        path = unquote(raw, errors="strict") if "%" in raw else raw
        if "\x00" in path or "\\" in path:
            return HTTPStatus.BAD_REQUEST
        root = self.server.root
        if path in _STATIC:
            return root / path.lstrip("/"), _STATIC[path]
        parts = path.split("/")
        if len(parts) != 4 or parts[:2] not in (["", "download"], ["", "plugins"]):
            return HTTPStatus.NOT_FOUND
        plugin_id, version = parts[2], parts[3]
        suffix = ""
        if version.endswith(".minisig"):
            version, suffix = version[: -len(".minisig")], ".minisig"
        if parts[1] == "plugins":  # the file's own name, v<version>.zip
            if not (version.startswith("v") and version.endswith(".zip")):
                return HTTPStatus.NOT_FOUND
            version = version[1 : -len(".zip")]
        if not ID_RE.match(plugin_id) or not valid_version(version):
            return HTTPStatus.NOT_FOUND
        target = root / (download_path(plugin_id, version).lstrip("/") + suffix)
        return target, ("text/plain; charset=utf-8" if suffix else "application/zip")

    def _error(self, status: int) -> None:
        body = f"{int(status)} {HTTPStatus(status).phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, body: bool) -> None:
        try:
            found = self._target()
        except UnicodeDecodeError:
            found = HTTPStatus.BAD_REQUEST
        if isinstance(found, int):
            self._error(found)
            return
        path, content_type = found
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(self.server.root) or not real.is_file():
            self._error(HTTPStatus.NOT_FOUND)
            return
        try:
            handle = open(real, "rb")
        except OSError:
            self._error(HTTPStatus.NOT_FOUND)
            return
        with handle:
            stat = os.fstat(handle.fileno())
            content = handle.read() if stat.st_size <= _SMALL else None
            size = len(content) if content is not None else stat.st_size
            etag = _etag(stat, content)
            headers = {"ETag": etag, "Last-Modified": email.utils.formatdate(stat.st_mtime, usegmt=True)}
            if _not_modified(self.headers, etag, stat.st_mtime):
                self.send_response(HTTPStatus.NOT_MODIFIED)
                self._send_headers(headers, real)
                return
            wanted = parse_range(self.headers.get("Range"), size)
            if wanted is False:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            first, last = wanted if isinstance(wanted, tuple) else (0, size - 1)
            length = last - first + 1
            self.send_response(HTTPStatus.PARTIAL_CONTENT if isinstance(wanted, tuple) else HTTPStatus.OK)
            if isinstance(wanted, tuple):
                headers["Content-Range"] = f"bytes {first}-{last}/{size}"
            self._send_headers({**headers, "Content-Type": content_type, "Content-Length": str(length)}, real)
            if not body:
                return
            if content is not None:
                self.wfile.write(content[first : last + 1])
                return
            handle.seek(first)
            left = length
            while left > 0:
                chunk = handle.read(min(_CHUNK, left))
                if not chunk:  # the file shrank under us: the client sees a short body and retries
                    self.close_connection = True
                    return
                self.wfile.write(chunk)
                left -= len(chunk)

    def _send_headers(self, headers: dict[str, str], real: Path) -> None:
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Cache-Control", "no-cache" if "manifest" in real.name else "public, max-age=86400")
        self.end_headers()


class RepositoryServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer bound to one repository folder."""

    daemon_threads = True
    # socketserver's 5 dropped connections under 50 concurrent clients; 128 still overflowed
    # under a burst of 200 new connections, 1024 did not (bench/serve.py). The kernel caps it at somaxconn.
    request_queue_size = 1024

    def handle_error(self, request: object, client_address: object) -> None:
        # A client hanging up mid-transfer is normal (it resumes with Range); don't print a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]

    def __init__(self, root: Path, address: tuple[str, int], quiet: bool = False) -> None:
        self.root = Path(os.path.realpath(root))
        self.quiet = quiet
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[0], self.server_address[1]
        text = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://[{text}]:{port}" if ":" in text else f"http://{text}:{port}"


def make_server(repo: Path, host: str = "127.0.0.1", port: int = 8002, quiet: bool = False) -> RepositoryServer:
    """A bound (not yet serving) server; port 0 picks a free port."""
    return RepositoryServer(Path(repo), (host, port), quiet=quiet)


def serve(repo: Path, host: str = "127.0.0.1", port: int = 8002) -> None:
    """Serve ``repo`` until interrupted. Raises OperationError when it cannot listen on host:port."""
    try:
        bound = make_server(repo, host, port)
    except OSError as exc:  # in use, not an address of this machine, a host name that does not resolve
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        reason = exc.strerror or str(exc)
        raise OperationError(f"cannot listen on {address}: {reason[:1].lower()}{reason[1:]}") from exc
    with bound as server:
        print(f"serving {server.root} at {server.url} (Ctrl-C to stop)", file=sys.stderr)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
