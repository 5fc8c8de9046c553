"""Real system calls failing under the real CLI: ENOSPC and EIO at every mutating one.

strace's fault injection (``-e inject=SYSCALL:error=ENOSPC:when=N``) makes the
Nth call of SYSCALL fail without running it; ``when=N+`` fails that call and
every later one of its kind (EIO: a disk that stays broken, so rolling back
fails too). For one install and one upgrade, every mutating call the CLI makes
(counted by test_crash_syscalls.py's :func:`count_syscalls`: ours and
SQLite's) fails with ENOSPC once, and with EIO from then on — once only for the
write calls, whose lasting failure would also swallow the error line itself
(strace fails every write, stderr's too, where a real broken disk would not). Each time: exit 1 with exactly one line on
stderr and no traceback (or exit 0 when the failure did not matter, the state
then new); ``recover`` then leaves the state old or new, and the operation
completes. Only the CLI's own calls fail, as in the SIGKILL suite (whose
docstring says how strace runs).

Two homes on a memory file system, each restored from its own copy before each
run (at its own path, so absolute links stay valid), run the failing CLIs side
by side; the in-process checks take turns.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from crash_harness import RestorableHome, assert_clean, build_crash_packages, install_all
from test_crash_syscalls import SCENARIOS, count_syscalls, run_injected
from atomicplug.installer import Installer
from atomicplug.testing import snapshot

pytestmark = pytest.mark.skipif(shutil.which("strace") is None and os.environ.get("CI") != "true", reason="strace not installed")

#: way of failing → (strace action, ``when`` for the Nth call).
WAYS = {"ENOSPC once": ("error=ENOSPC", "{n}"), "EIO from then on": ("error=EIO", "{n}+"), "EIO once": ("error=EIO", "{n}")}
_WRITES = {"write", "pwrite64", "writev", "pwritev"}
_WHY = re.compile(r"\((ENOSPC|EIO)\)|disk I/O error|database or disk is full")


def ways(call: str) -> tuple[str, str]:
    return ("ENOSPC once", "EIO once" if call in _WRITES else "EIO from then on")


#: scenario label → number of (syscall, N, way) checked, for the terminal summary.
SYSCALL_FAILURES_CHECKED: dict[str, int] = {}


@pytest.fixture
def packages(home_factory: Callable[..., Any]) -> dict[str, Any]:
    return build_crash_packages(home_factory(name="builder"))


def check_one_line(where: str, proc: Any) -> None:
    assert "Traceback" not in proc.stderr, f"{where}: {proc.stderr}"
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1 and len(lines) == 1, f"{where}: exit {proc.returncode}, stderr {proc.stderr!r}"
    assert lines[0].startswith("atomicplug: error: "), f"{where}: {lines[0]}"
    assert _WHY.search(lines[0]), f"{where}: the line does not say why: {lines[0]}"


@pytest.mark.slow
@pytest.mark.parametrize("label", ["install", "upgrade"])
def test_every_mutating_syscall_failing_is_one_line_then_recovers_and_completes(
    label: str, packages: dict[str, Any], home_factory: Callable[..., Any], memory_tmp_path: Path
) -> None:
    prior, cli_args, api = SCENARIOS[label]
    args = cli_args(packages)
    setup = install_all(prior, packages)
    reference = home_factory(name=f"{label}-reference", under=memory_tmp_path, health_check=False)
    setup(reference)
    old = snapshot(reference.config)
    counts = count_syscalls(reference, args, memory_tmp_path / f"{label}.trace")
    new = snapshot(reference.config)
    assert old != new
    points = [(call, n, way) for call, total in sorted(counts.items()) for n in range(1, total + 1) for way in ways(call)]
    slots = []
    for number in range(2):
        home = home_factory(name=f"{label}-slot-{number}", under=memory_tmp_path, health_check=False)
        setup(home)
        slots.append(RestorableHome(home))
    in_process = threading.Lock()  # the CLIs run side by side; recover and the checks take turns

    def fail_each(slot: RestorableHome, share: list[tuple[str, int, str]]) -> None:
        trace = memory_tmp_path / f"{slot.home.root.name}.trace"
        for call, n, way in share:
            where = f"{label}: {way} at {call}#{n}"
            action, when = WAYS[way]
            home = slot.restore()
            proc = run_injected(home, args, call, when.format(n=n), action, trace)
            with in_process:
                if proc.returncode == 0:  # the failed call did not matter (a cache, a leftover's delete)
                    assert snapshot(home.config) == new and not proc.stderr, f"{where}: {proc.stderr}"
                    continue
                check_one_line(where, proc)
                Installer(home.config).recover()
                state = snapshot(home.config)
                assert state in (old, new), f"{where}: mixed state after recover: {state} ({proc.stderr.strip()})"
                assert_clean(home.config)
                if state == old:
                    api(Installer(home.config), packages)  # space is back, the disk repaired
                assert snapshot(home.config) == new, f"{where}: the operation did not complete afterwards"

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        for done in [pool.submit(fail_each, slot, points[i :: len(slots)]) for i, slot in enumerate(slots)]:
            done.result()
    SYSCALL_FAILURES_CHECKED[label] = len(points)
    assert len(points) > 100
