"""Kill the real CLI with SIGKILL at every mutating system call, for every one.

A counting run lists how many calls of each mutating syscall the CLI makes in
an operation (file writes, fsyncs, renames, symlinks, unlinks, mkdirs,
rmdirs, truncates: ours and SQLite's); then each (syscall, N) is a crash
point: strace holds the CLI on entry to its Nth call of SYSCALL
(``-e inject=SYSCALL:delay_enter=…:when=N``) and the CLI is SIGKILLed there,
before the call runs (:func:`kill_at`). After each kill ``recover`` must leave
the registry, the addon folders and the tables all old or all new, and the
operation must then complete.

strace runs with ``-f --seccomp-bpf``: the kernel then stops the CLI only at the
traced calls, where plain ptrace stops it at each of the thousands of calls
Python's start-up makes (about 1 s a run here, most of these suites' time).
seccomp needs ``-f``, so the CLI's children (the health gate's interpreter,
the compile worker) are traced too, each counting its own calls: the crash
points and the injections are the CLI's calls only, and the traces show it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from crash_harness import assert_clean, build_crash_packages, find_interruption, install_all
from atomicplug.fsutil import alive
from atomicplug.testing import crash_at
from atomicplug.installer import Installer
from atomicplug.testing import snapshot

pytestmark = pytest.mark.skipif(shutil.which("strace") is None and os.environ.get("CI") != "true", reason="strace not installed")

MUTATING = (
    "write,pwrite64,writev,pwritev,fsync,fdatasync,sync_file_range,syncfs,rename,renameat,renameat2,"
    "symlink,symlinkat,link,linkat,unlink,unlinkat,mkdir,mkdirat,rmdir,ftruncate,truncate"
)

#: scenario label → number of (syscall, N) crash points checked, for the terminal summary.
SYSCALL_CHECKED: dict[str, int] = {}

def _cli(home, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "atomicplug", "--config", str(home.config_path), *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


#: strace, stopping the process only at the traced calls (see the module's docstring).
STRACE = ["strace", "-f", "--seccomp-bpf", "-qq"]
#: How long strace holds the CLI at the call it is killed on: far longer than it takes to see it.
_HOLD = "100s"
_ENTRY = re.compile(r"^(\d+) +(\w+)\(")  # a call's first line (its end may follow as "<... resumed>")


def count_syscalls(home, args: list[str], trace: Path) -> Counter[str]:
    """How many calls of each mutating kind the CLI process itself makes running ``args``."""
    proc = subprocess.run(_strace(trace, f"execve,{MUTATING}", [], home, args), env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    cli, calls = _calls(trace.read_text())
    return Counter(call for pid, call, _ in calls if pid == cli and call != "execve")


def run_injected(home, args: list[str], syscall: str, when: str, action: str, trace: Path) -> subprocess.CompletedProcess[str]:
    """The CLI with strace's fault injection ``inject=SYSCALL:ACTION:when=WHEN`` (``error=ENOSPC``).

    strace counts each process's calls apart, so a child making as many calls
    of the kind would fail too: the trace shows that only the CLI's failed.
    """
    inject = ["-e", f"inject={syscall}:{action}:when={when}"]
    proc = subprocess.run(_strace(trace, f"execve,{syscall}", inject, home, args), env=_env(), capture_output=True, text=True, timeout=120)
    text = trace.read_text()
    cli, _ = _calls(text)
    failed_elsewhere = [line for line in text.splitlines() if "(INJECTED)" in line and not line.startswith(f"{cli} ")]
    assert not failed_elsewhere, f"the injection took a child of the CLI too: {failed_elsewhere}"
    return proc


def kill_at(home, args: list[str], syscall: str, n: int, trace: Path) -> None:
    """SIGKILL the CLI on entry to its Nth call of ``syscall``, which never runs.

    strace's own ``signal=KILL`` is not delivered under ``--seccomp-bpf`` (strace
    6.1 restarts the stopped CLI with it, which the kernel ignores there). So
    strace holds the CLI at that call (``delay_enter``), the CLI is sent SIGKILL
    while held, and strace is killed to let it go at once: with the signal
    pending, the kernel skips the call and the CLI dies. Its children die with
    strace (``--seccomp-bpf`` implies ``--kill-on-exit``), as in a crash of the
    whole service; they never write state.
    """
    inject = ["-e", f"inject={syscall}:delay_enter={_HOLD}:when={n}"]
    strace = subprocess.Popen(_strace(trace, f"execve,{syscall}", inject, home, args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            cli, calls = _calls(trace.read_text() if trace.exists() else "")
            if sum(pid == cli and call == syscall for pid, call, _ in calls) >= n:
                break  # its line is written on entry, and the CLI is held there
            assert strace.poll() is None, f"{syscall}#{n}: the CLI ended (exit {strace.returncode}) before that call"
            time.sleep(0.002)
        os.kill(int(cli), signal.SIGKILL)
    finally:
        strace.kill()
        strace.wait(timeout=120)
    deadline = time.monotonic() + 60
    while alive(int(cli)):  # its descriptors and its lock are released once it is a zombie
        assert time.monotonic() < deadline, f"process {cli} still runs a minute after SIGKILL"
        time.sleep(0.002)


def _strace(trace: Path, calls: str, inject: list[str], home, args: list[str]) -> list[str]:
    return [*STRACE, "-o", str(trace), "-e", f"trace={calls}", *inject, *_cli(home, args)]


def _calls(trace: str) -> tuple[str | None, list[tuple[str, str, str]]]:
    """The CLI's pid (its execve is the trace's first line) and (pid, call, line) of each call begun."""
    calls = [(match.group(1), match.group(2), line) for line in trace.splitlines() if (match := _ENTRY.match(line))]
    return (calls[0][0] if calls else None), calls


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
        home = homes[point]
        kill_at(home, args, call, n, home.root.parent / f"{home.root.name}.trace")

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(crash_one, points))
    for call, n in points:
        home = homes[(call, n)]
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
