"""Benchmark atomicplug against the floor and the naive installer, in one run (issues 8 and 14).

    python bench/run.py                                   # every part, every size (~40-60 min here)
    python bench/run.py --parts sizes,api --sizes small,medium --repeat 3
    python bench/run.py --parts disk --disk-size medium

Parts (``--parts``, default all): ``sizes`` (install, 1 %-changed upgrade,
upgrade, rollback, uninstall, recover through the CLI beside the floor and the
naive installer, and each command's peak memory), ``api`` (the small plugin
through the Python API in a warm process, bench/warm_api.py, with a cProfile
of where an install's time goes; then the medium one installed each time into
a new home, a first install, in a warm process), ``imports`` (``python -X importtime`` of a
CLI install of the small plugin, and ``recover``'s start-up), ``scaling``
(install, disable, enable, ``rollback --generation``, list, recover with 1, 100,
1000 plugins installed), ``history`` (a CLI install with 1 and 1000 finished
transactions behind the home) and ``disk`` (10 versions of the large plugin,
each 1 % different from the one before, against one).

Every contender is a subprocess working on the same signed zip:

- floor: ``unzip -q`` into a fresh folder + ``sha256sum`` + ``minisign -V``
  (the least any installer that verifies and unpacks must do);
- naive: bench/naive_installer.py (extractall, copytree, executescript, JSON);
- atomicplug: ``python -m atomicplug --config … install|rollback|uninstall|recover``.

"upgrade" is ``install`` of version 2.0.0 (every file different, one more
migration) and "upgrade_1pct" ``install`` of 1.0.1 (1 % of the files changed)
over 1.0.0; the CLI's ``upgrade`` needs a repository server and the
transaction is the same. Figures are medians over ``--repeat`` runs,
contenders interleaved within each run so that noise from other processes
hits all alike (the medians of the per-run ratios are given too). Peak memory
is measured in a second pass (bench/measure.py: the largest process by GNU
time, and the sampled sum over the process tree). The last line printed is
JSON with every figure, the targets and whether each is met.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import measure  # noqa: E402
import workloads  # noqa: E402
from measure import Failed, create_and_remove, file_creation_us, last_stdout, peak_rss, spread_new_folders, timed  # noqa: E402

from atomicplug.resident.address import SOCKET_ENV  # noqa: E402
from atomicplug.resident.client import MODE_ENV  # noqa: E402
from atomicplug.testing import make_home  # noqa: E402

PY = sys.executable
NAIVE = str(HERE / "naive_installer.py")
PYTHON_FLOOR = str(HERE / "python_floor.py")
WARM_API = str(HERE / "warm_api.py")
HEAVY_MODULES = ("sqlalchemy", "requests", "cryptography", "urllib3", "sqlparse", "psycopg2", "fastapi", "httpx")
OPS = ("install", "upgrade_1pct", "upgrade", "rollback", "uninstall")
PARTS = ("sizes", "api", "imports", "scaling", "history", "disk")
SCALING_OPS = ("install", "disable", "enable", "rollback_generation", "list", "recover", "install_new")

#: Issue 14's targets (the limits; a figure at or under its limit meets it).
TARGETS = {
    "large_upgrade_1pct_vs_install": 0.1,
    "large_upgrade_1pct_vs_naive_upgrade_1pct": 0.1,
    "medium_install_vs_floor": 1.5,
    "small_api_install_vs_floor": 3.0,
    "small_cli_install_ms": 100.0,
    "small_cli_install_ms_resident": 100.0,  # the same, with `atomicplug resident start` run before
    "small_cli_install_ms_terminal": 100.0,  # the same, typed at a terminal (the first starts the server)
    "medium_install_vs_floor_resident": 1.5,
    "large_upgrade_1pct_vs_install_resident": 0.1,
    "large_upgrade_1pct_vs_naive_upgrade_1pct_resident": 0.1,
    "large_install_peak_largest_process_mib": 64.0,  # GNU time, as the issue measures
    "large_install_peak_tree_pss_mib": 64.0,  # every process of the tree at one moment
    "peak_rss_large_vs_small": 1.3,  # "flat in plugin size"
    "scaling_1000_vs_1": 1.3,  # each of SCALING_OPS: "flat from 1 to 1000 installed"
    "disk_10_versions_vs_1": 1.2,
}


def ap(config: Path, *args: str) -> list[str]:
    return [PY, "-m", "atomicplug", "--config", str(config), *args]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def per_run(a: list[float], b: list[float]) -> float:
    """The median of the runs' own ratios a/b (samples of one run share its moment's load)."""
    return round(median([x / y for x, y in zip(a, b)]), 3)


#: Folders the bench is done with, removed only at its end (:func:`remove_set_aside`): a removal
#: slows the file creations near it for a minute or more (measure.spread_new_folders).
_set_aside: list[Path] = []


#: ``--after-removals N``: so many files are created and removed in each new folder of the
#: ``sizes`` part before a contender uses it, and in the ``imports`` part's home before each
#: timed install (0: a quiet disk). See :func:`new_folder`.
REMOVED_BEFORE = 0
_removals = 0  # how many times they were made: the JSON's file_creation.removals


def new_folder(scratch: Path, label: str, *, removed: int = 0) -> Path:
    """A new folder in ``scratch`` under a name never used there: with ``chattr +T`` on
    ``scratch`` (measure.spread_new_folders), the kernel places it by that name, away from
    the folders of earlier runs.

    With ``removed`` (:data:`REMOVED_BEFORE`, for the contenders of the ``sizes`` part, which
    are compared side by side), the disk there is the one the issue measured ("about 0.8 ms
    per file created"): that many files were just created and removed in it, so each file a
    contender creates there first passes over those recently deleted inodes, the same for
    every contender (measure.spread_new_folders says why that costs).
    """
    folder = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=scratch))
    if removed:
        removed_before(folder, removed)
    return folder


def removed_before(folder: Path, count: int) -> None:
    """Create ``count`` empty files in ``folder``, then remove them (and their folder), a second ago.

    The kernel counts an inode as recently deleted from the second after its removal on
    (``time_before32(dtime, now)``): created at once, the contender would get those inodes back.
    """
    global _removals
    _removals += 1
    place = folder / ".removed"
    place.mkdir()
    create_and_remove(place, count)
    time.sleep(1.1)


def set_aside(folder: Path) -> None:
    """Done with ``folder``: removed at the bench's end, after the last timing."""
    _set_aside.append(folder)


def remove_set_aside() -> None:
    while _set_aside:
        shutil.rmtree(_set_aside.pop(), ignore_errors=True)


def fresh_home(scratch: Path, label: str, key: workloads.KeyPair, *, removed: int = 0) -> Path:
    """A new home (:func:`new_folder`); its ``atomicplug.toml``."""
    return make_home(new_folder(scratch, label, removed=removed), keys=[key.public_path], lock_timeout=60)


# -- sizes: the CLI beside the floor and the naive installer -----------------------------
def run_floor(zip_path: Path, key: workloads.KeyPair, scratch: Path, *, unzip: bool = True) -> float:
    """unzip + sha256sum + minisign -V; without ``unzip``: what verifying the package alone costs."""
    target = new_folder(scratch, "floor", removed=REMOVED_BEFORE) if unzip else None
    total = 0.0
    for cmd in (
        ["unzip", "-q", str(zip_path), "-d", str(target)] if target is not None else None,
        ["sha256sum", str(zip_path)],
        ["minisign", "-V", "-q", "-m", str(zip_path), "-p", str(key.public_path)],
    ):
        if cmd:
            total += timed(cmd)
    if target is not None:
        set_aside(target)
    return total


def run_python_floor(zip_path: Path, key: workloads.KeyPair, scratch: Path) -> float:
    """bench/python_floor.py: what the floor does, in one Python interpreter (its start-up included)."""
    target = new_folder(scratch, "pyfloor", removed=REMOVED_BEFORE)
    elapsed = timed([PY, PYTHON_FLOOR, str(zip_path), str(key.public_path), str(target)])
    set_aside(target)
    return elapsed


def run_naive(w: workloads.Workload, scratch: Path) -> dict[str, float]:
    root = new_folder(scratch, "naive", removed=REMOVED_BEFORE)
    figures = {}
    steps = (
        ("install", "install", w.v1),
        ("upgrade_1pct", "upgrade", w.v1_1pct),
        ("upgrade", "upgrade", w.v2),
        ("rollback", "rollback", w.plugin_id),
        ("uninstall", "uninstall", w.plugin_id),
    )
    for op, command, target in steps:
        figures[op] = timed([PY, NAIVE, "--root", str(root), command, str(target)])
    set_aside(root)
    return figures


def atomicplug_steps(w: workloads.Workload) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return (
        ("install", ("install", str(w.v1))),
        ("upgrade_1pct", ("install", str(w.v1_1pct))),
        ("upgrade", ("install", str(w.v2))),
        ("rollback", ("rollback", w.plugin_id)),
        ("uninstall", ("uninstall", w.plugin_id)),
        ("recover", ("recover",)),
    )


def run_atomicplug(w: workloads.Workload, key: workloads.KeyPair, scratch: Path) -> dict[str, float]:
    config = fresh_home(scratch, "atomicplug", key, removed=REMOVED_BEFORE)
    figures = {op: timed(ap(config, *args)) for op, args in atomicplug_steps(w)}
    set_aside(config.parent)
    return figures


class Resident:
    """The bench's own resident server, on a socket of its own.

    Alive only while resident figures are taken (:meth:`running`): an idle server
    shares the interpreter's pages with every command, which would lower the PSS
    the memory pass measures. Commands use it only inside :meth:`used`. ``served``
    counts what it ran (so no resident figure is a one-shot one in disguise).
    """

    def __init__(self, workdir: Path) -> None:
        folder = workdir / "resident"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(mode=0o700, parents=True)
        os.environ[SOCKET_ENV] = str(folder / "resident.sock")
        os.environ[MODE_ENV] = "off"
        self.served = 0

    @contextmanager
    def running(self) -> Iterator[None]:
        from atomicplug.resident.client import query

        env = dict(os.environ, **{MODE_ENV: "on"})
        subprocess.run([PY, "-m", "atomicplug", "resident", "start", "--idle-timeout", "0"], env=env, check=True, stdout=subprocess.DEVNULL)
        # One untimed command first: the first child after the start faults in the server's pages.
        subprocess.run([PY, "-m", "atomicplug", "--config", os.devnull, "list"], env=env, capture_output=True)
        try:
            yield
        finally:
            self.served += int((query("status") or {}).get("served") or 0) - 1
            subprocess.run([PY, "-m", "atomicplug", "resident", "stop"], env=env, stdout=subprocess.DEVNULL)

    @contextmanager
    def used(self) -> Iterator[None]:
        """The ``atomicplug`` commands started inside go to the server (the client's side is timed too)."""
        os.environ[MODE_ENV] = "on"
        try:
            yield
        finally:
            os.environ[MODE_ENV] = "off"


def memory_pass(w: workloads.Workload, key: workloads.KeyPair, scratch: Path) -> dict[str, dict]:
    """Peak memory of each atomicplug command, in a pass of its own (the sampling costs CPU)."""
    config = fresh_home(scratch, "atomicplug-memory", key, removed=REMOVED_BEFORE)
    peaks = {op: peak_rss(ap(config, *args)) for op, args in atomicplug_steps(w)}
    set_aside(config.parent)
    return peaks


def bench_size(size: str, repeat: int, workdir: Path, key: workloads.KeyPair, resident_server: Resident, log) -> dict:
    t0 = time.perf_counter()
    w = workloads.build_workload(size, workdir, key)
    log(f"[{size}] packages ready in {time.perf_counter() - t0:.1f}s ({w.v1.stat().st_size / 1e6:.1f} MB zip)")
    scratch = workdir / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    ops = (*OPS, "recover")
    floor: list[float] = []
    python_floor: list[float] = []
    naive: dict[str, list[float]] = {op: [] for op in OPS}
    atom: dict[str, list[float]] = {op: [] for op in ops}
    resident: dict[str, list[float]] = {op: [] for op in ops}
    verify_1pct: list[float] = []  # sha256sum + minisign -V of the 1 % upgrade's zip: any verifying installer reads it all
    with resident_server.running():  # stopped before the memory pass
        for i in range(repeat):
            floor.append(run_floor(w.v1, key, scratch))
            python_floor.append(run_python_floor(w.v1, key, scratch))
            verify_1pct.append(run_floor(w.v1_1pct, key, scratch, unzip=False))
            for op, value in run_naive(w, scratch).items():
                naive[op].append(value)
            for op, value in run_atomicplug(w, key, scratch).items():
                atom[op].append(value)
            with resident_server.used():
                for op, value in run_atomicplug(w, key, scratch).items():
                    resident[op].append(value)
            log(
                f"[{size}] run {i + 1}/{repeat}: floor {floor[-1]:.3f}s naive {naive['install'][-1]:.3f}s "
                f"atomicplug {atom['install'][-1]:.3f}s (resident {resident['install'][-1]:.3f}s), "
                f"1 % upgrade {atom['upgrade_1pct'][-1]:.3f}s (resident {resident['upgrade_1pct'][-1]:.3f}s)"
            )
    peaks = memory_pass(w, key, scratch)
    result = {
        "files": w.files,
        "unpacked_bytes": w.total_bytes,
        "zip_bytes": w.v1.stat().st_size,
        "changed_files_1pct": w.changed_files,
        "floor_s": round(median(floor), 4),
        "python_floor_s": round(median(python_floor), 4),
        "verify_1pct_zip_s": round(median(verify_1pct), 4),
        "naive_s": {op: round(median(v), 4) for op, v in naive.items()},
        "atomicplug_s": {op: round(median(v), 4) for op, v in atom.items()},
        "atomicplug_resident_s": {op: round(median(v), 4) for op, v in resident.items()},
        "peak_memory_mib": peaks,
        "samples": {
            "floor": floor,
            "python_floor": python_floor,
            "verify_1pct_zip": verify_1pct,
            **{f"naive_{op}": v for op, v in naive.items()},
            **{f"atomicplug_{op}": v for op, v in atom.items()},
            **{f"atomicplug_resident_{op}": v for op, v in resident.items()},
        },
    }

    # Per-run ratios: the contenders of one run share the machine's momentary load, so
    # their ratio varies less than a ratio of medians taken over a drifting background.
    result["paired_ratios"] = {
        "install_vs_floor": per_run(atom["install"], floor),
        "python_floor_vs_floor": per_run(python_floor, floor),
        "install_vs_python_floor": per_run(atom["install"], python_floor),
        "resident_install_vs_python_floor": per_run(resident["install"], python_floor),
        "install_vs_naive": per_run(atom["install"], naive["install"]),
        "upgrade_1pct_vs_install": per_run(atom["upgrade_1pct"], atom["install"]),
        "upgrade_1pct_vs_naive_upgrade_1pct": per_run(atom["upgrade_1pct"], naive["upgrade_1pct"]),
        "resident_install_vs_floor": per_run(resident["install"], floor),
        "resident_upgrade_1pct_vs_install": per_run(resident["upgrade_1pct"], resident["install"]),
        "resident_upgrade_1pct_vs_naive_upgrade_1pct": per_run(resident["upgrade_1pct"], naive["upgrade_1pct"]),
        "resident_vs_one_shot_install": per_run(resident["install"], atom["install"]),
        "verify_1pct_zip_vs_install": per_run(verify_1pct, atom["install"]),
        "upgrade_1pct_vs_verify_1pct_zip": per_run(atom["upgrade_1pct"], verify_1pct),
    }
    a = result["atomicplug_s"]
    result["ratios"] = {
        "install_vs_floor": ratio(a["install"], result["floor_s"]),
        "upgrade_vs_floor": ratio(a["upgrade"], result["floor_s"]),
        "upgrade_1pct_vs_install": ratio(a["upgrade_1pct"], a["install"]),
        **{f"{op}_vs_naive": ratio(a[op], result["naive_s"][op]) for op in OPS},
    }
    return result


# -- api: installs in a warm process ----------------------------------------------------------
def bench_api(repeat: int, workdir: Path, key: workloads.KeyPair, log, first_install_size: str) -> dict:
    """bench/warm_api.py in a subprocess of its own (this process holds packages in memory).

    The small plugin installed again (its tree reused, and staged anew), then
    ``first_install_size``'s installed each time into a new home: a first install.
    """
    result: dict = {}
    runs = (
        ("reinstall", "small", []),
        ("fresh_tree", "small", ["--fresh-tree"]),
        (f"fresh_home_{first_install_size}", first_install_size, ["--fresh-home"]),
    )
    for label, size, extra in runs:
        w = workloads.build_workload(size, workdir, key)
        config = fresh_home(workdir / "scratch", "api", key)
        cmd = [PY, WARM_API, "--config", str(config), "--zip", str(w.v1), "--pubkey", str(key.public_path)]
        timed([*cmd, "--repeat", str(repeat), "--profile", str(max(5, repeat)), *extra])
        result[label] = json.loads(last_stdout().decode().strip().splitlines()[-1]) | {"size": size}
        set_aside(config.parent)
        r = result[label]
        log(f"[api] {label}: install {1000 * r['install_s']:.1f} ms, floor {1000 * r['floor_s']:.1f} ms ({r['install_vs_floor_per_run']}x per run)")
    return result


# -- imports: where a CLI install's start-up goes -------------------------------------------
def importtime(cmd: list[str]) -> dict:
    """``python -X importtime`` of ``cmd`` (a ``python -m atomicplug …`` command): total, and the biggest imports."""
    proc = subprocess.run([PY, "-X", "importtime", *cmd[1:]], capture_output=True, text=True, check=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        self_us, cumulative, name = line[len("import time:") :].split("|", 2)
        try:
            rows.append((int(self_us), int(cumulative), name.rstrip()))
        except ValueError:
            continue  # the header line
    top_level = [(c, n.strip()) for _, c, n in rows if not n.startswith("  ")]
    by_package: dict[str, int] = {}
    for self_us, _, name in rows:
        root = name.strip().split(".")[0]
        by_package[root] = by_package.get(root, 0) + self_us
    return {
        "total_ms": round(sum(s for s, _, _ in rows) / 1000, 1),
        "modules": len(rows),
        "top_level_cumulative_ms": [{"module": n, "ms": round(c / 1000, 1)} for c, n in sorted(top_level, reverse=True)[:12]],
        "by_package_self_ms": dict(sorted(((k, round(v / 1000, 1)) for k, v in by_package.items()), key=lambda kv: -kv[1])[:15]),
        "heavy": sorted({n.strip().split(".")[0] for _, _, n in rows} & set(HEAVY_MODULES)),
    }


def timed_after_removals(home: Path, cmd: list[str], *, stdin: int | None = None) -> float:
    """``cmd`` timed; with ``--after-removals``, right after that many files were created and removed
    in ``home`` (its new files, in folders beside them, then pass over those inodes)."""
    if REMOVED_BEFORE:
        removed_before(home, REMOVED_BEFORE)
    return timed(cmd, stdin=stdin)


@contextmanager
def at_a_terminal() -> Iterator[int]:
    """A pseudo-terminal for the commands' stdin, ``ATOMICPLUG_RESIDENT`` unset and a socket of
    its own: commands as typed in a shell, where the first one starts the resident server for
    the next (docs/design.md "The resident server"). Yields the terminal's descriptor."""
    import pty

    from atomicplug.resident.client import query

    folder = Path(tempfile.mkdtemp(prefix="ap-terminal-"))  # short: a socket's path has at most 107 bytes
    saved = {name: os.environ.pop(name, None) for name in (MODE_ENV, SOCKET_ENV)}
    os.environ[SOCKET_ENV] = str(folder / "resident.sock")
    ours, theirs = pty.openpty()
    try:
        yield theirs
    finally:
        if query("status") is not None:
            subprocess.run([PY, "-m", "atomicplug", "resident", "stop"], stdout=subprocess.DEVNULL)
        os.close(ours)
        os.close(theirs)
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)


def wait_for_resident(timeout: float = 30.0) -> bool:
    """Whether the server a command started answers within ``timeout`` (a person types slower)."""
    from atomicplug.resident.client import query

    deadline = time.monotonic() + timeout
    while query("status") is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def bench_imports(repeat: int, workdir: Path, key: workloads.KeyPair, resident_server: Resident) -> dict:
    from atomicplug.resident.client import query

    small = workloads.build_workload("small", workdir, key)
    config = fresh_home(workdir / "scratch", "imports", key)
    timed(ap(config, "recover"))  # creates the home
    bare, recover, install, resident = [], [], [], []
    with resident_server.running():
        for _ in range(max(5, repeat)):  # interleaved
            bare.append(timed([PY, "-c", "pass"]))
            recover.append(timed(ap(config, "recover")))
            install.append(timed_after_removals(config.parent, ap(config, "install", str(small.v1))))
            timed(ap(config, "uninstall", small.plugin_id))
            with resident_server.used():
                resident.append(timed_after_removals(config.parent, ap(config, "install", str(small.v1))))
                timed(ap(config, "uninstall", small.plugin_id))
    with at_a_terminal() as terminal:
        typed = []
        for _ in range(max(5, repeat)):
            typed.append(timed_after_removals(config.parent, ap(config, "install", str(small.v1)), stdin=terminal))
            if not wait_for_resident():  # the first install started it
                raise Failed("the first install typed at a terminal started no resident server")
            timed(ap(config, "uninstall", small.plugin_id), stdin=terminal)
        typed_served = int((query("status") or {}).get("served") or 0)
    result = {
        "python_startup_s": round(median(bare), 4),
        # typed at a terminal: the first install ran in its own process and started the server
        "cli_install_small_terminal_s": round(median(typed), 4),
        "cli_install_small_terminal_first_s": round(typed[0], 4),
        "cli_install_small_terminal_served": typed_served,  # commands its server ran: all but the first install
        "recover_nothing_pending_s": round(median(recover), 4),
        "cli_install_small_s": round(median(install), 4),
        "cli_install_small_resident_s": round(median(resident), 4),
        "recover_vs_startup": ratio(median(recover), median(bare)),
        "recover_imports": importtime(ap(config, "recover")),
        "install_imports": importtime(ap(config, "install", str(small.v1))),
    }
    set_aside(config.parent)
    return result


# -- scaling --------------------------------------------------------------------------------
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


def live_generation(config_path: Path) -> int:
    from atomicplug import generations
    from atomicplug.config import Config

    number = generations.current_number(Config.load(config_path))
    assert number is not None
    return number


def bench_scaling(levels: list[int], repeat: int, workdir: Path, key: workloads.KeyPair, log) -> dict:
    """One home per level, all filled first; then each run measures every level in turn.

    Interleaving matters: filling 1000 plugins takes a minute or more, and measuring
    the levels one after the other let the machine's drift over that minute decide
    the ratio (1.29×, 1.77×, 1.39× in three runs of the same code). Per level and
    run: install the small plugin, disable it, enable it, ``rollback --generation``
    to the generation where it was disabled (a switch of the whole view), list,
    recover (nothing pending), uninstall (untimed), then ``install_new``: a filler
    plugin no home had before, one per run (from the second run on, the small
    plugin's install shows a backend view its home already has: docs/design.md
    "Generations"; this one never does), uninstalled (untimed).
    """
    small = workloads.build_workload("small", workdir, key)
    t0 = time.perf_counter()
    fillers = workloads.build_fillers(max(levels) + repeat, workdir, key)
    fresh, fillers = fillers[max(levels) :], fillers[: max(levels)]
    log(f"[scaling] {len(fillers)} filler packages ready in {time.perf_counter() - t0:.1f}s")
    homes: dict[int, Path] = {}
    fill_times: dict[int, float] = {}
    for level in sorted(levels):
        homes[level] = fresh_home(workdir / "scratch", f"scaling-{level}", key)
        t0 = time.perf_counter()
        fill(homes[level], fillers[:level])
        fill_times[level] = time.perf_counter() - t0
        log(f"[scaling] home with {level} installed, filled in-process in {fill_times[level]:.1f}s")
    samples: dict[int, dict[str, list[float]]] = {level: {op: [] for op in SCALING_OPS} for level in levels}
    for i in range(repeat):
        for level, config in homes.items():
            got = samples[level]
            got["install"].append(timed(ap(config, "install", str(small.v1))))
            got["disable"].append(timed(ap(config, "disable", small.plugin_id)))
            disabled = live_generation(config)
            got["enable"].append(timed(ap(config, "enable", small.plugin_id)))
            got["rollback_generation"].append(timed(ap(config, "rollback", "--generation", str(disabled))))
            got["list"].append(timed(ap(config, "list", "--json")))
            rows = json.loads(last_stdout())
            if len(rows) != level + 1:
                raise Failed(f"list --json shows {len(rows)} plugins, expected {level + 1}")
            got["recover"].append(timed(ap(config, "recover")))
            timed(ap(config, "uninstall", small.plugin_id))
            got["install_new"].append(timed(ap(config, "install", str(fresh[i]))))
            timed(ap(config, "uninstall", workloads.filler_id(max(levels) + i)))
        log(f"[scaling] run {i + 1}/{repeat}: install " + ", ".join(f"{lv}: {samples[lv]['install'][-1]:.3f}s" for lv in homes))
    result: dict[str, dict] = {}
    for level, got in samples.items():
        result[str(level)] = {
            "fill_s": round(fill_times[level], 2),
            "fill_per_plugin_ms": round(1000 * fill_times[level] / max(1, level), 1),
            **{f"{op}_s": round(median(v), 4) for op, v in got.items()},
            "samples": got,
        }
    low, high = str(min(levels)), str(max(levels))
    result["vs_fewest"] = {
        op: per_run(samples[max(levels)][op], samples[min(levels)][op]) for op in SCALING_OPS
    }
    result["vs_fewest_levels"] = [int(low), int(high)]
    for config in homes.values():
        set_aside(config.parent)
    return result


# -- history --------------------------------------------------------------------------------
def bench_history(counts: list[int], repeat: int, workdir: Path, key: workloads.KeyPair, log) -> dict:
    """One home per count of finished transactions behind it, then a CLI install in each, in turn.

    Each home gets the small plugin installed and then disabled and enabled, one
    transaction each, in-process and with no ``gc`` between, until ``count``
    transactions are behind it: a panel's history since its last ``gc``. Each run
    then installs a filler plugin (one per run, new to every home) in each home and
    uninstalls it (untimed): through the CLI, and through the Python API in this
    warm process (how the billing backend calls it; a second filler per run).
    Every writer first looks for unfinished journals (docs/design.md "Journal
    records and crash points"): this shows whether that look, or anything else,
    grows with the history.
    """
    from atomicplug.config import Config
    from atomicplug.installer import Installer

    small = workloads.build_workload("small", workdir, key)
    fillers = workloads.build_fillers(2 * repeat, workdir, key)
    homes: dict[int, Path] = {}
    installers = {}
    for count in sorted(counts):
        homes[count] = fresh_home(workdir / "scratch", f"history-{count}", key)
        installer = installers[count] = Installer(Config.load(homes[count]))
        t0 = time.perf_counter()
        installer.install_file(small.v1)
        for done in range(1, count):
            (installer.disable if done % 2 else installer.enable)(small.plugin_id)
        log(f"[history] home with {count} transactions behind it, made in-process in {time.perf_counter() - t0:.1f}s")
    samples: dict[int, list[float]] = {count: [] for count in homes}
    api: dict[int, list[float]] = {count: [] for count in homes}
    for i in range(repeat):
        for count, config in homes.items():
            samples[count].append(timed(ap(config, "install", str(fillers[i]))))
            timed(ap(config, "uninstall", workloads.filler_id(i)))
            os.sync()  # as before each CLI command (measure.timed)
            t0 = time.perf_counter()
            installers[count].install_file(fillers[repeat + i])
            api[count].append(time.perf_counter() - t0)
            installers[count].uninstall(workloads.filler_id(repeat + i))
        log(f"[history] run {i + 1}/{repeat}: install " + ", ".join(f"{c}: {samples[c][-1]:.3f}s (API {api[c][-1]:.3f}s)" for c in homes))
    low, high = min(counts), max(counts)
    result: dict[str, object] = {
        str(count): {"install_s": round(median(got), 4), "api_install_s": round(median(api[count]), 4), "samples": got, "api_samples": api[count]}
        for count, got in samples.items()
    }
    result["vs_fewest"] = per_run(samples[high], samples[low])
    result["api_vs_fewest"] = per_run(api[high], api[low])
    result["vs_fewest_counts"] = [low, high]
    for config in homes.values():
        set_aside(config.parent)
    return result


# -- disk -----------------------------------------------------------------------------------
def bench_disk(size: str, versions: int, workdir: Path, key: workloads.KeyPair, log) -> dict:
    """du of <home> after installing ``versions`` versions (each 1 % different from the one before), no gc, against one."""
    from atomicplug.config import Config
    from atomicplug.installer import Installer

    t0 = time.perf_counter()
    zips, changed = workloads.build_chain(size, workdir, key, versions)
    log(f"[disk] {versions} versions of {size} ready in {time.perf_counter() - t0:.1f}s ({changed} files changed per step)")
    homes = {}
    for label, chain in (("one_version", zips[:1]), ("all_versions", zips)):
        config = fresh_home(workdir / "scratch", f"disk-{label}", key)
        installer = Installer(Config.load(config))
        for z in chain:
            installer.install_file(z)
        homes[label] = measure.disk_used(installer.config.home)
        set_aside(config.parent)
    one, many = homes["one_version"]["total"], homes["all_versions"]["total"]
    log(f"[disk] one version {one / 2**20:.1f} MiB, {versions} versions {many / 2**20:.1f} MiB")
    return {"size": size, "versions": versions, "changed_files_per_step": changed, "du_bytes": homes, "ratio": ratio(many, one)}


# -- report ---------------------------------------------------------------------------------
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


def machine_load() -> dict:
    one, five, fifteen = os.getloadavg()
    return {"loadavg_1_5_15": [round(one, 2), round(five, 2), round(fifteen, 2)]}


def print_tables(data: dict) -> None:
    if data.get("sizes"):
        print()
        print(f"{'size':7} {'op':13} {'floor':>9} {'naive':>9} {'atomicplug':>11} {'ap/floor':>9} {'ap/naive':>9} {'peak MiB: tree PSS / RSS / largest':>36}")
        for size, r in data["sizes"].items():
            for op in (*OPS, "recover"):
                a = r["atomicplug_s"][op]
                n = r["naive_s"].get(op)
                fl = r["floor_s"] if op == "install" else None
                m = r["peak_memory_mib"][op]
                print(
                    f"{size:7} {op:13} {fmt(fl) if fl else '-':>9} {fmt(n) if n else '-':>9} {fmt(a):>11} "
                    f"{ratio(a, fl) if fl else '-':>9} {ratio(a, n) if n else '-':>9} {m['tree_pss_mib']:>14} / {m['tree_rss_mib']} / {m['largest_process_mib']}"
                )
            rs = r["atomicplug_resident_s"]
            print(f"{size:7} through the resident server: " + ", ".join(f"{op} {fmt(rs[op])}" for op in (*OPS, "recover")))
            print(f"{size:7} the Python floor (bench/python_floor.py: sha256, minisign's check, ZipFile.extractall): {fmt(r['python_floor_s'])}")
            print(f"{size:7} verifying the 1 % upgrade's zip alone (sha256sum + minisign -V): {fmt(r['verify_1pct_zip_s'])}")
            pr = r["paired_ratios"]
            print(f"{size:7} median of per-run ratios: " + ", ".join(f"{k} {v}" for k, v in pr.items()))
    if data.get("api"):
        print()
        for label, r in data["api"].items():
            print(
                f"API, warm process, {r['size']} ({label}): install {fmt(r['install_s'])}, uninstall {fmt(r['uninstall_s'])}, "
                f"floor {fmt(r['floor_s'])}: {r['install_vs_floor']}x (per run {r['install_vs_floor_per_run']}x)"
            )
        profile = data["api"]["reinstall"].get("profile")
        if profile:
            print(f"where a warm install's time goes (cProfile, ms per install over {profile['installs']} installs, cumulative):")
            for row in profile["stages"]:
                print(f"  {row['stage']:58} {row['ms']:>8.2f} ms  ({row['calls']} calls)")
    if data.get("imports"):
        s = data["imports"]
        print()
        print(
            f"python -c pass {fmt(s['python_startup_s'])}; recover (nothing pending) {fmt(s['recover_nothing_pending_s'])}; "
            f"CLI install small {fmt(s['cli_install_small_s'])}; through the resident server {fmt(s['cli_install_small_resident_s'])}; "
            f"typed at a terminal {fmt(s['cli_install_small_terminal_s'])} (the first {fmt(s['cli_install_small_terminal_first_s'])})"
        )
        for name in ("recover_imports", "install_imports"):
            imp = s[name]
            top = ", ".join(f"{t['module']} {t['ms']}" for t in imp["top_level_cumulative_ms"][:6])
            print(f"  {name}: {imp['total_ms']} ms in {imp['modules']} modules; heavy: {', '.join(imp['heavy']) or 'none'}; top: {top}")
    if data.get("scaling"):
        sc = data["scaling"]
        print()
        print(f"{'installed':>9} " + " ".join(f"{op:>20}" for op in SCALING_OPS) + f" {'fill':>8}")
        for level, r in sc.items():
            if level.isdigit():
                print(f"{level:>9} " + " ".join(f"{fmt(r[op + '_s']):>20}" for op in SCALING_OPS) + f" {r['fill_s']:>7.1f}s")
        print(f"{'ratio':>9} " + " ".join(f"{sc['vs_fewest'][op]:>20}" for op in SCALING_OPS))
    if data.get("history"):
        h = data["history"]
        low, high = h["vs_fewest_counts"]
        print()
        print(
            f"CLI install with {low} transaction(s) behind the home {fmt(h[str(low)]['install_s'])}, "
            f"with {high} {fmt(h[str(high)]['install_s'])}: {h['vs_fewest']}x; through the Python API "
            f"{fmt(h[str(low)]['api_install_s'])} and {fmt(h[str(high)]['api_install_s'])}: {h['api_vs_fewest']}x"
        )
    if data.get("disk"):
        d = data["disk"]
        print()
        print(
            f"disk, {d['versions']} versions of {d['size']} (1 % changed each): {d['du_bytes']['all_versions']['total'] / 2**20:.1f} MiB "
            f"vs one version {d['du_bytes']['one_version']['total'] / 2**20:.1f} MiB: {d['ratio']}x"
        )
    print()
    for name, t in data["targets"].items():
        print(f"target {name}: {t['value']} (limit {t['limit']}) {'MET' if t['met'] else 'MISSED'}")


def evaluate_targets(data: dict) -> dict:
    targets: dict[str, dict] = {}

    def add(name: str, value: float, limit_name: str | None = None) -> None:
        limit = TARGETS[limit_name or name]
        targets[name] = {"value": value, "limit": limit, "met": value <= limit}

    sizes = data.get("sizes") or {}
    if "large" in sizes:
        pr = sizes["large"]["paired_ratios"]
        add("large_upgrade_1pct_vs_install", pr["upgrade_1pct_vs_install"])
        add("large_upgrade_1pct_vs_naive_upgrade_1pct", pr["upgrade_1pct_vs_naive_upgrade_1pct"])
        add("large_upgrade_1pct_vs_install_resident", pr["resident_upgrade_1pct_vs_install"])
        add("large_upgrade_1pct_vs_naive_upgrade_1pct_resident", pr["resident_upgrade_1pct_vs_naive_upgrade_1pct"])
        m = sizes["large"]["peak_memory_mib"]["install"]
        if m["largest_process_mib"] is not None:
            add("large_install_peak_largest_process_mib", m["largest_process_mib"])
        add("large_install_peak_tree_pss_mib", m["tree_pss_mib"])
        if "small" in sizes:
            add("peak_rss_large_vs_small", ratio(m["tree_pss_mib"], sizes["small"]["peak_memory_mib"]["install"]["tree_pss_mib"]))
    if "medium" in sizes:
        add("medium_install_vs_floor", sizes["medium"]["paired_ratios"]["install_vs_floor"])
        add("medium_install_vs_floor_resident", sizes["medium"]["paired_ratios"]["resident_install_vs_floor"])
    if data.get("api"):
        add("small_api_install_vs_floor", data["api"]["reinstall"]["install_vs_floor_per_run"])
        if "fresh_home_medium" in data["api"]:
            add("medium_api_install_vs_floor", data["api"]["fresh_home_medium"]["install_vs_floor_per_run"], "medium_install_vs_floor")
    if data.get("imports"):
        add("small_cli_install_ms", round(1000 * data["imports"]["cli_install_small_s"], 1))
        add("small_cli_install_ms_resident", round(1000 * data["imports"]["cli_install_small_resident_s"], 1))
        add("small_cli_install_ms_terminal", round(1000 * data["imports"]["cli_install_small_terminal_s"], 1))
    elif "small" in sizes:
        add("small_cli_install_ms", round(1000 * sizes["small"]["atomicplug_s"]["install"], 1))
    sc = data.get("scaling") or {}
    if sc.get("vs_fewest_levels") == [1, 1000]:
        for op, value in sc["vs_fewest"].items():
            add(f"scaling_1000_vs_1_{op}", value, "scaling_1000_vs_1")
    if data.get("disk") and data["disk"]["size"] == "large":
        add("disk_10_versions_vs_1", data["disk"]["ratio"])
    if data.get("imports"):
        heavy = data["imports"]["recover_imports"]["heavy"]
        targets["recover_lazy_imports"] = {"value": heavy, "limit": [], "met": not heavy}
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from: {', '.join(PARTS)}")
    parser.add_argument("--sizes", default="small,medium,large", help="comma-separated: tiny, small, medium, large")
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure (default 5; 3 for large)")
    parser.add_argument("--scale", default="1,100,1000", help="installed-plugin counts for the scaling part")
    parser.add_argument("--history", default="1,1000", help="finished-transaction counts for the history part")
    parser.add_argument("--disk-size", default="large", help="the plugin whose versions the disk part installs")
    parser.add_argument("--disk-versions", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=None, help="keep packages here between runs (default: a temp folder)")
    parser.add_argument(
        "--after-removals", type=int, default=0, metavar="N",
        help="sizes part: create and remove N files in each contender's new folder first; imports part: in the home before each "
        "timed install (the issue's disk: ~6000 for ~0.8 ms a file)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    global REMOVED_BEFORE
    REMOVED_BEFORE = max(0, args.after_removals)

    parts = [p for p in args.parts.split(",") if p]
    for part in parts:
        if part not in PARTS:
            parser.error(f"unknown part {part!r} (choose from {', '.join(PARTS)})")
    sizes = [s for s in args.sizes.split(",") if s]
    for s in (*sizes, args.disk_size):
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
        print(f"{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}: {message}", file=sys.stderr, flush=True)

    def reps(size: str) -> int:
        if args.repeat is not None:
            return max(1, args.repeat)
        return 3 if size == "large" else 5

    started = time.perf_counter()
    precompile_atomicplug()
    data: dict = {"parts": parts, "load": {"start": machine_load()}}
    scratch = workdir / "scratch"
    scratch.mkdir(exist_ok=True)
    data["file_creation"] = {
        "spread_new_folders": spread_new_folders(scratch), "start_us": file_creation_us(scratch), "removed_before": REMOVED_BEFORE,
    }  # fmt: skip
    log(f"creating a file in a new folder: {data['file_creation']['start_us']:.0f} µs (new folders spread: {data['file_creation']['spread_new_folders']})")
    try:
        key = workloads.keypair(workdir)
        resident = Resident(workdir)
        if "sizes" in parts:
            data["sizes"] = {size: bench_size(size, reps(size), workdir, key, resident, log) for size in sizes}
        if "api" in parts:
            first_install = "medium" if "medium" in sizes else min(sizes, key=list(workloads.SIZES).index)
            data["api"] = bench_api(2 * reps("small"), workdir, key, log, first_install)
        if "imports" in parts:
            data["imports"] = bench_imports(reps("small"), workdir, key, resident)
        if "scaling" in parts and levels:
            data["scaling"] = bench_scaling(levels, reps("small"), workdir, key, log)
        if "history" in parts:
            data["history"] = bench_history(sorted({int(x) for x in args.history.split(",") if x}), reps("small"), workdir, key, log)
        if "disk" in parts:
            data["disk"] = bench_disk(args.disk_size, args.disk_versions, workdir, key, log)
        data["targets"] = evaluate_targets(data)
        data["repeat"] = {s: reps(s) for s in sizes}
        data["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
        data["load"]["end"] = machine_load()
        data["file_creation"]["end_us"] = file_creation_us(scratch)
        data["file_creation"]["removals"] = _removals
        data["bench_wall_s"] = round(time.perf_counter() - started, 1)
        data["resident_commands_served"] = resident.served
    finally:
        remove_set_aside()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    print_tables(data)
    print(json.dumps(data, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
