"""What an operation would do, before the admin confirms it: the preview adapter.

``PlanPreview`` is the one place the page's preview dialog gets its facts.
Today it computes what can be known without running anything: plugins and
versions in and out, from the registry, the cached verified manifest and
the same pure planning functions the installer uses (resolver, uninstall and
rollback planning, dependency checks). What only a dry run of the
transaction can tell — the exact migrations to run and tables to drop — is
:class:`PreviewUnavailable` (HTTP 501) until the installer offers
``Installer.plan(...)``; this adapter is then where it is wired in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from packaging.version import Version

from atomicplug.errors import AtomicplugError, UsageError
from atomicplug.registry import Registry

from .errors import describe
from .models import PreviewBody, PreviewChange, PreviewRequest

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.repository.manifest import Manifest

__all__ = ["PlanPreview", "PreviewUnavailable"]

Names = Callable[[str], str]


class PreviewUnavailable(Exception):
    """The installer cannot say this yet without running the transaction (HTTP 501)."""


class PlanPreview:
    """Plugins and versions an operation would change; database details await the installer's dry run."""

    def __init__(self, config: Config, manifest: Callable[[], Manifest | None], name: Names) -> None:
        self.config = config
        self._manifest = manifest
        self.name = name

    def database(self, request: PreviewRequest) -> PreviewBody:
        """The migrations that would run and the tables that would be dropped."""
        raise PreviewUnavailable(
            "the exact migrations and tables need the installer's dry run (Installer.plan), which this version does not have yet"
        )

    def preview(self, request: PreviewRequest) -> PreviewBody:
        """Plugin changes for ``request``; a refusal is returned (not raised) with what would resolve it."""
        registry = Registry.load(self.config.registry_path)
        changes: list[PreviewChange] = []
        refusal = None
        confirm: list[str] = []
        try:
            if request.operation in ("install", "upgrade", "downgrade", "update-all"):
                changes = self._installs(request, registry)
            elif request.operation == "uninstall":
                changes, confirm, refusal = self._uninstall(request, registry)
            else:
                changes = self._single(request, registry)
        except AtomicplugError as exc:
            refusal = describe(exc, name=self.name, repository=self.config.repository)
        if any(c.action == "downgrade" for c in changes) and request.operation != "rollback":
            confirm.append("allow_downgrade")
        return PreviewBody(operation=request.operation, changes=changes, needs_confirmation=confirm, refusal=refusal,
                           database=self._database_summary(request, changes))

    # -- per operation ---------------------------------------------------------------------
    def _installs(self, request: PreviewRequest, registry: Registry) -> list[PreviewChange]:
        from atomicplug.repository.resolver import resolve

        manifest = self._manifest()
        if manifest is None:
            raise UsageError("the repository's plugin list is not available: the preview needs it")
        installed = {pid: Version(e.version) for pid, e in registry.plugins.items()}
        if request.operation == "update-all":
            specs, upgrade = sorted(installed), True
        else:
            _require_id(request)
            specs = [f"{request.addon_id}=={request.version}" if request.version else str(request.addon_id)]
            upgrade = request.version is None and request.addon_id in installed
        if not specs:
            return []
        entries = resolve(manifest, specs, installed, upgrade=upgrade)
        roots = set(specs) if request.operation == "update-all" else {request.addon_id}
        changes = []
        for entry in entries:
            before = registry.plugins.get(entry.id)
            old = Version(before.version) if before else None
            if old == entry.parsed_version:
                continue
            action = "install" if old is None else "upgrade" if entry.parsed_version > old else "downgrade"
            needers = sorted(e.id for e in entries if any(r.id == entry.id for r in e.requirements))
            reason = "requested" if entry.id in roots else f"required by {', '.join(self.name(n) for n in needers) or 'a requested plugin'}"
            changes.append(PreviewChange(id=entry.id, name=entry.name or self.name(entry.id), action=action,  # type: ignore[arg-type]
                                         from_version=before.version if before else None, to_version=entry.version, reason=reason))
        return changes

    def _uninstall(self, request: PreviewRequest, registry: Registry) -> tuple[list[PreviewChange], list[str], object]:
        from atomicplug.stages.plan import plan_uninstall

        pid = _require_id(request)
        plan = plan_uninstall(registry, [pid], "preview", cascade=True, keep_data=request.keep_data)
        changes = [
            PreviewChange(id=s.plugin_id, name=self.name(s.plugin_id), action="uninstall", from_version=s.before.version if s.before else None,
                          reason="requested" if s.plugin_id == pid else f"requires {self.name(pid)}")
            for s in plan.changes
        ]
        confirm, refusal = [], None
        if len(plan.changes) > 1 and not request.cascade:
            try:
                plan_uninstall(registry, [pid], "preview", cascade=False)
            except AtomicplugError as exc:
                refusal = describe(exc, name=self.name)
            confirm.append("cascade")
        return changes, confirm, refusal

    def _single(self, request: PreviewRequest, registry: Registry) -> list[PreviewChange]:
        from atomicplug.stages.plan import plan_rollback, plan_toggle

        pid = _require_id(request)
        if request.operation == "rollback":
            plan = plan_rollback(registry, pid, "preview", self.config.home)
        else:
            plan = plan_toggle(registry, pid, request.operation == "enable", "preview")
        return [
            PreviewChange(id=s.plugin_id, name=self.name(s.plugin_id), action=request.operation if s.action == "none" else "rollback",  # type: ignore[arg-type]
                          from_version=s.before.version if s.before else None, to_version=s.after.version if s.after else None, reason="requested")
            for s in plan.changes
        ]

    @staticmethod
    def _database_summary(request: PreviewRequest, changes: list[PreviewChange]) -> str:
        if not changes:
            return "Nothing changes."
        if request.operation in ("enable", "disable"):
            return "No database change: tables and data stay as they are."
        if request.operation == "uninstall":
            if request.keep_data:
                return "Tables and rows are kept."
            return "The removed plugins' tables are dropped (their down migrations run): the data in them is deleted."
        if request.operation == "rollback":
            return "Migrations the newer version added are undone (its down migrations run)."
        return "The packages' new migrations run in the same transaction: all of them or none."


def _require_id(request: PreviewRequest) -> str:
    if not request.addon_id:
        raise UsageError(f"{request.operation} needs addon_id")
    return request.addon_id
