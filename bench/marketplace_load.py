"""Load on the NextPanel marketplace (issue 16): 50 admin clients reading while a writer runs.

One uvicorn worker on loopback serves the example backend over a signed
repository (the example plugins plus 200 generated ones). For ``--seconds``,
``--clients`` asyncio clients loop over: list the plugins, search, and poll
operations; one writer loops install / upgrade / rollback / disable / enable /
uninstall of ai_chatbot through the API. Reported: requests, 5xx count,
latency percentiles per kind of read (list, search, poll) with the writer
running, and the server's RSS and open descriptors at the start and the end.
Loopback only; the loops are bounded by time and stop by themselves.

    python bench/marketplace_load.py [--clients 50] [--seconds 30]

Prints a table, then one line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


async def _reader(client: httpx.AsyncClient, stop: float, samples: dict[str, list[float]], errors: list[str], n: int) -> None:
    kinds = [("list", f"{MARKET}/plugins"), ("search", f"{MARKET}/plugins?q=generated+01"), ("poll", f"{MARKET}/operations")]
    i = n
    while time.monotonic() < stop:
        kind, path = kinds[i % len(kinds)]
        i += 1
        started = time.monotonic()
        try:
            response = await client.get(path)
        except httpx.TransportError as exc:  # e.g. a kept-alive connection the server had just closed
            errors.append(f"{kind} transport {type(exc).__name__}")
            continue
        samples[kind].append(time.monotonic() - started)
        if response.status_code >= 500:
            errors.append(f"{kind} {response.status_code}")


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


async def _load(url: str, clients: int, seconds: float) -> dict[str, object]:
    samples: dict[str, list[float]] = {"list": [], "search": [], "poll": []}
    errors: list[str] = []
    counts = {"writes": 0, "write_refusals": 0}
    limits = httpx.Limits(max_connections=clients + 5, max_keepalive_connections=clients + 5)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30, limits=limits) as client:
        await client.get(f"{MARKET}/plugins")  # the first listing fetches the manifest
        stop = time.monotonic() + seconds
        await asyncio.gather(_writer(client, stop, counts, errors), *(_reader(client, stop, samples, errors, n) for n in range(clients)))
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
        env = dict(os.environ, ATOMICPLUG_CONFIG=str(config), NEXTPANEL_ADMIN_TOKEN=TOKEN, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]))
        server = subprocess.Popen([sys.executable, "-m", "examples.nextpanel", "--port", str(port), "--config", str(config)],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            rss0, fds0 = _proc_figures(server.pid)
            result = asyncio.run(_load(url, args.clients, args.seconds))
            rss1, fds1 = _proc_figures(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=10)
    result |= {"clients": args.clients, "seconds": args.seconds, "plugins": len(packages),
               "rss_mb": [round(rss0, 1), round(rss1, 1)], "open_fds": [fds0, fds1]}
    print(f"{'read':8} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for kind in ("list", "search", "poll"):
        figures = result[kind]
        assert isinstance(figures, dict)
        print(f"{kind:8} {figures['requests']:>9} {figures['p50_ms']:>8} {figures['p99_ms']:>8}")
    print(f"reads/s {result['reads_per_s']}, all reads p99 {result['reads_p99_ms']} ms, writes {result['writes']}, "
          f"5xx {result['errors_5xx']}, transport errors {result['transport_errors']}, RSS {result['rss_mb']} MB, fds {result['open_fds']}")
    print(json.dumps(result, sort_keys=True))
    return 1 if result["errors_5xx"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
