"""Extraction into the object store, side by side in one run (issue 14).

    python bench/objects.py                       # large (5000 files, 100 MB), 3 runs
    python bench/objects.py --sizes medium,large --repeat 5 --workdir /tmp/bench

For each size, the same signed zips, each contender a subprocess started after an untimed ``sync``:

- objects, empty store: ``extract_to_objects`` of version A into a new store, the backend
  compiled by ``SourceCompiler`` meanwhile, its pycs stored as objects, one ``store.sync()``;
- objects, 1 % changed: the same for version B (1 % of the files differ from A) into a
  store already holding A's objects, with A's sources' pycs known (as an upgrade would);
- folder (the path before the object store): ``safezip.extract`` into a fresh folder, without pycs
  and one ``sync_tree``;
- unzip: ``unzip -q`` into a fresh folder (no hashing, no sync), for scale.

Peak RSS is also measured for 50 files of 2 MiB (``--big``; the large plugin's bytes in a
hundredth of its entries): what extraction holds grows with the number of entries, never with
their size.

Times are wall-clock around each subprocess (Python start-up and imports included, ~0.1 s)
and, inside it, around the extraction alone. Peak RSS comes from GNU time in a second pass.
The last line printed is JSON with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
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

from atomicplug.testing import PluginSpec  # noqa: E402

PY = sys.executable
GNU_TIME = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None


def changed_versions(size: str, workdir: Path, key: workloads.KeyPair) -> tuple[Path, Path, int]:
    """Version A and version B of one plugin, B differing from A in 1 % of its files (cached; run.py uses the same)."""
    (a, b), changed = workloads.build_chain(size, workdir, key, 2)
    return a, b, changed


def few_big_files(count: int, mib: int, workdir: Path, key: workloads.KeyPair) -> Path:
    """``count`` files of ``mib`` MiB (random bytes); 50 x 2 is the large plugin's size in a hundredth of its entries."""
    rng = random.Random(11)
    files: dict[str, str | bytes] = {f"frontend/assets/big{i:02d}.bin": rng.randbytes(mib * 1024 * 1024) for i in range(count)}
    files["backend/__init__.py"] = "VALUE = 1\n"
    spec = PluginSpec(id="objects_bigfiles", version="1.0.0", files=files)
    cache_key = json.dumps(["objects-bigfiles", count, mib, key.public_path.read_text(), 1])
    return workloads._cached_build(spec, workdir / "packages" / "objects-bigfiles", key, cache_key)


# -- the child: one extraction, timed inside ------------------------------------------------
def child(args: argparse.Namespace) -> None:
    from atomicplug.objects import ObjectStore
    from atomicplug.package_record import PackageRecord
    from atomicplug.pycs import SourceCompiler
    from atomicplug.safezip import extract, extract_to_objects

    start = time.perf_counter()
    if args.mode == "folder":
        from atomicplug.fsutil import sync_tree

        target = Path(args.target)
        extract(args.zip, target, durable=False)  # the safe extractor into a folder (no pycs): the path before objects
        sync_tree(target)
        figures = {}
    else:
        known: set[str] = set()
        if args.known:  # the sources of the installed version, whose pycs the caller knows
            import zipfile

            with zipfile.ZipFile(args.known) as archive:
                record = PackageRecord.from_bytes(archive.read("RECORD"))
            known = {e.sha256 for e in record.files.values() if SourceCompiler.wants(e.path)}
        store = ObjectStore(args.target)
        pycs: dict[str, str] = {}
        sources = SourceCompiler(lambda source, pyc: pycs.__setitem__(source, store.put_bytes(pyc)), known)
        try:
            with open(args.zip, "rb") as handle:
                result = extract_to_objects(handle, store, sink=sources)
            sources.finish()
        finally:
            sources.close()
        store.sync()
        figures = {"inflated_bytes": result.inflated_bytes, "reused": result.reused, "compiled": len(pycs), "created": len(result.created)}
    figures["extract_s"] = round(time.perf_counter() - start, 4)
    print(json.dumps(figures))


def run_child(mode: str, zip_path: Path, target: Path, known: Path | None = None, rss: bool = False) -> dict:
    cmd = [PY, str(Path(__file__).resolve()), "--child", mode, "--zip", str(zip_path), "--target", str(target)]
    if known is not None:
        cmd += ["--known", str(known)]
    if rss:
        if GNU_TIME is None:
            return {"peak_rss_mb": None}
        with tempfile.NamedTemporaryFile("r", suffix=".rss") as out:
            subprocess.run([GNU_TIME, "-f", "%M", "-o", out.name, *cmd], check=True, capture_output=True)
            return {"peak_rss_mb": round(int(out.read().strip().splitlines()[-1]) / 1024, 1)}
    os.sync()
    start = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": round(wall, 4)}


