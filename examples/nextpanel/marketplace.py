"""/api/v1/marketplace: browse the repository, install, upgrade, roll back, remove plugins.

Every write runs the blocking Installer in a worker thread (the event loop
keeps serving) with a short lock timeout, so a second operation gets 409
instead of hanging; the loader then remounts on the event loop, so routes
appear and disappear without a restart. Failures are AtomicplugErrors, which
:mod:`examples.nextpanel.errors` turns into 400/403/409 with a one-line reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Annotated, Any

import attrs
from fastapi import (
    APIRouter,
    Body,
    Depends,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
)
from fastapi.concurrency import run_in_threadpool
from packaging.version import Version
from pydantic import BaseModel, ConfigDict, Field

from atomicplug.config import Config
from atomicplug.errors import AtomicplugError, LockBusyError
from atomicplug.installer import Installer, TransactionResult
from atomicplug.loader import AddonLoader
from atomicplug.repository.manifest import Manifest, ManifestEntry

from .operations import Operation, OperationTracker

__all__ = ["ADDON_ID_PATTERN", "Panel", "PanelInstaller", "marketplace_router"]

ADDON_ID_PATTERN = r"^[a-z][a-z0-9_]{1,63}$"  # DESIGN.md "Package format": it becomes a Python package name
VERSION_PATTERN = r"^[0-9A-Za-z.!+_-]{1,64}$"  # PEP 440 characters; the resolver checks the rest
#: Requests never wait long for the lock: a busy installer is a 409, not a hung request.
REQUEST_LOCK_TIMEOUT = 2.0

AddonId = Annotated[str, Path(pattern=ADDON_ID_PATTERN)]
#: ``?wait=false``: answer 202 {operation_id} at once and run in the background (the page polls).
Wait = Annotated[bool, Query(description="false: answer 202 {operation_id} at once; poll GET operations/{id}")]


class InstallRemote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    addon_id: str = Field(pattern=ADDON_ID_PATTERN)
    version: str | None = Field(default=None, pattern=VERSION_PATTERN)


class Uninstall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_data: bool = False
    cascade: bool = False


#: ``(plugin_id, version, received, total)``: bytes of one package download so far.
DownloadProgress = Callable[[str, str, int, int], None]


class PanelInstaller(Installer):
    """An Installer that can report package download bytes (see :meth:`prefetch`)."""

    def __init__(self, config: Config, progress: Callable[[str], None] | None = None, on_download: DownloadProgress | None = None) -> None:
        super().__init__(config, progress=progress)
        self.on_download = on_download

    def prefetch(self, specs: list[str], *, upgrade: bool = False) -> None:
        """Download and verify what ``install(specs, upgrade=...)`` will need, reporting bytes.

        The same library calls the installer makes (signed manifest, resolve,
        size cap, sha256, package signature), so a refusal here is the one the
        install would give; verified packages land in the download cache, where
        the install that follows finds them (and verifies them again).
        """
        from atomicplug.repository.remote import (
            fetch_package,
            installed_versions,
            load_manifest,
            make_fetcher,
        )
        from atomicplug.repository.resolver import resolve

        fetcher = make_fetcher(self.config)
        manifest = load_manifest(self.config, fetcher=fetcher)
        entries = resolve(manifest, specs, installed_versions(self.config), upgrade=upgrade)
        watched: dict[str, ManifestEntry] = {fetcher.url(e.download_url): e for e in entries}
        report = self.on_download

        def count_bytes(response: Any, *_: Any, **__: Any) -> Any:
            first = response.history[0].url if response.history else response.url  # after redirects too
            entry = watched.get(first) or watched.get(response.url)
            if entry is None or report is None or response.status_code not in (200, 206):
                return response
            start = 0
            if response.status_code == 206:  # a resumed download: Content-Range "bytes N-M/T"
                try:
                    start = int(response.headers.get("Content-Range", "").split()[1].split("-")[0])
                except (IndexError, ValueError):
                    start = 0
            chunks = response.iter_content
            state = {"received": start}

            def counted(chunk_size: int | None = 1, decode_unicode: bool = False) -> Any:
                for chunk in chunks(chunk_size, decode_unicode):
                    state["received"] += len(chunk)
                    report(entry.id, entry.version, min(state["received"], entry.size), entry.size)
                    yield chunk

            response.iter_content = counted
            return response

        fetcher.session.hooks["response"].append(count_bytes)
        for entry in entries:
            self.progress(f"downloading {entry.id} {entry.version} ({entry.size} bytes)")
            if report is not None:
                report(entry.id, entry.version, 0, entry.size)
            fetch_package(self.config, entry, fetcher=fetcher)
            if report is not None:
                report(entry.id, entry.version, entry.size, entry.size)  # also when it came from the cache
            self.progress(f"verified {entry.id} {entry.version}: sha256 and signature")


@attrs.define
class Panel:
    """What the marketplace works on: the config, the addon loader, the operation tracker."""

    config: Config
    loader: AddonLoader
    tracker: OperationTracker = attrs.field(factory=OperationTracker)
    #: Background operations (``?wait=false``), referenced until done so they are not collected.
    _tasks: set[asyncio.Task[Any]] = attrs.field(factory=set, init=False)

    def installer(self, progress: Callable[[str], None] | None = None, on_download: DownloadProgress | None = None) -> PanelInstaller:
        timeout = min(self.config.lock_timeout, REQUEST_LOCK_TIMEOUT)
        return PanelInstaller(attrs.evolve(self.config, lock_timeout=timeout), progress=progress, on_download=on_download)

    async def operate(
        self,
        request: Request,
        kind: str,
        plugin_id: str,
        work: Callable[[Installer], TransactionResult],
        wait: bool = True,
        response: Response | None = None,
    ) -> dict[str, Any]:
        """Run ``work`` in a worker thread, tracked; remount addons afterwards on the event loop.

        ``wait=False``: refuse at once (LockBusyError, 409) while another tracked
        operation runs, else start it in the background and answer 202
        ``{operation_id, status: "running"}``; its outcome is in the tracker.
        """
        if not wait:
            busy = self.tracker.running()
            if busy is not None:
                raise LockBusyError(
                    f"another marketplace operation is running ({busy['kind']} {busy['plugin_id']}, started {busy['started']}); "
                    "try again when it has finished"
                )
        operation = self.tracker.start(kind, plugin_id)
        request.state.operation_id = operation.id
        if wait:
            return await self._execute(operation, plugin_id, work)
        task = asyncio.create_task(self._execute_quietly(operation, plugin_id, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if response is not None:
            response.status_code = 202
        return {"operation_id": operation.id, "status": "running", "operation": kind, "plugin_id": plugin_id}

    async def _execute_quietly(self, operation: Operation, plugin_id: str, work: Callable[[Installer], TransactionResult]) -> None:
        with contextlib.suppress(Exception):  # recorded by the tracker; nobody awaits this task
            await self._execute(operation, plugin_id, work)

    async def _execute(self, operation: Operation, plugin_id: str, work: Callable[[Installer], TransactionResult]) -> dict[str, Any]:
        installer = self.installer(self.tracker.progress(operation), self.tracker.download(operation))
        try:
            result = await run_in_threadpool(work, installer)
        except BaseException as exc:
            self.tracker.fail(operation, exc, exc.exit_code if isinstance(exc, AtomicplugError) else None)
            self.loader.reload()  # a failure after COMMIT still changed the state; reload is cheap otherwise
            raise
        self.loader.reload()
        body = {
            "operation_id": operation.id,
            "status": "done",
            "operation": result.operation,
            "txid": result.txid or None,
            "changed": result.changed,
            "changes": list(result.changes),
            "plugin": _installed(installer, plugin_id),
            "load_error": self.loader.failures.get(plugin_id),
        }
        self.tracker.finish(operation, body)
        return body

    def catalogue(self) -> dict[str, Any]:
        """Repository entries (latest and every version) with the installed state; blocking."""
        installed = {p["id"]: p for p in self.installer().list()}
        entries: dict[str, list[ManifestEntry]] = {}
        repository_error = None
        if self.config.repository:
            try:
                for entry in _read_manifest(self.config).plugins:
                    entries.setdefault(entry.id, []).append(entry)
            except AtomicplugError as exc:  # the panel still lists what is installed
                repository_error = str(exc)
        plugins = [
            _catalogue_item(pid, entries.get(pid, []), installed.get(pid), self.loader.failures.get(pid))
            for pid in sorted(set(entries) | set(installed))
        ]
        return {"repository": self.config.repository, "repository_error": repository_error, "plugins": plugins}


def _read_manifest(config: Config) -> Manifest:
    """``load_manifest`` without recording the manifest as accepted: a read-only view for the catalogue.

    Same checks (trusted signature, expiry, not older than the last accepted),
    but no write of ``repository_state.json``: that write uses a fixed temp
    name, so a listing racing an install's own ``load_manifest`` made one of
    them fail with FileNotFoundError. Installs still record what they accept.
    """
    from atomicplug.errors import TrustError
    from atomicplug.repository.manifest import (
        TrustedState,
        load_trusted_keys,
        verify_manifest,
    )
    from atomicplug.repository.remote import (
        MAX_MANIFEST_BYTES,
        MAX_SIGNATURE_BYTES,
        make_fetcher,
        state_path,
    )

    fetcher = make_fetcher(config)
    keys = load_trusted_keys(config.trusted_keys)
    if not keys:
        raise TrustError("cannot trust the repository: no trusted_keys are configured")
    data = fetcher.fetch_bytes("/manifest.json", MAX_MANIFEST_BYTES)
    sig = fetcher.fetch_bytes("/manifest.json.minisig", MAX_SIGNATURE_BYTES, missing_ok=True)
    assert data is not None
    if sig is None:
        raise TrustError(f"repository {fetcher.base_url} has no manifest.json.minisig: refusing an unsigned manifest")
    manifest = verify_manifest(data, sig.decode("utf-8", "replace"), keys)
    TrustedState.load(state_path(config)).check(fetcher.base_url, manifest, data)
    return manifest


def _catalogue_item(pid: str, entries: list[ManifestEntry], mine: dict[str, Any] | None, load_error: str | None) -> dict[str, Any]:
    """One marketplace card: the newest repository entry's description plus the installed state."""
    versions = sorted(entries, key=lambda e: e.parsed_version)
    latest = versions[-1] if versions else None
    installed = Version(mine["version"]) if mine else None
    return {
        "id": pid,
        "name": latest.name if latest and latest.name else (mine["name"] if mine else pid),
        "description": latest.description if latest else "",
        "category": latest.category if latest else "",
        "price": latest.price if latest else None,
        "requires": list(latest.requires) if latest else (mine["requires"] if mine else []),
        "latest_version": latest.version if latest else None,
        "versions": [e.version for e in versions],
        "installed_version": mine["version"] if mine else None,
        "enabled": bool(mine and mine["enabled"]),
        "previous_version": mine["previous_version"] if mine else None,
        "update_available": bool(latest and installed and latest.parsed_version > installed),
        "load_error": load_error,
    }


