"""Measuring a command from outside: wall time, peak memory of its whole process tree, disk used.

Shared by bench/run.py's parts. Every timed command starts after an untimed
``sync`` (see :func:`timed`), and memory is measured in a separate pass, so
the sampling never touches a timing.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["Failed", "GNU_TIME", "timed", "last_stdout", "peak_rss", "disk_used", "spread_new_folders", "file_creation_us", "create_and_remove"]

GNU_TIME = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None
_PAGE = os.sysconf("SC_PAGE_SIZE")
#: Seconds between two samples of the process tree's RSS.
SAMPLE_EVERY = 0.002


class Failed(RuntimeError):
    pass


_last: dict[str, bytes] = {"stdout": b""}


def last_stdout() -> bytes:
    """What the last :func:`timed` command printed."""
    return _last["stdout"]


def timed(cmd: list[str], *, cwd: Path | None = None, stdin: int | None = None) -> float:
    """Run ``cmd``; return its wall seconds. Raises Failed on exit != 0.

    Starts from a quiet disk (``sync`` first, untimed): otherwise a command pays for the
    write-back and journal commits of whatever ran before it (creating files right after
    another contender deleted thousands measured up to 2x slower), and which contender
    runs after which would decide the ratios.
    """
    os.sync()
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise Failed(f"{' '.join(map(str, cmd))} exited {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[-2000:]}")
    _last["stdout"] = proc.stdout
    return elapsed


def _children(pid: int) -> list[int]:
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                found.extend(int(x) for x in handle.read().split())
        except OSError:
            continue
    return found


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of ``pid`` in bytes; (0, 0) when it is gone."""
    rollup = _read(f"/proc/{pid}/smaps_rollup")
    if rollup is None:
        return 0, 0
    rss = pss = 0
    for line in rollup.splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("Pss:"):
            pss = int(line.split()[1]) * 1024
    return rss, pss


def _tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) summed over ``pid`` and its descendants now.

    A child still running its parent's program is the moment between fork and
    exec (``subprocess`` starting a worker): it shares the parent's pages, so it
    is skipped rather than counted twice.
    """
    rss_total = pss_total = 0
    todo = [(pid, None)]
    while todo:
        current, parent_cmdline = todo.pop()
        cmdline = _read(f"/proc/{current}/cmdline")
        if cmdline is None:
            continue
        if cmdline != parent_cmdline:
            rss, pss = _memory(current)
            rss_total += rss
            pss_total += pss
        todo.extend((child, cmdline) for child in _children(current))
    return rss_total, pss_total


def peak_rss(cmd: list[str]) -> dict[str, float | None]:
    """Peak memory of ``cmd``, in MiB, three ways:

    - ``largest_process_mib``: GNU time's ``%M``, the largest peak RSS of any single
      process of the tree (not ``os.wait4`` on our own child, whose ``ru_maxrss``
      inherits this process's high-water mark across ``exec``);
    - ``tree_rss_mib``: the largest sum of the RSS of every process of the tree alive at
      one moment (pages shared between them, such as the interpreter's, counted in each);
    - ``tree_pss_mib``: the same with PSS (shared pages divided among their sharers):
      what the tree costs the machine.

    The sums are sampled every SAMPLE_EVERY seconds from /proc; a peak shorter than a
    sample can be missed.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as out:
        wrapped = [GNU_TIME, "-f", "%M", "-o", out.name, *cmd] if GNU_TIME else cmd
        proc = subprocess.Popen(wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peak = [0, 0]

        def sample() -> None:
            while proc.poll() is None:
                # under GNU time, count its child's tree only (time itself is ~2 MiB)
                for root in _children(proc.pid) if GNU_TIME else [proc.pid]:
                    rss, pss = _tree_memory(root)
                    peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
                time.sleep(SAMPLE_EVERY)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, err = proc.communicate()
        sampler.join()
        if proc.returncode != 0:
            raise Failed(f"{' '.join(map(str, cmd))} exited {proc.returncode}: {err.decode(errors='replace').strip()[-2000:]}")
        largest = int(out.read().strip().splitlines()[-1]) / 1024 if GNU_TIME else None
    return {
        "largest_process_mib": round(largest, 1) if largest else None,
        "tree_rss_mib": round(peak[0] / 2**20, 1),
        "tree_pss_mib": round(peak[1] / 2**20, 1),
    }


def disk_used(folder: Path) -> dict[str, int]:
    """Bytes of disk ``folder`` uses (``du -B1``: blocks, hard links counted once), in total and per top-level entry.

    The per-entry figures come from one ``du`` call, so a file linked from two
    entries is counted in the first one listed (``objects/`` before ``store/``).
    """
    names = sorted(os.listdir(folder), key=lambda n: (n != "objects", n))
    out = subprocess.run(["du", "-s", "-B1", *names], cwd=folder, capture_output=True, text=True, check=True).stdout
    parts = {line.split("\t", 1)[1]: int(line.split("\t", 1)[0]) for line in out.splitlines()}
    total = subprocess.run(["du", "-s", "-B1", "."], cwd=folder, capture_output=True, text=True, check=True).stdout
    return {"total": int(total.split()[0]), **parts}


def spread_new_folders(scratch: Path) -> bool:
    """Give ``scratch`` ext4's "top of a hierarchy" flag (``chattr +T``); True when it took.

    Why (bench/README.md, "stop 31, file creation, and the harness's own removals"):
    on an ext4 without a journal, as here, ``find_inode_bit`` passes over every free
    inode deleted in the last 60 s (300 s while its inode table block is dirty), one
    buffer lookup each, so a file created in a block group where thousands of files
    were just removed costs ~0.9 ms of kernel CPU instead of ~20 µs. The harness
    removed each contender's files between runs and made their folders again beside
    them, near their old place: every later contender paid for the earlier one's
    clean-up. With the flag, the kernel places each new folder made directly in
    ``scratch`` as it places folders made at the root, by a hash of its name; with
    a name never used before (run.new_folder) no run creates files where another
    removed them. Best effort: another file system keeps its own placement.
    """
    try:
        done = subprocess.run(["chattr", "+T", str(scratch)], capture_output=True)
    except OSError:
        return False
    return done.returncode == 0


def file_creation_us(scratch: Path, count: int = 200) -> float:
    """Microseconds per empty file created in a new folder in ``scratch``: how the disk stands now."""
    folder = Path(tempfile.mkdtemp(prefix="creation-probe-", dir=scratch))
    return round(create_and_remove(folder, count) / count * 1e6, 1)


def create_and_remove(folder: Path, count: int) -> float:
    """Create ``count`` empty files in the empty ``folder``, then remove them and the folder;
    the seconds the creations took."""
    names = [str(folder / f"f{n}") for n in range(count)]
    try:
        started = time.perf_counter()
        for name in names:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        return time.perf_counter() - started
    finally:
        for name in names:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
        os.rmdir(folder)
