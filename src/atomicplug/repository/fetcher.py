"""The HTTP client: bounded, resumable, retrying downloads (DESIGN.md "Repository").

Every transfer has connect/read timeouts and a total deadline, reads at most a
known number of bytes (endless-data attack: :class:`TrustError`), retries
connection errors and 5xx answers with exponential backoff, and resumes a
dropped body with ``Range: bytes=N-`` (accepting the resumed part only when the
answer is a 206 whose ``Content-Range`` starts at N; a server that ignores
Range is read again from the start). Anything that still fails is a
:class:`DownloadError` raised ``from`` the underlying exception.

This module only moves bytes; what they must hash to and who must have signed
them is :mod:`atomicplug.repository.remote`'s job.
"""

from __future__ import annotations

import hashlib
import io
import re
import sys
import time
from pathlib import Path
from typing import BinaryIO, TextIO

import attrs
import requests

from atomicplug.errors import DownloadError, TrustError

__all__ = ["Timeouts", "Fetcher", "join_url"]

#: Small enough that a dropped connection loses little (a partial chunk is discarded).
_CHUNK = 1 << 14
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_RETRY_STATUS = frozenset({408, 429})


@attrs.frozen
class Timeouts:
    """How long to wait. ``deadline`` bounds one whole transfer, retries included."""

    connect: float = 10.0
    read: float = 30.0
    deadline: float = 300.0
    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0


def join_url(base: str, path_or_url: str) -> str:
    """``base`` + ``/path`` keeping base's own path prefix (a repository may live under a CDN folder)."""
    if path_or_url.startswith(("http://", "https://")):
        return path_or_url
    return base.rstrip("/") + "/" + path_or_url.lstrip("/")


class _Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)()) and total > 0
        self.label, self.total, self._last = label, total, 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and done < self.total):
            return
        self._last = now
        width = 30
        filled = width * done // self.total
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {100 * done // self.total:3d}% {done / 1e6:.1f}/{self.total / 1e6:.1f} MB")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class _Retry(Exception):
    """One attempt failed in a way worth retrying."""


class Fetcher:
    """GET files from one repository base URL. Thread-compatible, not thread-safe."""

    def __init__(
        self,
        base_url: str,
        timeouts: Timeouts | None = None,
        session: requests.Session | None = None,
        progress_stream: TextIO | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts or Timeouts()
        self.session = session or requests.Session()
        self.progress_stream = progress_stream

    def url(self, path_or_url: str) -> str:
        return join_url(self.base_url, path_or_url)

    def fetch_bytes(self, path: str, limit: int, *, missing_ok: bool = False) -> bytes | None:
        """A small file (manifest, signature) of at most ``limit`` bytes.

        Returns None for a 404 when ``missing_ok``. Raises DownloadError,
        TrustError (more than ``limit`` bytes).
        """
        sink = io.BytesIO()
        if not self._transfer(self.url(path), sink, limit=limit, exact=None, missing_ok=missing_ok):
            return None
        return sink.getvalue()

    def download(self, path: str, dest: Path, size: int, label: str = "") -> str:
        """Download exactly ``size`` bytes into ``dest`` (created/truncated); returns their sha256 hex.

        Raises DownloadError (network, deadline), TrustError (more than ``size`` bytes).
        """
        with open(dest, "w+b") as handle:
            self._transfer(self.url(path), handle, limit=size, exact=size, label=label or Path(path).name)
            handle.flush()
            handle.seek(0)
            digest = hashlib.sha256()
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    # -- internals -------------------------------------------------------------

    def _transfer(
        self,
        url: str,
        sink: BinaryIO,
        *,
        limit: int,
        exact: int | None,
        missing_ok: bool = False,
        label: str = "",
    ) -> bool:
        t = self.timeouts
        deadline = time.monotonic() + t.deadline
        progress = _Progress(label or url, exact or 0, self.progress_stream)
        received = 0
        last_error: BaseException | str = "no attempt made"
        try:
            for attempt in range(max(1, t.attempts)):
                if attempt:
                    pause = min(t.backoff * 2 ** (attempt - 1), t.max_backoff, max(0.0, deadline - time.monotonic()))
                    time.sleep(pause)
                if time.monotonic() >= deadline:
                    break
                try:
                    received = self._attempt(url, sink, received, limit, exact, deadline, progress)
                except _Retry as exc:
                    last_error = exc.args[0]
                    received = sink.tell()
                    continue
                except _NotFound:
                    if missing_ok:
                        return False
                    raise DownloadError(f"{url}: not found (HTTP 404)") from None
                if exact is None or received == exact:
                    return True
                last_error = f"connection closed after {received} of {exact} bytes"
        finally:
            progress.close()
        if time.monotonic() >= deadline:
            raise DownloadError(f"{url}: not complete within the {t.deadline:g}s deadline (last error: {last_error})")
        cause = last_error if isinstance(last_error, BaseException) else None
        raise DownloadError(f"{url}: failed after {t.attempts} attempts: {last_error}") from cause

    def _attempt(
        self, url: str, sink: BinaryIO, received: int, limit: int, exact: int | None, deadline: float, progress: _Progress
    ) -> int:
        """One GET; returns the bytes held afterwards. Raises _Retry, _NotFound, DownloadError, TrustError."""
        t = self.timeouts
        remaining = max(0.001, deadline - time.monotonic())
        headers = {"Accept-Encoding": "identity"}
        if received:
            headers["Range"] = f"bytes={received}-"
        try:
            response = self.session.get(
                url, headers=headers, stream=True, timeout=(min(t.connect, remaining), min(t.read, remaining))
            )
        except requests.RequestException as exc:
            raise _Retry(exc) from exc
        with response:
            status = response.status_code
            if status >= 500 or status in _RETRY_STATUS:
                raise _Retry(f"HTTP {status}")
            if status == 404:
                raise _NotFound()
            if status == 416 and received:
                _restart(sink)
                raise _Retry("server refused the resume range (HTTP 416)")
            if status not in (200, 206):
                raise DownloadError(f"{url}: unexpected HTTP {status}")
            if status == 200 and received:
                _restart(sink)  # the server ignored Range: read it all again
                received = 0
            elif status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != received:
                    _restart(sink)
                    raise _Retry(f"206 answer starts at byte {start}, expected {received}")
                if exact is not None and total is not None and total != exact:
                    raise TrustError(f"{url}: server has a {total}-byte file, the manifest says {exact} bytes: refusing")
            announced = response.headers.get("Content-Length")
            if announced and announced.isdigit():
                whole = received + int(announced)
                if whole > limit or (exact is not None and whole != exact):
                    expected = f"exactly {exact}" if exact is not None else f"at most {limit}"
                    raise TrustError(f"{url}: server announces {whole} bytes, {expected} expected: refusing")
            try:
                for chunk in response.iter_content(_CHUNK):
                    if received + len(chunk) > limit:
                        raise TrustError(f"{url}: server sent more than the {limit} bytes expected: refusing")
                    sink.write(chunk)
                    received += len(chunk)
                    progress.update(received)
                    if time.monotonic() > deadline:
                        raise _Retry("deadline reached while reading")
            except requests.RequestException as exc:
                raise _Retry(exc) from exc
        return received


class _NotFound(Exception):
    pass


def _restart(sink: BinaryIO) -> None:
    sink.seek(0)
    sink.truncate()


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size or None) of a Content-Range header; (None, None) if malformed."""
    match = _CONTENT_RANGE_RE.match(value or "")
    if not match:
        return None, None
    total = match.group(3)
    return int(match.group(1)), (int(total) if total != "*" else None)
