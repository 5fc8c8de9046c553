"""Stage 4, the database step: the seam between the transaction engine and the database.

docs/design.md "One transaction" step 4: one database transaction runs the
migrations and install hooks of every plugin in the plan and writes the
ledger row for the txid; its COMMIT is the point of no return. Just before
COMMIT the caller is handed the transaction's xid (``before_commit``) to
journal; whether a COMMIT happened is then asked with ``txid_status(xid)``
(:func:`committed`), never guessed (docs/design.md "No COMMIT is ambiguous").

The work itself lives in :mod:`atomicplug.database` (imported lazily; only
install hooks import SQLAlchemy): what each action runs is decided
in :mod:`atomicplug.database.plan`; see there for install/upgrade/downgrade/
uninstall/keep_data semantics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atomicplug.errors import (
    CommitInDoubtError,
    DatabaseError,
    MigrationError,
)
from atomicplug.faults import crash_point

if TYPE_CHECKING:
    from atomicplug.change import Change
    from atomicplug.config import Config
    from atomicplug.database.discovery import Direction, Migration
    from atomicplug.database.engine import Database
    from atomicplug.database.hooks import HookContext

__all__ = ["BeforeCommit", "InTransaction", "check", "run", "committed", "keeping_data"]

#: Called with the transaction's xid (None on SQLite) after the last statement and before
#: COMMIT is sent; the transaction runner journals it (``committing``). If it raises, the
#: database transaction is rolled back and the exception propagates.
BeforeCommit = Callable[[int | None], None]

#: Called inside the database transaction after the ledger row and before the xid is taken
#: (cluster mode: the desired state and its NOTIFY, committed with the migrations).
InTransaction = Callable[["Database"], None]

#: The shortest wait for a COMMIT the server has not decided yet (``txid_status`` "in
#: progress"); the wait is max(lock_timeout, this).
MIN_COMMIT_WAIT = 30.0
_POLL_INTERVAL = 0.2


_WITH_NEW_TREE = ("install", "upgrade", "downgrade")


def check(config: Config, changes: Sequence[Change], *, ledger: bool = True) -> None:
    """The database step's checks, before any row changes (docs/design.md step 2): of the trees the plan
    makes live (a package's permissions were checked before the transaction, stages/permissions.py).

    ``ledger=False`` (a cluster node's sync, which runs no migrations) keeps the
    checks of the trees themselves and skips the ledger.

    Raises ConfigError for a database whose DDL auto-commits (MySQL/MariaDB) or
    that atomicplug cannot use; PermissionRefusedError for a plugin shipping
    migrations or hooks without ``database.create_tables``, or declaring an
    ungranted permission; MigrationError for a bad migrations layout, a
    statement that cannot run in a transaction, a changed applied migration
    or an applied migration that cannot be reverted; DatabaseError when the
    ledger cannot be read.
    """
    from atomicplug.database.engine import backend_name, check_url
    from atomicplug.database.plan import refuse_non_transactional, tree_migrations
    from atomicplug.stages.permissions import check_tree

    check_url(config.database_url)
    dialect = backend_name(config.database_url)
    home = config.home
    for change in changes:
        new_tree = change.new_tree(home)
        if change.action in _WITH_NEW_TREE and new_tree is not None:
            check_tree(config, change.plugin_id, new_tree)
    needs_ledger = False
    for change in changes:
        for tree in (change.new_tree(home), change.old_tree(home)):
            migrations = tree_migrations(tree, change.plugin_id)
            refuse_non_transactional(change.plugin_id, migrations, dialect)
            needs_ledger = needs_ledger or bool(migrations)
    if needs_ledger and ledger:
        _check_against_ledger(config, changes)


def _check_against_ledger(config: Config, changes: Sequence[Change]) -> None:
    from atomicplug.database.engine import backend_name
    from atomicplug.database.plan import plan_change, refuse_non_transactional

    ledgers = _applied_ledgers(config, [c.plugin_id for c in changes])
    # The plan is decided per plugin against the ledger as it is now; run() decides
    # again under the database lock, so a concurrent change cannot slip through.
    for change in changes:
        plan = plan_change(change, ledgers[change.plugin_id], config.home)
        refuse_non_transactional(change.plugin_id, plan.reverts, backend_name(config.database_url))  # kept downs


def _applied_ledgers(config: Config, plugin_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """Each plugin's applied migrations (name → checksum) as the ledger says now; all empty
    while the SQLite file does not exist (it is never created just to ask).

    Raises DatabaseError when the database cannot be reached or the ledger read.
    """
    from atomicplug.database.engine import busy_error, check_url, connect, first_line, is_busy, sqlite_file_missing
    from atomicplug.database.ledger import applied_migrations

    check_url(config.database_url)
    if sqlite_file_missing(config.database_url):
        return {pid: {} for pid in plugin_ids}
    with connect(config.database_url, _busy_timeout(config)) as db:
        try:
            return {pid: applied_migrations(db, pid) for pid in plugin_ids}
        except Exception as exc:
            if is_busy(exc):
                raise busy_error(_busy_timeout(config)) from exc
            raise DatabaseError(f"cannot read the migration ledger: {first_line(exc)}") from exc


def run(
    config: Config,
    txid: str,
    operation: str,
    changes: Sequence[Change],
    rehearse: bool = True,
    *,
    before_commit: BeforeCommit | None = None,
    db: Database | None = None,
    in_transaction: InTransaction | None = None,
) -> None:
    """docs/design.md step 4: every change's migrations, hooks and the ledger in ONE transaction.

    The ``atomicplug_transactions`` row for ``txid`` is written in this same
    transaction even when no plugin has migrations. After the last statement
    ``before_commit(xid)`` is called (xid: ``txid_current()`` on PostgreSQL,
    None on SQLite); only then is COMMIT sent, so a caller that journals the
    xid knows that without it COMMIT never went out. COMMIT is the point of no
    return; a crash point sits right before and right after it. The
    connection is closed at the end whatever happened: a migration may have
    changed its session, so it is never reused.

    Raises MigrationError (after rolling everything back) when anything fails,
    with one line naming the plugin, file and statement; when COMMIT itself
    fails, the database is asked (:func:`committed`): committed → returns
    normally, aborted → MigrationError, undecided → CommitInDoubtError (exit 75),
    cannot be asked → DatabaseError (recovery decides).

    Cluster mode (docs/design.md "Beyond one machine"): ``db`` is a transaction
    the caller already began (BEGIN + ``pg_advisory_xact_lock`` on this same
    connection, held since it planned); ``in_transaction(db)`` runs after the
    ledger row, before the xid is taken (the desired state and its NOTIFY).
    """
    from atomicplug.database.engine import busy_error, first_line, is_busy, open_database
    from atomicplug.database.ledger import ensure_tables, now, record_transaction

    started_at = now()
    if db is None:
        try:
            db = open_database(config.database_url, _busy_timeout(config))
        except DatabaseError as exc:
            raise MigrationError(str(exc)) from exc
        try:
            db.begin()  # SQLite: BEGIN IMMEDIATE; PostgreSQL: BEGIN + advisory lock
        except Exception as exc:
            db.rollback_quietly()
            db.close()
            if is_busy(exc):
                raise busy_error(_busy_timeout(config)) from exc
            raise MigrationError(f"cannot begin a database transaction: {first_line(exc)}") from exc
    try:
        try:
            db.capture_session()  # the target schema, before any migration statement can move it
            ensure_tables(db)
            for change in changes:
                _run_change(db, config.home, txid, operation, change, rehearse)
            record_transaction(
                db, txid=txid, operation=operation, plugins=[c.summary() for c in changes], started_at=started_at
            )
            if in_transaction is not None:
                in_transaction(db)
            xid = db.prepare_commit()
        except BaseException as exc:
            db.rollback_quietly()
            if isinstance(exc, MigrationError) or not isinstance(exc, Exception):
                raise
            raise MigrationError(f"database transaction {txid} failed: {first_line(exc)}") from exc
        if before_commit is not None:
            try:
                before_commit(xid)
            except BaseException:
                db.rollback_quietly()
                raise
        crash_point()  # before COMMIT: a kill here must roll back (recovery: not committed)
        try:
            db.commit()
        except Exception as exc:
            db.close()  # whatever the server does with it now, this session is over for us
            _after_failed_commit(config, txid, xid, exc)
        crash_point()  # after COMMIT: a kill here must roll forward (recovery: committed)
    finally:
        db.close()


def committed(config: Config, txid: str, xid: int | None = None) -> bool:
    """Did ``txid``'s database transaction commit?

    ``xid`` is the PostgreSQL transaction id its ``committing`` journal record
    holds (a transaction without that record never sent COMMIT: the caller
    knows the answer without asking). With an xid, ``txid_status`` decides:
    committed → True, aborted → False, in progress → ask again for up to
    max(lock_timeout, 30 s), then CommitInDoubtError (exit 75); an xid too old
    for the server to tell (NULL) falls back to the ledger row. Without an xid
    (SQLite, whose COMMIT is decided when the call returns) the ledger row
    decides; no ledger: False.

    Raises DatabaseError when the database cannot be asked (recovery must not guess).
    """
    from atomicplug.database.engine import backend_name, check_url, connect, first_line, sqlite_file_missing
    from atomicplug.database.ledger import transaction_committed

    check_url(config.database_url)
    if sqlite_file_missing(config.database_url):
        return False  # never create the database file just to ask
    if xid is not None and backend_name(config.database_url) == "postgresql":
        status = _xid_status(config, txid, xid)
        if status is not None:
            return status == "committed"
    with connect(config.database_url, _busy_timeout(config)) as db:
        try:
            return transaction_committed(db, txid)
        except Exception as exc:
            raise DatabaseError(f"cannot read the transaction ledger: {first_line(exc)}") from exc


def keeping_data(config: Config, plugin_ids: Collection[str]) -> set[str]:
    """Which of ``plugin_ids`` the database still holds applied migrations of: tables an
    ``uninstall --keep-data`` left, whose downs a later install of an older version takes
    from the plugin's store trees (docs/design.md "Kept data and downgrades").

    Raises DatabaseError when the ledger cannot be read.
    """
    if not plugin_ids:
        return set()  # the usual case: no connection at all
    return {pid for pid, applied in _applied_ledgers(config, sorted(plugin_ids)).items() if applied}


def _xid_status(config: Config, txid: str, xid: int) -> str | None:
    """``txid_status(xid)`` once the server has decided: "committed", "aborted", or None
    (too old to tell). Raises CommitInDoubtError when it stays "in progress"."""
    from atomicplug.database.engine import connect, first_line

    wait = max(float(config.lock_timeout), MIN_COMMIT_WAIT)
    deadline = time.monotonic() + wait
    with connect(config.database_url, _busy_timeout(config)) as db:
        while True:
            try:
                ((status,),) = db.execute("SELECT pg_catalog.txid_status(?)", [xid])
            except Exception as exc:
                raise DatabaseError(
                    f"cannot ask the database whether transaction {txid} (xid {xid}) committed: {first_line(exc)}"
                ) from exc
            if status != "in progress":
                return status  # type: ignore[no-any-return]
            if time.monotonic() >= deadline:
                raise CommitInDoubtError(
                    f"transaction {txid}: the database has not decided its COMMIT after {wait:.0f} s "
                    f"(xid {xid} is still in progress), so its outcome is not known yet; "
                    "run `atomicplug recover` later"
                )
            time.sleep(_POLL_INTERVAL)


# -- inside the transaction ---------------------------------------------------
#
# Every plugin's code starts from the session captured at BEGIN: each
# migration file and each hook is followed by ``db.restore_session()``, so the
# next file, the next plugin and our own statements all start from it again
# (a pg_dump file empties search_path for itself).


def _run_change(db: Database, home: Path, txid: str, operation: str, change: Change, rehearse: bool) -> None:
    from atomicplug.database.hooks import HookContext
    from atomicplug.database.ledger import applied_migrations, record_migration
    from atomicplug.database.plan import plan_change, refuse_non_transactional
    from atomicplug.database.schema import snapshot

    pid = change.plugin_id
    plan = plan_change(change, applied_migrations(db, pid), home)
    refuse_non_transactional(pid, plan.reverts + plan.applies, db.backend)

    if change.action == "uninstall" and change.before is not None:
        ctx = HookContext.for_change(change, home, txid, operation, removing=True)
        _hook(db, ctx.tree, "uninstall", ctx)
    def run_and_record(migrations: Sequence[Migration], direction: Direction, version: str | None) -> None:
        for migration in migrations:
            _execute(db, migration, direction)
            record_migration(
                db, txid=txid, plugin_id=pid, migration=migration.name, direction=direction,
                checksum=migration.checksum, version=version,
            )  # fmt: skip

    run_and_record(plan.reverts, "down", change.old_version)
    before = snapshot(db) if rehearse and plan.applies else None
    run_and_record(plan.applies, "up", change.new_version)
    if before is not None:
        _rehearse(db, pid, plan.applies, before)
    if change.action in ("install", "upgrade") and change.after is not None:
        ctx = HookContext.for_change(change, home, txid, operation, removing=False)
        if change.action == "install":
            _hook(db, ctx.tree, "install", ctx)
        else:
            _hook(db, ctx.tree, "upgrade", ctx, change.old_version)


def _hook(db: Database, tree: Path, hook: str, ctx: HookContext, *args: Any) -> None:
    """Run an install.py hook; it must leave the transaction open. The session is restored after it."""
    from atomicplug.database.hooks import run_hook

    if run_hook(tree, hook, db, ctx, *args) and not db.transaction_open:
        raise MigrationError(f"plugin {ctx.plugin_id}: the {hook} hook ended atomicplug's database transaction")
    db.restore_session()


def _execute(db: Database, migration: Migration, direction: Direction) -> None:
    """Run one script, one parsed statement per execute, then restore the captured session.

    After each statement the transaction must still be open: the parser refused
    everything known to end it, and this catches anything it did not know.
    """
    from atomicplug.database.engine import first_line
    from atomicplug.database.scripts import one_line

    where = f"plugin {migration.plugin_id}: migrations/{migration.path(direction).name}"
    for statement in migration.statements(direction, db.backend):
        try:
            db.execute(statement.sql)  # no parameters: psycopg2 leaves '%' alone
        except Exception as exc:
            raise MigrationError(f"{where} statement {statement.number} failed: {first_line(exc)}") from exc
        if not db.transaction_open:
            raise MigrationError(
                f"{where} statement {statement.number} `{one_line(statement.sql)}` ended atomicplug's database "
                "transaction; stopped there (statements before it may have been committed by it)"
            )
    db.restore_session()


def _rehearse(db: Database, plugin_id: str, applied: Sequence[Migration], before: Any) -> None:
    """Reversibility rehearsal: in a SAVEPOINT, run the downs of the ups just applied
    (newest first), compare the schema with ``before``, and roll back to the savepoint."""
    from atomicplug.database.schema import differences, snapshot

    try:
        with db.savepoint("atomicplug_rehearsal"):
            for migration in reversed(applied):
                _execute(db, migration, "down")
            after = snapshot(db)
    except MigrationError as exc:
        detail = str(exc).removeprefix(f"plugin {plugin_id}: ")
        raise MigrationError(
            f"plugin {plugin_id}: down migrations fail in the reversibility rehearsal: {detail} (--no-rehearse skips it)"
        ) from exc
    found = differences(before, after)
    if found:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise MigrationError(
            f"plugin {plugin_id}: down migrations do not restore the schema: {'; '.join(found[:3])}{more} "
            "(--no-rehearse skips this check)"
        )


def _after_failed_commit(config: Config, txid: str, xid: int | None, exc: Exception) -> None:
    """COMMIT raised: it may or may not have happened (a lost connection). Ask the
    database (``txid_status`` on PostgreSQL); return only when it committed."""
    from atomicplug.database.engine import first_line

    try:
        done = committed(config, txid, xid)
    except CommitInDoubtError as doubt:
        raise doubt from exc
    except Exception as probe:
        raise DatabaseError(
            f"COMMIT of database transaction {txid} failed ({first_line(exc)}) and its outcome is unknown "
            f"({first_line(probe)}); `atomicplug recover` will decide"
        ) from exc
    if not done:
        raise MigrationError(f"COMMIT of database transaction {txid} failed: {first_line(exc)}") from exc


def _busy_timeout(config: Config) -> float:
    return max(float(config.lock_timeout), 30.0)
