"""Stage 4a, health gate: the new backends must import before the point of no return.

docs/design.md "One transaction", step 4, and issue 7: a plugin whose backend does
not import (syntax error, missing module, exception at import time) would
break the application only after the switch, when nothing can be undone. So,
before the database COMMIT, every backend the plan enables is imported in a
fresh interpreter, as the application's loader would import it: as
``addons.<id>``, from the backend view of the generation the plan built
(complete, but not live until after COMMIT). A failure raises
OperationError, and the runner rolls back because COMMIT did not happen.

The child (:mod:`atomicplug.stages.gate_interpreter`) never writes the immutable
store, and gets the caller's ``sys.path``, so a backend may import what the host
application can. Its start-up (~30 ms) need not wait for the gate:
:func:`prestart` takes an interpreter when the transaction begins, and it waits on
its stdin, having imported nothing of any backend, until :func:`started` sends it
what to import (issue 14: the gate was the largest single wait of a small
install). A one-shot ``install``, ``upgrade``, ``enable`` or ``rollback`` starts
it before its own imports. A process that has run the gate twice (the billing
backend, a cluster node: not a one-shot CLI command) keeps one such idle
interpreter ready between transactions (:func:`release`), so in a warm process
the gate costs only the backends' own imports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

from atomicplug import generations
from atomicplug.errors import OperationError
from atomicplug.progress import Progress, ProgressEvent
from atomicplug.registry import Registry
from atomicplug.stages import gate_interpreter

if TYPE_CHECKING:
    from atomicplug.change import Change, Plan
    from atomicplug.config import Config

__all__ = [
    "IMPORT_TIMEOUT", "PACKAGE", "backends_to_check", "check_backends", "discard", "drop_spare", "prestart", "release", "started",
]  # fmt: skip

#: Seconds the fresh interpreter may take to import every checked backend.
IMPORT_TIMEOUT = 60.0
#: The package the application imports addons under (see :mod:`atomicplug.loader`).
PACKAGE = "addons"

def backends_to_check(config: Config, plan: Plan, after: Registry) -> list[str]:
    """The backends the plan's generation must import (empty: nothing to import): each change that
    ends enabled with a backend, then each enabled plugin of ``after`` (the registry the plan
    leaves) that requires a changed one, directly or not: an upgrade can break a dependent's
    ``from addons.<id> import …`` without changing the dependent."""
    home = str(config.home)
    changed = {change.plugin_id for change in plan.changes}
    targets = [
        change.plugin_id
        for change in plan.changes
        if change.after is not None and change.after.enabled and change.after.current.has_backend(home)
    ]
    enabled = [entry.id for entry in after.plugins.values() if entry.enabled]
    return targets + [pid for pid in after.dependents(changed, enabled) if after.plugins[pid].current.has_backend(home)]


def prestart(config: Config, plan: Plan) -> subprocess.Popen[bytes] | None:
    """Start the gate's interpreter now, when the plan will leave a backend to import; None otherwise.

    It waits, importing nothing, until :func:`started` sends it the targets
    (or closes its stdin: it then exits). The caller passes it to
    :func:`started` and calls :func:`release` when the transaction ends.
    Decided before the trees are staged: a tree to stage has a backend when
    its package lists ``backend/`` entries.
    """
    if not config.health_check or not any(_will_have_backend(config, change) for change in plan.changes):
        return None
    global _gates_started
    with _gates_lock:
        _gates_started += 1
    return gate_interpreter.take_spare() or _start_child()


class Prestarted:
    """The gate's interpreter of one transaction, from :func:`prestart` until :func:`release`.

    :meth:`make_room` stops it when staging is about to start the compile worker
    (``atomicplug.pycs``): the gate's child idles through staging, and two helper
    interpreters at once made a large install's process tree ~4.6 MiB (PSS) larger
    than a small one's; :meth:`refill` starts a fresh one as soon as the worker has
    exited, so its start-up (~30 ms) overlaps the rest of staging (links, record,
    sync) instead of waiting after it (bench/README.md).
    """

    def __init__(self, child: subprocess.Popen[bytes] | None) -> None:
        self.child = child
        self.gated = child is not None  # a gate was wanted: release() may keep a spare

    def make_room(self) -> None:
        discard(self.child)
        self.child = None

    def refill(self) -> None:
        if self.gated and self.child is None:
            try:
                self.child = _start_child()
            except OSError:  # no process to spare now: started() starts its own (or reports why not)
                pass

    def release(self) -> None:
        release(self.child, gated=self.gated)


def release(child: subprocess.Popen[bytes] | None, *, gated: bool | None = None) -> None:
    """The transaction that :func:`prestart` ``child`` for ends: stop it, and keep a spare.

    A process that has started the gate twice is one that runs transactions one
    after another (a one-shot CLI command runs one): it gets an idle interpreter
    for the next one now, booting while this transaction switches. It has
    imported nothing, so it is as fresh as one started then. The spare is an
    optimisation: when it cannot be started, the next gate starts its own.
    ``gated``: the transaction wanted a gate (default: it has a ``child``; a child
    stopped for the compile worker, :meth:`Prestarted.make_room`, is None but gated).
    """
    if gated is None:
        gated = child is not None
    discard(child)
    if not gated or not KEEP_SPARE:
        return
    with _gates_lock:
        if _gates_started < 2:
            return  # a one-shot process
    try:
        gate_interpreter.ensure_spare(_start_child)  # unless another thread's transaction already left one
    except OSError:  # no process or descriptor to spare: never this transaction's failure
        pass


#: Keep an idle interpreter between transactions (:func:`release`); tests that count children turn it off.
KEEP_SPARE = True
_gates_lock = threading.Lock()
_gates_started = 0
drop_spare = gate_interpreter.drop_spare
discard = gate_interpreter.discard
_start_child = gate_interpreter.start  # a module attribute: tests count the interpreters started


def _will_have_backend(config: Config, change: Change) -> bool:
    if change.after is None or not change.after.enabled:
        return False
    if change.stage_tree and change.package is not None and not (config.home / change.after.current.tree).exists():
        from atomicplug import safezip
        from atomicplug.errors import PackageError
        from atomicplug.intake import blob_path

        try:  # passed intake: its validated entries are remembered by sha256
            names = safezip.entry_names(blob_path(config, change.package), config.limits, sha256=change.package)
        except PackageError:
            return True  # staging will report it; start as if there were a backend
        return any(name.startswith(f"{generations.BACKEND}/") for name in names)
    return change.after.current.has_backend(str(config.home))


def check_backends(config: Config, plan: Plan, progress: Progress | None = None) -> None:
    """Import every backend the plan enables in a fresh interpreter; OperationError if one fails."""
    with started(config, plan, progress) as verdict:
        verdict()


@contextmanager
def started(
    config: Config,
    plan: Plan,
    progress: Progress | None = None,
    after: Registry | None = None,
    spare: subprocess.Popen[bytes] | None = None,
) -> Iterator[Callable[[], None]]:
    """Start the import check now; the block gets a function that waits for its verdict.

    So the caller's own checks (the database step's plan-time checks) run while
    the fresh interpreter imports (issue 8). The verdict raises OperationError
    for a backend that does not import. Leaving the block stops a child whose
    verdict was not asked for and removes the scratch folder. Costs nothing (no
    subprocess) for uninstall, disable, plugins without ``backend/``, or
    ``health_check = false``. ``after`` is the registry the plan leaves (read
    from the file when not given). ``spare``: an interpreter from
    :func:`prestart`, used (or stopped, with nothing to check) instead of
    starting one.
    """
    if after is None:
        after = plan.registry_after(Registry.load(config.registry_path))
    targets = backends_to_check(config, plan, after) if config.health_check else []
    if not targets:
        discard(spare)
        yield _nothing_to_check
        return
    if progress is not None:
        progress(ProgressEvent("health", f"health check: importing {', '.join(targets)} in a fresh interpreter", plugins=tuple(targets)))
    # Inside the transaction's staging folder, which every end of the transaction (done,
    # aborted, recovered after a kill) deletes: a system temp folder would outlive a SIGKILL.
    scratch = config.staging_dir / plan.txid / "health-check"
    shutil.rmtree(scratch, ignore_errors=True)
    child: subprocess.Popen[bytes] | None = spare
    try:
        scratch.mkdir(parents=True)
        # The plan's whole new generation, built before COMMIT and not yet live: the child
        # imports exactly what the loader will import after the switch.
        view = generations.folder(config, plan.generation) / generations.BACKEND
        if child is None:
            child = _start_child()
        _send_job(child, scratch, [view], targets)

        def verdict() -> None:
            errors = _errors_of(child, scratch, targets)
            changed = {change.plugin_id for change in plan.changes}
            failed = [pid for pid in targets if pid in errors]  # plan order: dependencies first
            # Only when every failure is an unchanged dependent's is the live generation asked.
            before = _failing_before(config, scratch, failed) if not changed.intersection(failed) else {}
            for plugin_id in failed:
                version = after.plugins[plugin_id].version
                if before.get(plugin_id) == errors[plugin_id]:  # broken the same way before: this change does not make it worse
                    if progress is not None:
                        text = f"{plugin_id} {version} (unchanged) did not import before this change either ({errors[plugin_id]}): not blocking it"
                        progress(ProgressEvent("note", text, plugin_id, version))
                    continue
                why = "" if plugin_id in changed else " (unchanged, but it requires a plugin this transaction changes)"
                earlier = f" (before this change: {before[plugin_id]})" if plugin_id in before else ""
                raise OperationError(f"{plugin_id} {version}{why}: backend does not import: {errors[plugin_id]}{earlier}")

        yield verdict
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.communicate()
        shutil.rmtree(scratch, ignore_errors=True)


def _failing_before(config: Config, scratch: Path, unchanged: list[str]) -> dict[str, str]:
    """Which of the ``unchanged`` plugins (that fail in the new generation) fail in the live one
    too, and how: a plugin that fails there the same way is not made worse by this change.

    Imported in another fresh interpreter, only when an unchanged dependent failed (docs/design.md
    "Health gate"). An answer that cannot be had (no live generation, the interpreter died or
    timed out) is no answer: those plugins still block, as before.
    """
    live = (config.home / generations.CURRENT / generations.BACKEND).resolve()
    if not unchanged or not live.is_dir():
        return {}
    folder = scratch / "before"
    try:
        folder.mkdir()
        child = _start_child()
    except OSError:
        return {}
    try:
        _send_job(child, folder, [live], unchanged)
        return {pid: error for pid, error in _errors_of(child, folder, unchanged).items() if pid in unchanged}
    except OperationError:
        return {}
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()


def _nothing_to_check() -> None:
    """The verdict when no backend needs importing."""


def _send_job(child: subprocess.Popen[bytes], scratch: Path, search: list[Path], targets: list[str]) -> None:
    """Tell ``child`` to import ``targets`` as ``addons.<id>`` from ``search``, reporting into ``scratch``."""
    paths = [p for p in sys.path if p]  # '' would be the child's cwd, the scratch folder
    job = [str(scratch), os.pathsep.join(str(p) for p in search), PACKAGE, str(scratch / "result.json"), paths, targets]
    stdin: IO[bytes] = child.stdin  # type: ignore[assignment]
    try:
        stdin.write(json.dumps(job).encode("utf-8", "surrogateescape") + b"\n")
        stdin.flush()  # communicate() closes it
    except BrokenPipeError:
        pass  # the child died; _errors_of reports it


def _errors_of(child: subprocess.Popen[bytes], scratch: Path, targets: list[str]) -> dict[str, str]:
    """Wait for the child; returns {plugin_id: last line of the exception} for failed imports."""
    try:
        _, stderr = child.communicate(timeout=IMPORT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise OperationError(
            f"{', '.join(targets)}: backend import did not finish within {IMPORT_TIMEOUT:g}s (health check)"
        ) from None
    try:
        errors: dict[str, str] = json.loads((scratch / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        # The child died before reporting (os._exit or a crash inside an import).
        tail = stderr.decode("utf-8", "replace").strip().splitlines()
        detail = tail[-1] if tail else f"exit code {child.returncode}"
        raise OperationError(f"{', '.join(targets)}: backend import killed the interpreter ({detail})") from None
    return errors
