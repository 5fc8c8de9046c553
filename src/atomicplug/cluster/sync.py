"""A node converges to the cluster's desired generation: verify, stage, switch; no migrations.

docs/design.md "Beyond one machine". A sync is an ordinary journaled
transaction whose plan has ``database = False``: the writer already ran the
migrations, so its point of no return is the journal's ``committed`` record
and recovery rolls an interrupted sync back (crash safe, and idempotent: a
node already showing the desired plugins does nothing). Packages come through
:func:`atomicplug.cluster.packages.obtain`, verified against this node's own
trusted keys; a package that cannot be applied leaves the node wholly on its
last good generation, with the error on its row.

Two entries: :func:`sync` brings the node to the committed desired state;
:func:`prepare` stages an *announced* generation while its writer has not
committed yet, then waits (bounded) for that COMMIT (``txid_status``) and
switches, or rolls back when the writer gave up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs
from packaging.version import Version

from atomicplug import generations
from atomicplug.change import Action, Change, Plan
from atomicplug.cluster.desired import DesiredPlugin, DesiredState, desired_number, read_desired, read_generation, write_desired
from atomicplug.cluster.nodes import notify, report
from atomicplug.cluster.tables import database_errors
from atomicplug.errors import AtomicplugError, LockBusyError, OperationError
from atomicplug.registry import InstalledPlugin, Registry

if TYPE_CHECKING:
    from atomicplug.cluster.listener import Listener
    from atomicplug.config import Config
    from atomicplug.database.engine import Database

__all__ = ["SyncResult", "Reporter", "GenerationWithdrawn", "plan_sync", "apply", "sync", "converge", "prepare"]

Progress = Callable[[str], None]

#: How long a node that staged an announced generation waits for its writer's COMMIT.
COMMIT_WAIT = 300.0


def _quiet(_: str) -> None:
    pass


class GenerationWithdrawn(OperationError):
    """The announced generation a node staged was never committed (its writer failed or gave up)."""


@attrs.frozen
class SyncResult:
    """What a sync did: the generation it aimed at, the change lines, the error that stopped it."""

    generation: int
    changes: tuple[str, ...] = ()
    error: AtomicplugError | None = None

    @property
    def converged(self) -> bool:
        return self.error is None

    @property
    def failure(self) -> str | None:
        """The error as one line: which generation could not be applied (none yet: the seed was refused)."""
        if self.error is None:
            return None
        return f"cannot apply generation {self.generation}: {self.error}" if self.generation else str(self.error)


class Reporter:
    """Writes this node's row, skipping a write that would change nothing it wrote before."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._written: dict[str, Any] = {}

    def __call__(self, db: Database, **fields: Any) -> None:
        if self._written and all(self._written.get(k, object()) == v for k, v in fields.items()):
            return
        report(db, self.node_id, **fields)
        self._written.update(fields)

    def reached(self, db: Database, desired: DesiredState) -> None:
        """This node shows ``desired``: its row says so, and an error about that generation or an
        earlier one is over. One about a later generation stands: that generation is announced and
        not committed, and its writer is waiting to read that this node cannot stage it."""
        fields: dict[str, Any] = {"generation": desired.generation, "staged": desired.generation, "staged_txid": desired.txid}
        later = self._written.get("error_generation")
        if not (isinstance(later, int) and later > desired.generation):
            fields.update(error=None, error_generation=None)
        self(db, **fields)


def _action(before: InstalledPlugin | None, after: InstalledPlugin) -> Action:
    if before is None:
        return "install"
    if before.current == after.current:
        return "none"
    return "downgrade" if Version(after.version) < Version(before.version) else "upgrade"


