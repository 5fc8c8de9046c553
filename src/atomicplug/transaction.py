"""The transaction runner and recovery (docs/design.md "One transaction", "Recovery").

Order of durable steps for one plan:
  begin (journal) → stage trees into the store → build the next generation
  (invisible) → staged → health gate (the new generation's backends imported in
  a fresh interpreter) → frontend gate (npm dependencies, frontend_check) →
  committing (the database transaction's xid) → database COMMIT (point of no
  return) → committed → switch ``<home>/current`` to the new generation (one
  rename: backend view and registry together) → frontend index → history → done.
Before COMMIT every visible thing is as it was, so failure or a crash means
*back*: delete what this txid created, write ``aborted``. After COMMIT the
rest is idempotent, so a crash means *forward*: redo step 5, write ``done``.
Without a ``committing`` record COMMIT was never sent; with one, the database
is asked (``txid_status`` on PostgreSQL) and never guessed at.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, NoReturn

import attrs

from atomicplug import generations, ioerrors
from atomicplug.change import Plan
from atomicplug.config import Config
from atomicplug.errors import AtomicplugError, CommitInDoubtError, OperationError
from atomicplug.frontend import gate as frontend_gate
from atomicplug.fsutil import TRASH_PREFIX, delete_trash, remove_file, remove_temp_files, remove_tree
from atomicplug.history import append_history, finished_now
from atomicplug.intake import release_used
from atomicplug.journal import Journal, JournalState, RecordType, pending_journals
from atomicplug.journal.writer import new_txid  # where callers have always taken it from
from atomicplug.progress import Progress, ProgressEvent, after_commit
from atomicplug.registry import Registry
from atomicplug.stages import health, migrate
from atomicplug.stages.register import write_frontend_index
from atomicplug.stages.stage import objects_for_staging, stage_tree, staging_tree
from atomicplug.stages.switch import check_addon_entries, remove_temp_links

if TYPE_CHECKING:
    from atomicplug.database.engine import Database

__all__ = ["new_txid", "execute", "recover_pending", "sweep_temp_files", "sweep_trash", "Progress", "Coordination"]

@attrs.frozen
class Coordination:
    """Cluster mode's seam in a transaction (docs/design.md "Beyond one machine"); empty on one machine.

    ``starting(plan, after)`` runs once the journal has begun, before the trees
    are staged: a writer announces the generation then, so the nodes stage it
    while it stages its own. ``prepared(plan, after)`` runs once the plan's trees
    and generation are staged and the gates passed, before the database step: a
    writer waits (bounded) for the live nodes to have staged it; a node's sync
    reports it staged and waits for the writer's COMMIT (raising rolls back).
    ``database`` is the transaction the writer began when it planned (BEGIN and
    ``pg_advisory_xact_lock`` on that connection); ``in_transaction(db, plan,
    after)`` runs in it after the ledger row (the desired state and NOTIFY).
    """

    prepared: Callable[[Plan, Registry], None] | None = None
    database: Database | None = None
    starting: Callable[[Plan, Registry], None] | None = None
    in_transaction: Callable[[Database, Plan, Registry], None] | None = None


_ALONE = Coordination()


def _quiet(_: ProgressEvent) -> None:
    pass


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def execute(
    config: Config, plan: Plan, progress: Progress = _quiet, *, coordination: Coordination = _ALONE,
    database_work: Callable[[Database], None] | None = None,
) -> None:
    """Run ``plan`` as one transaction; on failure nothing visible has changed.

    ``database_work`` runs inside the database transaction, after the migrations
    (the settings an install brings); it is not journaled: before COMMIT a crash
    rolls it back with everything else, after COMMIT it is done.

    The caller holds the writer lock and has run recovery. Raises the
    AtomicplugError that stopped it (after rolling back), or StorageError if
    the disk or the database failed: "nothing changed" before COMMIT, or
    committed and recovery will finish it if step 5 failed after COMMIT
    (docs/design.md "A failing disk is one line"). A plan without
    ``database`` (a cluster node's sync) runs no migrations: its point of no
    return is the ``committed`` record, so recovery rolls it back without one.
    """
    if not plan.changes:
        return
    generations.check_backend_folder(config)
    check_addon_entries(config)
    if not plan.generation:  # a cluster plan carries the number the cluster gave it
        plan = attrs.evolve(plan, generation=generations.next_number(config))
    # The registry of the generation this plan builds, read once: the caller holds the lock,
    # so the live one does not change meanwhile (recovery recomputes it from the journal).
    after = plan.registry_after(Registry.load(config.registry_path))
    # The health gate's interpreter starts now, so its start-up overlaps staging (issue 14).
    gate = health.Prestarted(health.prestart(config, plan))
    what = _what(plan)
    try:
        with ioerrors.reported(what, site=config):  # at worst an empty journal: recovery drops it
            journal = Journal.begin(config.journal_dir, plan.txid, plan=plan.to_dict(), started=_now())
    except BaseException:
        health.discard(gate.child)
        raise
    sent: list[int | None] = []  # the xid journaled in `committing`: COMMIT may have been sent

    def before_commit(xid: int | None) -> None:
        journal.append(RecordType.COMMITTING, xid=xid)
        sent.append(xid)

    try:
        if coordination.starting is not None:
            coordination.starting(plan, after)
        _stage_trees(config, plan, progress, gate)
        generations.build(config, plan.generation, after)
        journal.append(RecordType.STAGED)
        # Before COMMIT: a backend that does not import is refused. Its interpreter imports
        # while the database step's plan-time checks run.
        with health.started(config, plan, progress, after, gate.child) as health_verdict:
            migrate.check(config, plan.changes, ledger=plan.database)
            health_verdict()
        frontend_gate.check(config, plan, after, progress)
        if coordination.prepared is not None:
            coordination.prepared(plan, after)
        if plan.database:
            progress(ProgressEvent("database", "database: migrations and ledger in one transaction", operation=plan.operation))
            with ioerrors.doing("commit to the database", ioerrors.database_location(config.database_url)):
                migrate.run(
                    config, plan.txid, plan.operation, plan.changes, rehearse=plan.rehearse, before_commit=before_commit,
                    db=coordination.database, in_transaction=_in_transaction(plan, after, coordination, database_work),
                )  # fmt: skip
    except BaseException as exc:
        if not sent or not _committed_after_failure(config, plan.txid, sent[0], exc):
            _undo(config, plan, journal, exc)
    finally:
        gate.release()
    try:
        journal.append(RecordType.COMMITTED)
        _roll_forward(config, plan, journal, progress, after)
    except Exception as exc:
        cause = ioerrors.storage_cause(exc)
        if cause is None:
            raise
        head = f"{what} is committed (transaction {plan.txid}) but not finished"
        raise ioerrors.storage_error(head, cause, "`atomicplug recover` will finish it", config) from exc


def _undo(config: Config, plan: Plan, journal: Journal, failure: BaseException) -> NoReturn:
    """Roll back after ``failure``, then raise it: a disk or database failure as a StorageError
    saying that nothing changed. If rolling back fails too, the first failure is still the one
    reported, with what recovery will do."""
    what = _what(plan)
    first = ioerrors.storage_cause(failure, wrapped=True)
    try:
        _roll_back(config, plan, journal, reason=_reason(failure))
    except Exception as undo_failure:
        second = ioerrors.storage_cause(undo_failure)
        if second is None:
            raise
        reason = ioerrors.describe(first, config, failure) if first is not None else _reason(failure)
        outcome = "the installed plugins are unchanged and `atomicplug recover` will finish undoing it"
        raise ioerrors.storage_error(f"{what} failed: {reason}; undoing it failed too", second, outcome, config) from failure
    if first is None:
        raise failure
    raise ioerrors.storage_error(f"{what} failed", first, ioerrors.NOTHING_CHANGED, config, failure) from failure


def _what(plan: Plan) -> str:
    """What a transaction does, for its error lines: ``upgrade shop 1.0.0 -> 1.1.0, install base 1.0.0``."""
    return ", ".join(plan.describe())


def _in_transaction(
    plan: Plan, after: Registry, coordination: Coordination, database_work: Callable[[Database], None] | None
) -> Callable[[Database], None] | None:
    """What the database step adds to its transaction after the ledger row: the settings an install
    brings (docs/design.md "Plugin settings"), then cluster mode's desired state."""
    cluster = coordination.in_transaction
    if database_work is None and cluster is None:
        return None

    def run(db: Database) -> None:
        if database_work is not None:
            database_work(db)
            db.restore_session()
        if cluster is not None:
            cluster(db, plan, after)

    return run


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _committed_after_failure(config: Config, txid: str, xid: int | None, failure: BaseException) -> bool:
    """Did COMMIT happen although ``run`` raised after ``committing``? Unknown is not a
    guess: the journal stays pending for recovery."""
    if isinstance(failure, CommitInDoubtError):
        raise failure  # the database already had max(lock_timeout, 30 s) to decide
    try:
        return migrate.committed(config, txid, xid)
    except CommitInDoubtError:
        raise
    except AtomicplugError as exc:
        raise OperationError(
            f"transaction {txid} failed ({_reason(failure)}) and its outcome cannot be read ({exc}); "
            "run `atomicplug recover` once the database is reachable"
        ) from failure


def _stage_trees(config: Config, plan: Plan, progress: Progress, gate: health.Prestarted) -> None:
    """Each tree the plan makes; the compile worker and ``gate``'s interpreter take turns (one helper at a time)."""
    objects = None  # made (and flattened) for the first tree: a disable or a rollback moves no object
    for change in plan.changes:
        if not change.stage_tree or change.after is None or change.package is None:
            continue
        objects = objects or objects_for_staging(config)
        progress(ProgressEvent("stage", f"staging {change.plugin_id} {change.after.version}", change.plugin_id, change.after.version))
        with ioerrors.doing("stage", staging_tree(config, plan.txid, change.plugin_id)):  # e.g. the compiler's pipe: no path
            stage_tree(
                config, plan.txid, change.plugin_id, change.package, change.after.current.tree, objects, progress,
                before_worker=gate.make_room, after_worker=gate.refill,
            )  # fmt: skip
    remove_tree(config.staging_dir / plan.txid)


def _history_entry(plan: Plan, outcome: str, reason: str | None = None) -> dict[str, object]:
    return {
        "txid": plan.txid,
        "operation": plan.operation,
        "outcome": outcome,
        "reason": reason,
        "finished": finished_now(),
        "steps": [change.summary() for change in plan.changes],
    }


def _roll_back(config: Config, plan: Plan, journal: Journal, reason: str) -> None:
    """Undo a transaction that did not commit: only home-internal files exist to delete."""
    remove_tree(config.staging_dir / plan.txid)
    if plan.generation and generations.current_number(config) != plan.generation:
        generations.remove(config, plan.generation)
        generations.remove_unused_views(config)  # its view, unless another generation shows it
    referenced = Registry.load(config.registry_path).referenced_trees()
    for change in plan.changes:
        if change.stage_tree and change.after is not None and change.after.current.tree not in referenced:
            tree = config.home / change.after.current.tree
            remove_tree(tree)
            if tree.parent.is_dir() and not any(tree.parent.iterdir()):
                tree.parent.rmdir()  # store/<id>/ of a first install that never happened
    remove_temp_links(config, plan.txid)
    frontend_gate.remove_leftovers(config)
    append_history(config.home, _history_entry(plan, "aborted", reason))
    journal.finish(RecordType.ABORTED, reason=reason)


def _roll_forward(config: Config, plan: Plan, journal: Journal, progress: Progress, after: Registry | None = None) -> None:
    """Step 5, idempotent: switch the generation, the frontend index, history, done.

    ``after`` is the registry of the plan's generation; recovery, which has none,
    recomputes it from the live one (its parent) only if the generation must be
    built again (a complete generation is never rebuilt).
    """
    progress = after_commit(progress)
    if plan.generation == 0:  # a journal written before generations existed
        plan = attrs.evolve(plan, generation=generations.next_number(config))
    if not generations.folder(config, plan.generation).is_dir():
        registry = after if after is not None else plan.registry_after(Registry.load(config.registry_path))
        generations.build(config, plan.generation, registry)
    lines = "; ".join(change.describe() for change in plan.changes)
    progress(ProgressEvent("switch", f"switching to generation {plan.generation}: {lines}", operation=plan.operation))
    generations.switch(config, plan.generation, plan.txid)
    generations.link_registry(config, plan.txid)
    generations.ensure_backend_link(config, plan.txid)
    registry = Registry.load(config.registry_path)
    write_frontend_index(config, registry)
    remove_tree(config.staging_dir / plan.txid)
    remove_temp_links(config, plan.txid)
    release_used(config, [change.package for change in plan.changes if change.package is not None])  # docs/design.md "Intake"
    append_history(config.home, _history_entry(plan, "done"))
    journal.finish(RecordType.DONE)


def recover_pending(config: Config, progress: Progress = _quiet) -> list[tuple[str, str]]:
    """Finish or undo every unfinished transaction; returns (txid, "forward"|"back").

    Safe to run again at any point: each branch only repeats idempotent steps.
    """
    outcomes = []
    for state in pending_journals(config.journal_dir):
        pending = "it stays pending and `atomicplug recover` will finish it"
        with ioerrors.reported(f"recovering transaction {state.txid}", pending, config):
            outcomes.append((state.txid, _recover_one(config, state, progress)))
    return outcomes


def _recover_one(config: Config, state: JournalState, progress: Progress) -> str:
    journal = Journal.reopen(state.path)
    sweep_temp_files(config)
    sweep_trash(config)
    begin = state.begin
    if begin is None:
        # The begin record never became durable, so nothing after it happened.
        remove_tree(config.staging_dir / state.txid)
        remove_file(state.path)
        return "back"
    plan = Plan.from_dict(state.txid, begin["plan"])
    if RecordType.COMMITTED in state.types or _committed_strict(config, state):
        progress(ProgressEvent("recover", f"recovering {state.txid}: committed, rolling forward"))
        with _recovering(config, plan, "it is committed, and `atomicplug recover` will finish rolling it forward"):
            _roll_forward(config, plan, journal, progress)
        return "forward"
    progress(ProgressEvent("recover", f"recovering {state.txid}: not committed, rolling back"))
    undoing = "it did not commit, the installed plugins are unchanged, and `atomicplug recover` will finish undoing it"
    with _recovering(config, plan, undoing):
        _roll_back(config, plan, journal, reason="interrupted; rolled back by recovery")
    return "back"


def _recovering(config: Config, plan: Plan, outcome: str) -> AbstractContextManager[None]:
    """A disk failure while recovery rolls ``plan`` forward or back: one line saying which."""
    return ioerrors.reported(f"recovering transaction {plan.txid} ({_what(plan)})", outcome, config)


def _committed_strict(config: Config, state: JournalState) -> bool:
    """Without a ``committing`` record COMMIT was never sent (no database needed); with one
    the database decides (``txid_status``, or the ledger on SQLite). A database we cannot
    ask, or one that has not decided yet, stops recovery: never a guess."""
    committing = next((r for r in state.records if r["type"] is RecordType.COMMITTING), None)
    if committing is None:
        return False
    return migrate.committed(config, state.txid, committing.get("xid"))


def sweep_temp_files(config: Config) -> None:
    """Remove the temp files of writers that died, in every folder atomicplug writes them
    (docs/design.md "Deletion and temporary files"): an intake killed half-way, before any
    journal, leaves one in downloads/ that no recovery would otherwise see."""
    for folder in (config.home, config.downloads_dir, config.manifest_cache_dir, config.frontend_addons, config.store_dir):
        remove_temp_files(folder)  # store/: the hard-link probe's (doctor, staging), named like a temp


def sweep_trash(config: Config) -> int:
    """Remove ``.deleting-*`` leftovers of interrupted tree deletes (staging and store)."""
    removed = 0
    for pattern in (f"staging/{TRASH_PREFIX}*", f"store/*/{TRASH_PREFIX}*"):
        for leftover in sorted(config.home.glob(pattern)):
            delete_trash(leftover)
            removed += 1
    return removed