def run_unzip(zip_path: Path, target: Path) -> dict:
    os.sync()
    start = time.perf_counter()
    subprocess.run(["unzip", "-q", str(zip_path), "-d", str(target)], check=True)
    return {"wall_s": round(time.perf_counter() - start, 4)}


def one_run(a: Path, b: Path, scratch: Path, rss: bool = False) -> dict[str, dict]:
    """Every contender once, from a clean scratch folder."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    got = {}
    got["objects_empty_store"] = run_child("objects", a, scratch / "objects-fresh", rss=rss)
    run_child("objects", a, scratch / "objects-upgrade")  # untimed: the store holds version A
    got["objects_1pct_changed"] = run_child("objects", b, scratch / "objects-upgrade", known=a, rss=rss)
    got["folder_today"] = run_child("folder", a, scratch / "folder", rss=rss)
    if not rss and shutil.which("unzip"):
        got["unzip"] = run_unzip(a, scratch / "unzip")
    shutil.rmtree(scratch)
    return got


def bench_size(size: str, repeat: int, workdir: Path, key: workloads.KeyPair, log) -> dict:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    a, b, changed = changed_versions(size, workdir, key)
    log(f"[{size}] packages ready in {time.perf_counter() - t0:.1f}s ({a.stat().st_size / 1e6:.1f} MB zip, {changed} files changed)")
    runs = []
    for i in range(repeat):
        runs.append(one_run(a, b, workdir / "scratch-objects"))
        log(f"[{size}] run {i + 1}/{repeat}: " + ", ".join(f"{k} {v['wall_s']:.3f}s" for k, v in runs[-1].items()))
    rss = one_run(a, b, workdir / "scratch-objects", rss=True)
    contenders = runs[0].keys()
    result: dict = {"files": workloads.SIZES[size][0], "changed_files": changed, "zip_bytes": a.stat().st_size}
    for name in contenders:
        walls = [r[name]["wall_s"] for r in runs]
        entry = {"wall_s": round(statistics.median(walls), 4), "samples": walls}
        if "extract_s" in runs[0][name]:
            entry["extract_s"] = round(statistics.median(r[name]["extract_s"] for r in runs), 4)
        for field in ("inflated_bytes", "reused", "compiled", "created"):
            if field in runs[0][name]:
                entry[field] = runs[0][name][field]
        if name in rss:
            entry.update(rss[name])
        result[name] = entry
    per_run = [r["objects_1pct_changed"]["extract_s"] / r["objects_empty_store"]["extract_s"] for r in runs]
    result["ratio_1pct_vs_empty_extract"] = round(statistics.median(per_run), 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="large")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--big", default="50x2", help="COUNTxMIB: the few-big-files package for peak RSS (default 50x2)")
    parser.add_argument("--child", choices=["objects", "folder"], help=argparse.SUPPRESS)
    parser.add_argument("--zip", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--known", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.mode = args.child
        child(args)
        return 0

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        scratch = args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="atomicplug-bench-objects-"))
        workdir = Path(scratch).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        key = workloads.keypair(workdir)
        data = {s: bench_size(s, max(1, args.repeat), workdir, key, log) for s in args.sizes.split(",") if s}
        count, mib = (int(x) for x in args.big.split("x"))
        big = few_big_files(count, mib, workdir, key)
        data["few_big_files"] = {"files": count, "mib_each": mib, **run_child("objects", big, workdir / "scratch-objects-big", rss=True)}
        shutil.rmtree(workdir / "scratch-objects-big")
    print()
    print(f"{'size':7} {'contender':22} {'wall':>9} {'extract':>9} {'inflated MB':>12} {'reused':>7} {'compiled':>9} {'peak RSS':>9}")
    for size, r in data.items():
        if size == "few_big_files":
            continue
        for name in ("objects_empty_store", "objects_1pct_changed", "folder_today", "unzip"):
            if name not in r:
                continue
            e = r[name]
            inflated = f"{e['inflated_bytes'] / 1e6:.1f}" if "inflated_bytes" in e else "-"
            print(
                f"{size:7} {name:22} {e['wall_s']:>8.3f}s {e.get('extract_s', float('nan')):>8.3f}s {inflated:>12} "
                f"{e.get('reused', '-'):>7} {e.get('compiled', '-'):>9} {e.get('peak_rss_mb', '-'):>6} MB"
            )
        print(f"{size:7} 1 % changed / empty store, extraction (median of per-run ratios): {r['ratio_1pct_vs_empty_extract']}")
    big = data["few_big_files"]
    print(f"peak RSS extracting {big['files']} files of {big['mib_each']} MiB into an empty store: {big['peak_rss_mb']} MB")
    print(json.dumps(data, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