def plan_sync(config: Config, db: Database, local: Registry, target: DesiredState, txid: str) -> Plan:
    """The local transaction that makes this node show ``target``'s plugins (no database step).

    Trees already in this node's store are reused when they pass the check a
    tree staged again would get (``verification.tree_sealed``); the others are
    staged from packages :func:`~atomicplug.cluster.packages.obtain` verified.
    A tree there that fails it is a change with a package and no staging:
    :func:`apply` repairs it from that package first. Every requirement must
    hold in the result, as for any plan.
    """
    from atomicplug.cluster.packages import obtain
    from atomicplug.metadata import Metadata
    from atomicplug.stages.plan import check_dependencies
    from atomicplug.verification import tree_sealed

    changes = []
    for pid in sorted(target.plugins):
        wanted = target.plugins[pid]
        before = local.plugins.get(pid)
        if before is not None and DesiredPlugin.from_entry(before) == wanted:
            continue
        tree = config.home / wanted.tree
        # A disabled plugin's tree is not live: enabled again, it is made live anew and checked first.
        already_live = before is not None and before.enabled and before.current.tree == wanted.tree
        reused = tree.is_dir() and (already_live or tree_sealed(config, wanted.tree))
        if reused:
            metadata, package = Metadata.from_json_bytes((tree / "metadata.json").read_bytes()), None
            if before is not None and before.current.tree == wanted.tree:
                signer = before.signed_by
            else:  # a tree it kept: who signed it, from the kept generation that showed it
                signer = generations.signer_of(config, pid, wanted.tree)
        else:
            fetched = obtain(config, db, wanted)  # verified against this node's own keys
            metadata, package, signer = fetched.metadata, fetched.sha256, fetched.signed_by
        after = attrs.evolve(wanted.entry(metadata), signed_by=signer)
        stage = package is not None and not tree.is_dir()
        changes.append(Change(plugin_id=pid, action=_action(before, after), before=before, after=after, package=package, stage_tree=stage))
    for pid in sorted(set(local.plugins) - set(target.plugins)):
        changes.append(Change(plugin_id=pid, action="uninstall", before=local.plugins[pid], after=None, keep_data=True))
    number = max(target.generation, generations.next_number(config))
    plan = Plan(txid=txid, operation="sync", changes=tuple(changes), rehearse=False, generation=number, database=False)
    check_dependencies(plan.registry_after(local))
    return plan


def apply(
    config: Config,
    db: Database,
    target: DesiredState,
    progress: Progress = _quiet,
    *,
    prepared: Callable[[Plan, Registry], None] | None = None,
) -> tuple[str, ...]:
    """Make this node show ``target``; the caller holds the writer lock and has recovered.

    Returns the change lines (empty when the node already shows it). ``prepared``
    runs once everything is staged, before the switch (see :func:`prepare`).
    """
    from atomicplug.stages.repair import repair_before_use
    from atomicplug.transaction import Coordination, execute, new_txid

    local = Registry.load(config.registry_path)
    if target.matches(local):
        return ()
    plan = plan_sync(config, db, local, target, new_txid(config.home))
    repairs = []
    for change in plan.changes:  # a tree this node kept, damaged since: repaired before it goes live
        if change.after is not None and change.package is not None and not change.stage_tree:
            outcome = "this node's plugins are unchanged; its next sync finishes the repair"
            line = repair_before_use(config, change.after, change.package, progress, outcome=outcome)
            if line is not None:
                repairs.append(line)
    lines = (*repairs, *plan.describe())
    for line in lines:
        progress(line)
    execute(config, plan, progress, coordination=Coordination(prepared=prepared))
    return lines


@contextmanager
def _locked(config: Config, progress: Progress, timeout: float) -> Iterator[None]:
    """This node's writer lock, and recovery of whatever a crash left unfinished."""
    from atomicplug.lock import writer_lock
    from atomicplug.transaction import recover_pending

    with writer_lock(config.lock_path, timeout, progress):
        recover_pending(config, progress)
        yield


def converge(config: Config, db: Database, reporter: Reporter, progress: Progress = _quiet, *, lock_timeout: float | None = None) -> SyncResult:
    """Bring this node to the committed desired generation over ``db`` and record the outcome on its row.

    Raises LockBusyError (another local operation holds the lock) and DatabaseError;
    a package that cannot be applied is returned as the result's ``error``.
    """
    with database_errors(), _locked(config, progress, config.lock_timeout if lock_timeout is None else lock_timeout):
        try:
            desired = read_desired(db) or _seed(config, db, progress)
            if desired is None:
                return SyncResult(generation=0)
            changes = apply(config, db, desired, progress)
        except AtomicplugError as exc:
            if isinstance(exc, LockBusyError):
                raise
            number = desired_number(db)
            reporter(db, error=str(exc), error_generation=number)
            return SyncResult(generation=number, error=exc)
        reporter.reached(db, desired)
        return SyncResult(generation=desired.generation, changes=changes)


