"""/api/v1/marketplace: browse the repository, install, upgrade, roll back, remove plugins.

Every write runs the blocking Installer in a worker thread (the event loop
keeps serving) with a short lock timeout, so a second operation gets 409
instead of hanging; the loader then remounts on the event loop, so routes
appear and disappear without a restart. Failures are AtomicplugErrors, which
:mod:`examples.nextpanel.errors` turns into 400/403/409 with a one-line reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import attrs
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from packaging.version import Version
from pydantic import BaseModel, ConfigDict, Field

from atomicplug.config import Config
from atomicplug.errors import AtomicplugError
from atomicplug.installer import Installer, TransactionResult
from atomicplug.loader import AddonLoader
from atomicplug.repository.manifest import ManifestEntry

from .operations import OperationTracker

__all__ = ["ADDON_ID_PATTERN", "Panel", "marketplace_router"]

ADDON_ID_PATTERN = r"^[a-z][a-z0-9_]{1,63}$"  # DESIGN.md "Package format": it becomes a Python package name
VERSION_PATTERN = r"^[0-9A-Za-z.!+_-]{1,64}$"  # PEP 440 characters; the resolver checks the rest
#: Requests never wait long for the lock: a busy installer is a 409, not a hung request.
REQUEST_LOCK_TIMEOUT = 2.0

AddonId = Annotated[str, Path(pattern=ADDON_ID_PATTERN)]


class InstallRemote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    addon_id: str = Field(pattern=ADDON_ID_PATTERN)
    version: str | None = Field(default=None, pattern=VERSION_PATTERN)


class Uninstall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_data: bool = False
    cascade: bool = False


@attrs.define
class Panel:
    """What the marketplace works on: the config, the addon loader, the operation tracker."""

    config: Config
    loader: AddonLoader
    tracker: OperationTracker = attrs.field(factory=OperationTracker)

    def installer(self, progress: Callable[[str], None] | None = None) -> Installer:
        timeout = min(self.config.lock_timeout, REQUEST_LOCK_TIMEOUT)
        return Installer(attrs.evolve(self.config, lock_timeout=timeout), progress=progress)

    async def operate(self, request: Request, kind: str, plugin_id: str, work: Callable[[Installer], TransactionResult]) -> dict[str, Any]:
        """Run ``work`` in a worker thread, tracked; remount addons afterwards on the event loop."""
        operation = self.tracker.start(kind, plugin_id)
        request.state.operation_id = operation.id
        installer = self.installer(self.tracker.progress(operation))
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
            from atomicplug.repository.remote import load_manifest

            try:
                for entry in load_manifest(self.config).plugins:
                    entries.setdefault(entry.id, []).append(entry)
            except AtomicplugError as exc:  # the panel still lists what is installed
                repository_error = str(exc)
        plugins = [
            _catalogue_item(pid, entries.get(pid, []), installed.get(pid), self.loader.failures.get(pid))
            for pid in sorted(set(entries) | set(installed))
        ]
        return {"repository": self.config.repository, "repository_error": repository_error, "plugins": plugins}


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
            return installer.install(f"{body.addon_id}=={body.version}")
        if _installed(installer, body.addon_id) is not None:
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
    async def install_remote(request: Request, body: InstallRemote) -> dict[str, Any]:
        return await panel.operate(request, "install-remote", body.addon_id, _install_remote(body))

    @router.post("/{addon_id}/uninstall")
    async def uninstall(request: Request, addon_id: AddonId, body: Annotated[Uninstall | None, Body()] = None) -> dict[str, Any]:
        options = body or Uninstall()
        return await panel.operate(
            request, "uninstall", addon_id, lambda i: i.uninstall(addon_id, keep_data=options.keep_data, cascade=options.cascade)
        )

    @router.post("/{addon_id}/rollback")
    async def rollback(request: Request, addon_id: AddonId) -> dict[str, Any]:
        return await panel.operate(request, "rollback", addon_id, lambda i: i.rollback(addon_id))

    @router.post("/{addon_id}/enable")
    async def enable(request: Request, addon_id: AddonId) -> dict[str, Any]:
        return await panel.operate(request, "enable", addon_id, lambda i: i.enable(addon_id))

    @router.post("/{addon_id}/disable")
    async def disable(request: Request, addon_id: AddonId) -> dict[str, Any]:
        return await panel.operate(request, "disable", addon_id, lambda i: i.disable(addon_id))

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
