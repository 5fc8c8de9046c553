"""Load on the NextPanel marketplace (issue 16): 50 admin clients reading while a writer runs.

One uvicorn worker on loopback serves the example backend over a signed
repository (the example plugins plus 200 generated ones). For ``--seconds``,
``--clients`` asyncio clients loop over: list the plugins, search, and poll
operations; one writer loops install / upgrade / rollback / disable / enable /
uninstall of ai_chatbot through the API. Reported: requests, 5xx count,
latency percentiles per kind of read (list, search, poll) with the writer
running, and the server's RSS and open descriptors at the start and the end.
Loopback only; the loops are bounded by time and stop by themselves.

    python bench/marketplace_load.py [--clients 50] [--seconds 30] [--profile server.txt]

``--profile`` samples the server with py-spy (``pip install py-spy``) for the
whole load and writes its collapsed stacks (one line per stack, with a count):
where the server's time goes.

Prints a table, then one line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from atomicplug.packing import pack  # noqa: E402
from atomicplug.testing import PluginSpec, build_package, build_repository, make_home, make_keypair, served_repository  # noqa: E402

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MARKET = "/api/v1/marketplace"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_figures(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU the server process used so far: what a read costs, whatever else loads the machine."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


class _RawClient:
    """One kept-alive HTTP/1.1 connection for GETs with Content-Length answers: a client that costs
    little CPU, so on a small machine the figures are the server's and not the load generator's
    (``--client httpx`` measures with httpx, as the first runs did)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str) -> int:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: {AUTH['Authorization']}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, StopIteration) as exc:
            self.close()
            raise ConnectionError(type(exc).__name__) from exc
        return int(head[9:12])

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def _reader(client: httpx.AsyncClient | _RawClient, stop: float, samples: dict[str, list[float]], errors: list[str], n: int) -> None:
    kinds = [("list", f"{MARKET}/plugins"), ("search", f"{MARKET}/plugins?q=generated+01"), ("poll", f"{MARKET}/operations")]
    i = n
    while time.monotonic() < stop:
        kind, path = kinds[i % len(kinds)]
        i += 1
        started = time.monotonic()
        try:
            status = (await client.get(path)).status_code if isinstance(client, httpx.AsyncClient) else await client.get(path)
        except (httpx.TransportError, ConnectionError) as exc:  # e.g. a kept-alive connection the server had just closed
            errors.append(f"{kind} transport {type(exc).__name__}")
            continue
        samples[kind].append(time.monotonic() - started)
        if status >= 500:
            errors.append(f"{kind} {status}")
    if isinstance(client, _RawClient):
        client.close()


async def _writer(client: httpx.AsyncClient, stop: float, counts: dict[str, int], errors: list[str]) -> None:
    steps = [
        ("install-remote", {"addon_id": "ai_chatbot", "version": "1.0.0"}),
        ("install-remote", {"addon_id": "ai_chatbot"}),
        ("ai_chatbot/rollback", None),
        ("ai_chatbot/disable", None),
        ("ai_chatbot/enable", None),
        ("ai_chatbot/uninstall", {}),
    ]
    i = 0
    while time.monotonic() < stop:
        path, body = steps[i % len(steps)]
        i += 1
        try:
            response = await client.post(f"{MARKET}/{path}", json=body, timeout=120)
        except httpx.TransportError as exc:
            errors.append(f"write transport {type(exc).__name__}")
            continue
        counts["writes"] += 1
        if response.status_code >= 500:
            errors.append(f"write {path} {response.status_code}")
        elif response.status_code != 200:
            counts["write_refusals"] += 1


