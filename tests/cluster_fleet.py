"""A fleet of cluster nodes on one machine for the tests: separate homes, separate processes.

``Fleet(tmp_path, database_url, publisher)`` makes node homes (``node("b")``),
starts ``atomicplug sync --watch`` for a node in a process of its own
(``watch("b")``), and waits for the nodes' rows in the database to show a
generation (``wait_for(generation, nodes)``): a node that never gets there is a
failure after a generous deadline, not a timing measurement.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from atomicplug.config import Config
from atomicplug.installer import Installer
from atomicplug.testing import KeyPair, make_home

__all__ = ["Fleet", "Node"]

SRC = Path(__file__).resolve().parents[1] / "src"
#: How long a node may take to converge before the test fails (never a speed claim: see bench/).
DEADLINE = 90.0


class Node:
    """One node: its home and, while watching, its ``sync --watch`` process."""

    def __init__(self, root: Path, config_path: Path) -> None:
        self.root = root
        self.config_path = config_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Config:
        return Config.load(self.config_path)

    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def installer(self) -> Installer:
        return Installer(self.config)

    def plugins(self) -> dict[str, tuple[str, bool]]:
        return {row["id"]: (row["version"], row["enabled"]) for row in self.installer.list()}

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, PYTHONPATH=str(SRC))
        command = [sys.executable, "-m", "atomicplug", "--config", str(self.config_path), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)

    def watch(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(SRC))
        log = open(self.root / "watch.log", "ab")  # noqa: SIM115 - the child keeps it
        command = [sys.executable, "-m", "atomicplug", "--config", str(self.config_path), "sync", "--watch"]
        self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        log.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self) -> str:
        path = self.root / "watch.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


class Fleet:
    """Node homes on one database, every one trusting ``publisher`` unless told otherwise."""

    def __init__(self, root: Path, database_url: str, publisher: KeyPair) -> None:
        self.root = root
        self.database_url = database_url
        self.publisher = publisher
        self.nodes: dict[str, Node] = {}

    def node(self, name: str, keys: list[Path] | None = None, **overrides: Any) -> Node:
        if name not in self.nodes:
            root = self.root / f"node-{name}"
            settings: dict[str, Any] = {"database_url": self.database_url, "cluster": True, "node_id": f"node-{name}", "lock_timeout": 30}
            settings.update(overrides)
            path = make_home(root, keys if keys is not None else [self.publisher.public_path], **settings)
            self.nodes[name] = Node(root, path)
        return self.nodes[name]

    def status(self) -> dict[str, Any]:
        from atomicplug.cluster.nodes import read_status
        from atomicplug.cluster.tables import cluster_database

        any_node = next(iter(self.nodes.values()))
        with cluster_database(any_node.config) as db:
            return read_status(db).to_dict()

    def wait_for(self, generation: int, names: list[str], *, live: bool = True) -> dict[str, Any]:
        """Until each named node's row shows ``generation`` (and, with ``live``, it listens)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            status = self.status()
            rows = {row["node_id"]: row for row in status["nodes"]}
            behind = [
                name for name in names
                if (row := rows.get(self.nodes[name].node_id)) is None or row["generation"] != generation or (live and not row["live"])
            ]  # fmt: skip
            if not behind:
                return status
            for name in behind:
                process = self.nodes[name].process
                assert process is None or process.poll() is None, f"node {name} exited:\n{self.nodes[name].log()}"
            assert time.monotonic() < deadline, f"nodes {behind} did not reach generation {generation}: {status}\n" + "\n".join(
                self.nodes[n].log() for n in behind
            )
            time.sleep(0.05)

    def wait_listening(self, names: list[str]) -> None:
        """Until each named node holds its listening connection (so it hears the next NOTIFY)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            live = {row["node_id"] for row in self.status()["nodes"] if row["live"]}
            missing = [n for n in names if self.nodes[n].node_id not in live]
            if not missing:
                return
            assert time.monotonic() < deadline, f"nodes {missing} never listened:\n" + "\n".join(self.nodes[n].log() for n in missing)
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
