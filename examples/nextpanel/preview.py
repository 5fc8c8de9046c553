"""What an operation would do, before the admin confirms it: the library's dry run, in the API's words.

The preview previews the very call the operation then runs
(:mod:`examples.nextpanel.calls`) with ``Installer.preview``: plugins and
versions in and out, the migrations each runs down and up, the tables it
drops (or keeps), and a refusal with the option that would resolve it — an
uninstall of a plugin others need comes back refused, with the cascade's
preview, which the page shows behind a "cascade" confirmation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from atomicplug.errors import AtomicplugError, SettingsError, UsageError
from atomicplug.installer import Installer
from atomicplug.preview import PluginPreview

from .calls import Call, install_call, rollback_call
from .errors import describe
from .models import PreviewBody, PreviewChange, PreviewRequest, SettingFieldBody

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.settings.schema import SettingsSchema

__all__ = ["PlanPreview", "call_for", "setting_fields"]

Names = Callable[[str], str]
Installed = Callable[[str], "str | None"]


def call_for(request: PreviewRequest, installed: str | None) -> Call:
    """The Installer call the operation of ``request`` runs (``installed``: the requested plugin's version)."""
    kind = request.operation
    if kind == "update-all":
        return Call("upgrade")
    if not request.addon_id:
        raise UsageError(f"{kind} needs addon_id")
    if kind in ("install", "upgrade", "downgrade"):
        return install_call(request.addon_id, request.version, installed, settings=request.settings)
    if kind == "uninstall":
        return Call("uninstall", (request.addon_id,), {"keep_data": request.keep_data, "cascade": request.cascade})
    if kind == "rollback":
        return rollback_call(request.addon_id, request.settings)
    return Call(kind, (request.addon_id,))


def setting_fields(schema: SettingsSchema | None) -> list[SettingFieldBody]:
    """A form's fields for ``schema`` before anything is stored (defaults shown, no values)."""
    return [SettingFieldBody(**f.to_dict(), name=f.name, required=f.required) for f in schema.fields] if schema else []


def _asked_settings(mine: PluginPreview | None, cause: BaseException | None) -> list[SettingFieldBody]:
    """The settings form the page shows: every field for a first install; for an upgrade or a
    rollback, only the required fields its refusal says have no value (a setting the version it
    goes to requires and the installed one lacks), which the confirmed operation then sends."""
    if mine is None or mine.settings is None:
        return []
    if mine.change.action == "install":
        return setting_fields(mine.settings)
    if isinstance(cause, SettingsError) and cause.missing and mine.plugin_id in (cause.plugins or (mine.plugin_id,)):
        return [f for f in setting_fields(mine.settings) if f.name in cause.missing]
    return []


class PlanPreview:
    """Preview requests answered with the library's dry run."""

    def __init__(self, config: Config, name: Names, installed: Installed) -> None:
        self.config = config
        self.name = name
        self._installed = installed

    def preview(self, request: PreviewRequest) -> PreviewBody:
        """Plugin changes and database work for ``request``; a refusal is returned (not raised) with what would resolve it."""
        try:
            call = call_for(request, self._installed(request.addon_id) if request.addon_id else None)
            result = call.preview(Installer(self.config))
        except AtomicplugError as exc:  # a caller's mistake (no addon_id): said like a refusal
            return PreviewBody(operation=request.operation, changes=[], needs_confirmation=[], database="Nothing changes.",
                               refusal=describe(exc, name=self.name, repository=self.config.repository))
        shown, confirm = result, []
        refusal = result.refusal
        if refusal is not None and refusal.option and result.resolved is not None and result.resolved.refusal is None:
            shown, confirm = result.resolved, [refusal.option]  # what it does once the admin confirms the option
        # Names from the packages themselves (the listing's names may not be loaded yet), else the panel's.
        known = {p.plugin_id: e.name for p in shown.plugins if (e := p.change.after or p.change.before) is not None}
        changes = [self._change(p, request, lambda pid: known.get(pid) or self.name(pid)) for p in shown.plugins]
        mine = next((p for p in shown.plugins if p.plugin_id == request.addon_id and p.change.after is not None), None)
        return PreviewBody(
            operation=request.operation,
            changes=changes,
            needs_confirmation=confirm,
            refusal=describe(refusal.cause, name=self.name, repository=self.config.repository) if refusal and refusal.cause else None,
            database=_database_summary(changes),
            settings=_asked_settings(mine, refusal.cause if refusal else None),
            repairs=list(shown.repairs),
        )

    def _change(self, plugin: PluginPreview, request: PreviewRequest, name: Names) -> PreviewChange:
        change = plugin.change
        pid = change.plugin_id
        if change.action == "none":
            action = "enable" if change.after and change.after.enabled else "disable"
        elif request.operation == "rollback":
            action = "rollback"
        else:
            action = change.action
        if pid == request.addon_id or request.operation == "update-all":
            reason = "requested"
        elif change.action == "uninstall":
            reason = f"requires {name(str(request.addon_id))}"
        else:
            reason = f"required by {name(str(request.addon_id))}"
        return PreviewChange(
            id=pid, name=name(pid),
            action=action,  # type: ignore[arg-type]
            from_version=change.old_version, to_version=change.new_version, reason=reason,
            migrations_down=list(plugin.migrations_down), migrations_up=list(plugin.migrations_up),
            tables_dropped=list(plugin.tables_dropped), columns_dropped=list(plugin.columns_dropped), tables_kept=list(plugin.tables_kept),
        )


def _database_summary(changes: list[PreviewChange]) -> str:
    """The database work in words, from the dry run's facts."""
    if not changes:
        return "Nothing changes."
    ups = [m for c in changes for m in c.migrations_up]
    downs = [m for c in changes for m in c.migrations_down]
    dropped = [t for c in changes for t in c.tables_dropped]
    columns = [t for c in changes for t in c.columns_dropped]
    kept = [t for c in changes for t in c.tables_kept]
    parts = []
    if dropped:
        parts.append(f"Drops the tables {', '.join(dropped)}: the data in them is deleted.")
    if columns:
        parts.append(f"Drops the columns {', '.join(columns)} and their data.")
    if downs and not dropped and not columns:
        parts.append(f"Undoes the migrations {', '.join(downs)}.")
    if ups:
        parts.append(f"Runs the migrations {', '.join(ups)}.")
    if kept:
        parts.append(f"Keeps the tables {', '.join(kept)} and their rows.")
    if not parts:
        return "No database change: tables and data stay as they are."
    return " ".join(parts) + (" All in one transaction: all of it or none." if len(parts) > 1 or ups or downs else "")
