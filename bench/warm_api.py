"""A plugin through the Python API in a warm process, as the billing backend calls it.

    python bench/warm_api.py --config atomicplug.toml --zip small.zip --pubkey publisher.pub --repeat 10

One ``Installer``; one untimed install/uninstall first (imports, caches); then
``--repeat`` runs, each: the floor (``unzip -q`` + ``sha256sum`` + ``minisign
-V``, three subprocesses) and ``install_file`` then ``uninstall``, timed with
``perf_counter`` in this process, so the floor and atomicplug share the moment's
load. Then ``--profile`` more installs under cProfile: the time per install of
each stage of the transaction (cumulative, profiler overhead included) and the
functions that spend it. Prints one line of JSON.

The store tree of the package is staged by the first install and reused by the
next ones (uninstall leaves it to gc), as it is for a plugin that is installed,
removed and installed again; ``--fresh-tree`` deletes it before each install
(the cost of staging a new 20-file tree). ``--fresh-home`` installs each time
into a new home beside ``--config``'s (which takes the untimed first install):
nothing of the package is on disk, so every object and pyc is written, as in a
first install. The floor unpacks into that run's folder (beside the home), and
every run's folder is removed at the end, so that no removal runs between the
timings (a removal slows the file creations after it: bench/README.md, "stop 31,
file creation, and the harness's own removals").
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from measure import spread_new_folders  # bench/, this script's folder

#: (label, module path suffix, function name): the stages of a warm install, in order.
STAGES = (
    ("intake: copy, sha256 + BLAKE2b, signature, metadata", "atomicplug/intake.py", "take_in_file"),
    ("writer lock", "atomicplug/lock.py", "writer_lock"),
    ("pending-journal scan", "atomicplug/installer.py", "_recover_locked"),
    ("plan", "atomicplug/stages/plan.py", "plan_install"),
    ("journal: create + begin", "atomicplug/journal/writer.py", "begin"),
    ("journal: each append (fsync'd)", "atomicplug/journal/writer.py", "append"),
    ("stage the tree (objects, pycs, links, syncfs)", "atomicplug/transaction.py", "_stage_trees"),
    ("build the generation (links, registry, syncfs, rename)", "atomicplug/generations.py", "build"),
    ("health gate: take the idle interpreter or start one (at begin)", "atomicplug/stages/health.py", "prestart"),
    ("database: plan-time checks", "atomicplug/stages/migrate.py", "check"),
    ("health gate: wait for the verdict", "atomicplug/stages/health.py", "_errors_of"),
    ("frontend gate", "atomicplug/frontend/gate.py", "check"),
    ("database: migrations, ledger, COMMIT", "atomicplug/stages/migrate.py", "run"),
    ("switch the generation", "atomicplug/generations.py", "switch"),
    ("frontend index", "atomicplug/stages/register.py", "write_frontend_index"),
    ("health gate: its end, and the idle interpreter for the next one", "atomicplug/stages/health.py", "release"),
    ("history line", "atomicplug/history.py", "append_history"),
    ("whole install_file", "atomicplug/installer.py", "install_file"),
)
#: System calls and waits worth seeing on their own.
PRIMITIVES = (
    ("fsync (files)", "~", "<built-in method posix.fsync>"),
    ("syncfs", "~", "<built-in method posix.syncfs>"),
    ("fork/exec", "~", "<built-in method _posixsubprocess.fork_exec>"),
    ("waiting on a child (poll)", "~", "<method 'poll' of 'select.poll' objects>"),
    ("sqlite3 execute", "~", "<method 'execute' of 'sqlite3.Cursor' objects>"),
    ("sqlite3 commit", "~", "<method 'commit' of 'sqlite3.Connection' objects>"),
)


def floor(zip_path: Path, pubkey: Path, target: Path) -> float:
    """unzip into ``target`` (new, kept until the end: a removal here would slow the next file
    creations near it: bench/README.md, stop 31) + sha256sum + minisign -V."""
    total = 0.0
    for cmd in (
        ["unzip", "-q", str(zip_path), "-d", str(target)],
        ["sha256sum", str(zip_path)],
        ["minisign", "-V", "-q", "-m", str(zip_path), "-p", str(pubkey)],
    ):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        total += time.perf_counter() - start
    return total


def stage_table(stats: pstats.Stats, runs: int) -> list[dict[str, object]]:
    """Milliseconds per install of each STAGES/PRIMITIVES entry (cumulative; calls per install)."""
    rows = []
    raw = stats.stats  # type: ignore[attr-defined]
    for label, suffix, name in (*STAGES, *PRIMITIVES):
        calls, cumulative = 0, 0.0
        for (filename, _line, func), (_cc, nc, _tt, ct, _callers) in raw.items():
            if func == name and (filename == suffix or filename.endswith(suffix)):
                calls += nc
                cumulative += ct
        rows.append({"stage": label, "ms": round(1000 * cumulative / runs, 2), "calls": round(calls / runs, 1)})
    return rows


def top_functions(stats: pstats.Stats, runs: int, count: int = 15) -> list[dict[str, object]]:
    raw = stats.stats  # type: ignore[attr-defined]
    ranked = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:count]
    return [
        {"function": f"{Path(f).name}:{line}({func})" if f != "~" else func, "self_ms": round(1000 * v[2] / runs, 2), "calls": round(v[1] / runs, 1)}
        for (f, line, func), v in ranked
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--zip", type=Path, required=True)
    parser.add_argument("--pubkey", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--profile", type=int, default=10, help="installs under cProfile (0: none)")
    parser.add_argument("--fresh-tree", action="store_true")
    parser.add_argument("--fresh-home", action="store_true", help="each install into a new home: a first install")
    args = parser.parse_args(argv)

    from atomicplug.config import Config
    from atomicplug.installer import Installer
    from atomicplug.registry import Registry
    from atomicplug.testing import make_home

    installer = Installer(Config.load(args.config))
    scratch = args.config.parent / "scratch"
    scratch.mkdir(exist_ok=True)
    spread_new_folders(scratch)  # each run's folder away from the others (and from earlier removals)
    homes = itertools.count()

    def next_run() -> Path:
        """Where this run's floor unpacks; with --fresh-home, a new home there for the install."""
        nonlocal installer
        root = scratch / f"run-{next(homes)}"
        if not args.fresh_home:
            root.mkdir()
            return root
        installer = Installer(Config.load(make_home(root / "home", keys=[args.pubkey], lock_timeout=60)))
        return root

    def install() -> None:
        if args.fresh_tree:
            shutil.rmtree(installer.config.store_dir, ignore_errors=True)
        installer.install_file(args.zip)

    def plugin_id() -> str:
        return next(iter(Registry.load(installer.config.registry_path).plugins))

    install()
    pid = plugin_id()
    installer.uninstall(pid)
    floors, installs, uninstalls = [], [], []
    for _ in range(args.repeat):
        floors.append(floor(args.zip, args.pubkey, next_run() / "floor"))
        start = time.perf_counter()
        install()
        installs.append(time.perf_counter() - start)
        start = time.perf_counter()
        installer.uninstall(pid)
        uninstalls.append(time.perf_counter() - start)
    result: dict[str, object] = {
        "floor_s": round(statistics.median(floors), 4),
        "install_s": round(statistics.median(installs), 4),
        "uninstall_s": round(statistics.median(uninstalls), 4),
        "install_vs_floor": round(statistics.median(installs) / statistics.median(floors), 3),
        "install_vs_floor_per_run": round(statistics.median(i / f for i, f in zip(installs, floors)), 3),
        "samples": {"floor": floors, "install": installs, "uninstall": uninstalls},
    }
    if args.profile:
        profiler = cProfile.Profile()
        for _ in range(args.profile):
            next_run()
            profiler.enable()
            install()
            profiler.disable()
            installer.uninstall(pid)
        stats = pstats.Stats(profiler)
        result["profile"] = {"installs": args.profile, "stages": stage_table(stats, args.profile), "top_self": top_functions(stats, args.profile)}
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
