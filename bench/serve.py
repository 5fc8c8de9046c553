"""Benchmark ``atomicplug serve`` and the client's manifest cache (issue 16).

    python bench/serve.py                          # this tree's server
    python bench/serve.py --src /work/main/src     # another tree's server (before/after)

The server is a real ``python -m atomicplug serve REPO`` subprocess, imported
from ``--src`` (default: this tree's ``src``), serving a repository with a
signed manifest of 20 plugins. Measured:

- keepalive: ``--requests`` GETs of /manifest.json one after the other on one
  kept-alive connection (http.client): median, p99, requests/s;
- burst: ``--clients`` threads that connect at the same moment and GET the
  manifest once each: errors, median and max latency, and the kernel's
  ListenOverflows counter before/after (``/proc/net/netstat``, machine-wide);
- client (this tree's library only): one listing's manifest via a full fetch
  (cache cleared each time: what every listing paid before),
  ``load_manifest(record=False)`` (a conditional GET answered 304), and
  ``cached_manifest`` within its max age (no request).

Prints a table, then one last line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(HERE.parent / "tests"))

from misbehaving_server import build_plugin, make_key  # noqa: E402

from atomicplug.config import Config  # noqa: E402
from atomicplug.repository.manifest_cache import cache_path, cached_manifest, load_manifest  # noqa: E402
from atomicplug.repository.repo_admin import add_packages, init_repository  # noqa: E402


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listen_overflows() -> int | None:
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            return int(table.get("ListenOverflows", 0))
    return None


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {"median_ms": round(statistics.median(ordered) * 1000, 3), "p99_ms": round(p99 * 1000, 3), "max_ms": round(ordered[-1] * 1000, 3)}


def keepalive(port: int, count: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    samples = []
    started = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        conn.request("GET", "/manifest.json")
        response = conn.getresponse()
        response.read()
        samples.append(time.perf_counter() - t0)
        assert response.status == 200, response.status
    total = time.perf_counter() - started
    conn.close()
    return {**_ms(samples), "requests_per_s": round(count / total, 1)}


def burst(port: int, clients: int) -> dict[str, float | int | None]:
    go = threading.Event()
    samples: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        go.wait()
        t0 = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/manifest.json")
            conn.getresponse().read()
            conn.close()
            with lock:
                samples.append(time.perf_counter() - t0)
        except OSError as exc:
            with lock:
                errors.append(type(exc).__name__)

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for thread in threads:
        thread.start()
    before = _listen_overflows()
    go.set()
    for thread in threads:
        thread.join()
    after = _listen_overflows()
    overflows = after - before if before is not None and after is not None else None
    return {**_ms(samples), "errors": len(errors), "listen_overflows": overflows}


def client(config: Config, count: int) -> dict[str, dict[str, float]]:
    url = config.repository or ""

    def timed(call: object) -> list[float]:
        samples = []
        for _ in range(count):
            t0 = time.perf_counter()
            call()  # type: ignore[operator]
            samples.append(time.perf_counter() - t0)
        return samples

    def full_fetch() -> None:
        cache_path(config, url).unlink(missing_ok=True)
        load_manifest(config, record=False)

    load_manifest(config, record=False)  # warm: the cache holds a verified copy
    return {
        "full_fetch": _ms(timed(full_fetch)),
        "revalidated_304": _ms(timed(lambda: load_manifest(config, record=False))),
        "cached": _ms(timed(lambda: cached_manifest(config, max_age=3600))),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=str(SRC), help="the src folder whose atomicplug serves (default: this tree's)")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--client-calls", type=int, default=50, help="calls per client-side figure")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="atomicplug-bench-serve-"))
    server = None
    try:
        pub, key = make_key(work / "keys")
        repo = work / "repo"
        init_repository(repo, key)
        add_packages(repo, [build_plugin(work / "pkgs", key, f"plugin_{i:02d}", filler=200) for i in range(20)], key)
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": args.src}
        server = subprocess.Popen(
            [sys.executable, "-m", "atomicplug", "serve", str(repo), "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.05)
        config = Config.for_directory(work / "site", repository=f"http://127.0.0.1:{port}", trusted_keys=[str(pub)])
        figures = {
            "server_src": args.src,
            "keepalive": keepalive(port, args.requests),
            "burst": burst(port, args.clients),
            "client": client(config, args.client_calls),
        }
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    k, b = figures["keepalive"], figures["burst"]
    print(f"server from {args.src}")
    print(f"keep-alive, {args.requests} GETs on one connection: median {k['median_ms']} ms, p99 {k['p99_ms']} ms, {k['requests_per_s']} req/s")
    print(f"burst of {args.clients} new connections: {b['errors']} errors, median {b['median_ms']} ms, max {b['max_ms']} ms, "
          f"ListenOverflows +{b['listen_overflows']}")
    for name, row in figures["client"].items():
        print(f"client manifest, {name}: median {row['median_ms']} ms, p99 {row['p99_ms']} ms")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
