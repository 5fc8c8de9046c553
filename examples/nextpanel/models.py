"""The marketplace API's request and response bodies (typed, so /docs shows every field)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from packaging.version import InvalidVersion, Version
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "ADDON_ID_PATTERN",
    "AddonInstallRequest",
    "AuthErrorBody",
    "Catalogue",
    "ErrorBody",
    "HistoryEntry",
    "HistoryPage",
    "OperationBody",
    "OperationsOverview",
    "PluginCard",
    "PluginDetail",
    "PluginSettings",
    "PreviewBody",
    "PreviewChange",
    "PreviewRequest",
    "RepositoryStatus",
    "Rollback",
    "SettingFieldBody",
    "SettingsUpdate",
    "Uninstall",
]

ADDON_ID_PATTERN = r"^[a-z][a-z0-9_]{1,63}$"  # docs/design.md "Package format": it becomes a Python package name
VERSION_PATTERN = r"^[0-9A-Za-z.!+_-]{1,64}$"  # PEP 440 characters (a first, cheap filter)


def pep440(value: str | None) -> str | None:
    """A version the resolver can compare: anything else is the client's mistake (422), never a 500."""
    if value is not None:
        try:
            Version(value)
        except InvalidVersion:
            raise ValueError(f"expected a PEP 440 version such as 1.2.0, got {value!r}") from None
    return value


#: A plugin version in a request body or query.
PluginVersion = Annotated[str, Field(pattern=VERSION_PATTERN), AfterValidator(pep440)]

OperationKind = Literal["install", "upgrade", "downgrade", "update-all", "uninstall", "rollback", "enable", "disable"]
#: A setting's value: what the plugin's settings schema types it as (string, number, integer, boolean).
SettingValue = str | int | float | bool | None


# -- requests ----------------------------------------------------------------------------


class AddonInstallRequest(BaseModel):
    """Install from the repository: the newest version, or ``version``; an installed id is upgraded."""

    model_config = ConfigDict(extra="forbid")

    addon_id: str = Field(pattern=ADDON_ID_PATTERN)
    version: PluginVersion | None = None
    allow_downgrade: bool = Field(default=False, description="confirm installing a version older than the installed one")
    settings: dict[str, SettingValue] | None = Field(
        default=None, description="values for the plugin's settings schema, stored with the install in its database transaction"
    )


class SettingsUpdate(BaseModel):
    """New values for an installed plugin's settings; a field set to null goes back to its default, one left out stays."""

    model_config = ConfigDict(extra="forbid")

    settings: dict[str, SettingValue]


class Uninstall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_data: bool = Field(default=False, description="keep the plugin's tables and rows (its down migrations do not run)")
    cascade: bool = Field(default=False, description="also uninstall the installed plugins that require this one")


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    settings: dict[str, SettingValue] | None = Field(
        default=None, description="settings the version it goes back to requires and no longer has (the upgrade it undoes dropped them)"
    )


class PreviewRequest(BaseModel):
    """What a POST would do, asked before doing it."""

    model_config = ConfigDict(extra="forbid")

    operation: OperationKind
    addon_id: str | None = Field(default=None, pattern=ADDON_ID_PATTERN)
    version: PluginVersion | None = None
    cascade: bool = False
    keep_data: bool = False
    settings: dict[str, SettingValue] | None = Field(default=None, description="as the install or rollback would be given them")


# -- errors --------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """Every refusal and failure: a title and detail for people, the raw line only for details."""

    title: str = Field(description="short heading, e.g. 'Repository unreachable'")
    detail: str = Field(description="what happened and what to do, in API terms")
    error: str = Field(description="the library's error class, e.g. 'DependencyError'")
    exit_code: int = Field(description="the CLI's exit code for the same failure (1, 2, 3, 75)")
    raw: str = Field(description="the library's own one-line message (temporary paths removed)")
    option: str | None = Field(default=None, description="the request field that would resolve it: 'cascade' or 'allow_downgrade'")
    plugins: list[str] = Field(default_factory=list, description="plugin ids concerned (for a dependency refusal: the dependents)")
    operation_id: str | None = None
    retry_after: int | None = Field(default=None, description="seconds to wait before retrying (also the Retry-After header)")
    problems: list[str] = Field(default_factory=list, description="every problem, when there are several (settings: one per field)")
    fields: list[str] = Field(default_factory=list, description="the settings fields the problems are about")


class AuthErrorBody(BaseModel):
    detail: str


# -- the catalogue ----------------------------------------------------------------------------


class RepositoryStatus(BaseModel):
    url: str | None
    state: Literal["ok", "unreachable", "untrusted", "none", "loading"]
    checked_at: str | None = Field(default=None, description="when the listed manifest was fetched and verified")
    plugin_count: int = 0
    error: ErrorBody | None = None


class PluginCard(BaseModel):
    id: str
    name: str
    description: str
    category: str
    price: Any = None
    author: str = ""
    requires: list[str]
    required_by: list[str] = Field(description="installed plugins that require this one")
    latest_version: str | None
    versions: list[str]
    installed_version: str | None
    enabled: bool
    previous_version: str | None
    rollback_version: str | None = Field(description="the version a rollback returns to; null when that is the offered upgrade")
    update_available: bool
    load_error: str | None
    has_settings: bool = Field(default=False, description="the installed version declares settings (GET/PUT plugins/{id}/settings)")


class Catalogue(BaseModel):
    repository: RepositoryStatus
    categories: list[str]
    updates: int = Field(description="installed plugins with a newer version in the repository")
    plugins: list[PluginCard]


