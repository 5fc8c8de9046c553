"""A plugin's settings as people may see them: a form's worth of facts, secrets only as set or not.

docs/design.md "Plugin settings": no API returns a secret value, once stored.
:class:`SettingsView` is what ``Installer.settings()`` returns and what a page
renders its form from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import attrs

from atomicplug.settings.schema import SettingField

if TYPE_CHECKING:
    from atomicplug.registry import InstalledPlugin
    from atomicplug.settings.records import InstallationRecord
    from atomicplug.settings.schema import SettingsSchema

__all__ = ["FieldState", "SettingsView"]


@attrs.frozen
class FieldState:
    """One setting: its field, and its value unless it is a secret.

    ``source``: ``stored`` (an admin gave it), ``default`` (the schema's) or
    ``unset``. ``value`` is None for a secret whatever its source.
    """

    field: SettingField
    source: Literal["stored", "default", "unset"]
    value: Any = None

    @property
    def is_set(self) -> bool:
        return self.source != "unset"

    def to_dict(self) -> dict[str, Any]:
        return {**self.field.to_dict(), "name": self.field.name, "required": self.field.required, "source": self.source,
                "is_set": self.is_set, "value": self.value}


@attrs.frozen
class SettingsView:
    """An installed plugin's settings, who installed it and who changed them last (secrets masked)."""

    plugin_id: str
    version: str
    fields: tuple[FieldState, ...]
    installed_by: str | None = None
    installed_at: str | None = None
    updated_by: str | None = None
    updated_at: str | None = None

    @classmethod
    def build(cls, entry: InstalledPlugin, schema: SettingsSchema | None, record: InstallationRecord | None) -> SettingsView:
        stored = dict(record.settings) if record else {}
        states = []
        for field in schema.fields if schema else ():
            if field.name in stored:
                source: Literal["stored", "default", "unset"] = "stored"
                value = stored[field.name]
            elif field.default is not None:
                source, value = "default", field.default
            else:
                source, value = "unset", None
            states.append(FieldState(field, source, None if field.secret else value))
        return cls(
            plugin_id=entry.id,
            version=entry.version,
            fields=tuple(states),
            installed_by=record.installed_by if record else None,
            installed_at=record.installed_at if record else None,
            updated_by=record.updated_by if record else None,
            updated_at=record.updated_at if record else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "plugin_id": self.plugin_id,
            "version": self.version,
            "fields": [f.to_dict() for f in self.fields],
            "installed_by": self.installed_by,
            "installed_at": self.installed_at,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at,
        }
