"""/api/v1/marketplace: browse the repository, preview, install, upgrade, roll back, remove plugins.

The endpoints only translate HTTP to :class:`examples.nextpanel.panel.Panel`
calls; each write is one Installer call (:mod:`examples.nextpanel.calls`),
the same one its preview previews. Every route documents its answers
(202/400/401/403/409/422) with typed bodies; failures are AtomicplugErrors,
which :mod:`examples.nextpanel.errors` turns into
:class:`~examples.nextpanel.models.ErrorBody` answers written for admins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from packaging.version import Version
from pydantic import AfterValidator

from atomicplug.installer import Installer

from .calls import Call, install_call, rollback_call
from .fleet import fleet_status
from .models import (
    ADDON_ID_PATTERN,
    VERSION_PATTERN,
    AddonInstallRequest,
    AuthErrorBody,
    Catalogue,
    Fleet,
    ErrorBody,
    HistoryPage,
    OperationBody,
    OperationsOverview,
    PluginDetail,
    PluginSettings,
    PreviewBody,
    PreviewRequest,
    Rollback,
    SettingFieldBody,
    SettingsUpdate,
    Uninstall,
    pep440,
)
from .panel import Panel
from .preview import PlanPreview

__all__ = ["marketplace_router"]

AddonId = Annotated[str, Path(pattern=ADDON_ID_PATTERN)]
#: ``?wait=false``: answer 202 with the queued operation at once (the page polls it).
Wait = Annotated[bool, Query(description="false: answer 202 with the queued operation at once; poll GET operations/{id}")]

_AUTH = {401: {"model": AuthErrorBody, "description": "no admin bearer token"}, 403: {"model": AuthErrorBody, "description": "wrong admin token"}}
_READ = {**_AUTH, 422: {"description": "invalid parameters"}}
_WRITE = {
    **_READ,
    202: {"model": OperationBody, "description": "queued (with ?wait=false): poll GET operations/{id}"},
    400: {"model": ErrorBody, "description": "refused or failed and rolled back: nothing changed (title, detail, option to resolve it)"},
    403: {"model": ErrorBody | AuthErrorBody, "description": "wrong admin token, or a security refusal (signature, checksum, permission)"},
    409: {"model": ErrorBody, "description": "busy: retry after the Retry-After header's seconds"},
}


def _settings_body(config: Any, addon_id: str) -> PluginSettings:
    view = Installer(config).settings(addon_id)
    return PluginSettings(
        plugin_id=view.plugin_id, version=view.version,
        fields=[SettingFieldBody(**state.to_dict()) for state in view.fields],
        installed_by=view.installed_by, installed_at=view.installed_at, updated_by=view.updated_by, updated_at=view.updated_at,
    )


def marketplace_router(panel: Panel, require_admin: Callable[..., Any]) -> APIRouter:
    """The marketplace endpoints, all behind the admin token."""
    router = APIRouter(prefix="/api/v1/marketplace", tags=["marketplace"], dependencies=[Depends(require_admin)])
    preview = PlanPreview(panel.config, panel.name, panel.installed_version)

    @router.get("/plugins", response_model=Catalogue, responses=_READ)
    async def plugins(
        q: Annotated[str | None, Query(max_length=100, description="words that must all appear in id, name or description")] = None,
        category: Annotated[str | None, Query(max_length=64)] = None,
        refresh: Annotated[bool, Query(description="fetch the repository's manifest now instead of using the cached one")] = False,
    ) -> Any:
        """Repository plugins (cached verified manifest) and installed ones, with state, updates and categories."""
        listing = None if refresh else panel.current_listing()  # the common case: no thread, no build
        if listing is None:
            listing = await run_in_threadpool(panel.listing, refresh)
        data = listing.search(q, category) if (q or category) else listing.data
        return Response(content=data, media_type="application/json")

    @router.get("/plugins/{addon_id}", response_model=PluginDetail, responses={**_READ, 400: {"model": ErrorBody}})
    async def plugin_detail(
        addon_id: AddonId, version: Annotated[str | None, Query(pattern=VERSION_PATTERN), AfterValidator(pep440)] = None
    ) -> PluginDetail:
        """README and CHANGELOG, permissions in words, requires and required-by, versions, publisher key id."""
        from atomicplug.repository.remote import fetch_package

        from .details import plugin_detail as detail

        def build() -> PluginDetail:
            snapshot = panel.snapshot()
            entries = [e for e in snapshot.manifest.plugins if e.id == addon_id] if snapshot and snapshot.manifest else []

            def fetch(entry: Any) -> Any:
                from atomicplug.intake import blob_path, signature_path_for

                blob = blob_path(panel.config, fetch_package(panel.config, entry).sha256)
                return blob, signature_path_for(blob)

            return detail(panel.config, addon_id, version, entries, panel.installed(), fetch)

        return await run_in_threadpool(build)

    @router.post("/preview", response_model=PreviewBody, responses=_READ)
    async def preview_plan(body: PreviewRequest) -> PreviewBody:
        """What an operation would change (plugins and versions in and out), and what the admin must confirm."""
        return await run_in_threadpool(preview.preview, body)

    @router.post("/install-remote", response_model=OperationBody, responses=_WRITE)
    async def install_remote(request: Request, response: Response, body: AddonInstallRequest, wait: Wait = True) -> OperationBody:
        """Install the newest version (or ``version``) with its ``settings``; an installed plugin is upgraded, or
        downgraded with ``allow_downgrade``."""
        installed = panel.installed_version(body.addon_id)
        kind = "install"
        if installed is not None:
            kind = "downgrade" if body.version and Version(body.version) < Version(installed) else "upgrade"
        call = install_call(body.addon_id, body.version, installed, allow_downgrade=body.allow_downgrade, settings=body.settings)
        return await panel.operate(request, response, kind, body.addon_id, call, wait=wait, target_version=body.version)

    @router.post("/update-all", response_model=OperationBody, responses=_WRITE)
    async def update_all(request: Request, response: Response, wait: Wait = True) -> OperationBody:
        """Upgrade every installed plugin to the repository's newest version, in one transaction."""
        return await panel.operate(request, response, "update-all", "", Call("upgrade"), wait=wait)

    @router.get("/plugins/{addon_id}/settings", response_model=PluginSettings, responses={**_READ, 400: {"model": ErrorBody}})
    async def plugin_settings(addon_id: AddonId) -> PluginSettings:
        """The installed plugin's settings form: fields, values, who installed and changed them; secrets only as set or not."""
        return await run_in_threadpool(_settings_body, panel.config, addon_id)

    @router.put("/plugins/{addon_id}/settings", response_model=OperationBody, responses=_WRITE)
    async def change_settings(request: Request, response: Response, addon_id: AddonId, body: SettingsUpdate, wait: Wait = True) -> OperationBody:
        """Change settings (one small database transaction, audited by field name); the addon gets them at once."""
        return await panel.operate(request, response, "configure", addon_id, Call("configure", (addon_id, body.settings)), wait=wait)

    @router.post("/{addon_id}/uninstall", response_model=OperationBody, responses=_WRITE)
    async def uninstall(
        request: Request, response: Response, addon_id: AddonId, body: Annotated[Uninstall | None, Body()] = None, wait: Wait = True
    ) -> OperationBody:
        """Remove a plugin (its tables too unless ``keep_data``); plugins requiring it need ``cascade``."""
        options = body or Uninstall()
        call = Call("uninstall", (addon_id,), {"keep_data": options.keep_data, "cascade": options.cascade})
        return await panel.operate(request, response, "uninstall", addon_id, call, wait=wait, keep_data=options.keep_data)

    @router.post("/{addon_id}/rollback", response_model=OperationBody, responses=_WRITE)
    async def rollback(
        request: Request, response: Response, addon_id: AddonId, body: Annotated[Rollback | None, Body()] = None, wait: Wait = True
    ) -> OperationBody:
        """Switch back to the version the current one replaced (with ``settings`` it requires that the upgrade dropped)."""
        call = rollback_call(addon_id, body.settings if body else None)
        return await panel.operate(request, response, "rollback", addon_id, call, wait=wait)

    @router.post("/{addon_id}/enable", response_model=OperationBody, responses=_WRITE)
    async def enable(request: Request, response: Response, addon_id: AddonId, wait: Wait = True) -> OperationBody:
        return await panel.operate(request, response, "enable", addon_id, Call("enable", (addon_id,)), wait=wait)

    @router.post("/{addon_id}/disable", response_model=OperationBody, responses=_WRITE)
    async def disable(request: Request, response: Response, addon_id: AddonId, wait: Wait = True) -> OperationBody:
        return await panel.operate(request, response, "disable", addon_id, Call("disable", (addon_id,)), wait=wait)

    @router.get("/history", response_model=HistoryPage, responses=_READ)
    async def history(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> HistoryPage:
        """Every marketplace outcome (refusals, busy and unreachable included) and transactions made elsewhere; newest first."""
        return HistoryPage(history=await run_in_threadpool(panel.history, limit))

    @router.get("/fleet", response_model=Fleet | None, responses=_READ)
    async def fleet() -> dict[str, Any] | None:
        """Cluster mode: the desired generation and each node's (null on a single machine)."""
        return await run_in_threadpool(fleet_status, panel.config)

    @router.get("/operations", response_model=OperationsOverview, responses=_READ)
    async def operations() -> Response:
        """The running operation, how many wait, and the recent ones (JSON kept until an operation changes)."""
        return Response(content=panel.tracker.overview_json(), media_type="application/json")

    @router.get("/operations/{operation_id}", response_model=OperationBody, responses={**_READ, 404: {"model": AuthErrorBody}})
    async def operation(operation_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]) -> OperationBody:
        found = panel.tracker.get(operation_id)
        if found is None:
            raise HTTPException(404, f"no operation {operation_id}")
        return found

    @router.post("/reload", responses=_READ)
    async def reload() -> dict[str, Any]:
        """Remount addons after a change made outside the panel (e.g. the CLI)."""
        await panel.reload()
        return panel.loader.status()

    return router
