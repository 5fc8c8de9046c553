"""The Python API: ``Installer(Config.load(path))`` (docs/design.md "Interfaces").

Every writer takes the lock, recovers unfinished transactions, plans, then
hands the plan to :func:`atomicplug.transaction.execute`. Readers (``list``,
``history``, ``verify``, ``settings``) take no lock: the registry is replaced
atomically. :meth:`Installer.preview` plans any writer's call the way the
writer would, without the lock, and runs nothing (docs/design.md "Dry run").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from atomicplug import ioerrors
from atomicplug.config import Config
from atomicplug.errors import NotInstalledError, OperationError, UsageError
from atomicplug.lock import writer_lock
from atomicplug.progress import Progress, ProgressEvent, accepting_lines, after_commit
from atomicplug.registry import Registry
from atomicplug.stages.repair import reinstall_ways, repair_before_use, repair_line
from atomicplug.verification import VerifyReport, kept_tree_damage, tree_sealed, verify_plugin

if TYPE_CHECKING:
    from atomicplug.change import Plan
    from atomicplug.cluster.writer import ClusterWriter
    from atomicplug.gc import Collected
    from atomicplug.intake import Package
    from atomicplug.preview import DryRun, Preview
    from atomicplug.registry import InstalledPlugin
    from atomicplug.settings.apply import Given
    from atomicplug.settings.schema import SettingsSchema
    from atomicplug.settings.view import SettingsView
    from atomicplug.stages import plan as planning

# The transaction engine and the stages are imported where they are used: `recover`
# with nothing pending (run by every app start) then costs little more than the
# interpreter's start-up, and importing this module stays cheap.

__all__ = ["Installer", "TransactionResult", "VerifyReport"]


@attrs.frozen
class TransactionResult:
    """What a writer did: its txid and one line per plugin changed (empty: no-op)."""

    txid: str
    operation: str
    changes: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _silent(_: ProgressEvent) -> None:
    pass


class Installer:
    """Install, upgrade, uninstall, roll back, enable and disable plugins transactionally.

    ``progress`` gets a :class:`~atomicplug.progress.ProgressEvent` for every
    step of the operations this installer runs (``str(event)`` is the CLI's line).
    """

    def __init__(self, config: Config, progress: Progress | None = None, *, dry_run: DryRun | None = None) -> None:
        """``dry_run`` (what :meth:`preview` passes): the writers plan as always, but read the
        registry without the lock, repair nothing, record no manifest, and hand the plan to
        ``dry_run`` instead of running it (see :mod:`atomicplug.preview`)."""
        self.config = config
        self._dry = dry_run
        # Cluster mode and the object store still say some things as plain lines: they arrive as ``note`` events.
        self.progress: Progress = accepting_lines(progress or _silent)
        self._cluster: ClusterWriter | None = None

    # -- plumbing -------------------------------------------------------------
    @contextmanager
    def _writing(self, what: str, outcome: str = ioerrors.NOTHING_CHANGED, *, cluster: bool = True) -> Iterator[Registry]:
        """Lock, recover anything unfinished, and yield the registry to plan on.

        Cluster mode (docs/design.md "Beyond one machine"): also the cluster's
        writer lock, and this node synced to the desired state first, so the
        registry yielded is the desired state's. A disk or database failure the
        transaction runner did not already report (the lock file, a read while
        planning) is a StorageError: "<what> failed: …; <outcome>"
        (docs/design.md "A failing disk is one line").
        """
        if self._dry is not None:
            yield Registry.load(self.config.registry_path)
            return
        with ioerrors.reported(what, outcome, self.config), self._locked():
            self._recover_locked()
            if not (cluster and self.config.cluster):
                yield Registry.load(self.config.registry_path)
                return
            from atomicplug.cluster.writer import ClusterWriter

            with ClusterWriter(self.config, self.progress) as self._cluster:
                try:
                    yield Registry.load(self.config.registry_path)
                finally:
                    self._cluster = None

    def _locked(self) -> AbstractContextManager[None]:
        return writer_lock(self.config.lock_path, self.config.lock_timeout, self.progress)

    def _recover_locked(self) -> list[tuple[str, str]]:
        from atomicplug.journal.reader import look, pending_journals

        outcomes = []
        pending, finished = look(self.config.journal_dir)
        if finished:  # left where writers look (a crash before their move, an earlier atomicplug)
            from atomicplug.journal.writer import put_aside

            put_aside(self.config.journal_dir, finished)
        if pending:  # else nothing to import the engine for
            from atomicplug.transaction import recover_pending

            outcomes = recover_pending(self.config, self.progress)
            if pending_journals(self.config.journal_dir):
                return outcomes  # still undecided: the highest generation may be its own, not the live one
        self._restore_live_link()
        return outcomes

    def _restore_live_link(self) -> None:
        """Before any change: a live-generation link removed by hand is put back (docs/design.md "Generations")."""
        from atomicplug import generations

        number = generations.restore_live_link(self.config)
        if number is not None:
            text = f"{self.config.home / generations.CURRENT} was missing (removed by hand?): it points at generation {number} again"
            self.progress(ProgressEvent("relink", text))

    def _run(
        self, plan: Plan, settings: Given | None = None, by: str | None = None,
        schemas: Mapping[str, SettingsSchema | None] | None = None, *, checked: Callable[[], None] | None = None,
    ) -> TransactionResult:
        """Check the settings the plan brings, then run it (settings in its database transaction).

        ``checked`` runs once every plan-time check passed, before the transaction starts.
        """
        if self._dry is not None:
            self._dry.keep(self.config, plan, settings, by, schemas)
            return TransactionResult(txid=plan.txid, operation=plan.operation, changes=plan.describe())
        from atomicplug.settings.apply import prepare
        from atomicplug.transaction import execute

        work = prepare(self.config, plan, settings, by, schemas) if plan.changes or settings else None
        if checked is not None:
            checked()
        for change in plan.changes:
            version = change.new_version or change.old_version
            self.progress(ProgressEvent("plan", change.describe(), change.plugin_id, version, operation=plan.operation))
        if self._cluster is not None:
            self._cluster.execute(plan, database_work=work)
        else:
            execute(self.config, plan, self.progress, database_work=work)
        if plan.changes:
            after_commit(self.progress)(ProgressEvent("done", operation=plan.operation))
        return TransactionResult(txid=plan.txid, operation=plan.operation, changes=plan.describe())

    # -- writers --------------------------------------------------------------
    def install_file(
        self,
        zip_path: str | Path,
        signature_path: str | Path | None = None,
        *,
        allow_downgrade: bool = False,
        rehearse: bool = True,
        with_requirements: bool = False,
        settings: Given | None = None,
        by: str | None = None,
    ) -> TransactionResult:
        """Install (or upgrade) one local zip, its ``.minisig`` beside it.

        The zip is read once, before waiting for the lock: its verified bytes are
        what gets installed, whatever happens to the file afterwards.
        """
        package = self.take_in(zip_path, signature_path)
        return self.install_packages(
            [package], allow_downgrade=allow_downgrade, rehearse=rehearse, with_requirements=with_requirements,
            settings=settings, by=by,
        )

    def take_in(self, zip_path: str | Path, signature_path: str | Path | None = None) -> Package:
        """Verify a local zip and keep its bytes as ``<home>/downloads/<sha256>.zip`` (docs/design.md "Intake")."""
        from atomicplug.intake import take_in_file

        self.progress(ProgressEvent("verify", f"verifying {Path(zip_path).name}"))
        return take_in_file(self.config, zip_path, signature_path)

    def install_packages(
        self,
        packages: Sequence[Package],
        *,
        allow_downgrade: bool = False,
        rehearse: bool = True,
        with_requirements: bool = False,
        settings: Given | None = None,
        by: str | None = None,
        repairing: frozenset[str] = frozenset(),
    ) -> TransactionResult:
        """Install packages that passed intake (dependencies first) in one transaction.

        ``with_requirements``: requirements that are installed but disabled are
        enabled in the same transaction (else the install is refused).
        ``settings``: plugin id → values for its settings schema, checked before
        the transaction and stored in its database transaction; ``by`` names who
        installs (docs/design.md "Plugin settings"). Raises SettingsError for
        values the schema refuses or a required setting left without a value.
        ``repairing``: sha256s of packages fetched only to repair the tree installed
        from them; one whose plugin another writer changed meanwhile is dropped (it
        would now be a downgrade or a refusal nobody asked for).
        """
        from atomicplug.intake import release_used
        from atomicplug.stages import permissions
        from atomicplug.stages import plan as planning
        from atomicplug.transaction import new_txid

        _check_python_dependencies(packages)
        permissions.check_packages(self.config, packages)  # before the lock and the journal: a refusal changes nothing
        with self._writing("install") as registry:
            packages = [p for p in packages if p.sha256 not in repairing or _installed_from(registry, p)]
            txid = new_txid(self.config.home)
            plan = planning.plan_install(
                registry,
                packages,
                txid,
                self.config.home,
                allow_downgrade=allow_downgrade,
                rehearse=rehearse,
                with_requirements=with_requirements,
            )
            repairs: list[str] = []
            trees = _trees_to_check(self.config, registry, packages, plan)

            def repair() -> None:
                """After the plan-time checks (a refused install repairs nothing), before the
                transaction, whose health gate imports the repaired trees."""
                repairs.extend(self._repair_damaged(trees))

            schemas = {p.metadata.id: p.metadata.settings for p in packages}
            if self._dry is not None:
                self._dry.repairs = self._repair_damaged(trees)
                return self._run(plan, settings, by, schemas)
            if plan.changes or settings:
                result = self._run(plan, settings, by, schemas, checked=repair)
                return attrs.evolve(result, changes=(*repairs, *result.changes))
            repair()
            release_used(self.config, [p.sha256 for p in packages])  # what they hold is installed (and repaired)
            if repairs:
                return TransactionResult(txid=txid, operation="repair", changes=tuple(repairs))
            return self._run(plan, settings, by, schemas)

    def _repair_damaged(self, trees: Sequence[tuple[InstalledPlugin, str]]) -> tuple[str, ...]:
        """Each tree a package was given for (``_trees_to_check``: entry, package sha256) is repaired
        from that package when ``verify --deep`` finds it damaged.

        The tree's files are hard links to objects, so the damaged objects are
        rewritten in place from the package (docs/design.md "The object store").
        A damaged record (the tree's own, or the package RECORD it trusts) hides
        the rest of the tree: it is repaired first, then the tree checked again.
        A dry run repairs nothing: it names what ``verify --deep`` finds damaged.
        """
        repaired = []
        for entry, sha256 in trees:
            if self._dry is not None:
                repaired.extend(_would_repair(entry, verify_plugin(self.config, entry, deep=True)))
                continue
            outcome = "the installed plugins are unchanged; installing the package again finishes the repair"
            line = repair_before_use(self.config, entry, sha256, self.progress, outcome=outcome)
            if line is not None:
                repaired.append(line)
        return tuple(repaired)

    def install(
        self,
        specs: str | Sequence[str],
        *,
        upgrade: bool = False,
        rehearse: bool = True,
        allow_downgrade: bool = False,
        with_requirements: bool = False,
        settings: Given | None = None,
        by: str | None = None,
        repair: bool = True,
    ) -> TransactionResult:
        """Install from the configured repository: ``id``, ``id==1.2``, ``id>=1.0`` (with dependencies).

        Downloads report ``download`` progress events with their bytes. ``repair``: a
        requested plugin that stays at its installed version but whose tree ``verify``
        finds damaged is repaired from that version's package, as reinstalling its zip
        does (docs/design.md "The tree record"); when the repository has not that very
        package, a ``note`` says so and the plugin is left as it is.
        """
        from atomicplug.repository import remote

        if isinstance(specs, str):
            specs = [specs]
        damaged: dict[str, InstalledPlugin] = {}

        def damaged_tree(plugin_id: str) -> tuple[str, str] | None:
            """(version, sha256) of a requested plugin the resolution leaves as it is, when its tree is damaged."""
            entry = self._damaged(plugin_id)
            if entry is None:
                return None
            damaged[plugin_id] = entry
            return entry.version, entry.current.sha256

        with ioerrors.reported("install", site=self.config):  # the repository's caches
            packages = remote.plan_remote(
                self.config, list(specs), self._installed_versions(), upgrade=upgrade, record=self._dry is None,
                progress=self.progress, repair=damaged_tree if repair else None,
            )  # fmt: skip
        fetched, changed = {p.sha256 for p in packages}, {p.metadata.id for p in packages}
        for pid, entry in sorted(damaged.items()):
            if entry.current.sha256 not in fetched and pid not in changed:
                self.progress(ProgressEvent("note", f"{pid} {entry.version} is damaged (`atomicplug verify {pid}`), and the "
                                            "repository has not its package: installing its zip again repairs it"))  # fmt: skip
        return self.install_packages(
            packages, rehearse=rehearse, allow_downgrade=allow_downgrade, with_requirements=with_requirements,
            settings=settings, by=by, repairing=frozenset(e.current.sha256 for e in damaged.values()) & fetched,
        )

    def upgrade(self, plugin_ids: Sequence[str] | None = None, *, rehearse: bool = True) -> TransactionResult:
        """Upgrade the named plugins (None: all installed) to the repository's highest versions (no repairs:
        ``upgrade --all`` would otherwise hash every installed tree)."""
        ids = list(plugin_ids) if plugin_ids else sorted(self._installed_versions())
        if not ids:
            return TransactionResult(txid="", operation="install", changes=())
        return self.install(ids, upgrade=True, rehearse=rehearse, repair=False)

    def uninstall(self, plugin_id: str, *, keep_data: bool = False, cascade: bool = False) -> TransactionResult:
        from atomicplug.stages import plan as planning
        from atomicplug.transaction import new_txid

        with self._writing(f"uninstall {plugin_id}") as registry:
            plan = planning.plan_uninstall(registry, [plugin_id], new_txid(self.config.home), cascade=cascade, keep_data=keep_data)
            return self._run(plan)

    def rollback(
        self,
        plugin_id: str | None = None,
        *,
        generation: int | None = None,
        transaction: str | None = None,
        keep_data: bool = False,
        settings: Given | None = None,
        by: str | None = None,
    ) -> TransactionResult:
        """Roll back one plugin to the version it replaced, or the whole view to an earlier generation.

        ``generation``: the view of that (kept) generation comes back, every plugin
        in one transaction. ``transaction``: the generation before the one that
        transaction made (which must be the live one). ``keep_data``: tables of
        plugins the rollback uninstalls stay. ``settings``, ``by``: as for an
        install, for what the rollback installs again (a setting the version it
        goes back to requires may have been dropped by the upgrade it undoes).
        """
        from atomicplug import generations
        from atomicplug.stages import plan as planning
        from atomicplug.transaction import new_txid

        chosen = sum(x is not None for x in (plugin_id, generation, transaction))
        if chosen != 1:
            raise UsageError("rollback takes one plugin id, or --generation N, or --transaction TXID")
        with self._writing(f"rollback {plugin_id}" if plugin_id is not None else "rollback") as registry:
            if plugin_id is not None:
                entry = registry.plugins.get(plugin_id)
                previous = entry.previous if entry is not None else None
                if entry is not None and previous is not None and (self.config.home / previous.tree).is_dir():
                    # before planning, which reads the kept tree's metadata.json
                    _refuse_damaged_tree(self.config, "rollback", attrs.evolve(entry, current=previous))
                fetched = self._previous_package(registry, plugin_id)
                signer = generations.signer_of(self.config, plugin_id, previous.tree) if previous is not None else None
                plan = planning.plan_rollback(
                    registry, plugin_id, new_txid(self.config.home), self.config.home, fetched=fetched, signed_by=signer
                )
                if fetched is not None:  # the tree is staged from it later: its settings schema is the package's
                    return self._run(plan, settings, by, {plugin_id: fetched.metadata.settings})
            else:
                target = self._target_generation(registry, generation, transaction)
                plan = planning.plan_generation(registry, target, new_txid(self.config.home), self.config.home, keep_data=keep_data)
                _refuse_damaged_trees(self.config, plan)
            return self._run(plan, settings, by)

    def _previous_package(self, registry: Registry, plugin_id: str) -> Package | None:
        """On a cluster node that never made the tree ``rollback ID`` goes back to: its package, fetched and verified."""
        entry = registry.plugins.get(plugin_id)
        if self._cluster is None or entry is None or entry.previous is None or (self.config.home / entry.previous.tree).is_dir():
            return None
        return self._cluster.obtain(plugin_id, entry.previous.version, entry.previous.sha256)

    def _target_generation(self, registry: Registry, generation: int | None, transaction: str | None) -> Registry:
        from atomicplug import generations

        if transaction is not None:
            made = [n for n in generations.numbers(self.config) if self._generation_registry(n).txid == transaction]
            if not made:
                raise UsageError(f"no kept generation was made by transaction {transaction} (see `atomicplug history`)")
            if made[0] != registry.generation:
                raise UsageError(
                    f"transaction {transaction} made generation {made[0]}, but generation {registry.generation} is live; "
                    f"roll back to an earlier generation with --generation (that also undoes what came after)"
                )
            if registry.parent is None:
                raise UsageError(f"transaction {transaction} made the first generation; there is nothing before it")
            generation = registry.parent
        assert generation is not None
        if generation == registry.generation:
            raise UsageError(f"generation {generation} is already the live one")
        if generation not in generations.numbers(self.config):
            kept = ", ".join(map(str, generations.numbers(self.config))) or "none"
            raise UsageError(f"generation {generation} is not kept (kept: {kept}, listed by `atomicplug generations`; see keep_generations)")
        return self._generation_registry(generation)

    def _generation_registry(self, number: int) -> Registry:
        from atomicplug import generations

        return Registry.load(generations.folder(self.config, number) / generations.REGISTRY_NAME, required=True)

    def enable(self, plugin_id: str, *, with_requirements: bool = False) -> TransactionResult:
        """Put a disabled plugin's entries back; its disabled requirements too when ``with_requirements``."""
        from atomicplug.stages import plan as planning
        from atomicplug.transaction import new_txid

        with self._writing(f"enable {plugin_id}") as registry:
            plan = planning.plan_toggle(registry, plugin_id, True, new_txid(self.config.home), with_requirements=with_requirements)
            _refuse_damaged_trees(self.config, plan)  # disabled, its tree was nobody's to check
            return self._run(plan)

    def disable(self, plugin_id: str) -> TransactionResult:
        from atomicplug.stages import plan as planning
        from atomicplug.transaction import new_txid

        with self._writing(f"disable {plugin_id}") as registry:
            return self._run(planning.plan_toggle(registry, plugin_id, False, new_txid(self.config.home)))

    def configure(self, plugin_id: str, values: Mapping[str, Any], *, by: str | None = None) -> TransactionResult:
        """Change an installed plugin's settings (``None`` for a field: back to its default).

        One small database transaction, recorded in history by field name (never
        a value); the application's loader hands the new values to the addon at
        its next ``reload()``. Raises NotInstalledError, SettingsError.
        """
        from atomicplug.settings.apply import configure
        from atomicplug.transaction import new_txid

        with self._writing(f"configure {plugin_id}") as registry:
            txid = new_txid(self.config.home)
            changed = configure(self.config, registry, plugin_id, values, by, txid)
        line = f"configure {plugin_id}: {', '.join(changed)}" if changed else None
        return TransactionResult(txid=txid if changed else "", operation="configure", changes=(line,) if line else ())

    def preview(self, operation: str, *args: Any, **options: Any) -> Preview:
        """What ``operation`` (a writer's name: install, install_file, install_packages, upgrade,
        uninstall, rollback, enable, disable) would do with these arguments; nothing changes.

        ``installer.preview("uninstall", "crm", cascade=True)`` plans exactly as
        ``installer.uninstall("crm", cascade=True)`` would, then reads the ledger
        for the migrations each change runs and the database for the tables it
        drops. A refusal is part of the returned value (with, when an option
        resolves it, the preview with that option). A repository install may
        download and take in packages; no state changes (docs/design.md "Dry run").
        """
        from atomicplug.preview import preview

        return preview(self.config, lambda dry: Installer(self.config, self.progress, dry_run=dry), operation, args, options)

    def recover(self) -> list[tuple[str, str]]:
        """Finish or undo unfinished transactions; returns (txid, forward|back) pairs."""
        with ioerrors.reported("recover", site=self.config), self._locked():
            return self._recover_locked()

    def gc(self, *, dry_run: bool = False) -> dict[str, int]:
        """Remove generations, store trees, blobs and journals that no kept generation needs.

        On a cluster node also the packages in the cluster's store that no kept
        generation of the cluster names (``cluster_packages``, ``cluster_bytes``).
        ``dry_run``: what it would remove and the ``bytes`` that would free, nothing
        removed and nothing recovered (under the lock, so no transaction runs meanwhile).
        """
        from atomicplug.gc import collect, survey

        if dry_run:
            with ioerrors.reported("gc --dry-run", site=self.config), self._locked():  # neither recovers nor relinks
                return self._collect(survey, dry_run=True)
        with self._writing("gc", "the installed plugins are unchanged; run `atomicplug gc` again", cluster=False):
            return self._collect(collect, dry_run=False)

    def _collect(self, local: Callable[[Config], Collected], *, dry_run: bool) -> dict[str, int]:
        """``local`` (``gc.collect``, or ``gc.survey`` in a dry run) on this node's own files; then on a
        cluster node the cluster's store (``cluster_packages``, ``cluster_bytes``)."""
        from atomicplug.gc import BLOB_GRACE_SECONDS

        removed = local(self.config).as_dict()
        if self.config.cluster:
            from atomicplug.cluster.packages import collect as collect_packages

            removed["cluster_packages"], removed["cluster_bytes"] = collect_packages(self.config, BLOB_GRACE_SECONDS, dry_run=dry_run)
        return removed

    # -- readers --------------------------------------------------------------
    def _damaged(self, plugin_id: str) -> InstalledPlugin | None:
        """The installed entry of ``plugin_id`` when ``verify --deep`` finds its files changed, missing
        or added (a wrong addon link is no damage a package repairs); else None.

        Read without the lock: it only decides what to download; under the lock the
        package repairs only a tree still installed from it (:meth:`install_packages`).
        """
        entry = Registry.load(self.config.registry_path).plugins.get(plugin_id)
        if entry is None:
            return None
        return entry if verify_plugin(self.config, entry, deep=True).files_damaged else None

    def _installed_versions(self) -> dict[str, str]:
        return {pid: e.version for pid, e in Registry.load(self.config.registry_path).plugins.items()}

    def list(self) -> list[dict[str, Any]]:
        """Installed plugins as plain dicts (id, name, version, enabled, requires, previous_version, txid)."""
        registry = Registry.load(self.config.registry_path)
        return [
            {
                "id": e.id,
                "name": e.name,
                "version": e.version,
                "enabled": e.enabled,
                "requires": list(e.requires),
                "previous_version": e.previous.version if e.previous else None,
                "sha256": e.current.sha256,
                "installed_at": e.installed_at,
                "txid": e.txid,
                "signed_by": e.signed_by,
            }
            for e in sorted(registry.plugins.values(), key=lambda e: e.id)
        ]

    def settings(self, plugin_id: str) -> SettingsView:
        """An installed plugin's settings for people: schema, values, who and when; secrets only as set or not."""
        from atomicplug.settings.apply import view

        return view(self.config, Registry.load(self.config.registry_path), plugin_id)

    def generations(self) -> list[dict[str, Any]]:
        """The kept generations, newest first, as plain dicts: what ``rollback --generation N`` chooses from.

        Each: ``generation``, ``live``, ``plugins`` it shows (id, version, enabled), and the
        transaction that made it: ``txid``, ``parent`` (the generation live before it) and,
        from history, ``operation``, ``finished`` and its ``changes`` (None/[] when history
        has no line for it).
        """
        from atomicplug import generations
        from atomicplug.change import describe_step
        from atomicplug.history import entries_of

        live = generations.current_number(self.config)
        registries = {number: self._generation_registry(number) for number in reversed(generations.numbers(self.config))}
        made = entries_of(self.config.home, [r.txid for r in registries.values() if r.txid])
        rows = []
        for number, registry in registries.items():
            entry = made.get(registry.txid, {})
            rows.append({
                "generation": number, "live": number == live, "txid": registry.txid or None, "parent": registry.parent,
                "operation": entry.get("operation"), "finished": entry.get("finished"),
                "changes": [describe_step(step) for step in entry.get("steps", [])],
                "plugins": [{"id": e.id, "version": e.version, "enabled": e.enabled} for e in sorted(registry.plugins.values(), key=lambda e: e.id)],
            })  # fmt: skip
        return rows

    def history(self, newest: int | None = None) -> list[dict[str, Any]]:
        """Finished transactions, oldest first; ``newest``: only the last N (read from the end of the file)."""
        from atomicplug.history import read_history

        return read_history(self.config.home, newest)

    def verify(self, plugin_id: str | None = None, *, deep: bool = False) -> list[VerifyReport]:
        """Compare installed trees with the sha256 recorded when they were staged; ``deep``: also
        compile each pyc's source again and compare (what reinstalling checks before it repairs).

        Without the writer lock (hashing a large tree takes seconds): damage found while a writer
        was active, or across a switch of the live generation, may be the registry of one
        generation read against the links of the next, so it is looked at again, until it is seen
        with no writer about or ``lock_timeout`` has passed (docs/design.md "Readers without the lock").
        """
        import time

        from atomicplug import generations
        from atomicplug.lock import POLL_SECONDS, writer_active

        deadline = time.monotonic() + self.config.lock_timeout
        while True:
            live, busy = generations.current_number(self.config), writer_active(self.config.lock_path)
            reports = self._verify_once(plugin_id, deep)
            if all(r.ok for r in reports) or time.monotonic() > deadline:
                return reports
            if not busy and not writer_active(self.config.lock_path) and generations.current_number(self.config) == live:
                return reports  # no transaction ran across it: the damage is real
            time.sleep(POLL_SECONDS)

    def _verify_once(self, plugin_id: str | None, deep: bool) -> list[VerifyReport]:
        registry = Registry.load(self.config.registry_path)
        if plugin_id is not None and plugin_id not in registry.plugins:
            raise NotInstalledError(f"{plugin_id} is not installed")  # exit 1, as for uninstall, enable, ...
        entries = [registry.plugins[plugin_id]] if plugin_id else [registry.plugins[p] for p in sorted(registry.plugins)]
        return [verify_plugin(self.config, entry, deep=deep) for entry in entries]


def _trees_to_check(config: Config, registry: Registry, packages: Sequence[Package], plan: Plan) -> list[tuple[InstalledPlugin, str]]:
    """(entry, package sha256) of each store tree these packages are installed as without being
    staged, to check as ``verify --deep`` does and repair from its package (docs/design.md "The
    tree record"): the installed tree of the very package (a reinstall: asked to repair), and a
    tree the store still holds that the plan makes live again (an upgrade back after a rollback,
    a downgrade to the version upgraded from) unless it passes the check a tree staged again
    would get (``tree_sealed``)."""
    trees = {registry.plugins[p.metadata.id].current.tree: (registry.plugins[p.metadata.id], p.sha256) for p in packages if _installed_from(registry, p)}
    given = {p.sha256 for p in packages}
    for change in plan.changes:
        after, package = change.after, change.package
        if after is None or package is None or package not in given or change.stage_tree or after.current.tree in trees:
            continue
        if not tree_sealed(config, after.current.tree):
            trees[after.current.tree] = (after, package)
    return list(trees.values())


def _refuse_damaged_trees(config: Config, plan: Plan) -> None:
    """A rollback or an enable makes trees the store holds live again with no package to repair them
    from: one that fails ``tree_sealed`` and then ``verify --deep`` refuses it, naming what repairs it."""
    for change in plan.changes:
        after, before = change.after, change.before
        if after is None or not after.enabled or change.stage_tree:
            continue  # not live after, or staged from its package now
        if before is not None and before.enabled and before.current == after.current:
            continue  # live already
        _refuse_damaged_tree(config, plan.operation, after)


def _refuse_damaged_tree(config: Config, operation: str, entry: InstalledPlugin) -> None:
    """OperationError naming the damage and the install that repairs it, when ``entry``'s tree is damaged."""
    report = kept_tree_damage(config, entry)
    if report is None:
        return
    plugin = f"{entry.id} {entry.version}"
    ways = reinstall_ways(entry.id, entry.version)
    if operation == "enable":
        fix = f"install {plugin} from its package again, which repairs it ({ways}), then enable it"
    else:
        fix = f"install {plugin} from its package instead, which repairs it ({ways})"
    raise OperationError(f"{operation} refused: the store tree of {plugin} is damaged ({report.damage()}); {fix}")


def _installed_from(registry: Registry, package: Package) -> bool:
    """The plugin of ``package`` is installed, and its current tree came from that very package."""
    entry = registry.plugins.get(package.metadata.id)
    return entry is not None and entry.current.sha256 == package.sha256


def _would_repair(entry: InstalledPlugin, report: VerifyReport) -> list[str]:
    """A dry run's line for the repair reinstalling would make (none for an intact tree)."""
    if not report.files_damaged:
        return []
    if report.missing == (entry.current.tree,):  # removed whole: staged again (stages.repair)
        return [f"repair {entry.id} {entry.version}: its store tree is missing"]
    return [repair_line(entry, len(report.changed) + len(report.missing) + len(report.extra), " damaged")]


def _check_python_dependencies(packages: Sequence[Package]) -> None:
    requirements = [str(dep) for p in packages for dep in p.metadata.backend.dependencies]
    if not requirements:
        return
    from atomicplug.repository.pydeps import check_python_dependencies

    check_python_dependencies(requirements)
