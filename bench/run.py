"""Benchmark atomicplug against the floor and the naive installer, in one run (issue 8).

    python bench/run.py                          # small, medium, large; scaling 1/100/1000
    python bench/run.py --sizes small,medium --repeat 3 --scale 1,100

Every contender is a subprocess working on the same signed zip:

- floor: ``unzip -q`` into a fresh folder + ``sha256sum`` + ``minisign -V``
  (the least any installer that verifies and unpacks must do);
- naive: bench/naive_installer.py (extractall, copytree, executescript, JSON);
- atomicplug: ``python -m atomicplug --config … install|rollback|uninstall|recover``.

"upgrade" is ``install`` of version 2.0.0 over 1.0.0 (the CLI's ``upgrade``
needs a repository server; the transaction is the same). Figures are medians
over ``--repeat`` runs, contenders interleaved within each run so that noise
from other processes hits all three alike (the medians of the per-run ratios
are printed too). Peak RSS comes from GNU time around the atomicplug command
alone. The last line printed is JSON with every figure and the ratios
atomicplug/floor and atomicplug/naive.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402

from atomicplug.testing import make_home  # noqa: E402

PY = sys.executable
NAIVE = str(HERE / "naive_installer.py")
HEAVY_MODULES = ("sqlalchemy", "requests", "cryptography", "urllib3", "sqlparse")
OPS = ("install", "upgrade", "rollback", "uninstall")

TARGETS = {
    "medium_install_vs_floor_max": 2.0,
    "medium_install_vs_naive_max": 1.0,
    "scaling_1000_vs_1_max": 1.3,
    "large_peak_rss_mb_max": 100.0,
}


class Failed(RuntimeError):
    pass


GNU_TIME = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None


def peak_rss_kib(cmd: list[str]) -> int:
    """Peak RSS of ``cmd`` alone, in KiB, measured by GNU time (a small process forks it).

    Not ``os.wait4`` on our own child: Linux carries the forking process's RSS
    high-water mark into the child's ``ru_maxrss`` across exec, and this process
    holds large packages in memory while it builds them.
    """
    if GNU_TIME is None:
        return timed(cmd)[1]
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as out:
        timed([GNU_TIME, "-f", "%M", "-o", out.name, *cmd])
        return int(out.read().strip().splitlines()[-1])


def timed(cmd: list[str], *, cwd: Path | None = None) -> tuple[float, int]:
    """Run ``cmd``; return (wall seconds, ru_maxrss of the child in KiB). Raises Failed on exit != 0.

    Starts from a quiet disk (``sync`` first, untimed): otherwise a command pays for the
    write-back and journal commits of whatever ran before it (creating files right after
    another contender deleted thousands measured up to 2x slower), and which contender
    runs after which would decide the ratios.
    """
    os.sync()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()  # type: ignore[union-attr]
    err = proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    if proc.returncode != 0:
        raise Failed(f"{' '.join(map(str, cmd))} exited {proc.returncode}: {err.decode(errors='replace').strip()[-2000:]}")
    timed.last_stdout = out  # type: ignore[attr-defined]
    return elapsed, usage.ru_maxrss


def ap(config: Path, *args: str) -> list[str]:
    return [PY, "-m", "atomicplug", "--config", str(config), *args]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def fresh_home(root: Path, key: workloads.KeyPair) -> Path:
    if root.exists():
        shutil.rmtree(root)
    return make_home(root, keys=[key.public_path], lock_timeout=60)


# -- per size -----------------------------------------------------------------------
def run_floor(w: workloads.Workload, key: workloads.KeyPair, scratch: Path) -> float:
    target = scratch / "floor"
    if target.exists():
        shutil.rmtree(target)
    total = 0.0
    for cmd in (
        ["unzip", "-q", str(w.v1), "-d", str(target)],
        ["sha256sum", str(w.v1)],
        ["minisign", "-V", "-q", "-m", str(w.v1), "-p", str(key.public_path)],
    ):
        total += timed(cmd)[0]
    shutil.rmtree(target)
    return total


def run_naive(w: workloads.Workload, scratch: Path) -> dict[str, float]:
    root = scratch / "naive"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    figures = {}
    for op, target in (("install", w.v1), ("upgrade", w.v2), ("rollback", w.plugin_id), ("uninstall", w.plugin_id)):
        figures[op] = timed([PY, NAIVE, "--root", str(root), op, str(target)])[0]
    shutil.rmtree(root)
    return figures


def run_atomicplug(w: workloads.Workload, key: workloads.KeyPair, scratch: Path) -> tuple[dict[str, float], dict[str, int]]:
    config = fresh_home(scratch / "atomicplug", key)
    figures: dict[str, float] = {}
    rss: dict[str, int] = {}
    steps = (
        ("install", ("install", str(w.v1))),
        ("upgrade", ("install", str(w.v2))),
        ("rollback", ("rollback", w.plugin_id)),
        ("uninstall", ("uninstall", w.plugin_id)),
        ("recover", ("recover",)),
    )
    for op, args in steps:
        figures[op] = timed(ap(config, *args))[0]
        rss[op] = 0
    # Peak RSS in a second pass, under GNU time, so its fork does not touch the timings.
    shutil.rmtree(config.parent)
    config = fresh_home(scratch / "atomicplug", key)
    for op, args in steps:
        rss[op] = peak_rss_kib(ap(config, *args))
    shutil.rmtree(config.parent)
    return figures, rss


def bench_size(size: str, repeat: int, workdir: Path, key: workloads.KeyPair, log) -> dict:
    t0 = time.perf_counter()
    w = workloads.build_workload(size, workdir, key)
    log(f"[{size}] packages ready in {time.perf_counter() - t0:.1f}s ({w.v1.stat().st_size / 1e6:.1f} MB zip)")
    scratch = workdir / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    floor: list[float] = []
    naive: dict[str, list[float]] = {op: [] for op in OPS}
    atom: dict[str, list[float]] = {op: [] for op in (*OPS, "recover")}
    rss: dict[str, list[int]] = {op: [] for op in atom}
    for i in range(repeat):
        floor.append(run_floor(w, key, scratch))
        for op, value in run_naive(w, scratch).items():
            naive[op].append(value)
        figures, peaks = run_atomicplug(w, key, scratch)
        for op, value in figures.items():
            atom[op].append(value)
            rss[op].append(peaks[op])
        log(f"[{size}] run {i + 1}/{repeat}: floor {floor[-1]:.3f}s naive {naive['install'][-1]:.3f}s atomicplug {atom['install'][-1]:.3f}s")
    result = {
        "files": w.files,
        "unpacked_bytes": w.total_bytes,
        "zip_bytes": w.v1.stat().st_size,
        "floor_s": round(median(floor), 4),
        "naive_s": {op: round(median(v), 4) for op, v in naive.items()},
        "atomicplug_s": {op: round(median(v), 4) for op, v in atom.items()},
        "atomicplug_peak_rss_mb": {op: round(max(v) / 1024, 1) for op, v in rss.items()},
        "samples": {"floor": floor, "naive_install": naive["install"], "atomicplug_install": atom["install"]},
    }
    # Per-run ratios too: the three contenders of one run share the machine's momentary load,
    # so their ratio varies less than a ratio of medians taken over a drifting background.
    result["paired_ratios"] = {
        "install_vs_floor": round(median([x / y for x, y in zip(atom["install"], floor)]), 3),
        "install_vs_naive": round(median([x / y for x, y in zip(atom["install"], naive["install"])]), 3),
    }
    a = result["atomicplug_s"]
    result["ratios"] = {
        "install_vs_floor": ratio(a["install"], result["floor_s"]),
        "upgrade_vs_floor": ratio(a["upgrade"], result["floor_s"]),
        **{f"{op}_vs_naive": ratio(a[op], result["naive_s"][op]) for op in OPS},
    }
    return result


# -- scaling ------------------------------------------------------------------------
#: Filler plugins installed per transaction when building the scaling states.
FILL_BATCH = 50


def fill(config_path: Path, zips: list[Path]) -> None:
    """Install ``zips`` in-process through the Installer API, FILL_BATCH packages per transaction.

    One transaction per plugin would be the most realistic history, but it takes
    ~16 minutes for 1000 here (each transaction snapshots the whole schema, see
    README); batches build the same registry, store, links and tables in ~1 minute.
    """
    from atomicplug.config import Config
    from atomicplug.installer import Installer
    from atomicplug.intake import take_in_file

    installer = Installer(Config.load(config_path))
    for i in range(0, len(zips), FILL_BATCH):
        packages = [take_in_file(installer.config, z) for z in zips[i : i + FILL_BATCH]]
        installer.install_packages(packages)


def bench_scaling(levels: list[int], repeat: int, workdir: Path, key: workloads.KeyPair, log) -> dict:
    """One home per level, all filled first; then each run measures every level in turn.

    Interleaving matters: filling 1000 plugins takes a minute or more, and measuring
    the levels one after the other let the machine's drift over that minute decide
    the ratio (1.29×, 1.77×, 1.39× in three runs of the same code).
    """
    small = workloads.build_workload("small", workdir, key)
    t0 = time.perf_counter()
    fillers = workloads.build_fillers(max(levels), workdir, key)
    log(f"[scaling] {len(fillers)} filler packages ready in {time.perf_counter() - t0:.1f}s")
    homes: dict[int, Path] = {}
    fill_times: dict[int, float] = {}
    for level in sorted(levels):
        homes[level] = fresh_home(workdir / "scratch" / f"scaling-{level}", key)
        t0 = time.perf_counter()
        fill(homes[level], fillers[:level])
        fill_times[level] = time.perf_counter() - t0
        log(f"[scaling] home with {level} installed, filled in-process in {fill_times[level]:.1f}s")
    samples: dict[int, dict[str, list[float]]] = {level: {"install": [], "list": [], "recover": []} for level in levels}
    for i in range(repeat):
        for level, config in homes.items():
            got = samples[level]
            got["install"].append(timed(ap(config, "install", str(small.v1)))[0])
            timed(ap(config, "uninstall", small.plugin_id))
            got["list"].append(timed(ap(config, "list", "--json"))[0])
            rows = json.loads(timed.last_stdout)  # type: ignore[attr-defined]
            if len(rows) != level:
                raise Failed(f"list --json shows {len(rows)} plugins, expected {level}")
            got["recover"].append(timed(ap(config, "recover"))[0])
        log(f"[scaling] run {i + 1}/{repeat}: install " + ", ".join(f"{lv}: {samples[lv]['install'][-1]:.3f}s" for lv in homes))
    result: dict[str, dict] = {}
    for level, got in samples.items():
        result[str(level)] = {
            "fill_s": round(fill_times[level], 2),
            "fill_added": level,
            "fill_per_plugin_ms": round(1000 * fill_times[level] / max(1, level), 1),
            "install_small_s": round(median(got["install"]), 4),
            "list_json_s": round(median(got["list"]), 4),
            "recover_s": round(median(got["recover"]), 4),
            "install_samples": got["install"],
        }
    for config in homes.values():
        shutil.rmtree(config.parent)
    return result


# -- start-up and imports ------------------------------------------------------------
def bench_startup(repeat: int, workdir: Path, key: workloads.KeyPair) -> dict:
    config = fresh_home(workdir / "scratch" / "startup", key)
    timed(ap(config, "recover"))  # creates the home
    bare = [timed([PY, "-c", "pass"])[0] for _ in range(max(5, repeat))]
    site_free = [timed([PY, "-I", "-S", "-c", "pass"])[0] for _ in range(max(5, repeat))]
    recover = [timed(ap(config, "recover"))[0] for _ in range(max(5, repeat))]
    proc = subprocess.run([PY, "-X", "importtime", *ap(config, "recover")[1:]], capture_output=True, text=True, check=True)
    imported = set()
    self_us = 0
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        fields = line.split("|")
        try:
            self_us += int(fields[0].split(":")[1])
        except ValueError:
            continue
        imported.add(fields[2].strip().split(".")[0])
    shutil.rmtree(config.parent)
    r, b = median(recover), median(bare)
    return {
        "python_startup_s": round(b, 4),
        "python_isolated_startup_s": round(median(site_free), 4),
        "recover_nothing_pending_s": round(r, 4),
        "recover_vs_startup": ratio(r, b),
        "recover_import_total_ms": round(self_us / 1000, 1),
        "recover_heavy_imports": sorted(m for m in HEAVY_MODULES if m in imported),
    }


# -- report ---------------------------------------------------------------------------
def precompile_atomicplug() -> None:
    """Measure atomicplug as installed, with its modules' pycs present.

    An editable install under ``PYTHONDONTWRITEBYTECODE=1`` (as on the CI machine) would
    otherwise compile every atomicplug module from source in every command, which a
    ``pip install`` never does (it writes the pycs at install time).
    """
    import compileall

    import atomicplug

    compileall.compile_dir(Path(atomicplug.__file__).parent, quiet=1)


def fmt(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"


def print_tables(data: dict) -> None:
    print()
    print(f"{'size':7} {'op':10} {'floor':>9} {'naive':>9} {'atomicplug':>11} {'ap/floor':>9} {'ap/naive':>9}")
    for size, r in data["sizes"].items():
        for op in (*OPS, "recover"):
            a = r["atomicplug_s"][op]
            n = r["naive_s"].get(op)
            fl = r["floor_s"] if op in ("install", "upgrade") else None
            print(
                f"{size:7} {op:10} {fmt(fl) if fl else '-':>9} {fmt(n) if n else '-':>9} {fmt(a):>11} "
                f"{ratio(a, fl) if fl else '-':>9} {ratio(a, n) if n else '-':>9}"
            )
        print(f"{size:7} {'peak RSS':10} {'':>9} {'':>9} {r['atomicplug_peak_rss_mb']['install']:>8} MB")
        pr = r["paired_ratios"]
        print(f"{size:7} {'install, median of per-run ratios:':45} {pr['install_vs_floor']:>9} {pr['install_vs_naive']:>9}")
    if data.get("scaling"):
        print()
        print(f"{'installed':>9} {'install small':>14} {'list --json':>12} {'recover':>9} {'fill (in-process)':>18}")
        for level, r in data["scaling"].items():
            print(f"{level:>9} {fmt(r['install_small_s']):>14} {fmt(r['list_json_s']):>12} {fmt(r['recover_s']):>9} {r['fill_s']:>10.1f} s")
    s = data["startup"]
    print()
    print(
        f"python -c pass {fmt(s['python_startup_s'])}; recover (nothing pending) {fmt(s['recover_nothing_pending_s'])} "
        f"= {s['recover_vs_startup']}x start-up; heavy imports: {', '.join(s['recover_heavy_imports']) or 'none'}"
    )
    print()
    for name, t in data["targets"].items():
        print(f"target {name}: {t['value']} (limit {t['limit']}) {'MET' if t['met'] else 'MISSED'}")


def evaluate_targets(data: dict) -> dict:
    targets = {}
    sizes = data["sizes"]
    if "medium" in sizes:
        m = sizes["medium"]["ratios"]
        targets["medium_install_vs_floor"] = {"value": m["install_vs_floor"], "limit": TARGETS["medium_install_vs_floor_max"]}
        targets["medium_install_vs_naive"] = {"value": m["install_vs_naive"], "limit": TARGETS["medium_install_vs_naive_max"]}
    sc = data.get("scaling") or {}
    if "1" in sc and "1000" in sc:
        targets["scaling_1000_vs_1"] = {
            "value": ratio(sc["1000"]["install_small_s"], sc["1"]["install_small_s"]),
            "limit": TARGETS["scaling_1000_vs_1_max"],
        }
    if "large" in sizes:
        targets["large_peak_rss_mb"] = {"value": sizes["large"]["atomicplug_peak_rss_mb"]["install"], "limit": TARGETS["large_peak_rss_mb_max"]}
    for t in targets.values():
        t["met"] = t["value"] <= t["limit"]
    s = data["startup"]
    targets["recover_lazy_imports"] = {"value": s["recover_heavy_imports"], "limit": [], "met": not s["recover_heavy_imports"]}
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="small,medium,large", help="comma-separated: tiny, small, medium, large")
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure (default 5; 3 for large)")
    parser.add_argument("--scale", default="1,100,1000", help="installed-plugin counts for the scaling runs ('' to skip)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep packages here between runs (default: a temp folder)")
    args = parser.parse_args(argv)

    sizes = [s for s in args.sizes.split(",") if s]
    for s in sizes:
        if s not in workloads.SIZES:
            parser.error(f"unknown size {s!r} (choose from {', '.join(workloads.SIZES)})")
    levels = sorted({int(x) for x in args.scale.split(",") if x})
    temp = None
    if args.workdir is None:
        temp = tempfile.mkdtemp(prefix="atomicplug-bench-")
        workdir = Path(temp)
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def reps(size: str) -> int:
        if args.repeat is not None:
            return max(1, args.repeat)
        return 3 if size == "large" else 5

    started = time.perf_counter()
    precompile_atomicplug()
    try:
        key = workloads.keypair(workdir)
        data: dict = {"sizes": {}}
        for size in sizes:
            data["sizes"][size] = bench_size(size, reps(size), workdir, key, log)
        data["scaling"] = bench_scaling(levels, reps("small"), workdir, key, log) if levels else {}
        data["startup"] = bench_startup(reps("small"), workdir, key)
        data["targets"] = evaluate_targets(data)
        data["repeat"] = {s: reps(s) for s in sizes}
        data["machine"] = {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        }
        data["bench_wall_s"] = round(time.perf_counter() - started, 1)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    print_tables(data)
    print(json.dumps(data, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
