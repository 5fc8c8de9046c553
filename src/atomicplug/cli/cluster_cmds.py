"""CLI commands of cluster mode: ``sync [--watch]`` and ``cluster status [--json]``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from atomicplug.cli import add_command_group, load_config

__all__ = ["register"]


def _cluster_config(args: argparse.Namespace):  # noqa: ANN202 - lazy import keeps start-up cheap
    from atomicplug.errors import ConfigError

    config = load_config(args)
    if not config.cluster:
        raise ConfigError("this node is not in cluster mode: set cluster = true (and a postgresql:// database_url) in the config")
    return config


def _progress(args: argparse.Namespace):  # noqa: ANN202
    def progress(message: str) -> None:
        if args.verbose or args.watch or sys.stderr.isatty():
            print(f"  {message}", file=sys.stderr, flush=True)

    return progress


def cmd_sync(args: argparse.Namespace) -> int:
    config = _cluster_config(args)
    if args.watch:
        return _watch(config, _progress(args))
    from atomicplug.cluster.sync import sync

    result = sync(config, _progress(args))
    for line in result.changes:
        print(line)
    if result.error is not None:
        print(f"atomicplug: error: {result.failure}", file=sys.stderr)
        return 1
    print(f"node {config.node_id} is at generation {result.generation}")
    return 0


def _watch(config: Any, progress: Any) -> int:
    from atomicplug.cluster.watch import Watcher

    def switched_line(result: Any) -> None:
        for line in result.changes:
            print(line, flush=True)
        if result.error is None and result.changes:
            print(f"node {config.node_id} is at generation {result.generation}", flush=True)

    watcher = Watcher(config, progress=progress, on_result=switched_line)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: watcher.stop())
    watcher.run()
    return 0


def cmd_cluster_status(args: argparse.Namespace) -> int:
    from atomicplug.cluster.nodes import read_status
    from atomicplug.cluster.tables import cluster_database, database_errors

    config = _cluster_config(args)
    with database_errors(), cluster_database(config) as db:
        status = read_status(db)
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
        return 0
    print(f"desired generation {status.generation}" + (f" ({status.txid})" if status.txid else ""))
    if not status.nodes:
        print("no node has reported yet")
    for node in status.nodes:
        applied = "-" if node.generation is None else str(node.generation)
        staged = "-" if node.staged is None else str(node.staged)
        lag = "" if node.lag in (None, 0) else f", {node.lag} behind"
        seen = node.last_seen.strftime("%Y-%m-%d %H:%M:%S %Z") if node.last_seen else "never"
        line = f"{node.node_id:24} {'live' if node.live else 'gone':5} generation {applied:>5} staged {staged:>5}{lag}  last seen {seen}"
        print(line + (f"\n{'':24} error: {node.error}" if node.error else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sync",
        help="bring this node to the cluster's desired generation (verify, stage, switch; no migrations)",
        description="Bring this node to the cluster's desired generation: exit 0 when converged, 1 when a package "
        "could not be applied (the error is recorded on the node's row; the node keeps its last good generation).",
    )
    p.add_argument("--watch", action="store_true", help="stay running: LISTEN and sync on every notification")
    p.add_argument("-v", "--verbose", action="store_true", help="print each stage on stderr")
    p.set_defaults(handler=cmd_sync)

    p = sub.add_parser("cluster", help="the cluster's desired generation and its nodes", description="The cluster's desired generation and its nodes (cluster mode).")
    cluster_sub = add_command_group(p, "cluster_command")
    status = cluster_sub.add_parser("status", help="desired generation; per node applied and staged generation, lag, last seen, last error")
    status.add_argument("--json", action="store_true", help='print {"generation": N, "nodes": [...]}')
    status.set_defaults(handler=cmd_cluster_status)
