"""Kill the real CLI with SIGKILL at every mutating system call, for every one.

strace's fault injection (``-e inject=SYSCALL:signal=KILL:when=N``) kills the
process on entry to the Nth call of SYSCALL. A counting run lists how many
calls of each mutating syscall an operation makes (file writes, fsyncs,
renames, symlinks, unlinks, mkdirs, rmdirs, truncates: ours and SQLite's);
then each (syscall, N) is a crash point. Only the CLI process itself is traced
(no ``-f``): strace counts per process, and the health gate's child interpreter
only imports, it never writes state. After each kill ``recover`` must
leave the registry, the addon folders and the tables all old or all new, and
the operation must then complete.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from crash_harness import assert_clean, build_crash_packages, find_interruption, install_all
from atomicplug.testing import crash_at
from atomicplug.installer import Installer
from atomicplug.testing import snapshot

pytestmark = pytest.mark.skipif(shutil.which("strace") is None and os.environ.get("CI") != "true", reason="strace not installed")

MUTATING = (
    "write,pwrite64,writev,pwritev,fsync,fdatasync,sync_file_range,syncfs,rename,renameat,renameat2,"
    "symlink,symlinkat,link,linkat,unlink,unlinkat,mkdir,mkdirat,rmdir,ftruncate,truncate"
)
_CALL = re.compile(r"^(?:\d+\s+)?(\w+)\(")

#: scenario label → number of (syscall, N) crash points checked, for the terminal summary.
SYSCALL_CHECKED: dict[str, int] = {}

def _cli(home, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "atomicplug", "--config", str(home.config_path), *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


def count_syscalls(home, args: list[str], trace: Path) -> Counter[str]:
    proc = subprocess.run(
        ["strace", "-qq", "-o", str(trace), "-e", f"trace={MUTATING}", *_cli(home, args)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    counts: Counter[str] = Counter()
    for line in trace.read_text().splitlines():
        match = _CALL.match(line)
        if match:
            counts[match.group(1)] += 1
    return counts


def run_injected(home, args: list[str], syscall: str, when: str, action: str) -> subprocess.CompletedProcess[str]:
    """The CLI with strace's fault injection ``inject=SYSCALL:ACTION:when=WHEN`` (``signal=KILL``, ``error=ENOSPC``)."""
    return subprocess.run(
        ["strace", "-qq", "-o", "/dev/null", "-e", f"trace={syscall}", "-e", f"inject={syscall}:{action}:when={when}", *_cli(home, args)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def kill_at(home, args: list[str], syscall: str, n: int) -> int:
    return run_injected(home, args, syscall, str(n), "signal=KILL").returncode


@pytest.fixture
def packages(home_factory):
    return build_crash_packages(home_factory(name="builder"))


#: label → (plugins installed first, CLI arguments, the same operation through the API)
SCENARIOS = {
    "install": ([], lambda p: ["install", str(p["shop1"])], lambda i, p: i.install_file(p["shop1"])),
    "upgrade": (["shop1"], lambda p: ["install", str(p["shop2"])], lambda i, p: i.install_file(p["shop2"])),
    "uninstall": (["shop1"], lambda p: ["uninstall", "shop"], lambda i, p: i.uninstall("shop")),
    "rollback": (["shop1", "shop2"], lambda p: ["rollback", "shop"], lambda i, p: i.rollback("shop")),
}


def _enumerate(label, setup, args, complete, home_factory, back_allowed=True) -> int:
    """Kill ``args`` at every (syscall, N); ``complete(installer)`` finishes it when recovery went back."""
    reference = home_factory(name=f"{label}-reference")
    setup(reference)
    old = snapshot(reference.config)
    counts = count_syscalls(reference, args, reference.root / "trace")
    new = snapshot(reference.config)
    assert old != new
    points = [(call, n) for call, total in sorted(counts.items()) for n in range(1, total + 1)]
    homes = {}
    for call, n in points:  # setup runs in this process, one after another
        homes[(call, n)] = home = home_factory(name=f"{label}-{call}-{n}")
        setup(home)

    def crash_one(point):
        call, n = point
        return point, kill_at(homes[point], args, call, n)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(crash_one, points))
    for (call, n), code in results:
        home = homes[(call, n)]
        assert code in (-signal.SIGKILL, 128 + signal.SIGKILL, 137), f"{label}: {call}#{n} did not kill (exit {code})"
        Installer(home.config).recover()
        state = snapshot(home.config)
        assert state in ((old, new) if back_allowed else (new,)), f"{label}: killed at {call}#{n}: state {state}"
        assert_clean(home.config)
        if state == old:
            complete(Installer(home.config))
        assert snapshot(home.config) == new, f"{label}: after {call}#{n} the operation did not complete"
        shutil.rmtree(home.root)
    SYSCALL_CHECKED[label] = len(points)
    return len(points)


@pytest.mark.slow
@pytest.mark.parametrize("label", sorted(SCENARIOS))
def test_sigkill_at_every_mutating_syscall(label, packages, home_factory):
    prior, args, api = SCENARIOS[label]
    complete = lambda installer: api(installer, packages)  # noqa: E731
    assert _enumerate(label, install_all(prior, packages), args(packages), complete, home_factory) > 20


@pytest.mark.slow
def test_sigkill_at_every_mutating_syscall_of_recover(packages, home_factory):
    make_home = lambda name: home_factory(name=name)  # noqa: E731
    point = find_interruption(make_home, install_all(["shop1"], packages), lambda h: Installer(h.config).install_file(packages["shop2"]), committed=True)

    def setup(home):
        Installer(home.config).install_file(packages["shop1"])
        assert crash_at(lambda: Installer(home.config).install_file(packages["shop2"]), point)

    # old = committed-but-unfinished (as a crash left it); new = rolled forward.
    assert _enumerate("recover", setup, ["recover"], lambda installer: installer.recover(), home_factory, back_allowed=False) > 5
