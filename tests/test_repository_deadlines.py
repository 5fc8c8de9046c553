"""Issue 13 item 6: the download deadline and the minimum rate hold whatever the server does.

A read timeout bounds one socket read, so a server that trickles (one byte
every 50 ms here) never trips it. These tests use a real loopback server that
trickles the headers, trickles the body, or accepts and never answers, with
deadlines under a second. Each fetch runs in a thread that must end: if it is
still running after ``_HANG`` seconds the fetch hangs, which is the defect (a
bound that is 20 times the deadline, not a speed measurement).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from misbehaving_server import MisbehavingServer, Silent, TrickleBody, TrickleHeaders

from atomicplug.errors import DownloadError
from atomicplug.repository.fetcher import Fetcher, Timeouts

PATH = "/download/crm/1.0.0"
BODY = bytes(range(256)) * 1200
#: Short deadline; the default rate rule (1 KiB/s over 30 s) cannot fire within it.
QUICK = Timeouts(connect=2.0, read=30.0, deadline=0.6, attempts=3, backoff=0.01, max_backoff=0.05)
_HANG = 20.0


@pytest.fixture
def server() -> Iterator[MisbehavingServer]:
    with MisbehavingServer() as running:
        running.put(PATH, BODY)
        running.put("/manifest.json", b'{"schema": 1}')
        yield running


def _error_of(fetch: Callable[[], object]) -> BaseException | None:
    """Run ``fetch`` in a thread and return what it raised; fail if it never ends."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fetch()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(_HANG)
    if thread.is_alive():
        pytest.fail(f"the fetch was still running {_HANG:g}s later: no deadline stopped it")
    return outcome[0]


def _one_line_download_error(error: BaseException | None) -> str:
    assert isinstance(error, DownloadError), f"expected DownloadError, got {error!r}"
    message = str(error)
    assert "\n" not in message and error.exit_code == 1
    return message


@pytest.mark.parametrize("fault", [TrickleHeaders(0.05), TrickleBody(0.05), Silent()], ids=["headers", "body", "silent"])
def test_deadline_bounds_a_download_whatever_the_server_does(server: MisbehavingServer, fault: object, tmp_path: Path) -> None:
    server.always(PATH, fault)  # type: ignore[arg-type]
    fetcher = Fetcher(server.url, QUICK)
    error = _error_of(lambda: fetcher.download(PATH, tmp_path / "out.zip", len(BODY)))
    assert "0.6s download deadline" in _one_line_download_error(error)


def test_deadline_bounds_a_trickled_manifest(server: MisbehavingServer) -> None:
    server.always("/manifest.json", TrickleHeaders(0.05))
    fetcher = Fetcher(server.url, QUICK)
    error = _error_of(lambda: fetcher.fetch_bytes("/manifest.json", 1 << 20))
    assert "deadline" in _one_line_download_error(error)


@pytest.mark.parametrize("fault", [TrickleBody(0.05, step=10), TrickleHeaders(0.05)], ids=["body", "headers"])
def test_minimum_rate_over_a_sliding_window(server: MisbehavingServer, fault: object, tmp_path: Path) -> None:
    server.always(PATH, fault)  # type: ignore[arg-type]
    slow_ok = Timeouts(read=30.0, deadline=60.0, attempts=3, backoff=0.01, min_rate=1000, rate_window=0.5)
    fetcher = Fetcher(server.url, slow_ok)
    error = _error_of(lambda: fetcher.download(PATH, tmp_path / "out.zip", len(BODY)))
    message = _one_line_download_error(error)
    assert "minimum rate of 1000 bytes/s" in message and "0.5s" in message


def test_a_slow_transfer_above_the_minimum_rate_completes(server: MisbehavingServer, tmp_path: Path) -> None:
    body = BODY[:3000]
    server.put(PATH, body)
    server.queue(PATH, TrickleBody(0.05, step=100))  # ~2000 bytes/s for 1.5 s
    rules = Timeouts(read=30.0, deadline=60.0, min_rate=200, rate_window=0.5)
    Fetcher(server.url, rules).download(PATH, tmp_path / "out.zip", len(body))
    assert (tmp_path / "out.zip").read_bytes() == body


def test_zero_minimum_rate_turns_the_rate_rule_off(server: MisbehavingServer, tmp_path: Path) -> None:
    body = BODY[:300]
    server.put(PATH, body)
    server.queue(PATH, TrickleBody(0.05, step=30))  # 600 bytes/s, far below any rate rule's 1000/s
    rules = Timeouts(read=30.0, deadline=60.0, min_rate=0, rate_window=0.1)
    Fetcher(server.url, rules).download(PATH, tmp_path / "out.zip", len(body))
    assert (tmp_path / "out.zip").read_bytes() == body


def test_a_repository_nobody_answers_for_is_unreachable_by_class(tmp_path):
    """The marketplace tells "unreachable" from a bad answer by the error's class, not its text."""
    import socket

    from atomicplug.errors import RepositoryUnreachableError

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    fetcher = Fetcher(f"http://127.0.0.1:{port}", Timeouts(attempts=2, backoff=0.01, deadline=5))
    with pytest.raises(RepositoryUnreachableError):
        fetcher.fetch_bytes("/manifest.json", 1024)
