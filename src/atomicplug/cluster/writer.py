"""A writer's turn in the cluster: one lock, the desired state, two phases, one COMMIT.

docs/design.md "Beyond one machine". Any node's writer (CLI, API, marketplace):

1. opens the transaction its migrations will run in and takes
   ``pg_advisory_xact_lock`` on it (waiting at most ``lock_timeout``): writers
   on every node take turns from here until their COMMIT;
2. reads the desired state and, when this node does not show it yet, syncs
   its own files to it first, so the plan is made against the desired state;
3. (the caller plans; the transaction runner begins its journal and calls
   :meth:`ClusterWriter._announce`) publishes the packages and announces the
   generation as *staged* (committed on a second connection, ``NOTIFY
   atomicplug``), so the nodes stage it while this node stages its own trees,
   builds the generation and runs the gates; then (:meth:`ClusterWriter._wait_for_nodes`)
   it reports itself staged and waits up to ``cluster_stage_wait`` seconds for
   every live node to have staged it (a writer whose own staging or gates fail
   withdraws the generation: the nodes roll theirs back);
4. runs the migrations, the ledger and the new desired state in the one
   transaction, ``NOTIFY`` included, and commits: migrations run once for the
   cluster, and nodes hear of it only if it committed;
5. switches its own files, as on one machine, and records them on its row.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from atomicplug import generations
from atomicplug.cluster import CHANNEL, tables
from atomicplug.cluster.desired import DesiredState, read_desired, write_desired
from atomicplug.cluster.nodes import live_nodes, notify, report
from atomicplug.cluster.sync import apply
from atomicplug.cluster.tables import database_errors
from atomicplug.cluster.turns import take_turn
from atomicplug.registry import Registry

if TYPE_CHECKING:
    from atomicplug.change import Plan
    from atomicplug.config import Config
    from atomicplug.database.engine import Database
    from atomicplug.intake import Package

__all__ = ["ClusterWriter"]

Progress = Callable[[str], None]


class ClusterWriter:
    """``with ClusterWriter(config, progress) as writer: ... writer.execute(plan)``; the caller holds the node's lock."""

    def __init__(self, config: Config, progress: Progress) -> None:
        self.config = config
        self.progress = progress
        self.desired: DesiredState | None = None
        self._db: Database | None = None
        self._side: Database | None = None
        self._announced: tuple[int, str, int] | None = None  # generation, txid, xid

    # -- the turn ------------------------------------------------------------------------
    def __enter__(self) -> ClusterWriter:
        from atomicplug.database.engine import open_database

        with database_errors():
            self._db = db = open_database(self.config.database_url, max(self.config.lock_timeout, 10.0))
            try:
                tables.ensure_tables(db)
                self._take_lock(db)
                self.desired = read_desired(db)
                if self.desired is not None and not self.desired.matches(Registry.load(self.config.registry_path)):
                    self.progress(f"this node is behind the cluster: syncing to generation {self.desired.generation} first")
                    apply(self.config, db, self.desired, self.progress)
            except BaseException:
                db.rollback_quietly()
                db.close()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._db is not None:
            self._db.rollback_quietly()  # nothing to roll back after a COMMIT: migrate.run closed it
            self._db.close()
        try:
            if self._announced is not None:
                self._withdraw_if_aborted()
        finally:
            if self._side is not None:
                self._side.close()

    def _take_lock(self, db: Database) -> None:
        """The writers' turn (:func:`take_turn`), then this connection's session settings kept for the COMMIT."""
        take_turn(db, self.config.lock_timeout)
        db.capture_session()

    def execute(self, plan: Plan, *, database_work: Callable[[Database], None] | None = None) -> None:
        """Run ``plan`` as the cluster's next generation (steps 3 to 5); ``database_work`` as for
        :func:`atomicplug.transaction.execute` (an install's settings)."""
        from atomicplug.transaction import Coordination, execute

        if not plan.changes:
            return
        base = self.desired.generation if self.desired is not None else 0
        plan = attrs.evolve(plan, generation=max(base + 1, generations.next_number(self.config)))
        coordination = Coordination(
            starting=self._announce, prepared=self._wait_for_nodes, database=self._db, in_transaction=self._commit_desired
        )
        with database_errors():
            execute(self.config, plan, self.progress, coordination=coordination, database_work=database_work)
            side = self._side_connection()
            report(side, self.config.node_id, generation=plan.generation, staged=plan.generation, staged_txid=plan.txid,
                   error=None, error_generation=None)  # fmt: skip

    def obtain(self, plugin_id: str, version: str, sha256: str) -> Package:
        """A package this node lacks (the version a ``rollback ID`` goes back to), as a sync would take it in."""
        from atomicplug.cluster.desired import DesiredPlugin
        from atomicplug.cluster.packages import obtain

        assert self._db is not None, "obtain() inside the writer's turn"
        self.progress(f"fetching {plugin_id} {version}: this node never had its tree")
        with database_errors():
            return obtain(self.config, self._db, DesiredPlugin(plugin_id, version, sha256, enabled=True))

    # -- phase one: announce and wait --------------------------------------------------------
    def _side_connection(self) -> Database:
        """An autocommit connection beside the locked one: what it writes is visible at once."""
        from atomicplug.database.engine import open_database

        if self._side is None:
            self._side = open_database(self.config.database_url, max(self.config.lock_timeout, 10.0))
            self._side.execute(f"LISTEN {CHANNEL}")
        return self._side

    def _announce(self, plan: Plan, after: Registry) -> None:
        from atomicplug.cluster.packages import publish

        assert self._db is not None
        side = self._side_connection()
        desired = DesiredState.from_registry(after, generation=plan.generation, txid=plan.txid)
        if self.desired is None:  # the cluster's first generation: it names every plugin of this node, not only the changed ones
            changed = list(desired.plugins.values())
        else:
            changed = [desired.plugins[c.plugin_id] for c in plan.changes if c.after is not None]
        publish(self.config, side, changed, self.progress)
        ((xid,),) = self._db.execute("SELECT pg_catalog.txid_current()")
        side.execute(
            f"INSERT INTO {side.qualified(tables.GENERATIONS)} (generation, txid, xid, state, plugins, announced_at) "
            "VALUES (?, ?, ?, 'staged', ?, pg_catalog.clock_timestamp()) ON CONFLICT (generation) DO UPDATE SET "
            "txid = EXCLUDED.txid, xid = EXCLUDED.xid, state = 'staged', plugins = EXCLUDED.plugins, "
            f"announced_at = EXCLUDED.announced_at, committed_at = NULL WHERE {side.qualified(tables.GENERATIONS)}.state <> 'committed'",
            [plan.generation, plan.txid, int(xid), desired.plugins_json()],
        )
        self._announced = (plan.generation, plan.txid, int(xid))
        notify(side, "staged", generation=plan.generation, txid=plan.txid)

    def _wait_for_nodes(self, plan: Plan, _after: Registry) -> None:
        """This node staged ``plan``: say so, then wait until every live node has (or said it cannot), at most ``cluster_stage_wait`` s."""
        side = self._side_connection()
        number, txid = plan.generation, plan.txid
        report(side, self.config.node_id, staged=number, staged_txid=txid)
        wait = self.config.cluster_stage_wait
        deadline = time.monotonic() + wait
        while True:
            pending, failed = self._stage_reports(side, number, txid)
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                break
            ready, _, _ = select.select([side.raw], [], [], min(remaining, 0.5))
            if ready:
                side.raw.poll()
            side.raw.notifies.clear()
        if pending:
            self.progress(
                f"{len(pending)} live node(s) did not stage generation {number} within {wait:g}s "
                f"({', '.join(sorted(pending)[:5])}); they stage it after COMMIT"
            )
        for node_id, (error, applied) in sorted(failed.items()):
            self.progress(f"node {node_id} cannot stage generation {number} ({error}); it stays on generation {applied}")

    def _stage_reports(self, side: Database, number: int, txid: str) -> tuple[set[str], dict[str, tuple[str, int | None]]]:
        """(live nodes still staging, {node: (error, applied generation)} of those that cannot)."""
        live = live_nodes(side) - {self.config.node_id}
        if not live:
            return set(), {}
        marks = ", ".join("?" for _ in live)
        rows = side.execute(
            f"SELECT node_id, staged, staged_txid, generation, error, error_generation FROM {side.qualified(tables.NODES)} "
            f"WHERE node_id IN ({marks})",
            sorted(live),
        )
        ready, failed = set(), {}
        for node_id, staged, staged_txid, applied, error, error_generation in rows:
            if staged == number and staged_txid == txid:
                ready.add(node_id)
            elif error is not None and error_generation == number:
                failed[node_id] = (str(error).splitlines()[0], applied)
        return live - ready - set(failed), failed

    def _withdraw_if_aborted(self) -> None:
        """The announced generation's transaction aborted: say so, so staged nodes roll back at once."""
        number, txid, xid = self._announced  # type: ignore[misc]
        try:
            side = self._side_connection()
            ((status,),) = side.execute("SELECT pg_catalog.txid_status(?)", [xid])
            if status != "aborted":
                return  # committed, or still undecided (the nodes ask txid_status themselves)
            side.execute(
                f"UPDATE {side.qualified(tables.GENERATIONS)} SET state = 'withdrawn' WHERE generation = ? AND txid = ? AND state = 'staged'",
                [number, txid],
            )
            notify(side, "withdrawn", generation=number, txid=txid)
        except Exception:  # noqa: BLE001 - best effort: waiting nodes see the abort through txid_status
            pass

    # -- phase two: in the writer's transaction -------------------------------------------
    def _commit_desired(self, db: Database, plan: Plan, after: Registry) -> None:
        write_desired(db, DesiredState.from_registry(after, generation=plan.generation, txid=plan.txid))
        notify(db, "generation", generation=plan.generation, txid=plan.txid)
