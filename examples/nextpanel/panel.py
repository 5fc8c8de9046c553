"""The marketplace's state and work: catalogue, operations (queued, one at a time), audit, names.

Every write runs the blocking Installer in a worker thread (the event loop
keeps serving). Operations of this panel wait their turn in an in-process
queue instead of racing for the installer's lock, so admins never get 409
storms; only a full queue, or another process (the CLI) holding the lock
past ``lock_timeout``, is "busy" (409 with ``Retry-After``). After each
operation the loader imports what changed in a worker thread and swaps the
route table on the event loop (microseconds), so routes appear and disappear
without a restart and without stalling requests; the new listing is built
before the operation is reported done, so readers never build it. Every
outcome, refusals included, goes to the panel's audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from typing import Any

import attrs
from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from packaging.version import Version

from atomicplug.catalog import InstalledDescription, installed_catalog
from atomicplug.config import Config
from atomicplug.errors import DependencyError, LockBusyError, NotInstalledError, SecurityError, UsageError
from atomicplug.installer import Installer, TransactionResult
from atomicplug.loader import AddonLoader
from atomicplug.progress import ProgressEvent
from atomicplug.registry import Registry
from atomicplug.repository.manifest import ManifestEntry

from .audit import AuditLog
from .errors import RETRY_AFTER_SECONDS, describe, is_unreachable
from .fleet import wait_for_fleet
from .models import Catalogue, ErrorBody, HistoryEntry, HistoryPlugin, OperationBody, PluginCard, RepositoryStatus
from .operations import Operation, OperationTracker
from .calls import Call
from .listing import Listing, ListingCache
from .repository_view import ManifestSnapshot, ManifestView
from .stage_text import StageContext

__all__ = ["MAX_QUEUED", "OPERATION_LOCK_TIMEOUT", "Panel"]

#: How long a queued operation waits for another process (e.g. the CLI) to release the installer.
OPERATION_LOCK_TIMEOUT = 30.0
#: Operations waiting beyond this many are refused as busy (409, Retry-After).
MAX_QUEUED = 20

def _outcome(error: BaseException) -> str:
    if isinstance(error, LockBusyError):
        return "busy"
    if is_unreachable(error):
        return "unreachable"
    if isinstance(error, SecurityError | DependencyError | UsageError | NotInstalledError):
        return "refused"
    return "failed"


@attrs.define
class Panel:
    """What the marketplace works on: config, loader, tracker, audit log and the cached repository view."""

    config: Config
    loader: AddonLoader
    admin_name: str = "admin"
    lock_timeout: float = OPERATION_LOCK_TIMEOUT
    tracker: OperationTracker = attrs.field(factory=OperationTracker)
    audit: AuditLog = attrs.field(init=False)
    view: ManifestView | None = attrs.field(init=False)
    _names: dict[str, str] = attrs.field(factory=dict, init=False)
    _queue: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    _loading: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    _tasks: set[asyncio.Task[Any]] = attrs.field(factory=set, init=False)
    listings: ListingCache = attrs.field(init=False)
    _registry: str = attrs.field(init=False)  # the registry link's path, stat'ed by every listing

    def __attrs_post_init__(self) -> None:
        self.audit = AuditLog(self.config.home)
        self.view = ManifestView(self.config) if self.config.repository else None
        self.listings = ListingCache(self._build)
        self._registry = str(self.config.registry_path)

    async def reload(self) -> None:
        """Follow the installed state: imports in a worker thread, the route swap on the event loop."""
        async with self._loading:
            await run_in_threadpool(self.loader.load_changes)
            self.loader.remount()

    # -- names ---------------------------------------------------------------------------
    def name(self, plugin_id: str) -> str:
        """A plugin's human name (from installed metadata or the cached manifest), else its id."""
        if plugin_id not in self._names:
            snapshot = self.view.peek() if self.view else None
            self._names = _names(installed_catalog(self.config), _entries(snapshot))
        return self._names.get(plugin_id, plugin_id)

    def context(self) -> dict[str, Any]:
        return {"name": self.name, "repository": self.config.repository}

    # -- the catalogue -------------------------------------------------------------------------
    def snapshot(self, refresh: bool = False) -> ManifestSnapshot | None:
        return self.view.current(refresh=refresh) if self.view else None

    def _listing_key(self, snapshot: ManifestSnapshot | None) -> Any:
        """What a listing shows depends on: the live registry (a new generation is a new file), the manifest, load failures."""
        try:
            stat = os.stat(self._registry)
            registry_stamp: Any = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            registry_stamp = None
        return (registry_stamp, _manifest_key(snapshot), tuple(sorted(self.loader.failures.items())))

    def current_listing(self) -> Listing | None:
        """The listing when nothing it shows changed: a stat and a comparison, for the event loop.
        None when it must be built (or the first manifest fetch is still running)."""
        if self.view is not None and self.view.peek().checked_at is None:
            return None
        snapshot = self.snapshot()  # not blocking once a first fetch ended (a stale one refreshes in the background)
        return self.listings.peek(self._listing_key(snapshot))

    def listing(self, refresh: bool = False) -> Listing:
        """The listing, built if anything it shows changed (one build at a time); blocking."""
        snapshot = self.snapshot(refresh)
        return self.listings.get(self._listing_key(snapshot), snapshot)

    def _build(self, snapshot: ManifestSnapshot | None) -> Catalogue:
        installed = installed_catalog(self.config)
        entries = _entries(snapshot)
        names = self._names = _names(installed, entries)
        required_by = _required_by(installed)
        cards = [
            _card(pid, entries.get(pid, []), installed.get(pid), required_by.get(pid, []), self.loader.failures.get(pid), names)
            for pid in sorted(set(entries) | set(installed))
        ]
        return Catalogue(
            repository=self._repository_status(snapshot),
            categories=sorted({c.category for c in cards if c.category}),
            updates=sum(c.update_available for c in cards),
            plugins=cards,
        )

    def _repository_status(self, snapshot: ManifestSnapshot | None) -> RepositoryStatus:
        url = self.config.repository
        if snapshot is None:
            return RepositoryStatus(url=url, state="none")
        if snapshot.error is not None:
            error = describe(snapshot.error, name=self.name, repository=url)
            state = "unreachable" if is_unreachable(snapshot.error) else "untrusted" if isinstance(snapshot.error, SecurityError) else "unreachable"
            return RepositoryStatus(url=url, state=state, checked_at=snapshot.checked_at, error=error)  # type: ignore[arg-type]
        if snapshot.manifest is None:
            return RepositoryStatus(url=url, state="loading")
        count = len({e.id for e in snapshot.manifest.plugins})
        return RepositoryStatus(url=url, state="ok", checked_at=snapshot.checked_at, plugin_count=count)

    def installed(self) -> dict[str, InstalledDescription]:
        return installed_catalog(self.config)

    def installed_version(self, plugin_id: str) -> str | None:
        entry = Registry.load(self.config.registry_path).plugins.get(plugin_id)
        return entry.version if entry else None

    # -- operations --------------------------------------------------------------------------------
    def installer(self, operation: Operation) -> Installer:
        config = attrs.evolve(self.config, lock_timeout=min(self.config.lock_timeout, self.lock_timeout))
        return Installer(config, progress=self.tracker.progress(operation))

    async def operate(
        self, request: Request, response: Response, kind: str, plugin_id: str, call: Call, *, wait: bool = True, keep_data: bool = False,
        target_version: str | None = None,
    ) -> OperationBody:
        """Queue ``call``; with ``wait`` answer when it ended, else 202 with the queued operation at once."""
        who = _who(self.admin_name, request)
        if len(self.tracker.active()) >= MAX_QUEUED:
            error = LockBusyError(f"{MAX_QUEUED} marketplace operations are already waiting; try again when they have finished")
            body = describe(error, **self.context())
            self._record(who, kind, plugin_id, None, body, _outcome(error), target_version)
            request.state.error_body = body
            raise error
        operation = self.tracker.start(kind, plugin_id, StageContext(kind, self.name, keep_data))
        request.state.operation_id = operation.id
        run = self._execute(operation, call.by(who), who, target_version)
        if wait:
            return await run
        task = asyncio.create_task(_quietly(run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        response.status_code = 202
        found = self.tracker.get(operation.id)
        assert found is not None
        return found

    async def _execute(self, operation: Operation, call: Call, who: str, target_version: str | None) -> OperationBody:
        async with self._queue:
            self.tracker.running(operation)
            installer = self.installer(operation)
            before = Registry.load(self.config.registry_path)
            history_offset = _history_size(self.config)
            try:
                result = await run_in_threadpool(call.run, installer)
            except Exception as exc:
                body = describe(exc, operation_id=operation.id, **self.context())
                txids = _new_txids(self.config, history_offset)
                self._record(who, operation.kind, operation.plugin_id, before, body, _outcome(exc), target_version, txids)
                await self.reload()  # a failure after COMMIT still changed the state; reload is cheap otherwise
                self.tracker.fail(operation, body)
                raise
            await self.reload()
            fleet = None
            if self.config.cluster and result.changed:  # done when every live node has switched too
                self.tracker.progress(operation)(ProgressEvent("note", "waiting for every live node of the cluster to switch"))
                fleet = await run_in_threadpool(wait_for_fleet, self.config, None)
            if self.view is not None and operation.kind in ("install", "upgrade", "downgrade", "update-all"):
                self.view.refresh_soon()  # the install accepted a manifest at least as new as the listed one
            await run_in_threadpool(self.listing)  # built here, before "done", so no reader has to build it
            after = Registry.load(self.config.registry_path)
            mine = after.plugins.get(operation.plugin_id)
            body = {
                "txid": result.txid or None,
                "changed": result.changed,
                "changes": list(result.changes),
                "plugin": _plugin_dict(mine) if mine else None,
                "load_error": self.loader.failures.get(operation.plugin_id),
                "fleet": fleet,
            }
            self.tracker.finish(operation, body)
            changed = _diff(before, after, self.name)
            self.audit.record({
                "who": who, "operation": operation.kind, "outcome": "done", "txid": result.txid or None,
                "plugins": changed or [self._plugin_ref(operation.plugin_id, before, target_version)],
                "title": None if result.changed else "Nothing to do", "detail": _done_text(operation.kind, result, changed) or None,
            })
            found = self.tracker.get(operation.id)
            assert found is not None
            return found

    def _plugin_ref(self, plugin_id: str, before: Registry | None, target_version: str | None) -> dict[str, Any]:
        entry = before.plugins.get(plugin_id) if before else None
        return {"id": plugin_id, "name": self.name(plugin_id), "from_version": entry.version if entry else None, "to_version": target_version}

    def _record(self, who: str, kind: str, plugin_id: str, before: Registry | None, body: ErrorBody, outcome: str,
                target_version: str | None, txids: list[str] | None = None) -> None:
        if before is None:
            before = Registry.load(self.config.registry_path)
        ids = [plugin_id] if plugin_id else sorted(before.plugins)
        self.audit.record({
            "who": who, "operation": kind, "outcome": outcome, "txid": txids[-1] if txids else None,
            "plugins": [self._plugin_ref(pid, before, target_version) for pid in ids],
            "title": body.title, "detail": body.detail,
        })

    # -- history --------------------------------------------------------------------------------
    def history(self, limit: int) -> list[HistoryEntry]:
        """The panel's audit entries and, for transactions made elsewhere (the CLI), the installer's; newest first."""
        audited = self.audit.read(limit)
        seen = {e.get("txid") for e in audited if e.get("txid")}
        entries = [_audit_entry(e) for e in audited]
        # Enough of the installer's newest entries for the loop below: each is either one of the
        # audited (skipped) or one more entry; not the whole file, which grows with every change.
        for item in reversed(Installer(self.config).history(newest=len(audited) + 2 * limit)):
            if item["txid"] in seen:
                continue
            entries.append(HistoryEntry(
                time=item.get("finished") or "", who="outside the panel", operation=item["operation"],
                outcome="done" if item["outcome"] == "done" else "rolled back", txid=item["txid"], detail=item.get("reason"),
                plugins=[HistoryPlugin(id=s["id"], name=self.name(s["id"]), from_version=s.get("from"), to_version=s.get("to"),
                                       enabled=s.get("enabled")) for s in item.get("steps", [])],
            ))
            if len(entries) >= 2 * limit:
                break
        entries.sort(key=lambda e: _instant(e.time), reverse=True)
        return entries[:limit]


def _instant(time: str) -> str:
    """A time that sorts with the others: an entry written before the installer's had microseconds
    (``…:05Z``) counts as the start of its second (``…:05.000000Z``), not after every entry in it."""
    return time if "." in time or not time.endswith("Z") else f"{time[:-1]}.000000Z"


def _manifest_key(snapshot: ManifestSnapshot | None) -> Any:
    """The listed manifest by its signed version (a refresh that brings the same one changes nothing), or its error."""
    if snapshot is None:
        return None
    if snapshot.manifest is not None:
        return ("manifest", snapshot.manifest.version, snapshot.checked_at is not None)
    if snapshot.error is not None:
        return ("error", type(snapshot.error).__name__, str(snapshot.error))
    return ("loading",)


async def _quietly(run: Any) -> None:
    with contextlib.suppress(Exception):  # recorded by the tracker and the audit log; nobody awaits this task
        await run


def _who(admin_name: str, request: Request) -> str:
    host = request.client.host if request.client else None
    return f"{admin_name} ({host})" if host else admin_name


def _history_size(config: Config) -> int:
    try:
        return os.stat(config.home / "history.jsonl").st_size
    except FileNotFoundError:
        return 0


def _new_txids(config: Config, offset: int) -> list[str]:
    """Transactions the installer's history gained since ``offset`` (an aborted one's txid, for the audit)."""
    try:
        with open(config.home / "history.jsonl", "rb") as handle:
            handle.seek(offset)
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return []
    txids = []
    for line in lines:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            txids.append(json.loads(line)["txid"])
    return txids


def _plugin_dict(entry: Any) -> dict[str, Any]:
    return {"id": entry.id, "name": entry.name, "version": entry.version, "enabled": entry.enabled,
            "previous_version": entry.previous.version if entry.previous else None}


def _done_text(kind: str, result: TransactionResult, changed: list[dict[str, Any]]) -> str:
    """What an operation did, in words, from the registry's difference (or the fields a configure changed)."""
    if kind == "configure":
        return f"Settings changed: {result.changes[0].split(': ', 1)[1]}" if result.changes else ""
    words = []
    for plugin in changed:
        old, new, name = plugin["from_version"], plugin["to_version"], plugin["name"]
        if new is None:
            words.append(f"Remove {name} {old}")
        elif old is None:
            words.append(f"Install {name} {new}")
        elif old != new:
            words.append(f"{'Upgrade' if Version(new) > Version(old) else 'Downgrade'} {name} from {old} to {new}")
        else:
            words.append(f"{'Enable' if plugin['enabled'] else 'Disable'} {name}")
    return "; ".join(words)


def _diff(before: Registry, after: Registry, name: Callable[[str], str]) -> list[dict[str, Any]]:
    changed = []
    for pid in sorted(set(before.plugins) | set(after.plugins)):
        old, new = before.plugins.get(pid), after.plugins.get(pid)
        if old == new:
            continue
        changed.append({"id": pid, "name": name(pid), "from_version": old.version if old else None,
                        "to_version": new.version if new else None, "enabled": new.enabled if new else None})
    return changed


def _audit_entry(entry: dict[str, Any]) -> HistoryEntry:
    outcome = entry.get("outcome", "failed")
    return HistoryEntry(
        time=entry.get("time", ""), who=entry.get("who", ""), operation=entry.get("operation", ""),
        outcome=outcome if outcome in ("done", "failed", "refused", "busy", "unreachable") else "failed",
        plugins=[HistoryPlugin(**{k: p.get(k) for k in ("id", "name", "from_version", "to_version", "enabled")}) for p in entry.get("plugins", [])],
        title=entry.get("title"), detail=entry.get("detail"), txid=entry.get("txid"),
    )


def _entries(snapshot: ManifestSnapshot | None) -> dict[str, list[ManifestEntry]]:
    entries: dict[str, list[ManifestEntry]] = {}
    if snapshot is not None and snapshot.manifest is not None:
        for entry in snapshot.manifest.plugins:
            entries.setdefault(entry.id, []).append(entry)
    return entries


def _names(installed: dict[str, InstalledDescription], entries: dict[str, list[ManifestEntry]]) -> dict[str, str]:
    """Plugin id → name: the newest repository entry's, else the installed metadata's."""
    names = {pid: str(d.field("name") or d.entry.name or pid) for pid, d in installed.items()}
    for pid, offered in entries.items():
        newest = max(offered, key=lambda e: e.parsed_version)
        if newest.name:
            names[pid] = newest.name
    return names


def _required_by(installed: dict[str, InstalledDescription]) -> dict[str, list[str]]:
    from atomicplug.metadata import PluginRequirement

    result: dict[str, list[str]] = {}
    for pid, description in installed.items():
        for text in description.entry.requires:
            result.setdefault(PluginRequirement.parse(text).id, []).append(pid)
    return {k: sorted(v) for k, v in result.items()}


def _card(pid: str, entries: list[ManifestEntry], mine: InstalledDescription | None, required_by: list[str], load_error: str | None,
          names: dict[str, str]) -> PluginCard:
    """One marketplace card: the newest repository entry's facts, else the installed metadata's, plus the installed state."""
    versions = sorted(entries, key=lambda e: e.parsed_version)
    latest = versions[-1] if versions else None
    installed = Version(mine.entry.version) if mine else None
    update = bool(latest and installed and latest.parsed_version > installed)
    previous = mine.entry.previous.version if mine and mine.entry.previous else None
    offered_upgrade = latest.version if update and latest else None

    def fact(field: str, default: Any) -> Any:
        if latest is not None and getattr(latest, field) not in (None, ""):
            return getattr(latest, field)
        return mine.field(field, default) if mine else default

    return PluginCard(
        id=pid,
        name=names.get(pid, pid),
        description=str(fact("description", "") or ""),
        category=str(fact("category", "") or ""),
        price=fact("price", None),
        author=str(mine.field("author", "") if mine else ""),
        requires=list(latest.requires) if latest else list(mine.entry.requires) if mine else [],
        required_by=required_by,
        latest_version=latest.version if latest else None,
        versions=[e.version for e in versions],
        installed_version=mine.entry.version if mine else None,
        enabled=bool(mine and mine.entry.enabled),
        previous_version=previous,
        # After a rollback the previous version is often the newest one: offer it once, as the upgrade.
        rollback_version=previous if previous and previous != offered_upgrade else None,
        update_available=update,
        load_error=load_error,
        has_settings=bool(mine and mine.field("settings")),
    )
