"""The health gate's interpreter: started, kept idle, handed to the next gate (standard library only).

The gate (:mod:`atomicplug.stages.health`) imports the new backends in a fresh
interpreter, which waits on its stdin, having imported nothing, until it is told
what to import. Starting one takes ~30 ms. This module owns that child and the one
idle interpreter a process may keep for its next gate (the spare); the health
stage decides when a gate is wanted and when a spare is worth keeping.

Its own module, light to import, so that a one-shot ``atomicplug install`` starts
the interpreter before it imports the rest of atomicplug (:func:`start_early`): its
start-up then overlaps the command's own imports (~55 ms) instead of the
transaction, where a small install waited ~8 ms for it (issue 14, bench/README.md).
"""

from __future__ import annotations

import _thread
import atexit
import os
import sys

TYPE_CHECKING = False  # not `from typing import`: typing costs ~1.7 ms, and every command imports this module

if TYPE_CHECKING:  # imported where a child is started: every command imports this module first
    import subprocess
    from collections.abc import Callable

__all__ = [
    "CHILD_SCRIPT", "COMMANDS_THAT_MAY_GATE", "start", "start_early", "take_spare", "ensure_spare", "drop_spare", "discard",
]  # fmt: skip

#: Commands whose transaction may import new backends. Run as a process of their own (one-shot, or
#: a resident server's child), they start the interpreter before anything else (:func:`start_early`).
COMMANDS_THAT_MAY_GATE = frozenset({"install", "upgrade", "enable", "rollback"})

# Runs in the child: waits for one JSON line on stdin (none: nothing to check),
# then a synthetic ``addons`` package over the links folder and one import per
# plugin, from the scratch folder ('' dropped from sys.path: not the caller's
# folder). The verdict goes to a file (a backend may print on stdout), and
# os._exit skips waiting for threads a backend may have started.
CHILD_SCRIPT = """\
import importlib, json, os, sys, types
job = sys.stdin.readline()
if not job:
    os._exit(0)
scratch, links, package, result_path, paths, targets = json.loads(job)
os.chdir(scratch)
sys.path[:] = [p for p in paths if p] + [p for p in sys.path if p and p not in paths]
module = types.ModuleType(package)
module.__path__ = links.split(os.pathsep)
sys.modules[package] = module
errors = {}
for plugin_id in targets:
    try:
        importlib.import_module(package + "." + plugin_id)
    except BaseException as exc:
        import traceback
        errors[plugin_id] = traceback.format_exception_only(type(exc), exc)[-1].strip()
with open(result_path, "w", encoding="utf-8") as out:
    json.dump(errors, out)
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
"""


def start() -> subprocess.Popen[bytes]:
    """Start an interpreter that waits for its job on stdin.

    ``-B`` and PYTHONDONTWRITEBYTECODE: the immutable store is never written. ``-S``
    skips re-running ``site`` (half the start-up): the job carries the caller's
    ``sys.path``, site-packages and ``.pth`` entries already resolved.
    """
    import subprocess

    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-B", "-S", "-c", CHILD_SCRIPT]
    return subprocess.Popen(command, cwd="/", env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def start_early(command: str | None) -> None:
    """Start the spare now when ``command`` (the command word of a process that runs one command)
    may run the gate.

    Not this command's failure when it cannot be started: the gate then starts its own.
    Unused (no backend to import, the command failed first), it is stopped at exit.
    """
    if command not in COMMANDS_THAT_MAY_GATE:
        return
    try:
        ensure_spare(start)
    except OSError:
        pass


def discard(child: subprocess.Popen[bytes] | None) -> None:
    """Stop an interpreter that was not (or no longer) needed, reap it and close its pipes; idempotent."""
    if child is None:
        return
    if child.poll() is None:
        child.kill()
    child.communicate()


_spare_lock = _thread.allocate_lock()  # threading's Lock, without importing threading
_spare: tuple[subprocess.Popen[bytes], int] | None = None  # the idle child and the pid that started it


def take_spare() -> subprocess.Popen[bytes] | None:
    """The idle interpreter this process kept, if it is still alive (else None); it is the caller's now.

    A forked process (a resident server's command) sees its parent's spare, which is not its
    child to wait for: it takes none.
    """
    global _spare
    with _spare_lock:
        kept, _spare = _spare, None
    child = _own_child(kept)
    if child is None or child.poll() is None:
        return child
    discard(child)  # it died meanwhile: reap it
    return None


def ensure_spare(make: Callable[[], subprocess.Popen[bytes]]) -> bool:
    """Keep a spare made by ``make`` unless this process keeps a live one; True when ``make``'s is kept.

    OSError from ``make`` (no process to spare now) is the caller's: nothing is kept.
    """
    global _spare
    with _spare_lock:
        live = _own_child(_spare)
        if live is not None and live.poll() is None:
            return False
        _spare = (make(), os.getpid())
        return True


def drop_spare() -> None:
    """Stop the idle interpreter this process keeps, if any (at exit; tests).

    Killed, not asked to exit: it has imported nothing, and one started early may still
    be starting up, which an exit would wait for.
    """
    global _spare
    with _spare_lock:
        kept, _spare = _spare, None
    discard(_own_child(kept))  # a forked process's copy is its parent's to stop


def _own_child(kept: tuple[subprocess.Popen[bytes], int] | None) -> subprocess.Popen[bytes] | None:
    """The interpreter of ``kept`` when this process started it (a forked one sees its parent's), else None."""
    return kept[0] if kept is not None and kept[1] == os.getpid() else None


atexit.register(drop_spare)