async def _load(url: str, clients: int, seconds: float, writer: bool = True, raw: bool = True) -> dict[str, object]:
    samples: dict[str, list[float]] = {"list": [], "search": [], "poll": []}
    errors: list[str] = []
    counts = {"writes": 0, "write_refusals": 0}
    limits = httpx.Limits(max_connections=clients + 5, max_keepalive_connections=clients + 5)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30, limits=limits) as client:
        await client.get(f"{MARKET}/plugins")  # the first listing fetches the manifest
        stop = time.monotonic() + seconds
        writers = [_writer(client, stop, counts, errors)] if writer else []
        readers = [_reader(_RawClient(url) if raw else client, stop, samples, errors, n) for n in range(clients)]
        await asyncio.gather(*writers, *readers)
    transport = [e for e in errors if " transport " in e]
    result: dict[str, object] = {"errors_5xx": len(errors) - len(transport), "transport_errors": len(transport), "first_errors": errors[:5], **counts}
    for kind, values in samples.items():
        result[kind] = {"requests": len(values), "p50_ms": round(_percentile(values, 0.5), 1), "p99_ms": round(_percentile(values, 0.99), 1)}
    reads = [v for values in samples.values() for v in values]
    result["reads_per_s"] = round(len(reads) / seconds, 1)
    result["reads_p99_ms"] = round(_percentile(reads, 0.99), 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--generated", type=int, default=200)
    parser.add_argument("--profile", metavar="FILE", help="py-spy's collapsed stacks of the server during the load")
    parser.add_argument("--no-writer", action="store_true", help="reads only (the server's cost per read, alone)")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw", help="the readers' HTTP client (default: a lean raw one)")
    parser.add_argument("--access-log", action="store_true", help="let uvicorn log every request (off by default: a proxy's log has them)")
    parser.add_argument("--server-option", action="append", default=[], metavar="OPT", help="passed to `python -m examples.nextpanel`")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nextpanel-load-"))
    key = make_keypair(work / "keys")
    (work / "pkgs").mkdir()
    packages = [pack(v, key.secret, work / "pkgs" / f"{v.parent.name}-{v.name}.zip").zip_path
                for v in sorted((ROOT / "examples" / "plugins").glob("*/*")) if v.is_dir()]
    packages += [build_package(PluginSpec(id=f"gen_{n:03d}", metadata_extra={"name": f"Generated {n:03d}"}), work / "gen", key.secret)
                 for n in range(args.generated)]
    repo = build_repository(work / "repo", packages, key.secret)
    with served_repository(repo) as repo_url:
        config = make_home(work / "site", [key.public_path], repository=repo_url)
        port = _free_port()
        path = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, ATOMICPLUG_CONFIG=str(config), NEXTPANEL_ADMIN_TOKEN=TOKEN, PYTHONPATH=path)
        logging = [] if args.access_log else ["--no-access-log"]
        command = [sys.executable, "-m", "examples.nextpanel", "--port", str(port), "--config", str(config), *logging, *args.server_option]
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            rss0, fds0 = _proc_figures(server.pid)
            profiler = None
            if args.profile:
                profiler = subprocess.Popen(["py-spy", "record", "--pid", str(server.pid), "--format", "raw", "--output", args.profile,
                                             "--duration", str(int(args.seconds)), "--threads", "--nonblocking"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cpu0 = _cpu_seconds(server.pid)
            result = asyncio.run(_load(url, args.clients, args.seconds, writer=not args.no_writer, raw=args.client == "raw"))
            cpu1 = _cpu_seconds(server.pid)
            rss1, fds1 = _proc_figures(server.pid)
            if profiler is not None:
                profiler.wait(timeout=60)
        finally:
            server.terminate()
            server.wait(timeout=10)
    shutil.rmtree(work, ignore_errors=True)
    reads = sum(result[k]["requests"] for k in ("list", "search", "poll"))  # type: ignore[index]
    fast = [name for name in ("httptools", "uvloop") if importlib.util.find_spec(name)]
    result |= {"clients": args.clients, "seconds": args.seconds, "plugins": len(packages), "writer": not args.no_writer, "client": args.client,
               "access_log": args.access_log, "uvicorn_extras": fast, "load_average": list(os.getloadavg()),
               "rss_mb": [round(rss0, 1), round(rss1, 1)], "open_fds": [fds0, fds1],
               "server_cpu_s": round(cpu1 - cpu0, 2), "server_cpu_ms_per_read": round(1000 * (cpu1 - cpu0) / max(reads, 1), 2)}
    print(f"{'read':8} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for kind in ("list", "search", "poll"):
        figures = result[kind]
        assert isinstance(figures, dict)
        print(f"{kind:8} {figures['requests']:>9} {figures['p50_ms']:>8} {figures['p99_ms']:>8}")
    print(f"reads/s {result['reads_per_s']}, all reads p99 {result['reads_p99_ms']} ms, writes {result['writes']}, "
          f"5xx {result['errors_5xx']}, transport errors {result['transport_errors']}, RSS {result['rss_mb']} MB, fds {result['open_fds']}, "
          f"server CPU {result['server_cpu_s']} s ({result['server_cpu_ms_per_read']} ms per read)")
    print(json.dumps(result, sort_keys=True))
    return 1 if result["errors_5xx"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
