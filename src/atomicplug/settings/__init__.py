"""Per-plugin settings (docs/design.md "Plugin settings").

A plugin declares a settings schema in metadata.json (:mod:`.schema`); an
admin gives values at install (``Installer.install(..., settings=...)``) or
later (``Installer.configure``). They live in the application database beside
the ledger (:mod:`.records`), are written in the same database transaction as
the install that brings them, and reach the plugin's backend through the
loader, which calls the addon package's ``configure(settings)``. Secret values
are never returned by any API: :class:`~.view.SettingsView` says only whether
one is set.
"""

from __future__ import annotations

from atomicplug.settings.schema import SettingField, SettingsSchema

__all__ = ["SettingField", "SettingsSchema"]
