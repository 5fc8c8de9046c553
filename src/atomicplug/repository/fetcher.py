"""The HTTP client: bounded, resumable, retrying downloads (docs/design.md "Download deadlines").

Every transfer has connect/read timeouts, a wall-clock deadline and a minimum
rate, both enforced by a :class:`~atomicplug.repository.watchdog.TransferWatchdog`
that can interrupt a blocked read (headers, body or silence; retries and
backoff included). It reads at most a known number of bytes (endless-data
attack: :class:`TrustError`), retries connection errors and 5xx answers with
exponential backoff, and resumes a dropped body with ``Range: bytes=N-``
(accepting the resumed part only when the answer is a 206 whose
``Content-Range`` starts at N; a server that ignores Range is read again from
the start). Small files can be revalidated (``If-None-Match`` /
``If-Modified-Since``, :meth:`Fetcher.fetch_if_changed`). Anything that still
fails is a :class:`DownloadError` raised ``from`` the underlying exception.

This module only moves bytes; what they must hash to and who must have signed
them is the caller's job (:mod:`atomicplug.repository.remote`,
:mod:`atomicplug.repository.manifest_cache`).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO
from urllib.parse import urlsplit

import attrs
import requests
import urllib3

from atomicplug.errors import ConfigError, DownloadError, RepositoryUnreachableError, TrustError
from atomicplug.repository.watchdog import TransferWatchdog, watch_session

if TYPE_CHECKING:
    from atomicplug.config import Config

__all__ = ["Timeouts", "Fetcher", "Fetched", "ProgressCallback", "join_url", "make_fetcher", "repository_url"]

#: Up to this much per read; a read returns whatever has arrived, so the watchdog sees every byte.
_CHUNK = 1 << 16
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_RETRY_STATUS = frozenset({408, 429})

#: ``progress(received, total)``: bytes of one download so far (a resume starts at its offset).
ProgressCallback = Callable[[int, int], None]


@attrs.frozen
class Timeouts:
    """How long to wait and how slow a server may be.

    ``deadline`` bounds one whole transfer, headers, retries and backoff
    included; ``min_rate`` bytes/s must arrive on average over every
    ``rate_window`` seconds of it (0 turns the rate rule off).
    """

    connect: float = 10.0
    read: float = 30.0
    deadline: float = 300.0
    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    min_rate: float = 1024.0
    rate_window: float = 30.0

    @classmethod
    def from_config(cls, config: Config) -> Timeouts:
        """``download_timeout``, ``download_min_rate`` and ``download_rate_window`` of ``config``."""
        return cls(deadline=config.download_timeout, min_rate=config.download_min_rate, rate_window=config.download_rate_window)


@attrs.frozen
class Fetched:
    """A small file from :meth:`Fetcher.fetch_if_changed`: ``data`` is None when the server said 304 Not Modified."""

    data: bytes | None
    etag: str | None = None
    last_modified: str | None = None


def join_url(base: str, path_or_url: str) -> str:
    """``base`` + ``/path`` keeping base's own path prefix (a repository may live under a CDN folder)."""
    if path_or_url.startswith(("http://", "https://")):
        return path_or_url
    return base.rstrip("/") + "/" + path_or_url.lstrip("/")


def repository_url(config: Config) -> str:
    """The configured repository's base URL (no trailing slash); ConfigError when none is set."""
    if not config.repository:
        raise ConfigError("no repository configured: set 'repository' in the config (e.g. \"http://127.0.0.1:8002\")")
    return config.repository.rstrip("/")


def make_fetcher(config: Config, timeouts: Timeouts | None = None, progress: ProgressCallback | None = None) -> Fetcher:
    """A Fetcher for ``config.repository`` with the config's deadline and minimum rate.

    ``progress(received, total)`` is called as each package download advances.
    Raises ConfigError when no repository is configured.
    """
    return Fetcher(repository_url(config), timeouts or Timeouts.from_config(config), progress=progress)


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
    """One attempt failed in a way worth retrying; ``reached``: the server answered at all."""

    def __init__(self, reason: object, *, reached: bool = True) -> None:
        super().__init__(reason)
        self.reached = reached