def _installed(installer: Installer, plugin_id: str) -> dict[str, Any] | None:
    return next((p for p in installer.list() if p["id"] == plugin_id), None)


def _install_remote(body: InstallRemote) -> Callable[[Installer], TransactionResult]:
    """Install by id (latest), or the requested version; an installed id is upgraded."""

    def work(installer: Installer) -> TransactionResult:
        if body.version is not None:
            spec, upgrade = f"{body.addon_id}=={body.version}", False
        elif _installed(installer, body.addon_id) is not None:
            spec, upgrade = body.addon_id, True
        else:
            spec, upgrade = body.addon_id, False
        if isinstance(installer, PanelInstaller) and installer.on_download is not None:
            installer.prefetch([spec], upgrade=upgrade)  # download bytes for the progress view
        if body.version is not None:
            return installer.install(spec)
        if upgrade:
            return installer.upgrade([body.addon_id])
        return installer.install(body.addon_id)

    return work


def marketplace_router(panel: Panel, require_admin: Callable[..., Any]) -> APIRouter:
    """The marketplace endpoints, all behind the admin token."""
    router = APIRouter(prefix="/api/v1/marketplace", tags=["marketplace"], dependencies=[Depends(require_admin)])

    @router.get("/plugins")
    async def plugins() -> dict[str, Any]:
        return await run_in_threadpool(panel.catalogue)

    @router.post("/install-remote")
    async def install_remote(request: Request, response: Response, body: InstallRemote, wait: Wait = True) -> dict[str, Any]:
        return await panel.operate(request, "install-remote", body.addon_id, _install_remote(body), wait, response)

    @router.post("/{addon_id}/uninstall")
    async def uninstall(
        request: Request, response: Response, addon_id: AddonId, body: Annotated[Uninstall | None, Body()] = None, wait: Wait = True
    ) -> dict[str, Any]:
        options = body or Uninstall()
        return await panel.operate(
            request,
            "uninstall",
            addon_id,
            lambda i: i.uninstall(addon_id, keep_data=options.keep_data, cascade=options.cascade),
            wait,
            response,
        )

    @router.post("/{addon_id}/rollback")
    async def rollback(request: Request, response: Response, addon_id: AddonId, wait: Wait = True) -> dict[str, Any]:
        return await panel.operate(request, "rollback", addon_id, lambda i: i.rollback(addon_id), wait, response)

    @router.post("/{addon_id}/enable")
    async def enable(request: Request, response: Response, addon_id: AddonId, wait: Wait = True) -> dict[str, Any]:
        return await panel.operate(request, "enable", addon_id, lambda i: i.enable(addon_id), wait, response)

    @router.post("/{addon_id}/disable")
    async def disable(request: Request, response: Response, addon_id: AddonId, wait: Wait = True) -> dict[str, Any]:
        return await panel.operate(request, "disable", addon_id, lambda i: i.disable(addon_id), wait, response)

    @router.get("/history")
    async def history(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        entries = await run_in_threadpool(panel.installer().history)
        return {"history": list(reversed(entries))[:limit]}  # newest first

    @router.get("/operations")
    async def operations() -> dict[str, Any]:
        return panel.tracker.overview()

    @router.get("/operations/{operation_id}")
    async def operation(operation_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]) -> dict[str, Any]:
        found = panel.tracker.get(operation_id)
        if found is None:
            raise HTTPException(404, f"no operation {operation_id}")
        return found

    @router.post("/reload")
    async def reload() -> dict[str, Any]:
        """Remount addons after a change made outside the panel (e.g. the CLI)."""
        panel.loader.reload()
        return panel.loader.status()

    return router
