"""Stage 4b, the frontend gate: the host app must be able to build the new addons, before COMMIT.

docs/design.md "Frontend contract", issue 17. Like the backend's health gate, a refusal
here raises OperationError before the database COMMIT, so the runner rolls back and nothing
visible changes (index.ts is untouched; ``index.next.ts`` is removed on every path, and by
recovery after a crash). Two checks:

1. every plugin the plan leaves enabled with a frontend declares its npm packages in
   metadata.json ``frontend.dependencies``; the host must declare and have installed a
   version in each range (:mod:`atomicplug.frontend.host`). Uninstall and disable skip this.
2. ``frontend_check`` (optional, e.g. ``npx tsc --noEmit -p tsconfig.app.json`` or a build)
   runs in the host folder with the candidate index written as ``index.next.ts`` beside
   index.ts and its path in ``$ATOMICPLUG_FRONTEND_INDEX``, within
   ``frontend_check_timeout`` seconds; it runs only when the list of addons changes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from typing import TYPE_CHECKING

from atomicplug.errors import OperationError
from atomicplug.fsutil import atomic_write_bytes
from atomicplug.frontend.contract import CANDIDATE_NAME
from atomicplug.frontend.host import HostPackages, find_host
from atomicplug.frontend.layout import next_index, remove_leftovers, write_static_parts
from atomicplug.progress import Progress, ProgressEvent

if TYPE_CHECKING:
    from pathlib import Path

    from atomicplug.config import Config
    from atomicplug.frontend.index import AddonIndex
    from atomicplug.registry import Registry
    from atomicplug.change import Plan

__all__ = ["check", "check_dependencies", "run_check_command", "remove_leftovers", "INDEX_ENV"]

#: The environment variable naming the candidate index while the check command runs.
INDEX_ENV = "ATOMICPLUG_FRONTEND_INDEX"
#: Lines of the command's output quoted in a refusal.
_TAIL_LINES = 6
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: A JavaScript stack frame ("    at viteLog (file:///...)"): it says where the tool failed, not why.
_STACK_FRAME = re.compile(r"\s+at \S")


def check(config: Config, plan: Plan, after: Registry, progress: Progress | None = None) -> None:
    """Refuse ``plan`` (OperationError) when the host app could not build the addons it leaves."""
    check_dependencies(config, plan, after)
    run_check_command(config, plan.txid, after, progress)


def check_dependencies(config: Config, plan: Plan, after: Registry) -> None:
    """Each enabled plugin's ``frontend.dependencies`` against the host's npm packages."""
    from atomicplug.metadata import Metadata

    wanted = []
    for change in plan.changes:
        entry = after.plugins.get(change.plugin_id)
        if entry is None or not entry.enabled or change.after is None:
            continue  # uninstall, disable: nothing new for the host to build
        tree = config.home / entry.current.tree
        if not (tree / "frontend").is_dir():
            continue
        metadata = Metadata.from_json_bytes((tree / "metadata.json").read_bytes())
        wanted += [(entry, dependency) for dependency in metadata.frontend.dependencies]
    if not wanted:
        return
    entry, dependency = wanted[0]
    folder = _host_folder(config, f"{entry.id} {entry.version}: frontend needs npm package {dependency.name} {dependency.range}")
    host = HostPackages.load(folder)
    problems = [f"{entry.id} {entry.version}: frontend {why}" for entry, dep in wanted if (why := host.problem(dep))]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise OperationError(problems[0] + more)


def run_check_command(config: Config, txid: str, after: Registry, progress: Progress | None = None) -> None:
    """Run ``frontend_check`` against the candidate index; OperationError when it fails."""
    command = config.frontend_check
    if not command or not config.frontend_index:
        return
    candidate = next_index(config, after)
    if candidate is None:
        return  # the addon list does not change: nothing new to build
    folder = _host_folder(config, "frontend_check is set")
    if progress is not None:
        progress(ProgressEvent("frontend", f"frontend check: {command}"))
    # The candidate imports ./types and ./.store: a host that never ran `atomicplug init` gets them now.
    write_static_parts(config, txid)
    path = config.frontend_addons / CANDIDATE_NAME
    try:
        atomic_write_bytes(path, candidate.render().encode())
        _run(config, command, folder, path, candidate)
    finally:
        remove_leftovers(config)


def _host_folder(config: Config, needing: str) -> Path:
    folder = find_host(config)
    if folder is None:
        raise OperationError(f"{needing}, but no package.json was found above {config.frontend_addons} (set frontend_host)")
    return folder


def _run(config: Config, command: str, folder: Path, path: Path, candidate: AddonIndex) -> None:
    env = dict(os.environ, **{INDEX_ENV: str(path)})
    # A session of its own, so a timeout stops the whole tree the shell started (npx → tsc).
    child = subprocess.Popen(
        command, shell=True, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        output, _ = child.communicate(timeout=config.frontend_check_timeout)
    except subprocess.TimeoutExpired:
        raise OperationError(f"frontend check `{command}` did not finish within {config.frontend_check_timeout:g}s") from None
    finally:
        if child.poll() is None:
            _stop(child)
    if child.returncode != 0:
        text = _ANSI.sub("", output.decode("utf-8", "replace"))
        blamed = _blamed(text, candidate)
        whose = f" for {', '.join(blamed)}" if blamed else ""
        lines = [line.strip() for line in text.splitlines() if line.strip() and not _STACK_FRAME.match(line)]
        tail = " | ".join(lines[-_TAIL_LINES:])
        raise OperationError(f"frontend check `{command}` failed{whose} (exit {child.returncode}): {tail or 'no output'}")


def _stop(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.communicate()


def _blamed(output: str, candidate: AddonIndex) -> list[str]:
    """Plugins whose lines of the candidate index the output names (``index.next.ts(12,3)``, ``:12:3``)."""
    lines = candidate.render().splitlines()
    numbers = {int(n) for n in re.findall(rf"{re.escape(CANDIDATE_NAME)}[(:](\d+)", output)}
    blamed = []
    for item in candidate.imports:
        if any(0 < n <= len(lines) and re.search(rf"\b{item.name}\b", lines[n - 1]) for n in numbers):
            blamed.append(item.plugin_id)
    return blamed