def sync(config: Config, progress: Progress = _quiet) -> SyncResult:
    """``atomicplug sync``: once, over a connection of its own."""
    from atomicplug.cluster.tables import cluster_database

    with database_errors(), cluster_database(config) as db:
        return converge(config, db, Reporter(config.node_id), progress)


def _seed(config: Config, db: Database, progress: Progress) -> DesiredState | None:
    """No desired state yet: this node's live plugins become the cluster's first generation.

    So the machine that ran alone before cluster mode is the one whose plugins the
    fleet takes (docs/design.md "Beyond one machine"). A node with nothing
    installed seeds nothing. The packages go to the store before the state that
    needs them, under the writers' lock.
    """
    from atomicplug.cluster.packages import publish
    from atomicplug.cluster.turns import take_turn
    from atomicplug.transaction import new_txid

    local = Registry.load(config.registry_path)
    if not local.plugins:
        return None
    seed = DesiredState.from_registry(local, generation=max(local.generation, 1), txid=local.txid or new_txid())
    publish(config, db, list(seed.plugins.values()), progress)
    try:
        take_turn(db, config.lock_timeout)  # as long as any writer waits (LockBusyError), not for ever
        found = read_desired(db)
        if found is None:
            write_desired(db, seed)
            notify(db, "generation", generation=seed.generation, txid=seed.txid)
            progress(f"published this node's generation as the cluster's first ({len(seed.plugins)} plugin(s))")
        db.execute("COMMIT")
    except BaseException:
        db.rollback_quietly()
        raise
    return found or seed


def prepare(config: Config, listener: Listener, number: int, reporter: Reporter, progress: Progress = _quiet) -> SyncResult | None:
    """Stage announced generation ``number`` before its writer commits; switch once it has.

    None when there is nothing to do (the announcement is gone, or this node
    already shows it). Raises LockBusyError at once when a local operation holds
    the lock (this node's own writer stages its generation itself).
    """
    db = listener.db
    with database_errors():
        try:
            found = read_generation(db, number)
        except AtomicplugError as exc:  # rows this node refuses to read: the committed state will say so too
            reporter(db, error=str(exc), error_generation=number)
            return SyncResult(generation=number, error=exc)
        if found is None or found[0] != "staged":
            return None
        announced = found[1]
        with _locked(config, progress, 0.0):
            if announced.matches(Registry.load(config.registry_path)):
                reporter(db, staged=number, staged_txid=announced.txid)
                return None

            def staged(_plan: Plan, _after: Registry) -> None:
                reporter(db, staged=number, staged_txid=announced.txid)
                progress(f"staged generation {number}; waiting for its writer's COMMIT")
                _wait_for_commit(listener, announced)

            try:
                changes = apply(config, db, announced, progress, prepared=staged)
            except GenerationWithdrawn as exc:
                progress(str(exc))
                return None
            except AtomicplugError as exc:
                reporter(db, error=str(exc), error_generation=number)
                return SyncResult(generation=number, error=exc)
            reporter.reached(db, announced)
            return SyncResult(generation=number, changes=changes)


def _wait_for_commit(listener: Listener, announced: DesiredState) -> None:
    """Return once the announcing transaction committed; GenerationWithdrawn when it aborted or
    the wait ran out. Asked with ``txid_status`` on every notification and every second."""
    number, deadline = announced.generation, time.monotonic() + COMMIT_WAIT
    while True:
        ((status,),) = listener.db.execute("SELECT pg_catalog.txid_status(?)", [announced.xid])
        if status == "committed":
            return
        if status != "in progress":
            raise GenerationWithdrawn(f"generation {number} was not committed by its writer ({announced.txid}); staged work undone")
        remaining = deadline - time.monotonic()
        if remaining <= 0 or listener.stopped:
            raise GenerationWithdrawn(
                f"generation {number}: its writer has not committed within {COMMIT_WAIT:.0f}s; staged work undone "
                "(the node applies it when it commits)"
            )
        listener.wait(min(1.0, remaining))