class PermissionText(BaseModel):
    name: str
    text: str


class VersionInfo(BaseModel):
    version: str
    installed: bool
    in_repository: bool


class PluginDetail(BaseModel):
    id: str
    name: str
    version: str
    source: Literal["installed", "repository"]
    description: str
    author: str
    category: str
    price: Any = None
    permissions: list[PermissionText]
    requires: list[str]
    required_by: list[str]
    versions: list[VersionInfo]
    installed_version: str | None
    publisher_key_id: str | None = Field(description="minisign key id that signed this version's package, when known")
    readme_html: str | None = Field(description="README rendered from Markdown; raw HTML in it is escaped")
    changelog_html: str | None


# -- operations ---------------------------------------------------------------------------------


class Download(BaseModel):
    plugin_id: str
    version: str
    received: int
    total: int


class FleetNode(BaseModel):
    node_id: str
    generation: int | None = Field(description="the cluster generation this node runs")
    staged: int | None = Field(description="the generation it has staged (prepared to switch to)")
    last_seen: str | None
    error: str | None = Field(description="why it could not apply a generation (it keeps its last good one)")
    error_generation: int | None = None
    live: bool = Field(description="it holds a listening connection to the database now")
    lag: int | None = Field(description="generations behind the desired one")


class Fleet(BaseModel):
    """Cluster mode: the desired generation and every node (``atomicplug cluster status --json``)."""

    generation: int
    txid: str = ""
    nodes: list[FleetNode]
    converged: bool = Field(description="every live node runs the desired generation")
    waiting: list[str] = Field(default_factory=list, description="live nodes that had not switched when the operation ended")


class OperationBody(BaseModel):
    """One marketplace operation: queued or running, then done (with ``result``) or failed (with ``error``)."""

    id: str
    kind: str
    plugin_id: str
    status: Literal["queued", "running", "done", "failed"]
    started: str
    finished: str | None = None
    stages: list[str] = Field(description="what it did so far, in words")
    messages: list[str] = Field(description="the installer's own progress lines")
    downloads: list[Download]
    changed: bool = Field(default=False, description="false: nothing to do, the plugins were already in that state")
    changes: list[str] = Field(default_factory=list, description="one line per plugin changed (the installer's words)")
    txid: str | None = None
    plugin: dict[str, Any] | None = Field(default=None, description="the plugin as installed afterwards")
    load_error: str | None = None
    error: ErrorBody | None = None
    fleet: Fleet | None = Field(default=None, description="cluster mode: every node's generation once the live ones switched")


class OperationsOverview(BaseModel):
    current: str | None
    queued: int
    recent: list[OperationBody]


# -- history -----------------------------------------------------------------------------------


class HistoryPlugin(BaseModel):
    id: str
    name: str
    from_version: str | None = None
    to_version: str | None = None
    enabled: bool | None = None


class HistoryEntry(BaseModel):
    time: str
    who: str
    operation: str
    outcome: Literal["done", "failed", "refused", "busy", "unreachable", "rolled back"]
    plugins: list[HistoryPlugin]
    title: str | None = None
    detail: str | None = None
    txid: str | None = None


class HistoryPage(BaseModel):
    history: list[HistoryEntry]


# -- preview -------------------------------------------------------------------------------------


class PreviewChange(BaseModel):
    id: str
    name: str
    action: Literal["install", "upgrade", "downgrade", "uninstall", "enable", "disable", "rollback"]
    from_version: str | None = None
    to_version: str | None = None
    reason: str = Field(description="why it is part of the plan, e.g. 'required by SMS Notifications'")
    migrations_down: list[str] = Field(default_factory=list, description="migrations reverted, in run order")
    migrations_up: list[str] = Field(default_factory=list, description="migrations applied, in run order")
    tables_dropped: list[str] = Field(default_factory=list, description="tables dropped with their rows")
    columns_dropped: list[str] = Field(default_factory=list, description="columns (table.column) dropped from tables that stay")
    tables_kept: list[str] = Field(default_factory=list, description="with keep_data: the plugin's tables that stay")


class SettingFieldBody(BaseModel):
    """One setting as a form shows it; a secret's value is never sent, only whether it is set."""

    name: str
    type: Literal["string", "number", "integer", "boolean"]
    title: str = ""
    description: str = ""
    enum: list[Any] | None = None
    default: Any = None
    secret: bool = False
    required: bool = False
    source: Literal["stored", "default", "unset"] | None = Field(default=None, description="null in a preview (nothing stored yet)")
    is_set: bool = False
    value: Any = Field(default=None, description="the current value; always null for a secret")


class PluginSettings(BaseModel):
    plugin_id: str
    version: str
    fields: list[SettingFieldBody]
    installed_by: str | None = None
    installed_at: str | None = None
    updated_by: str | None = None
    updated_at: str | None = None


class PreviewBody(BaseModel):
    operation: str
    changes: list[PreviewChange]
    needs_confirmation: list[str] = Field(description="request fields the admin must confirm, e.g. 'cascade', 'allow_downgrade'")
    refusal: ErrorBody | None = Field(default=None, description="why the operation would be refused as asked")
    database: str = Field(description="the database work in words: migrations run, tables dropped or kept")
    settings: list[SettingFieldBody] = Field(
        default_factory=list, description="the requested plugin's settings form, when it would be installed (send values as 'settings')"
    )
    repairs: list[str] = Field(
        default_factory=list, description="installed files the operation would repair, as verify finds them damaged ('repair crm 2.0.0: 1 file damaged')"
    )
