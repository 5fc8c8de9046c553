"""A PostgreSQL cluster of a test's own: initdb into a temp folder, its own port, its own settings.

For tests that crash or reconfigure a server (the shared one from
``.ci/start-postgres.sh`` is never stopped or reconfigured). Run as root, the
server commands run as the ``postgres`` user (initdb refuses root). Without
server binaries the test is skipped, except under ``CI=true``, where it fails.

    with throwaway_cluster({"synchronous_commit": "off"}) as cluster:
        url = cluster.create_database("app")
        ...
        cluster.kill_all()      # SIGKILL every server process: a database crash
        cluster.start()         # crash recovery replays what reached the WAL files
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from atomicplug.fsutil import alive

__all__ = ["Cluster", "throwaway_cluster", "server_bin"]


def server_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` with initdb (Debian), else initdb on PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    """One initdb'd data folder and the server running on it."""

    def __init__(self, bin_dir: Path, root: Path, settings: dict[str, str]) -> None:
        self.bin = bin_dir
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self.settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",  # TCP only: no socket lock file to outlive a kill
            "autovacuum": "off",
            "fsync": "off",  # a SIGKILL of the server keeps what was written to the OS; a test needs no more
            **settings,
        }

    def _as_postgres(self, *command: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)

    def _run(self, *command: str) -> None:
        subprocess.run(self._as_postgres(*command), check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            for key, value in self.settings.items():
                conf.write(f"{key} = '{value}'\n")

    def start(self) -> None:
        log = self.root / "server.log"
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "-t", "60", "start")
        except subprocess.CalledProcessError:
            tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
            raise AssertionError("the throwaway cluster did not start:\n" + "\n".join(tail)) from None

    def stop(self) -> None:
        subprocess.run(
            self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"),
            capture_output=True,
            timeout=60,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE, then CHECKPOINT: whatever a test crashes later, this survives it."""
        import psycopg2

        conn = psycopg2.connect(self.url())
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
                cursor.execute("CHECKPOINT")
        finally:
            conn.close()
        return self.url(name)

    def kill_all(self) -> None:
        """SIGKILL the postmaster and every child at once: WAL still in shared memory is lost,
        as in a crash of the database server."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGSTOP)  # no new children, no reaction while they go
        children = [pid for pid in _pids() if _parent(pid) == postmaster]
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        os.kill(postmaster, signal.SIGKILL)
        for pid in [postmaster, *children]:
            while alive(pid):
                time.sleep(0.01)
        # Dead, but perhaps not yet reaped by whoever adopted it: a zombie's pid still
        # answers kill(pid, 0), and the next postmaster would take it for a live one.
        (self.data / "postmaster.pid").unlink()


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])



@contextmanager
def throwaway_cluster(settings: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A started cluster with ``settings`` in postgresql.conf; stopped and deleted afterwards."""
    bin_dir = server_bin()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        message = "no PostgreSQL server binaries (initdb, pg_ctl) for a throwaway cluster"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb refuses root")
    # Not tmp_path: its parents are private to the test user, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="atomicplug-cluster-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = Cluster(bin_dir, root, settings or {})
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
