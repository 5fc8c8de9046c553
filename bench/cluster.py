"""Cluster mode on one machine (issue 15): COMMIT to the last node switched, and an idle node's load.

    python bench/cluster.py                               # 2, 10, 50 nodes; small and large plugin
    python bench/cluster.py --nodes 2,10 --sizes small --idle 30

A throwaway PostgreSQL cluster of its own (tests/pg_cluster.py: initdb, its
own port, max_connections raised) holds the fleet. Each node is a home of
its own and an ``atomicplug sync --watch`` process; a writer home installs
the plugin (1.0.0, then the upgrade to 2.0.0) through the CLI. The figures
come from the database's own clock: ``atomicplug_cluster.committed_at`` (the
last statement before the writer's COMMIT) against each node's row, written
right after it switched (``last_seen``). The staged phase (announce to
COMMIT: every live node downloads, verifies and extracts before the writer
commits) is reported beside it. Idle load: ``log_statement = 'all'`` for
``--idle`` seconds while the nodes wait, counting statements per node
connection (``application_name`` ``atomicplug:<node>``). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]

import workloads  # noqa: E402
from pg_cluster import throwaway_cluster  # noqa: E402

from atomicplug.testing import make_home  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"))


def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall()) if cursor.description else []
    finally:
        conn.close()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Fleet:
    """``count`` watching nodes and a writer on database ``url``, under ``root``."""

    def __init__(self, root: Path, url: str, count: int, key: workloads.KeyPair) -> None:
        self.root, self.url = root, url
        common = {"database_url": url, "cluster": True, "lock_timeout": 60, "cluster_stage_wait": 1800}
        self.writer = make_home(root / "writer", [key.public_path], node_id="writer", **common)
        self.configs = [make_home(root / f"n{i:02d}", [key.public_path], node_id=f"n{i:02d}", **common) for i in range(count)]
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for config in self.configs:
            log = open(config.parent / "watch.log", "wb")  # noqa: SIM115 - the child keeps it
            command = [sys.executable, "-m", "atomicplug", "--config", str(config), "sync", "--watch"]
            self.processes.append(subprocess.Popen(command, stdout=log, stderr=log, env=ENV))
            log.close()
        self.wait(lambda: self.live() >= len(self.configs), "every node listening")

    def live(self) -> int:
        return int(_query(self.url, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'atomicplug:%'")[0][0])

    def wait(self, condition: Any, what: str, timeout: float = 3600) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            dead = [p.args[3] for p in self.processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise SystemExit(f"bench: {what}: not reached (exited: {dead})")
            time.sleep(0.05)

    def install(self, zip_path: Path) -> dict[str, float]:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "atomicplug", "--config", str(self.writer), "install", str(zip_path)], capture_output=True, text=True, env=ENV
        )
        if done.returncode != 0:
            raise SystemExit(f"bench: writer failed: {done.stderr}")
        writer_s = time.monotonic() - started
        ((generation,),) = _query(self.url, "SELECT generation FROM atomicplug_cluster")
        self.wait(lambda: self._switched(generation) >= len(self.configs), f"every node at generation {generation}")
        ((staged_s, last_s, median_s),) = _query(
            self.url,
            "SELECT extract(epoch FROM c.committed_at - g.announced_at), extract(epoch FROM max(n.last_seen) - c.committed_at), "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM n.last_seen - c.committed_at)) "
            "FROM atomicplug_cluster c JOIN atomicplug_cluster_generations g ON g.generation = c.generation "
            "JOIN atomicplug_cluster_nodes n ON n.generation = c.generation AND n.node_id <> 'writer' "
            "GROUP BY c.committed_at, g.announced_at",
        )
        return {"commit_to_last_switch_s": float(last_s), "commit_to_median_switch_s": float(median_s),
                "staged_phase_s": float(staged_s), "writer_total_s": writer_s}  # fmt: skip

    def _switched(self, generation: int) -> int:
        return int(_query(self.url, f"SELECT count(*) FROM atomicplug_cluster_nodes WHERE generation = {generation} AND node_id <> 'writer'")[0][0])

    def rss_mib(self) -> float:
        return sum(_rss_kib(p.pid) for p in self.processes) / 1024 / max(len(self.processes), 1)

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def idle_load(cluster: Any, fleet: Fleet, seconds: float) -> dict[str, Any]:
    """Statements each idle node sends in ``seconds``: the server logs every statement meanwhile."""
    admin = cluster.url()
    _query(admin, "ALTER SYSTEM SET log_statement = 'all'")
    _query(admin, "SELECT pg_reload_conf()")
    time.sleep(1.0)
    before = _logged(cluster)
    time.sleep(seconds)
    probe = f"{cluster.url()}?application_name=atomicplug:probe"
    _query(probe, "SELECT 1")  # the count below must see this one: proof the log counts
    time.sleep(0.5)
    after = _logged(cluster)
    _query(admin, "ALTER SYSTEM RESET log_statement")
    _query(admin, "SELECT pg_reload_conf()")
    counts: dict[str, int] = {}
    for line in after[len(before):]:
        name = line.split(" ", 1)[0]
        if name.startswith("atomicplug:") and "statement:" in line:
            counts[name] = counts.get(name, 0) + 1
    if counts.pop("atomicplug:probe", 0) < 1:
        raise SystemExit("bench: the statement log did not show the probe query; the idle count cannot be trusted")
    nodes = len(fleet.configs)
    total = sum(counts.values())
    return {"nodes": nodes, "seconds": seconds, "statements": total, "per_node_per_minute": total * 60 / seconds / nodes, "by_node": counts}


def _logged(cluster: Any) -> list[str]:
    text = (cluster.root / "server.log").read_text(errors="replace") if (cluster.root / "server.log").exists() else ""
    return text.splitlines()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="2,10,50")
    parser.add_argument("--sizes", default="small,large")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of the idle-load window (10 nodes)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "atomicplug-bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    key = workloads.keypair(args.workdir)
    results: dict[str, Any] = {"runs": []}
    settings = {"max_connections": "400", "log_line_prefix": "%a ", "shared_buffers": "256MB", "fsync": "on"}
    with throwaway_cluster(settings) as cluster:
        for size in args.sizes.split(","):
            work = workloads.build_workload(size, args.workdir, key)
            for count in (int(n) for n in args.nodes.split(",")):
                name = f"fleet_{size}_{count}"
                url = cluster.create_database(name)
                root = args.workdir / "cluster" / name
                shutil.rmtree(root, ignore_errors=True)
                fleet = Fleet(root, url, count, key)
                try:
                    fleet.start()
                    row: dict[str, Any] = {"size": size, "nodes": count}
                    if "idle" not in results and count >= min(10, max(int(n) for n in args.nodes.split(","))) and args.idle > 0:
                        results["idle"] = idle_load(cluster, fleet, args.idle)
                        print(f"idle: {results['idle']['statements']} statements from {count} nodes in {args.idle:g}s", flush=True)
                    row["install"] = fleet.install(work.v1)
                    row["upgrade"] = fleet.install(work.v2)
                    row["node_rss_mib"] = round(fleet.rss_mib(), 1)
                    results["runs"].append(row)
                    print(f"{size:6} {count:3} nodes: install commit->last switch {row['install']['commit_to_last_switch_s'] * 1000:7.0f} ms "
                          f"(staged phase {row['install']['staged_phase_s']:.2f} s); upgrade {row['upgrade']['commit_to_last_switch_s'] * 1000:7.0f} ms "
                          f"(staged {row['upgrade']['staged_phase_s']:.2f} s); node RSS {row['node_rss_mib']} MiB", flush=True)  # fmt: skip
                finally:
                    fleet.stop()
                    shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