class _NotFound(Exception):
    pass


@attrs.frozen
class _Answer:
    status: int
    etag: str | None
    last_modified: str | None


class Fetcher:
    """GET files from one repository base URL. Thread-compatible, not thread-safe.

    ``progress(received, total)`` is called as each :meth:`download` advances
    (besides the terminal bar drawn on ``progress_stream`` when it is a tty);
    :meth:`download` may override it per call. A ``session`` passed in gets
    the watched adapter mounted for http:// and https://.
    """

    def __init__(
        self,
        base_url: str,
        timeouts: Timeouts | None = None,
        session: requests.Session | None = None,
        progress_stream: TextIO | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts or Timeouts()
        self.session = watch_session(session or requests.Session())
        self.progress_stream = progress_stream
        self.progress = progress

    def url(self, path_or_url: str) -> str:
        return join_url(self.base_url, path_or_url)

    def fetch_bytes(self, path: str, limit: int, *, missing_ok: bool = False) -> bytes | None:
        """A small file (manifest, signature) of at most ``limit`` bytes.

        Returns None for a 404 when ``missing_ok``. Raises DownloadError,
        TrustError (more than ``limit`` bytes).
        """
        sink = io.BytesIO()
        if self._transfer(self.url(path), sink, limit=limit, exact=None, missing_ok=missing_ok) is None:
            return None
        return sink.getvalue()

    def fetch_if_changed(self, path: str, limit: int, *, etag: str | None = None, last_modified: str | None = None) -> Fetched:
        """A small file unless it is unchanged since the copy whose validators are given.

        Sends ``If-None-Match: etag`` and ``If-Modified-Since: last_modified``
        (each when given); a 304 answer is ``Fetched(data=None)``. Returns the
        answer's own validators either way. Raises DownloadError (also for a
        404), TrustError (more than ``limit`` bytes).
        """
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        sink = io.BytesIO()
        answer = self._transfer(self.url(path), sink, limit=limit, exact=None, headers=headers)
        assert answer is not None
        data = None if answer.status == 304 else sink.getvalue()
        return Fetched(data, answer.etag, answer.last_modified)

    def download(self, path: str, dest: Path, size: int, label: str = "", progress: ProgressCallback | None = None) -> str:
        """Download exactly ``size`` bytes into ``dest`` (created/truncated); returns their sha256 hex.

        ``progress`` (default: the fetcher's) gets ``(received, size)`` as bytes arrive.
        Raises DownloadError (network, deadline, rate), TrustError (more than ``size`` bytes).
        """
        with open(dest, "w+b") as handle:
            self._transfer(
                self.url(path), handle, limit=size, exact=size, label=label or Path(path).name, progress=progress or self.progress
            )
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
        headers: dict[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> _Answer | None:
        """Every attempt at one GET under one watchdog; None for a 404 when ``missing_ok``."""
        t = self.timeouts
        bar = _Progress(label or url, exact or 0, self.progress_stream)

        def advanced(done: int) -> None:
            bar.update(done)
            if progress is not None and exact is not None:
                progress(done, exact)

        last_error: BaseException | str = "no attempt made"
        attempts = 0
        reached = False
        with TransferWatchdog(t.deadline, t.min_rate, t.rate_window) as watchdog:
            try:
                while attempts < max(1, t.attempts) and watchdog.check() is None:
                    if attempts:
                        time.sleep(min(t.backoff * 2 ** (attempts - 1), t.max_backoff, watchdog.remaining()))
                        if watchdog.check() is not None:
                            break
                    attempts += 1
                    try:
                        answer = self._attempt(url, sink, limit, exact, watchdog, headers or {}, advanced)
                    except _Retry as exc:
                        last_error = exc.args[0]
                        reached = reached or exc.reached
                        continue
                    except _NotFound:
                        if missing_ok:
                            return None
                        raise DownloadError(f"{url}: not found (HTTP 404)") from None
                    if watchdog.broken is not None:
                        break  # it shut the socket down: what looks complete may be cut short
                    if answer.status == 304 or exact is None or sink.tell() == exact:
                        return answer
                    last_error = f"connection closed after {sink.tell()} of {exact} bytes"
            finally:
                bar.close()
            broken = watchdog.broken  # set by the thread, or by check() when the loop stopped on it
        # Nothing ever answered (refused, reset, timed out before a status line): say so by class.
        failure = DownloadError if reached else RepositoryUnreachableError
        if broken is not None:
            raise failure(f"{url}: {broken}")
        cause = last_error if isinstance(last_error, BaseException) else None
        reason = _reason(last_error)
        if not reached:
            raise failure(f"cannot connect to the repository at {_origin(url)}: {reason} ({attempts} attempts)") from cause
        raise failure(f"{url}: failed after {attempts} attempts: {reason}") from cause

    def _attempt(
        self,
        url: str,
        sink: BinaryIO,
        limit: int,
        exact: int | None,
        watchdog: TransferWatchdog,
        extra_headers: dict[str, str],
        advanced: Callable[[int], None],
    ) -> _Answer:
        """One GET, appending to what ``sink`` holds. Raises _Retry, _NotFound, DownloadError, TrustError."""
        t = self.timeouts
        remaining = max(0.001, watchdog.remaining())
        received = sink.tell()
        headers = {"Accept-Encoding": "identity", **extra_headers}
        if received:
            headers["Range"] = f"bytes={received}-"
        try:
            # Never follow a redirect: requests would go to any origin the answer names, and read
            # each redirect's whole body first (to release the connection), without any limit.
            response = self.session.get(
                url, headers=headers, stream=True, allow_redirects=False,
                timeout=(min(t.connect, remaining), min(t.read, remaining)),
            )  # fmt: skip
        except requests.RequestException as exc:
            raise _Retry(exc, reached=False) from exc
        with response:
            status = response.status_code
            answer = _Answer(status, response.headers.get("ETag"), response.headers.get("Last-Modified"))
            if status == 304 and extra_headers:
                return answer
            if status >= 500 or status in _RETRY_STATUS:
                raise _Retry(f"HTTP {status}")
            if status == 404:
                raise _NotFound()
            if 300 <= status < 400 and status != 304:
                where = response.headers.get("Location", "nowhere")
                raise DownloadError(
                    f"{url}: the repository redirects (HTTP {status} to {where}); atomicplug does not follow redirects: "
                    "set `repository` to the address it should fetch from"
                )
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
            while chunk := _read_some(response.raw):
                watchdog.received(len(chunk))
                if received + len(chunk) > limit:
                    raise TrustError(f"{url}: server sent more than the {limit} bytes expected: refusing")
                sink.write(chunk)
                received += len(chunk)
                advanced(received)
        return answer


def _read_some(raw: urllib3.BaseHTTPResponse) -> bytes:
    """Whatever part of the body has arrived (up to one chunk); b"" at its end. Raises _Retry."""
    try:
        return raw.read1(_CHUNK, decode_content=True)
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
        raise _Retry(exc) from exc


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url``: what a connection goes to."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _reason(error: BaseException | str) -> str:
    """What went wrong, in the system's words ("connection refused"), not the HTTP library's classes.

    requests wraps urllib3's pool errors, which wrap the OSError the socket raised: the
    innermost OSError that has a message is the reason; anything else is shown as it is.
    """
    seen: set[int] = set()
    current: BaseException | None = error if isinstance(error, BaseException) else None
    found: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            found = current.strerror
        elif isinstance(current, (TimeoutError, urllib3.exceptions.TimeoutError)):
            found = "timed out"
        reason = getattr(current, "reason", None)
        current = current.__cause__ or current.__context__ or (reason if isinstance(reason, BaseException) else None)
    if found is None:
        return str(error)
    return found[:1].lower() + found[1:]


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
